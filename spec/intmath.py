"""Pure-int arithmetic shared by the generators (no torch) and the reference (docs/arith/bn_train.md).

Everything here is plain Python ``int``: the Amaranth generators compute their constants with it at
elaboration time, and the tests use it as the naive model of the vectorized torch reference.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["C_SQRT_PI_2", "c_const", "range_scale", "range_const", "rnd_int", "div_round_int", "DivRound", "div_round_params",
           "isqrt_int", "recip_int"]

#: sqrt(pi / 2): for Gaussian data E|x - mu| * sqrt(pi/2) = sigma.
C_SQRT_PI_2 = 1.2533141373155003


def c_const(c_bits: int) -> int:
    """``round(sqrt(pi/2) * 2**c_bits)`` (half up): the L1 scaling constant in fixed point."""
    return int(C_SQRT_PI_2 * (1 << c_bits) + 0.5)


def range_scale(n: int) -> float:
    """Range BN's ``C(n)``: sigma is about ``C(n) * (max x - min x)`` for Gaussian data.

    ``0.5 * 0.35 * (1 + sqrt(pi * ln 4)) / sqrt(2 ln n)`` (Banner et al., NeurIPS 2018; the public
    RangeBN of quantized.pytorch, one chunk per channel), about ``0.54 / sqrt(2 ln n)``.
    """
    import math

    if n < 2:
        raise ValueError(f"n={n} must be >= 2 for range BN (ln n > 0)")
    return 0.5 * 0.35 * (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(2 * math.log(n))


def range_const(n: int, c_bits: int) -> int:
    """``round(C(n) * 2**c_bits)`` (half up, float64): range BN's constant in fixed point."""
    return int(range_scale(n) * (1 << c_bits) + 0.5)


def rnd_int(v: int, s: int) -> int:
    """Round half up shift: ``floor((v + 2**(s-1)) / 2**s)`` for s > 0, ``v << -s`` otherwise."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << (-s)


def div_round_int(x: int, n: int) -> int:
    """``round(x / n)``, ties toward +infinity: ``floor((2x + n) / (2n))`` (exact, any sign of x)."""
    return (2 * x + n) // (2 * n)


@dataclass(frozen=True)
class DivRound:
    """Constants that divide by a generation-time ``n`` with a constant add, multiply and shift.

    For every integer ``x`` in ``[lo, hi]``::

        div_round_int(x, n) == (((2 * x + offset) * mult) >> shift) - sub

    ``2x + offset`` is never negative and below ``2**(shift - clog2(2n))``, the range for which
    the rounded-up reciprocal ``mult = ceil(2**shift / (2n))`` gives the exact floor quotient
    (Granlund and Montgomery, PLDI 1994, theorem 4.2: the error ``mult*2n - 2**shift`` is below
    ``2n <= 2**clog2(2n)``). When ``2n`` is a power of two, ``mult`` is 1 (a plain shift).
    """

    n: int
    lo: int
    hi: int
    offset: int
    mult: int
    shift: int
    sub: int

    @property
    def z_bits(self) -> int:
        """Unsigned bits of ``2x + offset``."""
        return (2 * self.hi + self.offset).bit_length()

    def __call__(self, x: int) -> int:
        if not self.lo <= x <= self.hi:
            raise ValueError(f"x={x} is outside the divider's range {self.lo}..{self.hi}")
        return (((2 * x + self.offset) * self.mult) >> self.shift) - self.sub


def div_round_params(n: int, lo: int, hi: int) -> DivRound:
    """The :class:`DivRound` constants for dividing any ``x`` in ``[lo, hi]`` by ``n >= 1``."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if lo > hi:
        raise ValueError(f"empty range {lo}..{hi}")
    d = 2 * n
    # shift the numerator up by a multiple of d so it is never negative; subtract it afterwards
    sub = max(0, -((2 * lo + n) // d))
    offset = n + d * sub
    zmax = 2 * hi + offset
    if d & (d - 1) == 0:
        return DivRound(n, lo, hi, offset, 1, d.bit_length() - 1, sub)
    ell = (d - 1).bit_length()
    shift = max(zmax.bit_length(), 1) + ell
    mult = -((-(1 << shift)) // d)
    return DivRound(n, lo, hi, offset, mult, shift, sub)


def isqrt_int(v: int) -> int:
    """``floor(sqrt(v))`` for ``v >= 0`` (what the restoring square root computes)."""
    if v < 0:
        raise ValueError(f"isqrt of a negative value {v}")
    import math

    return math.isqrt(v)


def recip_int(sigma: int, recip_bits: int) -> int:
    """``floor(2**recip_bits / sigma)`` for ``sigma >= 1`` (what the restoring divider computes)."""
    if sigma < 1:
        raise ValueError(f"sigma={sigma} must be >= 1")
    return (1 << recip_bits) // sigma
