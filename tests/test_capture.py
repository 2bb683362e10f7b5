"""Real BN data capture: shapes, integer ranges, determinism, consistency with a training step."""

import pytest
import torch
from l1bn.sw.capture import bn_grads, bn_inputs, to_int


def test_bn_inputs_range_and_determinism():
    x = bn_inputs(width=8, n=64, channels=16, seed=1)
    assert x.dtype == torch.int64 and x.shape == (16, 64)
    assert int(x.abs().max()) > 63 and int(x.min()) >= -128 and int(x.max()) <= 127  # uses the range
    assert torch.equal(x, bn_inputs(width=8, n=64, channels=16, seed=1))
    assert not torch.equal(x, bn_inputs(width=8, n=64, channels=16, seed=2))


def test_bn_grads_real_step():
    x, dy = bn_grads(width=12, n=128, channels=32, seed=0)
    assert x.shape == dy.shape == (32, 128)
    assert torch.equal(x, bn_inputs(width=12, n=128, channels=32, seed=0))
    assert int(dy.abs().max()) > 1023 and int(dy.abs().max()) <= 2047
    assert bool((dy != 0).any(1).all())  # every channel got a gradient


def test_to_int_half_up():
    q, k = to_int(torch.tensor([0.5, -0.25, 0.126]), 4)
    assert k == 3 and q.tolist() == [4, -2, 1]


def test_errors():
    with pytest.raises(ValueError, match="channels"):
        bn_inputs(width=8, n=16, channels=33)
    with pytest.raises(ValueError, match="width"):
        bn_inputs(width=1, n=16, channels=4)
    with pytest.raises(ValueError, match="images"):
        bn_grads(width=8, n=100000, channels=4)
