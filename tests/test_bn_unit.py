"""The L1-/L2-BN forward units against the integer reference on Icarus and Verilator.

Every simulated batch mixes corner channels (zero dispersion, min/max extremes, an outlier that
saturates y, real digits-CNN activations) with random ones, so one build per config covers them.
"""

import subprocess

import pytest
import torch
from amaranth.hdl import Fragment
from l1bn.hw.bn_unit import (
    L1BNUnit,
    L2BNUnit,
    bn_fill_cycles,
    bn_latency_cycles,
    bn_stages,
    bn_unit_for,
    channel_overhead_cycles,
    normalize_cuts,
    normalize_depth_range,
)
from l1bn.sim.rtl import to_verilog
from l1bn.sim.simulate.bn import random_batch, simulate_bn
from l1bn.sim.simulate.runner import SimulationError
from l1bn.spec.config import BNConfig
from l1bn.spec.reference.bn import bn_forward
from l1bn.sw.capture import bn_inputs

REAL_CHANNELS = 6


def config(norm, width, lanes, n, channels):
    if width == 16:   # frac=0, recip_bits=32 keep every intermediate within 62 bits
        return BNConfig(norm=norm, width=16, frac=0, recip_bits=32, n=n, lanes=lanes, channels=channels)
    return BNConfig(norm=norm, width=width, out_width=6 if width == 4 else 8, n=n, lanes=lanes,
                    channels=channels)


