"""L1-norm batch normalization layers (``L1BatchNorm1d``, ``L1BatchNorm2d``).

Forward, per channel over the ``m = N * (spatial size)`` values of the mini-batch::

    mu    = mean(x)
    d     = x - mu
    s     = mean(|d|)                     # mean absolute deviation
    sigma = c * s + eps,  c = sqrt(pi/2)  # eps is added AFTER the scaling, outside any root
    xhat  = d / sigma
    y     = gamma * xhat + beta

``c`` makes ``sigma`` the standard deviation for Gaussian data, so ``gamma``/``beta`` keep the
meaning they have in ``nn.BatchNorm``. The backward pass is a custom ``autograd.Function`` with the
sign-based gradient (exact, including the ``mean(sgn)`` term that follows from ``d = x - mu``)::

    g = gamma * dL/dy,   sgn = sign(d)   (sign(0) = 0, the subgradient autograd of |.| uses)
    dL/dx     = (1/sigma) * [ g - mean(g) - c * mean(g * xhat) * (sgn - mean(sgn)) ]
    dL/dgamma = sum(dL/dy * xhat),   dL/dbeta = sum(dL/dy)

Running statistics (``track_running_stats=True``) follow PyTorch's convention:
``running = (1 - momentum) * running + momentum * batch`` with ``momentum=0.1`` by default, or a
cumulative average (``running += (batch - running) / num_batches_tracked``) when ``momentum=None``.
The layer tracks ``running_mean`` and ``running_s`` (the mean absolute deviation, no Bessel-like
correction: there is no unbiased MAD estimator to match); eval mode uses
``sigma = c * running_s + eps``. The eval-mode layer is one per-channel affine map
(:meth:`L1BatchNorm.inference_affine`), which is what the integer export folds.

bfloat16/float16 inputs are normalized with float32 statistics and arithmetic; the output and
``dL/dx`` are cast back to the input dtype.

Implementations (``impl=``), all the same math and the same saved state (``x``, ``mu``, ``s``; the
backward recomputes ``sign(x - mu)`` and ``xhat`` instead of storing them):

* ``"ext"``: fused C++/OpenMP kernels (:mod:`l1bn.sw.bn_fast`), CPU: 3 passes forward, 2 backward;
* ``"compile"``: ``torch.compile`` of :func:`_fwd_math` / :func:`_bwd_math` (the GPU path);
* ``"eager"``: the same functions as plain torch ops (the fallback);
* ``"auto"`` (default): ``compile`` on CUDA, ``ext`` on CPU when the C++ library is available,
  else ``eager`` (with one ``RuntimeWarning`` that says why).

A NaN/Inf input in training mode raises ``ValueError`` on CPU and leaves the running statistics
as they were (the check reads the C per-channel statistics, not the input). On CUDA the check
stays on the device (no synchronization per layer): the running statistics skip such a batch,
the output carries the NaN, and nothing is raised.
"""

from __future__ import annotations

import math

import torch
from l1bn.spec.intmath import C_SQRT_PI_2
from torch import nn

from . import bn_fast

__all__ = ["L1_C", "IMPLS", "BatchNormBase", "L1BatchNorm", "L1BatchNorm1d", "L1BatchNorm2d", "l1bn_forward_plain",
           "l2bn_forward_plain", "l1_batch_norm"]

#: sqrt(pi/2), the contract's float64 (``l1bn.spec.intmath.C_SQRT_PI_2``; the C++ kernels get the same)
L1_C = C_SQRT_PI_2


# ---------------------------------------------------------------- the math (eager and compiled)

def _fwd_math(x, weight, bias, eps: float, dims: tuple[int, ...]):
    """Batch-statistics forward; returns (y in the dtype of ``x``, mu, s in the compute dtype).

    ``weight``/``bias`` are shaped (1, C, 1, ...) in the compute dtype (float32 for bf16/fp16).
    """
    xc = x.to(compute_dtype(x.dtype))
    mu = xc.mean(dims, keepdim=True)
    d = xc - mu
    s = d.abs().mean(dims, keepdim=True)
    scale = 1.0 / (L1_C * s + eps)
    if weight is not None:
        scale = weight * scale
    y = d * scale
    if bias is not None:
        y = y + bias
    return y.to(x.dtype), mu, s


