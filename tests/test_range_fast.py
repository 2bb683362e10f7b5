"""Range BN on the fused C++ kernels (bn_fast.range_forward/backward) against float64 references.

Reference: :func:`range_bn_forward_plain` differentiated by autograd in float64 on the same
(dtype-rounded) input: its ``amax``/``amin`` split the gradient evenly among tied extremes, the
rule the C++ backward implements. Layouts: per-channel segments (spatial size >= 128), rows of
channel groups (smaller spatial size), channels-last and (N, C).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, localcontext

import pytest
import torch
from float_tolerance import assert_close
from l1bn.spec.intmath import C_SQRT_PI_2, range_scale
from l1bn.sw import bn_fast
from l1bn.sw.layers import L1_C
from l1bn.sw.range_bn import (
    RangeBatchNorm1d,
    RangeBatchNorm2d,
    range_batch_norm,
    range_bn_forward_plain,
)


def _reference(x, w, b, dy):
    xs = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = range_bn_forward_plain(*xs, 1e-5)[0]
    return (y, *torch.autograd.grad(y, xs, dy.double()))


def _run(x, w, b, dy, impl="ext"):
    xs = [x.detach().clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    y = range_batch_norm(xs[0], xs[1], xs[2], 1e-5, impl)[0]
    return (y, *torch.autograd.grad(y, xs, dy))


def _make(shape, dtype, seed=0, fmt=None, levels=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g) * 1.7 + 0.3
    if levels:  # few distinct values: many ties at the max and the min
        x = torch.round(x.clamp(-2, 2) * levels / 2)
    x = x.to(dtype)
    dy = torch.randn(shape, dtype=torch.float64, generator=g).to(dtype)
    if fmt is not None:
        x, dy = x.to(memory_format=fmt), dy.to(memory_format=fmt)
    c = shape[1]
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    return x, torch.linspace(0.5, 2.0, c, dtype=pd), torch.linspace(-1.0, 1.0, c, dtype=pd), dy


def _check(x, w, b, dy, dtype):
    want = _reference(x, w, b, dy)
    got = _run(x, w, b, dy)
    assert got[0].dtype == x.dtype and got[1].dtype == x.dtype
    for gt, wt, name in zip(got, want, ("y", "dx", "dw", "db"), strict=True):
        assert_close(gt, wt, dtype, name)


def test_library_constant_is_the_specs():
    """sqrt(pi/2) has one value: the spec's float64 is the correctly rounded sqrt(pi/2) (against
    40 digits of pi), the torch layers and the compiled library use exactly it, and the
    library's fallback literal (used only without the -D flag) is the same float64."""
    pi = Decimal("3.141592653589793238462643383279502884197")
    with localcontext() as ctx:
        ctx.prec = 40
        err = abs(Decimal(C_SQRT_PI_2) - (pi / 2).sqrt())
        assert err <= Decimal(math.ulp(C_SQRT_PI_2)) / 2
    assert L1_C == C_SQRT_PI_2
    assert bn_fast.load().l1bn_c_sqrt_pi_2() == C_SQRT_PI_2
    fallback = re.search(r"#define L1BN_C_SQRT_PI_2 (\S+)", bn_fast.SOURCE.read_text()).group(1)
    assert float(fallback) == C_SQRT_PI_2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 5, 16, 16), (4, 6, 3, 3), (7, 9), (2, 3, 11)])
def test_matches_float64_plain_autograd(shape, dtype):
    _check(*_make(shape, dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 8, 12, 12), (3, 4, 3, 5)])
def test_channels_last(shape, dtype):
    x, w, b, dy = _make(shape, dtype, seed=1, fmt=torch.channels_last)
    _check(x, w, b, dy, dtype)
    y = _run(x, w, b, dy)
    assert y[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 4, 2, 2), (2, 5)])
def test_n_equals_2(shape):
    _check(*_make(shape, torch.float64, seed=2), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (5, 4, 3, 3), (40, 3)])
def test_ties_split_the_gradient_like_autograd(shape, dtype):
    x, w, b, dy = _make(shape, dtype, seed=3, levels=3)  # 7 values: many ties at both ends
    xc = x.double().transpose(0, 1).reshape(shape[1], -1)
    assert bool(((xc == xc.amax(1, keepdim=True)).sum(1) > 1).all())
    assert bool(((xc == xc.amin(1, keepdim=True)).sum(1) > 1).all())
    _check(x, w, b, dy, dtype)


