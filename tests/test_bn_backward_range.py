"""Range BN backward (docs/arith/bn_backward.md, "Range"): the integer rule against a naive reading
of the page and against float64 autograd of the float range layer; the registry's backward rules
and the one refusal of a norm without one."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from l1bn.spec import norms
from l1bn.spec.config import BNBackwardConfig, BNConfig
from l1bn.spec.intmath import range_const, range_scale
from l1bn.spec.reference.bn import bn_forward
from l1bn.spec.reference.bn_backward import (
    backward_rule,
    bn_backward,
    l1_bracket,
    l2_bracket,
    range_bracket,
)
from l1bn.spec.training import IntTrainConfig
from l1bn.sw.range_bn import range_bn_forward_plain


def rnd(x, s):
    return (x + (1 << (s - 1))) >> s if s > 0 else x << -s


def naive_range(x, dy, gamma, mu, inv, cfg):
    """One channel, Python ints, straight from the page."""
    b = cfg.bn
    n, F, R, k = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits
    rc = ((1 << (k + 1)) // n + 1) >> 1
    d = [(xi << b.frac) - mu for xi in x]
    t = cfg.h_preshift
    h = rnd(rnd(sum(a * e for a, e in zip(dy, d, strict=True)), t) * inv, R - F - t)
    mean_dy = rnd((sum(dy) << F) * rc, k)
    v = h * range_const(n, b.c_bits)
    nmax, nmin = d.count(max(d)), d.count(min(d))

    def div_round(a, m):
        return (2 * a + m) // (2 * m)

    kmax, kmin = div_round(v, nmax << b.c_bits), div_round(v, nmin << b.c_bits)
    u = [(a << F) - mean_dy - (kmax if e == max(d) else 0) + (kmin if e == min(d) else 0)
         for a, e in zip(dy, d, strict=True)]
    lo, hi = -(1 << (cfg.grad_out_width - 1)), (1 << (cfg.grad_out_width - 1)) - 1
    s = F + b.gamma_frac + R - b.frac - cfg.grad_out_frac
    return [min(max(rnd(w * gamma * inv, s), lo), hi) for w in u], h, sum(dy), u


def stats(x, b):
    gamma = np.full(b.channels, 1 << b.gamma_frac, dtype=np.int64)
    r = bn_forward(x, gamma, np.zeros(b.channels, dtype=np.int64), b)
    return r.mu, r.inv


@st.composite
def cases(draw):
    width = draw(st.sampled_from([4, 8, 12]))
    n = draw(st.sampled_from([2, 3, 5, 8, 16, 64]))
    gw = draw(st.sampled_from([4, 8]))
    b = BNConfig(norm="range", width=width, n=n, channels=2, frac=draw(st.integers(0, 4)),
                 recip_bits=draw(st.sampled_from([12, 16, 20])), c_bits=draw(st.sampled_from([8, 12])))
    try:
        cfg = BNBackwardConfig(bn=b, grad_width=gw, inner_frac=draw(st.integers(0, 6)),
                               grad_out_width=draw(st.sampled_from([16, 24])),
                               grad_out_frac=draw(st.integers(0, 6)))
    except ValueError:
        assume(False)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    # few distinct values: many ties at the max and the min
    pool = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=4))
    x = np.array(draw(st.lists(st.sampled_from(pool + [lo, hi]), min_size=2 * n, max_size=2 * n)),
                 dtype=np.int64).reshape(2, n)
    glo, ghi = -(1 << (gw - 1)), (1 << (gw - 1)) - 1
    dy = np.array(draw(st.lists(st.integers(glo, ghi), min_size=2 * n, max_size=2 * n)),
                  dtype=np.int64).reshape(2, n)
    gamma = np.array(draw(st.lists(st.integers(-128, 127), min_size=2, max_size=2)), dtype=np.int64)
    return cfg, x, dy, gamma


@settings(max_examples=150, deadline=None)
@given(cases())
def test_range_matches_naive_formulas(case):
    cfg, x, dy, gamma = case
    mu, inv = stats(x, cfg.bn)
    res = bn_backward(x, dy, gamma, mu, inv, cfg)
    for c in range(2):
        dx, h, db, u = naive_range(x[c].tolist(), dy[c].tolist(), int(gamma[c]), int(mu[c]), int(inv[c]), cfg)
        assert res.dx[c].tolist() == dx
        assert res.u[c].tolist() == u
        assert int(res.dgamma[c]) == h and int(res.dbeta[c]) == db
        # every register within the width the config declares
        assert abs(max(u, key=abs)) < 1 << (cfg.widths["u"] - 1)
        assert abs(h) < 1 << (cfg.widths["h"] - 1)


def test_all_equal_channel_has_no_extremes_term():
    """Every element is both the max and the min: the two terms cancel exactly, dx = gamma/sigma *
    (dy - mean dy) as autograd of amax - amin (= 0) gives."""
    b = BNConfig(norm="range", width=8, n=16, channels=1)
    cfg = BNBackwardConfig(bn=b, grad_width=8, inner_frac=4)
    x = np.full((1, 16), 37, dtype=np.int64)
    dy = np.arange(-8, 8, dtype=np.int64)[None] * 13
    mu, inv = stats(x, b)
    res = bn_backward(x, dy, np.array([64]), mu, inv, cfg)
    mean_dy = int(res.mean_dy[0])
    assert res.u[0].tolist() == [(int(v) << 4) - mean_dy for v in dy[0]]


def test_near_ties_stay_inside_the_declared_widths():
    """The widest u: one max, one min and every other element just inside them (large sum |xhat|
    shared by a single extreme); dy aligned with sign(d) and at its extreme."""
    for n in (4, 64, 1024):
        b = BNConfig(norm="range", width=12, n=n, channels=2, frac=4)
        cfg = BNBackwardConfig(bn=b, grad_width=8, inner_frac=8, grad_out_width=32)
        x = np.tile(np.where(np.arange(n) % 2 == 0, 2046, -2046), (2, 1)).astype(np.int64)
        x[:, 0], x[:, 1] = 2047, -2048
        dy = np.where(x > 0, 127, -128).astype(np.int64)
        dy[1] = -dy[1] - 1
        mu, inv = stats(x, b)
        res = bn_backward(x, dy, np.array([127, -128]), mu, inv, cfg)
        assert int(np.abs(res.u).max()) < 1 << (cfg.widths["u"] - 1)
        assert int(np.abs(res.u).max()) > 1 << (cfg.widths["u"] - 6)   # the bound is not loose by much


def float_range_dx(x, dy, gamma, b):
    """float64 autograd of sw.range_bn's plain forward on the integer x (x units; eps = eps/2**frac)."""
    xt = torch.tensor(x.T, dtype=torch.float64, requires_grad=True)
    g = torch.tensor(gamma / (1 << b.gamma_frac), dtype=torch.float64)
    y, mu, rs = range_bn_forward_plain(xt, g, torch.zeros_like(g), eps=b.eps / (1 << b.frac))
    (y * torch.tensor(dy.T, dtype=torch.float64)).sum().backward()
    sigma = rs.detach().numpy() + b.eps / (1 << b.frac)
    xhat = ((xt.detach() - mu.detach()) / (rs.detach() + b.eps / (1 << b.frac))).numpy().T
    return xt.grad.numpy().T, sigma, xhat


