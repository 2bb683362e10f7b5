"""The sequencer of the training accelerator: runs the plan's program, one engine at a time, and
carries the scalars of the step from the engine that finds them to the engine that needs them.

For each program entry it sends a command on that engine's ``cmd`` stream and waits for its
``done`` (both ``lib.stream``, joined to the engine with ``wiring.connect``). The scalars it keeps:

- ``maxM[i]`` (largest master weight magnitude of layer ``i``, from the update; the initial state's
  at reset) -> the weight prep, which returns ``s_w[i]``;
- ``s_w[i]`` -> the BN forward (running statistics' shift ``s_w + wbits - 1``) and the loss
  (``shift = log2e_bits + z_exp - exp_frac``, ``z_exp = master_frac - s_w + a_exp``);
- the bit length of each tensor's largest magnitude (input gradient, BN backward output, weight,
  gamma and beta gradients, loss gradient) -> the shift of the quantizer that uses it,
  ``bitlen - (gbits - 1)`` (0 for an all-zero tensor) plus, for an update, ``max(0, -ush)``;
- the step count (the first step copies the batch statistics into the running ones), the correct
  count, the probability error and the saturation count -> the per-step result on ``o``.

Idle, it serves a read-back request on ``rd`` (the :class:`~l1bn.hw.train.io.Dumper`) or, when a
batch arrives (``i_valid``), runs a step.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.train.engine import uint_for
from l1bn.hw.train.plan import TrainPlan

__all__ = ["Sequencer", "result_layout"]


def _any(values):
    out = 0
    for v in values:
        out = out | v
    return out


def result_layout(plan: TrainPlan) -> data.StructLayout:
    """One ``o`` beat per step: the step number (from 1), correct predictions, the probability
    error (``sum 2**P - p[label]``) and the count of master values the update saturated."""
    n, P = plan.n, plan.cfg.prob_bits
    return data.StructLayout({"step": unsigned(32), "correct": uint_for(n), "perr": uint_for(n << P),
                              "saturated": unsigned(32)})


def _flip_member(member):
    """The sequencer's side of an engine member (``cmd``: Out, ``done``: In)."""
    sig = member.signature
    sig = sig.flip() if isinstance(sig, wiring.FlippedSignature) else sig
    return Out(sig) if member.flow == In else In(sig)


