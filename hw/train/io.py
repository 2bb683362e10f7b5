"""The training accelerator's input and read-back engines.

:class:`Loader`: takes a batch from the input stream, one pixel per beat, images one after
another, each image's pixels in (c, y, x) order, its label in every beat (taken from the image's
first beat); writes the pixels to the input region of ``act`` in the (c, n, y, x) layout and the
labels to ``labels``. ``i.ready`` is high only while a batch is being taken.

:class:`Dumper`: streams the state out on ``o``, one value per beat: every layer's master weights
(C order), then per BN layer its master gamma, master beta, running mean and running sigma (the
fields of :class:`~l1bn.spec.reference.train.TrainState`, in that order). The read data lands in a
small buffer (a FIFO of ``dump_latency + 2`` values) that drives ``o``; a read goes out only while
the buffer has room for it and every read in flight.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, OpConsts, command
from l1bn.hw.train.fixed import delay
from l1bn.hw.train.plan import TrainPlan

__all__ = ["Loader", "Dumper", "input_layout", "dump_segments", "loader_cycles", "dump_width", "dump_cycles",
           "dump_latency"]


def input_layout(plan: TrainPlan) -> data.StructLayout:
    """One input beat: a pixel (unsigned ``abits``) and the image's label."""
    return data.StructLayout({"pixel": mem_shape(plan.mem["act"]), "label": mem_shape(plan.mem["labels"])})


def loader_cycles(plan: TrainPlan) -> int:
    """Cycles from the command handshake to ``done`` valid with a beat every cycle."""
    g = plan.layers[0]
    return plan.n * g.cin * g.hwi + 1


