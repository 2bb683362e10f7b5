"""Integer backward of training-mode L1-BN and L2-BN (docs/arith/bn_backward.md): the spec.

Per channel (row), with d_i = (x_i << frac) - mu, xhat_i = d_i * inv / 2**recip_bits and
sgn_i = +1 if d_i >= 0 else -1 (1 bit: the sign bit of d_i):

    L1: dx_i = (gamma / sigma) * [dy_i - mean(dy) - c * mean(dy * xhat) * (sgn_i - mean(sgn))]
    L2: dx_i = (gamma / sigma) * [dy_i - mean(dy) - xhat_i * mean(dy * xhat)]
    dgamma = sum(dy * xhat),  dbeta = sum(dy)

Everything is numpy int64 and vectorized over channels and elements (torch tensors are accepted and
returned as such). Rounding is round half up
(``rshift_round``); divisions by n are ``div_const(., n, div_bits)``; only dx is saturated. The
per-element work of L1 after the statistics pass is a sign select and an add; L2 needs a
multiply to rebuild xhat_i and a multiply by mean(dy*xhat).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..config import BNBackwardConfig
from ..intmath import c_const
from .core import _div_const, _rshift_round, as_int64, int_range, like

__all__ = ["BNBackwardResult", "bn_backward", "bn_backward_from_forward", "c_const", "check_inputs"]


@dataclass(frozen=True)
class BNBackwardResult:
    """All int64, in the array type of ``x``. ``dx`` (channels, n): grad_out_frac fractional bits, saturated to grad_out_width.
    ``dgamma`` (channels,): inner_frac fractional bits; ``dbeta`` (channels,): exact sum of dy.
    The per-channel intermediates are kept for tests and docs."""

    dx: object
    dgamma: object
    dbeta: object
    sum_dyx: object
    sdyd: object
    h: object
    mean_dy: object
    u: object
    sign: object


def check_inputs(x, dy, gamma, mu, inv, cfg: BNBackwardConfig) -> dict:
    """Raise ValueError on a wrong shape, dtype or an operand outside its width; return numpy views."""
    b = cfg.bn
    arrays = {}
    for name, t in (("x", x), ("dy", dy), ("gamma", gamma), ("mu", mu), ("inv", inv)):
        if "int64" not in str(getattr(t, "dtype", "")):
            raise ValueError(f"{name} must be an int64 array or tensor")
        arrays[name] = as_int64(t, name)
    if arrays["x"].shape != (b.channels, b.n) or arrays["dy"].shape != arrays["x"].shape:
        raise ValueError(f"x and dy must have shape (channels={b.channels}, n={b.n}); "
                         f"got {tuple(arrays['x'].shape)} and {tuple(arrays['dy'].shape)}")
    for name in ("gamma", "mu", "inv"):
        if arrays[name].shape != (b.channels,):
            raise ValueError(f"{name} must have shape ({b.channels},); got {tuple(arrays[name].shape)}")
    ranges = (("x", int_range(b.width)), ("dy", int_range(cfg.grad_width)),
              ("gamma", int_range(b.gamma_width)),
              ("mu", (int_range(b.width)[0] << b.frac, int_range(b.width)[1] << b.frac)),
              ("inv", (0, 1 << b.recip_bits)))
    for name, (lo, hi) in ranges:
        t = arrays[name]
        if t.size and (int(t.min()) < lo or int(t.max()) > hi):
            raise ValueError(f"{name} has values in {int(t.min())}..{int(t.max())}; allowed {lo}..{hi}")
    return arrays


def bn_backward(x, dy, gamma, mu, inv, cfg: BNBackwardConfig) -> BNBackwardResult:
    """The integer backward. ``x`` (channels, n) is the forward input re-read, ``dy`` the upstream
    gradient, ``gamma`` the forward's gamma, ``mu`` and ``inv`` the forward's statistics
    (mean with ``frac`` fractional bits; ``floor(2**recip_bits / sigma)``)."""
    a = check_inputs(x, dy, gamma, mu, inv, cfg)
    xa, dya, mua, inva = a["x"], a["dy"], a["mu"], a["inv"]
    b = cfg.bn
    n, fr, r, k = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits
    rnd = _rshift_round
    mu_c, inv_c, gam_c = mua[:, None], inva[:, None], a["gamma"][:, None]

    # pass 1: three accumulators (sum dy, sum dy*x, count of d < 0)
    sum_dy = dya.sum(1)
    sum_dyx = (dya * xa).sum(1)
    d = (xa << b.frac) - mu_c
    neg = d < 0
    # sum dy*d = (sum dy*x << frac) - mu * sum dy: exact, no per-element d multiply
    sdyd = (sum_dyx << b.frac) - mua * sum_dy
    t = cfg.h_preshift                                        # 0 unless the product is too wide
    h = rnd(rnd(sdyd, t) * inva, r - fr - t)                  # sum dy*xhat, fr frac bits
    hmax = 1 << (cfg.widths["h"] - 1)
    if bool((np.abs(h) >= hmax).any()):
        raise ValueError("inconsistent forward statistics: |sum dy*xhat| exceeds its bound "
                         f"2**{cfg.widths['h'] - 1} (inv too large for the data?)")
    mean_dy = _div_const(sum_dy << fr, n, k)                  # fr frac bits

    if b.norm == "l1":
        cc = c_const(b.c_bits)
        mh = _div_const(h * cc, n, k)                         # c*mean(dy*xhat), fr+c_bits frac
        nneg = neg.sum(1)
        msgn = _div_const((n - 2 * nneg) << fr, n, k)         # mean(sgn), fr frac bits
        kp = rnd(mh * ((1 << fr) - msgn), b.c_bits + fr)
        kn = rnd(mh * (-(1 << fr) - msgn), b.c_bits + fr)
        # pass 2, per element: a sign select between two per-channel constants and one subtract
        sub = np.where(neg, (mean_dy + kn)[:, None], (mean_dy + kp)[:, None])
        u = (dya << fr) - sub
    else:
        m = _div_const(h, n, k)                               # mean(dy*xhat), fr frac bits
        xhat = rnd(d * inv_c, r - b.xhat_frac)                # xhat_frac frac bits
        u = (dya << fr) - mean_dy[:, None] - rnd(xhat * m[:, None], b.xhat_frac)

    gi = gam_c * inv_c                                        # gamma/sigma, per channel
    shift = fr + b.gamma_frac + r - b.frac - cfg.grad_out_frac
    lo, hi = int_range(cfg.grad_out_width)
    dx = np.clip(rnd(u * gi, shift), lo, hi)
    out = dict(dx=dx, dgamma=h, dbeta=sum_dy, sum_dyx=sum_dyx, sdyd=sdyd, h=h, mean_dy=mean_dy, u=u,
               sign=neg.astype(np.int64))
    return BNBackwardResult(**{f.name: like(out[f.name], x) for f in fields(BNBackwardResult)})


def bn_backward_from_forward(x, dy, gamma, fwd, cfg: BNBackwardConfig) -> BNBackwardResult:
    """:func:`bn_backward` with the statistics of a forward result (any object with ``mu``, ``inv``)."""
    return bn_backward(x, dy, gamma, fwd.mu, fwd.inv, cfg)
