"""Low-bit fixed-point MAC array: an outer-product (broadcast) array with streamed K-steps.

Dataflow and why
----------------
Each input beat carries one K-step of a tile: the weight column ``w[:, k]`` (``rows`` values) and
the activation row ``a[k, :]`` (``cols`` values). Weight ``w[i]`` is broadcast along row ``i``,
activation ``a[j]`` down column ``j``, and every PE ``(i, j)`` adds ``w[i] * a[j]`` to its own
accumulator (output-stationary, but without the systolic skew). Compared with a systolic array
this needs no fill/drain skew of ``rows + cols`` cycles per tile and no weight preload phase, so
the utilization on a stream of tiles is ``K / max(K, rows + 1)`` (100 % for ``K > rows``); the
broadcast fan-out (``cols`` or ``rows`` loads, at most 64) is registered once and is no timing
problem at these sizes. At the end of a tile (the beat with ``last``) the sums move to a second
bank (double buffer), which is drained one row per cycle while the next tile accumulates.

Products are built as shift-and-add of ``wbits`` partial products (binary weights: a sign
select), never with ``*``, so Yosys makes LUTs and carry chains (CCU2C) of them and no DSP
(``synth_ecp5`` reports 0 MULT18X18D, see ``docs/mac_array.md``).

Bipolar activations (``cfg.bipolar_a``: one bit, code 0 = +1, 1 = -1) are a sign select of
the weight. With ``cfg.xnor`` (binary weights and bipolar activations) each PE has the
XNOR-popcount datapath instead: an XNOR of the two codes (1 when the product is +1) counted by an
unsigned ``k.bit_length()``-bit counter; the array counts the tile's K-steps ``n`` once, and the
drained row is ``2*count - n``, the same exact sum, so the output stream is unchanged.

Per-tile XNOR (``MACArray(cfg, switch=True)``, the accelerator of a network that mixes
binary x bipolar layers with wider ones): the product array whose input beat has one more bit,
``x``, for tiles whose weights are all -1/+1 and activations all -1/+1. On such a tile each PE
puts the match bit ``~(sign(w) ^ sign(a))`` into its product register instead of the product (the
bits above it 0), so the accumulator counts matches, and the drain outputs ``2*count - n`` for it
(``n``: the tile's K-steps). The sum is the same; what changes is that the product register and
the accumulator's carry chain see a 0/1 operand on those tiles.
"""

from __future__ import annotations

import functools
import operator

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, requantize
from l1bn.spec.config import MACConfig

__all__ = ["MACArray", "in_layout", "out_layout", "PIPELINE_CYCLES", "tile_period", "stream_cycles",
           "weight_shape", "act_shape", "result_shape", "product_halves"]

#: Cycles from the handshake of a tile's last input beat to the first output row being valid.
PIPELINE_CYCLES = 5


def weight_shape(cfg: MACConfig):
    """Shape of one raw weight in a beat."""
    # binary weights are stored as one bit (0 -> +1, 1 -> -1), see reference.mac.encode_weights
    if cfg.wbits == 1 and cfg.signed_w:
        return unsigned(1)
    return signed(cfg.wbits) if cfg.signed_w else unsigned(cfg.wbits)


def act_shape(cfg: MACConfig):
    """Shape of one activation in a beat."""
    if cfg.bipolar_a:
        return unsigned(1)          # the bipolar code: 0 -> +1, 1 -> -1
    return signed(cfg.abits) if cfg.signed_a else unsigned(cfg.abits)


def result_shape(cfg: MACConfig):
    """Shape of one output element (requantized, or the exact sum)."""
    if cfg.requant and cfg.relu:
        return unsigned(cfg.out_bits)
    return signed(cfg.result_bits)


def in_layout(cfg: MACConfig, *, switch: bool = False) -> data.StructLayout:
    """Input beat: ``w`` (rows weights, LSB first), ``a`` (cols activations), then ``last``; with
    ``switch`` (:class:`MACArray`'s per-tile XNOR) then ``x``, 1 on every beat of an XNOR tile."""
    return data.StructLayout({
        "w": data.ArrayLayout(weight_shape(cfg), cfg.rows),
        "a": data.ArrayLayout(act_shape(cfg), cfg.cols),
        "last": 1,
        **({"x": 1} if switch else {}),
    })


