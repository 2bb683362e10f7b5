"""Sweep scaling: the same 24-point sweep on 1 and 2 local workers and on a Dask cluster.

Run:  .venv/bin/python bench/sweep_scale.py [--no-energy] [--out DIR]

The grid is BN units norm l1,l2 x width 4,6,8 x n 8,16 x lanes 1,2 x channels 1 (24 points),
without place and route (``--no-pnr``; each point is an ECP5 synthesis plus, unless
``--no-energy``, a generic-gate synthesis and an Icarus gate-level simulation). Each mode starts
from an empty cache (its own folder), so every point is computed:

1. ``--workers 1``: this process, one point after another;
2. ``--workers 2``: two local worker processes;
3. ``--scheduler``: ``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` started as
   separate processes on 127.0.0.1 (their start-up is timed apart, not in the sweep's time).

Printed per mode: the sweep's wall time (``run.json`` seconds: stimulus, submission, all points,
outputs), the speedup against mode 1, the sum of the points' own seconds (the work, as the
workers timed it), the load average before and after, and whether its ``results.csv`` is
byte-identical to mode 1's. The machine's load matters: on a shared machine the other
processes take cores away from the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from l1bn.sim.sweep.grid import sweep_from_options
from l1bn.sim.sweep.run import run_sweep

GRID = dict(norm="l1,l2", width="4,6,8", n="8,16", lanes="1,2", channels="1", pnr=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(workers: int) -> tuple[str, list, float]:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1: (address, processes, seconds
    until the workers registered)."""
    from distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    procs.append(subprocess.Popen([dask, "worker", addr, "--host", "127.0.0.1", "--nworkers", str(workers),
                                   "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True))
    with Client(addr, timeout=120) as c:
        c.wait_for_workers(workers, timeout=300)
    return addr, procs, time.perf_counter() - t0


def stop_cluster(procs) -> None:
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in reversed(procs):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(argv=None) -> int:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-energy", action="store_true", help="ECP5 synthesis only (no gate-level run)")
    ap.add_argument("--out", default=None, help="folder for the three sweeps' outputs (default: a temporary one)")
    args = ap.parse_args(argv)
    sw = sweep_from_options(**GRID, energy=not args.no_energy)
    root = Path(args.out or tempfile.mkdtemp(prefix="sweep_scale_", dir=Path("build").resolve()))
    root.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    npts = len(sw.points())
    console.print(f"{npts} points, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; outputs in {root}")
    rows = []
    ref_csv = None
    for label, workers, dask in (("local, 1 worker", 1, False), ("local, 2 workers", 2, False),
                                 ("dask scheduler + 2 worker processes", 2, True)):
        procs, start = [], None
        load0 = os.getloadavg()[0]
        try:
            if dask:
                addr, procs, start = start_cluster(workers)
                res = run_sweep(sw, root / f"dask{workers}", scheduler=addr,
                                console=console, cache=root / f"cache-dask{workers}")
            else:
                res = run_sweep(sw, root / f"local{workers}", workers=workers, console=console,
                                cache=root / f"cache-local{workers}")
        finally:
            stop_cluster(procs)
        run = res["run"]
        csv_text = res["paths"]["csv"].read_text()
        ref_csv = ref_csv or csv_text
        work = sum(p.get("seconds") or 0 for p in run["per_point"].values())
        rows.append({"mode": label, "workers": workers, "seconds": run["seconds"], "work_s": round(work, 1),
                     "cluster_start_s": round(start, 1) if start is not None else None,
                     "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1),
                     "ok": run["ok"], "failed": run["failed"], "same_csv": csv_text == ref_csv})
    base = rows[0]["seconds"]
    t = Table(title=f"l1bn sweep, {npts} points (--no-pnr{' --no-energy' if args.no_energy else ''}), "
                    f"{os.cpu_count()} cores")
    for col in ("mode", "sweep s", "speedup", "points' own s", "cluster start s", "load before/after",
                "ok/failed", "same results.csv"):
        t.add_column(col, justify="right")
    for r in rows:
        r["speedup"] = round(base / r["seconds"], 2)
        t.add_row(r["mode"], f"{r['seconds']:.1f}", f"{r['speedup']:.2f}x", f"{r['work_s']:.1f}",
                  "-" if r["cluster_start_s"] is None else f"{r['cluster_start_s']:.1f}",
                  f"{r['load_before']:.1f} / {r['load_after']:.1f}", f"{r['ok']}/{r['failed']}",
                  "yes" if r["same_csv"] else "NO")
    Console(width=160).print(t)
    (root / "sweep_scale.json").write_text(json.dumps({"grid": GRID, "energy": not args.no_energy,
                                                       "cores": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {root / 'sweep_scale.json'}")
    return 0 if all(r["same_csv"] and not r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
