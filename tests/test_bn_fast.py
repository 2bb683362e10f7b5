"""The fused C++ BN kernels (l1bn.sw.bn_fast) and every L1BatchNorm path against float64 references.

Reference: the plain-op L1BN formula (``l1bn_forward_plain``) differentiated by autograd in float64,
on the same (dtype-rounded) input. Paths: ``ext`` (C++; per-channel segments for spatial size
>= 128, rows of channel groups below that and for channels-last / (N, C)), ``eager`` (the
fallback), ``compile`` (the GPU path, compiled here for the CPU).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from float_tolerance import assert_close
from l1bn.sw import bn_fast
from l1bn.sw.layers import L1BatchNorm1d, L1BatchNorm2d, l1_batch_norm, l1bn_forward_plain


def _reference(x, w, b, dy):
    """float64 (y, dx, dw, db) of the plain-op formula on x as given (already dtype-rounded)."""
    xs = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = l1bn_forward_plain(*xs, 1e-5)
    return (y, *torch.autograd.grad(y, xs, dy.double()))


def _run(x, w, b, dy, impl):
    xs = [x.detach().clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    y = l1_batch_norm(xs[0], xs[1], xs[2], 1e-5, impl)[0]
    return (y, *torch.autograd.grad(y, xs, dy))


def _make(shape, dtype, seed=0, fmt=None):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, dtype=torch.float64, generator=g) * 1.7 + 0.3).to(dtype)
    dy = torch.randn(shape, dtype=torch.float64, generator=g).to(dtype)
    if fmt is not None:
        x, dy = x.to(memory_format=fmt), dy.to(memory_format=fmt)
    c = shape[1]
    w = torch.linspace(0.5, 2.0, c, dtype=torch.float64).to(torch.float64 if dtype == torch.float64 else torch.float32)
    b = torch.linspace(-1.0, 1.0, c, dtype=w.dtype)
    return x, w, b, dy


def test_library_builds_and_loads():
    assert bn_fast.available(), bn_fast.status()
    assert bn_fast.library_path().exists()
    assert "loaded from" in bn_fast.status()


# (shape, memory format): per-channel segments (S >= 128), rows of channel groups (small S),
# channels-last, (N, C), (N, C, L), N = 2
GEOMETRIES = [((3, 4, 16, 12), None), ((5, 3, 4, 5), None), ((4, 6, 5, 3), torch.channels_last),
              ((7, 5), None), ((3, 4, 9), None), ((2, 3, 8, 16), None), ((2, 3), None)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,fmt", GEOMETRIES)
def test_ext_matches_float64_reference(shape, fmt, dtype):
    x, w, b, dy = _make(shape, dtype, fmt=fmt)
    want = _reference(x, w, b, dy)
    got = _run(x, w, b, dy, "ext")
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == w.dtype
    if fmt is not None:
        assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    for g, e, what in zip(got, want, ("y", "dx", "dgamma", "dbeta"), strict=True):
        assert_close(g, e, dtype, what)


@pytest.mark.parametrize("impl", ["eager", "ext"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_impls_agree_channels_last_and_strided(impl, dtype):
    x, w, b, dy = _make((4, 6, 12, 12), dtype, seed=3)
    want = _reference(x, w, b, dy)
    for xx, gg in ((x.to(memory_format=torch.channels_last), dy),       # dy in another layout
                   (x[:, :, :, ::2], dy[:, :, :, ::2])):                # a strided view: copied
        ref = want if xx.shape == x.shape else _reference(xx, w, b, gg)
        for got, e in zip(_run(xx, w, b, gg, impl), ref, strict=True):
            assert_close(got, e, dtype, impl)


@pytest.mark.parametrize("shape", [(2, 2, 8, 16), (4, 3, 2, 3), (3, 4), (2, 3, 2, 2)])
def test_gradcheck_float64_ext(shape):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(shape[1], dtype=torch.float64, generator=g).add(0.5).requires_grad_()
    b = torch.randn(shape[1], dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: l1_batch_norm(x, w, b, 1e-5, "ext")[0], (x, w, b))
    xc = x.detach().to(memory_format=torch.channels_last).requires_grad_() if x.dim() == 4 else x
    assert torch.autograd.gradcheck(lambda x: l1_batch_norm(x, w, b, 1e-5, "ext")[0], (xc,))


def test_ties_at_the_mean_and_constant_channel():
    """sign(0) = 0 for values exactly at the mean; a constant channel gives y = beta, dx = a*(dy - mean dy)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2, 3, (4, 3, 4, 40), generator=g).double()  # S = 160: segment path
    x[:, 0] -= x[:, 0].mean()
    x[:, 1] = 0.75
    for xx in (x, x[:, :, :1, :5].contiguous(), x.to(memory_format=torch.channels_last)):
        w, b = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64), torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
        dy = torch.randn(xx.shape, dtype=torch.float64, generator=g)
        for got, e in zip(_run(xx, w, b, dy, "ext"), _reference(xx, w, b, dy), strict=True):
            assert_close(got, e, torch.float64, "ties")


