"""Parameter update and forward-weight preparation of the training accelerator.

:class:`UpdateEngine` (docs/arith/training.md, section 5, "Parameter gradients"): for one tensor
(a layer's weights, gamma or beta, in the contract's order), every element ``P`` becomes
``sat(P - (sat(R(v, s), gbits) << max(0, ush)), master_bits)`` with ``v`` its exact gradient and
``s`` the shift the sequencer computed from the tracked maximum. ``R`` is stochastic rounding by the
LFSR bank (``floor((v + r) / 2**s)``, ``r`` the low ``s`` bits of the element's word) or round half up.

The bank is a memory of ``lfsr_lanes`` 32-bit words. A tensor of ``E`` elements draws
``ceil(E / L)`` rows; in each row every lane steps once (xorshift 13, 17, 5: three shift-xor layers
of wires) and element ``row * L + lane`` takes the lane's new state; the lanes past ``E`` in the
last row step too (section 2). So the engine walks ``ceil(E / L) * L`` lanes, one per cycle: read
the lane (and the gradient and parameter of its element), step it and write it back, compute the
new parameter, write it. It also reports the largest new magnitude (the next step's forward-weight
scale) and how many values saturated.

:class:`PrepEngine` (section 3.1): a layer's forward weights ``w = sat(rnd(M, s_w), wbits)``,
``s_w = clog2(max|M|) - (wbits - 1)``, written twice: to lane ``o % R`` of ``fw`` word
``(o // R, c, tap)`` (the forward's row operand) and to lane ``c % R`` of ``fwt`` word
``(c // R, o, tap)`` (the input gradient's). ``done`` returns ``s_w``.

Timing: one element (update: one lane) per cycle; :func:`update_cycles`, :func:`prep_cycles`.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, OpConsts, command, sint_for, uint_for
from l1bn.hw.train.fixed import RunShift, bitlen, delay, magnitude, sat_to
from l1bn.hw.train.plan import TrainPlan, cdiv

__all__ = ["UpdateEngine", "PrepEngine", "xorshift32", "update_cycles", "prep_cycles", "update_walk",
           "update_shift_range", "prep_shift_range"]

PARAMS = ("master", "gamma", "beta")
GRADS = ("dw", "dgamma", "dbeta")


def xorshift32(x):
    """One step of a 32-bit xorshift lane (13, 17, 5), as wires."""
    x = Value.cast(x)[:32]
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:32]


def update_walk(plan: TrainPlan, what: str, layer: int) -> int:
    """Elements the update of one tensor walks: ``ceil(E / L) * L`` lanes with stochastic rounding
    (every lane of every row steps), ``E`` with round half up (no words drawn)."""
    e = plan.tensor_size(what, layer)
    if plan.cfg.grad_rounding == "stochastic":
        return cdiv(e, plan.cfg.lfsr_lanes) * plan.cfg.lfsr_lanes
    return e


#: register stages from the reads' data to the parameter's write: the drawn ``r``, ``v + r``, the
#: shift, the subtract, the saturation
_UPD_STAGES = 5


def update_cycles(plan: TrainPlan, what: str, layer: int) -> int:
    """Cycles from the command handshake to ``done`` valid: the walk, two cycles before the first
    read (the command's constants and shift decode), the read, the five stages to the write, the
    maximum and ``done``."""
    return update_walk(plan, what, layer) + 4 + _UPD_STAGES


def update_shift_range(plan: TrainPlan) -> tuple[int, int]:
    """Range of the update shift: ``bitlen(max|grad|) - (gbits - 1) + max(0, -ush)``."""
    g = plan.cfg.gbits
    hi = max(plan.mem[n]["bits"] for n in GRADS if n in plan.mem)
    extra = max(max(0, -plan.update_shift(w)) for w, _ in plan.update_tensors())
    return -(g - 1), hi - (g - 1) + extra


class UpdateEngine(wiring.Component):
    """The master update of one tensor per command (module docstring).

    Interface
    ---------
    cmd : In(stream of {op, s})        ``op``: index into ``plan.update_tensors()``
    done : Out(stream of {max, sat})   largest new ``|P|`` and the count of saturated values
    rd_lfsr, wr_lfsr ; rd_dw, rd_dgamma, rd_dbeta ; rd/wr_master, rd/wr_gamma, rd/wr_beta
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        self.smin, self.smax = update_shift_range(plan)
        mem = plan.mem
        tensors = plan.update_tensors()
        members = command({"cmd": {"op": uint_for(len(tensors) - 1), "s": sint_for(self.smin, self.smax)},
                           "done": {"max": uint_for(1 << (plan.cfg.master_bits - 1)),
                                    "sat": uint_for(max(plan.tensor_size(w, i) for w, i in tensors))}})
        for name in ("lfsr",) + tuple(n for n in GRADS + PARAMS if n in mem):
            members[f"rd_{name}"] = Out(read_bus(mem[name]["depth"], mem_shape(mem[name])))
        for name in ("lfsr",) + tuple(n for n in PARAMS if n in mem):
            members[f"wr_{name}"] = Out(write_bus(mem[name]["depth"], mem_shape(mem[name])))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, cfg = self.plan, self.plan.cfg
        L = cfg.lfsr_lanes
        stoch = cfg.grad_rounding == "stochastic"
        tensors = p.update_tensors()
        kinds = {"weights": 0, "gamma": 1, "beta": 2}
        base = [p.bases["master"][i] if w == "weights" else p.bases["chan"][i] for w, i in tensors]
        table = {"walk": [update_walk(p, w, i) - 1 for w, i in tensors],
                 "size": [p.tensor_size(w, i) for w, i in tensors],
                 "kind": [kinds[w] for w, _ in tensors], "base": base,
                 "lsh": [max(0, p.update_shift(w)) for w, _ in tensors]}
        hs = Handshake(m, self)
        k = OpConsts(m, table)
        s = Signal.like(self.cmd.payload.s, name="s")
        with m.If(hs.start):
            k.load(self.cmd.payload.op)
            m.d.sync += s.eq(self.cmd.payload.s)

        # stage 0: lane, element; reads
        run = Signal(name="run")
        first = Signal(name="first")
        m.d.sync += first.eq(hs.start)
        e = Signal(range(max(table["walk"]) + 2), name="e")
        lane = Signal(range(max(2, L)), name="lane")
        with m.If(hs.start):
            m.d.sync += [run.eq(0), e.eq(0), lane.eq(0)]
        with m.If(first):
            m.d.sync += run.eq(1)
        inr = Signal(name="in_range")
        m.d.comb += inr.eq(e < k.size)
        addr = Signal(range(max(p.mem[n]["depth"] for n in PARAMS if n in p.mem) + 1), name="addr")
        m.d.comb += addr.eq(k.base + e)
        for idx, name in enumerate(PARAMS):
            if name not in p.mem:
                continue
            for port in (getattr(self, f"rd_{name}"), getattr(self, f"rd_{GRADS[idx]}")):
                m.d.comb += [port.en.eq(run & inr & (k.kind == idx)), port.addr.eq(addr)]
        m.d.comb += [self.rd_lfsr.en.eq(run & stoch), self.rd_lfsr.addr.eq(lane)]
        with m.If(run):
            m.d.sync += [e.eq(e + 1), lane.eq(Mux(lane == L - 1, 0, lane + 1))]
            with m.If(e == k.walk):
                m.d.sync += run.eq(0)
        v1, in1, last1 = Signal(name="v1"), Signal(name="in1"), Signal(name="last1")
        lane1 = Signal.like(lane, name="lane1")
        addr1 = Signal.like(addr, name="addr1")
        m.d.sync += [v1.eq(run), in1.eq(run & inr), last1.eq(run & (e == k.walk)), lane1.eq(lane), addr1.eq(addr)]

        # stage 1 (the reads' data): step the lane and write it back, draw r; then one register
        # stage each for v + r, the shift, the subtract, and the saturation (the write)
        word = Signal(32, name="word")
        m.d.comb += word.eq(xorshift32(self.rd_lfsr.data))
        m.d.comb += [self.wr_lfsr.en.eq(v1 & stoch), self.wr_lfsr.addr.eq(lane1), self.wr_lfsr.data.eq(word)]
        grad = _pick_value(k.kind, [getattr(self, f"rd_{GRADS[i]}").data if PARAMS[i] in p.mem else Const(0)
                                    for i in range(3)])
        # the parameter's word: ``master`` (read latency 2) lands on the stage of ``pa`` itself
        mlate = p.mem["master"]["latency"] == 2
        par = _pick_value(k.kind, [Const(0) if (n == "master" and mlate) or n not in p.mem
                                   else getattr(self, f"rd_{n}").data for n in PARAMS])
        rs = RunShift(m, s, self.smin, self.smax, name="us", stochastic=stoch)
        mb = cfg.master_bits
        ga, ra = Signal.like(Value.cast(grad), name="ga"), Signal.like(Value.cast(rs.bias(word)), name="ra")
        pa = Signal(signed(mb), name="pa")
        m.d.sync += [ga.eq(grad), ra.eq(rs.bias(word)), pa.eq(par)]
        if mlate:
            pa = Mux(k.kind == 0, self.rd_master.data, pa)
        tb = Signal.like(rs.add(ga, ra), name="tb")
        m.d.sync += tb.eq(rs.add(ga, ra))
        uc = Signal.like(rs.shift(tb), name="uc")
        m.d.sync += uc.eq(rs.shift(tb))
        pc = delay(m, pa, 2, "par")
        delta = Signal(signed(mb + 2), name="delta")
        m.d.comb += delta.eq(sat_to(uc, cfg.gbits) << k.lsh)
        diff = Signal(signed(mb + 3), name="diff")
        m.d.sync += diff.eq(pc - delta)
        in5, last5, addr5 = (delay(m, x, _UPD_STAGES - 1, n) for x, n in ((in1, "in"), (last1, "last"), (addr1, "addr")))
        new2 = Signal(signed(mb), name="new2")
        v2, last2, clip2 = Signal(name="v2"), Signal(name="last2"), Signal(name="clip2")
        addr2 = Signal.like(addr, name="addr2")
        m.d.sync += [v2.eq(in5), last2.eq(last5), new2.eq(sat_to(diff, mb)), addr2.eq(addr5),
                     clip2.eq(in5 & ((diff < -(1 << (mb - 1))) | (diff > (1 << (mb - 1)) - 1)))]
        for idx, name in enumerate(PARAMS):
            if name in p.mem:
                port = getattr(self, f"wr_{name}")
                m.d.comb += [port.en.eq(v2 & (k.kind == idx)), port.addr.eq(addr2), port.data.eq(new2)]
        self._finish(m, hs, v2=v2, new2=new2, clip2=clip2, last2=last2)
        return m

    def _finish(self, m, hs, *, v2, new2, clip2, last2):
        """The run's largest new magnitude and its count of saturated elements, reported on
        ``done`` one cycle after the last write."""
        mx = Signal(unsigned(len(new2)), name="newmax")
        nsat = Signal.like(self.done.payload.sat, name="nsat")
        with m.If(hs.start):
            m.d.sync += [mx.eq(0), nsat.eq(0)]
        with m.Elif(v2):
            mag = magnitude(new2)
            m.d.sync += [mx.eq(Mux(mag > mx, mag, mx)), nsat.eq(nsat + clip2)]
        last3 = Signal(name="last3")
        m.d.sync += last3.eq(last2)
        with m.If(last3):
            hs.finish(max=mx, sat=nsat)


def _pick_value(sel, values):
    out = values[-1]
    for i in range(len(values) - 2, -1, -1):
        out = Mux(sel == i, values[i], out)
    return out


#: register stages of the forward-weight rounding (``M + 2**(s-1)``, the shift)
_PREP_STAGES = 2


def prep_cycles(plan: TrainPlan, layer: int) -> int:
    """Cycles from the command handshake to ``done`` valid: one per weight, two before the first
    read, the read (``master``'s latency), the rounding stages, the write and ``done``."""
    return plan.layers[layer].weights + 3 + plan.mem["master"]["latency"] + _PREP_STAGES


def prep_shift_range(plan: TrainPlan) -> tuple[int, int]:
    """``s_w = clog2(max|M|) - (wbits - 1)`` lies in this range (0 for an all-zero layer)."""
    c = plan.cfg
    return -(c.wbits - 1), c.master_bits - c.wbits


class PrepEngine(wiring.Component):
    """A layer's forward weights from its masters (module docstring).

    Interface
    ---------
    cmd : In(stream of {op: layer, max: max|M|})
    done : Out(stream of {s_w})
    rd_master ; wr_fw, wr_fwt (lane-masked)
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        self.smin, self.smax = prep_shift_range(plan)
        mem = plan.mem
        members = command({"cmd": {"op": uint_for(len(plan.layers) - 1),
                                   "max": uint_for(1 << (plan.cfg.master_bits - 1))},
                           "done": {"s_w": sint_for(self.smin, self.smax)}})
        members["rd_master"] = Out(read_bus(mem["master"]["depth"], mem_shape(mem["master"])))
        for name in ("fw", "fwt"):
            members[f"wr_{name}"] = Out(write_bus(mem[name]["depth"], mem_shape(mem[name])))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, cfg, R = self.plan, self.plan.cfg, self.plan.rows
        L = p.layers
        table = {"last": [g.weights - 1 for g in L], "mb": [p.bases["master"][g.index] for g in L],
                 "fwb": [p.bases["fw"][g.index] for g in L], "fwtb": [p.bases["fwt"].get(g.index, 0) for g in L],
                 "tl": [g.taps - 1 for g in L], "cl": [g.cin - 1 for g in L], "ckl": [g.k - 1 for g in L],
                 "ck": [g.k for g in L], "kk": [g.taps for g in L], "okk": [g.out * g.taps for g in L],
                 "hast": [int(g.index > 0) for g in L]}
        hs = Handshake(m, self)
        k = OpConsts(m, table)
        sw = Signal(signed(self.done.payload.s_w.shape().width), name="s_w")
        # s_w = clog2(m) - (wbits - 1) = bitlen(m - 1) - (wbits - 1); 0 for m = 0; from max|M|
        # registered at the command (the sequencer's payload is a mux tree), in the next cycle:
        # its decode (RunShift) is ready before the first word lands
        mx = Signal.like(self.cmd.payload.max, name="maxm")
        clog = bitlen((mx - 1)[:mx.shape().width])
        run, first = Signal(name="run"), Signal(name="first")
        m.d.sync += first.eq(hs.start)
        with m.If(hs.start):
            k.load(self.cmd.payload.op)
            m.d.sync += mx.eq(self.cmd.payload.max)
        with m.If(first):
            m.d.sync += sw.eq(Mux(mx == 0, 0, clog - (cfg.wbits - 1)))
        e = Signal(range(max(table["last"]) + 2), name="e")
        tap = Signal(range(max(table["tl"]) + 2), name="tap")
        c = Signal(range(max(table["cl"]) + 2), name="c")
        kc = Signal(range(max(table["ck"]) + 1), name="kc")          # c*kk + tap
        olane = Signal(range(R), name="olane")
        clane = Signal(range(R), name="clane")
        fwbase = Signal(range(p.mem["fw"]["depth"] + max(table["ck"]) + 1), name="fwbase")
        ctb = Signal(range(p.mem["fwt"]["depth"] + max(table["okk"]) + 1), name="ctbase")
        ob = Signal(range(max(table["okk"]) + max(table["kk"]) + 1), name="obase")
        with m.If(hs.start):
            m.d.sync += [run.eq(0), e.eq(0), tap.eq(0), c.eq(0), kc.eq(0), olane.eq(0), clane.eq(0),
                         ctb.eq(0), ob.eq(0)]
        with m.If(first):
            m.d.sync += [run.eq(1), fwbase.eq(k.fwb)]
        m.d.comb += [self.rd_master.en.eq(run), self.rd_master.addr.eq(k.mb + e)]
        fwa = Signal.like(fwbase, name="fwa")
        fwta = Signal(range(p.mem["fwt"]["depth"] + 1), name="fwta")
        m.d.comb += [fwa.eq(fwbase + kc), fwta.eq(k.fwtb + ctb + ob + tap)]
        with m.If(run):
            m.d.sync += [e.eq(e + 1)]
            with m.If(e == k.last):
                m.d.sync += run.eq(0)
            with m.If(tap == k.tl):
                m.d.sync += tap.eq(0)
                with m.If(c == k.cl):
                    # next output channel
                    m.d.sync += [c.eq(0), kc.eq(0), clane.eq(0), ctb.eq(0), ob.eq(ob + k.kk),
                                 olane.eq(Mux(olane == R - 1, 0, olane + 1))]
                    with m.If(olane == R - 1):
                        m.d.sync += fwbase.eq(fwbase + k.ck)
                with m.Else():
                    m.d.sync += [c.eq(c + 1), kc.eq(kc + 1), clane.eq(Mux(clane == R - 1, 0, clane + 1))]
                    with m.If(clane == R - 1):
                        m.d.sync += ctb.eq(ctb + k.okk)
            with m.Else():
                m.d.sync += [tap.eq(tap + 1), kc.eq(kc + 1)]
        v1, last1 = Signal(name="v1"), Signal(name="last1")
        fwa1, fwta1 = Signal.like(fwa, name="fwa1"), Signal.like(fwta, name="fwta1")
        ol1, cl1 = Signal.like(olane, name="ol1"), Signal.like(clane, name="cl1")
        m.d.sync += [v1.eq(run), last1.eq(run & (e == k.last)), fwa1.eq(fwa), fwta1.eq(fwta), ol1.eq(olane),
                     cl1.eq(clane)]
        # to the master's read data (a registered output: one stage more)
        v1, last1, fwa1, fwta1, ol1, cl1 = (delay(m, x, p.mem["master"]["latency"] - 1, n) for x, n in (
            (v1, "vr"), (last1, "lastr"), (fwa1, "fwar"), (fwta1, "fwtar"), (ol1, "olr"), (cl1, "clr")))
        # rnd(M, s_w) in two register stages (v + 2**(s-1), the shift), then saturate and write
        rs = RunShift(m, sw, self.smin, self.smax, name="ps")
        ta = Signal.like(rs.add(self.rd_master.data, rs.bias()), name="ta")
        m.d.sync += ta.eq(rs.add(self.rd_master.data, rs.bias()))
        ub = Signal.like(rs.shift(ta), name="ub")
        m.d.sync += ub.eq(rs.shift(ta))
        v3, last3, fwa3, fwta3, ol3, cl3 = (delay(m, x, _PREP_STAGES, n) for x, n in (
            (v1, "v"), (last1, "last"), (fwa1, "fwa"), (fwta1, "fwta"), (ol1, "ol"), (cl1, "cl")))
        w = Signal(signed(cfg.wbits), name="w")
        m.d.comb += w.eq(sat_to(ub, cfg.wbits))
        m.d.comb += [self.wr_fw.en.eq(Mux(v3, 1 << ol3, 0)), self.wr_fw.addr.eq(fwa3),
                     self.wr_fwt.en.eq(Mux(v3 & k.hast, 1 << cl3, 0)), self.wr_fwt.addr.eq(fwta3)]
        for j in range(R):
            m.d.comb += [self.wr_fw.data[j].eq(w), self.wr_fwt.data[j].eq(w)]
        last2 = Signal(name="last2")
        m.d.sync += last2.eq(last3)
        with m.If(last2):
            hs.finish(s_w=sw)
        return m
