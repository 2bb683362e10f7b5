"""Writeback stage of the accelerator: MAC result rows -> folded BN, requantize -> activation
memory, or (last layer) logits registers, argmax and the output beat.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_issue import LayerConsts
from l1bn.hw.accel_layers import bits_for, output_layout
from l1bn.hw.accel_loader import mem_write_signature
from l1bn.hw.accel_plan import Plan
from l1bn.hw.arith import Pipe, pick, rnd
from l1bn.hw.mac_array import out_layout
from l1bn.spec.config import signed_bits

__all__ = ["Writeback"]


class Writeback(wiring.Component):
    """Turns each MAC result row into one activation word, or into logits for the last layer.

    Parameters
    ----------
    plan : Plan

    Attributes
    ----------
    i : In(stream.Signature(out_layout(plan.mac_cfg)))
        From the MAC array: result rows in order (row ``r`` of tile ``(t, g)`` is channel
        ``t*rows + r``, positions ``g*cols ..``). Always ready.
    wr : Out(mem_write_signature(addr_bits, cols * act_lane_bits))
        Whole-word writes of every column's activation memory: channel ``o``, group ``g`` at
        word ``out_base + o*G + g``; rows past the layer's channel count are not written.
    o : Out(stream.Signature(output_layout(classes, logit_bits)))
        The image's logits and the index of their first maximum; held until ``ready``.
    done : Out(1); done_layer : Out(range(layers))
        Registered pulse, the cycle after a layer's last word was written.

    Arithmetic
    ----------
    ``z = acc * mult[o] + bias[o]`` (``acc_bits x mult_bits`` signed product, MULT18X18D-sized
    parts), then ``y = clamp((z + 2**(shift-1)) >> shift, 0, 2**out_bits - 1)``
    (:func:`l1bn.hw.arith.requantize`), the integer reference's rule
    (``docs/arith/inference_bn.md``).

    Timing
    ------
    ``plan.wb_stages`` cycles from a row's handshake to its memory write: accumulator register,
    the product (:func:`l1bn.hw.arith.mul_latency`), ``+ bias``, requantize. The logits are
    updated one cycle after the row's handshake; their argmax takes ``plan.argmax_stages``
    (``2 * ceil(log2(classes))``: compare, then select, per level) cycles after the last one; then
    the output beat is valid.
    """

    def __init__(self, plan: Plan, *, addr_bits: int):
        self.plan, self.addr_bits = plan, addr_bits
        nl = len(plan.layers)
        super().__init__({
            "i": In(stream.Signature(out_layout(plan.mac_cfg))),
            # (the tree PE writes whole words: one enable)
            "wr": Out(mem_write_signature(addr_bits, plan.lanes * plan.cols * plan.act_lane_bits,
                                          1 if plan.lanes > 1 else (plan.cols if plan.pooled else 1))),
            "o": Out(stream.Signature(output_layout(plan.classes, plan.logit_bits))),
            "done": Out(1),
            "done_layer": Out(range(max(nl, 2))),
        })

    def elaborate(self, platform):
        # A row at the input: counters say which channel and word it is (stage 0); stage 1
        # registers it with the mult/bias word; the last layer's rows update the logits and the
        # argmax, the others go through the product, + bias and requantize stages to the
        # activation memory. Each part is a method below.
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        mbrd = self._rom(m)
        row = self._counters(m, mbrd)
        s1 = self._register_row(m, row)
        self._logits(m, s1, mbrd)
        self._requantize(m, s1, mbrd)
        return m

    def _rom(self, m):
        """The mult/bias ROM, one ``(mult, bias)`` word per padded channel: its read port."""
        p = self.plan
        mb, bb = p.mult_bits, p.bias_bits
        words = p.mb_rom   # mult (low bits), bias (accel_plan.mb_word_layout)
        m.submodules.mbrom = mbrom = Memory(shape=unsigned(mb + bb), depth=len(words), init=words)
        mbrd = mbrom.read_port(domain="sync")
        return mbrd

    def _counters(self, m, mbrd):
        """Stage 0: the counters of the row at the input (row ``wi`` of group ``wg`` of tile
        ``wt`` of ``layer``; channel ``ch``, the ROM address and the activation word it goes
        to). Returns the row's fields for stage 1, as a dict."""
        p = self.plan
        R = p.rows
        lps = p.layers
        nl = len(lps)
        cst = LayerConsts(m, {
            "g_last": [lp.g - 1 for lp in lps], "t_last": [lp.t - 1 for lp in lps],
            "gw": [lp.g_out for lp in lps], "rg": [(R // p.lanes - 1) * lp.g_out for lp in lps],
            **({"pooled": [int(lp.pool_cols > 0) for lp in lps]} if p.pooled else {}),
            "chans": [lp.channels for lp in lps], "out_base": [max(lp.out_base, 0) for lp in lps],
            "is_last": [int(i == nl - 1) for i in range(nl)],
            # the layer after this one, and its first output word; whether the next layer is the
            # last (the mult/bias address parks at 0 for it); the wrap flags' constants
            "nxt": [(i + 1) % nl for i in range(nl)],
            "nxt_base": [max(lps[(i + 1) % nl].out_base, 0) for i in range(nl)],
            "nxt_last": [int((i + 1) % nl == nl - 1) for i in range(nl)],
            "g_pen": [max(lp.g - 2, 0) for lp in lps], "t_pen": [max(lp.t - 2, 0) for lp in lps],
            "g_one": [int(lp.g == 1) for lp in lps], "t_one": [int(lp.t == 1) for lp in lps],
        })
        layer = Signal(range(max(nl, 2)))
        wi = Signal(range(max(R, 2)))
        wg = Signal(cst.g_last.shape())
        wt = Signal(cst.t_last.shape())
        ch = Signal(range(max(lp.t * R for lp in lps) + 1))
        mba = Signal(range(len(p.mb_words or [0]) + 1))
        waddr = Signal(self.addr_bits, init=max(lps[0].out_base, 0))   # layer 0 of the first image
        # max-pooled layers: group g is pooled position g, lane g % cols of word g // cols
        # (designs without pooling have no lane counter: every group fills a word)
        wl = Signal(range(max(p.cols, 2))) if p.pooled else None
        wrap = ((wl == p.cols - 1) | ~cst.pooled) if p.pooled else 1
        # the tree PE: ``lanes`` channels share a word; channel ``ch`` is in channel lane
        # ``wd = ch % lanes`` (rows is a multiple of lanes, so a tile starts at lane 0), and the
        # word advances past every ``lanes``-th row
        wd = Signal(range(p.lanes), name="wd") if p.lanes > 1 else None
        step = (wd == p.lanes - 1) if wd is not None else 1
        # wrap flags, registered (``counter == its last value``, set the cycle it gets there)
        row_last = Signal(init=int(R == 1))
        g_w, t_w = Signal(init=cst.g_one.init), Signal(init=cst.t_one.init)
        layer_end = row_last & g_w & t_w
        fire = self.i.valid
        # the mult/bias ROM's address is the counter itself (a register): the last layer reads
        # its classifier-bias words when it has them (they follow the others), otherwise word 0,
        # its counter parked there
        park = Const(0, 1) if p.logit_bias else cst.is_last
        m.d.comb += mbrd.addr.eq(mba)
        with m.If(fire):
            if wd is not None:
                m.d.sync += wd.eq(Mux(step, 0, wd + 1))
            with m.If(row_last):
                m.d.sync += [wi.eq(0), row_last.eq(R == 1)]
                with m.If(g_w):
                    m.d.sync += [wg.eq(0), g_w.eq(cst.g_one), ch.eq(ch + 1), waddr.eq(waddr + 1)]
                    with m.If(~park):
                        m.d.sync += mba.eq(mba + 1)
                    if p.pooled:
                        m.d.sync += wl.eq(0)
                    with m.If(~t_w):
                        m.d.sync += [wt.eq(wt + 1), t_w.eq(wt == cst.t_pen)]
                with m.Else():
                    m.d.sync += [wg.eq(wg + 1), g_w.eq(wg == cst.g_pen), ch.eq(ch - (R - 1)),
                                 waddr.eq(waddr - cst.rg + wrap)]
                    with m.If(~park):
                        m.d.sync += mba.eq(mba - (R - 1))
                    if p.pooled:
                        m.d.sync += wl.eq(Mux(wrap, 0, wl + 1))
            with m.Else():
                m.d.sync += [wi.eq(wi + 1), row_last.eq(wi == R - 2), ch.eq(ch + 1),
                             waddr.eq(waddr + (Mux(step, cst.gw, 0) if wd is not None else cst.gw))]
                with m.If(~park):
                    m.d.sync += mba.eq(mba + 1)
            with m.If(layer_end):
                if p.pooled:
                    m.d.sync += wl.eq(0)
                m.d.sync += [layer.eq(cst.nxt), wt.eq(0), ch.eq(0), waddr.eq(cst.nxt_base),
                             g_w.eq(cst.at("g_one", cst.nxt)), t_w.eq(cst.at("t_one", cst.nxt))]
                with m.If(cst.is_last | (cst.nxt_last if not p.logit_bias else 0)):
                    m.d.sync += mba.eq(0)
                cst.load(cst.nxt)
        return {"fire": fire, "ch": ch, "chans": cst.chans, "ok": fire & ~cst.is_last, "is_last": cst.is_last,
                "end": fire & layer_end, "layer": layer, "waddr": waddr, "lane": wl, "wd": wd,
                "pooled": cst.pooled if p.pooled else None,
                # the tree PE: the row completes its word (the last lane of a pooled word, or the
                # tile's last group)
                "flush": ((wl == p.cols - 1) | g_w | ~cst.pooled) if p.pooled else Const(1)}

    def _register_row(self, m, row):
        """Stage 1: the row's accumulators and fields registered (the mult/bias word arrives in
        the same cycle). Returns them, as a dict."""
        s1 = Pipe(m)
        ch, K_ = row["ch"], self.plan.classes
        return {"v": s1.reg(row["fire"], "v"),
                # the logits' decode, registered here: which logit the row is, the first one
                "take": s1.reg(row["fire"] & row["is_last"] & (ch < K_), "take"),
                "hit": s1.reg(Cat(*[ch == n for n in range(K_)]), "hit"),
                "acc": [s1.reg(self.i.payload.y[j].as_signed(), f"acc{j}") for j in range(self.plan.cols)],
                "ch": s1.reg(row["ch"], "ch"), "chans": s1.reg(row["chans"], "chans"),
                "ok": s1.reg(row["ok"], "ok"),
                "last": s1.reg(row["is_last"], "islast"), "end": s1.reg(row["end"], "end"),
                "layer": s1.reg(row["layer"], "layer"), "waddr": s1.reg(row["waddr"], "waddr"),
                "lane": s1.reg(row["lane"], "lane") if self.plan.pooled else None,
                "wd": s1.reg(row["wd"], "wd") if row["wd"] is not None else None,
                "flush": s1.reg(row["flush"], "flush") if row["wd"] is not None else None,
                "pooled": s1.reg(row["pooled"], "pooled") if row["wd"] is not None and self.plan.pooled else None}

    def _logits(self, m, s1, mbrd):
        """The last layer's rows: logits registers, one cycle after the row's handshake; then the
        argmax tree (:meth:`_argmax_tree`); the output beat, valid ``plan.argmax_stages`` cycles
        after the last logit and held until ``o.ready``."""
        p = self.plan
        v1, acc1, last1, end1 = s1["v"], s1["acc"], s1["last"], s1["end"]
        K_ = p.classes
        logits = [Signal(signed(p.logit_bits), name=f"logit{n}") for n in range(K_)]
        if p.logit_bias:       # the classifier bias of this channel (the ROM word read with the row)
            val = Signal(signed(max(p.mac_cfg.acc_bits, p.bias_bits) + 1), name="logit_in")
            m.d.comb += val.eq(acc1[0] + mbrd.data[p.mult_bits:].as_signed())
            acc1 = [val]
        with m.If(s1["take"]):
            for n in range(K_):
                with m.If(s1["hit"][n]):
                    m.d.sync += logits[n].eq(acc1[0])
        # the argmax of the complete logits: a tree of registered pairwise comparisons (the right,
        # higher-numbered side wins only when strictly greater: the first maximum, like
        # torch.argmax), p.argmax_stages cycles; the logits hold until the output beat is taken
        best, done = self._argmax_tree(m, logits), v1 & last1 & end1
        for k in range(p.argmax_stages):
            nxt = Signal(name=f"argmax_done{k}")
            m.d.sync += nxt.eq(done)
            done = nxt
        out_valid = Signal()
        with m.If(self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(done):
            m.d.sync += out_valid.eq(1)
        m.d.comb += self.o.valid.eq(out_valid)
        for n in range(K_):
            m.d.comb += self.o.payload.logits[n].eq(logits[n])
        m.d.comb += self.o.payload.argmax.eq(best)

    def _argmax_tree(self, m, logits):
        """Index of the first maximum of ``logits``, ``plan.argmax_stages`` cycles later (two per
        level of the tree)."""
        ib = bits_for(len(logits))
        level = [(Const(n, ib), v) for n, v in enumerate(logits)]
        depth = 0
        while len(level) > 1:
            nxt = []
            # two cycles per level: the comparison registered with both sides, then the
            # selection; ``vb > va`` is the sign of ``va - vb`` (one bit wider: it cannot
            # overflow), the carry chain's last sum straight into the register (a ``>`` compare
            # puts its signed-overflow logic after the chain)
            for k in range(0, len(level) - 1, 2):
                (ia, va), (ib_, vb) = level[k], level[k + 1]
                n = f"{depth}_{k // 2}"
                gt = Signal(name=f"amax_gt{n}")
                a_i, b_i = Signal(ib, name=f"amax_ai{n}"), Signal(ib, name=f"amax_bi{n}")
                a_v, b_v = Signal.like(va, name=f"amax_av{n}"), Signal.like(vb, name=f"amax_bv{n}")
                m.d.sync += [gt.eq((va.as_signed() - vb.as_signed())[-1]), a_i.eq(ia), b_i.eq(ib_), a_v.eq(va), b_v.eq(vb)]
                i, v = Signal(ib, name=f"amax_i{n}"), Signal.like(va, name=f"amax_v{n}")
                m.d.sync += [i.eq(Mux(gt, b_i, a_i)), v.eq(Mux(gt, b_v, a_v))]
                nxt.append((i, v))
            if len(level) % 2:
                i, v = level[-1]
                for _ in range(2):
                    i2, v2 = Signal(ib, name=f"amax_i{depth}_last"), Signal.like(v, name=f"amax_v{depth}_last")
                    m.d.sync += [i2.eq(i), v2.eq(v)]
                    i, v = i2, v2
                nxt.append((i, v))
            level, depth = nxt, depth + 2
        assert depth == self.plan.argmax_stages
        return level[0][0]

    def _requantize(self, m, s1, mbrd):
        """Stages 2..: ``acc * mult`` (a pipelined multiply; acc and the ROM word are registers,
        so the DSP sees register -> multiply -> register), ``+ bias``, requantize with the
        layer's shift and width, then the whole-word write and the done pulse (the side fields
        delayed alongside)."""
        p = self.plan
        C, LB = p.cols, p.act_lane_bits
        lps = p.layers
        nl = len(lps)
        mb = p.mult_bits
        acc1, end1, lay1, waddr1, lane1 = s1["acc"], s1["end"], s1["layer"], s1["waddr"], s1["lane"]
        # rows past the layer's channel count are not written: compared here, on stage 1's
        # registers, and registered with the product
        ok1 = s1["ok"] & (s1["ch"] < s1["chans"])
        mult1 = mbrd.data[:mb].as_signed()
        bias1 = mbrd.data[mb:].as_signed()
        prod = [Pipe(m).mul(acc1[j], mult1, f"prod{j}") for j in range(C)]
        d = p.mul_stages
        side = Pipe(m)
        bias2 = side.delay(bias1, d, "bias")
        ok2, end2, lay2, waddr2 = (side.delay(x, d, n) for x, n in ((ok1, "ok"), (end1, "end"),
                                                                    (lay1, "layer"), (waddr1, "waddr")))
        lane2 = side.delay(lane1, d, "lane") if p.pooled else None
        wd1 = s1["wd"]
        tree = None
        if wd1 is not None:
            # the tree PE: every row of the layer (``v``, channels past the count included: the
            # buffer below counts rows), its channel lane, whether the row completes a word, and
            # whether the word's first channel exists (``okg``: no word past the tensor)
            okg1 = s1["ok"] & ((s1["ch"] - wd1) < s1["chans"])
            tree = {n: side.delay(x, d, f"t{n}") for n, x in (("v", s1["ok"]), ("wd", wd1), ("flush", s1["flush"]),
                                                              ("okg", okg1))}
            if p.pooled:
                tree["pooled"] = side.delay(s1["pooled"], d, "tpooled")
        s3 = Pipe(m)
        z3 = [s3.reg(prod[j] + bias2, f"z{j}") for j in range(C)]
        ok3, end3, lay3, waddr3 = (s3.reg(x, n) for x, n in ((ok2, "ok"), (end2, "end"), (lay2, "layer"),
                                                             (waddr2, "waddr")))
        lane3 = s3.reg(lane2, "lane") if p.pooled else None
        if tree:
            tree = {n: s3.reg(x, f"t{n}") for n, x in tree.items()}
        # requantize with the layer's rule (one circuit per distinct rule): unsigned-only networks
        # (shift, out_bits) with ReLU; two's complement ones (shift, lo, hi, rounding, bipolar)
        if p.general_rules:
            keys = [(lp.shift, *lp.out_range, lp.rounding, lp.bipolar_out) for lp in p.layer_specs[:-1]]
        else:
            keys = [(lp.shift, lp.out_bits) for lp in lps[:-1]]
        rules = sorted(set(keys)) or [(0, LB)]
        rule_of = [rules.index(keys[i]) if i < nl - 1 else 0 for i in range(nl)]
        rsel = pick(lay3, [Const(r, range(len(rules) + 1)) for r in rule_of])
        # two stages: the rounding shift of the layer's rule (a carry chain), registered; then the
        # clamp (ReLU, saturation, bipolar sign) of the same rule, registered
        s4a = Pipe(m)
        signed_rules = p.general_rules and keys
        qs = []
        for j in range(C):
            if p.xnor:
                qs.append(s4a.reg(z3[j][-1], f"q{j}"))
                continue
            if signed_rules:
                opts = [_round_rule(z3[j], *r) for r in rules]
            else:
                opts = [Value.cast(rnd(z3[j], sh)).as_signed() for sh, _ in rules]
            qs.append(s4a.reg(pick(rsel, opts), f"q{j}"))
        rsel4 = s4a.reg(rsel, "rule")
        ok3, end3, lay3, waddr3 = (s4a.reg(x, n) for x, n in ((ok3, "ok"), (end3, "end"), (lay3, "layer"),
                                                              (waddr3, "waddr")))
        lane3 = s4a.reg(lane3, "lane") if p.pooled else None
        if tree:
            tree = {n: s4a.reg(x, f"t{n}") for n, x in tree.items()}
        s4 = Pipe(m)
        ys = []
        for j in range(C):
            if p.xnor:
                # the XNOR array's activations are bipolar codes: every rule is a threshold, the
                # code (1 = -1) is the sign of z (carried through the first stage as qs)
                ys.append(s4.reg(qs[j], f"y{j}"))
                continue
            if signed_rules:
                opts = [_sext(_clamp_rule(qs[j], *r), LB) for r in rules]
            else:
                opts = [_widen(_relu_sat(qs[j], ob), LB) for _, ob in rules]
            ys.append(s4.reg(pick(rsel4, opts), f"y{j}"))
        ok4, end4, lay4, waddr4 = (s4.reg(x, n) for x, n in ((ok3, "ok"), (end3, "end"), (lay3, "layer"),
                                                             (waddr3, "waddr")))
        lane4 = s4.reg(lane3, "lane") if p.pooled else None
        if p.lanes > 1:
            self._tree_write(m, ys, waddr4, lay4, lane4, {n: s4.reg(x, f"t{n}") for n, x in tree.items()})
        elif not p.pooled:
            m.d.comb += [self.wr.addr.eq(waddr4), self.wr.data.eq(Cat(*ys)), self.wr.en.eq(ok4)]
        else:
            # max pooling on the fly: the maximum of the window's columns (requantized values),
            # written to its one lane; other layers write all lanes
            npool = sorted({lp.pool_cols for lp in lps if lp.pool_cols})
            psel = pick(lay4, [Const(npool.index(lp.pool_cols) if lp.pool_cols else 0, range(len(npool) + 1))
                               for lp in lps])
            pooled = pick(lay4, [Const(int(lp.pool_cols > 0), 1) for lp in lps])
            maxes = [_max_of([y.as_signed() if p.signed_acts else y for y in ys[:n]]) for n in npool]
            mx = Signal(LB, name="pool_max")
            m.d.comb += mx.eq(pick(psel, maxes))
            m.d.comb += [self.wr.addr.eq(waddr4),
                         self.wr.data.eq(Mux(pooled, Cat(*[mx] * C), Cat(*ys))),
                         self.wr.en.eq(Mux(pooled, Cat(*[lane4 == k for k in range(C)]),
                                           Const((1 << C) - 1, C)).replicate(1) & ok4.replicate(C))]
        m.d.sync += [self.done.eq(end4), self.done_layer.eq(lay4)]

    def _tree_write(self, m, ys, waddr4, lay4, lane4, t4):
        """The tree PE's write: whole words of ``lanes`` channel groups of ``cols`` lanes, one
        write enable (no per-lane enables, which would cut the memory into one block RAM per
        2-bit lane). Rows come in order, ``rows`` per (tile, group), so a shift register of
        ``rows`` entries of ``cols`` lanes holds, for each row, its word's lanes so far: the entry
        leaving it is the same row's from the previous group. A pooled row puts its window
        maximum into its lane of that entry; any other row all its lanes. The row with channel
        lane ``lanes - 1`` that completes its word (``flush``: a pooled word's last lane or the
        tile's last group) writes the ``lanes`` newest entries."""
        p = self.plan
        C, LB, D, R = p.cols, p.act_lane_bits, p.lanes, p.rows
        sr = [Signal(C * LB, name=f"wbuf{r}", reset_less=True) for r in range(R)]
        row = Signal(C * LB, name="wrow")
        if p.pooled:
            lps = p.layers
            npool = sorted({lp.pool_cols for lp in lps if lp.pool_cols})
            psel = pick(lay4, [Const(npool.index(lp.pool_cols) if lp.pool_cols else 0, range(len(npool) + 1))
                               for lp in lps])
            maxes = [_max_of([y.as_signed() if p.signed_acts else y for y in ys[:n]]) for n in npool]
            mx = Signal(LB, name="pool_max")
            m.d.comb += mx.eq(pick(psel, maxes))
            merged = Cat(*[Mux(lane4 == k, mx, sr[R - 1][k * LB:(k + 1) * LB]) for k in range(C)])
            m.d.comb += row.eq(Mux(t4["pooled"], merged, Cat(*ys)))
        else:
            m.d.comb += row.eq(Cat(*ys))
        with m.If(t4["v"]):
            m.d.sync += [sr[0].eq(row)] + [sr[r].eq(sr[r - 1]) for r in range(1, R)]
        m.d.comb += [self.wr.addr.eq(waddr4),
                     self.wr.data.eq(Cat(*[sr[D - 2 - n] for n in range(D - 1)], row)),
                     self.wr.en.eq(t4["v"] & t4["okg"] & t4["flush"] & (t4["wd"] == D - 1))]


def _widen(r, width: int):
    """An unsigned activation zero-extended to the activation memory's ``width`` bits."""
    return Cat(r, Const(0, width - len(r))) if width > len(r) else r


def _round_rule(z, shift: int, lo: int, hi: int, rounding: str, bipolar: bool):
    """First half of the graph requantizer (:func:`l1bn.spec.reference.requant.requantize_sum`)
    on ``z``, a signed value: the rounding shift (half up ``(z + 2**(s-1)) >> s``, half even
    ``(z + 2**(s-1) - 1 + bit_s(z)) >> s``); ``z`` itself for bipolar outputs. Combinational,
    signed."""
    if bipolar or shift == 0:
        return Value.cast(z).as_signed()
    if rounding == "half_up":
        return ((z + (1 << (shift - 1))) >> shift).as_signed()
    return ((z + ((1 << (shift - 1)) - 1) + z[shift]) >> shift).as_signed()


def _clamp_rule(q, shift: int, lo: int, hi: int, rounding: str, bipolar: bool):
    """Second half: bipolar ``q >= 0 ? +1 : -1``; otherwise ``q`` clamped to ``[lo, hi]`` (ReLU
    and narrow ranges included). Combinational, signed."""
    if bipolar:
        return Mux(q[-1], Const(-1, signed(2)), Const(1, signed(2)))
    w = signed_bits(lo, hi)
    return Mux(q < lo, Const(lo, signed(w)), Mux(q > hi, Const(hi, signed(w)), q[:w].as_signed()))


def _relu_sat(y, ob: int):
    """The chain rule's clamp of a rounded signed value ``y`` (:func:`l1bn.hw.arith.requantize`
    after its rounding shift): 0 below zero, ``2**ob - 1`` above, unsigned ``ob`` bits."""
    neg = y[-1]
    fits = ~y[ob:].any() if len(y) > ob else Const(1)
    return Mux(neg, 0, Mux(fits, y[:ob], (1 << ob) - 1))[:ob]


def _sext(v, width: int):
    """A signed value as exactly ``width`` two's complement bits (sign-extended or truncated)."""
    from amaranth import Value

    v = Value.cast(v)
    return v[:width] if len(v) >= width else Cat(v, v[-1].replicate(width - len(v)))


def _max_of(vals):
    """The maximum of equal-shaped values (a balanced tree of compare-and-select)."""
    vals = list(vals)
    while len(vals) > 1:
        nxt = [Mux(a >= b, a, b) for a, b in zip(vals[::2], vals[1::2], strict=False)]
        vals = nxt + ([vals[-1]] if len(vals) % 2 else [])
    return vals[0]
