"""``l1bn sweep``: a design-space sweep on local processes or a Dask cluster (:mod:`l1bn.sim.sweep`)."""

from __future__ import annotations

import click

from .options import family_options

__all__ = ["sweep"]


@click.command("sweep")
@click.option("--design", type=click.Choice(["bn", "mac"]), default=None,
              help="BN units (default) or MAC arrays.")
@click.option("--spec", "spec", type=click.Path(dir_okay=False), default=None,
              help="TOML file with the grid and options (same names as these options; options given "
                   "here win).")
@click.option("--norm", default=None, help="BN: norms, e.g. l1,l2 (default: every norm of BNConfig).")
@click.option("--width", default=None, help="BN: input bit widths, e.g. 4,8,16 (default 8).")
@click.option("--n", "n", default=None, help="BN: elements per channel per batch, e.g. 16,64 (default 64).")
@click.option("--lanes", default=None, help="BN: elements per cycle, e.g. 1,2 (default 1).")
@click.option("--channels", default=None, help="BN: channels per batch (default 4).")
@click.option("--rows", default=None, help="MAC: array rows (default 4).")
@click.option("--cols", default=None, help="MAC: array columns (default 4).")
@click.option("--wbits", default=None, help="MAC: weight bits (default 4).")
@click.option("--abits", default=None, help="MAC: activation bits (default 4).")
@click.option("--target", default=None, help="fpga (ECP5, or --family) and/or asic (NanGate45), e.g. fpga,asic "
                                             "(default fpga).")
@family_options
@click.option("--no-pnr", is_flag=True, default=False, help="Skip place and route (no Fmax; latency in cycles).")
@click.option("--seeds", type=int, default=None, help="nextpnr seeds per point; Fmax is their median (default 3).")
@click.option("--no-energy", is_flag=True, default=False,
              help="Skip the gate-level simulation (no transistors or energy; cycles from the formula).")
@click.option("--max-cycles", type=int, default=None,
              help="Fail a point whose gate-level simulation needs more cycles than this.")
@click.option("--workers", type=int, default=None, help="Local worker processes (default: all cores).")
@click.option("--scheduler", default=None, help="Run on a Dask cluster: the scheduler's tcp://HOST:PORT.")
@click.option("--no-cache", is_flag=True, help="Recompute points that are in the cache.")
@click.option("--out", "out", type=str, required=True, help="Output folder (a rerun reuses it).")
def sweep(design, spec, norm, width, n, lanes, channels, rows, cols, wbits, abits, target, family, device, dsp,
          no_pnr, seeds, no_energy, max_cycles, workers, scheduler, no_cache, out):
    """Sweep a grid of designs: area, Fmax, cycles, latency and energy of every point.

    Every grid option takes a comma list and the grid is their product. Points run in local
    worker processes (--workers N) or on a Dask cluster (--scheduler tcp://HOST:PORT; start it
    with `dask scheduler` and `dask worker ADDRESS --nthreads 1 --nworkers N`). Writes
    OUT/results.csv, OUT/results.json, OUT/run.json and OUT/pareto_*.png. Points are cached
    under build/flow-cache: a rerun computes only what is missing.
    """
    import sys
    from pathlib import Path

    from l1bn.sim.build_root import default_build_root
    from l1bn.sim.sweep.grid import sweep_from_options
    from l1bn.sim.sweep.run import run_sweep
    from l1bn.spec.config import check_int
    from l1bn.spec.outdir import check_output_dir, check_writable, claim_dir
    from rich.console import Console

    # before any work: a sweep folder (its marker) or a new one, writable, as is the cache
    out = check_output_dir(out, command="sweep", inputs=[spec], must_be_new=False)
    check_writable(out)
    check_writable(default_build_root(), option="build folder ($L1BN_BUILD_DIR)")

    if workers is not None and scheduler is not None:
        raise ValueError("give --workers (local processes) or --scheduler (a Dask cluster), not both")
    if workers is not None:
        check_int("workers", workers, 1, 256)
    if scheduler is not None and "://" not in scheduler:   # before the output folder is made
        raise ValueError(f"scheduler={scheduler!r} must be an address like tcp://HOST:PORT")
    if spec is not None and not Path(spec).is_file():
        raise ValueError(f"spec {spec}: no such file")
    given = {"norm": norm, "width": width, "n": n, "lanes": lanes, "channels": channels, "rows": rows,
             "cols": cols, "wbits": wbits, "abits": abits, "target": target, "seeds": seeds,
             "max_cycles": max_cycles, "pnr": False if no_pnr else None,
             "energy": False if no_energy else None, "family": family, "device": device, "dsp": dsp}
    sw = sweep_from_options(design=design, spec=spec, **given)
    console = Console(stderr=True)
    claim_dir(out, "sweep")
    res = run_sweep(sw, out, workers=workers, scheduler=scheduler, console=console, use_cache=not no_cache,
                    command=" ".join(["l1bn", "sweep", *sys.argv[2:]]) if len(sys.argv) > 1 else None)
    run = res["run"]
    _print_front(sw, res["rows"])
    p = res["paths"]
    click.echo("wrote " + ", ".join(str(x) for x in [p["csv"], p["json"], p["run"], *p["png"]]))
    ex = run["executor"]
    where = ex["kind"] + (f" {ex['address']}" if ex.get("address") else "") + \
        (f", {ex['workers']} worker{'s' if ex['workers'] != 1 else ''}" if "workers" in ex else "")
    if not run["computed"]:
        where = "nothing to compute"
    click.echo(f"{run['points']} points: {run['ok']} ok ({run['cached']} from cache), {run['failed']} failed, "
               f"{run['invalid']} invalid in {run['seconds']:.1f} s ({where})")
    for w in run["warnings"]:
        click.echo(f"warning: {w}", err=True)


def _print_front(sw, rows) -> None:
    """The Pareto front (area against latency) as a table, and each failed point's error."""
    from l1bn.sim.sweep.pareto import metrics

    front = [r for r in rows if r.get("pareto_area")]
    if front:
        m0 = metrics(front[0], sw.design)
        click.echo(f"Pareto front, {m0['area_label']} against {m0['latency_label']}:")
        names = [k for k in sw.params]
        head = names + ["area", "latency", "energy"]
        click.echo("  " + "  ".join(f"{h:>9}" for h in head))
        for r in front:
            m = metrics(r, sw.design)
            vals = [r[k] for k in names] + [m["area"], m["latency"], m["energy"]]
            click.echo("  " + "  ".join(f"{'-' if v is None else v!s:>9}" for v in vals))
    for r in rows:
        if r["status"] != "ok":
            ident = " ".join(f"{k}={r[k]}" for k in sw.params)
            click.echo(f"{r['status']}: {ident}: {r['error']}")
