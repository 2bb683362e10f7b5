"""Power-of-two fake quantizers: round half up, saturation, straight-through gradient, QuantConfig."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.sw.quant import QuantConfig, fake_quant, quant_int, weight_exp


@settings(max_examples=200, deadline=None)
@given(st.floats(-300, 300, allow_nan=False), st.integers(-3, 8), st.integers(2, 8), st.booleans())
def test_fake_quant_equals_naive(v, exp, bits, signed):
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    want = min(max(math.floor(v * 2.0 ** exp + 0.5), lo), hi)
    x = torch.tensor([v], dtype=torch.float64)
    assert quant_int(x, exp, bits, signed).item() == want
    assert fake_quant(x, exp, bits, signed).item() == want * 2.0 ** -exp


def test_half_up_ties_and_saturation():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 100.0, -100.0])
    assert quant_int(x, 0, 4, True).tolist() == [-2, -1, 0, 1, 2, 3, 7, -8]
    assert quant_int(x, 0, 2, False).tolist() == [0, 0, 0, 1, 2, 3, 3, 0]


def test_straight_through_gradient_clipped():
    x = torch.tensor([-9.0, -8.4, 0.3, 7.4, 7.6, 20.0], requires_grad=True)
    fake_quant(x, 0, 4, True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_weight_exp():
    w = torch.tensor([0.3, -0.2])
    e = weight_exp(w, 4)
    assert 2 ** (4 - 2) < 0.3 * 2 ** e <= 2 ** (4 - 1)
    assert weight_exp(torch.zeros(3), 4) == 0
    with pytest.raises(ValueError, match="not finite"):
        weight_exp(torch.tensor([float("inf")]), 4)


def test_quant_config():
    q = QuantConfig(wbits=4, abits=4)
    assert (q.a_exp, q.in_exp) == (2, 4) and QuantConfig(wbits=2, abits=2).a_exp == 1
    assert QuantConfig.from_dict(q.to_dict()) == q
    for bad in ({"wbits": 1}, {"wbits": 9}, {"abits": 1}, {"abits": 9}, {"wbits": 4.0}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            QuantConfig(**bad)
    with pytest.raises(TypeError):
        QuantConfig(4, 4)  # keyword-only
    with pytest.raises(ValueError, match="unknown"):
        QuantConfig.from_dict({"wbits": 4, "bogus": 1})