def _bwd_math(dy, x, mu, s, weight, eps: float, dims: tuple[int, ...]):
    """Sign-based backward from the saved ``x``, ``mu``, ``s``; returns (dx, dgamma, dbeta).

    Three per-channel sums (``dy``, ``dy * d``, ``sign(d)``) then ``dx = a*dy + k*sign(d) + b0``,
    the documented formula with its per-channel terms folded (see the module docstring).
    """
    ct = mu.dtype
    xc, g = x.to(ct), dy.to(ct)
    m = xc.numel() // xc.shape[1]
    inv = 1.0 / (L1_C * s + eps)
    d = xc - mu
    sgn = torch.sign(d)  # sign(0) = 0
    sdy = g.sum(dims, keepdim=True)
    sdd = (g * d).sum(dims, keepdim=True)
    ssg = sgn.sum(dims, keepdim=True)
    a = inv if weight is None else weight * inv
    k = (-L1_C / m) * a * (sdd * inv)       # -c * (gamma/sigma) * mean(dy * xhat)
    b0 = (-1.0 / m) * (a * sdy + k * ssg)   # -(gamma/sigma) * mean(dy) - k * mean(sgn)
    dx = a * g + k * sgn + b0
    return dx.to(x.dtype), sdd * inv, sdy


IMPLS = ("auto", "ext", "compile", "eager")
_COMPILED: dict[str, tuple] = {}