def range_dx_error_bound(x, dy, gamma, mu, inv, cfg):
    """Per-element bound on |dx / 2**grad_out_frac - dx_float| (docs/arith/bn_backward.md, "Range"):

        2**-(gof+1) + |g| |inv' - 1/sigma| |u| + |g| (inv' + |inv' - 1/sigma|) e_u
        e_u  = e_mean + [i is an extreme] e_K
        e_mean = 2**-(F+1) + (|A| + 1) 2**-(div_bits+1)
        e_K  = 2**-(F+1) + (|H| 2**-(c_bits+1) + C e_H) / count
        e_H  = sum |dy| |xhat_int - xhat_float| + 2**-(F+1) (+ the pre-shift rounding)

    (dy units; g = gamma real, inv' = inv * 2**(frac - R) the integer 1/sigma in x units, u the
    integer bracket in dy units, xhat_int = d * inv' with the integer mean).
    """
    b = cfg.bn
    res = bn_backward(x, dy, gamma, mu, inv, cfg)
    _, sigma, xhat_f = float_range_dx(x, dy, gamma, b)
    ulp = 2.0 ** -cfg.inner_frac
    gr = np.abs(gamma / (1 << b.gamma_frac))[:, None]
    inv_eff = inv.astype(np.float64)[:, None] * 2.0 ** (b.frac - b.recip_bits)
    d_int = ((x << b.frac) - mu[:, None]) * 2.0 ** -b.frac
    t = cfg.h_preshift
    e_h = (np.abs(dy) * np.abs(d_int * inv_eff - xhat_f)).sum(1) + ulp / 2 + (2.0 ** (t - 1) * inv * 2.0 ** -b.recip_bits if t else 0)
    hr = np.abs(res.h) * ulp
    e_mean = ulp / 2 + (np.abs(res.dbeta) + 1) * 2.0 ** -(cfg.div_bits + 1)
    is_max = x == x.max(1, keepdims=True)
    is_min = x == x.min(1, keepdims=True)
    cn = range_scale(b.n)
    e_k = lambda cnt: ulp / 2 + (hr * 2.0 ** -(b.c_bits + 1) + cn * e_h) / cnt   # noqa: E731
    e_u = e_mean[:, None] + is_max * e_k(is_max.sum(1))[:, None] + is_min * e_k(is_min.sum(1))[:, None]
    gap = np.abs(inv_eff - 1 / sigma[:, None])
    return (2.0 ** -(cfg.grad_out_frac + 1) + gr * gap * np.abs(res.u) * ulp
            + gr * (inv_eff + gap) * e_u), res


