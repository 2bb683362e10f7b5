"""Range batch normalization layers (``RangeBatchNorm1d``, ``RangeBatchNorm2d``).

Banner et al., "Scalable methods for 8-bit training of neural networks" (NeurIPS 2018) replace the
standard deviation by a scaled range of the batch, per channel over its ``n = N*H*W`` elements::

    mu    = mean(x)
    sigma = C(n) * (max(x) - min(x)) + eps,   C(n) = 0.5*0.35*(1 + sqrt(pi ln 4)) / sqrt(2 ln n)
    y     = gamma * (x - mu) / sigma + beta

``C(n)`` is the public RangeBN's ``scale_fix`` with one chunk per channel
(:func:`l1bn.spec.intmath.range_scale`, the same function the integer reference and the hardware
constant use). The backward is autograd's: the gradient of ``sigma`` flows through the max and the
min elements only, as in the paper. The running statistic is ``running_sigma = C(n) * range``
(what the reference implementation keeps in ``running_var``); eval mode uses
``sigma = running_sigma + eps``, the registry's inference rule (``l1bn.spec.norms``), and
:meth:`RangeBatchNorm.inference_affine` gives the ``(scale, offset)`` the export folds.

Implementations (``impl=``, as for ``L1BatchNorm*d``; the same math, the same running statistics):

* ``"ext"``: the fused C++/OpenMP kernels (:func:`l1bn.sw.bn_fast.range_forward` /
  :func:`~l1bn.sw.bn_fast.range_backward`), CPU: forward 2 passes (sum, max and min together;
  then ``y``), backward 2 passes (``sum(dy)``, ``sum(dy * (x - mu))`` and the tie counts; then
  ``dx``), saving ``x``, ``mu``, ``C(n) * range``, max and min;
* ``"compile"``: ``torch.compile`` of :func:`range_bn_forward_plain` (the GPU path);
* ``"eager"``: :func:`range_bn_forward_plain`, plain torch ops differentiated by autograd;
* ``"auto"`` (default): ``compile`` on CUDA, ``ext`` on CPU when the C++ library is available,
  else ``eager`` (with one ``RuntimeWarning``).

Ties: autograd splits the gradient of ``amax`` (``amin``) evenly among the values equal to the
max (min); the C++ backward does the same, so every path has one gradient. A batch whose mean or
range is NaN/Inf leaves the running statistics as they were (every path).
"""

from __future__ import annotations

import torch
from l1bn.spec.intmath import range_scale

from . import bn_fast
from .layers import BatchNormBase, compute_dtype, resolve_impl

__all__ = ["RangeBatchNorm", "RangeBatchNorm1d", "RangeBatchNorm2d", "range_bn_forward_plain",
           "range_batch_norm"]


def range_bn_forward_plain(x, weight=None, bias=None, eps: float = 1e-5):
    """Training-mode range BN with plain torch ops; returns ``(y, mean, sigma_without_eps)``."""
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    n = x.numel() // x.shape[1]
    xs = x.to(compute_dtype(x.dtype))
    mu = xs.mean(dims, keepdim=True)
    rs = (xs.amax(dims, keepdim=True) - xs.amin(dims, keepdim=True)) * range_scale(n)
    y = (xs - mu) / (rs + eps)
    if weight is not None:
        y = y * weight.to(y.dtype).view(shape) + bias.to(y.dtype).view(shape)
    return y.to(x.dtype), mu.flatten(), rs.flatten()


_COMPILED: dict[str, object] = {}


def _plain(impl: str):
    """The plain-op forward, eager or ``torch.compile``'d once per process."""
    if impl == "eager":
        return range_bn_forward_plain
    if "f" not in _COMPILED:
        _COMPILED["f"] = torch.compile(range_bn_forward_plain, dynamic=False)
    return _COMPILED["f"]


