"""Issue stage of the accelerator: the loop over (layer, tile, group, channel, kernel tap), im2col
addressing and the weight ROM, feeding the MAC array one K-step per cycle.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_layers import bits_for
from l1bn.hw.accel_plan import ISSUE_STAGES, Plan
from l1bn.hw.arith import pick
from l1bn.hw.bram import BankedMemory
from l1bn.hw.mac_array import in_layout
from l1bn.hw.mac_tree import tree_array_in_layout

__all__ = ["Issuer", "LayerConsts", "SplitRom", "TABLE_LUT_DEPTH", "read_signature"]

#: im2col tables up to this many entries are LUT ROMs (:class:`SplitRom`), deeper ones block RAM
TABLE_LUT_DEPTH = 256


def read_signature(cols: int, addr_bits: int, word_bits: int, act_word_bits: int | None = None) -> wiring.Signature:
    """Reads of the per-column image and activation memories: ``addr`` per column and ``en``
    out, the words of both memories in (``word_bits`` the image's, ``act_word_bits`` the
    activations', default the same), two enabled cycles after the address (the block RAM's read,
    then its output register: :class:`~l1bn.hw.bram.BankedMemory`)."""
    words = data.ArrayLayout(unsigned(word_bits), cols)
    awords = data.ArrayLayout(unsigned(word_bits if act_word_bits is None else act_word_bits), cols)
    return wiring.Signature({"addr": Out(data.ArrayLayout(unsigned(addr_bits), cols)), "en": Out(1),
                             "img": In(words), "act": In(awords)})


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

    def at(self, name, layer_expr):
        """The value of ``name`` for layer ``layer_expr`` (a mux of constants)."""
        r = self.regs[name]
        return pick(layer_expr, [Const(v, r.shape()) for v in self.table[name]])

    def load(self, layer_expr):
        for k, r in self.regs.items():
            self.m.d.sync += r.eq(self.at(k, layer_expr))


class SplitRom(wiring.Component):
    """A small ROM in LUTs read in two register stages, so that neither stage is the whole
    address decode.

    Parameters
    ----------
    width : int
        Word bits.
    init : list of int
        The words (at least one).
    lo_bits : int
        Address bits decoded in the first stage (default 6: a LUT4 and two mux levels).

    Attributes
    ----------
    r_addr : In(range(len(init))); r_en : In(1); r_data : Out(width)
        As :class:`~l1bn.hw.bram.BankedMemory`'s read port: ``r_data`` is the word at the address
        of two enabled cycles ago. First stage: every ``2**lo_bits``-word piece read at the
        address's low bits, registered, with the high bits; second stage: the piece selected by
        the registered high bits, registered. ``pieces * width + high bits + width`` flip-flops.
    """

    def __init__(self, *, width: int, init, lo_bits: int = 6):
        init = list(init)
        if width < 1 or not init or lo_bits < 1:
            raise ValueError(f"width={width}, {len(init)} words, lo_bits={lo_bits}: all must be >= 1")
        self.width, self.init, self.depth = width, init, len(init)
        abits = max(1, (self.depth - 1).bit_length())
        self.lo_bits = min(lo_bits, abits)
        super().__init__({"r_addr": In(abits), "r_en": In(1), "r_data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        lo, n = self.lo_bits, 1 << self.lo_bits
        pieces = []
        for k in range(0, self.depth, n):
            words = self.init[k:k + n]
            if self.depth > n:      # every address of the low bits exists (the last piece padded)
                words += [0] * (n - len(words))
            mem = Memory(shape=unsigned(self.width), depth=len(words), init=words)
            m.submodules[f"p{k // n}"] = mem
            rd = mem.read_port(domain="comb")
            q = Signal(self.width, name=f"q{k // n}", reset_less=True)
            m.d.comb += rd.addr.eq(self.r_addr[:lo])
            with m.If(self.r_en):
                m.d.sync += q.eq(rd.data)
            pieces.append(q)
        hi = Signal(max(1, len(self.r_addr) - lo), reset_less=True)
        out = Signal(self.width, reset_less=True)
        with m.If(self.r_en):
            m.d.sync += out.eq(pick(hi, pieces))
            if len(self.r_addr) > lo:
                m.d.sync += hi.eq(self.r_addr[lo:])
        m.d.comb += self.r_data.eq(out)
        return m


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
    rd : Out(read_signature(cols, addr_bits, cols * img_lane_bits, cols * act_lane_bits))
        Per-column reads: layer 0 reads the image memory, the others the activation memory (its
        lanes as narrow as the stored activations; both extended to the array's width).
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
            "o": Out(stream.Signature(tree_array_in_layout(plan.mac_cfg, plan.lanes) if plan.lanes > 1
                                      else in_layout(plan.mac_cfg, switch=plan.switch))),
            "rd": Out(read_signature(plan.cols, self.addr_bits, plan.cols * plan.img_lane_bits,
                                     plan.lanes * plan.cols * plan.act_lane_bits)),
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
        their read ports (``r_addr``, ``r_en``, ``r_data``, two enabled cycles)."""
        p = self.plan
        wb = p.mac_cfg.wbits
        # block-RAM sized banks read through their output registers (stages 3 and 4)
        m.submodules.wrom = wrd = BankedMemory(width=p.rows * p.lanes * wb, depth=len(p.weight_words),
                                               init=p.weight_words)
        ob = p.table_off_bits
        trd = []
        for j in range(p.cols):
            enc = p.table_rom(j)
            width = 1 + ob + p.lane_sel_bits
            if len(enc) <= TABLE_LUT_DEPTH:
                # in LUTs, as a two-stage ROM (a block-RAM table did not route on the digits
                # accelerator: nextpnr's router1 did not converge)
                tm = SplitRom(width=width, init=enc)
            else:
                # large tables: block-RAM sized pieces (Yosys chooses block or LUT RAM)
                tm = BankedMemory(width=width, depth=len(enc), init=enc)
            m.submodules[f"im2col{j}"] = tm
            trd.append(tm)
        return wrd, trd

    def _counters(self, m, adv):
        """Stage 0: which layer runs and when it starts (image slot full, previous layer done,
        logits free), and the counters of its beats. Returns the beat's fields for stage 1, as
        a dict: ``fire`` (a beat issues), ``tile_end``, ``layer_end``, ``is_img``, ``slot``,
        ``cbase`` (the channel's first word), ``waddr`` (weight word), ``tabs`` (the table entry, one counter per column)."""
        p = self.plan
        lps = p.layers
        nl = len(lps)
        cst = LayerConsts(m, {
            "kk_last": [lp.khkw - 1 for lp in lps], "c_last": [lp.cin - 1 for lp in lps],
            "g_last": [lp.g - 1 for lp in lps], "t_last": [lp.t - 1 for lp in lps],
            "gin": [lp.g_in for lp in lps], "k_back": [lp.k - 1 for lp in lps],
            "toff": [lp.toff for lp in lps], "base": [max(lp.in_base, 0) for lp in lps],
            "is_img": [int(i == 0) for i in range(nl)], "is_last": [int(i == nl - 1) for i in range(nl)],
            # each counter's value before its last (its wrap flag is set when it reaches it) and
            # whether its first value is already its last
            "kk_pen": [max(lp.khkw - 2, 0) for lp in lps], "c_pen": [max(lp.cin - 2, 0) for lp in lps],
            "g_pen": [max(lp.g - 2, 0) for lp in lps], "t_pen": [max(lp.t - 2, 0) for lp in lps],
            "kk_one": [int(lp.khkw == 1) for lp in lps], "c_one": [int(lp.cin == 1) for lp in lps],
            "g_one": [int(lp.g == 1) for lp in lps], "t_one": [int(lp.t == 1) for lp in lps],
            **({"xnor": [int(lp.xnor) for lp in lps]} if p.switch else {}),
            # the tree PE: the lanes that hold an input channel, in every channel group but the
            # last, and in the last
            **({"m_full": [(1 << lp.lanes) - 1 for lp in lps],
                "m_last": [(1 << lp.last_lanes) - 1 for lp in lps]} if p.lanes > 1 else {}),
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
        # the table address: one counter per column, each for its own table ROM only (a shared
        # address drove every column's ROM, a fan-out of about a thousand LUTs, and its next
        # value was routed to every copy); ``keep``: the flow keeps such registers apart even
        # where they are identical (sim/fpga/synth.py)
        tabs = [Signal(range(len(p.tables[0]) + 1), name=f"tab_col{j}", attrs={"keep": 1}) for j in range(p.cols)]
        self._tabs = tabs
        waddr = Signal(range(len(p.weight_words) + 1))
        cbase = Signal(self.addr_bits)
        m.d.comb += [in_base.eq(Mux(cst.is_img, Mux(slot, p.img_words, 0), cst.base))]

        fire = Signal()
        m.d.comb += fire.eq(busy & adv)
        # wrap flags: registered ``counter == its last value`` (set the cycle the counter reaches
        # it), so that the counters' and addresses' next values select on registers
        kk_w, c_w, g_w, t_w = (Signal(name=f"{n}_w", init=getattr(cst, f"{n}_one").init)
                               for n in ("kk", "c", "g", "t"))
        tile_end = kk_w & c_w
        layer_end = tile_end & g_w & t_w

        with m.If(self.done & (self.done_layer == layer - 1) & (layer != 0)):
            m.d.sync += got_done.eq(1)
        with m.If(self.out_taken):
            m.d.sync += out_busy.eq(0)

        def start():
            m.d.sync += [busy.eq(1), got_done.eq(0), cbase.eq(in_base), *self._set_tab(cst.toff)]
            with m.If(cst.is_last):
                m.d.sync += out_busy.eq(1)

        with m.If(~busy):
            ok = Mux(layer == 0, self.slot_full.bit_select(slot, 1), got_done) & ~(cst.is_last & out_busy)
            with m.If(ok):
                start()

        with m.If(fire):
            self._step(m, cst, (kk, c, g, t), (kk_w, c_w, g_w, t_w), waddr, cbase, in_base)
            with m.If(layer_end):
                self._next_layer(m, cst, layer, busy, slot, t, (kk_w, c_w, g_w, t_w), waddr, cbase)
        beat = {"fire": fire, "tile_end": tile_end, "layer_end": layer_end, "is_img": cst.is_img, "slot": slot,
                "cbase": cbase, "waddr": waddr, "tabs": tabs, "x": cst.xnor if p.switch else Const(0)}
        if p.lanes > 1:
            beat["mask"] = Mux(c_w, cst.m_last, cst.m_full)
        return beat

    def _set_tab(self, value):
        """Every column's table address takes ``value`` (a function of the address: each counts
        from its own register)."""
        return [t.eq(value(t) if callable(value) else value) for t in self._tabs]

    def _step(self, m, cst, counters, wraps, waddr, cbase, in_base):
        """The counters after an issued beat (innermost first: tap ``kk``, channel ``c``, group
        ``g``, tile ``t``; ``wraps``: the registered flags that each is at its last value, updated
        with it), with the table entry, weight word and channel base that follow them."""
        kk, c, g, t = counters
        kk_w, c_w, g_w, t_w = wraps
        with m.If(kk_w):
            m.d.sync += [kk.eq(0), kk_w.eq(cst.kk_one)]
            with m.If(c_w):
                m.d.sync += [c.eq(0), c_w.eq(cst.c_one), cbase.eq(in_base)]
                with m.If(g_w):
                    m.d.sync += [g.eq(0), g_w.eq(cst.g_one), *self._set_tab(cst.toff), waddr.eq(waddr + 1)]
                    with m.If(~t_w):
                        m.d.sync += [t.eq(t + 1), t_w.eq(t == cst.t_pen)]
                with m.Else():
                    m.d.sync += [g.eq(g + 1), g_w.eq(g == cst.g_pen), *self._set_tab(lambda x: x + 1),
                                 waddr.eq(waddr - cst.k_back)]
            with m.Else():
                m.d.sync += [c.eq(c + 1), c_w.eq(c == cst.c_pen), cbase.eq(cbase + cst.gin),
                             *self._set_tab(lambda x: x - cst.kk_last), waddr.eq(waddr + 1)]
        with m.Else():
            m.d.sync += [kk.eq(kk + 1), kk_w.eq(kk == cst.kk_pen), *self._set_tab(lambda x: x + 1), waddr.eq(waddr + 1)]

    def _next_layer(self, m, cst, layer, busy, slot, t, wraps, waddr, cbase):
        """After a layer's last beat: the next layer waits for this one's done pulse; after the
        last layer, layer 0 of the next image starts right away when its slot is full. The wrap
        flags start with the next layer's constants."""
        p = self.plan
        m.d.sync += t.eq(0)
        nxt = Mux(cst.is_last, 0, layer + 1)
        for w, n in zip(wraps, ("kk", "c", "g", "t"), strict=True):
            m.d.sync += w.eq(cst.at(f"{n}_one", nxt))
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
                             *self._set_tab(p.layers[0].toff), busy.eq(self.slot_full.bit_select(slot, 1))]
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
            m.d.comb += trd[j].r_addr.eq(beat["tabs"][j])
        v1, last1, img1, rel1, rs1, x1 = Signal(), Signal(), Signal(), Signal(), Signal(), Signal()
        cbase1 = Signal.like(cbase)
        waddr1 = Signal.like(waddr)
        # the tree PE's lane mask, carried along to the lane select (stage 5)
        masks = [Signal(p.lanes, name=f"mask{n}") for n in ("1", "1b", "2", "3", "4")] if p.lanes > 1 else None
        if masks:
            with m.If(adv):
                m.d.sync += [masks[0].eq(beat["mask"])] + [b.eq(a) for a, b in zip(masks[:-1], masks[1:], strict=True)]
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
        return {"v": v2, "last": last2, "img": img2, "ok": ok2, "lane": lane2, "x": x2,
                "mask4": masks[-1] if masks else None}

    def _fetch(self, m, adv, wrd, s2):
        """Stages 3, 4 and 5: the memory words (and the weight word) are read, land in the block
        RAMs' output registers (a block RAM's output is slow: no logic on it; the bank select
        follows the register), and each column's lane is selected (0 for padding) into the array's
        input register ``o``."""
        p = self.plan
        C, LB, ALB, lw = p.cols, p.img_lane_bits, p.act_lane_bits, p.lane_sel_bits
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
        act4 = [Signal(p.lanes * C * ALB, name=f"act4_{j}") for j in range(C)]
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
            if p.lanes > 1:
                self._tree_lanes(m, s2["mask4"], ok4, lane4, src4, img4, act4)
                return
            for j in range(C):
                if ALB == LB:
                    word = Mux(src4, img4[j], act4[j])
                    lanes = [word[n * LB:(n + 1) * LB] for n in range(C)]
                    m.d.sync += self.o.payload.a[j].eq(Mux(ok4[j], pick(lane4[j], lanes)[:len(self.o.payload.a[j])], 0))
                    continue
                # activation lanes narrower than the pixels': each word's lane is picked, then
                # extended (two's complement where any value is signed) to the array's width
                na = len(self.o.payload.a[j])

                def lane_of(word, bits, j=j, na=na):
                    v = pick(lane4[j], [word[n * bits:(n + 1) * bits] for n in range(C)])
                    v = v.as_signed() if p.signed_acts else v
                    return v if len(v) <= na else v[:na]
                m.d.sync += self.o.payload.a[j].eq(Mux(ok4[j], Mux(src4, lane_of(img4[j], LB), lane_of(act4[j], ALB)), 0))

    def _tree_lanes(self, m, mask4, ok4, lane4, src4, img4, act4):
        """Stage 5 of the tree PE: column ``j``, lane ``d`` takes lane ``lane4[j]`` of channel
        group ``d`` of its activation word (``lanes`` groups of ``cols`` lanes), or of the image
        word in lane 0 (the image memory holds one channel per word); 0 for padding and for lanes
        past the input channels (``mask4``)."""
        p = self.plan
        C, LB, ALB, D = p.cols, p.img_lane_bits, p.act_lane_bits, p.lanes
        for j in range(C):
            na = len(self.o.payload.a[j][0])

            def lane_of(word, bits, j=j, na=na):
                v = pick(lane4[j], [word[n * bits:(n + 1) * bits] for n in range(C)])
                v = v.as_signed() if p.signed_acts else v
                return v if len(v) <= na else v[:na]
            for d in range(D):
                act = lane_of(act4[j][d * C * ALB:(d + 1) * C * ALB], ALB)
                val = Mux(src4, lane_of(img4[j], LB), act) if d == 0 else Mux(src4, 0, act)
                m.d.sync += self.o.payload.a[j][d].eq(Mux(ok4[j] & mask4[d], val, 0))
