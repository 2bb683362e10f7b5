"""RangeBatchNorm1d/2d: the float range-BN layers (docs/arith/range_bn.md, "Training")."""

from __future__ import annotations

import math

import pytest
import torch
from l1bn.spec.intmath import range_scale
from l1bn.sw.range_bn import RangeBatchNorm1d, RangeBatchNorm2d


def test_forward_matches_the_formula_in_float64():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    bn = RangeBatchNorm2d(3, eps=1e-3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    y = bn(x)
    xc = x.transpose(0, 1).reshape(3, -1)
    sigma = range_scale(100) * (xc.max(1).values - xc.min(1).values) + 1e-3
    want = (x - xc.mean(1).view(1, 3, 1, 1)) / sigma.view(1, 3, 1, 1) * bn.weight.view(1, 3, 1, 1) \
        + bn.bias.view(1, 3, 1, 1)
    assert torch.allclose(y, want, rtol=0, atol=1e-12)


def test_gradcheck_float64_and_gradient_through_max_and_min_only():
    torch.manual_seed(1)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    bn = RangeBatchNorm1d(2).double()
    assert torch.autograd.gradcheck(lambda t: bn(t), (x,))
    # The gradient of sigma reaches only the max and the min element: with a ramp upstream
    # gradient, dx = (dy - mean dy) / sigma, corrected by -k at the max and +k at the min.
    x2 = torch.tensor([[0.0], [1.0], [5.0], [2.0]], dtype=torch.float64, requires_grad=True)
    bn2 = RangeBatchNorm1d(1, affine=False).double()
    y = bn2(x2)
    (y.flatten() * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).sum().backward()
    g = x2.grad.flatten()
    n = 4
    mu = x2.detach().mean()
    sigma = range_scale(n) * 5.0 + bn2.eps
    dy = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    common = (dy - dy.mean()) / sigma
    k = (dy * (x2.detach().flatten() - mu)).sum() / sigma**2 * range_scale(n)
    want = common.clone()
    want[2] -= k      # max element
    want[0] += k      # min element
    assert torch.allclose(g, want, atol=1e-12)


def test_running_statistics_eval_and_inference_affine():
    torch.manual_seed(2)
    bn = RangeBatchNorm2d(4, momentum=None)
    xs = [torch.randn(8, 4, 3, 3) * 3 + 1 for _ in range(3)]
    for x in xs:
        bn(x)
    assert int(bn.num_batches_tracked) == 3
    means = torch.stack([x.transpose(0, 1).reshape(4, -1).mean(1) for x in xs]).mean(0)
    assert torch.allclose(bn.running_mean, means, atol=1e-6)
    bn.eval()
    x = torch.randn(2, 4, 3, 3)
    scale, offset = bn.inference_affine()
    assert torch.allclose(bn(x).double(), x.double() * scale.view(1, 4, 1, 1) + offset.view(1, 4, 1, 1),
                          atol=1e-5)


def test_bf16_input_keeps_float32_statistics():
    bn = RangeBatchNorm2d(3)
    y = bn(torch.randn(2, 3, 4, 4).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and bn.running_sigma.dtype == torch.float32
    assert math.isfinite(float(y.detach().float().abs().max()))


@pytest.mark.parametrize("bad, match", [
    (lambda: RangeBatchNorm2d(0), "num_features"),
    (lambda: RangeBatchNorm2d(3, eps=0.0), "eps"),
    (lambda: RangeBatchNorm2d(3, momentum=2.0), "momentum"),
    (lambda: RangeBatchNorm2d(3)(torch.randn(1, 3, 1, 1)), "more than 1 value"),
    (lambda: RangeBatchNorm2d(3)(torch.randn(2, 4, 2, 2)), "channels"),
    (lambda: RangeBatchNorm1d(3)(torch.randn(2, 3, 2, 2)), "2D or 3D"),
])
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()
