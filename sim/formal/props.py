"""Reusable formal building blocks: free inputs, the stream rules, element counters.

Every harness is a plain :class:`amaranth.Elaboratable` whose only ports are free inputs (the
solver picks any value in every cycle). The design under test sits inside it as a submodule; its
input streams are driven from free inputs under the stream rules (``Assume``), its output streams
are checked against them (``Assert``). Nothing here looks inside a design: the properties use the
public ports only, so they hold across any restructuring of the internals.
"""

from __future__ import annotations

from amaranth import ClockDomain, Elaboratable, Module, Signal, Value
from amaranth.hdl import Assert, Assume

__all__ = ["Harness", "stream_rule", "drive_stream", "free_const", "watchdog", "pending", "offer_all",
           "drain_check"]


class Harness(Elaboratable):
    """Base class: ``free(shape, name)`` makes a top-level input the solver drives freely.

    Subclasses implement ``build(m)`` and add ``Assert``/``Assume``/``Cover`` statements.
    The clock domain ``sync`` is reset-less: the initial state is the designs' reset values
    (every register's ``init``), so no reset sequence is needed, and k-induction starts from
    arbitrary states.
    """

    def __init__(self):
        self.cd = ClockDomain("sync", reset_less=True)
        self.ports = [self.cd.clk]

    def free(self, shape, name):
        s = Signal(shape, name=name)
        self.ports.append(s)
        return s

    def build(self, m):   # pragma: no cover - overridden
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.cd
        self.build(m)
        return m


def _hold(m, valid, ready, payload, name):
    """``valid`` and ``payload`` of the previous cycle, and whether that cycle was a stall."""
    pv = Signal(name=f"{name}_pv")
    pr = Signal(name=f"{name}_pr")
    pp = Signal(len(payload), name=f"{name}_pp")
    m.d.sync += [pv.eq(valid), pr.eq(ready), pp.eq(payload)]
    return pv & ~pr, pp


def stream_rule(m, port, name, *, assume=False):
    """The stream rule on ``port`` (``valid``, ``ready``, ``payload``): once ``valid`` is high,
    ``valid`` and ``payload`` hold until ``ready``. Asserted (an output) or assumed (an input)."""
    # the raw bits (a signed payload compared with its unsigned copy would differ when negative)
    payload = Value.cast(port.payload).as_unsigned()
    stalled, pp = _hold(m, port.valid, port.ready, payload, name)
    check = Assume if assume else Assert
    m.d.comb += check(~stalled | (port.valid & (payload == pp)))


def drive_stream(m, h, port, name, *, valid=None):
    """Drive the input stream ``port`` of a design from free inputs under the stream rule
    (arbitrary gaps; a beat once offered stays until taken). Returns (valid, payload, take)."""
    v = h.free(1, f"{name}_valid") if valid is None else valid
    p = h.free(len(Value.cast(port.payload)), f"{name}_payload")
    m.d.comb += [port.valid.eq(v), port.payload.eq(p)]
    stalled, pp = _hold(m, v, port.ready, p, name)
    m.d.comb += Assume(~stalled | (v & (p == pp)))
    take = Signal(name=f"{name}_take")
    m.d.comb += take.eq(port.valid & port.ready)
    return v, p, take


def free_const(m, h, shape, name):
    """A free input the solver picks once: it keeps its first value for the whole trace."""
    v = h.free(shape, name)
    prev = Signal(shape, name=f"{name}_prev")
    started = Signal(name=f"{name}_started")
    m.d.sync += [prev.eq(v), started.eq(1)]
    m.d.comb += Assume(~started | (v == prev))
    return v


def watchdog(m, bound, waiting, progress, enable, name):
    """Bounded response: while ``waiting`` and ``enable`` (the consumer ready), ``progress`` must
    come within ``bound`` cycles. The count restarts at each progress and whenever nothing waits."""
    wait = Signal(range(bound + 2), name=f"wait_{name}")
    with m.If(progress | ~waiting):
        m.d.sync += wait.eq(0)
    with m.Elif(enable & (wait <= bound)):
        m.d.sync += wait.eq(wait + 1)
    m.d.comb += Assert(wait <= bound)
    return wait


def pending(m, plus, minus, top, name):
    """``plus`` events minus ``minus`` events so far, asserted to stay in 0..top-1
    (a ``minus`` with nothing pending is an invented or duplicated element)."""
    p = Signal(range(top + 1), name=name)
    m.d.sync += p.eq(p + plus - minus)
    m.d.comb += [Assert(~minus | (p > 0) | plus), Assert(p < top)]
    return p


def offer_all(m, port, beats, name):
    """Drive ``port`` (an input stream) with ``valid`` high until ``beats`` beats were taken,
    then low: the no-stall source of a drain check. Returns (take, beats taken so far)."""
    got = Signal(range(beats + 1), name=f"{name}_taken")
    take = Signal(name=f"{name}_take")
    m.d.comb += [port.valid.eq(got < beats), take.eq(port.valid & port.ready)]
    with m.If(take):
        m.d.sync += got.eq(got + 1)
    return take, got


def drain_check(m, latency, done, name="cycle"):
    """Assert ``done`` from cycle ``latency`` on (cycle 0 is the first of the trace)."""
    cyc = Signal(range(latency + 2), name=name)
    with m.If(cyc <= latency):
        m.d.sync += cyc.eq(cyc + 1)
    m.d.comb += Assert((cyc < latency) | done)
