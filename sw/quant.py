"""Quantization-aware training: power-of-two fake quantizers with straight-through gradients.

Every quantized tensor is ``v = q * 2**-exp`` with an integer ``q`` in a ``bits``-wide range, so the
hardware rescales by shifts only. Rounding is the project-wide **round half up**,
``q = clamp(floor(v * 2**exp + 0.5), lo, hi)`` (the rule of ``l1bn.spec.reference.core.rshift_round``),
so the integer export reproduces the fake-quantized forward exactly.

Gradients are straight-through inside the representable range and zero where the clamp saturates
(``v * 2**exp`` outside ``[lo - 1/2, hi + 1/2)``): a clipped value does not respond to its input.

Exponents:

* weights, per tensor: ``w_exp = (wbits - 1) - ceil(log2(max|w|))`` so that ``max|w|`` maps into
  ``(2**(wbits-2), 2**(wbits-1)]`` (WAGE-style: the scale is the power of two that covers the
  largest weight; the single top value ``2**(wbits-1)`` saturates to ``2**(wbits-1) - 1``);
* activations after BN + ReLU: unsigned ``abits`` with a fixed clip range ``[0, 2**a_range_log2)``,
  ``a_exp = abits - a_range_log2``. The BN in front learns the scale (gamma), so a fixed range is
  enough; ``a_range_log2`` defaults to 2 (clip at 4 - LSB: BN outputs are ~N(beta, gamma)), 1 for
  2-bit activations (values 0, 0.5, 1, 1.5: a step of 1 is too coarse for unit-scale data);
* network input (pixels / 16 in [0, 1]): unsigned ``abits`` with ``exp = abits``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from l1bn.spec.config import check_int

__all__ = ["QuantConfig", "fake_quant", "weight_exp", "quant_int"]


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """Bit widths of a quantization-aware model.

    Attributes
    ----------
    wbits : int, 2..8
        Signed weight bits (per-tensor power-of-two scale).
    abits : int, 2..8
        Unsigned activation bits after ReLU (and of the network input).
    quantize_bn : bool
        Also fake-quantize the BN output (before ReLU) to signed ``abits + 1`` bits on the
        activation grid ``2**-a_exp``: what a hardware BN unit emits. ``relu`` of that grid equals
        the unsigned ``abits`` activation grid, so the exported integer network is unchanged.
    a_range_log2 : int or None, 0..4
        Activations are clipped to ``[0, 2**a_range_log2)``; None = 1 for ``abits == 2``, else 2.
    """

    wbits: int = 8
    abits: int = 8
    quantize_bn: bool = False
    a_range_log2: int | None = None

    def __post_init__(self):
        check_int("wbits", self.wbits, 2, 8)
        check_int("abits", self.abits, 2, 8)
        if not isinstance(self.quantize_bn, bool):
            raise ValueError(f"quantize_bn={self.quantize_bn!r} must be a bool")
        if self.a_range_log2 is not None:
            check_int("a_range_log2", self.a_range_log2, 0, 4)
            check_int("abits - a_range_log2", self.abits - self.a_range_log2, 0, 8)

    @property
    def a_exp(self) -> int:
        """Exponent of post-ReLU activations: value = integer * 2**-a_exp."""
        r = self.a_range_log2 if self.a_range_log2 is not None else (1 if self.abits == 2 else 2)
        return self.abits - r

    @property
    def in_exp(self) -> int:
        """Exponent of the network input (pixels in [0, 1])."""
        return self.abits

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"QuantConfig: unknown field(s) {sorted(unknown)}; allowed {sorted(names)}")
        return cls(**d)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, exp: int, lo: int, hi: int):
        v = x * (2.0 ** exp)
        ctx.save_for_backward((v >= lo - 0.5) & (v < hi + 0.5))
        return torch.clamp(torch.floor(v + 0.5), lo, hi) * (2.0 ** -exp)

    @staticmethod
    def backward(ctx, dy):
        (inside,) = ctx.saved_tensors
        return dy * inside, None, None, None


def fake_quant(x: torch.Tensor, exp: int, bits: int, signed: bool) -> torch.Tensor:
    """``clamp(floor(x * 2**exp + 0.5), lo, hi) * 2**-exp`` with a clipped straight-through gradient.

    ``lo, hi`` is the ``bits``-wide signed or unsigned integer range. Scaling by a power of two is
    exact in floating point, so the result is exactly ``quant_int(...) * 2**-exp``.
    """
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return _FakeQuant.apply(x, int(exp), lo, hi)


def quant_int(x: torch.Tensor, exp: int, bits: int, signed: bool) -> torch.Tensor:
    """The integers ``q`` of :func:`fake_quant` as int64 (same rounding and saturation)."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return torch.clamp(torch.floor(x.detach().double() * (2.0 ** exp) + 0.5), lo, hi).to(torch.int64)


def weight_exp(w: torch.Tensor, bits: int) -> int:
    """Per-tensor weight exponent ``(bits - 1) - ceil(log2(max|w|))`` (0 for an all-zero tensor)."""
    m = float(w.detach().abs().max()) if w.numel() else 0.0
    if not math.isfinite(m):
        raise ValueError(f"weights are not finite (max|w| = {m})")
    if m == 0.0:
        return 0
    return (bits - 1) - math.ceil(math.log2(m))