def out_layout(cfg: MACConfig) -> data.StructLayout:
    """Output beat: ``y`` (one result row of cols elements, LSB first), then ``last``."""
    return data.StructLayout({
        "y": data.ArrayLayout(result_shape(cfg), cfg.cols),
        "last": 1,
    })


def tile_period(cfg: MACConfig, k: int) -> int:
    """Steady-state cycles per tile of reduction length ``k`` (no stalls): ``max(k, rows + 1)``."""
    return max(k, cfg.rows + 1)


def stream_cycles(cfg: MACConfig, k: int, tiles: int) -> int:
    """Cycles from the first input handshake to the last output handshake of ``tiles`` tiles.

    Input valid every cycle, output always ready:
    ``(tiles - 1) * tile_period + k + rows + PIPELINE_CYCLES - 1`` (``+ 4`` since the product split).
    """
    return (tiles - 1) * tile_period(cfg, k) + k + cfg.rows + PIPELINE_CYCLES - 1


def product_halves(cfg: MACConfig, w, a) -> list:
    """``w * a`` as shifted partial products (LUT/carry logic, no multiplier cell), summed in two
    halves (a balanced tree each): the product is the sum of the returned values."""
    if cfg.bipolar_a:
        a_ext = Mux(a[0], Const(-1, signed(2)), Const(1, signed(2)))
    else:
        a_ext = a.as_signed() if cfg.signed_a else Cat(a, Const(0, 1)).as_signed()
    if cfg.wbits == 1 and cfg.signed_w:
        return [Mux(w[0], -a_ext, a_ext)]
    terms = []
    for b in range(cfg.wbits):
        t = Mux(w[b], a_ext.shift_left(b), 0)
        # the MSB of a two's complement weight has weight -2**(wbits-1)
        terms.append(-t if (cfg.signed_w and b == cfg.wbits - 1) else t)

    def tree(ts):
        while len(ts) > 1:
            ts = [ts[k] + ts[k + 1] if k + 1 < len(ts) else ts[k] for k in range(0, len(ts), 2)]
        return ts[0]

    h = (len(terms) + 1) // 2
    return [tree(terms[:h])] + ([tree(terms[h:])] if len(terms) > h else [])


