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

from amaranth import Const, Module, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import pick

__all__ = ["command", "Handshake", "OpConsts", "uint_for", "sint_for"]


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