class Sequencer(wiring.Component):
    """Runs ``plan.program`` (module docstring).

    Parameters
    ----------
    plan : TrainPlan
    engines : dict name -> engine component (its ``cmd``/``done`` members are mirrored here as
        ``<name>_cmd`` / ``<name>_done``)
    init_max : list of int
        ``max|M|`` of each layer's initial master weights.

    Interface
    ---------
    o : Out(stream.Signature(result_layout(plan)))
    rd : In(stream.Signature(unsigned(1)))      a read-back request (the payload is ignored)
    i_valid : In(1)                              a batch is arriving
    """

    def __init__(self, plan: TrainPlan, engines: dict, init_max: list[int]):
        self.plan, self.engine_names, self.init_max = plan, list(engines), list(init_max)
        members = {"o": Out(stream.Signature(result_layout(plan))), "rd": In(stream.Signature(unsigned(1))),
                   "i_valid": In(1)}
        for name, eng in engines.items():
            members[f"{name}_cmd"] = _flip_member(eng.signature.members["cmd"])
            members[f"{name}_done"] = _flip_member(eng.signature.members["done"])
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, c = self.plan, self.plan.cfg
        L = p.layers
        last = L[-1].index
        g1 = c.gbits - 1
        mb = c.master_bits
        maxm = [Signal(unsigned(mb), name=f"maxM{i}", init=v) for i, v in enumerate(self.init_max)]
        sw = [Signal(signed(8), name=f"s_w{i}") for i in range(len(L))]
        bw = 8
        bits_da = Signal(bw, name="bits_da")
        bits_e = Signal(bw, name="bits_e")
        bits_dw = [Signal(bw, name=f"bits_dw{i}") for i in range(len(L))]
        bits_dg = {i: Signal(bw, name=f"bits_dg{i}") for i in p.bn_layers}
        bits_db = {i: Signal(bw, name=f"bits_db{i}") for i in p.bn_layers}
        step = Signal(32, name="step")
        res = self.o.payload
        sat = Signal(32, name="sat")
        correct = Signal.like(res.correct, name="correct")
        perr = Signal.like(res.perr, name="perr")

        def s_of(bits, extra=0):
            return Mux(bits == 0, 0, bits - g1) + extra

        def cmd(name):
            return getattr(self, f"{name}_cmd")

        def done(name):
            return getattr(self, f"{name}_done")

        mac_keys = p.mac_order
        upd = p.update_tensors()
        # Every combinational output is a function of the state, assigned after the FSM (continuous
        # assignments): a signal set inside a state becomes an ``always @*`` that Icarus does not
        # evaluate before the state first changes, and the outputs would read X after reset.
        cmd_terms = {name: [] for name in self.engine_names}     # (in this state, payload dict)
        done_states = {name: [] for name in self.engine_names}
        out_state = None
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.rd.valid):
                    m.next = "DUMP"
                with m.Elif(self.i_valid):
                    m.d.sync += sat.eq(0)
                    m.next = "P0"
            with m.State("DUMP"):
                with m.If(cmd("dump").ready):
                    m.next = "DUMP_W"
            with m.State("DUMP_W"):
                with m.If(done("dump").valid):
                    m.next = "IDLE"
            cmd_terms["dump"].append(("DUMP", {}))
            done_states["dump"].append("DUMP_W")
            for k, (eng, arg) in enumerate(p.program):
                name = eng if eng not in ("bnf", "bnb") else f"{eng}{arg}"
                nxt = f"P{k + 1}"
                if eng == "out":
                    out_state = f"P{k}"
                    with m.State(f"P{k}"):
                        with m.If(self.o.ready):
                            m.d.sync += step.eq(step + 1)
                            m.next = "IDLE"
                    continue
                if eng == "prep":
                    pl = {"op": arg, "max": maxm[arg]}
                elif eng == "mac":
                    pl = {"op": arg}
                elif eng == "bnf":
                    pl = {"sh": sw[arg] + c.wbits - 1, "first": step == 0}
                elif eng == "loss":
                    base = c.log2e_bits + c.master_frac + c.layer_in_bits(last)[1] - c.exp_frac
                    pl = {"shift": base - sw[last]}
                elif eng == "quant":
                    pl = {"op": arg, "s": s_of(bits_e)}
                elif eng == "bnb":
                    pl = {"s": s_of(bits_da)}
                elif eng == "update":
                    what, i = arg
                    bits = {"weights": bits_dw[i], "gamma": bits_dg.get(i), "beta": bits_db.get(i)}[what]
                    pl = {"op": upd.index(arg), "s": s_of(bits, max(0, -p.update_shift(what)))}
                else:
                    pl = {}
                cmd_terms[name].append((f"P{k}", pl))
                done_states[name].append(f"W{k}")
                with m.State(f"P{k}"):
                    with m.If(cmd(name).ready):
                        m.next = f"W{k}"
                with m.State(f"W{k}"):
                    d = done(name)
                    dp = d.payload
                    with m.If(d.valid):
                        m.next = nxt
                        if eng == "prep":
                            m.d.sync += sw[arg].eq(dp.s_w)
                        elif eng == "mac":
                            kind, i = mac_keys[arg]
                            if kind == "da":
                                m.d.sync += bits_da.eq(dp.bits)
                            elif kind == "dw":
                                m.d.sync += bits_dw[i].eq(dp.bits)
                        elif eng == "loss":
                            m.d.sync += [bits_e.eq(dp.bits), correct.eq(dp.correct), perr.eq(dp.perr)]
                        elif eng == "bnb":
                            m.d.sync += [bits_e.eq(dp.dx), bits_dg[arg].eq(dp.dgamma), bits_db[arg].eq(dp.dbeta)]
                        elif eng == "update":
                            what, i = arg
                            m.d.sync += sat.eq(sat + dp.sat)
                            if what == "weights":
                                m.d.sync += maxm[i].eq(dp.max)
        on = fsm.ongoing
        for name in self.engine_names:
            terms = cmd_terms[name]
            cm = cmd(name)
            m.d.comb += [cm.valid.eq(_any(on(st) for st, _ in terms)),
                         done(name).ready.eq(_any(on(st) for st in done_states[name]))]
            for field in cm.payload.shape().members if hasattr(cm.payload.shape(), "members") else ():
                vals = [(on(st), pl[field]) for st, pl in terms if field in pl]
                if not vals:
                    continue
                v = vals[-1][1]
                for cond, val in reversed(vals[:-1]):
                    v = Mux(cond, val, v)
                m.d.comb += getattr(cm.payload, field).eq(v)
        m.d.comb += [self.rd.ready.eq(on("IDLE") & self.rd.valid), self.o.valid.eq(on(out_state)),
                     res.step.eq(step + 1), res.saturated.eq(sat), res.correct.eq(correct), res.perr.eq(perr)]
        return m
