"""Integer forward of training-mode L1-BN and L2-BN (docs/arith/bn_train.md): the spec.

Per channel (one row of ``x``, n elements), round half up everywhere
(``rnd(v, s) = (v + 2**(s-1)) >> s``; ``div_round(v, n) = floor((2v + n) / (2n))``)::

    S      = sum x_i
    mu     = div_round(S << frac, n)                                   frac fractional bits
    d_i    = (x_i << frac) - mu
    L1: D  = sum |d_i|,   s = div_round(D, n),  sigma = rnd(s * C, c_bits) + eps,  C = round(c * 2**c_bits)
    L2: D  = sum d_i**2,  s = div_round(D, n),  sigma = isqrt(s) + eps
    inv    = floor(2**recip_bits / sigma)
    xhat_i = rnd(d_i * inv, recip_bits - xhat_frac)                    xhat_frac fractional bits
    y_i    = sat(rnd(gamma * xhat_i, xhat_frac + gamma_frac - out_frac) + beta, out_width)

Everything is torch int64, vectorized over channels and elements (no Python loop over elements).
The L1 and L2 paths differ only in the dispersion (D, s, sigma); the rest is shared, as in hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import c_const
from l1bn.spec.reference.core import int_range, rshift_round, saturate

__all__ = ["BNForwardResult", "bn_forward", "div_round", "isqrt", "check_forward_inputs"]


@dataclass(frozen=True)
class BNForwardResult:
    """All int64. Per channel ``(channels,)``: ``sum_x``, ``mu`` (frac fractional bits), ``disp_sum``
    (sum |d| or sum d*d), ``s`` (its rounded mean), ``sigma`` (frac fractional bits), ``inv``
    (``floor(2**recip_bits / sigma)``). Per element ``(channels, n)``: ``xhat`` (xhat_frac fractional
    bits) and ``y`` (out_frac fractional bits, saturated to out_width)."""

    y: torch.Tensor
    sum_x: torch.Tensor
    mu: torch.Tensor
    disp_sum: torch.Tensor
    s: torch.Tensor
    sigma: torch.Tensor
    inv: torch.Tensor
    xhat: torch.Tensor


def div_round(v: torch.Tensor, n: int) -> torch.Tensor:
    """``round(v / n)`` with ties toward +infinity: ``floor((2v + n) / (2n))``, exact."""
    return torch.div(2 * v + n, 2 * n, rounding_mode="floor")


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(v))`` of a non-negative int64 tensor (< 2**62), exact.

    A float64 square root is within a few units of the answer for these magnitudes; two correction
    steps in each direction make it exact.
    """
    r = torch.sqrt(v.to(torch.float64)).floor().to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > v, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


def check_forward_inputs(x, gamma, beta, cfg: BNConfig) -> None:
    """Raise ValueError on a wrong type, dtype, shape, or a value outside its declared width."""
    if not isinstance(cfg, BNConfig):
        raise ValueError(f"cfg={cfg!r} must be a BNConfig")
    for name, t in (("x", x), ("gamma", gamma), ("beta", beta)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64:
            raise ValueError(f"{name} must be a torch.int64 tensor")
    if x.shape != (cfg.channels, cfg.n):
        raise ValueError(f"x must have shape (channels={cfg.channels}, n={cfg.n}); got {tuple(x.shape)}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != (cfg.channels,):
            raise ValueError(f"{name} must have shape ({cfg.channels},); got {tuple(t.shape)}")
    for name, t, bits in (("x", x, cfg.width), ("gamma", gamma, cfg.gamma_width), ("beta", beta, cfg.beta_width)):
        lo, hi = int_range(bits)
        if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
            raise ValueError(f"{name} has values in {int(t.min())}..{int(t.max())}; "
                             f"a signed {bits}-bit {name} allows {lo}..{hi}")


def bn_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, cfg: BNConfig) -> BNForwardResult:
    """The integer training-mode forward of ``cfg.norm`` BN on a batch ``x`` of shape (channels, n).

    ``gamma`` is signed ``gamma_width`` bits with ``gamma_frac`` fractional bits, ``beta`` signed
    ``beta_width`` bits in output units (``out_frac`` fractional bits), both per channel.
    """
    check_forward_inputs(x, gamma, beta, cfg)
    n, r = cfg.n, cfg.recip_bits
    sum_x = x.sum(1)
    mu = div_round(sum_x << cfg.frac, n)
    d = (x << cfg.frac) - mu[:, None]
    if cfg.norm == "l1":
        disp_sum = d.abs().sum(1)                                  # sign/abs: no multiplier
        s = div_round(disp_sum, n)
        sigma = rshift_round(s * c_const(cfg.c_bits), cfg.c_bits) + cfg.eps
    else:
        disp_sum = (d * d).sum(1)                                  # square
        s = div_round(disp_sum, n)
        sigma = isqrt(s) + cfg.eps                                 # square root
    inv = torch.div(torch.full_like(sigma, 1 << r), sigma, rounding_mode="floor")
    xhat = rshift_round(d * inv[:, None], r - cfg.xhat_frac)
    y = saturate(rshift_round(gamma[:, None] * xhat, cfg.affine_shift) + beta[:, None], cfg.out_width)
    return BNForwardResult(y=y, sum_x=sum_x, mu=mu, disp_sum=disp_sum, s=s, sigma=sigma, inv=inv, xhat=xhat)
