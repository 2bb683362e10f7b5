"""``l1bn verilog net EXPORT_DIR -o OUT_DIR``: the accelerator's Verilog and its memory images.

The Verilog holds the weight, multiplier and bias memories as initial values (the same words as
the export's ``.hex`` files); the ``.hex`` files are copied next to it so a user can read (or
``$readmemh``) exactly what the memories hold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

__all__ = ["write_net_verilog", "net_cmd"]


def write_net_verilog(export_dir, out_dir, *, cols: int | None = None, name: str = "accelerator") -> list[Path]:
    """Write ``<name>.v``, the export's weight/mult/bias ``.hex`` files and ``schedule.json``.

    The export is loaded and validated first (``load_export``); a bad export raises a
    ``ValueError`` naming the tensor and nothing is written. Returns the written paths.
    """
    from l1bn.hw.accelerator import DEFAULT_COLS, accelerator_from_export, accelerator_interface
    from l1bn.sim.runner import to_verilog
    from l1bn.sw.export import load_export

    e = load_export(export_dir)
    acc = accelerator_from_export(e, cols=DEFAULT_COLS if cols is None else cols)
    text = to_verilog(acc, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    v = out / f"{name}.v"
    v.write_text(text)
    files.append(v)
    tensors = e.manifest["tensors"]
    for ld in e.manifest["layers"]:
        names = [ld["weight"]] + ([ld["bn"]["mult"], ld["bn"]["bias"]] if ld.get("bn") else [])
        for t in names:
            src = e.path / tensors[t]["hex"]["file"]
            dst = out / src.name
            shutil.copyfile(src, dst)
            files.append(dst)
    sched = out / "schedule.json"
    sched.write_text(json.dumps({
        "export": str(e.path), "rows": acc.rows, "cols": acc.cols, "lane_bits": acc.lane_bits,
        "mac": json.loads(acc.mac_cfg.to_json()), "mac_acc_bits": acc.mac_cfg.acc_bits, "interface": accelerator_interface(e),
        "layers": acc.schedule(), "cycles_per_image": acc.cycles_per_image, "latency": acc.latency,
    }, indent=2) + "\n")
    files.append(sched)
    return files


@click.command("net")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the Verilog, the .hex memory images and schedule.json.")
@click.option("--cols", type=int, default=None, help="MAC array columns (output positions in parallel); default 8.")
def net_cmd(export_dir, out_dir, cols):
    """The accelerator for an exported network as Verilog, with its memory files."""
    files = write_net_verilog(export_dir, out_dir, cols=cols)
    s = json.loads((Path(out_dir) / "schedule.json").read_text())
    v = files[0]
    click.echo(f"wrote {v} ({len(v.read_text().splitlines())} lines) and {len(files) - 2} .hex files, "
               f"schedule.json in {out_dir}")
    i = s["interface"]
    click.echo(f"MAC array {s['rows']}x{s['cols']} (w{s['mac']['wbits']} a{s['mac']['abits']} unsigned, "
               f"accumulator {s['mac_acc_bits']} bits); in: {i['pixels']} pixels x {i['in_bits']} bits; "
               f"out: {i['classes']} logits x {i['logit_bits']} bits + argmax")
    click.echo(f"{'layer':8} {'K':>5} {'T':>3} {'G':>3} {'tiles':>5} {'MACs':>7} {'cycles':>7}")
    for lay in s["layers"]:
        click.echo(f"{lay['name']:8} {lay['K']:5d} {lay['T']:3d} {lay['G']:3d} {lay['tiles']:5d} "
                   f"{lay['macs']:7d} {lay['cycles']:7d}")
    click.echo(f"cycles per image {s['cycles_per_image']} = {i['pixels']} pixels + 1 output beat + layers; "
               f"latency {s['latency']}")
