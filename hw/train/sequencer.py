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

from types import SimpleNamespace

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


def _or_tree(values):
    """``values`` ORed in a balanced tree (depth log2 of their number)."""
    while len(values) > 1:
        values = [values[k] | values[k + 1] if k + 1 < len(values) else values[k] for k in range(0, len(values), 2)]
    return values[0]


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

    def _scalars(self):
        """The scalars the sequencer carries between engines (module docstring), as registers."""
        p, c = self.plan, self.plan.cfg
        L = p.layers
        bw = 8
        st = SimpleNamespace(
            maxm=[Signal(unsigned(c.master_bits), name=f"maxM{i}", init=v) for i, v in enumerate(self.init_max)],
            sw=[Signal(signed(8), name=f"s_w{i}") for i in range(len(L))],
            bits_da=Signal(bw, name="bits_da"),
            bits_e=Signal(bw, name="bits_e"),
            bits_dw=[Signal(bw, name=f"bits_dw{i}") for i in range(len(L))],
            bits_dg={i: Signal(bw, name=f"bits_dg{i}") for i in p.bn_layers},
            bits_db={i: Signal(bw, name=f"bits_db{i}") for i in p.bn_layers},
            step=Signal(32, name="step"))
        res = self.o.payload
        st.sat = Signal(32, name="sat")
        st.correct = Signal.like(res.correct, name="correct")
        st.perr = Signal.like(res.perr, name="perr")
        return st

    def _command(self, st, eng, arg) -> dict:
        """The payload fields of the command of program entry ``(eng, arg)``."""
        p, c = self.plan, self.plan.cfg
        g1 = c.gbits - 1

        def s_of(bits, extra=0):
            return Mux(bits == 0, 0, bits - g1) + extra

        if eng == "prep":
            return {"op": arg, "max": st.maxm[arg]}
        if eng == "mac":
            return {"op": arg}
        if eng == "bnf":
            return {"sh": st.sw[arg] + c.wbits - 1, "first": st.step == 0}
        if eng == "loss":
            last = p.layers[-1].index
            base = c.log2e_bits + c.master_frac + c.layer_in_bits(last)[1] - c.exp_frac
            return {"shift": base - st.sw[last]}
        if eng == "quant":
            return {"op": arg, "s": s_of(st.bits_e)}
        if eng == "bnb":
            return {"s": s_of(st.bits_da)}
        if eng == "update":
            what, i = arg
            bits = {"weights": st.bits_dw[i], "gamma": st.bits_dg.get(i), "beta": st.bits_db.get(i)}[what]
            return {"op": p.update_tensors().index(arg), "s": s_of(bits, max(0, -p.update_shift(what)))}
        return {}

    def _take_done(self, m, st, eng, arg, dp):
        """Keep what the ``done`` beat of entry ``(eng, arg)`` reports for later engines."""
        if eng == "prep":
            m.d.sync += st.sw[arg].eq(dp.s_w)
        elif eng == "mac":
            kind, i = self.plan.mac_order[arg]
            if kind == "da":
                m.d.sync += st.bits_da.eq(dp.bits)
            elif kind == "dw":
                m.d.sync += st.bits_dw[i].eq(dp.bits)
        elif eng == "loss":
            m.d.sync += [st.bits_e.eq(dp.bits), st.correct.eq(dp.correct), st.perr.eq(dp.perr)]
        elif eng == "bnb":
            m.d.sync += [st.bits_e.eq(dp.dx), st.bits_dg[arg].eq(dp.dgamma), st.bits_db[arg].eq(dp.dbeta)]
        elif eng == "update":
            what, i = arg
            m.d.sync += st.sat.eq(st.sat + dp.sat)
            if what == "weights":
                m.d.sync += st.maxm[i].eq(dp.max)

    def _program_states(self, m, st, cmd_terms, done_states) -> str:
        """One command state ``P<k>`` and one wait state ``W<k>`` per program entry; returns the
        name of the state that sends the result beat."""
        out_state = None
        for k, (eng, arg) in enumerate(self.plan.program):
            name = eng if eng not in ("bnf", "bnb") else f"{eng}{arg}"
            if eng == "out":
                out_state = f"P{k}"
                with m.State(f"P{k}"):
                    with m.If(self.o.ready):
                        m.d.sync += st.step.eq(st.step + 1)
                        m.next = "IDLE"
                continue
            cmd_terms[name].append((f"P{k}", self._command(st, eng, arg)))
            done_states[name].append(f"W{k}")
            with m.State(f"P{k}"):
                with m.If(getattr(self, f"{name}_cmd").ready):
                    m.next = f"W{k}"
            with m.State(f"W{k}"):
                d = getattr(self, f"{name}_done")
                with m.If(d.valid):
                    m.next = f"P{k + 1}"
                    self._take_done(m, st, eng, arg, d.payload)
        return out_state

    def _drive(self, m, fsm, st, cmd_terms, done_states, out_state):
        """Every combinational output as a function of the FSM state (continuous assignments)."""
        on = fsm.ongoing
        for name in self.engine_names:
            terms = cmd_terms[name]
            cm = getattr(self, f"{name}_cmd")
            m.d.comb += [cm.valid.eq(_any(on(s) for s, _ in terms)),
                         getattr(self, f"{name}_done").ready.eq(_any(on(s) for s in done_states[name]))]
            for field in cm.payload.shape().members if hasattr(cm.payload.shape(), "members") else ():
                vals = [(on(s), pl[field]) for s, pl in terms if field in pl]
                if not vals:
                    continue
                dst = getattr(cm.payload, field)
                if len(vals) == 1:
                    m.d.comb += dst.eq(vals[0][1])
                    continue
                # the command states are exclusive: an AND-OR tree, not a chain of multiplexers
                # (the update's shift has one term per tensor); 0 where no state sends a command
                parts = []
                for j, (cond, val) in enumerate(vals):
                    part = Signal(dst.shape(), name=f"{name}_{field}_{j}")
                    m.d.comb += part.eq(Mux(cond, val, 0))
                    parts.append(part)
                m.d.comb += dst.eq(_or_tree(parts))
        res = self.o.payload
        m.d.comb += [self.rd.ready.eq(on("IDLE") & self.rd.valid), self.o.valid.eq(on(out_state)),
                     res.step.eq(st.step + 1), res.saturated.eq(st.sat), res.correct.eq(st.correct),
                     res.perr.eq(st.perr)]

    def elaborate(self, platform):
        m = Module()
        st = self._scalars()
        # Every combinational output is a function of the state, assigned after the FSM (continuous
        # assignments): a signal set inside a state becomes an ``always @*`` that Icarus does not
        # evaluate before the state first changes, and the outputs would read X after reset.
        cmd_terms = {name: [] for name in self.engine_names}     # (in this state, payload dict)
        done_states = {name: [] for name in self.engine_names}
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.rd.valid):
                    m.next = "DUMP"
                with m.Elif(self.i_valid):
                    m.d.sync += st.sat.eq(0)
                    m.next = "P0"
            with m.State("DUMP"):
                with m.If(self.dump_cmd.ready):
                    m.next = "DUMP_W"
            with m.State("DUMP_W"):
                with m.If(self.dump_done.valid):
                    m.next = "IDLE"
            cmd_terms["dump"].append(("DUMP", {}))
            done_states["dump"].append("DUMP_W")
            out_state = self._program_states(m, st, cmd_terms, done_states)
        self._drive(m, fsm, st, cmd_terms, done_states, out_state)
        return m
