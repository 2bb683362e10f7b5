"""Integer forward of training-mode L1-BN and L2-BN (docs/arith/bn_train.md): the spec.

Per channel (one row of ``x``, n elements), round half up everywhere
(``rnd(v, s) = (v + 2**(s-1)) >> s``; ``div_round(v, n) = floor((2v + n) / (2n))``)::

    S      = sum x_i
    mu     = div_round(S << frac, n)                                   frac fractional bits
    d_i    = (x_i << frac) - mu
    L1: D  = sum |d_i|,   s = div_round(D, n),  sigma = rnd(s * C, c_bits) + eps,  C = round(c * 2**c_bits)
    L2: D  = sum d_i**2,  s = div_round(D, n),  sigma = isqrt(s) + eps
    range: D = max d_i - min d_i,  s = D,  sigma = rnd(s * Cr, c_bits) + eps,  Cr = round(C(n) * 2**c_bits)
    inv    = floor(2**recip_bits / sigma)
    xhat_i = rnd(d_i * inv, recip_bits - xhat_frac)                    xhat_frac fractional bits
    y_i    = sat(rnd(gamma * xhat_i, xhat_frac + gamma_frac - out_frac) + beta, out_width)

The arithmetic itself is written once, as a program over an operations backend
(:func:`l1bn.spec.reference.program.bn_forward_program`); this module runs it on numpy.
Per-element work is numpy int64, vectorized (no Python loop over elements); the per-channel
statistics after the sums are exact Python integers. ``cfg.widths`` bounds every int64 value.
Norms differ only in the dispersion (D, s, sigma), taken from the registry's rules
(``disp_rule``, ``sigma_rule`` of l1bn.spec.norms).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..config import BNConfig
from ..norms import div_round_array, isqrt_array
from .core import as_int64, int_range, like
from .program import NUMPY, bn_forward_program

__all__ = ["BNForwardResult", "bn_forward", "div_round", "isqrt", "check_forward_inputs"]


@dataclass(frozen=True)
class BNForwardResult:
    """All int64, in the caller's array type. Per channel ``(channels,)``: ``sum_x``, ``mu`` (frac
    fractional bits), ``disp_sum`` (sum |d| or sum d*d), ``s`` (its rounded mean), ``sigma`` (frac
    fractional bits), ``inv`` (``floor(2**recip_bits / sigma)``). Per element ``(channels, n)``:
    ``xhat`` (xhat_frac fractional bits) and ``y`` (out_frac fractional bits, saturated to
    out_width)."""

    y: object
    sum_x: object
    mu: object
    disp_sum: object
    s: object
    sigma: object
    inv: object
    xhat: object


def div_round(v, n: int):
    """``round(v / n)`` with ties toward +infinity: ``floor((2v + n) / (2n))``, exact."""
    return like(div_round_array(as_int64(v, "v"), n), v)


def isqrt(v):
    """``floor(sqrt(v))`` of a non-negative int64 array (< 2**62), exact."""
    return like(isqrt_array(as_int64(v, "v")), v)


def _typed(name, t):
    """numpy int64 view of an input: an int64 numpy array or torch tensor is required."""
    if "int64" not in str(getattr(t, "dtype", "")):
        raise ValueError(f"{name} must be an int64 array or tensor; got {type(t).__name__} "
                         f"{getattr(t, 'dtype', '')}".rstrip())
    return as_int64(t, name)


def check_forward_inputs(x, gamma, beta, cfg: BNConfig) -> None:
    """Raise ValueError on a wrong type, dtype, shape, or a value outside its declared width."""
    if not isinstance(cfg, BNConfig):
        raise ValueError(f"cfg={cfg!r} must be a BNConfig")
    arrays = {name: _typed(name, t) for name, t in (("x", x), ("gamma", gamma), ("beta", beta))}
    if arrays["x"].shape != (cfg.channels, cfg.n):
        raise ValueError(f"x must have shape (channels={cfg.channels}, n={cfg.n}); "
                         f"got {tuple(arrays['x'].shape)}")
    for name in ("gamma", "beta"):
        if arrays[name].shape != (cfg.channels,):
            raise ValueError(f"{name} must have shape ({cfg.channels},); got {tuple(arrays[name].shape)}")
    for name, bits in (("x", cfg.width), ("gamma", cfg.gamma_width), ("beta", cfg.beta_width)):
        t = arrays[name]
        lo, hi = int_range(bits)
        if t.size and (int(t.min()) < lo or int(t.max()) > hi):
            raise ValueError(f"{name} has values in {int(t.min())}..{int(t.max())}; "
                             f"a signed {bits}-bit {name} allows {lo}..{hi}")


def bn_forward(x, gamma, beta, cfg: BNConfig) -> BNForwardResult:
    """The integer training-mode forward of ``cfg.norm`` BN on a batch ``x`` of shape (channels, n).

    ``gamma`` is signed ``gamma_width`` bits with ``gamma_frac`` fractional bits, ``beta`` signed
    ``beta_width`` bits in output units (``out_frac`` fractional bits), both per channel. Inputs are
    int64 numpy arrays or torch tensors; the result fields have the type of ``x``.
    """
    check_forward_inputs(x, gamma, beta, cfg)
    xa, ga, ba = as_int64(x), as_int64(gamma), as_int64(beta)
    # the one definition of the arithmetic (spec/reference/program.py), on numpy int64: per
    # channel values are (channels, 1), sigma and s * C exact Python integers per channel
    v = bn_forward_program(NUMPY, cfg, xa, ga[:, None], ba[:, None])
    per_channel = {k: np.asarray(v[k]).reshape(cfg.channels).astype(np.int64)
                   for k in ("sum_x", "mu", "disp_sum", "s", "sigma", "inv")}
    out = dict(per_channel, y=v["y"], xhat=v["xhat"])
    return BNForwardResult(**{f.name: like(out[f.name], x) for f in fields(BNForwardResult)})
