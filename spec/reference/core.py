"""Integer primitives shared by every stage of the reference (docs/arithmetic.md, section 1).

Rounding is **round half up** (toward +inf on ties) everywhere: ``floor(x / 2**s + 1/2)``. In
hardware that is one constant add before an arithmetic shift, with no dependence on the sign;
round-half-away-from-zero would need a sign-dependent add, and half-to-even a sticky-bit check.
The float quantizers in training use the same rule (``floor(v + 0.5)``) so QAT and integers agree.
"""

from __future__ import annotations

import torch

__all__ = ["int_range", "saturate", "rshift_round", "recip_const", "div_const"]


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """Smallest and largest value of a ``bits``-wide integer."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def saturate(x: torch.Tensor, bits: int, signed: bool = True) -> torch.Tensor:
    """Clamp ``x`` into the range of a ``bits``-wide integer."""
    lo, hi = int_range(bits, signed)
    return x.clamp(lo, hi)


def rshift_round(x: torch.Tensor, s: int) -> torch.Tensor:
    """``floor((x + 2**(s-1)) / 2**s)`` for s > 0 (round half up); ``x << -s`` for s <= 0."""
    if s > 0:
        return (x + (1 << (s - 1))) >> s
    if s < 0:
        return x << (-s)
    return x


def recip_const(n: int, k: int) -> int:
    """The generation-time reciprocal of a known divisor: ``round(2**k / n)`` (half up)."""
    return ((1 << (k + 1)) // n + 1) >> 1


def div_const(x: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Division by a constant ``n`` known at generation time, as the hardware does it.

    ``(x * recip_const(n, k) + 2**(k-1)) >> k``: one constant multiply and a rounding shift. It is
    the *definition* of the quotient (it equals ``round(x / n)`` when ``k`` is large enough for the
    range of ``x``; the spec does not rely on that).
    """
    return rshift_round(x * recip_const(n, k), k)
