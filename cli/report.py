"""``l1bn report``: area, Fmax, latency and energy of every registered BN norm (L1, L2, range) against
L2-BN (:mod:`l1bn.sim.report`)."""

from __future__ import annotations

import click

from .options import family_options, target_from_options
from .report_network import network_options

__all__ = ["report", "parse_widths", "parse_seeds"]


def _int_list(text: str, name: str, lo: int, hi: int, example: str, most: int | None = None) -> tuple[int, ...]:
    """``"a,b,c"`` -> (a, b, c): distinct integers ``lo..hi`` (at most ``most`` of them); each error
    names the option (``{name}s``) or the value (``{name}``)."""
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"{name}s={text!r} must be comma-separated integers, e.g. {example}") from None
    if not vals:
        raise ValueError(f"{name}s={text!r} is empty; give e.g. {example}")
    if most is not None and len(vals) > most:
        raise ValueError(f"{name}s={text!r} has {len(vals)} {name}s; at most {most}")
    for v in vals:
        if not lo <= v <= hi:
            raise ValueError(f"{name}={v} is out of range; allowed {lo}..{hi}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name}s={text!r} repeats a {name}")
    return vals


def parse_widths(text: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> (4, 8, 16); each width 3..16, no repeats."""
    return _int_list(text, "width", 3, 16, "4,8,16")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3): the nextpnr seeds, distinct integers 1..2**31-1, at most 16."""
    return _int_list(text, "seed", 1, 2**31 - 1, "1,2,3", most=16)


@click.command("report")
@click.option("--widths", default="4,8,16", show_default=True, help="Bit widths to compare (3..16).")
@click.option("--n", "n", type=int, default=64, show_default=True, help="Elements per channel per batch (8..1024).")
@click.option("--lanes", type=int, default=1, show_default=True,
              help="Elements per cycle of the forward units (1..8, divides n; backward units use 1).")
@click.option("--channels", type=int, default=4, show_default=True, help="Channels per batch (1..16).")
@click.option("--no-pnr", is_flag=True, help="Skip place and route (no Fmax, no latency in ns).")
@click.option("--seeds", default="1,2,3", show_default=True,
              help="nextpnr seeds, comma-separated: each ECP5 design is placed and routed once per seed and "
                   "Fmax is the median (the lower one for an even count). Not used by --no-pnr or --target asic.")
@click.option("--no-stages", is_flag=True, help="Skip the stage-by-stage syntheses.")
@click.option("--no-backward", is_flag=True, help="Skip the backward units.")
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--scheduler", default=None,
              help="Run every flow step on a Dask cluster: the scheduler's tcp://HOST:PORT (l1bn sweep has it too).")
@click.option("--target", type=click.Choice(["fpga", "asic", "both"]), default="fpga", show_default=True,
              help="fpga: ECP5 (or --family) + generic gates; asic: NanGate45 cells, OpenSTA, pJ (l1bn.sim.asic); both.")
@click.option("--asic-clock-gating/--no-asic-clock-gating", "asic_clock_gating", default=None,
              help="ASIC: registers that hold their value get a gated clock through NanGate45's CLKGATE_X1 "
                   "[default: on; off = every flip-flop clocked every cycle, the flow before issue 28].")
@click.option("--asic-sram/--no-asic-sram", "asic_sram", default=None,
              help="ASIC: memories of 256 bits or more (the x buffers) are SRAM macros with a per-access energy "
                   "(Horowitz 45 nm) [default: on; off = buffers in flip-flops].")
@family_options
@click.option("--out", "out", type=str, required=True,
              help="Output folder (reused: a rerun, or a second report at the same time, is safe).")
