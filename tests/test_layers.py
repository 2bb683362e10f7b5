"""L1BatchNorm: custom sign-based backward vs autograd of the plain-op forward, running stats, errors.

The C++ path (``impl="ext"``, the CPU default) and the eager fallback (``impl="eager"``) both run
every check of the math; tests/test_bn_fast.py covers dtypes, layouts and the fallback.
"""

import pytest
import torch
from l1bn.sw.layers import L1_C, L1BatchNorm1d, L1BatchNorm2d, l1_batch_norm, l1bn_forward_plain


def _both(x, w, b, impl):
    dy = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xs = [x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    y1 = l1_batch_norm(*xs, 1e-5, impl)[0]
    g1 = torch.autograd.grad(y1, xs, dy)
    xp = [t.clone().requires_grad_() for t in (x, w, b)]
    y2 = l1bn_forward_plain(*xp, 1e-5)
    g2 = torch.autograd.grad(y2, xp, dy)
    return y1, y2, g1, g2


def _cases():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, 3, 4, 5, dtype=torch.float64, generator=g)
    eq = r.clone()
    eq[:, 1] = 0.75  # all values equal in a channel
    ties = torch.randint(-2, 3, (4, 2, 3, 3), generator=g).double()  # many values exactly at the mean
    ties[:, 0] = ties[:, 0] - ties[:, 0].mean()
    two = torch.randn(2, 4, dtype=torch.float64, generator=g)  # N=2 per channel (1d)
    return [r, eq, ties, two, torch.randn(5, 3, 7, dtype=torch.float64, generator=g)]


@pytest.mark.parametrize("impl", ["ext", "eager"])
@pytest.mark.parametrize("x", _cases())
def test_forward_backward_match_autograd_of_plain_ops(x, impl):
    c = x.shape[1]
    w = torch.linspace(0.5, 2, c, dtype=torch.float64)
    b = torch.linspace(-1, 1, c, dtype=torch.float64)
    y1, y2, g1, g2 = _both(x, w, b, impl)
    assert (y1 - y2).abs().max() <= 1e-10
    for a, e in zip(g1, g2, strict=True):
        assert (a - e).abs().max() <= 1e-10 * max(1.0, float(e.abs().max()))


@pytest.mark.parametrize("impl", ["ext", "eager"])
def test_gradcheck_float64(impl):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, generator=g).add(0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: l1_batch_norm(x, w, b, 1e-5, impl)[0], (x, w, b))


def test_backward_formula_naive():
    """dL/dx from the documented formula, written out per element in Python floats."""
    x = [0.3, -1.2, 0.3, 2.0, 0.7]
    dy = [0.1, -0.4, 0.25, 0.0, 1.0]
    gamma, eps, m = 1.5, 1e-5, 5
    mu = sum(x) / m
    d = [v - mu for v in x]
    sigma = L1_C * sum(abs(v) for v in d) / m + eps
    xh = [v / sigma for v in d]
    g = [gamma * v for v in dy]
    sgn = [(v > 0) - (v < 0) for v in d]
    mg, mgx, ms = sum(g) / m, sum(a * b for a, b in zip(g, xh, strict=True)) / m, sum(sgn) / m
    want = [(g[i] - mg - L1_C * mgx * (sgn[i] - ms)) / sigma for i in range(m)]
    xt = torch.tensor(x, dtype=torch.float64).view(m, 1).requires_grad_()
    y = l1_batch_norm(xt, torch.tensor([gamma], dtype=torch.float64), torch.zeros(1, dtype=torch.float64), eps)[0]
    (gx,) = torch.autograd.grad(y, xt, torch.tensor(dy, dtype=torch.float64).view(m, 1))
    assert gx.flatten().tolist() == pytest.approx(want, abs=1e-12)


def test_running_stats_eval_and_momentum():
    torch.manual_seed(0)
    m = L1BatchNorm2d(3, momentum=0.5)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    m(x)
    mu = x.mean((0, 2, 3))
    s = (x - mu.view(1, -1, 1, 1)).abs().mean((0, 2, 3))
    assert torch.allclose(m.running_mean, 0.5 * mu, atol=1e-6)
    assert torch.allclose(m.running_s, 0.5 / L1_C + 0.5 * s, atol=1e-6)
    m.eval()
    y = m(x)
    sig = L1_C * m.running_s + 1e-5
    assert torch.allclose(y, (x - m.running_mean.view(1, -1, 1, 1)) / sig.view(1, -1, 1, 1), atol=1e-6)
    scale, off = m.inference_affine()
    assert torch.allclose(y.double(), x.double() * scale.view(1, -1, 1, 1) + off.view(1, -1, 1, 1), atol=1e-6)
    cma = L1BatchNorm1d(2, momentum=None)
    cma(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    cma(torch.tensor([[5.0, 2.0], [7.0, 2.0]]))
    assert cma.running_mean.tolist() == [4.0, 3.0]


def test_bfloat16_and_no_affine():
    x = torch.randn(16, 4, 5, 5).bfloat16().requires_grad_()
    m = L1BatchNorm2d(4)
    y = m(x)
    assert y.dtype == torch.bfloat16 and m.running_mean.dtype == torch.float32
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and m.weight.grad.dtype == torch.float32
    ref = l1bn_forward_plain(x.detach().float())
    assert (y.float() - ref).abs().max() < 0.05
    na = L1BatchNorm1d(3, affine=False, track_running_stats=False)
    assert na.weight is None and na.running_mean is None
    na.eval()
    out = na(torch.randn(4, 3))  # batch statistics in eval without running stats
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        L1BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="4D"):
        L1BatchNorm2d(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="2D or 3D"):
        L1BatchNorm1d(3)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        L1BatchNorm2d(3)(torch.randn(2, 4, 2, 2))
    x = torch.randn(4, 3, 2, 2)
    x[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        L1BatchNorm2d(3)(x)
    x[1, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        L1BatchNorm2d(3)(x)
    with pytest.raises(ValueError, match="eps"):
        L1BatchNorm2d(3, eps=0)
    with pytest.raises(ValueError, match="momentum"):
        L1BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        L1BatchNorm2d(0)
    m = L1BatchNorm1d(3)
    m.eval()
    assert m(torch.randn(1, 3)).shape == (1, 3)  # N=1 is fine with running statistics
