"""``l1bn sweep``: grid, cache, failures, and the same results on local processes and on a real
Dask cluster (``distributed.LocalCluster`` of processes, and ``dask scheduler`` / ``dask worker``
started as commands), including a worker killed in the middle of a sweep. No mocks: every point
runs the real tools (tiny designs, no place and route, to keep the time small)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from l1bn.sim.sweep.grid import Sweep, norms, parse_list, point_id, sweep_from_options
from l1bn.sim.sweep.pareto import pareto_front
from l1bn.sim.sweep.run import run_sweep

# 2 tiny points with the gate-level run; the n = 16 point needs more than 80 simulated cycles
# (about 90), so its gate-level simulation fails: the injected failing point
ENERGY = dict(norm="l1", width="4", n="8,16", lanes="1", channels="1", pnr=False, max_cycles=80)
# 6 tiny points, ECP5 synthesis only
SYNTH = dict(norm="l1,l2", width="3,4,5", n="8", lanes="1", channels="1", pnr=False, energy=False)


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def _cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                        host="127.0.0.1")


@pytest.fixture(scope="module")
def local_energy(tmp_path_factory):
    """The ENERGY sweep in this process (1 worker): the reference table."""
    d = tmp_path_factory.mktemp("local_energy")
    res = run_sweep(sweep_from_options(**ENERGY), d / "out", workers=1, console=False, cache=d / "cache")
    return d, res


@pytest.fixture(scope="module")
def local_synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("local_synth")
    res = run_sweep(sweep_from_options(**SYNTH), d / "out", workers=1, console=False, cache=d / "cache")
    return d, res


# ---------------------------------------------------------------------------------------------
# grid and options (no tools)

def test_grid_is_the_product_in_parameter_order():
    sw = sweep_from_options(norm="l2,l1", width="4,8", n="16", lanes="1,2", channels="2")
    pts = sw.points()
    assert len(pts) == 2 * 2 * 1 * 2 * 1
    assert [p["norm"] for p in pts[:4]] == ["l2"] * 4
    assert pts[0] == {"design": "bn", "norm": "l2", "width": 4, "n": 16, "lanes": 1, "channels": 2,
                      "target": "fpga"}
    assert len({point_id(p) for p in pts}) == len(pts)
    assert sw.seeds == 3 and sw.pnr and sw.energy
    both = sweep_from_options(norm="l1", target="fpga,asic")   # l1bn.sim.asic is installed here
    assert [p["target"] for p in both.points()] == ["fpga", "asic"]
    mac = sweep_from_options(design="mac", rows="2,4", cols="4", wbits="1,4", abits="4")
    assert [(p["rows"], p["wbits"]) for p in mac.points()] == [(2, 1), (2, 4), (4, 1), (4, 4)]


def test_norms_come_from_the_spec_registry():
    from l1bn.spec.config import BNConfig

    assert sweep_from_options().grid["norm"] == tuple(BNConfig.NORMS) == norms()


def test_spec_file_and_options_override(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('design = "bn"\nnorm = ["l1", "l2"]\nwidth = "4,8"\nn = [16]\npnr = false\nseeds = 1\n')
    sw = sweep_from_options(spec=f)
    assert sw.grid["width"] == (4, 8) and sw.grid["n"] == (16,) and not sw.pnr and sw.seeds == 1
    assert sweep_from_options(spec=f, width="16").grid["width"] == (16,)
    f.write_text('norm = "l1"\nrows = [4]\n')
    with pytest.raises(ValueError, match="unknown key"):
        sweep_from_options(spec=f)


@pytest.mark.parametrize("kw, msg", [
    (dict(width="4,99"), "width=99 is out of range"),
    (dict(width="4,x"), "comma-separated integers"),
    (dict(width="4,4"), "repeats a value"),
    (dict(width="4,"), "empty item"),
    (dict(norm="l1,l3"), "norm='l3' is not allowed"),
    (dict(target="gpu"), "target='gpu' is not allowed"),
    (dict(seeds=0), "seeds=0 is out of range"),
    (dict(design="mac", norm="l1"), "do not apply to design 'mac'"),
    (dict(design="mac", wbits="9"), "wbits=9 is out of range"),
])
def test_bad_values_are_errors_naming_them(kw, msg):
    with pytest.raises(ValueError, match=msg):
        sweep_from_options(**kw)


def test_parse_list_and_pareto_front():
    assert parse_list("n", "16, 64", int) == (16, 64)
    assert parse_list("n", [16], int) == (16,)
    assert parse_list("norm", "l1", str) == ("l1",)
    # minimize both: (3, 3) is beaten by (2, 2); the two equal points are both on the front
    xy = [(1, 5), (2, 2), (3, 3), (4, 1), (2, 2), (5, 1)]
    assert pareto_front(xy) == [0, 1, 4, 3]


def test_invalid_combination_is_a_point_not_an_error(tmp_path):
    sw = sweep_from_options(norm="l1", width="4", n="8", lanes="3", channels="1", pnr=False, energy=False)
    res = run_sweep(sw, tmp_path / "out", workers=1, console=False, cache=tmp_path / "c")
    (row,) = _rows(res["paths"]["csv"])
    assert row["status"] == "invalid" and row["error"] == "lanes=3 must divide n=8"
    assert res["run"]["computed"] == 0


def test_cli_errors_are_one_line(l1bn_cli, tmp_path):
    code, out = l1bn_cli(["sweep", "--width", "4,99", "--out", str(tmp_path / "o")])
    assert code == 2 and out.strip() == "error: width=99 is out of range; allowed 2..32"
    code, out = l1bn_cli(["sweep", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)])
    assert code == 2 and "not both" in out
    code, out = l1bn_cli(["sweep", "--scheduler", "nowhere", "--out", str(tmp_path)])
    assert code == 2 and out.strip().startswith("error: scheduler='nowhere' must be an address")


# ---------------------------------------------------------------------------------------------
# real runs

def test_local_sweep_figures_failures_and_outputs(local_energy):
    d, res = local_energy
    rows = _rows(res["paths"]["csv"])
    assert [(r["norm"], r["n"]) for r in rows] == [("l1", "8"), ("l1", "16")]
    r = rows[0]
    assert r["status"] == "ok" and r["error"] == ""
    assert int(r["lut"]) > 0 and int(r["transistors"]) > 0 and float(r["energy_per_element"]) > 0
    assert r["fmax_mhz"] == "" and r["latency_ns"] == ""          # no place and route
    # the gate-level run's cycle count is the latency formula's
    from l1bn.hw.bn_unit import bn_latency_cycles
    from l1bn.sim.report.units import forward_config

    assert int(r["cycles"]) == bn_latency_cycles(forward_config("l1", 4, n=8, lanes=1, channels=1))
    # the design-figure files: no host names, no times
    text = res["paths"]["csv"].read_text()
    assert socket.gethostname() not in text and "seconds" not in text
    run = json.loads(res["paths"]["run"].read_text())
    assert run["points"] == 2 and run["computed"] == 2 and run["ok"] == 1 and run["failed"] == 1
    assert json.loads(res["paths"]["json"].read_text())["points"][0]["norm"] == "l1"
    assert {p.name for p in res["paths"]["png"]} == {"pareto_area_latency.png", "pareto_energy_latency.png"}


def test_failing_point_is_recorded_with_its_error(local_energy):
    _, res = local_energy
    failed = [r for r in _rows(res["paths"]["csv"]) if r["status"] == "failed"]
    assert [(r["norm"], r["n"]) for r in failed] == [("l1", "16")]
    for r in failed:
        assert r["error"].startswith("RuntimeError: gate-level simulation: ")
        assert "output beats in 80 cycles" in r["error"] and r["lut"] == ""


def test_rerun_takes_points_from_the_cache(local_synth):
    d, res = local_synth
    again = run_sweep(sweep_from_options(**SYNTH), d / "again", workers=2, console=False, cache=d / "cache")
    assert again["run"]["cached"] == 6 and again["run"]["computed"] == 0
    assert again["run"]["executor"] == {"kind": "none"}      # nothing started
    assert (d / "again" / "results.csv").read_bytes() == res["paths"]["csv"].read_bytes()
    # L1 is smaller than L2 at every width
    rows = _rows(res["paths"]["csv"])
    for w in ("3", "4", "5"):
        lut = {r["norm"]: int(r["lut"]) for r in rows if r["width"] == w}
        assert lut["l1"] < lut["l2"]


@pytest.mark.slow
def test_cluster_sweep_writes_the_same_results(local_energy, tmp_path):
    from distributed import Client
    from l1bn.sim.executors import DaskExecutor

    _, ref = local_energy
    with _cluster() as cluster, Client(cluster) as client:
        ex = DaskExecutor(client=client)
        res = run_sweep(sweep_from_options(**ENERGY), tmp_path / "out", executor=ex, console=False,
                        cache=tmp_path / "cache")
        ex.shutdown()
    assert res["paths"]["csv"].read_bytes() == ref["paths"]["csv"].read_bytes()
    assert res["paths"]["json"].read_bytes() == ref["paths"]["json"].read_bytes()
    run = res["run"]
    assert run["executor"]["kind"] == "dask" and run["executor"]["worker_processes"] == 2
    # every point ran in a worker process, not here
    assert {f["pid"] for f in run["per_point"].values()}.isdisjoint({os.getpid()})


@pytest.mark.slow
def test_worker_killed_mid_sweep_every_point_once(local_synth, tmp_path):
    from distributed import Client
    from l1bn.sim.executors import DaskExecutor

    _, ref = local_synth
    killed = []

    with _cluster() as cluster, Client(cluster) as client:
        ex = DaskExecutor(client=client)

        def kill_one(pid, row, counts):
            if killed:
                return
            busy = {a: ks for a, ks in client.processing().items() if ks}
            addr = sorted(busy)[0]
            wpid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(wpid, signal.SIGKILL)
            killed.append((addr, len(busy[addr])))

        res = run_sweep(sweep_from_options(**SYNTH), tmp_path / "out", executor=ex, console=False,
                        cache=tmp_path / "cache", on_result=kill_one)
        ex.shutdown()
    assert killed and killed[0][1] >= 1           # the killed worker was running a point
    rows = _rows(res["paths"]["csv"])
    ids = [(r["norm"], r["width"]) for r in rows]
    assert len(ids) == len(set(ids)) == 6 and all(r["status"] == "ok" for r in rows)
    assert res["paths"]["csv"].read_bytes() == ref["paths"]["csv"].read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dask_scheduler_and_worker_commands(local_synth, tmp_path):
    """``dask scheduler`` and ``dask worker`` started as separate processes, ``l1bn sweep
    --scheduler`` as a third: the same results.csv as the local run."""
    _, ref = local_synth
    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "L1BN_BUILD_DIR": str(tmp_path / "build")}
    procs = []
    try:
        procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        procs.append(subprocess.Popen([dask, "worker", addr, "--host", "127.0.0.1", "--nworkers", "2",
                                       "--nthreads", "1", "--no-dashboard"], cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        args = [str(Path(sys.executable).parent / "l1bn"), "sweep", "--norm", SYNTH["norm"], "--width", SYNTH["width"],
                "--n", "8", "--lanes", "1", "--channels", "1", "--no-pnr", "--no-energy",
                "--scheduler", addr, "--out", str(tmp_path / "out")]
        t0 = time.monotonic()
        p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        # l1bn report uses the same executors: its flow steps on the same cluster
        rargs = [str(Path(sys.executable).parent / "l1bn"), "report", "--widths", "4", "--n", "8", "--channels", "1",
                 "--no-pnr", "--no-stages", "--no-backward", "--scheduler", addr, "--out", str(tmp_path / "rep")]
        rp = subprocess.run(rargs, env=env, capture_output=True, text=True, timeout=600)
        assert rp.returncode == 0, rp.stderr[-2000:]
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert (tmp_path / "out" / "results.csv").read_bytes() == ref["paths"]["csv"].read_bytes()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["executor"]["address"] == addr and run["executor"]["worker_processes"] == 2
    assert run["seconds"] <= time.monotonic() - t0
    assert "6 points: 6 ok (0 from cache), 0 failed, 0 invalid" in p.stdout
    # the report's ECP5 step is the sweep's synthesis of the same unit: the same LUT count
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    ref_lut = {r["norm"]: int(r["lut"]) for r in _rows(ref["paths"]["csv"]) if r["width"] == "4"}
    assert {norm: rep["widths"]["4"]["forward"][norm]["lut"] for norm in ("l1", "l2")} == ref_lut
    steps = int(re.search(r"(\d+) steps \(0 from cache\)", rp.stdout).group(1))
    # the client wrote the cache (the workers have no shared folder with it): one entry per step
    cache = tmp_path / "build" / "flow-cache"
    assert len(list(cache.glob("ecp5-*.json")) + list(cache.glob("energy-*.json"))) == steps >= 4


def test_sweep_dataclass_options_key_the_cache():
    a = Sweep(design="bn", grid={}, pnr=False, energy=False)
    assert a.options() == {"pnr": False, "energy": False}
    b = Sweep(design="bn", grid={}, pnr=True, seeds=5, energy=True, max_cycles=9)
    assert b.options() == {"pnr": True, "seeds": 5, "energy": True, "max_cycles": 9}


def _die_once(marker: str, value: int) -> int:
    """The first call ends its worker process abruptly (as a crashing tool would)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(3)
    return 2 * value