def test_threads_do_not_change_results_beyond_rounding():
    seg = _make((8, 4, 64, 20), torch.float32, seed=7)  # 40960 values: above the 1-thread grain
    x3, _, _, dy3 = _make((40, 20, 64), torch.float32, seed=8)
    rows = (x3.transpose(1, 2), torch.ones(64), torch.zeros(64), dy3.transpose(1, 2))  # (N, L, C) memory
    old = torch.get_num_threads()
    try:
        out = {}
        for nt in (1, 2):
            torch.set_num_threads(nt)
            out[nt] = _run(*seg, "ext") + _run(*rows, "ext")
    finally:
        torch.set_num_threads(old)
    for a, e in zip(out[1], out[2], strict=True):
        a, e = a.detach(), e.detach()
        assert float((a - e).abs().max()) <= 1e-5 * max(1.0, float(e.abs().max()))


def test_module_running_stats_same_on_every_path():
    x = torch.randn(6, 5, 4, 4) * 3 + 1
    mods = {impl: L1BatchNorm2d(5, momentum=0.3, impl=impl) for impl in ("ext", "eager")}
    cma = {impl: L1BatchNorm2d(5, momentum=None, impl=impl) for impl in ("ext", "eager")}
    for _ in range(3):
        for m in (*mods.values(), *cma.values()):
            m(x)
    for group in (mods, cma):
        a, e = group["ext"], group["eager"]
        assert torch.allclose(a.running_mean, e.running_mean, atol=1e-6)
        assert torch.allclose(a.running_s, e.running_s, atol=1e-6)
        assert int(a.num_batches_tracked) == int(e.num_batches_tracked) == 3
    mu = x.mean((0, 2, 3))
    s = (x - mu.view(1, -1, 1, 1)).abs().mean((0, 2, 3))
    assert torch.allclose(cma["ext"].running_mean, mu, atol=1e-5)  # cumulative average of 3 equal batches
    assert torch.allclose(cma["ext"].running_s, s, atol=1e-5)


