"""Training-mode BN forward reference (l1bn.spec.reference.bn) against a naive pure-Python reading of
docs/arith/bn_train.md, and the constant divider of l1bn.spec.intmath that the hardware uses."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import c_const, div_round_int, div_round_params, isqrt_int, rnd_int
from l1bn.spec.reference.bn import bn_forward, isqrt

SETTINGS = settings(max_examples=150, deadline=None)


def naive_bn(x_rows, gamma, beta, cfg: BNConfig):
    """One channel at a time, Python ints, written straight from the docs."""
    out = []
    for row, g, b in zip(x_rows, gamma, beta, strict=True):
        n = len(row)
        mu = div_round_int(sum(row) << cfg.frac, n)
        d = [(v << cfg.frac) - mu for v in row]
        if cfg.norm == "l1":
            s = div_round_int(sum(abs(e) for e in d), n)
            sigma = rnd_int(s * c_const(cfg.c_bits), cfg.c_bits) + cfg.eps
        else:
            s = div_round_int(sum(e * e for e in d), n)
            sigma = math.isqrt(s) + cfg.eps
        inv = (1 << cfg.recip_bits) // sigma
        xhat = [rnd_int(e * inv, cfg.recip_bits - cfg.xhat_frac) for e in d]
        lo, hi = -(1 << (cfg.out_width - 1)), (1 << (cfg.out_width - 1)) - 1
        sh = cfg.xhat_frac + cfg.gamma_frac - cfg.out_frac
        y = [min(max(rnd_int(g * xh, sh) + b, lo), hi) for xh in xhat]
        out.append(dict(mu=mu, s=s, sigma=sigma, inv=inv, xhat=xhat, y=y))
    return out


@st.composite
def bn_case(draw, norms=("l1", "l2")):
    norm = draw(st.sampled_from(norms))
    width = draw(st.integers(2, 16))
    frac = draw(st.integers(0, 6))
    n = draw(st.integers(2, 40))
    channels = draw(st.integers(1, 3))
    gamma_width = draw(st.integers(2, 12))
    xhat_frac = draw(st.integers(1, 12))
    kw = dict(norm=norm, width=width, frac=frac, n=n, channels=channels, gamma_width=gamma_width,
              gamma_frac=draw(st.integers(0, gamma_width - 1)), xhat_frac=xhat_frac,
              recip_bits=draw(st.integers(4, 36)), out_width=draw(st.integers(2, 16)),
              beta_width=draw(st.integers(2, 12)), eps=draw(st.integers(1, 8)), c_bits=draw(st.integers(4, 16)))
    kw["out_frac"] = draw(st.integers(0, xhat_frac + kw["gamma_frac"]))
    try:
        cfg = BNConfig(**kw)
    except ValueError:
        assume(False)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    style = draw(st.sampled_from(["random", "extreme", "equal", "two"]))
    if style == "random":
        vals = st.integers(lo, hi)
    elif style == "extreme":
        vals = st.sampled_from([lo, hi, lo + 1, hi - 1, 0])
    elif style == "two":
        vals = st.sampled_from([lo, hi])
    else:
        v = draw(st.integers(lo, hi))
        vals = st.just(v)
    x = [[draw(vals) for _ in range(n)] for _ in range(channels)]
    glo, ghi = -(1 << (gamma_width - 1)), (1 << (gamma_width - 1)) - 1
    blo, bhi = -(1 << (cfg.beta_width - 1)), (1 << (cfg.beta_width - 1)) - 1
    gamma = [draw(st.sampled_from([glo, ghi, 0, 1]) | st.integers(glo, ghi)) for _ in range(channels)]
    beta = [draw(st.sampled_from([blo, bhi, 0]) | st.integers(blo, bhi)) for _ in range(channels)]
    return cfg, x, gamma, beta


def forward(case):
    """``bn_forward`` on a drawn case of Python lists."""
    cfg, x, gamma, beta = case
    return bn_forward(*(torch.tensor(v, dtype=torch.int64) for v in (x, gamma, beta)), cfg)


@SETTINGS
@given(bn_case())
def test_reference_matches_naive_python(case):
    cfg, x, gamma, beta = case
    r = forward(case)
    want = naive_bn(x, gamma, beta, cfg)
    assert r.mu.tolist() == [w["mu"] for w in want]
    assert r.s.tolist() == [w["s"] for w in want]
    assert r.sigma.tolist() == [w["sigma"] for w in want]
    assert r.inv.tolist() == [w["inv"] for w in want]
    assert r.xhat.tolist() == [w["xhat"] for w in want]
    assert r.y.tolist() == [w["y"] for w in want]


@SETTINGS
@given(bn_case())
def test_widths_hold_every_intermediate(case):
    """The declared BNConfig widths hold what the reference computes (the hardware registers)."""
    cfg, x, gamma, beta = case
    r = forward(case)

    def fits_signed(v, bits):
        return -(1 << (bits - 1)) <= int(v.min()) and int(v.max()) < (1 << (bits - 1))

    def fits_unsigned(v, bits):
        return int(v.min()) >= 0 and int(v.max()) < (1 << bits)

    assert fits_signed(r.mu, cfg.mean_bits)
    assert fits_unsigned(r.disp_sum, cfg.disp_sum_bits)
    assert fits_unsigned(r.s, cfg.disp_bits)
    assert fits_unsigned(r.sigma, cfg.sigma_bits)
    assert fits_unsigned(r.inv, cfg.inv_bits)
    assert fits_signed(r.xhat, cfg.xhat_bits)
    assert fits_signed(torch.tensor(gamma)[:, None] * r.xhat, cfg.affine_bits)


def test_all_equal_channel_gives_sigma_eps_and_beta():
    """Zero dispersion: d = 0, s = 0, sigma = eps, xhat = 0, y = beta (for both norms)."""
    for norm in ("l1", "l2"):
        cfg = BNConfig(norm=norm, width=8, n=10, channels=2, eps=3)
        x = torch.tensor([[-128] * 10, [127] * 10])
        r = bn_forward(x, torch.tensor([100, -128]), torch.tensor([5, -7]), cfg)
        assert r.s.tolist() == [0, 0] and r.sigma.tolist() == [3, 3]
        assert r.xhat.abs().max() == 0
        assert r.y.tolist() == [[5] * 10, [-7] * 10]


def test_output_saturates():
    cfg = BNConfig(width=8, n=4, out_width=4, out_frac=0, gamma_frac=0, gamma_width=8)
    r = bn_forward(torch.tensor([[-128, 127, 127, 127]]), torch.tensor([127]), torch.tensor([0]), cfg)
    assert r.y.tolist() == [[-8, 7, 7, 7]]


def test_l1_sigma_tracks_float_std_on_gaussian_data():
    """c * mean|d| estimates the standard deviation of Gaussian data (the premise of L1-BN)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 4096, generator=g) * 20).round().clamp(-128, 127).to(torch.int64)
    l1 = bn_forward(x, torch.ones(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64),
                    BNConfig(norm="l1", width=8, n=4096, channels=4, frac=4))
    l2 = bn_forward(x, torch.ones(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64),
                    BNConfig(norm="l2", width=8, n=4096, channels=4, frac=4))
    std = x.double().std(1, unbiased=False)
    assert torch.allclose(l2.sigma.double() / 16, std, rtol=0.01)
    assert torch.allclose(l1.sigma.double() / 16, std, rtol=0.03)


