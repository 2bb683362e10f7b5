"""The requantizer of a graph node: an integer sum -> the next layer's activations.

Every node that makes a wide sum (a MAC's accumulator, a residual add, an average pool's window
sum) may end in a requantizer, and a ``requant`` node applies one to any tensor. Per output
channel ``c``, with integer constants fixed at export time::

    z = acc * mult[c] + bias[c]                                  exact, int64
    unsigned / signed output:
        y = clamp(round(z / 2**shift), lo, hi)
            round = half up    floor((z + 2**(shift-1)) / 2**shift)          (the MAC's requantizer)
                  = half even  ties go to the even neighbour (QONNX/Brevitas ``ROUND``)
            lo, hi = the output format's range (narrow ranges included); with ``relu``, lo = max(lo, 0)
    bipolar output:
        y = +1 if z >= 0 else -1                                      (shift is 0)

This is the folded BN of :mod:`l1bn.spec.reference.infer_bn` (round half up, ReLU, saturation;
:func:`from_folded` converts one, :func:`apply_requant` then computes the same integers as
:func:`~l1bn.spec.reference.infer_bn.apply_folded`) with three additions: signed narrow ranges,
half-even rounding and bipolar outputs.

:func:`fold_requant` turns a float per-channel affine map (a BN, a float scale, a TensorNorm, a
bias; the source's real-valued computation) into these constants. For unsigned and signed outputs
it rounds ``mult = a * 2**shift`` and ``bias = b * 2**shift`` half up with the largest shift whose
multipliers fit ``mult_bits``; when both are exact (a dyadic map: power-of-two scales, no BN), the
requantizer computes the real map exactly and only the final rounding remains. For bipolar
outputs it computes the exact integer threshold of each channel (``acc >= t`` or ``acc <= t``;
mult is +1, -1 or 0), so the sign is exact for the real map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import MAX_INTERMEDIATE_BITS, check_int, signed_bits
from .core import as_float64, as_int64, like, rshift_round
from .formats import Fmt
from .infer_bn import FoldedBN

__all__ = ["ROUNDINGS", "Requant", "rshift_half_even", "requantize_sum", "apply_requant", "from_folded",
           "to_folded", "fold_requant"]

ROUNDINGS = ("half_up", "half_even")


@dataclass(frozen=True)
class Requant:
    """Per-channel requantizer constants (module docstring).

    Attributes
    ----------
    mult, bias : numpy.ndarray
        int64 (C,), signed ``mult_bits`` / ``bias_bits`` wide.
    shift : int, 0..62
        Rounding right shift shared by all channels (0 for a bipolar output).
    mult_bits, bias_bits : int
        Declared signed widths of ``mult`` and ``bias``.
    out : Fmt
        Output format: unsigned, signed (narrow allowed) or bipolar.
    relu : bool
        Clamp below at 0. Always True for an unsigned output, False for a bipolar one.
    rounding : {"half_up", "half_even"}
    """

    mult: np.ndarray
    bias: np.ndarray
    shift: int
    mult_bits: int
    bias_bits: int
    out: Fmt
    relu: bool
    rounding: str = "half_up"

    def __post_init__(self):
        m, b = as_int64(self.mult, "mult"), as_int64(self.bias, "bias")
        if m.ndim != 1 or b.shape != m.shape:
            raise ValueError(f"requant mult {list(m.shape)} and bias {list(b.shape)} must be equal (C,) vectors")
        check_int("shift", self.shift, 0, 62)
        check_int("mult_bits", self.mult_bits, 2, 32)
        check_int("bias_bits", self.bias_bits, 1, MAX_INTERMEDIATE_BITS)
        if not isinstance(self.out, Fmt):
            raise ValueError(f"requant out={self.out!r} must be a Fmt")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"requant rounding={self.rounding!r} is not one of {ROUNDINGS}")
        if not isinstance(self.relu, bool):
            raise ValueError(f"requant relu={self.relu!r} must be True or False")
        if self.out.kind == "unsigned" and not self.relu:
            raise ValueError("an unsigned requantizer output clamps at 0: relu must be True")
        if self.out.kind == "bipolar" and (self.relu or self.shift):
            raise ValueError("a bipolar requantizer output is a sign: relu False and shift 0")
        for name, v, bits in (("mult", m, self.mult_bits), ("bias", b, self.bias_bits)):
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            if v.size and (int(v.min()) < lo or int(v.max()) > hi):
                raise ValueError(f"requant {name} values {int(v.min())}..{int(v.max())} exceed "
                                 f"{bits}-bit signed")

    @property
    def channels(self) -> int:
        return int(np.size(self.mult))

    @property
    def lo(self) -> int:
        return max(self.out.lo, 0) if self.relu else self.out.lo


def rshift_half_even(x, s: int):
    """``round(x / 2**s)`` with ties to even, in integers: ``(x + 2**(s-1) - 1 + bit_s(x)) >> s``
    (``bit_s`` = bit ``s`` of ``x``, the parity of ``floor(x / 2**s)``); ``x`` for ``s == 0``."""
    a = as_int64(x, "x")
    if s <= 0:
        return like(a << (-s) if s else a, x)
    return like((a + ((1 << (s - 1)) - 1) + ((a >> s) & 1)) >> s, x)


def requantize_sum(z, *, shift: int, out: Fmt, relu: bool, rounding: str = "half_up"):
    """The requantizer on ``z = acc * mult + bias`` (module docstring), int64 in, int64 out."""
    a = as_int64(z, "z")
    if out.kind == "bipolar":
        return like(np.where(a >= 0, 1, -1).astype(np.int64), z)
    y = as_int64(rshift_round(a, shift) if rounding == "half_up" else rshift_half_even(a, shift))
    lo = max(out.lo, 0) if relu else out.lo
    return like(np.clip(y, lo, out.hi), z)


def apply_requant(acc, rq: Requant, channel_dim: int = 1):
    """``requantize_sum(acc * mult + bias)`` with the constants broadcast along ``channel_dim``."""
    a = as_int64(acc, "acc")
    if a.shape[channel_dim] != rq.channels:
        raise ValueError(f"the sum has {a.shape[channel_dim]} channels along dim {channel_dim}; "
                         f"the requantizer has {rq.channels}")
    shape = [1] * a.ndim
    shape[channel_dim] = rq.channels
    z = a * as_int64(rq.mult).reshape(shape) + as_int64(rq.bias).reshape(shape)
    return like(requantize_sum(z, shift=rq.shift, out=rq.out, relu=rq.relu, rounding=rq.rounding), acc)


def from_folded(bn: FoldedBN) -> Requant:
    """A chain layer's folded BN as a :class:`Requant` (same integers: half up, unsigned with
    ReLU, signed without)."""
    out = Fmt(kind="unsigned" if bn.relu else "signed", bits=int(bn.out_bits))
    return Requant(mult=as_int64(bn.mult, "mult").copy(), bias=as_int64(bn.bias, "bias").copy(),
                   shift=int(bn.shift), mult_bits=int(bn.mult_bits), bias_bits=int(bn.bias_bits), out=out,
                   relu=bool(bn.relu))


def to_folded(rq: Requant) -> FoldedBN | None:
    """The :class:`FoldedBN` a chain layer holds, or None when ``rq`` needs more than it can say
    (half-even rounding, a narrow or bipolar output, or a signed output with ReLU)."""
    if rq.rounding != "half_up" or rq.out.narrow or rq.out.kind == "bipolar" or \
            (rq.out.kind == "signed" and rq.relu) or rq.out.bits < 2:
        return None
    return FoldedBN(mult=rq.mult, bias=rq.bias, shift=rq.shift, mult_bits=rq.mult_bits, bias_bits=rq.bias_bits,
                    out_bits=rq.out.bits, relu=rq.out.kind == "unsigned")


def _half_up(v: np.ndarray) -> np.ndarray:
    return np.floor(v + 0.5).astype(np.int64)


def _bias_bits(bias: np.ndarray) -> int:
    return signed_bits(min(int(bias.min()), 0), max(int(bias.max()), 0)) if bias.size else 1


def fold_requant(a, b, *, acc_lo: int, acc_hi: int, out: Fmt, relu: bool, rounding: str = "half_up",
                 mult_bits: int = 16, max_shift: int = 31) -> tuple[Requant, bool]:
    """Integer requantizer constants for ``y = Q(a[c] * acc + b[c])`` (module docstring).

    Parameters
    ----------
    a, b : array (C,)
        Float per-channel map from the integer sum ``acc`` to the output in output LSBs (for
        a bipolar output any positive rescaling of both gives the same result).
    acc_lo, acc_hi : int
        The range of the sum (bounds the intermediate width and a bipolar threshold).
    out, relu, rounding
        As :class:`Requant`.
    mult_bits : int, 2..32
    max_shift : int, 0..62

    Returns
    -------
    (Requant, exact)
        ``exact``: the constants represent ``a`` and ``b`` exactly (then only the final rounding
        or the sign remains, so the result equals the real map's).
    """
    check_int("mult_bits", mult_bits, 2, 32)
    check_int("max_shift", max_shift, 0, 62)
    af, bf = as_float64(a), as_float64(b)
    if af.shape != bf.shape:
        raise ValueError(f"scale {list(af.shape)} and offset {list(bf.shape)} shapes differ")
    if not (bool(np.isfinite(af).all()) and bool(np.isfinite(bf).all())):
        raise ValueError("the affine map before the quantizer must be finite")
    acc_bits = signed_bits(min(acc_lo, 0), max(acc_hi, 0))
    if out.kind == "bipolar":
        return _fold_threshold(af, bf, acc_lo, acc_hi, out, acc_bits), True
    if acc_bits + mult_bits + 1 > MAX_INTERMEDIATE_BITS:
        raise ValueError(f"{acc_bits}-bit sums times {mult_bits}-bit multipliers exceed the "
                         f"{MAX_INTERMEDIATE_BITS}-bit range of the reference")
    mlo, mhi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    shift = None
    for s in range(max_shift, -1, -1):   # a handful of candidates, once per node at export time
        m = _half_up(af * 2.0 ** s)
        if af.size == 0 or (int(m.min()) >= mlo and int(m.max()) <= mhi):
            shift = s
            break
    if shift is None:
        raise ValueError(f"scale up to {float(np.abs(af).max()):.4g} output LSBs per input LSB does not fit a "
                         f"{mult_bits}-bit multiplier even with shift 0; raise mult_bits")
    mult, bias = _half_up(af * 2.0 ** shift), _half_up(bf * 2.0 ** shift)
    bb = _bias_bits(bias)
    if bb > MAX_INTERMEDIATE_BITS - 1:
        raise ValueError(f"the offset needs {bb} bits; at most {MAX_INTERMEDIATE_BITS - 1}")
    exact = bool(np.array_equal(mult, af * 2.0 ** shift) and np.array_equal(bias, bf * 2.0 ** shift))
    return Requant(mult=mult, bias=bias, shift=shift, mult_bits=mult_bits, bias_bits=bb, out=out, relu=relu,
                   rounding=rounding), exact


def _fold_threshold(a: np.ndarray, b: np.ndarray, acc_lo: int, acc_hi: int, out: Fmt, acc_bits: int) -> Requant:
    """Bipolar output: ``+1`` iff ``a * acc + b >= 0``, as ``mult * acc + bias >= 0`` with
    mult in {-1, 0, +1} and an integer threshold clamped to the sum's range (so it stays small)."""
    mult = np.sign(a).astype(np.int64)
    bias = np.zeros(a.shape, dtype=np.int64)
    pos, neg, zero = a > 0, a < 0, a == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -b / np.where(zero, 1.0, a)
    # a > 0: acc >= ceil(t)  ->  acc - ceil(t) >= 0;   a < 0: acc <= floor(t)  ->  floor(t) - acc >= 0
    lo, hi = float(acc_lo - 1), float(acc_hi + 1)
    bias[pos] = -np.clip(np.ceil(t[pos]), lo, hi).astype(np.int64)
    bias[neg] = np.clip(np.floor(t[neg]), lo, hi).astype(np.int64)
    bias[zero] = np.where(b[zero] >= 0, 0, -1)
    if acc_bits + 2 > MAX_INTERMEDIATE_BITS:
        raise ValueError(f"{acc_bits}-bit sums exceed the reference's range")
    return Requant(mult=mult, bias=bias, shift=0, mult_bits=2, bias_bits=_bias_bits(bias), out=out, relu=False)

