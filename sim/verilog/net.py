"""The accelerator's Verilog and its memory images (library; the command is ``l1bn verilog net``).

The Verilog holds the weight, multiplier and bias memories as initial values (the same words as
the export's ``.hex`` files); the ``.hex`` files are copied next to it so a user can read (or
``$readmemh``) exactly what the memories hold.
"""

from __future__ import annotations

import json
from pathlib import Path

from l1bn.sim.rtl import to_verilog

__all__ = ["write_net_verilog"]


def write_net_verilog(export_dir, out_dir, *, rows: int | None = None, cols: int | None = None,
                      name: str = "accelerator", budget=None, lanes: int = 1) -> list[Path]:
    """Write ``<name>.v``, the export's weight/mult/bias ``.hex`` files and ``schedule.json``.

    The export is loaded and validated first (``load_export``); a bad export raises a
    ``ValueError`` naming the tensor and nothing is written. ``out_dir`` follows the output rule of
    :mod:`l1bn.spec.outdir`: new, empty, or an earlier output of ``l1bn verilog net`` (its marker),
    never the export, a folder holding it, or a folder of other files. The files are written
    into a staged folder that then replaces ``out_dir`` in one step, so no memory file of an
    earlier design survives and two runs into one folder leave one whole design. ``rows`` x
    ``cols`` is the MAC array (None: see ``accelerator_from_export``, which also takes the
    ``budget``: a :class:`~l1bn.hw.accel_budget.Budget`; ``lanes`` > 1: the tree PE). Returns the written paths
    (in ``out_dir``).
    """
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.spec.export import load_export
    from l1bn.spec.outdir import check_output_dir, check_writable, staged_dir

    out = check_output_dir(out_dir, command=COMMAND, inputs=[export_dir], option="-o", must_be_new=False)
    check_writable(out, option="-o")
    e = load_export(export_dir)
    acc = accelerator_from_export(e, rows=rows, cols=cols, budget=budget, lanes=lanes)
    text = to_verilog(acc, name)
    with staged_dir(out, command=COMMAND) as tmp:
        files = _write_files(tmp, e, acc, text, name)
    return [out / f.name for f in files]


#: the command named in the output folder's marker
COMMAND = "verilog net"


def _write_files(out: Path, e, acc, text: str, name: str) -> list[Path]:
    from l1bn.hw.accel_budget import plan_resources
    from l1bn.hw.accelerator import accelerator_interface

    files = [out / f"{name}.v"]
    files[0].write_text(text)
    tensors = e.manifest["tensors"]
    for ld in e.manifest["nodes"]:     # MAC nodes and their requantizers (a max pool has neither)
        names = [ld[k] for k in ("weight", "bias") if isinstance(ld.get(k), str)]
        names += [ld["requant"]["mult"], ld["requant"]["bias"]] if ld.get("requant") else []
        for t in names:
            if not tensors.get(t, {}).get("hex"):
                continue
            src = e.path / tensors[t]["hex"]["file"]
            files.append(out / src.name)
            files[-1].write_text(src.read_text())
    files.append(out / "schedule.json")
    files[-1].write_text(json.dumps({
        "export": str(e.path), "rows": acc.rows, "cols": acc.cols, "lane_bits": acc.lane_bits,
        "pe": "tree" if acc.plan.lanes > 1 else "mac", "lanes": acc.plan.lanes,
        "mac": json.loads(acc.mac_cfg.to_json()), "mac_acc_bits": acc.mac_cfg.acc_bits, "interface": accelerator_interface(e),
        "layers": acc.schedule(), "cycles_per_image": acc.cycles_per_image, "latency": acc.latency,
        "macs": acc.plan.macs, "mac_bound_cycles": acc.plan.mac_bound,
        "resources": plan_resources(acc.plan),
    }, indent=2) + "\n")
    return files

