"""The loss-gradient engine: softmax cross-entropy in fixed point (docs/arith/training.md, section 4),
:func:`l1bn.spec.reference.softmax_ce.softmax_ce_grad` bit for bit.

Per image ``n``, three passes over its ``classes`` logits (``logits`` memory, (n, class) order):

1. **max**: read each logit, send it out on ``z`` (the step's logits, for the host), keep the
   largest and the index of its first occurrence (the argmax, ``torch.argmax``'s rule);
2. **exp**: ``delta = zmax - z``, ``t = min(rnd(delta * L2E, shift), (P + 2) << T)``,
   ``E = rnd(LUT[t mod 2**T], t >> T)`` (a ``2**T``-entry ROM and a barrel shifter), kept in a
   small memory, and ``S = sum E``;
3. **divide**: ``p = floor((2 * (E << P) + S) / (2 S))`` by a restoring divider (``P + 1``
   quotient bits: ``p <= 2**P``), ``g = p - [class = label] << P`` written to ``ebuf`` at
   ``class * N + n`` (the order of the output layer's ``dacc``), its magnitude tracked.

``shift = log2e_bits + z_exp - exp_frac`` depends on the output layer's weight scale and comes with
the command. ``done`` returns the bit length of ``max |g|`` (the error quantizer's shift), the count
of correct predictions and ``perr = sum over images of (2**P - p[label])``, the batch's
probability error in units of ``2**-P`` (an integer training-loss proxy: the float
cross-entropy of :class:`~l1bn.spec.reference.train.StepResult` is computed by the host from the
logits on ``z``).

Timing (``z`` always ready): :func:`loss_cycles`.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, command, uint_for
from l1bn.hw.train.fixed import MaxTracker
from l1bn.hw.train.plan import TrainPlan
from l1bn.spec.reference.softmax_ce import exp2_lut, log2e_const

__all__ = ["LossEngine", "loss_cycles", "loss_shift_range"]


def loss_cycles(plan: TrainPlan) -> int:
    """Cycles from the command handshake to ``done`` valid, ``z`` always ready:
    per image 1 + classes * (prob_bits + 13) (the label; per class 2 for the max pass, 7 for the
    exponential: read, subtract, multiply, shift, LUT, round, sum; 4 + prob_bits for the
    division), plus 2."""
    c = plan.layers[-1].out
    return plan.n * (1 + c * (plan.cfg.prob_bits + 13)) + 2


def loss_shift_range(plan: TrainPlan) -> tuple[int, int]:
    """Range of ``shift = log2e_bits + z_exp - exp_frac`` over the logit exponents the weight
    scale allows."""
    c = plan.cfg
    return (c.log2e_bits + c.min_logit_exp - c.exp_frac, c.log2e_bits + c.max_logit_exp - c.exp_frac)


class LossEngine(wiring.Component):
    """The softmax cross-entropy gradient of a batch of logits (module docstring).

    Interface
    ---------
    cmd : In(stream of {shift})
    done : Out(stream of {bits, correct, perr})
    z : Out(stream.Signature(signed(logit_bits)))     the logits, (n, class) order
    rd_logits, rd_labels ; wr_ebuf
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        c = plan.cfg
        self.lo, self.hi = loss_shift_range(plan)
        n, P = plan.n, c.prob_bits
        members = command({"cmd": {"shift": uint_for(self.hi)},
                           "done": {"bits": uint_for(P + 2), "correct": uint_for(n),
                                    "perr": uint_for(n << P)}})
        mem = plan.mem
        members["z"] = Out(stream.Signature(mem_shape(mem["logits"])))
        for name in ("logits", "labels"):
            members[f"rd_{name}"] = Out(read_bus(mem[name]["depth"], mem_shape(mem[name])))
        members["wr_ebuf"] = Out(write_bus(mem["ebuf"]["depth"], mem_shape(mem["ebuf"])))
        super().__init__(members)

    def _datapath(self, m, hs):
        """The registers, the exp2 LUT, the exponent memory, the max tracker and the combinational
        datapath (subtract, multiply by log2 e, shift, LUT, round, divide) of the three passes."""
        p, c = self.plan, self.plan.cfg
        N, C = p.n, p.layers[-1].out
        P, T, lc = c.prob_bits, c.exp_frac, c.log2e_bits
        shift = Signal.like(self.cmd.payload.shift, name="shift")
        with m.If(hs.start):
            m.d.sync += shift.eq(self.cmd.payload.shift)
        lut = Memory(shape=unsigned(P + 1), depth=1 << T, init=[int(v) for v in exp2_lut(T, P)])
        m.submodules.lut = lut
        lrd = lut.read_port()
        emem = Memory(shape=unsigned(P + 2), depth=C, init=[])
        m.submodules.emem = emem
        erd, ewr = emem.read_port(), emem.write_port()
        m.submodules.tracker = tr = MaxTracker(P + 2)
        m.d.comb += tr.clear.eq(hs.start)

        zb = p.mem["logits"]["bits"]
        n = Signal(range(N + 1), name="n")
        o = Signal(range(C + 1), name="o")
        row = Signal(range(N * C + 1), name="row")           # n * C
        label = Signal.like(self.rd_labels.data, name="label")
        zmax = Signal(signed(zb), name="zmax")
        amax = Signal(range(C), name="argmax")
        ssum = Signal(unsigned(P + 1 + max(1, (C - 1).bit_length()) + 1), name="S")
        prod = Signal(unsigned(zb + 1 + lc + 2 + 1), name="prod")
        dz = Signal(unsigned(zb + 1), name="dz")
        q = Signal(range(P + 3), name="q")
        correct = Signal.like(self.done.payload.correct, name="correct")
        perr = Signal.like(self.done.payload.perr, name="perr")
        rem = Signal(unsigned(ssum.shape().width + 2), name="rem")
        low = Signal(P + 1, name="low")
        quo = Signal(P + 1, name="quo")
        den = Signal(unsigned(ssum.shape().width + 1), name="den")
        it = Signal(range(P + 2), name="it")
        l2e = log2e_const(lc)
        cap = (P + 2) << T
        zdata = self.rd_logits.data
        m.d.comb += [self.rd_logits.addr.eq(row + o), self.rd_labels.addr.eq(n), self.z.payload.eq(zdata),
                     erd.addr.eq(o), ewr.addr.eq(o)]

        # combinational outputs are functions of the state, assigned after the FSM (continuous
        # assignments, defined in Icarus from time 0; see the sequencer)
        t = Signal(unsigned(prod.shape().width), name="t_raw")
        tt = Signal(range(cap + 1), name="t")
        e = Signal(unsigned(P + 2), name="E")
        num = Signal(unsigned(2 * P + 4), name="num")
        g = Signal(signed(P + 2), name="g")
        hit = Signal(name="hit")
        tr_ = Signal.like(tt, name="t_reg")
        er = Signal.like(e, name="E_reg")
        half = ((Const(1, unsigned(self.hi + 1)) << shift) >> 1)
        hq = ((Const(1, unsigned(P + 4)) << q) >> 1)
        r2 = Cat(low[-1], rem)
        ge = r2 >= den
        m.d.comb += [t.eq(prod >> shift), tt.eq(Mux(t > cap, cap, t)), e.eq((lrd.data + hq) >> q),
                     num.eq(Cat(Const(0, P + 1), erd.data) + ssum),          # 2 * (E << P) + S
                     hit.eq(o == label), g.eq(quo - Mux(hit, 1 << P, 0)), lrd.addr.eq(tr_[:T])]
        return SimpleNamespace(dz=dz, tr_=tr_, er=er, N=N, C=C, P=P, T=T, zb=zb, n=n, o=o, row=row, label=label, zmax=zmax, amax=amax, ssum=ssum, prod=prod, q=q, correct=correct, perr=perr, rem=rem, low=low, quo=quo, den=den, it=it, l2e=l2e, half=half, zdata=zdata, tt=tt, e=e, num=num, g=g, hit=hit, r2=r2, ge=ge, lrd=lrd, erd=erd, ewr=ewr, tr=tr)

    def _passes(self, m, hs, v):
        """Per image: pass A streams the logits out on ``z`` and finds max/argmax; pass B sums
        ``E ~ 2**P * exp(z - zmax)`` (log2 e multiply, exp2 LUT, shift) over the classes; pass C divides each ``E`` by the sum
        (restoring, P + 1 steps) and writes the gradient."""
        dz, tr_, er = v.dz, v.tr_, v.er
        (N, C, P, T, zb, n, o, row, label, zmax, amax, ssum, prod, q, correct, perr, rem, low, quo, den, it, l2e, half, zdata, tt, e, num, g, hit, r2, ge, lrd, erd, ewr, tr) = (
            v.N, v.C, v.P, v.T, v.zb, v.n, v.o, v.row, v.label, v.zmax, v.amax, v.ssum, v.prod, v.q, v.correct, v.perr, v.rem, v.low, v.quo, v.den, v.it, v.l2e, v.half, v.zdata, v.tt, v.e, v.num, v.g, v.hit, v.r2, v.ge, v.lrd, v.erd, v.ewr, v.tr)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(hs.start):
                    m.d.sync += [n.eq(0), row.eq(0), correct.eq(0), perr.eq(0)]
                    m.next = "IMG"
            with m.State("IMG"):
                m.d.sync += [o.eq(0), zmax.eq(-(1 << (zb - 1))), amax.eq(0), ssum.eq(0)]
                m.next = "A_RD"
            with m.State("A_RD"):
                with m.If(o == 0):
                    m.d.sync += label.eq(self.rd_labels.data)
                m.next = "A_OUT"
            with m.State("A_OUT"):
                with m.If(self.z.ready):
                    with m.If((o == 0) | (zdata > zmax)):
                        m.d.sync += [zmax.eq(zdata), amax.eq(o)]
                    with m.If(o == C - 1):
                        m.d.sync += o.eq(0)
                        m.next = "B_RD"
                    with m.Else():
                        m.d.sync += o.eq(o + 1)
                        m.next = "A_RD"
            with m.State("B_RD"):
                m.next = "B_SUB"
            with m.State("B_SUB"):
                m.d.sync += dz.eq((zmax - zdata).as_unsigned())
                m.next = "B_MUL"
            with m.State("B_MUL"):
                m.d.sync += prod.eq(dz * l2e + half)
                m.next = "B_SH"
            with m.State("B_SH"):
                m.d.sync += tr_.eq(tt)
                m.next = "B_T"
            with m.State("B_T"):
                m.d.sync += q.eq(tr_ >> T)
                m.next = "B_E"
            with m.State("B_E"):
                m.d.sync += er.eq(e)
                m.next = "B_SUM"
            with m.State("B_SUM"):
                m.d.sync += ssum.eq(ssum + er)
                with m.If(o == C - 1):
                    m.d.sync += o.eq(0)
                    m.next = "C_RD"
                with m.Else():
                    m.d.sync += o.eq(o + 1)
                    m.next = "B_RD"
            with m.State("C_RD"):
                m.next = "C_INIT"
            with m.State("C_INIT"):
                m.d.sync += [rem.eq(num >> (P + 1)), low.eq(num[:P + 1]), den.eq(ssum << 1), it.eq(0)]
                m.next = "C_DIV"
            with m.State("C_DIV"):
                m.d.sync += [rem.eq(Mux(ge, r2 - den, r2)), low.eq(low << 1), quo.eq(Cat(ge, quo)),
                             it.eq(it + 1)]
                with m.If(it == P):
                    m.next = "C_OUT"
            with m.State("C_OUT"):
                with m.If(hit):
                    m.d.sync += perr.eq(perr + ((1 << P) - quo))
                with m.If(o == C - 1):
                    m.d.sync += [correct.eq(correct + (amax == label)), n.eq(n + 1), row.eq(row + C)]
                    with m.If(n == N - 1):
                        m.next = "FIN"
                    with m.Else():
                        m.next = "IMG"
                with m.Else():
                    m.d.sync += o.eq(o + 1)
                    m.next = "C_RD"
            with m.State("FIN"):
                hs.finish(bits=tr.bits, correct=correct, perr=perr)
                m.next = "IDLE"
        on = fsm.ongoing
        m.d.comb += [
            self.rd_labels.en.eq(on("IMG")), self.rd_logits.en.eq(on("A_RD") | on("B_RD")),
            self.z.valid.eq(on("A_OUT")), lrd.en.eq(on("B_T")), ewr.en.eq(on("B_SUM")), ewr.data.eq(er),
            erd.en.eq(on("C_RD")), self.wr_ebuf.en.eq(on("C_OUT")), self.wr_ebuf.addr.eq(o * N + n),
            self.wr_ebuf.data.eq(g), tr.take.eq(on("C_OUT")), tr.value.eq(g),
        ]
        return m

    def elaborate(self, platform):
        m = Module()
        hs = Handshake(m, self)
        v = self._datapath(m, hs)
        return self._passes(m, hs, v)