def _fail_on_odd(value: int) -> int:
    if value % 2:
        raise ValueError(f"odd {value}")
    return value


def test_local_pool_replaces_a_dead_worker_and_resubmits(tmp_path):
    from l1bn.sim.executors import LocalExecutor, run_tasks

    got = {}
    with LocalExecutor(2) as ex:
        stats = run_tasks(ex, {i: (_die_once, (str(tmp_path / "marker"), i)) for i in range(4)},
                          on_done=got.__setitem__)
        assert ex.restarts == 1
    assert got == {0: 0, 1: 2, 2: 4, 3: 6} and stats["resubmitted"] >= 1


def test_run_tasks_reports_each_task_once():
    from l1bn.sim.executors import make_executor, run_tasks

    done, failed = {}, {}
    ex = make_executor(workers=1)
    assert ex.kind == "inline"
    run_tasks(ex, {i: (_fail_on_odd, (i,)) for i in range(5)}, on_done=done.__setitem__,
              on_error=lambda k, e: failed.setdefault(k, str(e)))
    assert done == {0: 0, 2: 2, 4: 4} and failed == {1: "odd 1", 3: "odd 3"}
    with pytest.raises(ValueError, match="odd 1"):   # without on_error the error propagates
        run_tasks(ex, {1: (_fail_on_odd, (1,))}, on_done=done.__setitem__)


def test_mac_point_cycles_equal_the_stream_formula(tmp_path):
    from l1bn.hw.mac_array import stream_cycles
    from l1bn.sim.sweep.grid import MAC_K, MAC_TILES, point_config

    sw = sweep_from_options(design="mac", rows="2", cols="2", wbits="1", abits="2", pnr=False)
    res = run_sweep(sw, tmp_path / "out", workers=1, console=False, cache=tmp_path / "c")
    (row,) = _rows(res["paths"]["csv"])
    assert row["status"] == "ok" and int(row["dsp"]) == 0 and float(row["energy_per_mac"]) > 0
    cfg = point_config(sw.points()[0])
    assert int(row["cycles"]) == stream_cycles(cfg, MAC_K, MAC_TILES)
