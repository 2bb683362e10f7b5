"""Formal harnesses of the MAC array (:mod:`l1bn.hw.mac_array`), on its public ports."""

from __future__ import annotations

from amaranth import Cat, Const, Mux, Signal, signed
from amaranth.hdl import Assert, Assume
from l1bn.hw.mac_array import MACArray, in_layout, stream_cycles

from .props import Harness, drain_check, drive_stream, offer_all, pending, stream_rule, watchdog

__all__ = ["MACStreamHarness", "MACCountHarness", "MACOverflowHarness", "MACProductHarness", "MACDrainHarness",
           "MACAccHarness", "response_bound", "shift_add", "decode_w", "product_range"]


def response_bound(cfg) -> int:
    """Cycles within which, with ``o.ready`` high, a finished tile's next result row comes out:
    twice the no-stall time of a one-step tile."""
    return 2 * stream_cycles(cfg, 1, 1)


class _MACHarness(Harness):
    def __init__(self, cfg, array=None):
        super().__init__()
        self.cfg = cfg
        self.array = array

    def dut(self, m, *, elaborated=False):
        cfg = self.cfg
        dut = self.array if self.array is not None else MACArray(cfg)
        if elaborated:
            from amaranth.hdl import Fragment

            # elaborated now, not lazily: the harness's invariants use its probes
            m.submodules.dut = Fragment.get(dut, None)
        else:
            m.submodules.dut = dut
        _, _, take = drive_stream(m, self, dut.i, "i")
        m.d.comb += dut.o.ready.eq(self.free(1, "o_ready"))
        # contract: a tile has 1..cfg.k K-steps (the beat after k-1 steps is the last)
        steps = Signal(range(cfg.k + 1), name="steps")
        with m.If(take):
            m.d.sync += steps.eq(Mux(dut.i.payload.last, 0, steps + 1))
        m.d.comb += Assume(~dut.i.valid | dut.i.payload.last | (steps < cfg.k - 1))
        self.steps = steps
        return dut, take


class MACStreamHarness(_MACHarness):
    """The stream rule on ``o``."""

    def build(self, m):
        dut, _ = self.dut(m)
        stream_rule(m, dut.o, "o")


class MACCountHarness(_MACHarness):
    """Per tile (an input beat with ``last``), exactly ``rows`` result rows, ``last`` on the final
    one only; never a row without a finished tile; with ``o.ready`` high, a finished tile's rows
    come within :func:`response_bound` cycles of each other."""

    def build(self, m):
        cfg = self.cfg
        dut, take = self.dut(m)
        out = dut.o.valid & dut.o.ready
        tile_in = take & dut.i.payload.last
        row = Signal(range(max(cfg.rows, 2)), name="row")
        with m.If(out):
            m.d.sync += row.eq(Mux(row == cfg.rows - 1, 0, row + 1))
        tiles = pending(m, tile_in, out & (row == cfg.rows - 1), 8, "tiles")
        m.d.comb += [
            Assert(~out | (dut.o.payload.last == (row == cfg.rows - 1))),   # last once, at the end
            Assert(~out | (tiles > 0)),                                       # no row invented
        ]
        watchdog(m, response_bound(cfg), tiles > 0, out, dut.o.ready, "o")


def shift_add(cfg, w, a):
    """``w * a`` as the sum of its partial products, in exact (growing) Amaranth arithmetic:
    the same value as ``w * a`` (property ``product``), in the form a SAT solver compares
    cheaply with the array's own shift-and-add."""
    a = a.as_signed() if cfg.signed_a else Cat(a, Const(0, 1)).as_signed()
    if cfg.wbits == 1 and cfg.signed_w:
        return Mux(w[0], -a, a)
    total = 0
    for b in range(cfg.wbits):
        t = Mux(w[b], a << b, 0)
        total = total + (-t if (cfg.signed_w and b == cfg.wbits - 1) else t)
    return total


def decode_w(cfg, w):
    """The weight value of its raw bits (binary weights: 0 -> +1, 1 -> -1)."""
    if cfg.wbits == 1 and cfg.signed_w:
        return Mux(w[0], Const(-1, signed(2)), Const(1, signed(2)))
    return w.as_signed() if cfg.signed_w else w


