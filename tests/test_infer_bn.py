"""Folded inference BN against a naive pure-Python reading of docs/arith/inference_bn.md."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.spec.reference.infer_bn import (
    L1_C,
    FoldedBN,
    apply_folded,
    bn_affine,
    fold_bn,
    folded_pre_round,
    signed_bits,
)

SETTINGS = settings(max_examples=150, deadline=None)


def naive_apply(acc, mult, bias, shift, out_bits, relu):
    z = acc * mult + bias
    y = (z + (1 << (shift - 1))) // (1 << shift) if shift > 0 else z
    if relu:
        return min(max(y, 0), (1 << out_bits) - 1)
    return min(max(y, -(1 << (out_bits - 1))), (1 << (out_bits - 1)) - 1)


def naive_round_half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


@st.composite
def folded_case(draw):
    c = draw(st.integers(1, 6))
    mult_bits = draw(st.integers(2, 24))
    shift = draw(st.integers(0, 31))
    out_bits = draw(st.integers(1, 8))
    relu = draw(st.booleans())
    if not relu:
        out_bits = max(out_bits, 2)
    mlo, mhi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    mult = draw(st.lists(st.one_of(st.sampled_from([mlo, mhi, 0, 1, -1]), st.integers(mlo, mhi)),
                         min_size=c, max_size=c))
    bias = draw(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=c, max_size=c))
    acc_bits = draw(st.integers(1, 24))
    alo, ahi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    n = draw(st.integers(1, 5))
    acc = draw(st.lists(st.lists(st.one_of(st.sampled_from([alo, ahi, 0]), st.integers(alo, ahi)),
                                 min_size=c, max_size=c), min_size=n, max_size=n))
    f = FoldedBN(mult=torch.tensor(mult), bias=torch.tensor(bias), shift=shift, mult_bits=mult_bits,
                 bias_bits=signed_bits(min(bias + [0]), max(bias + [0])), out_bits=out_bits, relu=relu)
    return f, acc


@SETTINGS
@given(folded_case())
def test_apply_folded_equals_naive(case):
    f, acc = case
    got = apply_folded(torch.tensor(acc, dtype=torch.int64), f, channel_dim=1).tolist()
    want = [[naive_apply(a, int(f.mult[c]), int(f.bias[c]), f.shift, f.out_bits, f.relu)
             for c, a in enumerate(row)] for row in acc]
    assert got == want


@SETTINGS
@given(folded_case())
def test_apply_folded_channel_dim_of_feature_maps(case):
    f, acc = case
    x = torch.tensor(acc, dtype=torch.int64)[:, :, None, None].expand(-1, -1, 2, 3)
    got = apply_folded(x, f, channel_dim=1)
    assert torch.equal(got, apply_folded(x[:, :, 0, 0], f)[:, :, None, None].expand(-1, -1, 2, 3))


floats = st.floats(-4.0, 4.0, allow_nan=False, width=32)


@st.composite
def bn_case(draw):
    c = draw(st.integers(1, 8))
    lst = lambda el: st.lists(el, min_size=c, max_size=c)  # noqa: E731
    return dict(
        norm=draw(st.sampled_from(["l1", "l2"])),
        mean=draw(lst(st.floats(-100, 100, width=32))),
        disp=draw(lst(st.floats(0.015625, 50, width=32))),
        gamma=draw(lst(floats)),
        beta=draw(lst(floats)),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        acc_exp=draw(st.integers(0, 12)),
        out_exp=draw(st.integers(0, 8)),
        acc_bits=draw(st.integers(4, 24)),
        out_bits=draw(st.integers(1, 8)),
        mult_bits=draw(st.integers(8, 24)),
    )


def naive_bn_affine(norm, mean, disp, gamma, beta, eps):
    out = []
    for m, d, g, b in zip(mean, disp, gamma, beta, strict=False):
        sigma = math.sqrt(math.pi / 2) * d + eps if norm == "l1" else math.sqrt(d + eps)
        out.append((g / sigma, b - g * m / sigma))
    return out


@SETTINGS
@given(bn_case())
def test_fold_bn_equals_naive_formulas(p):
    aff = naive_bn_affine(p["norm"], p["mean"], p["disp"], p["gamma"], p["beta"], p["eps"])
    mlo, mhi = -(1 << (p["mult_bits"] - 1)), (1 << (p["mult_bits"] - 1)) - 1
    try:
        f = fold_bn(**p, relu=True)
    except ValueError as e:  # refused only when even shift 0 overflows the multiplier
        assert "does not fit" in str(e)
        a0 = [naive_round_half_up(Fraction(a) * Fraction(2) ** (p["out_exp"] - p["acc_exp"])) for a, _ in aff]
        assert not all(mlo <= v <= mhi for v in a0)
        return
    scale, offset = bn_affine(norm=p["norm"], mean=p["mean"], disp=p["disp"], gamma=p["gamma"],
                              beta=p["beta"], eps=p["eps"])
    for c, (a, b) in enumerate(aff):
        assert math.isclose(float(scale[c]), a, rel_tol=1e-12, abs_tol=1e-300)
        assert math.isclose(float(offset[c]), b, rel_tol=1e-12, abs_tol=1e-12)
    # integer constants: exact round half up of the float64 scale/offset times 2**shift
    ok_next = True
    for c in range(len(aff)):
        a = Fraction(float(scale[c])) * Fraction(2) ** (p["out_exp"] - p["acc_exp"])
        b = Fraction(float(offset[c])) * Fraction(2) ** p["out_exp"]
        assert int(f.mult[c]) == naive_round_half_up(a * 2 ** f.shift)
        assert int(f.bias[c]) == naive_round_half_up(b * 2 ** f.shift)
        assert mlo <= int(f.mult[c]) <= mhi
        ok_next &= mlo <= naive_round_half_up(a * 2 ** (f.shift + 1)) <= mhi
    # the shift is the largest that fits (more would overflow a multiplier or exceed max_shift)
    assert f.shift == 31 or not ok_next
    blo, bhi = -(1 << (f.bias_bits - 1)), (1 << (f.bias_bits - 1)) - 1
    assert all(blo <= int(v) <= bhi for v in f.bias)


@SETTINGS
@given(bn_case(), st.data())
def test_folding_error_bound(p, data):
    """|(acc*mult + bias) / 2**shift - t(acc)| <= (|acc| + 1) / 2**(shift+1) output LSBs, exactly."""
    p = {**p, "mult_bits": 24}
    try:
        f = fold_bn(**p, relu=True)
    except ValueError as e:
        assert "does not fit" in str(e)
        return
    scale, offset = bn_affine(norm=p["norm"], mean=p["mean"], disp=p["disp"], gamma=p["gamma"],
                              beta=p["beta"], eps=p["eps"])
    lim = (1 << (p["acc_bits"] - 1)) - 1
    acc = data.draw(st.lists(st.integers(-lim, lim), min_size=len(scale), max_size=len(scale)))
    z = folded_pre_round(torch.tensor([acc]), f)[0].tolist()
    for c, x in enumerate(acc):
        t = (Fraction(float(scale[c])) * x * Fraction(2) ** -p["acc_exp"] + Fraction(float(offset[c]))) \
            * Fraction(2) ** p["out_exp"]
        assert abs(Fraction(z[c], 2 ** f.shift) - t) <= Fraction(abs(x) + 1, 2 ** (f.shift + 1))


def test_matches_float_bn_except_near_rounding_ties():
    """Against a float BN + round-half-up quantizer: differences only within the bound of a tie."""
    g = torch.Generator().manual_seed(1)
    c = 16
    mean, disp = torch.randn(c, generator=g) * 40, torch.rand(c, generator=g) * 30 + 1
    gamma, beta = torch.randn(c, generator=g), torch.randn(c, generator=g)
    acc_exp, out_exp, out_bits, acc_bits = 8, 4, 4, 16
    f = fold_bn(norm="l1", mean=mean, disp=disp, gamma=gamma, beta=beta, eps=1e-5, acc_exp=acc_exp,
                out_exp=out_exp, acc_bits=acc_bits, out_bits=out_bits)
    acc = torch.randint(-(1 << 12), 1 << 12, (4000, c), generator=g)
    x = acc.double() * 2.0 ** -acc_exp
    y = gamma.double() * (x - mean.double()) / (L1_C * disp.double() + 1e-5) + beta.double()
    t = y * 2 ** out_exp
    qf = torch.floor(t + 0.5).clamp(0, 15).to(torch.int64)
    qi = apply_folded(acc, f)
    diff = qf != qi
    bound = (acc.abs().double() + 1) / 2 ** (f.shift + 1)
    dist_to_tie = (t - torch.floor(t) - 0.5).abs()
    assert bool((dist_to_tie[diff] <= bound[diff] + 1e-9).all())
    assert float(diff.double().mean()) < 1e-3  # measured: 28 of 64000 outputs (0.044%)


def test_corner_cases():
    # one channel, gamma = 0: output is beta alone; negative gamma flips the slope
    f = fold_bn(norm="l2", mean=[3.0], disp=[4.0], gamma=[0.0], beta=[0.5], eps=0.0, acc_exp=0, out_exp=2,
                acc_bits=8, out_bits=4)
    assert int(f.mult[0]) == 0 and f.shift == 31
    assert apply_folded(torch.tensor([[-128], [0], [127]]), f).tolist() == [[2], [2], [2]]
    f = fold_bn(norm="l2", mean=[0.0, 0.0], disp=[1.0, 1.0], gamma=[1.0, -1.0], beta=[0.0, 0.0], eps=0.0,
                acc_exp=0, out_exp=0, acc_bits=8, out_bits=4, relu=False)
    assert apply_folded(torch.tensor([[-100, -100], [-3, -3], [3, 3], [100, 100]]), f).tolist() == \
        [[-8, 7], [-3, 3], [3, -3], [7, -8]]
    # all-equal accumulators give all-equal outputs
    f = fold_bn(norm="l1", mean=[1.0] * 3, disp=[2.0] * 3, gamma=[1.0] * 3, beta=[0.1] * 3, eps=1e-5,
                acc_exp=4, out_exp=4, acc_bits=12, out_bits=4)
    y = apply_folded(torch.full((5, 3), 37), f)
    assert bool((y == y[0, 0]).all())


def test_errors():
    good = dict(norm="l1", mean=[0.0], disp=[1.0], gamma=[1.0], beta=[0.0], eps=1e-5, acc_exp=0, out_exp=0,
                acc_bits=8, out_bits=4)
    with pytest.raises(ValueError, match="norm='l3'"):
        fold_bn(**{**good, "norm": "l3"})
    with pytest.raises(ValueError, match="dispersion must be >= 0"):
        fold_bn(**{**good, "disp": [-1.0]})
    with pytest.raises(ValueError, match="shapes differ"):
        fold_bn(**{**good, "gamma": [1.0, 2.0]})
    with pytest.raises(ValueError, match="does not fit a 4-bit multiplier"):
        fold_bn(**{**good, "out_exp": 10, "mult_bits": 4})
    with pytest.raises(ValueError, match="mult_bits=1"):
        fold_bn(**{**good, "mult_bits": 1})
    with pytest.raises(ValueError, match="sigma must be > 0"):
        fold_bn(**{**good, "norm": "l1", "disp": [0.0], "eps": 0.0})
    f = fold_bn(**good)
    with pytest.raises(ValueError, match="has 2 channels"):
        apply_folded(torch.zeros(3, 2, dtype=torch.int64), f)
