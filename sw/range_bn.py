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
"""

from __future__ import annotations

import math

import torch
from l1bn.spec.intmath import range_scale
from torch import nn

__all__ = ["RangeBatchNorm", "RangeBatchNorm1d", "RangeBatchNorm2d", "range_bn_forward_plain"]


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def range_bn_forward_plain(x, weight=None, bias=None, eps: float = 1e-5):
    """Training-mode range BN with plain torch ops; returns ``(y, mean, sigma_without_eps)``."""
    dims = (0, *range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    n = x.numel() // x.shape[1]
    xs = x.to(_stat_dtype(x.dtype))
    mu = xs.mean(dims, keepdim=True)
    rs = (xs.amax(dims, keepdim=True) - xs.amin(dims, keepdim=True)) * range_scale(n)
    y = (xs - mu) / (rs + eps)
    if weight is not None:
        y = y * weight.to(y.dtype).view(shape) + bias.to(y.dtype).view(shape)
    return y.to(x.dtype), mu.flatten(), rs.flatten()


class RangeBatchNorm(nn.Module):
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
    """

    norm = "range"
    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features={num_features!r} must be an integer >= 1")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps={eps!r} must be a finite number > 0")
        if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum={momentum!r} must be in 0..1 or None")
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **fk))
            self.bias = nn.Parameter(torch.zeros(num_features, **fk))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            sk = {"device": device, "dtype": _stat_dtype(dtype or torch.get_default_dtype())}
            self.register_buffer("running_mean", torch.zeros(num_features, **sk))
            self.register_buffer("running_sigma", torch.ones(num_features, **sk))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_sigma", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_sigma.fill_(1.0)
            self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _check_input(self, x) -> None:
        if not torch.is_tensor(x):
            raise ValueError(f"{type(self).__name__} expects a tensor, got {type(x).__name__}")
        if x.dim() not in self._ranks:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{r}D' for r in self._ranks)} "
                             f"input, got {x.dim()}D shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels "
                             f"(input shape {tuple(x.shape)})")
        if not x.dtype.is_floating_point:
            raise ValueError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        if not (self.training or not self.track_running_stats):
            ct = _stat_dtype(x.dtype)
            sigma = self.running_sigma.to(ct) + self.eps
            y = (x.to(ct) - self.running_mean.to(ct).view(shape)) / sigma.view(shape)
            if self.affine:
                y = y * self.weight.to(ct).view(shape) + self.bias.to(ct).view(shape)
            return y.to(x.dtype)
        if x.numel() // x.shape[1] < 2:
            raise ValueError(f"{type(self).__name__}: expected more than 1 value per channel when "
                             f"training (input shape {tuple(x.shape)}); use eval mode or a larger batch")
        y, mu, rs = range_bn_forward_plain(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            f = (1.0 / (float(self.num_batches_tracked) + 1.0)) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mu.detach().to(self.running_mean.dtype), f)
                self.running_sigma.lerp_(rs.detach().to(self.running_sigma.dtype), f)
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