def expected_result(cfg, acc):
    """The output element for an exact (wide) sum ``acc``: the sum itself, or the requantizer."""
    if not cfg.requant:
        return acc
    y = (acc + (1 << (cfg.shift - 1))) >> cfg.shift if cfg.shift else acc
    if cfg.relu:
        hi = (1 << cfg.out_bits) - 1
        return Mux(y < 0, 0, Mux(y > hi, hi, y))
    lo, hi = -(1 << (cfg.out_bits - 1)), (1 << (cfg.out_bits - 1)) - 1
    return Mux(y < lo, lo, Mux(y > hi, hi, y))


class MACOverflowHarness(_MACHarness):
    """PE ``pe = (r, c)``: its result equals the exact sum of the tile's
    products, computed here in a wider register with ``*`` (the array uses shift-and-add), for
    every tile of 1..k K-steps. A too narrow accumulator, product or result bank fails this."""

    def __init__(self, cfg, array=None, *, pe=(0, 0), vertices=True):
        super().__init__(cfg, array)
        self.pe, self.vertices = pe, vertices

    def build(self, m):
        cfg = self.cfg
        dut, take = self.dut(m)
        if self.vertices:
            # weights and activations at the ends of their ranges: a sum of products is
            # multilinear in them, so every partial sum takes its extremes there
            for v, bits, sgn in ([(w, cfg.wbits, cfg.signed_w) for w in dut.i.payload.w]
                                 + [(a, cfg.abits, cfg.signed_a) for a in dut.i.payload.a]):
                if bits == 1:
                    continue
                lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if sgn else (0, (1 << bits) - 1)
                m.d.comb += Assume((v == lo) | (v == hi))
        r0, c0 = self.pe
        wide = signed(cfg.acc_bits + 4)
        w, a = dut.i.payload.w[r0], dut.i.payload.a[c0]
        first = Signal(init=1, name="first")
        acc = Signal(wide, name="exact")
        nxt = Mux(first, 0, acc) + shift_add(cfg, w, a)
        # finished tiles' exact sums, oldest first (up to 5 are in flight: output, bank, stages)
        qn = 8
        q = [Signal(wide, name=f"q{n}") for n in range(qn)]
        cnt = Signal(range(qn + 1), name="q_count")
        out = dut.o.valid & dut.o.ready
        row = Signal(range(max(cfg.rows, 2)), name="row")
        pop = out & (row == cfg.rows - 1)
        with m.If(out):
            m.d.sync += row.eq(Mux(row == cfg.rows - 1, 0, row + 1))
        with m.If(take):
            m.d.sync += [acc.eq(nxt), first.eq(dut.i.payload.last)]
        push = take & dut.i.payload.last
        m.d.sync += cnt.eq(cnt + push - pop)
        # shift out on pop, write at the tail (after the shift) on push
        for n in range(qn):
            shifted = q[n + 1] if n < qn - 1 else q[n]
            tail = cnt - pop
            with m.If(push & (tail == n)):
                m.d.sync += q[n].eq(nxt)
            with m.Elif(pop):
                m.d.sync += q[n].eq(shifted)
        y = dut.o.payload.y[c0]
        m.d.comb += [
            Assert(cnt < qn),
            Assert(~(out & (row == r0)) | (cnt > 0)),
            Assert(~(out & (row == r0)) | (y == expected_result(cfg, q[0]))),
        ]


