"""A registered signed absolute-difference unit: the smallest real sign/abs datapath.

It is the example that proves the simulator helper, and the building block of the L1 dispersion
stage (``|x - mu|``).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent
from l1bn.spec.config import check_int

__all__ = ["AbsDiff"]


class AbsDiff(CheckedComponent):
    """``y = |a - b|``, registered.

    Parameters
    ----------
    width : int, 1..32
        Bits of ``a`` and ``b`` (signed two's complement).

    Attributes
    ----------
    a, b : In(signed(width))
    y : Out(unsigned(width + 1))
        ``|a - b|``, exact (no overflow: ``width + 1`` bits hold ``2**width``).

    Latency: 1 cycle (``y`` is the difference of the inputs sampled at the previous edge).
    """

    @classmethod
    def _check_args(cls, *, width: int = 8):
        check_int("width", width, 1, 32)

    def __init__(self, *, width: int = 8):
        self.width = width
        super().__init__({
            "a": In(signed(width)),
            "b": In(signed(width)),
            "y": Out(unsigned(width + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        d = Signal(signed(self.width + 1))
        m.d.comb += d.eq(self.a - self.b)
        # sign select: negate when the sign bit is set; no comparator, no multiplier
        m.d.sync += self.y.eq(Mux(d[-1], -d, d))
        return m


