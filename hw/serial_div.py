"""A serial floor divider by a small unsigned integer: ``floor(a / c)`` for a signed ``a`` and an
unsigned ``c >= 1``, one quotient bit per cycle (restoring division of ``|a|``, then the sign).

Used where a per-channel value is divided by a data-dependent count once per channel (range BN's
backward divides ``C * H`` by the number of elements equal to the max, and to the min), so a few
cycles per channel cost less than a divider per element or an unrolled array.
"""

from __future__ import annotations

from amaranth import Cat, Mux, Signal, signed, unsigned

__all__ = ["SerialFloorDiv"]


class SerialFloorDiv:
    """``floor(a / c)`` in ``bits + 1`` cycles after :meth:`start` (registers of module ``m``).

    Parameters
    ----------
    m : Module
        The module the registers and the always-on iteration are added to.
    bits : int
        Unsigned bits of ``|a|`` (the quotient's magnitude bits): ``|a| < 2**bits``.
    divisor : Value
        ``c``, unsigned, >= 1; it must hold its value from :meth:`start` until the result is read.
    name : str
        Prefix of the register names.

    Latency: :meth:`start` (a sync assignment, in the caller's condition) loads ``|a|``; the next
    ``bits`` cycles each make one quotient bit; one more cycle applies the sign, so
    :attr:`result` (``signed(bits + 1)``) is valid ``bits + 1`` cycles after the start edge and
    holds until the next start.
    """

    def __init__(self, m, *, bits: int, divisor, name: str = "div"):
        self.m, self.bits, self.divisor = m, bits, divisor
        dw = len(divisor)
        self.neg = Signal(name=f"{name}_neg")
        self.qa = Signal(unsigned(bits), name=f"{name}_qa")      # dividend bits out, quotient bits in
        self.rem = Signal(unsigned(dw), name=f"{name}_rem")      # < c
        self.left = Signal(range(bits + 1), name=f"{name}_left")  # iterations to go
        self.result = Signal(signed(bits + 1), name=f"{name}_q")
        t = Cat(self.qa[-1], self.rem)                            # (rem << 1) | next dividend bit
        ge = t >= divisor
        with m.If(self.left != 0):
            m.d.sync += [self.rem.eq(Mux(ge, t - divisor, t)), self.qa.eq(Cat(ge, self.qa[:-1])),
                         self.left.eq(self.left - 1)]
        # floor: a negative dividend with a remainder rounds down one more
        q = self.qa
        m.d.sync += self.result.eq(Mux(self.neg, -(q + (self.rem != 0)), q))

    def start(self, a) -> list:
        """The statements that load the signed dividend ``a`` (``|a| < 2**bits``)."""
        return [self.neg.eq(a < 0), self.qa.eq(Mux(a < 0, -a, a)[:self.bits]), self.rem.eq(0),
                self.left.eq(self.bits)]
