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
        # The lanes' max and min by trees of two-input comparators, one registered level per
        # adder level of the summing norms (so the stage latency is shared), then a running max
        # and min; D = max - min. (A chain named its previous expression twice per lane: the
        # Verilog doubled with every lane, issue 32.)
        cfg = self.cfg
        lt = sum_levels(cfg.lanes)
        hi = _tree(pipe, terms, lambda a, b: Mux(a > b, a, b), "mx")
        lo = _tree(pipe, terms, lambda a, b: Mux(a < b, a, b), "mn")
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


def _tree(pipe, terms, pick, name: str):
    """``pick`` reduced over ``terms`` by registered two-input levels: ``sum_levels(len(terms))``
    cycles (an odd one out is registered with its level)."""
    terms = list(terms)
    while len(terms) > 1:
        nxt = [pipe.reg(pick(terms[k], terms[k + 1]), name) for k in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(pipe.reg(terms[-1], name))
        terms = nxt
    return terms[0]