class MACArray(CheckedComponent):
    """A ``rows x cols`` array of low-bit MACs computing ``W (M x K) @ A (K x N)`` tile by tile.

    Parameters
    ----------
    cfg : MACConfig
        ``rows`` (M), ``cols`` (N), ``wbits``/``abits`` and signedness, ``k`` (longest reduction,
        sizes the accumulator) and the optional requantizer (``requant``, ``shift``,
        ``out_bits``, ``relu``).
    switch : bool
        Per-tile XNOR (keyword-only; needs two's complement weights and activations, not
        ``cfg.xnor``): the input beat has ``x``; a tile with ``x`` = 1 must have every weight and
        activation -1 or +1 (its codes are their sign bits) and is summed as ``2*matches - n``.

    Attributes
    ----------
    i : In(stream.Signature(in_layout(cfg)))
        One K-step per beat: ``w`` = column ``k`` of W (``rows`` raw weights, two's complement,
        unsigned, or for binary weights 0 -> +1 / 1 -> -1) and ``a`` = row ``k`` of A (``cols``
        activations). ``last`` = 1 on the final K-step of a tile. A tile may have any K in
        ``1..cfg.k``. Payload bits: ``rows*wbits + cols*abits + 1``.
    o : Out(stream.Signature(out_layout(cfg)))
        One result row per beat, rows 0..M-1 in order; ``last`` = 1 on row M-1. Elements are
        ``cfg.acc_bits`` signed bits (the exact sum), or with ``requant`` ``out_bits`` bits
        (signed, unsigned with ``relu``): ``sat(relu((acc + 2**(shift-1)) >> shift))``.

    Bit widths
    ----------
    product: ``cfg.product_bits`` signed; accumulator: ``cfg.acc_bits`` signed, the fewest bits
    that hold ``k * min(product)`` .. ``k * max(product)``, so no sum of up to ``k`` products
    overflows.

    Timing
    ------
    Pipeline: input register, two registered half sums of the partial products, product register,
    accumulator (+ result bank), output register. The first result row is valid
    ``PIPELINE_CYCLES`` = 5 cycles after the handshake of the
    tile's last beat; the rows follow one per cycle. The result bank is free again ``rows``
    cycles after it was filled, so with input valid every cycle and output ready, a stream of
    tiles of length K takes ``max(K, rows + 1)`` cycles per tile (utilization
    ``K / max(K, rows + 1)``) and ``stream_cycles(cfg, K, T)`` in all. The input stalls
    (``i.ready`` = 0) only when a tile ends while the previous result is still draining.
    ``i.ready`` does not depend on ``o.ready`` combinationally.
    """

    @classmethod
    def _check_args(cls, cfg, *args, switch: bool = False, **kwargs):
        if not isinstance(cfg, MACConfig):
            raise TypeError(f"cfg={cfg!r} must be a MACConfig")
        if switch not in (False, True):
            raise ValueError(f"switch={switch!r} must be a bool")
        if switch and (cfg.xnor or not cfg.signed_w or not (cfg.signed_a or cfg.bipolar_a)):
            raise ValueError("switch (per-tile XNOR) needs two's complement weights and activations "
                             "(signed_w, signed_a or bipolar_a) and not xnor")

    def __init__(self, cfg: MACConfig, *, switch: bool = False):
        self.cfg, self.switch = cfg, switch
        super().__init__({
            "i": In(stream.Signature(in_layout(cfg, switch=switch))),
            "o": Out(stream.Signature(out_layout(cfg))),
        })

    def _requant(self, m, acc, name):
        cfg = self.cfg
        if not cfg.requant:
            return acc
        r = Signal(result_shape(cfg), name=f"{name}_sat")
        m.d.comb += r.eq(requantize(acc, shift=cfg.shift, out_bits=cfg.out_bits, relu=cfg.relu))
        return r

    def elaborate(self, platform):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m = Module()

        full = Signal()        # result bank holds a tile not yet fully sent
        v1, l1 = Signal(name="v1"), Signal(name="l1")   # stage 1 valid / last
        v1b, l1b = Signal(name="v1b"), Signal(name="l1b")
        v2, l2 = Signal(name="v2"), Signal(name="l2")   # stage 2 valid / last
        # stall = v2 & l2 & full, held in registers computed from the next values of those
        # three (:meth:`_stall_next`): the stall gates every register of the array, so it
        # leaves a flip-flop, one copy per row and one for the control (``keep``: the flow does
        # not merge them)
        stalls = [Signal(name=f"stall{i}", attrs={"keep": 1}) for i in range(R + 1)]
        stall = stalls[R]
        en = Signal()
        m.d.comb += [
            en.eq(~stall),
            self.i.ready.eq(en),
        ]
        self._en, self._en_rows = en, [~s for s in stalls[:R]]
        load_bank = Signal(name="load_bank")
        m.d.comb += load_bank.eq(en & v2 & l2)

        # stage 1: input register (breaks the broadcast fan-out from the ports)
        s1 = Signal(in_layout(cfg, switch=self.switch))
        with m.If(en):
            m.d.sync += [v1.eq(self.i.valid), l1.eq(self.i.payload.last)]
            with m.If(self.i.valid):
                m.d.sync += s1.eq(self.i.payload)

        with m.If(en):
            m.d.sync += [v1b.eq(v1), l1b.eq(l1), v2.eq(v1b), l2.eq(l1b)]

        if cfg.xnor:
            bank, count_bank = self._xnor_pes(m, s1, v2, l2)
            freed = self._drain(m, bank, count_bank, full, load_bank)
            self._stall_next(m, stalls, en, (v1b, l1b, v2, l2), full, load_bank, freed)
            return m

        # stage 2: two half sums of the partial products (registered), stage 2b: their sum
        pb = cfg.product_bits
        prod = [[Signal(signed(pb), name=f"p{i}_{j}") for j in range(C)] for i in range(R)]
        # per-tile XNOR: the tile's flag, alongside valid and last
        x1b, x2 = (Signal(name="x1b"), Signal(name="x2")) if self.switch else (None, None)
        if self.switch:
            with m.If(en):
                m.d.sync += [x1b.eq(s1.x), x2.eq(x1b)]
        halves_regs = {}
        for i in range(R):
            with m.If(self._en_rows[i]):
                for j in range(C):
                    halves = product_halves(cfg, s1.w[i], s1.a[j])
                    if self.switch:
                        # an XNOR tile: the match bit of the two signs (1: the product is +1),
                        # the other half 0
                        match = Cat(~(s1.w[i][-1] ^ s1.a[j][-1]), Const(0, 1)).as_signed()
                        halves = [Mux(s1.x, match, halves[0])] + [Mux(s1.x, 0, h) for h in halves[1:]]
                    regs = [Signal(signed(pb + 1), name=f"h{i}_{j}_{k}") for k in range(len(halves))]
                    halves_regs[i, j] = regs
                    m.d.sync += [r.eq(h) for r, h in zip(regs, halves, strict=True)]
                    m.d.sync += prod[i][j].eq(sum(regs[1:], regs[0]))

        # stage 3: accumulate; on the last K-step move the sums to the result bank
        first, acc, bank = self._accumulate(m, prod, en, v2, l2)

        # the pipeline's registers, for the formal harness's invariants (l1bn.sim.formal.mac)
        self.probes = {"en": en, "stages": [(v2, l2), (v1b, l1b), (v1, l1)], "first": first,
                       "s1": s1, "halves": halves_regs, "prod": prod, "acc": acc, "bank": bank,
                       "load_bank": load_bank, "full": full}
        tile_n = self._tile_count(m, en, v2, l2, x2, first) if self.switch else None
        freed = self._drain(m, bank, tile_n, full, load_bank)
        self._stall_next(m, stalls, en, (v1b, l1b, v2, l2), full, load_bank, freed)
        return m

    def _accumulate(self, m, prod, en, v2, l2):
        """The accumulators: PE ``(i, j)`` adds ``prod[i][j]`` (the stage before, valid ``v2``)
        to its ``acc_bits`` accumulator, or starts from it on a tile's first step; on the last
        step (``l2``) the sum also goes to the result bank. One cycle. Returns ``(first, acc,
        bank)``; shared by :class:`MACArray` and the tree array, which differ only before it."""
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        ab = cfg.acc_bits
        first = Signal(init=1)
        acc = [[Signal(signed(ab), name=f"acc{i}_{j}") for j in range(C)] for i in range(R)]
        bank = [[Signal(signed(ab), name=f"bank{i}_{j}") for j in range(C)] for i in range(R)]
        with m.If(en & v2):
            m.d.sync += first.eq(l2)
        for i in range(R):
            with m.If(self._en_rows[i] & v2):
                for j in range(C):
                    nxt = Signal(signed(ab), name=f"nxt{i}_{j}")
                    # select after the add: ``first`` (fan-out rows*cols*acc_bits) reaches each
                    # flip-flop through one mux, not through the carry chain
                    m.d.comb += nxt.eq(Mux(first, prod[i][j], acc[i][j] + prod[i][j]))
                    m.d.sync += acc[i][j].eq(nxt)
                    with m.If(l2):
                        m.d.sync += bank[i][j].eq(nxt)
        return first, acc, bank

    def _stall_next(self, m, stalls, en, stages, full, load_bank, freed):
        """Every stall register takes ``v2 & l2 & full`` of the next cycle, from the same
        next-value rules as those registers: so each equals ``v2 & l2 & full`` at all times
        (all reset to 0: ``v2`` resets to 0)."""
        v1b, l1b, v2, l2 = stages
        v2_n, l2_n = Mux(en, v1b, v2), Mux(en, l1b, l2)
        full_n = Mux(load_bank, 1, Mux(freed, 0, full))
        m.d.sync += [s.eq(v2_n & l2_n & full_n) for s in stalls]

    def _tile_count(self, m, en, v2, l2, x2, first):
        """Per-tile XNOR: the tile's K-step count ``n`` and its ``x`` flag, moved to the result
        bank with the sums. Returns (bank ``n``, bank ``x``)."""
        cb = self.cfg.k.bit_length()
        n, n_bank, x_bank = Signal(cb, name="n"), Signal(cb, name="n_bank"), Signal(name="x_bank")
        with m.If(en & v2):
            n_nxt = Signal(cb, name="n_nxt")
            m.d.comb += n_nxt.eq(Mux(first, 1, n + 1))
            m.d.sync += n.eq(n_nxt)
            with m.If(l2):
                m.d.sync += [n_bank.eq(n_nxt), x_bank.eq(x2)]
        return n_bank, x_bank

    def _xnor_pes(self, m, s1, v2, l2):
        """The XNOR-popcount PEs (stages 2 to 3, the same cycles as the product pipeline): per PE
        ``match = ~(w ^ a)`` registered twice, then ``count = first ? match : count + match``;
        the tile's K-step count ``n`` (one counter for the array). On the last K-step the counts
        and ``n`` move to the result bank. Returns (bank counts, bank ``n``)."""
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        cb = cfg.k.bit_length()         # counts 0..k
        en = self._en
        match1 = [[Signal(name=f"x{i}_{j}") for j in range(C)] for i in range(R)]
        match2 = [[Signal(name=f"p{i}_{j}") for j in range(C)] for i in range(R)]
        for i in range(R):
            with m.If(self._en_rows[i]):
                for j in range(C):
                    m.d.sync += [match1[i][j].eq(~(s1.w[i][0] ^ s1.a[j][0])), match2[i][j].eq(match1[i][j])]
        first = Signal(init=1)
        cnt = [[Signal(cb, name=f"acc{i}_{j}") for j in range(C)] for i in range(R)]
        bank = [[Signal(cb, name=f"bank{i}_{j}") for j in range(C)] for i in range(R)]
        n, n_bank = Signal(cb, name="n"), Signal(cb, name="n_bank")
        with m.If(en & v2):
            m.d.sync += first.eq(l2)
            n_nxt = Signal(cb, name="n_nxt")
            m.d.comb += n_nxt.eq(Mux(first, 1, n + 1))
            m.d.sync += n.eq(n_nxt)
            with m.If(l2):
                m.d.sync += n_bank.eq(n_nxt)
        for i in range(R):
            with m.If(self._en_rows[i] & v2):
                for j in range(C):
                    nxt = Signal(cb, name=f"nxt{i}_{j}")
                    m.d.comb += nxt.eq(Mux(first, match2[i][j], cnt[i][j] + match2[i][j]))
                    m.d.sync += cnt[i][j].eq(nxt)
                    with m.If(l2):
                        m.d.sync += bank[i][j].eq(nxt)
        return bank, n_bank

    def _drain(self, m, bank, count_bank, full, load_bank):
        """Stage 4: the output register, one result row per beat, requantized on the way out
        (``count_bank``: the XNOR array's K-step count, the row is ``2*count - n``; or, per-tile
        XNOR, ``(n, x)``: the same when the tile's ``x``). ``full``: the result bank holds a tile
        not yet sent; set when ``load_bank``. Returns the condition that clears ``full`` (the
        last row taken)."""
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        ab = cfg.acc_bits
        # one-hot row pointer: the row select is one AND per bank bit, no decoder in front of it
        row = Signal(R, init=1)
        if not cfg.xnor:
            self.probes["row"] = row     # the drain's row pointer (formal invariants)
        take = Signal()
        m.d.comb += take.eq(full & (~self.o.valid | self.o.ready))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        tile_x = None
        if isinstance(count_bank, tuple):       # per-tile XNOR: the sums are signed accumulators
            count_bank, tile_x = count_bank
        pure = count_bank is not None and tile_x is None
        sel = [Signal(len(bank[0][0]) if pure else signed(ab), name=f"sel{j}") for j in range(C)]
        # AND-OR row select as plain assigns: a comb switch becomes an always @* that Icarus
        # never evaluates while its inputs keep their initial values (all-zero first tile)
        for j in range(C):
            terms = [Mux(row[i], bank[i][j].as_unsigned(), 0) for i in range(R)]
            m.d.comb += sel[j].eq(functools.reduce(operator.or_, terms))
        if pure:       # XNOR: matches minus mismatches
            xs = [Signal(signed(ab), name=f"xsum{j}") for j in range(C)]
            # unsigned - unsigned is signed one bit wider: 2*count - n needs no sign reinterpretation
            m.d.comb += [xs[j].eq((sel[j] << 1) - count_bank) for j in range(C)]
            sel = xs
        elif tile_x is not None:        # an XNOR tile's count (0..n in a signed accumulator)
            xs = [Signal(signed(ab), name=f"xsum{j}") for j in range(C)]
            m.d.comb += [xs[j].eq(Mux(tile_x, (sel[j] << 1) - count_bank, sel[j])) for j in range(C)]
            sel = xs
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.last.eq(row[R - 1])]
            for j in range(C):
                m.d.sync += self.o.payload.y[j].eq(self._requant(m, sel[j], f"rq{j}"))
            m.d.sync += row.eq(row.rotate_left(1))
            with m.If(row[R - 1]):
                m.d.sync += full.eq(0)
        # stall guarantees the bank is never loaded while full
        with m.If(load_bank):
            m.d.sync += full.eq(1)
        return take & row[R - 1]