def test_all_equal_channel_has_zero_range_and_no_range_gradient():
    x = torch.full((3, 2, 4, 4), 1.5, dtype=torch.float64)
    x[:, 1] = torch.arange(48, dtype=torch.float64).view(3, 4, 4)
    _, w, b, dy = _make(x.shape, torch.float64, seed=4)
    _check(x, w, b, dy, torch.float64)
    dx = _run(x, w, b, dy)[1]
    g = dy[:, 0] * w[0] / 1e-5  # sigma = eps: dx = a * (dy - mean dy), nothing from max/min
    assert torch.allclose(dx[:, 0], g - g.mean(), rtol=1e-9, atol=1e-6)


def test_gradcheck_float64_ext():
    x, w, b, _ = _make((3, 2, 4, 4), torch.float64, seed=5)
    args = [t.clone().requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(lambda *a: range_batch_norm(*a, 1e-5, "ext")[0], args)
    x2, w2, b2, _ = _make((4, 3), torch.float64, seed=6)  # rows layout
    args = [t.clone().requires_grad_() for t in (x2, w2, b2)]
    assert torch.autograd.gradcheck(lambda *a: range_batch_norm(*a, 1e-5, "ext")[0], args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_paths_agree_with_running_statistics(dtype):
    torch.manual_seed(7)
    mods = [RangeBatchNorm2d(3, momentum=None, impl=i) for i in ("ext", "eager")]
    for _ in range(2):
        x = (torch.randn(4, 3, 5, 5) * 2 + 1).to(dtype)
        ys = [m(x) for m in mods]
        assert_close(ys[0], ys[1].double(), dtype, "y")
    for name in ("running_mean", "running_sigma"):
        a, b = (getattr(m, name) for m in mods)
        assert a.dtype == torch.float32
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert int(mods[0].num_batches_tracked) == 2
    x = torch.randn(6, 3, 4, 4)
    xc = x.transpose(0, 1).reshape(3, -1)
    m = RangeBatchNorm2d(3, momentum=1.0, impl="ext")
    m(x)
    assert torch.allclose(m.running_sigma, range_scale(96) * (xc.amax(1) - xc.amin(1)), rtol=1e-6)


def test_nan_batch_leaves_running_statistics_alone_on_every_path():
    for impl in ("ext", "eager"):
        m = RangeBatchNorm1d(2, impl=impl)
        x = torch.randn(5, 2)
        x[1, 0] = float("nan")
        m(x)
        assert torch.equal(m.running_mean, torch.zeros(2)), impl
        assert torch.equal(m.running_sigma, torch.ones(2)), impl


def test_impl_is_validated_and_ext_refuses_integers():
    with pytest.raises(ValueError, match="impl"):
        RangeBatchNorm2d(3, impl="fast")
    with pytest.raises(ValueError, match="impl='ext'"):
        range_batch_norm(torch.zeros(2, 3, dtype=torch.int32), None, None, 1e-5, "ext")


def test_fallback_to_eager_when_the_library_is_missing(monkeypatch):
    monkeypatch.setattr(bn_fast, "_STATE", {"lib": None, "why": "compiler missing (test)"})
    x, w, b, dy = _make((4, 3, 5, 5), torch.float32, seed=9)
    with pytest.warns(RuntimeWarning, match="compiler missing"):
        got = _run(x, w, b, dy, "auto")
    for gt, wt, name in zip(got, _reference(x, w, b, dy), ("y", "dx", "dw", "db"), strict=True):
        assert_close(gt, wt, torch.float32, name)
    with pytest.raises(ValueError, match="compiler missing"):
        _run(x, w, b, dy, "ext")
    m = RangeBatchNorm2d(3)
    m(x)
    assert int(m.num_batches_tracked) == 1 and not torch.equal(m.running_sigma, torch.ones(3))


@pytest.mark.slow
def test_compile_path_matches():
    x, w, b, dy = _make((2, 3, 4, 4), torch.float32, seed=8)
    want = _reference(x, w, b, dy)
    for gt, wt, name in zip(_run(x, w, b, dy, "compile"), want, ("y", "dx", "dw", "db"), strict=True):
        assert_close(gt, wt, torch.float32, name)
