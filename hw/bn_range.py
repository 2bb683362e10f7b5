"""Range BN's own hardware (Banner et al. 2018; docs/arith/range_bn.md): the part of the forward
unit that differs from the other norms (the registry entry ``l1bn.spec.norms.RANGE`` names the
unit; range BN has no backward unit).

Forward (:class:`RangeDispersion`): ``D = max d - min d`` by comparators only (the lanes' max and
min by trees of registered two-input comparators, :func:`compare_tree`, then a running max and
min); ``s = D`` (no division by n); sigma is a constant multiply by C(n)
(``sigma_kind == "const"``).
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed
from l1bn.hw.arith import sum_levels
from l1bn.hw.bn_dispersion import Dispersion
from l1bn.spec.intmath import range_const

__all__ = ["RangeDispersion", "compare_tree"]


def compare_tree(pipe, terms, pick, name: str):
    """``pick`` (a two-input max or min) over ``terms`` by registered levels of two-input
    comparators: :func:`~l1bn.hw.arith.sum_levels` ``(len(terms))`` cycles, ``len(terms) - 1``
    comparators; an odd term is registered alone to the next level."""
    terms = list(terms)
    while len(terms) > 1:
        nxt = [pipe.reg(pick(terms[k], terms[k + 1]), name) for k in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(pipe.reg(terms[-1], name))
        terms = nxt
    return terms[0]


class RangeDispersion(Dispersion):
    """``f(d) = d`` (one register: max/min need no operator), reduced by a max and a min;
    ``s = D``; sigma's constant is ``range_const(n, c_bits)``."""

    def lane_term(self, m, pipe, d, k: int):
        t = Signal(signed(self.cfg.dev_bits), name=f"rd{k}")
        m.d.sync += t.eq(d)                            # max/min need no operator
        return t

    def reduce(self, m, pipe, terms, valid, first, last, done):
        # The lanes' max and min by two trees of registered two-input comparators: sum_levels(lanes)
        # levels, as the adder tree of the summing norms, so the stage latency is shared, and each
        # level is one compare and a mux whatever the lanes (a chain of lanes - 1 compares was
        # one combinational path, and its expression doubled with every lane). Then a running
        # max and min; D = max - min.
        cfg = self.cfg
        lt = sum_levels(cfg.lanes)
        hi = compare_tree(pipe, terms, lambda a, b: Mux(b > a, b, a), "mx")
        lo = compare_tree(pipe, terms, lambda a, b: Mux(b < a, b, a), "mn")
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

    def exact_dispersion(self, ds):
        # pairwise, so the expression grows with n (a chain would double with every element)
        hi, lo = list(ds), list(ds)
        while len(hi) > 1:
            hi = [Mux(b > a, b, a) for a, b in zip(hi[::2], hi[1::2], strict=False)] + hi[len(hi) & ~1:]
            lo = [Mux(b < a, b, a) for a, b in zip(lo[::2], lo[1::2], strict=False)] + lo[len(lo) & ~1:]
        return hi[0] - lo[0]

    def exact_s_holds(self, dsum, s):
        return s == dsum                               # s is the range itself
