"""Range BN's own hardware (Banner et al. 2018; docs/arith/range_bn.md): the part of the forward
unit that differs from the other norms (the registry entry ``l1bn.spec.norms.RANGE`` names the
unit; range BN has no backward unit).

Forward (:class:`RangeDispersion`): ``D = max d - min d`` by comparators only (a running max and
min); ``s = D`` (no division by n); sigma is a constant multiply by C(n)
(``sigma_kind == "const"``).
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed
from l1bn.hw.arith import sum_levels
from l1bn.hw.bn_dispersion import Dispersion
from l1bn.spec.intmath import range_const

__all__ = ["RangeDispersion"]


class RangeDispersion(Dispersion):
    """``f(d) = d`` (one register: max/min need no operator), reduced by a max and a min;
    ``s = D``; sigma's constant is ``range_const(n, c_bits)``."""

    def lane_term(self, m, pipe, d, k: int):
        t = Signal(signed(self.cfg.dev_bits), name=f"rd{k}")
        m.d.sync += t.eq(d)                            # max/min need no operator
        return t

    def reduce(self, m, pipe, terms, valid, first, last, done):
        # The lanes' max and min (a comparator chain, registered through the same number of
        # levels as the adder tree of the summing norms, so the stage latency is shared), then a
        # running max and min; D = max - min.
        cfg = self.cfg
        lt = sum_levels(cfg.lanes)
        hi, lo = terms[0], terms[0]
        for t in terms[1:]:
            hi, lo = Mux(t > hi, t, hi), Mux(t < lo, t, lo)
        hi = pipe.delay(hi, lt, "mx") if lt else hi
        lo = pipe.delay(lo, lt, "mn") if lt else lo
        valid, first, last = (pipe.delay(v, lt, "t") for v in (valid, first, last))
        amax = Signal(signed(cfg.dev_bits), name="amax")   # (a tuple assignment left it unnamed)
        amin = Signal(signed(cfg.dev_bits), name="amin")
        m.d.sync += done.eq(valid & last)
        with m.If(valid):
            m.d.sync += [amax.eq(Mux(first | (hi > amax), hi, amax)),
                         amin.eq(Mux(first | (lo < amin), lo, amin))]
        return amax - amin

    @property
    def s_cycles(self) -> int:
        return 0

    def s_value(self, pipe, dsum):
        return dsum                                    # s is the range itself

    def sigma_const(self) -> int:
        return range_const(self.cfg.n, self.cfg.c_bits)
