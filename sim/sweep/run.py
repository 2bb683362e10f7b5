"""Running a sweep (:func:`run_sweep`) and writing its outputs (:func:`write_outputs`).

``results.csv`` (one row per point, sorted by parameters, design figures only: two runs of the
same sweep, local or distributed, write identical files), ``results.json`` (the same rows plus
the grid and options), ``run.json`` (run facts: time, executor, hosts, per-point seconds, cache
hits, resubmissions), ``pareto_area_latency.png`` and ``pareto_energy_latency.png``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

from l1bn.sim.executors import call_in_scratch, make_executor, run_tasks
from l1bn.sim.jobs import FLOW_VERSION, tool_versions

from .evaluate import evaluate, stimulus
from .grid import MAC_K, Sweep, point_config, point_cost, point_id
from .keys import point_cache_path, point_key, source_digest
from .pareto import figure_columns, mark_pareto, plot_pareto

__all__ = ["run_sweep", "results_csv", "write_outputs"]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_sweep(sweep: Sweep, out, *, executor=None, workers: int | None = None, scheduler: str | None = None,
              console=None, use_cache: bool = True, cache=None, on_result=None, command=None) -> dict:
    """Run ``sweep``; write its outputs into ``out``; return ``{"rows", "run", "paths"}``.

    Parameters
    ----------
    executor : l1bn.sim.executors.Executor, optional
        Where points run; default ``make_executor(workers, scheduler)`` (closed afterwards).
    console : rich.console.Console or False
        Progress bar (done / failed / running); False: none.
    use_cache : bool
        Read cached points (fresh results are always written).
    cache : path, optional
        Cache folder (default ``<build>/flow-cache``).
    on_result : callable, optional
        ``on_result(point_id, row, counts)`` after each computed point, in the client.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else None
    options = sweep.options()
    points = sweep.points()
    params = sweep.params
    rows: dict[str, dict] = {}
    facts: dict[str, dict] = {}
    todo: dict[str, dict] = {}
    keys: dict[str, str] = {}
    fig_cols = figure_columns(sweep.design, sweep.grid["target"], sweep.family is not None)

    def row_of(p, status, figures=None, error=None):
        r = {k: p[k] for k in params}
        r["status"] = status
        for c in fig_cols:
            r[c] = (figures or {}).get(c)
        r["error"] = error
        return r

    for p in points:
        pid = point_id(p)
        try:
            point_config(p)
        except ValueError as e:
            rows[pid] = row_of(p, "invalid", error=str(e))
            continue
        keys[pid] = point_key(p, options)
        hit = None
        if use_cache:
            try:
                hit = json.loads(point_cache_path(keys[pid], cache).read_text())
            except (OSError, ValueError):
                hit = None
        if hit is not None:
            rows[pid] = row_of(p, "ok", hit["figures"])
            facts[pid] = {"cached": True}
        else:
            todo[pid] = p
    counts = {"done": sum(1 for r in rows.values() if r["status"] == "ok"), "failed": 0, "running": 0,
              "cached": len(facts), "invalid": sum(1 for r in rows.values() if r["status"] == "invalid")}
    mismatch = set()
    own = executor is None
    # connect first: a bad --scheduler is an error before any work
    ex = (executor if not own else make_executor(workers, scheduler)) if todo else None
    resubmitted = 0
    with Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  "
                             "running {task.fields[running]}"), TimeElapsedColumn(),
                  console=console, transient=False, disable=console is False) as prog:
        bar = prog.add_task("sweep", total=len(points), completed=counts["done"] + counts["invalid"],
                            done=counts["done"], failed=counts["invalid"], running=0)

        def show(running=None):
            if running is not None:
                counts["running"] = running
            prog.update(bar, completed=counts["done"] + counts["failed"] + counts["invalid"],
                        done=counts["done"], failed=counts["failed"] + counts["invalid"],
                        running=counts["running"])

        def finished(pid, res):
            p = todo[pid]
            facts[pid] = {"cached": False, "seconds": res["seconds"], "host": res["host"], "pid": res["pid"]}
            if res.get("digest") and res["digest"] != source_digest():
                mismatch.add(f"{res['host']}:{res['pid']} runs l1bn sources {res['digest']}, "
                             f"the client {source_digest()}")
            if res["status"] == "ok":
                # through JSON, so that a fresh row equals a cached one
                figures = json.loads(json.dumps(res["figures"]))
                _write_atomic(point_cache_path(keys[pid], cache),
                              json.dumps({"point": p, "figures": figures}, indent=1, sort_keys=True))
                rows[pid] = row_of(p, "ok", figures)
                counts["done"] += 1
            else:
                rows[pid] = row_of(p, "failed", error=res["error"])
                counts["failed"] += 1
            show()
            if on_result is not None:
                on_result(pid, rows[pid], dict(counts))

        def lost(pid, exc):   # the executor could not run it (worker lost too often, ...)
            finished(pid, {"status": "failed", "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:600],
                           "seconds": None, "host": None, "pid": None})

        if todo:
            try:
                stims = {}
                for pid, p in list(todo.items()):
                    try:
                        stims[pid] = stimulus(p) if sweep.energy else None
                    except Exception as e:  # noqa: BLE001 - this point fails, the sweep goes on
                        finished(pid, {"status": "failed", "error": f"stimulus: {type(e).__name__}: {e}",
                                       "seconds": None, "host": None, "pid": None})
                order = sorted(stims, key=lambda k: -point_cost(todo[k]))
                tasks = {pid: (call_in_scratch, (evaluate, todo[pid], options, stims[pid])) for pid in order}
                resubmitted = run_tasks(ex, tasks, on_done=finished, on_error=lost, on_tick=show)["resubmitted"]
            except BaseException:
                if own:
                    ex.shutdown(wait=False, cancel_futures=True)
                raise
    info = ex.info() if ex is not None else {"kind": "none"}
    if own and ex is not None:
        ex.shutdown()
    ordered = [rows[point_id(p)] for p in points]
    ordered.sort(key=lambda r: tuple(r[k] for k in params))
    mark_pareto(ordered, sweep.design)
    run = {"command": command, "started_utc": started, "seconds": round(time.perf_counter() - t0, 1),
           "executor": info, "points": len(points), "computed": len(todo), "cached": counts["cached"],
           "ok": counts["done"], "failed": counts["failed"], "invalid": counts["invalid"],
           "resubmitted": resubmitted, "source_digest": source_digest(), "warnings": sorted(mismatch),
           "python": sys.version.split()[0], "per_point": {k: facts[k] for k in sorted(facts)}}
    paths = write_outputs(sweep, ordered, run, out)
    return {"rows": ordered, "run": run, "paths": paths}


