"""``l1bn demo``: the whole flow, end to end, on the bundled digits data.

Steps (each writes into one run folder, named in the final summary):

1. ``doctor``: the toolchain table; stops if a required tool is missing.
2. ``train``: a float L1BN CNN and a 4-bit (w4a4) QAT L1BN CNN (``l1bn train``).
3. ``export``: integer weights, folded BN and ``$readmemh`` memories of the QAT run (``l1bn export``).
4. ``infer``: the bit-exact integer reference on the test split (``l1bn infer``).
5. ``verilog``: the accelerator for the export (``l1bn verilog net``) and the L1-/L2-BN units.
6. ``sim``: the accelerator classifies the test split in cocotb (``l1bn sim net``); every image's
   logits are compared with the integer reference.
7. ``area``: ECP5 synthesis (LUT/FF/DSP) and place and route (Fmax) of the accelerator.

The summary table gives the accuracy of float, QAT, integer reference and hardware, the mismatch
count, cycles per image and the area/Fmax; ``RUN/summary.json`` holds the same figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from l1bn.spec.norms import BASELINE, FEATURED

__all__ = ["demo", "run_demo"]


class _Steps:
    """Prints a numbered header per step and records its wall time."""

    def __init__(self, console, total: int):
        self.console, self.total, self.i, self.times = console, total, 0, {}

    def __call__(self, name: str, what: str):
        self.i += 1
        self.console.rule(f"[bold]{self.i}/{self.total} {name}[/]: {what}")
        self._name, self._t0 = name, time.perf_counter()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.times[self._name] = round(time.perf_counter() - self._t0, 1)
        return False


def _train(out: Path, *, qcfg, epochs: int, seed: int, console) -> dict:
    from l1bn.sw.train import run_config, train_run
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    config = run_config(model="cnn", norm=FEATURED, qcfg=qcfg, epochs=epochs, seed=seed)
    desc = f"cnn {FEATURED} " + ("float" if qcfg is None else f"w{qcfg.wbits}a{qcfg.abits}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(desc, total=None, loss=float("nan"))
        _, metrics = train_run(config, out, force=True, progress=lambda s, t, loss: bar.update(
            task, completed=s, total=t, loss=loss))
    console.print(f"{desc}: test accuracy {100 * metrics['test_accuracy']:.2f} % "
                  f"({metrics['time_s']:.1f} s) -> {out}")
    return metrics


def run_demo(out: Path, *, epochs: int = 20, seed: int = 0, bits: int = 4, images: int | None = None,
             simulator: str = "verilator", sim: bool = True, area: bool = True, console=None) -> dict:
    """Run every step into ``out``; return the summary (also written to ``out/summary.json``)."""
    from l1bn.spec.config import check_choice, check_int
    from rich.console import Console

    check_int("epochs", epochs, 1, 1000)
    check_int("bits", bits, 2, 8)
    check_choice("simulator", simulator, ("icarus", "verilator"))
    check_int("seed", seed, 0, 2**63 - 1)
    if images is not None:
        from l1bn.sw.data import test_split

        check_int("images", images, 1, len(test_split()[1]))   # the test split, known before training
    from l1bn.spec.outdir import check_output_dir, check_writable, claim_dir, write_text_atomic

    # the demo's own folder (its marker): a rerun replaces its parts; a folder of anything else
    # (the user's own run and export) is refused
    out = check_output_dir(out, command="demo", must_be_new=False)
    check_writable(out)
    console = console or Console()
    claim_dir(out, "demo")
    steps = _Steps(console, 5 + int(sim) + 2 * int(area))   # area: accelerator, then BN units
    summary: dict = {"run": str(out), "epochs": epochs, "seed": seed, "bits": bits}

    with steps("doctor", "is the open toolchain complete?"):
        from l1bn.cli.doctor import checks_table, missing_required, run_checks

        with console.status("checking tools (the first Yosys call compiles WebAssembly, ~1 min)..."):
            checks = run_checks()
        console.print(checks_table(checks))
        missing = missing_required(checks)
        if missing:
            raise click.ClickException(f"missing required tools: {', '.join(missing)} (see the fix column)")

    with steps("train", f"float and w{bits}a{bits} QAT L1BN CNNs on the digits ({epochs} epochs)"):
        from l1bn.sw.quant import QuantConfig

        m_float = _train(out / "float", qcfg=None, epochs=epochs, seed=seed, console=console)
        m_qat = _train(out / "qat", qcfg=QuantConfig(wbits=bits, abits=bits), epochs=epochs, seed=seed,
                       console=console)
        summary["float_accuracy"] = m_float["test_accuracy"]
        summary["qat_accuracy"] = m_qat["test_accuracy"]

    with steps("export", "integer weights, folded BN, $readmemh memories"):
        from l1bn.spec.export import load_export
        from l1bn.sw.export import export_run

        export_dir = export_run(out / "qat", out / "export", force=True)
        e = load_export(export_dir)
        console.print(f"{export_dir}: {len(e.manifest['tensors'])} tensors, "
                      f"{len(e.net.layers)} layers ({', '.join(layer.name for layer in e.net.layers)})")
        summary["export"] = str(export_dir)

    with steps("infer", "bit-exact integer reference on the test split"):
        from l1bn.cli.export import infer_export

        r = infer_export(export_dir)
        summary.update(int_accuracy=r["accuracy"], test_images=r["images"],
                       int_qat_agreement=r.get("agreement"), reference_ms=1e3 * r["time_s"])
        console.print(f"integer reference: accuracy {100 * r['accuracy']:.2f} % on {r['images']} images, "
                      f"agreement with QAT {100 * r.get('agreement', float('nan')):.2f} %, "
                      f"{1e3 * r['time_s']:.1f} ms")

    with steps("verilog", "the accelerator for this export, and the L1-/L2-BN units"):
        from l1bn.sim.verilog.net import write_net_verilog

        vdir = out / "verilog"
        files = write_net_verilog(export_dir, vdir / "net")
        console.print(f"accelerator: {len(files)} files in {vdir / 'net'}")
        for norm in (FEATURED, BASELINE):
            from l1bn.hw.bn_unit import bn_unit_for
            from l1bn.sim.rtl import to_verilog
            from l1bn.spec.config import BNConfig

            cfg = BNConfig(norm=norm, width=8, channels=16, n=64, lanes=2)
            unit = bn_unit_for(cfg)
            path = write_text_atomic(vdir / f"{norm}bn.v", to_verilog(unit, f"{norm}bn"))
            console.print(f"{norm.upper()}-BN unit (width 8, 16 channels, n 64, 2 lanes): {path}")
        summary["verilog"] = str(vdir)

    if sim:
        with steps("sim", f"the accelerator classifies the test split ({simulator})"):
            from l1bn.sim.simulate.net import simulate_net

            s = simulate_net(e, simulator=simulator, images=images, progress=True,
                             build_dir=out / "sim")
            summary.update(hw_accuracy=s["hw_accuracy"], hw_images=s["images"], mismatches=s["mismatches"],
                           cycles_per_image=s["cycles_per_image"], sim_images_per_s=s["images_per_s"])
            console.print(f"hardware: accuracy {100 * s['hw_accuracy']:.2f} % on {s['images']} images, "
                          f"{s['mismatches']} logit mismatches against the integer reference, "
                          f"{s['cycles_per_image']} cycles/image, {s['images_per_s']:.1f} images/s simulated")

    if area:
        with steps("area", "ECP5 synthesis and place and route of the accelerator"):
            from l1bn.hw.accelerator import accelerator_from_export
            from l1bn.sim.fpga.steps import implement

            acc = accelerator_from_export(e)
            summary.update(array=f"{acc.rows}x{acc.cols}", formula_cycles=acc.cycles_per_image)
            a = implement(acc, name="accelerator", workdir=out / "flow", console=console)
            summary.update(lut=a["lut"], ff=a["ff"], dsp=a["dsp"], bram=a.get("bram"), fmax_mhz=a["fmax_mhz"],
                           images_per_s=a["fmax_mhz"] * 1e6 / acc.cycles_per_image)
        with steps("bn", f"L1 against L2 BN forward unit at width {BN_WIDTH} (ECP5, 3 seeds)"):
            from l1bn.sim.report.fpga import compare_forward

            summary["bn_compare"] = compare_forward(BN_WIDTH, workdir=out / "flow", console=console)

    summary["step_seconds"] = steps.times
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, console)
    return summary


# the width of the demo's BN units (the verilog step writes them at this width)
BN_WIDTH = 8


def _bn_table(c: dict, console):
    from rich.table import Table

    t = Table(title=f"L1-BN against L2-BN forward unit, width {BN_WIDTH} (LFE5U-25F, median of 3 nextpnr seeds)")
    for col in ("unit", "LUT4", "FF", "MULT18", "Fmax MHz", "critical path", "latency cycles", "latency ns",
                "energy/element"):
        t.add_column(col, justify="left" if col in ("unit", "critical path") else "right")
    def fmt(u, k, ratio, nd=1):
        v = u.get(k)
        return "-" if v is None else (f"{v:.2f}" if ratio else (f"{v:.{nd}f}" if isinstance(v, float) else str(v)))

    rkey = f"{FEATURED}_over_{BASELINE}"          # compare_forward's ratio key
    for key in (FEATURED, BASELINE, rkey):
        u = c[key]
        ratio = key == rkey

        def f(k, nd=1, u=u, ratio=ratio):
            return fmt(u, k, ratio, nd)
        cp = "" if ratio else (u.get("critical_path") or {}).get("stage", "-")
        e = f("energy_per_element", 0)
        t.add_row(f"{FEATURED.upper()}/{BASELINE.upper()}" if ratio else key.upper(), f("lut"), f("ff"), f("dsp"), f("fmax_mhz"), cp,
                  f("latency_cycles"), f("latency_ns"), e if e != "-" or ratio else "- (l1bn report)")
    console.print(t)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f} %"


def _print_summary(s: dict, console):
    from rich.table import Table

    t = Table(title=f"l1bn demo summary (run folder {s['run']})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    rows = [
        ("float L1BN CNN accuracy", _pct(s.get("float_accuracy"))),
        (f"QAT w{s['bits']}a{s['bits']} L1BN CNN accuracy", _pct(s.get("qat_accuracy"))),
        ("integer reference accuracy", _pct(s.get("int_accuracy"))),
        ("integer reference = QAT predictions", _pct(s.get("int_qat_agreement"))),
        ("hardware (simulated) accuracy", _pct(s.get("hw_accuracy"))),
        ("hardware vs reference logit mismatches",
         "-" if "mismatches" not in s else f"{s['mismatches']} of {s['hw_images']} images"),
        ("cycles per image", str(s.get("cycles_per_image", "-"))),
        ("ECP5 LUT4 / FF / MULT18", "-" if "lut" not in s else f"{s['lut']} / {s['ff']} / {s['dsp']}"),
        ("ECP5 MAC array / DP16KD", "-" if "lut" not in s else f"{s['array']} / {s['bram']}"),
        ("Fmax (nextpnr-ecp5, seed 1)", "-" if "fmax_mhz" not in s else f"{s['fmax_mhz']:.1f} MHz"),
        ("images/s at Fmax (Fmax / cycles)", "-" if "images_per_s" not in s else f"{s['images_per_s']:,.0f}"),
        ("total time", f"{sum(s['step_seconds'].values()):.0f} s"),
    ]
    for r in rows:
        t.add_row(*r)
    console.print(t)
    if "bn_compare" in s:
        _bn_table(s["bn_compare"], console)
    console.print(f"artifacts: {s['run']}/ (float/, qat/, export/, verilog/, sim/, flow/, summary.json)")
    _train_step_table(console)


def _train_step_table(console):
    """The whole training step on the generated hardware, L1 against L2 (docs/train_accel.md):
    cycles from the schedule's formula (asserted by the cocotb benches); the ECP5 and NanGate45
    figures from bench/train_accel.py's build/train-report/train_report.json when it has been run
    (``--target both``)."""
    from l1bn.sim.build_root import default_build_root
    from l1bn.sim.report.train import step_figures, train_norms, whole_step_table

    rows = {norm: step_figures(norm) for norm in train_norms()}
    measured = default_build_root() / "train-report" / "train_report.json"
    if measured.exists():
        m = json.loads(measured.read_text())
        for norm in rows:
            if m.get(norm, {}).get("cycles_per_step") == rows[norm]["cycles_per_step"]:
                rows[norm].update({k: v for k, v in m[norm].items() if k not in rows[norm]})
    src = f"ECP5 from {measured}" if measured.exists() else "ECP5: run bench/train_accel.py"
    console.print(f"[bold]One training step of the digits CNN on the generated hardware[/] "
                  f"(batch 8, 8x1 MAC array; cycles: formula = measured in cocotb; {src})")
    for line in whole_step_table(rows):
        console.print(line, highlight=False, soft_wrap=True)
    from l1bn.sim.report.train_asic import asic_tables

    # NanGate45 (area, critical path, energy per step) from the same report, when it has been
    # measured (bench/train_accel.py --target asic): read, never run here
    lines = asic_tables(rows)
    for line in lines[:lines.index("")] if "" in lines else lines:
        console.print(line, highlight=False, soft_wrap=True)


@click.command("demo")
@click.option("--out", type=str, default="runs/demo", show_default=True,
              help="Run folder for every artifact (a rerun replaces them).")
@click.option("--epochs", default=20, show_default=True, help="Training epochs of both CNNs.")
@click.option("--seed", default=0, show_default=True)
@click.option("--bits", default=4, show_default=True, help="Weight and activation bits of the QAT CNN.")
@click.option("--images", type=int, default=None, help="Simulate only the first K test images (default: all).")
@click.option("--simulator", type=click.Choice(["verilator", "icarus"]), default="verilator", show_default=True)
@click.option("--no-sim", is_flag=True, help="Skip the hardware simulation step.")
@click.option("--no-area", is_flag=True, help="Skip synthesis and place and route.")
def demo(out, epochs, seed, bits, images, simulator, no_sim, no_area):
    """Train, export, generate Verilog, simulate the accelerator and summarize, end to end."""
    run_demo(out, epochs=epochs, seed=seed, bits=bits, images=images, simulator=simulator,
             sim=not no_sim, area=not no_area)
