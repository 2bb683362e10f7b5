"""Writeback stage of the accelerator: MAC result rows -> folded BN, requantize -> activation
memory, or (last layer) logits registers, argmax and the output beat.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_issue import LayerConsts
from l1bn.hw.accel_layers import bits_for, output_layout
from l1bn.hw.accel_loader import mem_write_signature
from l1bn.hw.accel_plan import Plan
from l1bn.hw.arith import Pipe, pick, requantize
from l1bn.hw.mac_array import out_layout

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
    wr : Out(mem_write_signature(addr_bits, cols * lane_bits))
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
    the product (:func:`l1bn.hw.arith.mul_latency`), ``+ bias``, requantize. The logits and the
    argmax are updated one cycle after the row's handshake; the output beat is valid the cycle
    after the last row.
    """

    def __init__(self, plan: Plan, *, addr_bits: int):
        self.plan, self.addr_bits = plan, addr_bits
        nl = len(plan.layers)
        super().__init__({
            "i": In(stream.Signature(out_layout(plan.mac_cfg))),
            "wr": Out(mem_write_signature(addr_bits, plan.cols * plan.lane_bits)),
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
        self._logits(m, s1)
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
            "gw": [lp.g for lp in lps], "rg": [(R - 1) * lp.g for lp in lps],
            "chans": [lp.channels for lp in lps], "out_base": [max(lp.out_base, 0) for lp in lps],
            "is_last": [int(i == nl - 1) for i in range(nl)],
        })
        layer = Signal(range(max(nl, 2)))
        wi = Signal(range(max(R, 2)))
        wg = Signal(cst.g_last.shape())
        wt = Signal(cst.t_last.shape())
        ch = Signal(range(max(lp.t * R for lp in lps) + 1))
        mba = Signal(range(len(p.mb_words or [0]) + 1))
        waddr = Signal(self.addr_bits)
        row_last, g_w, t_w = wi == R - 1, wg == cst.g_last, wt == cst.t_last
        layer_end = row_last & g_w & t_w
        fire = self.i.valid
        m.d.comb += mbrd.addr.eq(Mux(cst.is_last, 0, mba))
        with m.If(fire):
            with m.If(row_last):
                m.d.sync += wi.eq(0)
                with m.If(g_w):
                    m.d.sync += [wg.eq(0), ch.eq(ch + 1), mba.eq(mba + 1), waddr.eq(waddr + 1)]
                    with m.If(~t_w):
                        m.d.sync += wt.eq(wt + 1)
                with m.Else():
                    m.d.sync += [wg.eq(wg + 1), ch.eq(ch - (R - 1)), mba.eq(mba - (R - 1)),
                                 waddr.eq(waddr - cst.rg + 1)]
            with m.Else():
                m.d.sync += [wi.eq(wi + 1), ch.eq(ch + 1), mba.eq(mba + 1), waddr.eq(waddr + cst.gw)]
            with m.If(layer_end):
                nxt = Mux(cst.is_last, 0, layer + 1)
                m.d.sync += [layer.eq(nxt), wt.eq(0), ch.eq(0),
                             waddr.eq(pick(nxt, [Const(max(lp.out_base, 0), self.addr_bits) for lp in lps]))]
                with m.If(cst.is_last):
                    m.d.sync += mba.eq(0)
                cst.load(nxt)
        return {"fire": fire, "ch": ch, "ok": fire & (ch < cst.chans) & ~cst.is_last, "is_last": cst.is_last,
                "end": fire & layer_end, "layer": layer, "waddr": waddr}

    def _register_row(self, m, row):
        """Stage 1: the row's accumulators and fields registered (the mult/bias word arrives in
        the same cycle). Returns them, as a dict."""
        s1 = Pipe(m)
        return {"v": s1.reg(row["fire"], "v"),
                "acc": [s1.reg(self.i.payload.y[j].as_signed(), f"acc{j}") for j in range(self.plan.cols)],
                "ch": s1.reg(row["ch"], "ch"), "ok": s1.reg(row["ok"], "ok"),
                "last": s1.reg(row["is_last"], "islast"), "end": s1.reg(row["end"], "end"),
                "layer": s1.reg(row["layer"], "layer"), "waddr": s1.reg(row["waddr"], "waddr")}

    def _logits(self, m, s1):
        """The last layer's rows: logits registers and the running argmax (strictly greater: the
        first maximum wins, like torch.argmax), one cycle after the row's handshake; the output
        beat, valid the cycle after the last row and held until ``o.ready``."""
        p = self.plan
        v1, ch1, acc1, last1, end1 = s1["v"], s1["ch"], s1["acc"], s1["last"], s1["end"]
        K_ = p.classes
        logits = [Signal(signed(p.logit_bits), name=f"logit{n}") for n in range(K_)]
        best = Signal(unsigned(bits_for(K_)))
        best_v = Signal(signed(p.mac_cfg.acc_bits))
        out_valid = Signal()
        with m.If(v1 & last1 & (ch1 < K_)):
            for n in range(K_):
                with m.If(ch1 == n):
                    m.d.sync += logits[n].eq(acc1[0])
            with m.If((ch1 == 0) | (acc1[0] > best_v)):
                m.d.sync += [best.eq(ch1), best_v.eq(acc1[0])]
        with m.If(self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(v1 & last1 & end1):
            m.d.sync += out_valid.eq(1)
        m.d.comb += self.o.valid.eq(out_valid)
        for n in range(K_):
            m.d.comb += self.o.payload.logits[n].eq(logits[n])
        m.d.comb += self.o.payload.argmax.eq(best)

    def _requantize(self, m, s1, mbrd):
        """Stages 2..: ``acc * mult`` (a pipelined multiply; acc and the ROM word are registers,
        so the DSP sees register -> multiply -> register), ``+ bias``, requantize with the
        layer's shift and width, then the whole-word write and the done pulse (the side fields
        delayed alongside)."""
        p = self.plan
        C, LB = p.cols, p.lane_bits
        lps = p.layers
        nl = len(lps)
        mb = p.mult_bits
        acc1, ok1, end1, lay1, waddr1 = s1["acc"], s1["ok"], s1["end"], s1["layer"], s1["waddr"]
        mult1 = mbrd.data[:mb].as_signed()
        bias1 = mbrd.data[mb:].as_signed()
        prod = [Pipe(m).mul(acc1[j], mult1, f"prod{j}") for j in range(C)]
        d = p.mul_stages
        side = Pipe(m)
        bias2 = side.delay(bias1, d, "bias")
        ok2, end2, lay2, waddr2 = (side.delay(x, d, n) for x, n in ((ok1, "ok"), (end1, "end"),
                                                                    (lay1, "layer"), (waddr1, "waddr")))
        s3 = Pipe(m)
        z3 = [s3.reg(prod[j] + bias2, f"z{j}") for j in range(C)]
        ok3, end3, lay3, waddr3 = (s3.reg(x, n) for x, n in ((ok2, "ok"), (end2, "end"), (lay2, "layer"),
                                                             (waddr2, "waddr")))
        # requantize with the layer's shift and width (one rule per distinct (shift, out_bits))
        rules = sorted({(lp.shift, lp.out_bits) for lp in lps[:-1]}) or [(0, LB)]
        rule_of = [rules.index((lp.shift, lp.out_bits)) if i < nl - 1 else 0 for i, lp in enumerate(lps)]
        rsel = pick(lay3, [Const(r, range(len(rules) + 1)) for r in rule_of])
        s4 = Pipe(m)
        ys = []
        for j in range(C):
            opts = [_widen(requantize(z3[j], shift=sh, out_bits=ob, relu=True), LB) for sh, ob in rules]
            ys.append(s4.reg(pick(rsel, opts), f"y{j}"))
        ok4, end4, lay4, waddr4 = (s4.reg(x, n) for x, n in ((ok3, "ok"), (end3, "end"), (lay3, "layer"),
                                                             (waddr3, "waddr")))
        m.d.comb += [self.wr.addr.eq(waddr4), self.wr.data.eq(Cat(*ys)), self.wr.en.eq(ok4)]
        m.d.sync += [self.done.eq(end4), self.done_layer.eq(lay4)]


def _widen(r, width: int):
    """An unsigned activation zero-extended to the activation memory's ``width`` bits."""
    return Cat(r, Const(0, width - len(r))) if width > len(r) else r