class Loader(wiring.Component):
    """A batch of images and labels into ``act`` and ``labels`` (module docstring).

    Interface
    ---------
    cmd : In(stream) ; done : Out(stream)
    i : In(stream.Signature(input_layout(plan)))
    wr_act, wr_labels
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        mem = plan.mem
        members = command({})
        members["i"] = In(stream.Signature(input_layout(plan)))
        for name in ("act", "labels"):
            members[f"wr_{name}"] = Out(write_bus(mem[name]["depth"], mem_shape(mem[name])))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        g = p.layers[0]
        N, C, HW = p.n, g.cin, g.hwi
        hs = Handshake(m, self)
        q = Signal(range(HW), name="q")
        c = Signal(range(C), name="c")
        n = Signal(range(N), name="n")
        cb = Signal(range(C * N * HW + 1), name="cbase")
        nb = Signal(range(N * HW + 1), name="nbase")
        with m.If(hs.start):
            m.d.sync += [q.eq(0), c.eq(0), n.eq(0), cb.eq(0), nb.eq(0)]
        take = Signal()
        m.d.comb += [self.i.ready.eq(hs.busy), take.eq(self.i.valid & hs.busy)]
        m.d.comb += [self.wr_act.en.eq(take), self.wr_act.addr.eq(cb + nb + q), self.wr_act.data.eq(self.i.payload.pixel),
                     self.wr_labels.en.eq(take & (q == 0) & (c == 0)), self.wr_labels.addr.eq(n),
                     self.wr_labels.data.eq(self.i.payload.label)]
        with m.If(take):
            m.d.sync += q.eq(Mux(q == HW - 1, 0, q + 1))
            with m.If(q == HW - 1):
                m.d.sync += [c.eq(Mux(c == C - 1, 0, c + 1)), cb.eq(Mux(c == C - 1, 0, cb + N * HW))]
                with m.If(c == C - 1):
                    m.d.sync += [n.eq(n + 1), nb.eq(nb + HW)]
                    with m.If(n == N - 1):
                        hs.finish()
        return m


DUMP_MEMS = ("master", "gamma", "beta", "run_mu", "run_sigma")


def dump_segments(plan: TrainPlan) -> list[tuple[str, int, int, str]]:
    """``(memory, base, count, what)`` in dump order."""
    out = [("master", plan.bases["master"][g.index], g.weights, f"{g.name}.master") for g in plan.layers]
    for i in plan.bn_layers:
        g = plan.layers[i]
        cb = plan.bases["chan"][i]
        out += [(name, cb, g.out, f"{g.name}.{name}") for name in DUMP_MEMS[1:]]
    return out


def dump_width(plan: TrainPlan) -> int:
    return max(plan.mem[name]["bits"] for name in DUMP_MEMS if name in plan.mem)


def dump_latency(plan: TrainPlan) -> int:
    """The longest read latency of the memories the :class:`Dumper` reads."""
    return max(plan.mem[name].get("latency", 1) for name in DUMP_MEMS if name in plan.mem)


def dump_cycles(plan: TrainPlan) -> int:
    """Cycles from the command handshake to ``done`` valid, ``o`` always ready: one per value, one
    per segment for its constants, the reads' latency, the buffer's output and ``done``."""
    segs = dump_segments(plan)
    tail = next(plan.mem[s[0]].get("latency", 1) for s in reversed(segs))
    return sum(s[2] for s in segs) + len(segs) + tail + 2


class Dumper(wiring.Component):
    """The state out, one value per beat (module docstring).

    Reads go out while the buffer behind the memories has room for every read in flight, so a
    stalled ``o`` loses no word whatever each memory's read latency (``master``'s is 2); the
    buffer holds ``dump_latency + 2`` values, which keeps one read per cycle while ``o`` is ready.

    Interface
    ---------
    cmd : In(stream) ; done : Out(stream)
    o : Out(stream.Signature(signed(dump_width(plan))))
    rd_master, rd_gamma, rd_beta, rd_run_mu, rd_run_sigma
    """

    def __init__(self, plan: TrainPlan):
        self.plan = plan
        mem = plan.mem
        members = command({})
        members["o"] = Out(stream.Signature(signed(dump_width(plan))))
        self.mems = [n for n in DUMP_MEMS if n in mem]
        for name in self.mems:
            members[f"rd_{name}"] = Out(read_bus(mem[name]["depth"], mem_shape(mem[name])))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        segs = dump_segments(p)
        hs = Handshake(m, self)
        k = OpConsts(m, {"sel": [self.mems.index(s[0]) for s in segs], "base": [s[1] for s in segs],
                         "last": [s[2] - 1 for s in segs]})
        seg = Signal(range(len(segs) + 1), name="seg")
        j = Signal(range(max(s[2] for s in segs) + 1), name="j")
        run = Signal(name="run")
        load = Signal(name="load")          # the segment's constants are being loaded
        with m.If(hs.start):
            m.d.sync += [seg.eq(0), j.eq(0), run.eq(1), load.eq(1)]
        with m.If(load):
            k.load(seg)
            m.d.sync += load.eq(0)
        width = dump_width(p)
        lat = dump_latency(p)
        depth = lat + 2
        m.submodules.buf = buf = SyncFIFO(width=width + 1, depth=depth)
        flight = Signal(range(depth + 1), name="flight")      # reads whose data has not landed
        fire = Signal()
        m.d.comb += fire.eq(run & ~load & (flight + buf.level < depth))
        for idx, name in enumerate(self.mems):
            port = getattr(self, f"rd_{name}")
            m.d.comb += [port.en.eq(fire & (k.sel == idx)), port.addr.eq(k.base + j)]
        with m.If(fire):
            with m.If(j == k.last):
                m.d.sync += [j.eq(0), seg.eq(seg + 1), load.eq(1)]
                with m.If(seg == len(segs) - 1):
                    m.d.sync += [run.eq(0), load.eq(0)]
            with m.Else():
                m.d.sync += j.eq(j + 1)
        # each read's memory and last flag, to the cycle its data lands (segments are separated
        # by a cycle of ``load``, so reads of latency 1 and 2 never land together)
        last = (j == k.last) & (seg == len(segs) - 1)
        lands = []
        for idx, name in enumerate(self.mems):
            d = p.mem[name].get("latency", 1)
            lands.append((delay(m, fire & (k.sel == idx), d, f"{name}_v"), delay(m, last, d, f"{name}_l"),
                          getattr(self, f"rd_{name}").data))
        land = Signal(name="land")
        m.d.comb += land.eq(_any(v for v, _, _ in lands))
        m.d.comb += [buf.w_en.eq(land),
                     buf.w_data.eq(Cat(_pick_onehot([(v, d) for v, _, d in lands])[:width],
                                       _any(v & lf for v, lf, _ in lands)))]
        m.d.sync += flight.eq(flight + fire - land)
        m.d.comb += [self.o.valid.eq(buf.r_rdy), self.o.payload.eq(buf.r_data[:width]), buf.r_en.eq(self.o.ready)]
        with m.If(self.o.valid & self.o.ready & buf.r_data[width]):
            hs.finish()
        return m


def _any(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


def _pick_onehot(pairs):
    """``OR(Mux(valid, data, 0))`` over one-hot ``valid``s (each ``data`` sign-extended if signed)."""
    return _any(Mux(v, d, 0) for v, d in pairs)
