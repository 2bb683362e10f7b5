"""The arithmetic contract over the whole accepted configuration space (l1bn.spec).

Every ``BNConfig`` the constructor accepts must compute, in the numpy int64 reference, exactly what
unbounded Python integers compute from the formulas of docs/arith/bn_train.md, on the inputs that
drive every intermediate to its extreme. A config whose intermediates cannot fit int64 must be
refused with a message naming the intermediate and the limit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from l1bn.spec.config import MAX_INTERMEDIATE_BITS, BNConfig
from l1bn.spec.intmath import c_const, range_const
from l1bn.spec.norms import NORMS
from l1bn.spec.reference.bn import bn_forward


def naive_forward(x: list[int], gamma: int, beta: int, cfg: BNConfig) -> tuple[int, int, list[int]]:
    """One channel with unbounded Python integers: (sigma, inv, y)."""
    n = cfg.n

    def rnd(v, s):
        return (v + (1 << (s - 1))) >> s if s > 0 else v << -s

    def div_round(v):
        return (2 * v + n) // (2 * n)

    mu = div_round(sum(x) << cfg.frac)
    d = [(v << cfg.frac) - mu for v in x]
    if cfg.norm == "l1":
        sigma = rnd(div_round(sum(abs(v) for v in d)) * c_const(cfg.c_bits), cfg.c_bits) + cfg.eps
    elif cfg.norm == "range":
        sigma = rnd((max(d) - min(d)) * range_const(n, cfg.c_bits), cfg.c_bits) + cfg.eps
    else:
        sigma = math.isqrt(div_round(sum(v * v for v in d))) + cfg.eps
    inv = (1 << cfg.recip_bits) // sigma
    lo, hi = -(1 << (cfg.out_width - 1)), (1 << (cfg.out_width - 1)) - 1
    y = [min(hi, max(lo, rnd(gamma * rnd(v * inv, cfg.recip_bits - cfg.xhat_frac), cfg.affine_shift) + beta))
         for v in d]
    return sigma, inv, y


@st.composite
def any_config(draw):
    """Any parameter combination in the documented ranges (the constructor decides)."""
    gamma_width = draw(st.integers(2, 18))
    xhat_frac = draw(st.integers(1, 24))
    gamma_frac = draw(st.integers(0, gamma_width - 1))
    kw = dict(
        norm=draw(st.sampled_from(sorted(NORMS))),
        width=draw(st.integers(2, 32)),
        out_width=draw(st.integers(2, 32)),
        channels=1,
        n=draw(st.one_of(st.integers(2, 64), st.integers(2, 65536))),
        lanes=1,
        frac=draw(st.integers(0, 16)),
        xhat_frac=xhat_frac,
        recip_bits=draw(st.integers(4, 40)),
        gamma_width=gamma_width,
        gamma_frac=gamma_frac,
        beta_width=draw(st.integers(2, 32)),
        out_frac=draw(st.integers(0, xhat_frac + gamma_frac)),
        eps=draw(st.one_of(st.just(1), st.integers(1, 2**16))),
        c_bits=draw(st.integers(4, 24)),
    )
    try:
        return BNConfig(**kw)
    except ValueError as e:
        assert "intermediate" in str(e) and str(MAX_INTERMEDIATE_BITS) in str(e), e
        assume(False)


def extreme_batches(cfg: BNConfig, which: int) -> list[int]:
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    n = cfg.n
    return [
        [lo if i % 2 == 0 else hi for i in range(n)],        # largest dispersion
        [lo] * n,                                            # all equal, most negative
        [hi] * (n - 1) + [lo],                               # one outlier
        [lo] * (n - 1) + [hi],
        [hi] * n,
    ][which]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                   HealthCheck.too_slow])
@given(cfg=any_config(), which=st.integers(0, 4), gsel=st.integers(0, 2), bsel=st.integers(0, 2))
def test_every_accepted_config_computes_exactly(cfg, which, gsel, bsel):
    glo, ghi = -(1 << (cfg.gamma_width - 1)), (1 << (cfg.gamma_width - 1)) - 1
    blo, bhi = -(1 << (cfg.beta_width - 1)), (1 << (cfg.beta_width - 1)) - 1
    gamma, beta = (glo, ghi, 1)[gsel], (blo, bhi, 0)[bsel]
    x = extreme_batches(cfg, which)
    r = bn_forward(np.array([x], dtype=np.int64), np.array([gamma], dtype=np.int64),
                   np.array([beta], dtype=np.int64), cfg)
    sigma, inv, y = naive_forward(x, gamma, beta, cfg)
    assert int(r.sigma[0]) == sigma and int(r.inv[0]) == inv
    assert r.y[0].tolist() == y
    # every declared width really bounds its intermediate
    assert max(cfg.widths.values()) <= MAX_INTERMEDIATE_BITS


def test_issue_overflow_example_gives_inv_0_and_beta():
    """The int64 wrap of s*C found by an independent re-implementation (issue 13)."""
    cfg = BNConfig(norm="l1", width=24, n=64, frac=16, c_bits=24)
    x = np.array([[-(2**23), 2**23 - 1] * 32], dtype=np.int64)
    r = bn_forward(x, np.array([64]), np.array([5]), cfg)
    assert int(r.sigma[0]) > 0 and int(r.inv[0]) == 0
    assert set(r.y[0].tolist()) == {5}


@pytest.mark.parametrize("kw, name", [
    (dict(width=32, n=65536, frac=16), "d_times_inv"),
    (dict(norm="l2", width=32, n=65536, frac=16), "disp_numerator"),
])
def test_refusal_names_the_intermediate_and_the_limit(kw, name):
    with pytest.raises(ValueError, match=rf"\({name}\); at most {MAX_INTERMEDIATE_BITS} signed bits"):
        BNConfig(**kw)


@pytest.mark.parametrize("width,n,frac", [(4, 2, 0), (8, 64, 4), (8, 63, 4), (16, 1000, 0), (16, 64, 8)])
def test_registry_widths_hold_the_extremes(width, n, frac):
    """Every registered norm is accepted by BNConfig, and the widths its registry entry gives
    (``disp_sum_bits``, ``disp_bits``, ``sigma_bits``) hold D, s and sigma of every extreme batch
    in the reference, with at most two bits to spare at the largest dispersion (a width too
    small, or far too large, fails)."""
    with pytest.raises(ValueError, match="norm='l3' is not allowed"):
        BNConfig(norm="l3")
    for name in NORMS:
        cfg = BNConfig(norm=name, width=width, n=n, frac=frac)
        assert cfg.norm_spec is NORMS[name]
        worst = {"disp_sum": 0, "s": 0, "sigma": 0}
        for which in range(5):
            r = bn_forward(np.array([extreme_batches(cfg, which)], dtype=np.int64), np.array([1]),
                           np.array([0]), cfg)
            for key in worst:
                v = int(getattr(r, key)[0])
                assert v >= 0, (name, key)
                worst[key] = max(worst[key], v)
        bits = {"disp_sum": cfg.disp_sum_bits, "s": cfg.disp_bits, "sigma": cfg.sigma_bits}
        for key, v in worst.items():
            assert v.bit_length() <= bits[key], (name, key, v)
        assert worst["s"].bit_length() >= cfg.disp_bits - 2, (name, worst["s"])
