"""Reference of the low-bit MAC and its output requantizer (docs/arithmetic.md, MAC section).

Values are the *numbers* the hardware multiplies (for 1-bit signed weights: -1 and +1); the
hardware's bit encoding of them is the generator's business (see ``encode_weights``).
"""

from __future__ import annotations

import numpy as np

from ..config import MACConfig
from .core import as_int64, like

__all__ = ["weight_range", "act_range", "product_bits", "acc_bits", "check_operands",
           "matmul", "requantize", "requantize_array", "mac_tile", "encode_weights", "decode_weights",
           "encode_activations", "xnor_popcount"]


def weight_range(cfg: MACConfig) -> tuple[int, int]:
    """Values a weight may take. 1-bit signed weights are binary: -1 or +1."""
    return cfg.weight_range


def act_range(cfg: MACConfig) -> tuple[int, int]:
    """Values an activation may take (1-bit signed activations are -1 or 0)."""
    return cfg.act_range


def product_bits(cfg: MACConfig) -> int:
    """Signed bits that hold any product w * a exactly (``MACConfig.product_bits``)."""
    return cfg.product_bits


def acc_bits(cfg: MACConfig) -> int:
    """Signed accumulator bits for ``cfg.k`` products: it cannot overflow (``MACConfig.acc_bits``)."""
    return cfg.acc_bits


def check_operands(w, a, cfg: MACConfig) -> None:
    """Raise ``ValueError`` when an operand is outside its declared range or K is too long."""
    w, a = as_int64(w, "w"), as_int64(a, "a")
    wlo, whi = weight_range(cfg)
    alo, ahi = act_range(cfg)
    if w.size and (int(w.min()) < wlo or int(w.max()) > whi):
        raise ValueError(f"weights out of range {wlo}..{whi} for wbits={cfg.wbits}, signed_w={cfg.signed_w}")
    if cfg.wbits == 1 and cfg.signed_w and bool((w == 0).any()):
        raise ValueError("1-bit signed (binary) weights must be -1 or +1, not 0")
    if a.size and (int(a.min()) < alo or int(a.max()) > ahi):
        raise ValueError(f"activations out of range {alo}..{ahi} for abits={cfg.abits}, signed_a={cfg.signed_a}")
    if cfg.bipolar_a and bool((a == 0).any()):
        raise ValueError("bipolar activations must be -1 or +1, not 0")
    if w.shape[-1] > cfg.k:
        raise ValueError(f"reduction length {w.shape[-1]} exceeds k={cfg.k}")


def matmul(w, a):
    """Exact integer product ``w @ a`` in int64 (w: M x K, a: K x N), in the array type of ``w``.

    numpy's int64 matmul does not use BLAS and is slow; so when ``K * max|w| * max|a| < 2**53``
    the product runs as a float64 BLAS matmul instead. That is exact: every partial sum, in any
    order BLAS adds, is an integer of magnitude at most ``K * max|w| * max|a|``, which float64
    represents exactly (53-bit significand), and so is every product. Otherwise int64.
    """
    return like(_matmul(as_int64(w, "w"), as_int64(a, "a")), w)


def _max_abs(x: np.ndarray) -> int:
    return max(-int(x.min()), int(x.max())) if x.size else 0


def _matmul(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    if w.shape[-1] * _max_abs(w) * _max_abs(a) < 1 << 53:
        return (w.astype(np.float64) @ a.astype(np.float64)).astype(np.int64)
    return w @ a


def requantize_array(acc: np.ndarray, shift: int, out_bits: int, relu: bool) -> np.ndarray:
    # the one definition: spec/reference/program.py, run on numpy
    from .program import NUMPY, requantize_program

    return requantize_program(NUMPY, acc, shift=shift, out_bits=out_bits, relu=relu)


def requantize(acc, *, shift: int, out_bits: int, relu: bool):
    """Output requantizer: round-half-up arithmetic shift, optional ReLU, then saturation.

    With ``relu`` the result is unsigned ``out_bits`` (0 .. 2**out_bits - 1); without it, signed.
    """
    return like(requantize_array(as_int64(acc, "acc"), shift, out_bits, relu), acc)


def mac_tile(w, a, cfg: MACConfig):
    """What the array outputs for one (M x K) by (K x N) tile: the accumulator, or requantized."""
    check_operands(w, a, cfg)
    if cfg.xnor:        # the XNOR array's own arithmetic; equal to w @ a (tests check it)
        acc = xnor_popcount(encode_weights(w, cfg), encode_activations(a, cfg))
    else:
        acc = as_int64(w) @ as_int64(a)
    if cfg.requant:
        acc = requantize_array(acc, cfg.shift, cfg.out_bits, cfg.relu)
    return like(acc, w)


def encode_weights(w, cfg: MACConfig):
    """Weight values to the raw bit patterns the hardware stores (two's complement; binary: +1 -> 0, -1 -> 1)."""
    wa = as_int64(w, "w")
    if cfg.wbits == 1 and cfg.signed_w:
        return like((wa < 0).astype(np.int64), w)
    return like(wa & ((1 << cfg.wbits) - 1), w)


def decode_weights(bits, cfg: MACConfig):
    """Inverse of :func:`encode_weights`."""
    b = as_int64(bits, "bits")
    if cfg.wbits == 1 and cfg.signed_w:
        return like(1 - 2 * b, bits)
    if cfg.signed_w:
        return like(np.where(b >= (1 << (cfg.wbits - 1)), b - (1 << cfg.wbits), b), bits)
    return like(b, bits)


def encode_activations(a, cfg: MACConfig):
    """Activation values to what the array's ``a`` field carries: bipolar codes (+1 -> 0,
    -1 -> 1) for ``bipolar_a``, the values themselves otherwise (packed as two's complement or
    unsigned by the field's shape)."""
    aa = as_int64(a, "a")
    return like((aa < 0).astype(np.int64), a) if cfg.bipolar_a else like(aa, a)


def xnor_popcount(w_codes, a_codes):
    """The XNOR-popcount dot product of 1-bit codes (0 = +1, 1 = -1): ``2*m - K`` where ``m``
    counts the K-steps whose weight and activation codes are equal (XNOR = 1, product +1).

    ``w_codes``: M x K, ``a_codes``: K x N, each 0 or 1. Equals ``w @ a`` of the decoded
    {-1, +1} values; this is what the ``cfg.xnor`` array computes (one ``K.bit_length()``-bit
    counter per PE, the sign restored on the way out).
    """
    wc, ac = as_int64(w_codes, "w_codes"), as_int64(a_codes, "a_codes")
    for name, x in (("w_codes", wc), ("a_codes", ac)):
        if x.size and (int(x.min()) < 0 or int(x.max()) > 1):
            raise ValueError(f"{name} must be 0 or 1 (the bipolar code)")
    if wc.shape[-1] != ac.shape[0]:
        raise ValueError(f"reduction lengths differ: w_codes K={wc.shape[-1]}, a_codes K={ac.shape[0]}")
    # matches = #(w=0, a=0) + #(w=1, a=1)
    m = _matmul(1 - wc, 1 - ac) + _matmul(wc, ac)
    return like(2 * m - wc.shape[-1], w_codes)
