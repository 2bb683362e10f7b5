"""Integer backward of training-mode BN, one rule per norm (docs/arith/bn_backward.md): the spec.

Per channel (row), with d_i = (x_i << frac) - mu, xhat_i = d_i * inv / 2**recip_bits and
sgn_i = +1 if d_i >= 0 else -1 (1 bit: the sign bit of d_i):

    dx_i = (gamma / sigma) * u_i,   dgamma = sum(dy * xhat),  dbeta = sum(dy)
    L1:    u_i = dy_i - mean(dy) - c * mean(dy * xhat) * (sgn_i - mean(sgn))
    L2:    u_i = dy_i - mean(dy) - xhat_i * mean(dy * xhat)
    range: u_i = dy_i - mean(dy) - C(n) * sum(dy * xhat) * ([x_i = max] / n_max - [x_i = min] / n_min)

Pass 1, the per-channel statistics (``H = sum dy*xhat``, ``mean(dy)``) and the final ``dx`` are
shared (:func:`backward_pass1`, :func:`bn_backward`); the bracket ``u`` is the norm's rule, named
by its registry entry (``NormSpec.backward``: :func:`l1_bracket`, :func:`l2_bracket`,
:func:`range_bracket`). A norm without one is refused (:func:`l1bn.spec.norms.backward_spec`).

Everything is numpy int64 and vectorized over channels and elements (torch tensors are accepted and
returned as such). Rounding is round half up (``rshift_round``); divisions by n are
``div_const(., n, div_bits)``; range's divisions by the tie counts are exact ``div_round``; only dx
is saturated. The per-element work of L1 after the statistics pass is a sign select and an add; L2
needs a multiply to rebuild xhat_i and a multiply by mean(dy*xhat); range two equality compares
and a select.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..config import BNBackwardConfig
from ..intmath import c_const, range_const
from ..norms import backward_spec, div_round_array, resolve
from .core import as_int64, div_const_array, int_range, like, rshift_round_array

__all__ = ["BNBackwardResult", "BackwardPass1", "bn_backward", "bn_backward_from_forward",
           "backward_pass1", "backward_rule", "l1_bracket", "l2_bracket", "range_bracket", "c_const",
           "check_inputs"]


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


@dataclass(frozen=True)
class BackwardPass1:
    """What every norm's rule receives (numpy int64): the operands, ``d`` (channels, n) with
    ``frac`` fractional bits, ``neg = d < 0``, and the per-channel ``sum_dy``, ``sum_dyx``,
    ``sdyd = sum dy*d``, ``h = sum dy*xhat`` and ``mean_dy`` (``inner_frac`` fractional bits)."""

    x: np.ndarray
    dy: np.ndarray
    gamma: np.ndarray
    inv: np.ndarray
    d: np.ndarray
    neg: np.ndarray
    sum_dy: np.ndarray
    sum_dyx: np.ndarray
    sdyd: np.ndarray
    h: np.ndarray
    mean_dy: np.ndarray


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


def backward_pass1(x, dy, gamma, mu, inv, cfg: BNBackwardConfig) -> BackwardPass1:
    """Pass 1 and the shared per-channel step (all norms): checks the operands, then
    ``A = sum dy``, ``B = sum dy*x``, ``Sdyd = (B << frac) - mu*A``, ``H`` and ``mean(dy)``."""
    a = check_inputs(x, dy, gamma, mu, inv, cfg)
    xa, dya, mua, inva = a["x"], a["dy"], a["mu"], a["inv"]
    b = cfg.bn
    n, fr, r, k = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits
    sum_dy = dya.sum(1)
    sum_dyx = (dya * xa).sum(1)
    d = (xa << b.frac) - mua[:, None]
    # sum dy*d = (sum dy*x << frac) - mu * sum dy: exact, no per-element d multiply
    sdyd = (sum_dyx << b.frac) - mua * sum_dy
    t = cfg.h_preshift                                        # 0 unless the product is too wide
    h = rshift_round_array(rshift_round_array(sdyd, t) * inva, r - fr - t)   # sum dy*xhat, fr frac bits
    hmax = 1 << (cfg.widths["h"] - 1)
    if bool((np.abs(h) >= hmax).any()):
        raise ValueError("inconsistent forward statistics: |sum dy*xhat| exceeds its bound "
                         f"2**{cfg.widths['h'] - 1} (inv too large for the data?)")
    mean_dy = div_const_array(sum_dy << fr, n, k)                  # fr frac bits
    return BackwardPass1(x=xa, dy=dya, gamma=a["gamma"], inv=inva, d=d, neg=d < 0, sum_dy=sum_dy,
                         sum_dyx=sum_dyx, sdyd=sdyd, h=h, mean_dy=mean_dy)


def l1_bracket(p: BackwardPass1, cfg: BNBackwardConfig) -> np.ndarray:
    """L1: ``u_i = (dy_i << F) - (Kn if d_i < 0 else Kp)``, a sign select between two constants."""
    b, fr, k, rnd = cfg.bn, cfg.inner_frac, cfg.div_bits, rshift_round_array
    mh = div_const_array(p.h * c_const(b.c_bits), b.n, k)          # c*mean(dy*xhat), fr+c_bits frac
    msgn = div_const_array((b.n - 2 * p.neg.sum(1)) << fr, b.n, k)  # mean(sgn), fr frac bits
    kp = p.mean_dy + rnd(mh * ((1 << fr) - msgn), b.c_bits + fr)
    kn = p.mean_dy + rnd(mh * (-(1 << fr) - msgn), b.c_bits + fr)
    return (p.dy << fr) - np.where(p.neg, kn[:, None], kp[:, None])


def l2_bracket(p: BackwardPass1, cfg: BNBackwardConfig) -> np.ndarray:
    """L2: ``u_i = (dy_i << F) - mean(dy) - rnd(xhat_i * M, xhat_frac)``, ``M = mean(dy*xhat)``."""
    b, rnd = cfg.bn, rshift_round_array
    m = div_const_array(p.h, b.n, cfg.div_bits)                    # mean(dy*xhat), fr frac bits
    xhat = rnd(p.d * p.inv[:, None], b.recip_bits - b.xhat_frac)   # xhat_frac frac bits
    return (p.dy << cfg.inner_frac) - p.mean_dy[:, None] - rnd(xhat * m[:, None], b.xhat_frac)


def range_bracket(p: BackwardPass1, cfg: BNBackwardConfig) -> np.ndarray:
    """Range: ``u_i = (dy_i << F) - mean(dy) - [x_i = max] * Kmax + [x_i = min] * Kmin``.

    ``Kmax = div_round(H * Cr, n_max << c_bits)`` (``Kmin`` with ``n_min``), ``Cr = range_const(n,
    c_bits)``: ``C(n) * sum(dy*xhat)`` shared evenly by the ``n_max`` (``n_min``) elements equal to
    the channel's max (min), as autograd of ``amax``/``amin`` splits it. When every element is
    equal, each is both max and min and the two terms cancel exactly (``n_max = n_min = n``).
    """
    b, fr = cfg.bn, cfg.inner_frac
    is_max = p.d == p.d.max(1)[:, None]
    is_min = p.d == p.d.min(1)[:, None]
    v = p.h * range_const(b.n, b.c_bits)                      # C * sum(dy*xhat), fr+c_bits frac
    kmax = div_round_array(v, is_max.sum(1) << b.c_bits)      # fr frac bits, exact division
    kmin = div_round_array(v, is_min.sum(1) << b.c_bits)
    return ((p.dy << fr) - p.mean_dy[:, None] - np.where(is_max, kmax[:, None], 0)
            + np.where(is_min, kmin[:, None], 0))


def backward_rule(norm: str):
    """The reference backward rule (bracket function) the registry names for ``norm``."""
    return resolve(backward_spec(norm).backward)


def bn_backward(x, dy, gamma, mu, inv, cfg: BNBackwardConfig) -> BNBackwardResult:
    """The integer backward. ``x`` (channels, n) is the forward input re-read, ``dy`` the upstream
    gradient, ``gamma`` the forward's gamma, ``mu`` and ``inv`` the forward's statistics
    (mean with ``frac`` fractional bits; ``floor(2**recip_bits / sigma)``)."""
    p = backward_pass1(x, dy, gamma, mu, inv, cfg)
    b = cfg.bn
    u = backward_rule(b.norm)(p, cfg)
    gi = p.gamma[:, None] * p.inv[:, None]                    # gamma/sigma, per channel
    shift = cfg.inner_frac + b.gamma_frac + b.recip_bits - b.frac - cfg.grad_out_frac
    lo, hi = int_range(cfg.grad_out_width)
    dx = np.clip(rshift_round_array(u * gi, shift), lo, hi)
    out = dict(dx=dx, dgamma=p.h, dbeta=p.sum_dy, sum_dyx=p.sum_dyx, sdyd=p.sdyd, h=p.h,
               mean_dy=p.mean_dy, u=u, sign=p.neg.astype(np.int64))
    return BNBackwardResult(**{f.name: like(out[f.name], x) for f in fields(BNBackwardResult)})


def bn_backward_from_forward(x, dy, gamma, fwd, cfg: BNBackwardConfig) -> BNBackwardResult:
    """:func:`bn_backward` with the statistics of a forward result (any object with ``mu``, ``inv``)."""
    return bn_backward(x, dy, gamma, fwd.mu, fwd.inv, cfg)