@pytest.mark.parametrize("impl", ["ext", "eager"])
def test_nonfinite_input_leaves_running_stats_alone(impl):
    m = L1BatchNorm2d(3, impl=impl)
    m(torch.randn(4, 3, 2, 2))
    before = (m.running_mean.clone(), m.running_s.clone(), int(m.num_batches_tracked))
    x = torch.randn(4, 3, 2, 2)
    x[0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        m(x)
    assert torch.equal(m.running_mean, before[0]) and torch.equal(m.running_s, before[1])
    assert int(m.num_batches_tracked) == before[2]


def test_bfloat16_module_float32_statistics():
    x, _, _, dy = _make((4, 8, 16, 16), torch.bfloat16, seed=2)
    m = L1BatchNorm2d(8, dtype=torch.bfloat16)  # bf16 parameters, float32 running statistics
    xr = x.clone().requires_grad_()
    y = m(xr)
    y.backward(dy)
    assert y.dtype == xr.grad.dtype == m.weight.grad.dtype == torch.bfloat16
    assert m.running_mean.dtype == m.running_s.dtype == torch.float32
    want = _reference(x, torch.ones(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), dy)
    assert_close(y, want[0], torch.bfloat16, "y")
    assert_close(xr.grad, want[1], torch.bfloat16, "dx")
    mu = x.double().mean((0, 2, 3))
    assert torch.allclose(m.running_mean.double(), 0.1 * mu, atol=1e-6)


def test_l2_kernel_is_classic_batch_norm():
    """The kernels are generic over the dispersion: norm='l2' reproduces F.batch_norm's training step."""
    for shape, fmt in (((4, 3, 16, 10), None), ((6, 5, 3, 3), torch.channels_last), ((9, 4), None)):
        x, w, b, dy = _make(shape, torch.float64, seed=4, fmt=fmt)
        y, mu, var, xs, ok = bn_fast.forward(x, w, b, 1e-5, norm="l2")
        dx, dw, db = bn_fast.backward(dy, xs, w, mu, var, 1e-5, norm="l2")
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        yr = F.batch_norm(xr, None, None, wr, br, training=True, eps=1e-5)
        gr = torch.autograd.grad(yr, (xr, wr, br), dy)
        assert ok
        for got, e in zip((y, dx, dw, db), (yr, *gr), strict=True):
            assert_close(got, e, torch.float64, f"l2 {shape}")


def test_errors_and_fallback_when_the_library_is_missing(monkeypatch, tmp_path):
    # a compiler that does not exist: a clear error, nothing cached
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(bn_fast.ExtensionError, match="not found"):
        bn_fast.build(cache=tmp_path / "cache")
    assert not list(tmp_path.glob("cache/*.so"))
    monkeypatch.delenv("CXX")
    # the library unavailable in this process: auto falls back to eager (one warning), ext refuses
    monkeypatch.setattr(bn_fast, "_STATE", {"lib": None, "why": "compiler missing (test)"})
    x, w, b, dy = _make((4, 3, 5, 5), torch.float32)
    with pytest.warns(RuntimeWarning, match="compiler missing"):
        got = _run(x, w, b, dy, "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once per process
        _run(x, w, b, dy, "auto")
    for g, e in zip(got, _reference(x, w, b, dy), strict=True):
        assert_close(g, e, torch.float32, "fallback")
    with pytest.raises(ValueError, match="compiler missing"):
        _run(x, w, b, dy, "ext")
    assert "unavailable" in bn_fast.status()


def test_bad_arguments():
    with pytest.raises(ValueError, match="impl"):
        L1BatchNorm2d(3, impl="fast")
    with pytest.raises(ValueError, match="CPU float"):
        l1_batch_norm(torch.ones(4, 3, dtype=torch.int64), None, None, 1e-5, "ext")
    m = L1BatchNorm1d(3, impl="eager")
    assert m(torch.randn(4, 3)).shape == (4, 3)


def test_module_main_without_library():
    """`python -m l1bn.sw.bn_fast` (run by make install) says what happened and exits 0 either way."""
    env = {"L1BN_NO_EXT": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "l1bn.sw.bn_fast"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0
    assert "unavailable (disabled by L1BN_NO_EXT)" in r.stdout and "eager" in r.stderr


@pytest.mark.slow
def test_compiled_path_matches_reference():
    """impl='compile' (the GPU path: torch.compile of the same math), compiled here for the CPU."""
    x, w, b, dy = _make((4, 3, 5, 5), torch.float64, seed=6)
    for g, e in zip(_run(x, w, b, dy, "compile"), _reference(x, w, b, dy), strict=True):
        assert_close(g, e, torch.float64, "compile")


def test_device_side_running_stats_guard():
    """The CUDA variant (finite=None: no host sync) skips a NaN batch on the device, as the CPU check does."""
    from l1bn.sw.layers import _L1BNFunction

    rm, rs = torch.zeros(3), torch.ones(3)
    x = torch.randn(4, 3, 2, 2)
    _L1BNFunction.apply(x, None, None, 1e-5, "eager", (rm, rs, 0.5), None)
    mu = x.mean((0, 2, 3))
    assert torch.allclose(rm, 0.5 * mu, atol=1e-6) and not torch.equal(rs, torch.ones(3))
    before = (rm.clone(), rs.clone())
    x[0, 0, 0, 0] = float("inf")
    y = _L1BNFunction.apply(x, None, None, 1e-5, "eager", (rm, rs, 0.5), None)[0]
    assert torch.equal(rm, before[0]) and torch.equal(rs, before[1]) and not bool(torch.isfinite(y).all())


def test_cuda_bench_refuses_without_a_gpu():
    import os
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "bn_layer.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, also on a GPU machine
    r = subprocess.run([sys.executable, str(bench), "--device", "cuda"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: --device cuda") and "Traceback" not in r.stderr


@pytest.mark.parametrize("impl", ["ext", "eager"])
def test_weight_only_or_bias_only(impl):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=g)
    p = torch.rand(3, dtype=torch.float64, generator=g) + 0.5
    dy = torch.randn(x.shape, dtype=torch.float64, generator=g)
    for which in ("weight", "bias"):
        xs, ps = x.clone().requires_grad_(), p.clone().requires_grad_()
        args = (ps, None) if which == "weight" else (None, ps)
        got = torch.autograd.grad(l1_batch_norm(xs, *args, 1e-5, impl)[0], (xs, ps), dy)
        xr, pr = x.clone().requires_grad_(), p.clone().requires_grad_()
        yr = l1bn_forward_plain(xr)
        yr = yr * pr.view(1, -1, 1, 1) if which == "weight" else yr + pr.view(1, -1, 1, 1)
        for a, e in zip(got, torch.autograd.grad(yr, (xr, pr), dy), strict=True):
            assert_close(a, e, torch.float64, which)
