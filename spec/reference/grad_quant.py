"""The quantizers of integer training (docs/arith/training.md, "Quantizers").

All scales are powers of two chosen per tensor and step from the largest magnitude, so a hardware
implementation needs a max-tree and a barrel shifter, never a multiplier:

* :func:`forward_weight`: forward weights from master weights, ``w = sat(rnd(M, s), wbits)`` with
  ``s = clog2(max|M|) - (wbits - 1)`` (the QAT rule of ``l1bn.sw.quant.weight_exp``);
* :func:`quantize_error`: an error (gradient between layers) normalized to ``bits``:
  ``q = sat(rnd(v, s), bits)``, ``s = bitlen(max|v|) - (bits - 1)`` (may be negative: an exact left
  shift), round half up;
* :func:`quantize_update`: a parameter gradient normalized to ``bits`` the same way, rounded half
  up or stochastically (``floor((v + r) / 2**s)``, ``r`` the low ``s`` bits of an LFSR word),
  then shifted into master LSBs.

``bitlen(m)`` is the bit length of ``m >= 0`` (0 for 0), ``clog2(m) = bitlen(m - 1)``.
"""

from __future__ import annotations

import numpy as np

from .core import int_range, rshift_round_array
from .lfsr import lfsr_draw

__all__ = ["bitlen", "forward_weight", "quantize_error", "quantize_update", "stochastic_shift"]


def bitlen(m: int) -> int:
    """Bits of the non-negative integer ``m`` (0 for 0)."""
    return int(m).bit_length()


def _maxabs(v: np.ndarray) -> int:
    return int(np.abs(v).max()) if v.size else 0


def forward_weight(master: np.ndarray, wbits: int) -> tuple[np.ndarray, int]:
    """``(w, s)``: ``w = sat(rnd(M, s), wbits)``, ``s = clog2(max|M|) - (wbits - 1)`` (0 when M is 0).

    The forward weight's exponent is ``master_frac - s``.
    """
    m = _maxabs(master)
    s = bitlen(m - 1) - (wbits - 1) if m > 0 else 0
    return np.clip(rshift_round_array(master, s), *int_range(wbits)), s


def quantize_error(v: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``(q, s)``: ``q = sat(rnd(v, s), bits)``, ``s = bitlen(max|v|) - (bits - 1)`` (0 for all-zero).

    The value ``v * 2**-e`` becomes ``q * 2**-(e - s)``.
    """
    m = _maxabs(v)
    s = bitlen(m) - (bits - 1) if m > 0 else 0
    return np.clip(rshift_round_array(v, s), *int_range(bits)), s


def stochastic_shift(v: np.ndarray, s: int, words: np.ndarray) -> np.ndarray:
    """``floor((v + r) / 2**s)`` with ``r`` the low ``s`` bits of each LFSR word (``s <= 32``), or
    ``r = word << (s - 32)`` (``s > 32``); ``v << -s`` for ``s <= 0`` (the words are unused)."""
    if s <= 0:
        return v << (-s)
    w = words.astype(np.int64).reshape(v.shape)
    r = (w & ((1 << s) - 1)) if s <= 32 else (w << (s - 32))
    return (v + r) >> s


def quantize_update(grad: np.ndarray, bits: int, ush: int, rounding: str,
                    lfsr: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """``(delta, s, lfsr)``: the master update of a parameter gradient ``grad`` (exact integers).

    ``s = bitlen(max|grad|) - (bits - 1)``; the gradient is rounded at ``s + max(0, -ush)`` (round
    half up, or stochastic with ``grad.size`` words of the LFSR bank, drawn whatever ``s`` is),
    saturated to ``bits`` and shifted left by ``max(0, ush)``: ``delta`` is ``lr * grad /
    2**bitlen(max|grad|)`` in master LSBs. The parameter then becomes ``sat(P - delta, master_bits)``.
    """
    m = _maxabs(grad)
    s = (bitlen(m) - (bits - 1) if m > 0 else 0) + max(0, -ush)
    if rounding == "stochastic":
        words, lfsr = lfsr_draw(lfsr, grad.size)
        q = stochastic_shift(grad, s, words)
    else:
        q = rshift_round_array(grad, s)
    q = np.clip(q, *int_range(bits))
    return q << max(0, ush), s, lfsr