@pytest.mark.parametrize("n,width,ties", [(64, 8, False), (64, 8, True), (256, 12, False), (1024, 16, True)])
def test_range_agrees_with_float_autograd_within_bound(n, width, ties):
    rng = np.random.default_rng(n + width)
    b = BNConfig(norm="range", width=width, n=n, channels=4, frac=4, recip_bits=24)
    cfg = BNBackwardConfig(bn=b, grad_width=8, inner_frac=8, grad_out_width=32, grad_out_frac=16)
    lim = (1 << (width - 1)) - 1
    x = np.clip(np.round(rng.normal(0, lim / 4, (4, n))), -lim, lim).astype(np.int64)
    if ties:   # several elements at the max and at the min
        x[:, :5] = x.max(1, keepdims=True)
        x[:, 5:8] = x.min(1, keepdims=True)
    dy = rng.integers(-128, 128, (4, n))
    gamma = np.array([64, -37, 100, 5], dtype=np.int64)
    mu, inv = stats(x, b)
    bound, res = range_dx_error_bound(x, dy, gamma, mu, inv, cfg)
    dx_f, _, _ = float_range_dx(x, dy, gamma, b)
    err = np.abs(res.dx * 2.0 ** -cfg.grad_out_frac - dx_f)
    assert (err <= bound).all(), float((err - bound).max())
    # the bound is tight enough to mean something: below 2 % of the typical |dx|
    assert bound.mean() < 0.02 * np.abs(dx_f).mean()
    # the extremes carry the large gradient of the range (as the float layer's)
    ext = (x == x.max(1, keepdims=True)) | (x == x.min(1, keepdims=True))
    assert np.abs(dx_f[ext]).mean() > np.abs(dx_f[~ext]).mean()


def test_registry_names_each_norms_backward_rule():
    assert backward_rule("l1") is l1_bracket
    assert backward_rule("l2") is l2_bracket
    assert backward_rule("range") is range_bracket
    # range has its own rule now (not L2's): its dx differs from the L2 bracket on the same data
    b = BNConfig(norm="range", width=8, n=16, channels=1)
    cfg = BNBackwardConfig(bn=b, grad_width=8)
    x = np.arange(16, dtype=np.int64)[None] * 7 - 50
    dy = (np.arange(16, dtype=np.int64)[None] * 5) % 11 - 5
    mu, inv = stats(x, b)
    from l1bn.spec.reference.bn_backward import backward_pass1
    p1 = backward_pass1(x, dy, np.array([64]), mu, inv, cfg)
    assert not np.array_equal(range_bracket(p1, cfg), l2_bracket(p1, cfg))
    assert norms.NORMS["range"].hw_backward == "l1bn.hw.bn_backward:RangeBNBackwardUnit"


def test_a_norm_without_backward_rule_is_refused_everywhere(monkeypatch):
    bare = dataclasses.replace(norms.RANGE, backward="", backward_widths=None)
    monkeypatch.setitem(norms.NORMS, "range", bare)
    msg = "norm='range' has no backward rule in the registry"
    with pytest.raises(ValueError, match=msg):
        BNBackwardConfig(bn=BNConfig(norm="range"))
    with pytest.raises(ValueError, match=msg):
        IntTrainConfig(norm="range")
    with pytest.raises(ValueError, match=msg):
        backward_rule("range")
    BNConfig(norm="range")      # the forward is unaffected
