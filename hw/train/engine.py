"""What every engine of the training accelerator shares: the command/done handshake with the
sequencer and per-operation constants.

An engine has a ``cmd`` input stream (which of its operations to run, and the run-time scalars
it needs, e.g. a quantizer shift) and a ``done`` output stream (the scalars it found, e.g. the bit
length of a tensor's largest magnitude). It accepts a command only when idle, runs it, then holds
``done`` valid until the sequencer takes it; both follow the ``lib.stream`` rules.

Per-operation constants (loop counts, base addresses, strides) come from the plan: the engine
keeps one table per constant and loads the operation's row into registers when it accepts the
command, so counters compare register against register.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import pick

__all__ = ["command", "Handshake", "OpConsts", "Skid", "uint_for", "sint_for"]


def uint_for(v: int):
    """``unsigned`` shape holding 0..v."""
    return unsigned(max(1, int(v).bit_length()))


def sint_for(lo: int, hi: int):
    """``signed`` shape holding lo..hi."""
    bits = 1 + max(1, max(abs(lo), abs(hi)).bit_length())
    return signed(bits)


def command(fields: dict) -> dict:
    """The ``cmd`` and ``done`` members of an engine: ``fields`` maps ``"cmd"``/``"done"`` to
    dicts of payload fields (at least one each)."""
    def lay(f):
        return data.StructLayout(f or {"none": unsigned(1)})
    return {"cmd": In(stream.Signature(lay(fields.get("cmd")))),
            "done": Out(stream.Signature(lay(fields.get("done"))))}


class Handshake:
    """The engine side of the protocol, built in ``m``: ``start`` (a command is accepted this
    cycle: its payload is ``cmd.payload``), ``busy`` (after ``start``, until :meth:`finish`),
    :meth:`finish` (call under the condition that ends the operation: ``done`` becomes valid in
    the next cycle with ``payload`` values, and stays until taken)."""

    def __init__(self, m: Module, engine):
        self.m, self.e = m, engine
        self.busy = Signal(name="busy")
        self.start = Signal(name="start")
        m.d.comb += [engine.cmd.ready.eq(~self.busy & ~engine.done.valid),
                     self.start.eq(engine.cmd.valid & engine.cmd.ready)]
        with m.If(self.start):
            m.d.sync += self.busy.eq(1)
        with m.If(engine.done.valid & engine.done.ready):
            m.d.sync += engine.done.valid.eq(0)

    def finish(self, **payload):
        m, e = self.m, self.e
        m.d.sync += [self.busy.eq(0), e.done.valid.eq(1)]
        for k, v in payload.items():
            m.d.sync += getattr(e.done.payload, k).eq(v)


class OpConsts:
    """Registers holding the constants of the running operation. ``table`` maps a name to its
    value per operation; ``regs[name]`` (also ``consts.<name>``) is the register, loaded by
    :meth:`load` with the row of ``op`` (a Value)."""

    def __init__(self, m: Module, table: dict, *, prefix: str = "k"):
        self.m, self.table = m, table
        self.regs = {}
        for k, vals in table.items():
            lo, hi = min(vals), max(vals)
            shape = uint_for(hi) if lo >= 0 else sint_for(lo, hi)
            self.regs[k] = Signal(shape, name=f"{prefix}_{k}", init=vals[0])

    def __getattr__(self, name):
        try:
            return self.regs[name]
        except KeyError:
            raise AttributeError(name) from None

    def load(self, op):
        for k, r in self.regs.items():
            self.m.d.sync += r.eq(pick(op, [Const(v, r.shape()) for v in self.table[k]]))


class Skid:
    """A one-beat skid buffer between a feed pipeline and the unit it feeds, built in ``m``, so
    that the pipeline's advance (its read enables, which gate the shared memories' read addresses)
    is a register and not the unit's ``ready`` of the same cycle.

    ``adv`` (a register, ``~full``) is the pipeline's advance; ``valid`` and ``values`` are the
    pipeline's output (its last stage, registered on ``adv``). :meth:`out` gives what the unit sees:
    the held beat while ``full``, else the pipeline's output (no added latency). When the unit
    refuses a valid beat, the beat is held and the pipeline stops one cycle later, after it has
    moved once more; when the unit takes the held beat, the pipeline's output (held meanwhile) is
    next. So the unit gets a beat in every cycle it takes one, as without the buffer: no cycle
    changes. ``values`` that only matter with some beats (a unit's per-channel inputs latched with
    the first beat) are held with the beat, so they stay that beat's.
    """

    def __init__(self, m: Module, *, name: str = "skid"):
        self.m, self.name = m, name
        self.full = Signal(name=f"{name}_full")
        self.adv = Signal(name=f"{name}_adv")
        m.d.comb += self.adv.eq(~self.full)

    def out(self, valid, ready, values):
        """Join ``valid`` and ``values`` (the pipeline's output) to the unit; ``ready`` is the
        unit's. Returns ``(out_valid, out_values)``."""
        m = self.m
        values = [Value.cast(v) for v in values]
        held = [Signal(v.shape(), name=f"{self.name}_h{i}") for i, v in enumerate(values)]
        with m.If(~self.full):
            with m.If(valid & ~ready):
                m.d.sync += [self.full.eq(1)] + [h.eq(v) for h, v in zip(held, values, strict=True)]
        with m.Elif(ready):
            m.d.sync += self.full.eq(0)
        return self.full | valid, [Mux(self.full, h, v) for h, v in zip(held, values, strict=True)]