class _RangeBNFunction(torch.autograd.Function):
    """Training-mode range BN on the C++ kernels; returns ``(y, mu, rs)`` (mu, rs not differentiable)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, running=None, finite=None):
        cn = range_scale(x.numel() // x.shape[1])
        y, mu, rs, mx, mn, xs, ok = bn_fast.range_forward(x, weight, bias, eps, cn, running=running)
        if finite is not None:
            finite[:] = [ok]
        ctx.save_for_backward(xs, mu, rs, mx, mn, weight)
        ctx.eps, ctx.cn = float(eps), cn
        ctx.b_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mu, rs)
        return y, mu, rs

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C++ backward has no graph of its own
    def backward(ctx, dy, _dmu, _drs):
        x, mu, rs, mx, mn, weight = ctx.saved_tensors
        dx, dgamma, dbeta = bn_fast.range_backward(dy, x, weight, mu, rs, mx, mn, ctx.eps, ctx.cn)
        dw = None if weight is None else dgamma.to(weight.dtype)
        db = None if ctx.b_dtype is None else dbeta.to(ctx.b_dtype)
        return dx, dw, db, None, None, None


def range_batch_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float = 1e-5, impl: str = "auto"):
    """Functional training-mode range BN on (N, C, *): ``(y, batch_mean, batch_C(n)*range)``.

    ``impl``: ``"auto"``, ``"ext"``, ``"compile"``, ``"eager"`` (module docstring). No input checks
    (the modules do them); the statistics are float32 for bf16/fp16 input.
    """
    impl = resolve_impl(impl, x)
    if impl == "ext":
        return _RangeBNFunction.apply(x, weight, bias, eps)
    return _plain(impl)(x, weight, bias, eps)


class RangeBatchNorm(BatchNormBase):
    """Base class of the range-BN layers; the constructor and buffers of ``nn.BatchNorm*d``,
    with ``running_sigma`` (initialized to 1) in place of ``running_var``.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    eps : float
        Added to ``C(n) * range``. Must be > 0.
    momentum : float or None
        Running-statistics update factor in [0, 1], or None for a cumulative average.
    affine : bool
        Learnable ``weight`` (gamma, init 1) and ``bias`` (beta, init 0).
    track_running_stats : bool
        Keep ``running_mean``/``running_sigma`` and use them in eval mode.
    impl : str
        ``"auto"`` (default), ``"ext"``, ``"compile"`` or ``"eager"`` (see the module docstring).
    """

    norm = "range"
    _stat = "running_sigma"
    _stat_init = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        if not (self.training or not self.track_running_stats):
            ct = compute_dtype(x.dtype)
            sigma = self.running_sigma.to(ct) + self.eps
            y = (x.to(ct) - self.running_mean.to(ct).view(shape)) / sigma.view(shape)
            if self.affine:
                y = y * self.weight.to(ct).view(shape) + self.bias.to(ct).view(shape)
            return y.to(x.dtype)
        if x.numel() // x.shape[1] < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                             f"training (input shape {tuple(x.shape)}); use eval mode or a larger batch")
        running = None
        if self.training and self.track_running_stats:
            f = (1.0 / (float(self.num_batches_tracked) + 1.0)) if self.momentum is None else self.momentum
            running = (self.running_mean, self.running_sigma, f)
        impl = resolve_impl(self.impl, x)
        if impl == "ext":  # the kernel moves the running statistics (skipped for a NaN/Inf batch)
            y = _RangeBNFunction.apply(x, self.weight, self.bias, self.eps, running)[0]
        else:
            y, mu, rs = _plain(impl)(x, self.weight, self.bias, self.eps)
            if running is not None:  # skip a NaN/Inf batch without a host synchronization
                rm, rsg, f = running
                with torch.no_grad():
                    mu, rs = mu.detach(), rs.detach()
                    ok = torch.isfinite(mu).all() & torch.isfinite(rs).all()
                    rm.copy_(torch.where(ok, torch.lerp(rm, mu.to(rm.dtype), f), rm))
                    rsg.copy_(torch.where(ok, torch.lerp(rsg, rs.to(rsg.dtype), f), rsg))
        if running is not None:
            self.num_batches_tracked.add_(1)
        return y

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 ``(scale, offset)`` (C,) of the eval-mode layer: ``y = scale * x + offset``."""
        if not self.track_running_stats:
            raise ValueError("a RangeBatchNorm without running statistics has no inference affine map")
        sigma = self.running_sigma.detach().double() + self.eps
        gamma = self.weight.detach().double() if self.affine else torch.ones_like(sigma)
        beta = self.bias.detach().double() if self.affine else torch.zeros_like(sigma)
        scale = gamma / sigma
        return scale, beta - scale * self.running_mean.detach().double()


class RangeBatchNorm1d(RangeBatchNorm):
    """Range BN over (N, C) or (N, C, L) inputs."""

    _ranks = (2, 3)


class RangeBatchNorm2d(RangeBatchNorm):
    """Range BN over (N, C, H, W) inputs."""

    _ranks = (4,)
