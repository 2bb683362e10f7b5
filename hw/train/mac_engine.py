"""The MAC engine: every product of the training step on one ``rows x 1`` MAC array.

An operation is a :class:`~l1bn.hw.train.plan.MacOp` (forward accumulators, input gradient or
weight gradient of one layer). Three parts, joined with ``wiring.connect`` through ``lib.stream``
interfaces::

    tile reader ──► beat generator ──► (entry ROM, addresses, operand reads) ──► MACArray ──► writer
    (index ROM)      c, j counters       3 register stages, stall together        rows x 1     addresses,
                                                                                               max |out|

- **tile reader**: for every tile ``(r, a, b)`` in order, the tap list of ``b`` from the index
  ROM (first entry, length) and the tile's row and outer bases ``wb + r*swr`` and ``ab + a*saa``;
  a stream of one record per tile, one per cycle when tiles are one beat long;
- **beat generator**: the tile's ``nc * len`` beats: for ``c``, for entry ``j``; it takes the next
  tile record in the cycle of the last beat, so tiles follow without a gap;
- **operands**: the entry ``(e1, e2, zero)`` from the entry ROM, then ``w word = wbase + c*swc + e1``
  (``fw``, ``fwt`` or ``daccw``: ``rows`` operands) and ``a element = abase + c*sac + e2`` (``act``
  or ``dacc``; 0 for a ``zero`` entry). Stage 0 counts and reads the entry ROM, stage 1 adds the
  addresses, stage 2 reads the memories, whose output is the array's input (valid in stage 3);
  all stages advance together when the array takes the beat or has none;
- **writer**: row ``i`` of the tile ``(r, a, b)`` goes to ``ob + (r*R + i)*sorow + a*soa + b`` of
  the op's output memory (rows past the op's channels are dropped), and the largest magnitude is
  tracked (for ``da`` masked by the activation mask of the layer below, read at the output's
  address): ``done`` reports its bit length, from which the sequencer sets the next quantizer's
  shift.

Timing: with the array's output always taken, :func:`mac_cycles` from the command handshake to
``done`` valid: ``ISSUE + period + rows + WRITE``, ``period`` = :meth:`TrainPlan.mac_period_cycles`
(each tile ``max(K, rows + 1)`` after the first).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out
from l1bn.hw.arith import pick
from l1bn.hw.mac_array import PIPELINE_CYCLES, MACArray, in_layout, out_layout
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, OpConsts, command, uint_for
from l1bn.hw.train.fixed import MaxTracker
from l1bn.hw.train.plan import MacOp, TrainPlan

__all__ = ["MacEngine", "mac_cycles", "W_SOURCES", "A_SOURCES", "DESTINATIONS", "ISSUE_CYCLES",
           "WRITE_CYCLES"]

W_SOURCES = ("fw", "fwt", "daccw")
A_SOURCES = ("act", "dacc")
DESTINATIONS = ("acc", "logits", "da", "dw")
#: command handshake -> the first beat's handshake into the array (consts, tile read, stages 0..2)
ISSUE_CYCLES = 6
#: the last row out of the array -> ``done`` valid (the write, the masked max, the done register)
WRITE_CYCLES = 3


def mac_cycles(plan: TrainPlan, op: MacOp) -> int:
    """Cycles from the command handshake to ``done`` valid (``done`` taken at once)."""
    return ISSUE_CYCLES + plan.mac_period_cycles(op) + plan.rows + PIPELINE_CYCLES - 1 + WRITE_CYCLES


def _tables(plan: TrainPlan):
    """The index ROM ((start, count - 1) per tap list, all ops), the entry ROM ((e1, e2, zero)),
    and per op its first index entry."""
    index, entries, tbase = [], [], []
    for key in plan.mac_order:
        op = plan.mac_ops[key]
        tbase.append(len(index))
        for lst in op.lists:
            index.append((len(entries), len(lst) - 1))
            entries.extend(lst)
    return index, entries, tbase


class MacEngine(wiring.Component):
    """The MAC operations of ``plan`` (``plan.mac_order``) on a ``MACArray(plan.mac_cfg)``.

    Interface
    ---------
    cmd : In(stream of {op})          an index into ``plan.mac_order``
    done : Out(stream of {bits})      ``bitlen`` of the largest written ``|value|`` (``da``: of
                                      ``value * mask``)
    rd_fw, rd_fwt, rd_daccw : row-operand reads (``rows``-wide words)
    rd_act, rd_dacc : broadcast-operand reads
    rd_mask : the activation mask (``da`` only)
    wr_acc, wr_logits, wr_da, wr_dw : the outputs
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        mem = plan.mem
        self.cfg = plan.mac_cfg
        members = command({"cmd": {"op": uint_for(len(plan.mac_order) - 1)},
                           "done": {"bits": uint_for(self.cfg.acc_bits)}})
        for name in W_SOURCES + A_SOURCES + ("mask",):
            members[f"rd_{name}"] = Out(read_bus(mem[name]["depth"], mem_shape(mem[name])))
        for name in DESTINATIONS:
            members[f"wr_{name}"] = Out(write_bus(mem[name]["depth"], mem_shape(mem[name])))
        super().__init__(members)

    # ------------------------------------------------------------------ constants
    def _consts(self, m, tbase):
        p = self.plan
        ops = [p.mac_ops[k] for k in p.mac_order]

        def col(f):
            return [f(op) for op in ops]
        table = {
            "rl": col(lambda o: o.nr - 1), "al": col(lambda o: o.na - 1), "bl": col(lambda o: o.nb - 1),
            "cl": col(lambda o: o.nc - 1), "tb": tbase,
            "wsel": col(lambda o: W_SOURCES.index(o.wsrc)), "wb": col(lambda o: o.wb),
            "swr": col(lambda o: o.swr), "swc": col(lambda o: o.swc),
            "asel": col(lambda o: A_SOURCES.index(o.asrc)), "ab": col(lambda o: o.ab),
            "saa": col(lambda o: o.saa), "sac": col(lambda o: o.sac),
            "osel": col(lambda o: DESTINATIONS.index(o.dst)), "ob": col(lambda o: o.ob),
            "srow": col(lambda o: o.sorow), "stile": col(lambda o: o.sorow * p.rows), "soa": col(lambda o: o.soa),
            "rows": col(lambda o: o.rows),
            "moff": col(lambda o: o.mask_base - o.ob if o.mask_base >= 0 else 0),
            "masked": col(lambda o: int(o.mask_base >= 0)),
        }
        return OpConsts(m, table)

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        index, entries, tbase = _tables(p)
        hs = Handshake(m, self)
        k = self._consts(m, tbase)
        with m.If(hs.start):
            k.load(self.cmd.payload.op)
        m.submodules.array = arr = MACArray(self.cfg)

        # the streams between the parts
        waddr_bits = max(self.rd_fw.addr.shape().width, self.rd_fwt.addr.shape().width, self.rd_daccw.addr.shape().width)
        aaddr_bits = max(self.rd_act.addr.shape().width, self.rd_dacc.addr.shape().width)
        ebits = uint_for(max(1, len(entries) - 1))
        cbits = uint_for(max(e[1] for e in index))
        tile = data.StructLayout({"start": ebits, "cnt": cbits, "wr": unsigned(waddr_bits + 1),
                                  "aa": unsigned(aaddr_bits + 1), "last": 1})
        to_gen = stream.Signature(tile).create(path=("tiles",))
        from_rd = stream.Signature(tile).flip().create(path=("tile_in",))
        wiring.connect(m, to_gen, from_rd)
        to_arr = stream.Signature(in_layout(self.cfg)).create(path=("beats",))
        from_arr = stream.Signature(out_layout(self.cfg)).flip().create(path=("rows_in",))
        wiring.connect(m, to_arr, arr.i)
        wiring.connect(m, arr.o, from_arr)

        self._tile_reader(m, hs, k, index, to_gen, waddr_bits, aaddr_bits)
        self._beats(m, k, entries, from_rd, to_arr)
        self._writer(m, hs, k, from_arr)
        return m

    # ------------------------------------------------------------------ tile reader
    def _tile_reader(self, m, hs, k, index, o, waddr_bits, aaddr_bits):
        """One record per tile (r, a, b): the index ROM entry of b and the row/outer bases."""
        p = self.plan
        cb = o.payload.cnt.shape().width
        sb = o.payload.start.shape().width
        # one word per tile column b: where its entries start in the entry ROM, and how many
        lay = data.StructLayout({"start": unsigned(sb), "cnt": unsigned(cb)})
        rom = Memory(shape=lay, depth=len(index), init=[{"start": s, "cnt": c} for s, c in index])
        m.submodules.index_rom = rom
        rd = rom.read_port()
        run = Signal(name="t_run")
        r, a, b = (Signal(range(max(2, n)), name=nm) for nm, n in
                   (("t_r", max(op.nr for op in p.mac_ops.values())),
                    ("t_a", max(op.na for op in p.mac_ops.values())),
                    ("t_b", max(op.nb for op in p.mac_ops.values()))))
        wr = Signal(unsigned(waddr_bits + 1), name="t_wr")
        aa = Signal(unsigned(aaddr_bits + 1), name="t_aa")
        adv = Signal()
        m.d.comb += adv.eq(~o.valid | o.ready)
        with m.If(hs.start):
            m.d.sync += [run.eq(1), r.eq(0), a.eq(0), b.eq(0)]
        # the bases follow the counters; they are loaded from the consts one cycle after start
        first = Signal(name="t_first")
        m.d.sync += first.eq(hs.start)
        m.d.comb += [rd.en.eq(adv), rd.addr.eq(k.tb + b)]
        with m.If(first):
            m.d.sync += [wr.eq(k.wb), aa.eq(k.ab)]
        with m.If(adv):
            m.d.sync += o.valid.eq(run & ~first)
            with m.If(run & ~first):
                m.d.sync += [o.payload.wr.eq(wr), o.payload.aa.eq(aa),
                             o.payload.last.eq((r == k.rl) & (a == k.al) & (b == k.bl))]
                with m.If(b == k.bl):
                    m.d.sync += b.eq(0)
                    with m.If(a == k.al):
                        m.d.sync += [a.eq(0), aa.eq(k.ab), r.eq(r + 1), wr.eq(wr + k.swr)]
                        with m.If(r == k.rl):
                            m.d.sync += run.eq(0)
                    with m.Else():
                        m.d.sync += [a.eq(a + 1), aa.eq(aa + k.saa)]
                with m.Else():
                    m.d.sync += b.eq(b + 1)
        m.d.comb += [o.payload.start.eq(rd.data.start), o.payload.cnt.eq(rd.data.cnt)]

    # ------------------------------------------------------------------ beats and operands
    def _beats(self, m, k, entries, tiles, o):
        """Stage 0: the beat counters (c, j) of the current tile and the entry ROM read; stage 1:
        the addresses; stage 2: the operand reads; their output is the array's input."""
        p, R = self.plan, self.plan.rows
        adv = Signal()
        m.d.comb += adv.eq(~o.valid | o.ready)
        e1w = max(1, max(e[0] for e in entries).bit_length())
        e2w = max(1, max(e[1] for e in entries).bit_length())
        # one word per beat: the two operand offsets and the zero-tap flag
        lay = data.StructLayout({"e1": unsigned(e1w), "e2": unsigned(e2w), "z": unsigned(1)})
        rom = Memory(shape=lay, depth=len(entries), init=[{"e1": e1, "e2": e2, "z": z} for e1, e2, z in entries])
        m.submodules.entry_rom = rom
        erd = rom.read_port()

        # stage 0
        in_tile = Signal(name="in_tile")
        cur = Signal.like(tiles.payload, name="cur")
        c = Signal(range(max(2, max(op.nc for op in p.mac_ops.values()))), name="c")
        j = Signal.like(tiles.payload.cnt, name="j")
        wc = Signal.like(tiles.payload.wr, name="wc")
        ac = Signal.like(tiles.payload.aa, name="ac")
        eaddr = Signal.like(tiles.payload.start, name="eaddr")
        tile_end = Signal()
        m.d.comb += tile_end.eq(in_tile & (c == k.cl) & (j == cur.cnt))
        take = Signal()
        m.d.comb += [take.eq(adv & tiles.valid & (~in_tile | tile_end)), tiles.ready.eq(take)]
        v1, l1 = Signal(name="v1"), Signal(name="l1")
        w1, a1 = Signal.like(wc, name="w1"), Signal.like(ac, name="a1")
        m.d.comb += [erd.en.eq(adv), erd.addr.eq(eaddr)]
        with m.If(adv):
            m.d.sync += [v1.eq(in_tile), l1.eq(tile_end), w1.eq(wc), a1.eq(ac)]
            with m.If(in_tile):
                with m.If(j == cur.cnt):
                    m.d.sync += [j.eq(0), c.eq(c + 1), eaddr.eq(cur.start), wc.eq(wc + k.swc), ac.eq(ac + k.sac)]
                with m.Else():
                    m.d.sync += [j.eq(j + 1), eaddr.eq(eaddr + 1)]
                with m.If(tile_end):
                    m.d.sync += in_tile.eq(0)
            with m.If(take):
                m.d.sync += [in_tile.eq(1), cur.eq(tiles.payload), c.eq(0), j.eq(0),
                             eaddr.eq(tiles.payload.start), wc.eq(tiles.payload.wr), ac.eq(tiles.payload.aa)]
        # stage 1: entry -> addresses
        e1 = erd.data.e1
        e2 = erd.data.e2
        z1 = erd.data.z
        v2, l2, z2 = Signal(name="v2"), Signal(name="l2"), Signal(name="z2")
        wa2 = Signal.like(wc, name="wa2")
        aa2 = Signal.like(ac, name="aa2")
        with m.If(adv):
            m.d.sync += [v2.eq(v1), l2.eq(l1), z2.eq(z1), wa2.eq(w1 + e1), aa2.eq(a1 + e2)]
        # stage 2: operand reads (the memory output is the array's input)
        for idx, name in enumerate(W_SOURCES):
            port = getattr(self, f"rd_{name}")
            m.d.comb += [port.en.eq(adv & v2 & (k.wsel == idx)), port.addr.eq(wa2)]
        for idx, name in enumerate(A_SOURCES):
            port = getattr(self, f"rd_{name}")
            m.d.comb += [port.en.eq(adv & v2 & (k.asel == idx)), port.addr.eq(aa2)]
        z3 = Signal(name="z3")
        with m.If(adv):
            m.d.sync += [o.valid.eq(v2), o.payload.last.eq(l2), z3.eq(z2)]
        for i in range(R):
            lanes = [getattr(self, f"rd_{name}").data[i] for name in W_SOURCES]
            m.d.comb += o.payload.w[i].eq(pick(k.wsel, lanes))
        act = self.rd_act.data
        act_s = Cat(act, Const(0, 1)).as_signed()
        dacc = self.rd_dacc.data
        m.d.comb += o.payload.a[0].eq(Mux(z3, 0, Mux(k.asel == 0, act_s, dacc)))

    # ------------------------------------------------------------------ writer
    def _writer(self, m, hs, k, rows_in):
        """Row i of each tile to its address; the (masked) max; ``done`` after the last tile."""
        p, R = self.plan, self.plan.rows
        m.d.comb += rows_in.ready.eq(1)
        ab = max(getattr(self, f"wr_{d}").addr.shape().width for d in DESTINATIONS) + 2
        i = Signal(range(R), name="wi")
        b = Signal.like(k.bl, name="wb_")
        a = Signal.like(k.al, name="wa_")
        r = Signal.like(k.rl, name="wr_")
        rbase = Signal(unsigned(ab + 2), name="rbase")
        abase = Signal(unsigned(ab + 2), name="abase")
        row = Signal(unsigned(ab + 2), name="rowaddr")
        ridx = Signal(range(16 * max(op.nr for op in p.mac_ops.values()) + 1), name="ridx")
        rtile = Signal.like(ridx, name="rtile")
        first = Signal(name="w_first")
        m.d.sync += first.eq(hs.start)
        take = rows_in.valid
        y = rows_in.payload.y[0]
        with m.If(first):
            m.d.sync += [i.eq(0), b.eq(0), a.eq(0), r.eq(0), rbase.eq(k.ob), abase.eq(0), row.eq(k.ob),
                         ridx.eq(0), rtile.eq(0)]
        last_row = Signal()
        m.d.comb += last_row.eq(take & (i == R - 1) & (b == k.bl) & (a == k.al) & (r == k.rl))
        with m.If(take):
            with m.If(i == R - 1):
                m.d.sync += i.eq(0)
                with m.If(b == k.bl):
                    m.d.sync += b.eq(0)
                    with m.If(a == k.al):
                        m.d.sync += [a.eq(0), abase.eq(0), r.eq(r + 1), rbase.eq(rbase + k.stile),
                                     row.eq(rbase + k.stile), rtile.eq(rtile + R), ridx.eq(rtile + R)]
                    with m.Else():
                        m.d.sync += [a.eq(a + 1), abase.eq(abase + k.soa), row.eq(rbase + abase + k.soa),
                                     ridx.eq(rtile)]
                with m.Else():
                    m.d.sync += [b.eq(b + 1), row.eq(rbase + abase + b + 1), ridx.eq(rtile)]
            with m.Else():
                m.d.sync += [i.eq(i + 1), row.eq(row + k.srow), ridx.eq(ridx + 1)]
        ok = Signal()
        m.d.comb += ok.eq(take & (ridx < k.rows))
        for idx, name in enumerate(DESTINATIONS):
            port = getattr(self, f"wr_{name}")
            m.d.comb += [port.en.eq(ok & (k.osel == idx)), port.addr.eq(row), port.data.eq(y)]
        m.d.comb += [self.rd_mask.en.eq(ok & k.masked), self.rd_mask.addr.eq(row + k.moff)]
        # the max of what was written (da: times the mask read at the same address)
        m.submodules.tracker = tr = MaxTracker(self.cfg.acc_bits)
        v1, ok1, l1 = Signal.like(y, name="y1"), Signal(name="ok1"), Signal(name="last1")
        m.d.sync += [v1.eq(y), ok1.eq(ok), l1.eq(last_row)]
        l2 = Signal(name="last2")
        m.d.sync += l2.eq(l1)
        m.d.comb += [tr.clear.eq(hs.start), tr.take.eq(ok1 & (~k.masked | self.rd_mask.data)),
                     tr.value.eq(v1)]
        with m.If(l2):
            hs.finish(bits=tr.bits)
