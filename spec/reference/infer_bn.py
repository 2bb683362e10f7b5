"""Inference batch norm folded into one per-channel integer multiplier, a bias and one shift.

After training, a BN layer is a per-channel affine map ``y = A_c * x + B_c`` (running statistics,
gamma, beta and eps are constants). Its input is a MAC accumulator ``acc`` with scale
``2**-acc_exp`` (``acc_exp = w_exp + a_exp``) and its output is an activation with scale
``2**-out_exp``. Folding the scales into the affine map gives, in output LSBs,

    t_c(acc) = acc * gamma_c / sigma_c * 2**(out_exp - acc_exp)
               + (beta_c - gamma_c * mu_c / sigma_c) * 2**out_exp

which the hardware evaluates with integer constants chosen at export time (docs/arith/inference_bn.md):

    mult_c = floor(a_c * 2**shift + 1/2)      signed, mult_bits wide
    bias_c = floor(b_c * 2**shift + 1/2)      signed, in units of 2**-shift output LSBs
    y      = requantize(acc * mult_c + bias_c, shift, out_bits, relu)

``requantize`` is the MAC's requantizer (round half up shift, ReLU, saturation), so the accelerator
runs one multiply by a per-channel constant, one add, one rounding shift, a ReLU and a clamp.
The integer part (:func:`apply_folded`) is the spec; the constants come from floats once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import MAX_INTERMEDIATE_BITS, check_int, signed_bits
from ..intmath import C_SQRT_PI_2
from ..norms import norm_spec
from .core import as_float64, as_int64, int_range, like
from .mac import requantize_array

__all__ = ["L1_C", "FoldedBN", "bn_affine", "fold_affine", "fold_bn", "apply_folded",
           "folded_pre_round", "signed_bits"]

# L1BN: sigma = c * s + eps, c = sqrt(pi/2) (the mean absolute deviation of a Gaussian times c is its
# standard deviation).
L1_C = C_SQRT_PI_2


@dataclass(frozen=True)
class FoldedBN:
    """Per-channel integer constants of a folded inference BN (plus requantizer).

    Attributes
    ----------
    mult : array
        int64 (C,) (numpy, or torch when folded from torch values), signed ``mult_bits``-bit multipliers.
    bias : array
        int64 (C,), signed ``bias_bits``-bit offsets in units of ``2**-shift`` output LSBs.
    shift : int
        Rounding right shift shared by all channels (round half up).
    mult_bits, bias_bits : int
        Declared signed widths of ``mult`` and ``bias``.
    out_bits : int
        Output bits: unsigned with ``relu``, signed without.
    relu : bool
        Clamp negatives to 0 before saturating.
    """

    mult: object
    bias: object
    shift: int
    mult_bits: int
    bias_bits: int
    out_bits: int
    relu: bool

    @property
    def channels(self) -> int:
        return int(np.size(as_int64(self.mult, "mult")))


def bn_affine(*, norm: str, mean, disp, gamma, beta, eps: float):
    """Float64 per-channel ``(scale, offset)`` of an inference BN: ``y = scale * x + offset``.

    ``disp`` is the running dispersion the layer keeps (the norm's ``float_sigma`` rule in
    :mod:`l1bn.spec.norms`): the mean absolute deviation ``s`` for ``norm="l1"``
    (``sigma = sqrt(pi/2) * s + eps``) or the variance for ``norm="l2"`` (``sigma = sqrt(var + eps)``).
    The result has the array type of ``mean``.
    """
    rule = norm_spec(norm)
    m, d, g, b = (as_float64(t) for t in (mean, disp, gamma, beta))
    if not (m.shape == d.shape == g.shape == b.shape):
        raise ValueError(f"BN parameter shapes differ: mean {tuple(m.shape)}, disp {tuple(d.shape)}, "
                         f"gamma {tuple(g.shape)}, beta {tuple(b.shape)}")
    if bool((d < 0).any()):
        raise ValueError("BN running dispersion must be >= 0")
    sigma = rule.float_sigma(d, eps)
    if bool((sigma <= 0).any()):
        raise ValueError(f"BN sigma must be > 0 (eps={eps})")
    scale = g / sigma
    return like(scale, mean), like(b - scale * m, mean)


def _round_half_up(v: np.ndarray) -> np.ndarray:
    return np.floor(v + 0.5).astype(np.int64)


def fold_affine(scale, offset, *, acc_exp: int, out_exp: int, acc_bits: int, out_bits: int,
                relu: bool = True, mult_bits: int = 16, max_shift: int = 31) -> FoldedBN:
    """Fold ``y = scale * x + offset`` (float, per channel) into integer constants.

    Parameters
    ----------
    scale, offset : tensor (C,)
        The float affine map applied to the real-valued accumulator ``acc * 2**-acc_exp``.
    acc_exp : int
        The accumulator holds ``x * 2**acc_exp`` (``w_exp + a_exp``).
    out_exp : int
        The output integer holds ``y * 2**out_exp``.
    acc_bits : int, 1..48
        Signed width of the accumulator (bounds the error and the product width).
    out_bits : int, 1..32
        Output width (unsigned with ``relu``).
    mult_bits : int, 2..32
        Signed width of the multiplier. The shift is the largest one in ``0..max_shift`` whose
        multipliers all fit (more shift = more precision).
    max_shift : int, 0..62
    """
    check_int("acc_bits", acc_bits, 1, 48)
    check_int("out_bits", out_bits, 1, 32)
    check_int("mult_bits", mult_bits, 2, 32)
    check_int("max_shift", max_shift, 0, 62)
    if acc_bits + mult_bits + 1 > MAX_INTERMEDIATE_BITS:
        raise ValueError(f"acc_bits={acc_bits} + mult_bits={mult_bits} exceed the "
                         f"{MAX_INTERMEDIATE_BITS}-bit range of the reference")
    a = as_float64(scale) * 2.0 ** (out_exp - acc_exp)
    b = as_float64(offset) * 2.0 ** out_exp
    if a.shape != b.shape:
        raise ValueError(f"scale {tuple(a.shape)} and offset {tuple(b.shape)} shapes differ")
    if not (bool(np.isfinite(a).all()) and bool(np.isfinite(b).all())):
        raise ValueError("BN scale/offset must be finite")
    mlo, mhi = int_range(mult_bits, True)
    shift = None
    for s in range(max_shift, -1, -1):  # a handful of candidates, once per layer at export time
        m = _round_half_up(a * 2.0 ** s)
        if a.size == 0 or (int(m.min()) >= mlo and int(m.max()) <= mhi):
            shift = s
            break
    if shift is None:
        raise ValueError(f"BN scale up to {float(np.abs(a).max()):.4g} output LSBs per accumulator LSB "
                         f"does not fit a {mult_bits}-bit multiplier even with shift 0; raise mult_bits")
    mult = _round_half_up(a * 2.0 ** shift)
    bias = _round_half_up(b * 2.0 ** shift)
    blo = int(bias.min()) if bias.size else 0
    bhi = int(bias.max()) if bias.size else 0
    bias_bits = signed_bits(min(blo, 0), max(bhi, 0))
    if bias_bits > MAX_INTERMEDIATE_BITS:
        raise ValueError(f"BN offset needs {bias_bits} bits; at most {MAX_INTERMEDIATE_BITS}")
    return FoldedBN(mult=like(mult, scale), bias=like(bias, scale), shift=shift, mult_bits=mult_bits, bias_bits=bias_bits,
                    out_bits=out_bits, relu=relu)


def fold_bn(*, norm: str, mean, disp, gamma, beta, eps: float, acc_exp: int, out_exp: int,
            acc_bits: int, out_bits: int, relu: bool = True, mult_bits: int = 16,
            max_shift: int = 31) -> FoldedBN:
    """:func:`bn_affine` then :func:`fold_affine`."""
    scale, offset = bn_affine(norm=norm, mean=mean, disp=disp, gamma=gamma, beta=beta, eps=eps)
    return fold_affine(scale, offset, acc_exp=acc_exp, out_exp=out_exp, acc_bits=acc_bits,
                       out_bits=out_bits, relu=relu, mult_bits=mult_bits, max_shift=max_shift)


def _pre_round(acc: np.ndarray, f: FoldedBN, channel_dim: int) -> np.ndarray:
    shape = [1] * acc.ndim
    shape[channel_dim] = f.channels
    return acc * as_int64(f.mult, "mult").reshape(shape) + as_int64(f.bias, "bias").reshape(shape)


def folded_pre_round(acc, f: FoldedBN, channel_dim: int = 1):
    """``acc * mult + bias`` (int64) with the per-channel constants broadcast along ``channel_dim``."""
    return like(_pre_round(as_int64(acc, "acc"), f, channel_dim), acc)


def apply_folded(acc, f: FoldedBN, channel_dim: int = 1):
    """The folded BN on integer accumulators: ``requantize(acc * mult + bias, shift, out_bits, relu)``.

    ``acc`` is int64 with channels along ``channel_dim``; the result has the same shape and type.
    """
    a = as_int64(acc, "acc")
    if a.shape[channel_dim] != f.channels:
        raise ValueError(f"accumulator has {a.shape[channel_dim]} channels along dim {channel_dim}; "
                         f"the folded BN has {f.channels}")
    return like(requantize_array(_pre_round(a, f, channel_dim), f.shift, f.out_bits, f.relu), acc)