@network_options(parse_widths)
def report(widths, n, lanes, channels, no_pnr, seeds, no_stages, no_backward, jobs, out, target, scheduler,
           asic_clock_gating, asic_sram, family, device, dsp):
    """Area, Fmax, latency and energy: L1-BN and range BN against L2-BN.

    Synthesizes (ECP5 and generic CMOS gates), places and routes (ECP5), and simulates the gate
    netlists of the forward units of every registered norm (L1, L2, range) and the backward units
    (L1, L2: range BN has none) on real activations of the digits CNN, then
    writes OUT/report.json, OUT/report.md and OUT/report_*.png. Results are cached by design hash
    under build/flow-cache, so a rerun is fast. --family / --device / --dsp choose another FPGA
    (iCE40, Nexus, Gowin, GateMate; l1bn.sim.fpga.families): areas in its own units plus
    LUT4-equivalents; the gate-level energy is the same for every family.

    With --network, no flow runs: one training step of the named networks is estimated from the
    report.json files given with --from-json and a MAC sweep's results.json (--mac-json), and
    OUT/estimate.json and OUT/estimate.md are written (docs/network_estimate.md).
    """
    import os

    from l1bn.sim.build_root import default_build_root
    from l1bn.spec.config import check_int
    from l1bn.spec.outdir import (
        check_output_dir,
        check_path_is_creatable,
        check_writable,
        claim_dir,
    )
    from rich.console import Console

    ws = parse_widths(widths)
    pnr_seeds = parse_seeds(seeds)
    check_int("n", n, 8, 1024)
    check_int("lanes", lanes, 1, 8)
    if n % lanes:
        raise ValueError(f"lanes={lanes} must divide n={n}")
    check_int("channels", channels, 1, 16)
    if jobs is not None:
        check_int("jobs", jobs, 1, 64)
    outp = check_output_dir(out, command="report", must_be_new=False)   # a report folder, or new
    check_writable(outp)
    fpga_target = target_from_options(family, device, dsp)   # a bad family or device: before any work
    if fpga_target is not None and target == "asic":
        raise ValueError("--family, --device and --dsp choose the FPGA; they do not apply to --target asic")
    if target == "fpga" and (asic_clock_gating is not None or asic_sram is not None):
        raise ValueError("--asic-clock-gating and --asic-sram apply to --target asic or both")
    asic_opts = {"clock_gating": asic_clock_gating is not False, "sram": asic_sram is not False}
    check_path_is_creatable(default_build_root() / "flow-cache", option="build folder ($L1BN_BUILD_DIR)")
    check_writable(default_build_root(), option="build folder ($L1BN_BUILD_DIR)")
    # validate every configuration before any tool runs
    from l1bn.sim.report.fpga import build_report
    from l1bn.sim.report.units import BACKWARD_NORMS, NORMS, backward_config, forward_config
    from l1bn.sim.report.write import write_report

    for w in ws:
        for norm in NORMS:
            forward_config(norm, w, n=n, lanes=lanes, channels=channels)
            if not no_backward and norm in BACKWARD_NORMS:
                backward_config(norm, w, n=n, channels=channels)
    console = Console(stderr=True)
    if scheduler is not None:   # l1bn.sim.executors: the flow's steps go to the cluster until the end
        from l1bn.sim.executors import DaskExecutor, using

        if jobs is not None:
            raise ValueError("give --jobs (local processes) or --scheduler (a Dask cluster), not both")
        ctx = click.get_current_context()
        ctx.with_resource(using(ctx.with_resource(DaskExecutor(scheduler))))
    if target != "fpga":   # the library and OpenSTA must be there before any tool runs
        from l1bn.sim.asic.liberty import liberty_path
        from l1bn.sim.asic.sta import sta_path
        from l1bn.sim.report.asic import build_asic_report

        liberty_path()
        sta_path()
    claim_dir(outp, "report")
    if target == "asic":
        rep, run = build_asic_report(widths=ws, n=n, lanes=lanes, channels=channels, jobs=jobs or os.cpu_count(),
                                     workdir=outp / "flow", console=console, backward=not no_backward,
                                     stages=not no_stages, **asic_opts)
    else:
        from l1bn.sim.fpga.families import fit_errors

        with fit_errors():   # a design too large for --device: one line, before its place and route
            rep, run = build_report(widths=ws, n=n, lanes=lanes, channels=channels, pnr=not no_pnr,
                                    jobs=jobs or os.cpu_count(), workdir=outp / "flow", console=console,
                                    backward=not no_backward, stages=not no_stages, seeds=pnr_seeds,
                                    target=fpga_target)
    if target == "both":
        rep["asic"], arun = build_asic_report(widths=ws, n=n, lanes=lanes, channels=channels,
                                              jobs=jobs or os.cpu_count(), workdir=outp / "flow", console=console,
                                              backward=not no_backward, stages=not no_stages, **asic_opts)
        run = {k: run[k] + arun[k] for k in ("seconds", "cached", "steps")}
    paths = write_report(rep, outp)
    click.echo((outp / "report.md").read_text())
    click.echo(f"wrote {paths['json']}, {paths['md']}, " + ", ".join(str(p) for p in paths["png"]))
    click.echo(f"{run['steps']} steps ({run['cached']} from cache) in {run['seconds']:.1f} s")