class MACProductHarness(Harness):
    """Combinational: the partial-product sum :func:`shift_add` equals ``w * a`` for every raw
    weight and activation (the fact that lets ``overflow`` compare sums of partial products)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def build(self, m):
        cfg = self.cfg
        lay = in_layout(cfg)
        w = self.free(lay.members["w"].elem_shape, "w")
        a = self.free(lay.members["a"].elem_shape, "a")
        m.d.comb += Assert(shift_add(cfg, w, a) == decode_w(cfg, w) * a)


class MACDrainHarness(_MACHarness):
    """No stalls: two tiles of ``k`` steps go in back to back, ``o.ready`` high; all
    ``2 * rows`` result rows are out by ``stream_cycles(cfg, k, 2)`` cycles."""

    def build(self, m):
        cfg = self.cfg
        dut = self.array if self.array is not None else MACArray(cfg)
        m.submodules.dut = dut
        take, got = offer_all(m, dut.i, 2 * cfg.k, "i")
        p = self.free(len(dut.i.payload.as_value()), "i_payload")
        m.d.comb += [dut.i.payload.eq(p), dut.i.payload.last.eq((got == cfg.k - 1) | (got == 2 * cfg.k - 1)),
                     dut.o.ready.eq(1)]
        rows = Signal(range(2 * cfg.rows + 2), name="rows_out")
        with m.If(dut.o.valid):
            m.d.sync += rows.eq(rows + 1)
        m.d.comb += Assert(rows <= 2 * cfg.rows)
        drain_check(m, stream_cycles(cfg, cfg.k, 2), rows == 2 * cfg.rows)


def product_range(cfg) -> tuple[int, int]:
    """The smallest and largest ``w * a`` the contract allows (ends of both ranges)."""
    def ends(bits, sgn, one_bit_pm):
        if one_bit_pm:
            return (-1, 1)
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if sgn else (0, (1 << bits) - 1)

    ws = ends(cfg.wbits, cfg.signed_w, cfg.wbits == 1 and cfg.signed_w)
    as_ = ends(cfg.abits, cfg.signed_a, cfg.bipolar_a)
    prods = [w * a for w in ws for a in as_]
    return min(prods), max(prods)


class MACAccHarness(_MACHarness):
    """PE ``pe``'s accumulator never wraps, for runs of any length (k-induction): it equals the
    exact (wide) sum ``S`` of the tile's products so far, and the result bank equals the exact
    sum of the last finished tile. Any stalls, any tiles of 1..k steps, every w and a.

    The invariants that make the induction close, asserted (so proven) next to the property:

    - every registered half sum pair and the product register lie in the product range
      ``[pmin, pmax]`` (:func:`product_range`);
    - the tile's element count ``c`` at the accumulator: with the beats in flight in the
      pipeline (stages 1, 1b, 2, oldest last), every tile segment has at most ``k`` steps and the
      open one has exactly the input side's ``steps`` (counter relation, the occupancy of the
      pipeline);
    - ``c*pmin <= S <= c*pmax`` (the accumulator bound in terms of the element counter), and the
      accumulator register equals ``S``.

    The bank feeds the output register through the requantizer (property ``requant``) or
    unchanged: no arithmetic after it can wrap.
    """

    def __init__(self, cfg, array=None, *, pe=(0, 0)):
        super().__init__(cfg, array)
        self.pe = pe

    def build(self, m):
        cfg = self.cfg
        if cfg.xnor:
            raise ValueError("MACAccHarness: the XNOR array counts matches; use overflow.pe*")
        dut, take = self.dut(m, elaborated=True)
        dut_p = dut.probes
        r0, c0 = self.pe
        k = cfg.k
        pmin, pmax = product_range(cfg)
        in_range = lambda v: (v >= pmin) & (v <= pmax)   # noqa: E731
        halves, prod = dut_p["halves"][r0, c0], dut_p["prod"][r0][c0]
        m.d.comb += [Assert(in_range(sum(halves[1:], halves[0]))), Assert(in_range(prod))]
        steps = self.steps          # the input side's open tile: steps taken since the last 'last'
        en, first = dut_p["en"], dut_p["first"]
        acc_step = en & dut_p["stages"][0][0]
        c = Signal(range(k + 1), name="count")
        wide = signed(cfg.acc_bits + 4)
        s = Signal(wide, name="exact")
        s_next = Mux(first, prod, s + prod)
        with m.If(acc_step):
            m.d.sync += [s.eq(s_next), c.eq(Mux(first, 1, c + 1))]
        bank = Signal(wide, name="exact_bank")
        with m.If(dut_p["load_bank"]):
            m.d.sync += bank.eq(s_next)
        running = Mux(first, 0, c)
        ok = running <= k
        for v, last in dut_p["stages"]:
            running = running + v
            ok = ok & (running <= k)
            running = Mux(v & last, 0, running)
        m.d.comb += [
            Assert(steps < k),                                           # the contract's count
            Assert(ok), Assert(running == steps),                        # occupancy, counts
            Assert(c <= k), Assert(first | (c >= 1)),
            Assert((c * pmin <= s) & (s <= c * pmax)),                   # bound by the count
            Assert(dut_p["acc"][r0][c0] == s),                           # no wrap
            Assert(dut_p["bank"][r0][c0] == bank),
        ]
