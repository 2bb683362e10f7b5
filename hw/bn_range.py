"""Range BN's own hardware (Banner et al. 2018; docs/arith/range_bn.md): the parts of the forward
and backward units that differ from the other norms (the registry entry ``l1bn.spec.norms.RANGE``
names the units that use them).

Forward (:class:`RangeDispersion`): ``D = max d - min d`` by comparators only (the lanes' max and
min by trees of registered two-input comparators, :func:`compare_tree`, then a running max and
min); ``s = D`` (no division by n); sigma is a constant multiply by C(n)
(``sigma_kind == "const"``).

Backward (:class:`RangeBackwardTerm`, docs/arith/bn_backward.md "Range"): pass 1 also keeps the
channel's max and min of x and how many elements equal each; per channel ``C(n) * H`` is divided
by each count (two serial dividers, :mod:`l1bn.hw.serial_div`); pass 2 compares x with the max
and the min (two equality comparators) and selects one of three per-channel constants: no
multiplier per element before the common scale.
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed
from l1bn.hw.arith import mul_latency, sum_levels
from l1bn.hw.bn_backward_term import BackwardTerm, backward_shapes
from l1bn.hw.bn_dispersion import Dispersion
from l1bn.hw.serial_div import SerialFloorDiv
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import range_const

__all__ = ["RangeDispersion", "RangeBackwardTerm", "compare_tree"]


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
        self.probes = {"amax": amax, "amin": amin}     # the running max and min (formal invariants)
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


class RangeBackwardTerm(BackwardTerm):
    """Range BN's backward (docs/arith/bn_backward.md, "Range"): the gradient of sigma flows to
    the elements equal to the channel's max and min.

    Pass 1 adds a running max and min of x and the number of elements equal to each
    (``nmax``, ``nmin``): x_i = max x exactly when d_i = max d. Per channel: ``v = H * Cr`` (one
    constant multiply, DIV step), then ``Kmax = div_round(v, nmax << c_bits)`` and ``Kmin`` by two
    serial floor dividers (:class:`~l1bn.hw.serial_div.SerialFloorDiv`,
    ``floor(((2v + (count << c_bits)) >> (c_bits + 1)) / count)``, the same value; CONST step,
    ``k_quotient + 1`` cycles), and the constants ``kp = mean(dy) + Kmax``, ``kn = mean(dy) - Kmin``.
    Pass 2 is ``u = (dy << F) - kp`` at the max, ``- kn`` at the min, ``- mean(dy)`` elsewhere
    (and where x is both, i.e. every element is equal, Kmax = Kmin cancel): two equality
    comparators on x and a three-way select, 2 register stages, as L1's sign select."""

    no_sign_reason = "its pass 2 compares x with the channel's max and min"

    def __init__(self, cfg: BNBackwardConfig):
        super().__init__(cfg)
        b, u = cfg.bn, signed(cfg.widths["u"])
        self.xmax = Signal(signed(b.width), name="xmax")
        self.xmin = Signal(signed(b.width), name="xmin")
        self.nmax = Signal(range(b.n + 1), name="nmax")
        self.nmin = Signal(range(b.n + 1), name="nmin")
        self.regs = {"xmax": self.xmax, "xmin": self.xmin, "kp": Signal(u, name="kp"), "kn": Signal(u, name="kn")}

    @classmethod
    def stored_bits(cls, cfg: BNBackwardConfig) -> dict:
        return {"pass2": cfg.bn.width}      # x, compared with the max and min

    def pass1(self, m, *, x, valid, first):
        with m.If(valid):
            up = first | (x > self.xmax)
            down = first | (x < self.xmin)
            m.d.sync += [self.xmax.eq(Mux(up, x, self.xmax)), self.nmax.eq(Mux(up, 1, self.nmax + (x == self.xmax))),
                         self.xmin.eq(Mux(down, x, self.xmin)), self.nmin.eq(Mux(down, 1, self.nmin + (x == self.xmin)))]

    def div_cycles(self) -> list:
        b = self.cfg.bn
        return [mul_latency(backward_shapes(self.cfg)["h"], range_const(b.n, b.c_bits)) + 1]

    def const_cycles(self) -> int:
        return self.cfg.widths["k_quotient"] + 1

    def steps(self, m, pc, r):
        b, q = self.cfg.bn, self.cfg.widths["k_quotient"]
        cr = range_const(b.n, b.c_bits)      # looked up at elaboration (a mutant test patches it)
        v = pc.mul(r["h"], cr, "hcr")                                          # H * Cr
        sh = b.c_bits + 1
        # div_round(v, count << c_bits) = floor(((2v + (count << c_bits)) >> (c_bits + 1)) / count)
        self._amax = pc.reg((v.shift_left(1) + self.nmax.shift_left(b.c_bits)) >> sh, "amax")
        self._amin = pc.reg((v.shift_left(1) + self.nmin.shift_left(b.c_bits)) >> sh, "amin")
        self._dmax = SerialFloorDiv(m, bits=q, divisor=self.nmax, name="kmax")
        self._dmin = SerialFloorDiv(m, bits=q, divisor=self.nmin, name="kmin")
        self._mdy = r["mean_dy"]
        return r["mh"]                       # range keeps no mh (the shared register holds)

    def latch_div(self, m):
        m.d.sync += self._dmax.start(self._amax) + self._dmin.start(self._amin)

    def latch_const(self, m):
        m.d.sync += [self.regs["kp"].eq(self._mdy + self._dmax.result),
                     self.regs["kn"].eq(self._mdy - self._dmin.result)]

    def pass2(self, p2, *, xs, ds, vs, neg, c, sign_in: bool):
        fr = self.cfg.inner_frac
        at_max = p2.reg(xs == c["xmax"], "atmax")
        at_min = p2.reg(xs == c["xmin"], "atmin")
        ds, vs = p2.reg(ds, "dy"), p2.reg(vs, "v")
        k = Mux(at_max ^ at_min, Mux(at_max, c["kp"], c["kn"]), c["mdy"])
        u = p2.reg(ds.shift_left(fr) - k, "u")
        vs = p2.reg(vs, "v")
        return u, vs, 2
