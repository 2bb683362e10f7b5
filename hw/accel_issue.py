"""Issue stage of the accelerator: the loop over (layer, tile, group, channel, kernel tap), im2col
addressing and the weight ROM, feeding the MAC array one K-step per cycle.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_layers import bits_for
from l1bn.hw.accel_plan import ISSUE_STAGES, Plan
from l1bn.hw.arith import pick
from l1bn.hw.bram import BankedMemory
from l1bn.hw.mac_array import in_layout

__all__ = ["Issuer", "LayerConsts", "read_signature"]


def read_signature(cols: int, addr_bits: int, word_bits: int) -> wiring.Signature:
    """Reads of the per-column image and activation memories: ``addr`` per column and ``en``
    out, the words of both memories in, two enabled cycles after the address (the block RAM's read,
    then its output register: :class:`~l1bn.hw.bram.BankedMemory`)."""
    words = data.ArrayLayout(unsigned(word_bits), cols)
    return wiring.Signature({"addr": Out(data.ArrayLayout(unsigned(addr_bits), cols)), "en": Out(1),
                             "img": In(words), "act": In(words)})


class LayerConsts:
    """Per-layer constants held in registers, loaded when the layer changes, so the counters
    compare register against register.

    ``table`` maps a name to its value per layer; ``consts.<name>`` is the register (reset: the
    value of layer 0) and ``load(layer_expr)`` loads every register for that layer.
    """

    def __init__(self, m, table: dict):
        self.m, self.table = m, table
        self.regs = {k: Signal(range(max(max(v) + 1, 2)), name=f"cur_{k}", init=v[0]) for k, v in table.items()}

    def __getattr__(self, name):
        return self.regs[name]

    def load(self, layer_expr):
        for k, r in self.regs.items():
            self.m.d.sync += r.eq(pick(layer_expr, [Const(v, r.shape()) for v in self.table[k]]))


class Issuer(wiring.Component):
    """Streams every K-step of every layer into the MAC array.

    Parameters
    ----------
    plan : Plan
        Layout of the network (:mod:`l1bn.hw.accel_plan`).

    Attributes
    ----------
    o : Out(stream.Signature(in_layout(plan.mac_cfg)))
        To the MAC array: ``rows`` weights and ``cols`` activations of one K-step, ``last`` on a
        tile's final step; with ``plan.switch``, ``x`` on the beats of a layer on the XNOR path
        (``plan.xnor_layers``). Registered.
    rd : Out(read_signature(cols, addr_bits, cols * lane_bits))
        Per-column reads: layer 0 reads the image memory, the others the activation memory.
    slot_full : In(2); release : Out(2)
        Image slots from :class:`~l1bn.hw.accel_loader.ImageLoader`; ``release`` pulses once
        layer 0 has read its slot's last word.
    done : In(1); done_layer : In(range(layers))
        From the writeback: layer ``done_layer`` is completely written (pulse). Layer ``L + 1``
        starts on the done pulse of layer ``L``.
    out_taken : In(1)
        The output beat was taken: the logits registers are free for the next image.

    Schedule
    --------
    For each layer: for ``t`` in ``T``, ``g`` in ``G``, ``c`` in ``C``, ``(ky, kx)``: one beat.
    The last layer's final beat is followed, in the next cycle, by layer 0's first beat of the
    next image when its slot is full (no idle cycles between images); the last layer itself
    waits until the previous image's output was taken.

    Timing
    ------
    ``ISSUE_STAGES`` = 6 cycles from a beat's counters to the array input: im2col table read,
    table entry register, address add, memory read, the memory's output register (DP16KD
    ``REGMODE=OUTREG`` after synthesis), bank and lane select. All stages stall together on ``o.ready``.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.addr_bits = bits_for(max(plan.act_depth, 2 * plan.img_words))
        nl = len(plan.layers)
        super().__init__({
            "o": Out(stream.Signature(in_layout(plan.mac_cfg, switch=plan.switch))),
            "rd": Out(read_signature(plan.cols, self.addr_bits, plan.cols * plan.lane_bits)),
            "slot_full": In(2),
            "release": Out(2),
            "done": In(1),
            "done_layer": In(range(max(nl, 2))),
            "out_taken": In(1),
        })

    def elaborate(self, platform):
        # One pipeline of ISSUE_STAGES register stages that all advance together (``adv``: the
        # output register is empty or taken). Each part is a method below: the ROMs, stage 0
        # (the layer/tile/group/channel/tap counters), stages 1..2 (the im2col table, the memory
        # addresses), stages 3..5 (the memory words, the lane select into ``o``).
        m = Module()
        assert ISSUE_STAGES == 6
        wrd, trd = self._roms(m)
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        for port in trd:
            m.d.comb += port.r_en.eq(adv)
        m.d.comb += wrd.r_en.eq(adv)
        m.d.comb += self.rd.en.eq(adv)
        beat = self._counters(m, adv)
        s2 = self._address(m, adv, trd, wrd, beat)
        self._fetch(m, adv, wrd, s2)
        return m

    def _roms(self, m):
        """The weight ROM (all layers; a word = ``rows`` weights of one K-step) and one im2col
        table ROM per column (valid, word offset, lane per tap: ``accel_plan.table_entry_layout``):
        their read ports."""
        p = self.plan
        wb = p.mac_cfg.wbits
        # block-RAM sized banks read through their output registers (stages 3 and 4)
        m.submodules.wrom = wrd = BankedMemory(width=p.rows * wb, depth=len(p.weight_words), init=p.weight_words)
        ob = p.table_off_bits
        trd = []
        for j in range(p.cols):
            enc = p.table_rom(j)
            # read through a register (stage 1b); Yosys builds small tables from LUTs (as block
            # RAM, block=True, nextpnr's router1 did not converge on the digits accelerator)
            tm = BankedMemory(width=1 + ob + p.lane_sel_bits, depth=len(enc), init=enc)
            m.submodules[f"im2col{j}"] = tm
            trd.append(tm)
        return wrd, trd

    def _counters(self, m, adv):
        """Stage 0: which layer runs and when it starts (image slot full, previous layer done,
        logits free), and the counters of its beats. Returns the beat's fields for stage 1, as
        a dict: ``fire`` (a beat issues), ``tile_end``, ``layer_end``, ``is_img``, ``slot``,
        ``cbase`` (the channel's first word), ``waddr`` (weight word), ``tab`` (table entry)."""
        p = self.plan
        lps = p.layers
        nl = len(lps)
        cst = LayerConsts(m, {
            "kk_last": [lp.khkw - 1 for lp in lps], "c_last": [lp.cin - 1 for lp in lps],
            "g_last": [lp.g - 1 for lp in lps], "t_last": [lp.t - 1 for lp in lps],
            "gin": [lp.g_in for lp in lps], "k_back": [lp.k - 1 for lp in lps],
            "toff": [lp.toff for lp in lps], "base": [max(lp.in_base, 0) for lp in lps],
            "is_img": [int(i == 0) for i in range(nl)], "is_last": [int(i == nl - 1) for i in range(nl)],
            **({"xnor": [int(lp.xnor) for lp in lps]} if p.switch else {}),
        })
        layer = Signal(range(max(nl, 2)))
        busy = Signal()
        slot = Signal()            # image slot that layer 0 reads next
        got_done = Signal()
        out_busy = Signal()        # logits registers claimed by an image not yet taken
        in_base = Signal(self.addr_bits)   # cst.base, or the slot's first word for layer 0
        kk = Signal(cst.kk_last.shape())
        c = Signal(cst.c_last.shape())
        g = Signal(cst.g_last.shape())
        t = Signal(cst.t_last.shape())
        tab = Signal(range(len(p.tables[0]) + 1))
        waddr = Signal(range(len(p.weight_words) + 1))
        cbase = Signal(self.addr_bits)
        m.d.comb += [in_base.eq(Mux(cst.is_img, Mux(slot, p.img_words, 0), cst.base))]

        fire = Signal()
        m.d.comb += fire.eq(busy & adv)
        kk_w, c_w, g_w, t_w = kk == cst.kk_last, c == cst.c_last, g == cst.g_last, t == cst.t_last
        tile_end = kk_w & c_w
        layer_end = tile_end & g_w & t_w

        with m.If(self.done & (self.done_layer == layer - 1) & (layer != 0)):
            m.d.sync += got_done.eq(1)
        with m.If(self.out_taken):
            m.d.sync += out_busy.eq(0)

        def start():
            m.d.sync += [busy.eq(1), got_done.eq(0), cbase.eq(in_base), tab.eq(cst.toff)]
            with m.If(cst.is_last):
                m.d.sync += out_busy.eq(1)

        with m.If(~busy):
            ok = Mux(layer == 0, self.slot_full.bit_select(slot, 1), got_done) & ~(cst.is_last & out_busy)
            with m.If(ok):
                start()

        with m.If(fire):
            self._step(m, cst, (kk, c, g, t), (kk_w, c_w, g_w, t_w), tab, waddr, cbase, in_base)
            with m.If(layer_end):
                self._next_layer(m, cst, layer, busy, slot, t, tab, waddr, cbase)
        return {"fire": fire, "tile_end": tile_end, "layer_end": layer_end, "is_img": cst.is_img, "slot": slot,
                "cbase": cbase, "waddr": waddr, "tab": tab, "x": cst.xnor if p.switch else Const(0)}

    def _step(self, m, cst, counters, wraps, tab, waddr, cbase, in_base):
        """The counters after an issued beat (innermost first: tap ``kk``, channel ``c``, group
        ``g``, tile ``t``; ``wraps``: each is at its last value), with the table entry, weight
        word and channel base that follow them."""
        kk, c, g, t = counters
        kk_w, c_w, g_w, t_w = wraps
        with m.If(kk_w):
            m.d.sync += kk.eq(0)
            with m.If(c_w):
                m.d.sync += [c.eq(0), cbase.eq(in_base)]
                with m.If(g_w):
                    m.d.sync += [g.eq(0), tab.eq(cst.toff), waddr.eq(waddr + 1)]
                    with m.If(~t_w):
                        m.d.sync += t.eq(t + 1)
                with m.Else():
                    m.d.sync += [g.eq(g + 1), tab.eq(tab + 1), waddr.eq(waddr - cst.k_back)]
            with m.Else():
                m.d.sync += [c.eq(c + 1), cbase.eq(cbase + cst.gin), tab.eq(tab - cst.kk_last),
                             waddr.eq(waddr + 1)]
        with m.Else():
            m.d.sync += [kk.eq(kk + 1), tab.eq(tab + 1), waddr.eq(waddr + 1)]

    def _next_layer(self, m, cst, layer, busy, slot, t, tab, waddr, cbase):
        """After a layer's last beat: the next layer waits for this one's done pulse; after the
        last layer, layer 0 of the next image starts right away when its slot is full."""
        p = self.plan
        m.d.sync += t.eq(0)
        with m.If(cst.is_img):
            m.d.sync += slot.eq(~slot)
        if len(p.layers) == 1:
            # the only layer is also the last: the next image waits for the output beat
            m.d.sync += [busy.eq(0), waddr.eq(0)]
        else:
            with m.If(cst.is_last):
                # next image: layer 0 right away when its slot (toggled when layer 0
                # ended) is full
                m.d.sync += [layer.eq(0), waddr.eq(0), cbase.eq(Mux(slot, p.img_words, 0)),
                             tab.eq(p.layers[0].toff), busy.eq(self.slot_full.bit_select(slot, 1))]
                cst.load(Const(0))
            with m.Else():
                m.d.sync += [layer.eq(layer + 1), busy.eq(0)]
                cst.load(layer + 1)

    def _address(self, m, adv, trd, wrd, beat):
        """Stages 1, 1b and 2: the im2col table read (address ``tab``), its entry registered,
        then the memory addresses ``cbase + offset`` (to ``rd.addr``), the lane and the padding
        flag; the weight ROM's address; ``release`` after layer 0's last read of its slot.
        Returns stage 2's fields for :meth:`_fetch`."""
        p = self.plan
        C, ob, lw = p.cols, p.table_off_bits, p.lane_sel_bits
        cbase, waddr = beat["cbase"], beat["waddr"]
        # ---- stage 1: table read (addr = tab); carry the beat's fields along
        for j in range(C):
            m.d.comb += trd[j].r_addr.eq(beat["tab"])
        v1, last1, img1, rel1, rs1, x1 = Signal(), Signal(), Signal(), Signal(), Signal(), Signal()
        cbase1 = Signal.like(cbase)
        waddr1 = Signal.like(waddr)
        with m.If(adv):
            m.d.sync += [v1.eq(beat["fire"]), last1.eq(beat["tile_end"]), img1.eq(beat["is_img"]), x1.eq(beat["x"]),
                         rel1.eq(beat["layer_end"] & beat["is_img"]), rs1.eq(beat["slot"]),
                         cbase1.eq(cbase), waddr1.eq(waddr)]

        # ---- stage 1b: the table entries registered (a table ROM in LUTs is a mux tree: the add
        # after it gets its own cycle)
        v1b, last1b, img1b, rel1b, rs1b, x1b = Signal(), Signal(), Signal(), Signal(), Signal(), Signal()
        cbase1b = Signal.like(cbase)
        waddr1b = Signal.like(waddr)
        ent1b = [trd[j].r_data for j in range(C)]     # the table's output register
        with m.If(adv):
            m.d.sync += [v1b.eq(v1), last1b.eq(last1), img1b.eq(img1), rel1b.eq(rel1), rs1b.eq(rs1),
                         cbase1b.eq(cbase1), waddr1b.eq(waddr1), x1b.eq(x1)]
        v1, last1, img1, rel1, rs1, cbase1, waddr1, x1 = v1b, last1b, img1b, rel1b, rs1b, cbase1b, waddr1b, x1b

        # ---- stage 2: memory addresses (cbase + table offset), lane and padding flag
        v2, last2, img2, rel2, rs2, x2 = Signal(), Signal(), Signal(), Signal(), Signal(), Signal()
        addr2 = [Signal(self.addr_bits, name=f"addr2_{j}") for j in range(C)]
        ok2 = [Signal(name=f"ok2_{j}") for j in range(C)]
        lane2 = [Signal(lw, name=f"lane2_{j}") for j in range(C)]
        waddr2 = Signal.like(waddr)
        with m.If(adv):
            m.d.sync += [v2.eq(v1), last2.eq(last1), img2.eq(img1), rel2.eq(rel1), rs2.eq(rs1), waddr2.eq(waddr1),
                         x2.eq(x1)]
            for j in range(C):
                ent = ent1b[j]
                m.d.sync += [addr2[j].eq(cbase1 + ent[1:1 + ob]), ok2[j].eq(ent[0]), lane2[j].eq(ent[1 + ob:])]
        for j in range(C):
            m.d.comb += self.rd.addr[j].eq(addr2[j])
        m.d.comb += wrd.r_addr.eq(waddr2)
        # layer 0's last read happens at this edge: the loader may refill the slot afterwards
        m.d.sync += self.release.eq(0)
        with m.If(adv & v2 & rel2):
            m.d.sync += self.release.eq(Mux(rs2, 0b10, 0b01))
        return {"v": v2, "last": last2, "img": img2, "ok": ok2, "lane": lane2, "x": x2}

    def _fetch(self, m, adv, wrd, s2):
        """Stages 3, 4 and 5: the memory words (and the weight word) are read, land in the block
        RAMs' output registers (a block RAM's output is slow: no logic on it; the bank select
        follows the register), and each column's lane is selected (0 for padding) into the array's
        input register ``o``."""
        p = self.plan
        C, LB, lw = p.cols, p.lane_bits, p.lane_sel_bits
        ok2, lane2 = s2["ok"], s2["lane"]
        # ---- stage 3: memory words (and the weight word) arrive
        v3, last3, img3, x3 = Signal(), Signal(), Signal(), Signal()
        ok3 = [Signal(name=f"ok3_{j}") for j in range(C)]
        lane3 = [Signal(lw, name=f"lane3_{j}") for j in range(C)]
        with m.If(adv):
            m.d.sync += [v3.eq(s2["v"]), last3.eq(s2["last"]), img3.eq(s2["img"]), x3.eq(s2["x"])]
            for j in range(C):
                m.d.sync += [ok3[j].eq(ok2[j]), lane3[j].eq(lane2[j])]

        # ---- stage 4: the memory words in the block RAMs' output registers (a block RAM read
        # without its output register is slow: no logic on it)
        v4, last4, x4 = Signal(), Signal(), Signal()
        ok4 = [Signal(name=f"ok4_{j}") for j in range(C)]
        lane4 = [Signal(lw, name=f"lane4_{j}") for j in range(C)]
        img4 = [Signal(C * LB, name=f"img4_{j}") for j in range(C)]
        act4 = [Signal(C * LB, name=f"act4_{j}") for j in range(C)]
        src4 = Signal()
        with m.If(adv):
            m.d.sync += [v4.eq(v3), last4.eq(last3), src4.eq(img3), x4.eq(x3)]
            for j in range(C):
                m.d.sync += [ok4[j].eq(ok3[j]), lane4[j].eq(lane3[j])]
        # the words themselves come out of the memories' output registers
        w4 = wrd.r_data
        m.d.comb += [img4[j].eq(self.rd.img[j]) for j in range(C)]
        m.d.comb += [act4[j].eq(self.rd.act[j]) for j in range(C)]

        # ---- stage 5: lane select (0 for padding) into the array's input register
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(v4), self.o.payload.last.eq(last4), self.o.payload.w.eq(w4)]
            if p.switch:
                m.d.sync += self.o.payload.x.eq(x4)
            for j in range(C):
                word = Mux(src4, img4[j], act4[j])
                lanes = [word[n * LB:(n + 1) * LB] for n in range(C)]
                m.d.sync += self.o.payload.a[j].eq(Mux(ok4[j], pick(lane4[j], lanes)[:len(self.o.payload.a[j])], 0))