def test_xhat_matches_float_within_rounding():
    """xhat = d / sigma up to the reciprocal's truncation and the final rounding."""
    g = torch.Generator().manual_seed(1)
    cfg = BNConfig(norm="l1", width=8, n=256, channels=3, frac=4, recip_bits=24, xhat_frac=10)
    x = torch.randint(-128, 128, (3, 256), generator=g)
    r = bn_forward(x, torch.ones(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), cfg)
    d = ((x << cfg.frac) - r.mu[:, None]).double()
    exact = d / r.sigma.double()[:, None]
    err = (r.xhat.double() / (1 << cfg.xhat_frac) - exact).abs()
    # truncation of inv: |d| * (1/sigma - inv/2**R) <= |d| / 2**R; plus half an LSB
    bound = d.abs() / 2.0 ** cfg.recip_bits + 2.0 ** -(cfg.xhat_frac + 1)
    assert bool((err <= bound + 1e-12).all())


def test_n_equal_two_and_min_max():
    for norm in ("l1", "l2"):
        cfg = BNConfig(norm=norm, width=16, frac=0, recip_bits=32, n=2, channels=1, out_width=16)
        x = torch.tensor([[-(1 << 15), (1 << 15) - 1]])
        r = bn_forward(x, torch.tensor([64]), torch.tensor([0]), cfg)
        want = naive_bn(x.tolist(), [64], [0], cfg)[0]
        assert r.y.tolist()[0] == want["y"] and r.inv.tolist() == [want["inv"]]


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(2, 5, dtype=torch.int64)),
    dict(x=torch.zeros(1, 4, dtype=torch.int32)),
    dict(x=torch.full((1, 4), 200, dtype=torch.int64)),
    dict(gamma=torch.tensor([1000])),
    dict(beta=torch.tensor([1, 2])),
])
def test_bad_inputs_are_refused(bad):
    cfg = BNConfig(width=8, n=4, channels=1)
    args = dict(x=torch.zeros(1, 4, dtype=torch.int64), gamma=torch.tensor([1]), beta=torch.tensor([0]))
    args.update(bad)
    with pytest.raises(ValueError):
        bn_forward(args["x"], args["gamma"], args["beta"], cfg)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 70000), st.integers(-(1 << 45), 1 << 45), st.integers(0, 1 << 45), st.data())
def test_constant_divider_is_exact(n, lo, span, data):
    """The add/multiply/shift divider (hardware) equals floor((2x + n) / 2n) on its whole range."""
    hi = lo + span
    p = div_round_params(n, lo, hi)
    xs = [lo, hi, data.draw(st.integers(lo, hi))]
    xs += [k * n + dd for k in (lo // n, hi // n) for dd in (-1, 0, n // 2, (n + 1) // 2) if lo <= k * n + dd <= hi]
    for x in xs:
        assert p(x) == div_round_int(x, n)
    assert 2 * lo + p.offset >= 0 and (2 * hi + p.offset).bit_length() == p.z_bits


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=50))
def test_isqrt_is_exact(vs):
    got = isqrt(torch.tensor(vs, dtype=torch.int64)).tolist()
    assert got == [isqrt_int(v) for v in vs]
