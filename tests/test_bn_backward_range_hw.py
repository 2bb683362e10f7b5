"""Range BN's backward unit (:class:`l1bn.hw.bn_backward.RangeBNBackwardUnit`) against the
reference rule (``range_bracket``) on Icarus and Verilator: corner batches (ties at the max and
the min, all equal, one extreme against the rest, n = 2), widths 4, 8 and 16, and the cycle count
of the documented formula (``backward_latency_cycles``) measured in simulation."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.hdl import Fragment
from amaranth.sim import Simulator
from l1bn.hw.bn_backward import (
    RangeBNBackwardUnit,
    backward_latency_cycles,
    backward_term,
    pass2_cycles,
    per_channel_cycles,
    stored_state_bits,
)
from l1bn.hw.serial_div import SerialFloorDiv
from l1bn.sim.simulate.bwd import random_bwd_batch, simulate_bn_backward
from l1bn.sim.simulate.runner import SimulationError
from l1bn.spec.config import BNBackwardConfig, BNConfig
from l1bn.spec.reference.bn_backward import bn_backward


def config(width, n, channels):
    if width == 16:    # recip_bits 28 (the report's): range's u is ~clog2(n) bits wider than L1's
        b = BNConfig(norm="range", width=16, n=n, channels=channels, frac=0, recip_bits=28)
        return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=24, grad_out_frac=18)
    b = BNConfig(norm="range", width=width, n=n, channels=channels)
    return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=20, grad_out_frac=10)


def corner_batch(cfg, seed):
    """(x, dy, gamma): random rows, then corner channels: all equal; the two ends alternating (n/2
    ties at each); one max against n-1 equal minima; two maxima and three minima around random
    values; one min against n-1 equal maxima. dy uniform over its range, its ends included."""
    b = cfg.bn
    x, dy = random_bwd_batch(cfg, seed=seed)
    x, dy = np.asarray(x, dtype=np.int64), np.asarray(dy, dtype=np.int64)
    lo, hi = -(1 << (b.width - 1)), (1 << (b.width - 1)) - 1
    rng = np.random.default_rng(seed)
    n = b.n
    rows = [np.full(n, 3), np.resize([lo, hi], n), np.array([hi] + [lo] * (n - 1)),
            np.array([lo] + [hi] * (n - 1))]
    if n >= 5:
        mid = rng.integers(lo + 1, hi, n)
        mid[rng.permutation(n)[:5]] = [hi - 1, hi - 1, lo + 1, lo + 1, lo + 1]
        rows.insert(2, mid)
    k = min(len(rows), b.channels)
    x[:k] = np.stack(rows[:k])
    dy[0, :2] = [-(1 << (cfg.grad_width - 1)), (1 << (cfg.grad_width - 1)) - 1]
    gamma = np.resize(np.array([64, -80, 100, -50, 127, -128, 32, 1], dtype=np.int64), b.channels)
    return x, dy, gamma


CASES = [  # (simulator, width, n, channels, gaps)
    ("icarus", 4, 2, 4, 0),
    ("icarus", 8, 64, 6, 30),
    ("icarus", 16, 24, 6, 0),
    ("verilator", 4, 16, 6, 0),
    ("verilator", 8, 2, 4, 20),
    ("verilator", 16, 64, 6, 0),
]


@pytest.mark.parametrize("simulator,width,n,channels,gaps", CASES)
def test_range_backward_unit_bit_exact(simulator, width, n, channels, gaps, tmp_path):
    cfg = config(width, n, channels)
    x, dy, gamma = corner_batch(cfg, seed=width + n)
    r = simulate_bn_backward(cfg, x, dy, gamma, simulator=simulator, gaps=gaps, build_dir=tmp_path)
    assert r["passed"] and r["mismatches"] == r["g_mismatches"] == 0
    assert r["outputs"] == channels * n and r["g_seen"] == channels
    if gaps == 0:
        assert r["cycles"] == r["formula"] == backward_latency_cycles(cfg)


def test_corner_batches_hold_ties():
    """The batches above hold what they claim: ties at the max and the min, an all-equal channel
    (whose extremes' terms cancel), and an extreme that carries the larger gradient."""
    from l1bn.sim.simulate.bwd import forward_stats

    cfg = config(8, 64, 6)
    x, dy, gamma = corner_batch(cfg, seed=72)
    nmax = (x == x.max(1)[:, None]).sum(1)
    nmin = (x == x.min(1)[:, None]).sum(1)
    assert nmax[0] == nmin[0] == 64 and nmax[1] == nmin[1] == 32 and (nmax[2], nmin[2]) == (2, 3)
    mu, inv = forward_stats(x, cfg.bn)
    r = bn_backward(x, dy, gamma, mu, inv, cfg)
    p = r.u - (np.asarray(dy) << cfg.inner_frac)            # - mean(dy) - [max] Kmax + [min] Kmin
    assert (p[0] == p[0, 0]).all()                           # all equal: the two terms cancel
    assert len(set(p[3].tolist())) == 2                      # one max, the rest minima


class WrongConstant(RangeBNBackwardUnit):
    """Test-only mutant: C(n) one unit too large in H * Cr."""

    def elaborate(self, platform):
        import l1bn.hw.bn_range as mod
        orig = mod.range_const
        mod.range_const = lambda n, cb: orig(n, cb) + 1
        try:
            return super().elaborate(platform)
        finally:
            mod.range_const = orig


def test_mutant_is_caught(tmp_path):
    cfg = config(8, 16, 4)
    x, dy, gamma = corner_batch(cfg, seed=3)
    with pytest.raises(SimulationError) as e:
        simulate_bn_backward(cfg, x, dy, gamma, simulator="icarus", build_dir=tmp_path, unit=WrongConstant)
    assert e.value.failed == ["bn_backward_matches_reference"]


def test_latency_formula_and_interface():
    """The per-channel steps add the serial divisions (``k_quotient`` bits, one per cycle, and
    the sign) to the shared ones; pass 2 is two register stages, as L1's; x is needed in pass 2."""
    cfg = config(8, 64, 4)
    term = backward_term(cfg)
    assert term.const_cycles() == cfg.widths["k_quotient"] + 1
    l1 = BNBackwardConfig(bn=BNConfig(norm="l1", width=8, n=64, channels=4), grad_width=8, inner_frac=6,
                          grad_out_width=20, grad_out_frac=10)
    assert pass2_cycles(cfg) == pass2_cycles(l1)
    p, d = per_channel_cycles(cfg), pass2_cycles(cfg)
    assert backward_latency_cycles(cfg) == 4 * (2 * 64 + p) + 3 * max(0, d + 2 - 64 - p) + d
    bits = stored_state_bits(cfg)
    assert bits["range"] == bits["range_pass2"] == 8
    with pytest.raises(ValueError, match="sign_in=True is not supported by RangeBNBackwardUnit: its pass 2 "
                                         "compares x with the channel's max and min"):
        RangeBNBackwardUnit(cfg, sign_in=True)
    Fragment.get(RangeBNBackwardUnit(cfg), None)


@pytest.mark.parametrize("bits,dw", [(5, 3), (6, 4)])
def test_serial_floor_div_exhaustive(bits, dw):
    """``floor(a / c)`` for every |a| < 2**bits and 1 <= c < 2**dw, ``bits + 1`` cycles after
    the start (Amaranth's simulator)."""
    m = Module()
    a, c, go = Signal(signed(bits + 1)), Signal(dw), Signal()
    div = SerialFloorDiv(m, bits=bits, divisor=c, name="t")
    with m.If(go):
        m.d.sync += div.start(a)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    bad = []

    async def tb(ctx):
        for cv in range(1, 1 << dw):
            for av in range(-(1 << bits) + 1, 1 << bits):
                ctx.set(a, av)
                ctx.set(c, cv)
                ctx.set(go, 1)
                await ctx.tick()
                ctx.set(go, 0)
                await ctx.tick().repeat(bits + 1)
                if ctx.get(div.result) != av // cv:
                    bad.append((av, cv, ctx.get(div.result)))

    sim.add_testbench(tb)
    sim.run()
    assert bad == []
