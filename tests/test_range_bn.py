"""Range BN (Banner et al., NeurIPS 2018) end to end: spec constant, reference, hardware unit.

sigma = rnd((max d - min d) * Cr, c_bits) + eps with Cr = round(C(n) * 2**c_bits) and
C(n) = 0.5 * 0.35 * (1 + sqrt(pi ln 4)) / sqrt(2 ln n) (docs/arith/range_bn.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment
from l1bn.hw.bn_unit import RangeBNUnit, bn_latency_cycles, bn_unit_for
from l1bn.sim.simulate.bn import random_batch, simulate_bn
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import range_const, range_scale
from l1bn.spec.reference.bn import bn_forward


def test_range_constant_matches_the_public_rangebn():
    # quantized.pytorch RangeBN, one chunk: scale_fix = 0.5*0.35*(1+sqrt(pi*ln4))/sqrt(2 ln n)
    for n in (2, 16, 64, 4096):
        assert range_scale(n) == pytest.approx(0.175 * (1 + (math.pi * math.log(4)) ** 0.5)
                                               / (2 * math.log(n)) ** 0.5, rel=1e-15)
        assert range_const(n, 12) == math.floor(range_scale(n) * 4096 + 0.5)
    with pytest.raises(ValueError, match="n=1"):
        range_scale(1)


def test_range_sigma_tracks_the_std_of_gaussian_data():
    rng = np.random.default_rng(1)
    x = np.clip(np.rint(rng.normal(0, 20, (8, 4096))), -128, 127).astype(np.int64)
    cfg = BNConfig(norm="range", n=4096, channels=8)
    r = bn_forward(x, np.full(8, 64), np.zeros(8, dtype=np.int64), cfg)
    ratio = (r.sigma / 2**cfg.frac) / x.std(1)
    assert 0.75 < ratio.min() and ratio.max() < 1.25        # range is a noisy estimate of std


def test_range_reference_corners():
    cfg = BNConfig(norm="range", width=8, n=2, channels=3)
    x = np.array([[5, 5], [-128, 127], [127, -128]], dtype=np.int64)
    r = bn_forward(x, np.full(3, 64), np.full(3, 7), cfg)
    assert r.sigma[0] == cfg.eps and r.y[0].tolist() == [7, 7]           # all equal: y = beta
    d_range = 255 << cfg.frac
    want = ((d_range * range_const(2, cfg.c_bits) + (1 << (cfg.c_bits - 1))) >> cfg.c_bits) + cfg.eps
    assert r.sigma[1] == r.sigma[2] == want
    assert r.y[1].tolist() == r.y[2].tolist()[::-1]


def corner_batch(cfg, seed):
    x, gamma, beta = random_batch(cfg, seed=seed)
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    corners = [torch.full((cfg.n,), 3), torch.tensor([lo, hi] * (cfg.n // 2)),
               torch.full((cfg.n,), lo), torch.full((cfg.n,), hi),
               torch.tensor([hi] + [lo] * (cfg.n - 1)), torch.tensor([lo] + [hi] * (cfg.n - 1))]
    k = min(len(corners), cfg.channels)
    x[:k] = torch.stack(corners[:k])
    return x, gamma, beta


CASES = [  # (simulator, width, lanes, n, channels); lanes 3 and 8: comparator trees with an odd
    # leftover and three levels
    ("icarus", 4, 1, 2, 8),
    ("icarus", 8, 2, 32, 12),
    ("icarus", 16, 4, 64, 8),
    ("icarus", 8, 8, 64, 6),
    ("verilator", 4, 2, 16, 10),
    ("verilator", 8, 1, 2, 8),
    ("verilator", 16, 2, 48, 8),
    ("verilator", 4, 3, 24, 6),
]


@pytest.mark.parametrize("simulator,width,lanes,n,channels", CASES)
def test_range_unit_bit_exact(simulator, width, lanes, n, channels, tmp_path):
    kw = dict(frac=0, recip_bits=32) if width == 16 else {}
    cfg = BNConfig(norm="range", width=width, out_width=8, n=n, lanes=lanes, channels=channels, **kw)
    x, gamma, beta = corner_batch(cfg, seed=width + n)
    r = simulate_bn(cfg, x, gamma, beta, simulator=simulator, seed=n, build_dir=tmp_path)
    assert r["passed"] and r["mismatches"] == 0 and r["stats_mismatches"] == 0
    assert r["outputs"] == cfg.channels * cfg.n
    assert r["cycles"] == r["formula"] == bn_latency_cycles(cfg)


def test_registry_builds_the_range_unit():
    cfg = BNConfig(norm="range")
    unit = bn_unit_for(cfg)
    Fragment.get(unit, None)        # asked only for its type; elaborating marks it used
    assert type(unit) is RangeBNUnit
    with pytest.raises(ValueError, match="norm"):
        RangeBNUnit(BNConfig(norm="l1"))


def test_range_verilog_grows_linearly_with_lanes():
    """The lanes' max and min are trees of registered two-input comparators, so the Verilog grows
    by about the same number of lines per added lane, up to the largest unit (64 lanes). (When
    they were a chain of muxes that used the previous one twice, it doubled with every lane:
    271k lines at 16 lanes, and 32 never finished.)"""
    from l1bn.sim.verilog.bn import bn_verilog

    lines = {lanes: len(bn_verilog(BNConfig(norm="range", width=8, n=64, lanes=lanes, channels=1)).splitlines())
             for lanes in (8, 16, 32, 64)}
    per_lane = [(lines[2 * k] - lines[k]) / k for k in (8, 16, 32)]
    assert max(per_lane) < 1.15 * min(per_lane), (lines, per_lane)
    assert lines[64] < 2 * lines[32]
