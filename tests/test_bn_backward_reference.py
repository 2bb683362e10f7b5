"""Integer BN backward against a naive pure-Python reading of docs/arith/bn_backward.md, and the
integer L1 gradient against float64 autograd of the L1-BN forward within the documented bound."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from l1bn.spec.config import BNBackwardConfig, BNConfig, config_from_json
from l1bn.spec.reference.bn import bn_forward
from l1bn.spec.reference.bn_backward import bn_backward
from l1bn.sw.bn_float import dx_error_bound, float_l1bn_dx
from l1bn.sw.capture import bn_grads

SETTINGS = settings(max_examples=120, deadline=None)


def forward_stats(x, bcfg: BNConfig):
    """(mu, inv) of the integer forward (``l1bn.spec.reference.bn.bn_forward``) on ``x``."""
    gamma = torch.ones(bcfg.channels, dtype=torch.int64) << bcfg.gamma_frac
    r = bn_forward(x, gamma, torch.zeros(bcfg.channels, dtype=torch.int64), bcfg)
    return r.mu, r.inv


def real_grads(width, n, channels, seed, grad_width):
    """(x, dy) of one BN layer in a training step of the digits CNN (``l1bn.sw.capture.bn_grads``)."""
    x, dy = bn_grads(width=width, n=n, channels=channels, seed=seed)
    lim = 1 << (grad_width - 1)
    return x.to(torch.int64), dy.to(torch.int64).clamp(-lim, lim - 1)


def rnd(x, s):
    return (x + (1 << (s - 1))) >> s if s > 0 else x << -s


def naive(x, dy, gamma, mu, inv, cfg):
    """One channel, Python ints, straight from the documented formulas."""
    b = cfg.bn
    n, F, R, k = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits
    rc = ((1 << (k + 1)) // n + 1) >> 1

    def div(v):
        return rnd(v * rc, k)

    d = [(xi << b.frac) - mu for xi in x]
    sum_dy = sum(dy)
    t = cfg.h_preshift
    h = rnd(rnd(sum(a * e for a, e in zip(dy, d, strict=True)), t) * inv, R - F - t)
    mean_dy = div(sum_dy << F)
    if b.norm == "l1":
        cc = round(math.sqrt(math.pi / 2) * (1 << b.c_bits))
        mh = div(h * cc)
        msgn = div(sum(1 if e >= 0 else -1 for e in d) << F)
        u = [(a << F) - mean_dy - rnd(mh * ((1 if e >= 0 else -1) * (1 << F) - msgn), b.c_bits + F)
             for a, e in zip(dy, d, strict=True)]
    else:
        m = div(h)
        u = [(a << F) - mean_dy - rnd(rnd(e * inv, R - b.xhat_frac) * m, b.xhat_frac)
             for a, e in zip(dy, d, strict=True)]
    lo, hi = -(1 << (cfg.grad_out_width - 1)), (1 << (cfg.grad_out_width - 1)) - 1
    s = F + b.gamma_frac + R - b.frac - cfg.grad_out_frac
    dx = [min(max(rnd(v * gamma * inv, s), lo), hi) for v in u]
    return dx, h, sum_dy


@st.composite
def cases(draw):
    norm = draw(st.sampled_from(["l1", "l2"]))
    width = draw(st.sampled_from([4, 8, 12, 16]))
    n = draw(st.sampled_from([2, 3, 5, 8, 16, 64]))
    gw = draw(st.sampled_from([4, 8, 12]))
    bcfg = BNConfig(norm=norm, width=width, n=n, channels=2, frac=draw(st.integers(0, 4)),
                    recip_bits=draw(st.sampled_from([12, 16, 20, 32])), c_bits=draw(st.sampled_from([8, 12])))
    try:
        cfg = BNBackwardConfig(bn=bcfg, grad_width=gw, inner_frac=draw(st.integers(0, 6)),
                               grad_out_width=draw(st.sampled_from([8, 16, 24])),
                               grad_out_frac=draw(st.integers(0, 6)), div_bits=draw(st.sampled_from([16, 24])))
    except ValueError:  # a combination wider than 62 bits: refused by the config (tested below)
        assume(False)
    xl, xh = -(1 << (width - 1)), (1 << (width - 1)) - 1
    pick = st.one_of(st.integers(xl, xh), st.sampled_from([xl, xh, 0, -1]))
    x = torch.tensor(draw(st.lists(pick, min_size=2 * n, max_size=2 * n)), dtype=torch.int64).view(2, n)
    gl, gh = -(1 << (gw - 1)), (1 << (gw - 1)) - 1
    dy = torch.tensor(draw(st.lists(st.one_of(st.integers(gl, gh), st.sampled_from([gl, gh])),
                                    min_size=2 * n, max_size=2 * n)), dtype=torch.int64).view(2, n)
    g = draw(st.lists(st.integers(-(1 << 7), (1 << 7) - 1), min_size=2, max_size=2))
    return cfg, x, dy, torch.tensor(g, dtype=torch.int64)


@SETTINGS
@given(cases())
def test_matches_naive_formulas(case):
    cfg, x, dy, gamma = case
    mu, inv = forward_stats(x, cfg.bn)
    res = bn_backward(x, dy, gamma, mu, inv, cfg)
    for c in range(cfg.bn.channels):
        dx, h, db = naive(x[c].tolist(), dy[c].tolist(), int(gamma[c]), int(mu[c]), int(inv[c]), cfg)
        assert res.dx[c].tolist() == dx
        assert int(res.dgamma[c]) == h
        assert int(res.dbeta[c]) == db


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_corners(norm):
    """All equal (sigma = eps), min/max ints, N=2."""
    for n, fill in ((2, None), (8, 127), (8, -128), (4, 0)):
        b = BNConfig(norm=norm, width=8, n=n, channels=1)
        cfg = BNBackwardConfig(bn=b)
        x = (torch.tensor([[-128, 127] * (n // 2)]) if fill is None else torch.full((1, n), fill)).long()
        dy = torch.tensor([[-128, 127] * (n // 2)]).long()
        gamma = torch.tensor([127]).long()
        mu, inv = forward_stats(x, b)
        res = bn_backward(x, dy, gamma, mu, inv, cfg)
        dx, h, db = naive(x[0].tolist(), dy[0].tolist(), 127, int(mu[0]), int(inv[0]), cfg)
        assert res.dx[0].tolist() == dx and int(res.dgamma[0]) == h and int(res.dbeta[0]) == db


def test_config_round_trip_and_errors():
    cfg = BNBackwardConfig(bn=BNConfig(norm="l2", width=12, n=32), grad_width=10)
    assert config_from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="grad_width=1 is out of range; allowed 2..24"):
        BNBackwardConfig(grad_width=1)
    with pytest.raises(ValueError, match="needs a .*-bit"):
        BNBackwardConfig(bn=BNConfig(width=16, n=65536), grad_width=24)
    with pytest.raises(ValueError, match="bn=.* must be a BNConfig"):
        BNBackwardConfig(bn={"width": 8})
    b = BNConfig(width=8, n=4)
    x = torch.zeros(1, 4, dtype=torch.int64)
    one = torch.ones(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="dy has values"):
        bn_backward(x, x + 1000, one, one * 0, one, BNBackwardConfig(bn=b))
    with pytest.raises(ValueError, match="shape"):
        bn_backward(x[:, :2], x[:, :2], one, one, one, BNBackwardConfig(bn=b))
    with pytest.raises(ValueError, match="inconsistent forward statistics"):
        bn_backward(torch.tensor([[127, -128, 127, -128]]), torch.tensor([[127, -128, 127, -128]]),
                    one, one * 0, one << 20, BNBackwardConfig(bn=b))


@pytest.mark.parametrize("width,n,frac,recip_bits,out_frac", [(8, 64, 4, 20, 10), (16, 256, 0, 32, 18)])
def test_l1_agrees_with_float_autograd_within_bound(width, n, frac, recip_bits, out_frac):
    b = BNConfig(norm="l1", width=width, n=n, channels=8, frac=frac, recip_bits=recip_bits)
    cfg = BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=24, grad_out_frac=out_frac)
    x, dy = real_grads(width, n, 8, 0, 8)  # digits training-step gradients
    gamma = torch.tensor([64, 80, -50, 100, 32, 127, -128, 1]).long()
    mu, inv = forward_stats(x, b)
    res = bn_backward(x, dy, gamma, mu, inv, cfg)
    dxf, _, xhat_f = float_l1bn_dx(x, dy, gamma, cfg)
    err = (res.dx.double() / (1 << cfg.grad_out_frac) - dxf).abs()
    bound = dx_error_bound(x, dy, gamma, mu, inv, cfg)
    assert res.dx.abs().max() < (1 << (cfg.grad_out_width - 1)) - 1  # no saturation here
    assert bool((err <= bound).all()), f"max err {err.max():.3g}, worst excess {(err - bound).max():.3g}"
    # the bound is informative: far below the gradient itself
    assert float(bound.mean()) < 0.05 * float(dxf.abs().mean()), (float(bound.mean()), float(dxf.abs().mean()))
    dg_f = (dy.double() * xhat_f).sum(1)
    assert torch.allclose(res.dgamma.double() / (1 << cfg.inner_frac), dg_f, rtol=0.02, atol=2.0)