def corner_batch(cfg, seed):
    """Random batch whose first channels are corners and real activations (when there is room)."""
    x, gamma, beta = random_batch(cfg, seed=seed)
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    glo, ghi = -(1 << (cfg.gamma_width - 1)), (1 << (cfg.gamma_width - 1)) - 1
    corners = [
        torch.full((cfg.n,), 3),                                    # all equal: sigma = eps
        torch.tensor([lo, hi] * (cfg.n // 2) + [lo] * (cfg.n % 2)),  # extremes only
        torch.full((cfg.n,), lo),                                   # all min
        torch.full((cfg.n,), hi),                                   # all max
        torch.tensor([hi] + [lo] * (cfg.n - 1)),                    # one outlier: y saturates
        torch.tensor([lo] + [hi] * (cfg.n - 1)),
    ]
    k = min(len(corners), cfg.channels)
    x[:k] = torch.stack(corners[:k])
    gamma[:k] = torch.tensor([ghi, glo, ghi, glo, ghi, ghi][:k])
    if cfg.channels >= k + REAL_CHANNELS:
        x[k:k + REAL_CHANNELS] = bn_inputs(width=cfg.width, n=cfg.n, channels=REAL_CHANNELS, seed=seed)
    return x, gamma, beta


CASES = [  # (simulator, norm, width, lanes, n, channels, gaps): >= 10,000 elements each
    ("verilator", "l1", 16, 4, 200, 50, 0),
    ("verilator", "l2", 8, 2, 96, 105, 0),
    ("verilator", "l2", 4, 1, 100, 100, 30),
    ("icarus", "l1", 4, 1, 100, 100, 0),
    ("icarus", "l2", 16, 4, 240, 42, 0),
    ("icarus", "l1", 8, 2, 50, 200, 0),      # n/lanes below the per-channel overhead
    ("icarus", "l2", 8, 4, 36, 280, 40),
]


@pytest.mark.parametrize("simulator,norm,width,lanes,n,channels,gaps", CASES)
def test_unit_bit_exact(simulator, norm, width, lanes, n, channels, gaps, tmp_path):
    cfg = config(norm, width, lanes, n, channels)
    x, gamma, beta = corner_batch(cfg, seed=width + n)
    y = bn_forward(x, gamma, beta, cfg).y
    assert y.max() == (1 << (cfg.out_width - 1)) - 1 and y.min() == -(1 << (cfg.out_width - 1))  # saturates
    r = simulate_bn(cfg, x, gamma, beta, simulator=simulator, gaps=gaps, seed=n, build_dir=tmp_path)
    assert r["passed"] and r["mismatches"] == 0 and r["stats_mismatches"] == 0
    assert r["outputs"] == cfg.channels * cfg.n >= 10_000
    if gaps == 0:
        assert r["cycles"] == r["formula"] == bn_latency_cycles(cfg)
        assert r["stats_seen"] == cfg.channels
        if cfg.beats >= channel_overhead_cycles(cfg):   # steady state: lanes elements per cycle
            assert r["in_rate"] == r["out_rate"] == cfg.lanes
            assert r["cycles"] == (cfg.channels + 2) * cfg.beats + bn_fill_cycles(cfg)


@pytest.mark.parametrize("norm,width,lanes", [("l1", 16, 1), ("l2", 4, 2)])
def test_n2(norm, width, lanes, tmp_path):
    """The smallest batch: two elements per channel (with two lanes: a one-beat buffer)."""
    cfg = config(norm, width, lanes, 2, 6)
    x, gamma, beta = corner_batch(cfg, seed=5)
    r = simulate_bn(cfg, x, gamma, beta, simulator="icarus", build_dir=tmp_path)
    assert r["mismatches"] == 0 and r["stats_mismatches"] == 0 and r["cycles"] == r["formula"]


def test_mutant_is_caught(tmp_path, monkeypatch):
    """A unit built with 2c instead of c = sqrt(pi/2) fails the bench."""
    import l1bn.hw.bn_l1 as mod

    monkeypatch.setattr(mod, "c_const", lambda cb, orig=mod.c_const: 2 * orig(cb))
    cfg = config("l1", 8, 1, 16, 3)
    x, gamma, beta = random_batch(cfg, seed=2)
    with pytest.raises(SimulationError) as e:
        simulate_bn(cfg, x, gamma, beta, simulator="icarus", build_dir=tmp_path)
    assert e.value.failed == ["bn_matches_reference"]


def test_verilator_lint(tmp_path):
    from l1bn.sim.tools import setup_verilator

    root = setup_verilator()
    for norm, width, lanes in [("l1", 8, 2), ("l2", 16, 4)]:
        v = tmp_path / f"{norm}.v"
        v.write_text(to_verilog(bn_unit_for(config(norm, width, lanes, 64, 3)), f"{norm}bn"))
        p = subprocess.run([str(root / "bin" / "verilator"), "--lint-only", "-Wno-fatal", str(v),
                            "--top-module", f"{norm}bn"], capture_output=True, text=True)
        assert p.returncode == 0 and "%Error" not in p.stderr, p.stderr[-2000:]


def _measure_latency(cfg, depth):
    """Cycles from the first input beat to the last output beat of one batch through the unit in
    Amaranth's simulator (input always valid, outputs always ready), and the y it produced."""
    from amaranth.sim import Simulator

    unit = bn_unit_for(cfg, depth=depth)
    x, gamma, beta = corner_batch(cfg, seed=cfg.n)
    beats = x.reshape(cfg.channels, cfg.beats, cfg.lanes)
    ys, span = [], {}

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.stats.ready, 1)
        c = b = cyc = 0
        while len(ys) < cfg.channels * cfg.beats:
            if c < cfg.channels:
                ctx.set(unit.i.valid, 1)
                ctx.set(unit.i.payload, [int(v) for v in beats[c, b]])
                ctx.set(unit.gamma, int(gamma[c]))
                ctx.set(unit.beta, int(beta[c]))
            else:
                ctx.set(unit.i.valid, 0)
            if ctx.get(unit.o.valid):
                ys.append([int(v) for v in ctx.get(unit.o.payload)])
                span["last"] = cyc
            if c < cfg.channels and ctx.get(unit.i.ready):
                span.setdefault("first", cyc)
                b += 1
                if b == cfg.beats:
                    c, b = c + 1, 0
            await ctx.tick()
            cyc += 1
            assert cyc < 10 * (cfg.channels + 3) * (cfg.beats + 60), "the unit stopped"

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert ys == bn_forward(x, gamma, beta, cfg).y.reshape(-1, cfg.lanes).tolist()
    return span["last"] - span["first"] + 1


@pytest.mark.parametrize("norm,lanes,n,channels", [("l1", 1, 48, 4), ("l2", 1, 48, 4), ("l2", 4, 16, 5)])
def test_latency_formula_against_measurement(norm, lanes, n, channels):
    """The latency measured in Amaranth's simulator, at the shallowest and the deepest normalize
    pipeline, equals ``bn_latency_cycles``; at full rate (n/lanes >= the per-channel overhead)
    it also equals the closed form ``(channels + 2) * n/lanes + bn_fill_cycles``."""
    cfg = config(norm, 8, lanes, n, channels)
    lo, hi = normalize_depth_range(cfg)
    assert hi == len(normalize_cuts(cfg)) and bn_latency_cycles(cfg) == bn_latency_cycles(cfg, depth=hi)
    for depth in (lo, hi):
        measured = _measure_latency(cfg, depth)
        assert measured == bn_latency_cycles(cfg, depth=depth), depth
        if cfg.beats >= channel_overhead_cycles(cfg):
            assert measured == (channels + 2) * cfg.beats + bn_fill_cycles(cfg, depth=depth)
        else:
            assert measured > (channels + 2) * cfg.beats + bn_fill_cycles(cfg, depth=depth)


def test_api_and_errors():
    cfg = config("l1", 8, 1, 16, 2)
    stages = bn_stages(cfg)
    assert sorted(stages) == ["disp", "normalize", "recip", "stats"]
    for name, stage in stages.items():   # each stage elaborates alone (for per-stage synthesis)
        assert f"module {name}" in to_verilog(stage, name)
    for unit, cls in [(bn_unit_for(cfg), L1BNUnit), (bn_unit_for(config("l2", 8, 1, 16, 2)), L2BNUnit)]:
        Fragment.get(unit, None)        # built to check its class; elaborated, so it is used
        assert type(unit) is cls
    with pytest.raises(ValueError, match="does not match L2BNUnit"):
        L2BNUnit(cfg)
    with pytest.raises(TypeError, match="must be a BNConfig"):
        L1BNUnit({"width": 8})
    for bad, msg in [(dict(width=0), "width=0 is out of range"), (dict(width=33), "width=33 is out of range"),
                     (dict(n=1), "n=1 is out of range"), (dict(n=10, lanes=4), "lanes=4 must divide n=10"),
                     (dict(lanes=0), "lanes=0 is out of range"), (dict(norm="l3"), "norm='l3' is not allowed")]:
        with pytest.raises(ValueError, match=msg):
            BNConfig(**bad)


def test_cli(tmp_path, capsys):
    from l1bn.cli.main import main

    out = tmp_path / "l2bn.v"
    main(["verilog", "l2bn", "--width", "8", "--n", "96", "--lanes", "2", "--channels", "4", "-o", str(out)])
    assert "module l2bn" in out.read_text()
    cfg = BNConfig(norm="l2", width=8, n=96, lanes=2, channels=4)
    assert f"latency {bn_latency_cycles(cfg)} cycles" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["verilog", "l1bn", "--n", "10", "--lanes", "4", "-o", str(out)])
    assert e.value.code != 0
    assert "error: lanes=4 must divide n=10" in capsys.readouterr().err