def _cell(v) -> str:
    if v is None:
        return ""
    return str(v)


def results_csv(sweep: Sweep, rows: list[dict]) -> str:
    """The text of ``results.csv``: parameters, status, figures, Pareto flags, error."""
    cols = [*sweep.params, "status", *figure_columns(sweep.design, sweep.grid["target"], sweep.family is not None),
            "pareto_area", "pareto_energy", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in cols])
    return buf.getvalue()


def write_outputs(sweep: Sweep, rows: list[dict], run: dict, out: Path) -> dict:
    """``results.csv``, ``results.json``, ``run.json`` and the Pareto PNGs in ``out``."""
    out = Path(out)
    paths = {"csv": out / "results.csv", "json": out / "results.json", "run": out / "run.json"}
    _write_atomic(paths["csv"], results_csv(sweep, rows))
    res = {"design": sweep.design, "grid": {k: list(v) for k, v in sweep.grid.items()},
           "options": sweep.options(), "flow_version": FLOW_VERSION, "tools": tool_versions(),
           "mac_k": MAC_K if sweep.design == "mac" else None, "points": rows}
    if sweep.family is not None:
        from l1bn.sim.report.fpga import fpga_section

        res["fpga"] = fpga_section(sweep.fpga_target())
    _write_atomic(paths["json"], json.dumps(res, indent=1) + "\n")
    _write_atomic(paths["run"], json.dumps(run, indent=1) + "\n")
    paths["png"] = plot_pareto(sweep, rows, out)
    return paths
