"""Reference of the low-bit MAC and its output requantizer (docs/arithmetic.md, MAC section).

Values are the *numbers* the hardware multiplies (for 1-bit signed weights: -1 and +1); the
hardware's bit encoding of them is the generator's business (see ``encode_weights``).
"""

from __future__ import annotations

import torch

from ..config import MACConfig
from .core import rshift_round, saturate

__all__ = ["weight_range", "act_range", "product_bits", "acc_bits", "check_operands",
           "matmul", "requantize", "mac_tile", "encode_weights", "decode_weights"]


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


def check_operands(w: torch.Tensor, a: torch.Tensor, cfg: MACConfig) -> None:
    """Raise ``ValueError`` when an operand is outside its declared range or K is too long."""
    wlo, whi = weight_range(cfg)
    alo, ahi = act_range(cfg)
    if w.numel() and (int(w.min()) < wlo or int(w.max()) > whi):
        raise ValueError(f"weights out of range {wlo}..{whi} for wbits={cfg.wbits}, signed_w={cfg.signed_w}")
    if cfg.wbits == 1 and cfg.signed_w and bool((w == 0).any()):
        raise ValueError("1-bit signed (binary) weights must be -1 or +1, not 0")
    if a.numel() and (int(a.min()) < alo or int(a.max()) > ahi):
        raise ValueError(f"activations out of range {alo}..{ahi} for abits={cfg.abits}, signed_a={cfg.signed_a}")
    if w.shape[-1] > cfg.k:
        raise ValueError(f"reduction length {w.shape[-1]} exceeds k={cfg.k}")


def matmul(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Exact integer product ``w @ a`` in int64 (w: M x K, a: K x N)."""
    return torch.matmul(w.to(torch.int64), a.to(torch.int64))


def requantize(acc: torch.Tensor, *, shift: int, out_bits: int, relu: bool) -> torch.Tensor:
    """Output requantizer: round-half-up arithmetic shift, optional ReLU, then saturation.

    With ``relu`` the result is unsigned ``out_bits`` (0 .. 2**out_bits - 1); without it, signed.
    """
    y = rshift_round(acc, shift)
    if relu:
        return saturate(y.clamp_min(0), out_bits, signed=False)
    return saturate(y, out_bits, signed=True)


def mac_tile(w: torch.Tensor, a: torch.Tensor, cfg: MACConfig) -> torch.Tensor:
    """What the array outputs for one (M x K) by (K x N) tile: the accumulator, or requantized."""
    check_operands(w, a, cfg)
    acc = matmul(w, a)
    if cfg.requant:
        return requantize(acc, shift=cfg.shift, out_bits=cfg.out_bits, relu=cfg.relu)
    return acc


def encode_weights(w: torch.Tensor, cfg: MACConfig) -> torch.Tensor:
    """Weight values to the raw bit patterns the hardware stores (two's complement; binary: +1 -> 0, -1 -> 1)."""
    if cfg.wbits == 1 and cfg.signed_w:
        return (w < 0).to(torch.int64)
    return w.to(torch.int64) & ((1 << cfg.wbits) - 1)


def decode_weights(bits: torch.Tensor, cfg: MACConfig) -> torch.Tensor:
    """Inverse of :func:`encode_weights`."""
    bits = bits.to(torch.int64)
    if cfg.wbits == 1 and cfg.signed_w:
        return 1 - 2 * bits
    if cfg.signed_w:
        return torch.where(bits >= (1 << (cfg.wbits - 1)), bits - (1 << cfg.wbits), bits)
    return bits


