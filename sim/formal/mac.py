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

    def __init__(self, cfg, array=None, *, pe=(0, 0), vertices=True, invariants=None):
        super().__init__(cfg, array)
        self.pe, self.vertices = pe, vertices
        # the inductive form needs the product pipeline's probes (not the XNOR datapath)
        self.invariants = (not cfg.xnor) if invariants is None else invariants

    def _vertices(self, dut):
        cfg = self.cfg
        out = []
        for v, bits, sgn in ([(w, cfg.wbits, cfg.signed_w) for w in dut.i.payload.w]
                             + [(a, cfg.abits, cfg.signed_a) for a in dut.i.payload.a]):
            if bits == 1:
                continue
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if sgn else (0, (1 << bits) - 1)
            out.append(Assume((v == lo) | (v == hi)))
        return out

    def build(self, m):
        if self.invariants:
            return self._build_inductive(m)
        cfg = self.cfg
        dut, take = self.dut(m)
        if self.vertices:
            # weights and activations at the ends of their ranges: a sum of products is
            # multilinear in them, so every partial sum takes its extremes there
            m.d.comb += self._vertices(dut)
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

    def _build_inductive(self, m):
        """The same property, k-inductive: the exact products follow the array's pipeline in a
        shadow pipeline (advanced by ``i.ready``, the array's only stall), summed at the
        accumulator's stage; the finished tiles' exact sums wait in a two-entry queue (the result
        bank, the output register) until their last row is out. Invariants, all asserted: the
        shadow's valid/last bits, raw operands, half sums and product against the array's
        registers; the occupancy relation and ``c*pmin <= S <= c*pmax`` of :class:`MACAccHarness`;
        the accumulator equals ``S``; the queue's length is ``full`` plus a pending last row; the
        bank holds the queue's last entry, the row pointer the next row to send."""
        cfg = self.cfg
        dut, take = self.dut(m, elaborated=True)
        if self.vertices:
            m.d.comb += self._vertices(dut)
        pr = dut.probes
        r0, c0 = self.pe
        R, k = cfg.rows, cfg.k
        pmin, pmax = product_range(cfg)
        wide = signed(cfg.acc_bits + 4)
        en = dut.i.ready
        # shadow pipeline: stage 1 the raw operands, stage 1b and 2 the exact product
        (v2, l2), (v1b, l1b), (v1, l1) = pr["stages"]
        sv1, sl1, sv1b, sl1b, sv2, sl2 = (Signal(name=f"sh_{n}") for n in ("v1", "last1", "v1b", "last1b", "v2", "last2"))
        w_in, a_in = dut.i.payload.w[r0], dut.i.payload.a[c0]
        sw, sa = Signal.like(w_in, name="sh_w"), Signal.like(a_in, name="sh_a")
        p1b, p2 = Signal(wide, name="sh_p1b"), Signal(wide, name="sh_p2")
        with m.If(en):
            m.d.sync += [sv1.eq(dut.i.valid), sl1.eq(dut.i.payload.last),
                         sv1b.eq(sv1), sl1b.eq(sl1), sv2.eq(sv1b), sl2.eq(sl1b),
                         p1b.eq(exact_product(cfg, sw, sa)), p2.eq(p1b)]
            with m.If(dut.i.valid):
                m.d.sync += [sw.eq(w_in), sa.eq(a_in)]
        # the exact running sum at the accumulator's stage
        first = Signal(init=1, name="sh_first")
        c = Signal(range(k + 1), name="count")
        s = Signal(wide, name="exact")
        s_next = Mux(first, p2, s + p2)
        step = en & sv2
        with m.If(step):
            m.d.sync += [s.eq(s_next), c.eq(Mux(first, 1, c + 1)), first.eq(sl2)]
        # finished tiles, oldest first: q[0] is being sent (or waits in the bank), q[1] in the bank
        q = [Signal(wide, name=f"q{n}") for n in range(2)]
        cnt = Signal(range(4), name="q_count")
        out = dut.o.valid & dut.o.ready
        row = Signal(range(max(R, 2)), name="row")
        pop = out & (row == R - 1)
        push = step & sl2
        with m.If(out):
            m.d.sync += row.eq(Mux(row == R - 1, 0, row + 1))
        m.d.sync += cnt.eq(cnt + push - pop)
        tail = cnt - pop
        for n in range(2):
            with m.If(push & (tail == n)):
                m.d.sync += q[n].eq(s_next)
            with m.Elif(pop):
                m.d.sync += q[n].eq(q[1] if n == 0 else q[1])
        # occupancy of the pipeline (as MACAccHarness): the open tile's steps match the input side
        running = Mux(first, 0, c)
        ok = running <= k
        for v, last in ((sv2, sl2), (sv1b, sl1b), (sv1, sl1)):
            running = running + v
            ok = ok & (running <= k)
            running = Mux(v & last, 0, running)
        halves = pr["halves"][r0, c0]
        s1 = pr["s1"]
        o_last = dut.o.valid & dut.o.payload.last
        full = pr["full"]
        nxt_row = Mux(full & dut.o.valid & ~dut.o.payload.last, row + 1, 0)
        onehot = Cat(*(nxt_row == i for i in range(R)))
        y = dut.o.payload.y[c0]
        m.d.comb += [
            # the shadow pipeline is the array's
            Assert((sv1 == v1) & (sl1 == l1) & (sv1b == v1b) & (sl1b == l1b) & (sv2 == v2) & (sl2 == l2)),
            Assert(~sv1 | ((s1.w[r0] == sw) & (s1.a[c0] == sa))),
            Assert(~sv1b | ((sum(halves[1:], halves[0]) == p1b) & (p1b >= pmin) & (p1b <= pmax))),
            Assert(~sv2 | ((pr["prod"][r0][c0] == p2) & (p2 >= pmin) & (p2 <= pmax))),
            Assert(first == pr["first"]),
            # the count and the accumulator bound
            Assert(self.steps < k), Assert(ok), Assert(running == self.steps),
            Assert(c <= k), Assert(first | (c >= 1)),
            Assert((c * pmin <= s) & (s <= c * pmax)),
            Assert(pr["acc"][r0][c0] == s),
            # the queue against the bank and the output register
            Assert(cnt == o_last + full),
            Assert(~full | (pr["bank"][r0][c0] == Mux(o_last, q[1], q[0]))),
            Assert(~dut.o.valid | (dut.o.payload.last == (row == R - 1))),
            Assert(dut.o.valid | (row == 0)),
            Assert(~dut.o.valid | dut.o.payload.last | full),         # rows left in the bank
            Assert(pr["row"] == onehot),
            # the property: PE (r0, c0)'s result is the exact sum of its tile
            Assert(~(dut.o.valid & (row == r0)) | (y == expected_result(cfg, q[0]))),
        ]


def exact_product(cfg, w, a):
    """``w * a`` of raw operand bits, in exact (growing) arithmetic, with ``*``."""
    if cfg.bipolar_a:
        av = Mux(a[0], Const(-1, signed(2)), Const(1, signed(2)))
    else:
        av = a.as_signed() if cfg.signed_a else a
    return decode_w(cfg, w) * av


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