def _math(impl: str):
    """(forward, backward) math callables: eager, or ``torch.compile``'d once per process."""
    if impl == "eager":
        return _fwd_math, _bwd_math
    if "k" not in _COMPILED:
        _COMPILED["k"] = (torch.compile(_fwd_math, dynamic=False), torch.compile(_bwd_math, dynamic=False))
    return _COMPILED["k"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """The path that runs ``x``: ``auto`` = compile on CUDA, the C++ kernels on CPU (else eager)."""
    if impl == "auto":
        if x.is_cuda:
            return "compile"
        return "ext" if bn_fast.usable(x) else "eager"
    if impl == "ext" and not bn_fast.usable(x, warn=False):
        if x.device.type != "cpu" or not x.dtype.is_floating_point:
            raise ValueError(f"impl='ext' runs CPU float inputs only, got {x.dtype} on {x.device}")
        raise ValueError(f"impl='ext': {bn_fast.status()}")
    return impl


class _L1BNFunction(torch.autograd.Function):
    """Training-mode L1BN with the sign-based backward. Inputs are (N, C, *)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, impl: str, running=None, finite=None):
        # running: (running_mean, running_s, factor) to update, or None; finite: a list that gets
        # [False] when the batch statistics are NaN/Inf (running statistics then stay as they were),
        # or None: no host synchronization (CUDA), the update is skipped on the device instead
        impl = resolve_impl(impl, x)
        if impl == "ext":
            y, mu, s, xs, ok = bn_fast.forward(x, weight, bias, eps, running=running)
        else:
            ct = compute_dtype(x.dtype)
            dims = (0, *range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            w = None if weight is None else weight.to(ct).view(shape)
            b = None if bias is None else bias.to(ct).view(shape)
            y, mu, s = _math(impl)[0](x, w, b, float(eps), dims)
            mu, s, xs = mu.flatten(), s.flatten(), x
            ok_t = None if finite is None and running is None else torch.isfinite(torch.stack((mu, s))).all()
            ok = bool(ok_t) if finite is not None else True
            if running is not None and finite is None:
                rm, rs, f = running
                rm.copy_(torch.where(ok_t, torch.lerp(rm, mu.to(rm.dtype), f), rm))
                rs.copy_(torch.where(ok_t, torch.lerp(rs, s.to(rs.dtype), f), rs))
            elif running is not None and ok:
                rm, rs, f = running
                rm.lerp_(mu.to(rm.dtype), f)
                rs.lerp_(s.to(rs.dtype), f)
        if finite is not None:
            finite[:] = [ok]
        ctx.save_for_backward(xs, mu, s, weight)
        ctx.eps, ctx.impl = float(eps), impl
        ctx.b_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mu, s)
        return y, mu, s

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C++ backward has no graph of its own
    def backward(ctx, dy, _dmu, _ds):
        x, mu, s, weight = ctx.saved_tensors
        if ctx.impl == "ext":
            dx, dgamma, dbeta = bn_fast.backward(dy, x, weight, mu, s, ctx.eps)
        else:
            dims = (0, *range(2, x.dim()))
            shape = [1, -1] + [1] * (x.dim() - 2)
            w = None if weight is None else weight.to(mu.dtype).view(shape)
            dx, dgamma, dbeta = _math(ctx.impl)[1](dy, x, mu.view(shape), s.view(shape), w, ctx.eps, dims)
        dw = None if weight is None else dgamma.flatten().to(weight.dtype)
        db = None if ctx.b_dtype is None else dbeta.flatten().to(ctx.b_dtype)
        return dx, dw, db, None, None, None, None


def l1_batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  eps: float = 1e-5, impl: str = "auto"):
    """Functional training-mode L1BN on (N, C, *): returns ``(y, batch_mean, batch_s)``.

    ``impl``: ``"auto"`` (C++ kernels on CPU, ``torch.compile`` on CUDA), ``"ext"``, ``"compile"``,
    ``"eager"``. No input checks (the modules do them); ``batch_mean``/``batch_s`` are float32 for
    bf16/fp16 input.
    """
    return _L1BNFunction.apply(x, weight, bias, eps, impl)


def l1bn_forward_plain(x, weight=None, bias=None, eps: float = 1e-5):
    """The L1BN training forward written with plain torch ops (autograd differentiates it).

    The reference the custom backward is checked against, and the "plain-op" row of the bench.
    """
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mu = x.mean(dims, keepdim=True)
    d = x - mu
    sigma = L1_C * d.abs().mean(dims, keepdim=True) + eps
    y = d / sigma
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    return y


def l2bn_forward_plain(x, weight=None, bias=None, eps: float = 1e-5):
    """Classic (L2) batch norm with plain torch ops: ``(x - mu) / sqrt(var + eps)`` (biased var)."""
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mu = x.mean(dims, keepdim=True)
    d = x - mu
    y = d / torch.sqrt((d * d).mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    return y


# ---------------------------------------------------------------- modules

class BatchNormBase(nn.Module):
    """What every BN layer of l1bn shares (L1 here, range in :mod:`l1bn.sw.range_bn`): the
    constructor of ``nn.BatchNorm*d`` with checked arguments, ``weight``/``bias``, the running
    statistics (``running_mean`` and the norm's own dispersion buffer ``_stat``, initialized to
    ``_stat_init``, float32 at least), ``reset_running_stats``, ``extra_repr`` and the input checks.
    Subclasses set ``norm``, ``_stat``, ``_stat_init`` and ``_ranks``.
    """

    norm = ""
    _stat = ""
    _stat_init = 1.0
    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, impl: str = "auto"):
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features={num_features!r} must be an integer >= 1")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps={eps!r} must be a finite number > 0")
        if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum={momentum!r} must be in 0..1 or None")
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} must be one of {', '.join(IMPLS)}")
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats, self.impl = affine, track_running_stats, impl
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **fk))
            self.bias = nn.Parameter(torch.zeros(num_features, **fk))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            # statistics are kept in float32 at least (bf16 running sums drift)
            sk = {"device": device, "dtype": compute_dtype(dtype or torch.get_default_dtype())}
            self.register_buffer("running_mean", torch.zeros(num_features, **sk))
            self.register_buffer(self._stat, torch.full((num_features,), self._stat_init, **sk))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer(self._stat, None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            getattr(self, self._stat).fill_(self._stat_init)
            self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def __setstate__(self, state):  # modules pickled before impl= existed
        state.setdefault("impl", "auto")
        super().__setstate__(state)

    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.is_tensor(x):
            raise ValueError(f"{type(self).__name__} expects a tensor, got {type(x).__name__}")
        if x.dim() not in self._ranks:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{r}D' for r in self._ranks)} "
                             f"input (N, C{', L' if 3 in self._ranks else ', H, W'}), got {x.dim()}D "
                             f"shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels "
                             f"(input shape {tuple(x.shape)})")
        if not x.dtype.is_floating_point:
            raise ValueError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")


class L1BatchNorm(BatchNormBase):
    """Base class of the L1BN layers; same constructor as ``nn.BatchNorm*d``.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    eps : float
        Added to ``c * s`` (after the sqrt(pi/2) scaling): ``sigma = c * s + eps``. Must be > 0.
    momentum : float or None
        Running-statistics update factor in [0, 1] (PyTorch convention), or None for a cumulative
        average.
    affine : bool
        Learnable ``weight`` (gamma, init 1) and ``bias`` (beta, init 0).
    track_running_stats : bool
        Keep ``running_mean``/``running_s`` and use them in eval mode; if False, batch statistics
        are used in both modes.
    impl : str
        ``"auto"`` (default), ``"ext"``, ``"compile"`` or ``"eager"`` (see the module docstring).
    """

    norm = "l1"
    _stat = "running_s"
    _stat_init = 1.0 / L1_C   # sigma = 1 (+ eps), like running_var = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if not use_batch:
            ct = compute_dtype(x.dtype)
            sigma = L1_C * self.running_s.to(ct) + self.eps
            y = (x.to(ct) - self.running_mean.to(ct).view(shape)) / sigma.view(shape)
            if self.affine:
                y = y * self.weight.to(ct).view(shape) + self.bias.to(ct).view(shape)
            return y.to(x.dtype)
        m = x.numel() // x.shape[1]
        if m < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                             f"training (input shape {tuple(x.shape)}); use eval mode or a larger batch")
        running = None
        if self.training and self.track_running_stats:
            f = (1.0 / (float(self.num_batches_tracked) + 1.0)) if self.momentum is None else self.momentum
            running = (self.running_mean, self.running_s, f)
        # a NaN/Inf input makes its channel's mean (or s) non-finite: checked on C values, not N*C*H*W;
        # on CUDA not checked on the host (no synchronization per layer): the running statistics
        # skip such a batch on the device and the output carries the NaN
        finite = None if x.is_cuda else [True]
        y = _L1BNFunction.apply(x, self.weight, self.bias, self.eps, self.impl, running, finite)[0]
        if self.training and finite is not None and not finite[0]:
            raise ValueError(f"{type(self).__name__}: non-finite input (NaN or Inf) in training mode "
                             f"would corrupt the batch and running statistics")
        if running is not None:
            self.num_batches_tracked.add_(1)
        return y

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 ``(scale, offset)`` (C,) of the eval-mode layer: ``y = scale * x + offset``."""
        if not self.track_running_stats:
            raise ValueError("an L1BatchNorm without running statistics has no inference affine map")
        sigma = L1_C * self.running_s.detach().double() + self.eps
        gamma = self.weight.detach().double() if self.affine else torch.ones_like(sigma)
        beta = self.bias.detach().double() if self.affine else torch.zeros_like(sigma)
        scale = gamma / sigma
        return scale, beta - scale * self.running_mean.detach().double()


class L1BatchNorm1d(L1BatchNorm):
    """L1BN over (N, C) or (N, C, L) inputs (statistics over N, or N and L)."""

    _ranks = (2, 3)


class L1BatchNorm2d(L1BatchNorm):
    """L1BN over (N, C, H, W) inputs (statistics over N, H and W)."""

    _ranks = (4,)
