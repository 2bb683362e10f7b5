"""Sanity tests of the FPGA flow (synthesis, place and route, energy: l1bn.sim.fpga) and its job
runner (l1bn.sim.jobs) on tiny designs."""

import random

import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.sim.fpga import steps
from l1bn.sim.fpga.steps import CMOSJob, ECP5Job
from l1bn.sim.jobs import Job, run_jobs
from l1bn.sim.rtl import ports

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


class Pipe(wiring.Component):
    """``o = (i * k + acc)`` over ``depth`` registered adder stages: area grows with width and depth.

    Interface: i, o are streams of signed(width); o is i after ``depth`` cycles (no backpressure,
    i.ready = 1). Latency ``depth`` cycles.
    """

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"i": In(stream.Signature(signed(width))), "o": Out(stream.Signature(signed(width)))})

    def elaborate(self, platform):
        m = Module()
        v, ok = self.i.payload, self.i.valid
        for k in range(self.depth):
            r = Signal(signed(self.width), name=f"r{k}")
            rv = Signal(name=f"v{k}")
            m.d.sync += [r.eq(v + (v >> 1) + k), rv.eq(ok)]
            v, ok = r, rv
        m.d.comb += [self.i.ready.eq(1), self.o.payload.eq(v), self.o.valid.eq(ok)]
        return m


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    # a private cache per test: cache hits are what the test asks for, never a leftover
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path


def beats(values, width):
    return [{"i__payload": v & ((1 << width) - 1)} for v in values]


def test_ports_and_harness_verilog():
    p = ports(Pipe(8, 2))
    assert ("i__payload", "in", 8) in p and ("o__payload", "out", 8) in p and ("i__ready", "out", 1) in p
    job = ECP5Job(Pipe(8, 2), name="pipe")
    assert "module top(" in job.verilog.replace("module top (", "module top(")
    assert ECP5Job(Pipe(8, 2), name="x").key == job.key          # same design, same key
    assert ECP5Job(Pipe(8, 3), name="pipe").key != job.key
    with pytest.raises(TypeError, match="use a step"):
        Job(Pipe(8, 2), name="x")


def test_twice_the_design_reports_more_area(tmp_path):
    small = steps.synth_ecp5(Pipe(8, 2), "small", tmp_path)
    big = steps.synth_ecp5(Pipe(16, 4), "big", tmp_path)
    assert big["lut"] + big["ccu2"] > 1.5 * (small["lut"] + small["ccu2"])
    assert big["ff"] > small["ff"]
    cs, cb = steps.synth_cmos(Pipe(8, 2), "small", tmp_path), steps.synth_cmos(Pipe(16, 4), "big", tmp_path)
    assert cb["transistors"] > 3 * cs["transistors"] > 0
    assert cb["dff"] == 4 * 17 and cs["dff"] == 2 * 9      # payload + valid flops per stage


def test_cache_hit_is_identical_and_fresh_run_gives_same_counts(tmp_path):
    a = steps.synth_cmos(Pipe(8, 3), "p", tmp_path)
    b = steps.synth_cmos(Pipe(8, 3), "p", tmp_path)
    assert not a["cached"] and b["cached"]
    assert {k: v for k, v in a.items() if k != "cached"} == {k: v for k, v in b.items() if k != "cached"}
    c = steps.synth_cmos(Pipe(8, 3), "p", tmp_path, use_cache=False)
    keep = ("transistors", "gates", "dff", "cells_by_type", "modules")
    assert {k: a[k] for k in keep} == {k: c[k] for k in keep}


def test_constant_input_gives_near_zero_data_energy_and_latency_is_measured(tmp_path):
    rng = random.Random(1)
    n = 200
    const = steps.gate_energy(Pipe(8, 3), beats([37] * n, 8), name="c", workdir=tmp_path, expect_out=n)
    rand = steps.gate_energy(Pipe(8, 3), beats([rng.randrange(-128, 128) for _ in range(n)], 8), name="r",
                            workdir=tmp_path, expect_out=n)
    assert rand["data_energy"] > 1000
    assert const["data_energy"] < 0.02 * rand["data_energy"]
    # the clock costs the same for both: 2 edges per cycle on every flop
    assert const["clock_energy"] == rand["clock_energy"] > 0
    assert const["cycles"] == rand["cycles"] == n + 3 - 1 + 1   # first beat in, depth 3, last beat out


def test_parallel_jobs_match_serial(tmp_path):
    jobs = [CMOSJob(Pipe(w, 2), name=f"p{w}") for w in (6, 7, 8)]
    par = run_jobs(jobs, workdir=tmp_path, max_workers=2, console=False)
    ser = run_jobs([CMOSJob(Pipe(w, 2), name=f"p{w}") for w in (6, 7, 8)],
                        workdir=tmp_path / "s", max_workers=1, console=False, use_cache=False)
    assert [r["transistors"] for r in par] == [r["transistors"] for r in ser]
    assert [r["transistors"] for r in par] == sorted(r["transistors"] for r in par)
    dup = run_jobs([CMOSJob(Pipe(6, 2), name="a"), CMOSJob(Pipe(6, 2), name="b")],
                        workdir=tmp_path / "d", max_workers=2, console=False)
    assert dup[0]["transistors"] == dup[1]["transistors"]


@pytest.mark.slow
def test_implement_places_and_routes(tmp_path):
    r = steps.implement(Pipe(8, 2), name="pipe", workdir=tmp_path)
    assert r["device"] == "LFE5U-25F CABGA256"
    assert 50 < r["fmax_mhz"] < 1000
    for k in ("lut", "ff", "ccu2", "dsp", "bram"):
        assert k in r
    again = steps.implement(Pipe(8, 2), name="pipe", workdir=tmp_path)
    assert again["cached"] and again["fmax_mhz"] == r["fmax_mhz"]
