"""The error quantizer engine: a layer's accumulator gradient from the error buffer.

``dacc = sat(rnd(v, s), gbits)`` (docs/arith/training.md, section 5, "Errors") for every element
``v`` of ``ebuf`` (the BN backward's ``u * gamma * inv`` of a hidden layer, or the loss gradient of
the output layer, both in (o, n, y, x) order), with the shift ``s = bitlen(max|v|) - (gbits - 1)``
that the sequencer computed from the maximum the producer tracked. Each result is written twice:
to ``dacc`` (one element per word, the input-gradient product reads it as the broadcast operand)
and to lane ``o % R`` of ``daccw`` word ``(o // R) * P + p`` (the weight-gradient product reads
``R`` channels at once).

Timing: one element per cycle. The command is accepted in cycle 0; element ``e`` is read in
cycle ``1 + e``, goes through three register stages (``v + 2**(s-1)``, the shift, the saturation)
and is written in cycle ``5 + e``; ``done`` is valid from cycle ``E + 5`` (:func:`quant_cycles`).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, OpConsts, command, sint_for, uint_for
from l1bn.hw.train.fixed import RunShift, delay, sat_to
from l1bn.hw.train.plan import TrainPlan

__all__ = ["QuantEngine", "quant_cycles", "quant_shift_range"]


#: register stages from the read's data to the write: ``v + 2**(s-1)``, the shift, the saturation
_STAGES = 3


def quant_cycles(elements: int) -> int:
    """Cycles from the command handshake to ``done`` valid (``done`` taken at once)."""
    return elements + 2 + _STAGES


def quant_shift_range(plan: TrainPlan) -> tuple[int, int]:
    """Range of the error shift ``s``: ``bitlen`` of the largest ebuf value minus ``gbits - 1``."""
    g = plan.cfg.gbits
    return -(g - 1), plan.mem["ebuf"]["bits"] - (g - 1)


class QuantEngine(wiring.Component):
    """``ebuf`` -> ``dacc`` and ``daccw``, one operation per layer (index = layer).

    Interface
    ---------
    cmd : In(stream of {op: layer, s: signed})
    done : Out(stream)
    rd_ebuf : read port of ``ebuf``
    wr_dacc, wr_daccw : write ports (``daccw`` lane-masked)
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        smin, smax = quant_shift_range(plan)
        self.smin, self.smax = smin, smax
        nl = len(plan.layers)
        mem = plan.mem
        members = command({"cmd": {"op": uint_for(nl - 1), "s": sint_for(smin, smax)}})
        members.update({
            "rd_ebuf": wiring.Out(read_bus(mem["ebuf"]["depth"], mem_shape(mem["ebuf"]))),
            "wr_dacc": wiring.Out(write_bus(mem["dacc"]["depth"], mem_shape(mem["dacc"]))),
            "wr_daccw": wiring.Out(write_bus(mem["daccw"]["depth"], mem_shape(mem["daccw"]))),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, R = self.plan, self.plan.rows
        hs = Handshake(m, self)
        table = {"last": [g.out * p.n * g.hwo - 1 for g in p.layers],
                 "plast": [p.n * g.hwo - 1 for g in p.layers],
                 "pstep": [p.n * g.hwo for g in p.layers]}
        k = OpConsts(m, table)
        s = Signal.like(self.cmd.payload.s, name="s")
        with m.If(hs.start):
            k.load(self.cmd.payload.op)
            m.d.sync += s.eq(self.cmd.payload.s)

        # stage 0: counters and the read; stage 1: round, saturate, write
        e = Signal.like(k.last, name="e")
        pp = Signal.like(k.plast, name="p")
        lane = Signal(range(R), name="lane")
        tbase = Signal(range(p.mem["daccw"]["depth"] + max(table["pstep"])), name="tbase")
        run = Signal(name="run")
        with m.If(hs.start):
            m.d.sync += [e.eq(0), pp.eq(0), lane.eq(0), tbase.eq(0), run.eq(1)]
        v1, last1 = Signal(name="v1"), Signal(name="last1")
        e1, p1, lane1, tb1 = Signal.like(e), Signal.like(pp), Signal.like(lane), Signal.like(tbase)
        m.d.comb += [self.rd_ebuf.en.eq(run), self.rd_ebuf.addr.eq(e)]
        m.d.sync += [v1.eq(run), last1.eq(run & (e == k.last))]
        with m.If(run):
            m.d.sync += [e1.eq(e), p1.eq(pp), lane1.eq(lane), tb1.eq(tbase), e.eq(e + 1)]
            with m.If(pp == k.plast):
                m.d.sync += [pp.eq(0), lane.eq(Mux(lane == R - 1, 0, lane + 1))]
                with m.If(lane == R - 1):
                    m.d.sync += tbase.eq(tbase + k.pstep)
            with m.Else():
                m.d.sync += pp.eq(pp + 1)
            with m.If(e == k.last):
                m.d.sync += run.eq(0)
        # rnd(v, s) in two register stages (v + 2**(s-1), the shift), the saturation in a third
        rs = RunShift(m, s, self.smin, self.smax, name="qs")
        ta = Signal.like(rs.add(self.rd_ebuf.data, rs.bias()), name="ta")
        m.d.sync += ta.eq(rs.add(self.rd_ebuf.data, rs.bias()))
        ub = Signal.like(rs.shift(ta), name="ub")
        m.d.sync += ub.eq(rs.shift(ta))
        q = Signal(mem_shape(p.mem["dacc"]), name="q")
        m.d.sync += q.eq(sat_to(ub, p.cfg.gbits))
        waddr = Signal.like(tb1, name="waddr")
        m.d.sync += waddr.eq(tb1 + p1)
        v4, last4, e4, lane4 = (delay(m, x, _STAGES, n) for x, n in ((v1, "v"), (last1, "last"), (e1, "e"),
                                                                       (lane1, "lane")))
        waddr4 = delay(m, waddr, _STAGES - 1, "waddr")
        m.d.comb += [
            self.wr_dacc.en.eq(v4), self.wr_dacc.addr.eq(e4), self.wr_dacc.data.eq(q),
            self.wr_daccw.en.eq(Mux(v4, 1 << lane4, 0)), self.wr_daccw.addr.eq(waddr4),
        ]
        for j in range(R):
            m.d.comb += self.wr_daccw.data[j].eq(q)
        with m.If(v4 & last4):
            hs.finish()
        return m
