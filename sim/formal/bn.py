"""Formal harnesses of the BN forward units (:mod:`l1bn.hw.bn_unit`), on their public ports."""

from __future__ import annotations

from dataclasses import replace

from amaranth import Mux, Signal
from amaranth.hdl import Assert
from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for

from .props import Harness, drain_check, drive_stream, offer_all, stream_rule

__all__ = ["BNStreamHarness", "BNCountHarness", "BNDrainHarness", "response_bound"]


def response_bound(cfg) -> int:
    """Cycles within which, with both outputs ready, a complete channel's next output beat (and
    its statistics record) must appear: twice the latency of a one-channel batch."""
    return 2 * bn_latency_cycles(replace(cfg, channels=1))


def count_property(m, dut, take, *, beats: int, channels: int, cap: int):
    """The ``count`` property on a BN unit ``dut`` whose input handshake is ``take``: the
    harness's bookkeeping and its assertions (no beat invented or repeated, fewer than ``cap``
    beats pending, no record before its channel, records in channel order).

    Returns ``(pend, part, chans, rec, out, srec)``: beats accepted and not yet out, beats of the
    channel being received, channels complete and without a record, the channel number of the
    next record, and the output and record handshakes, for the invariants that
    :mod:`~l1bn.sim.formal.bn_count` states beside them.
    """
    pend = Signal(range(cap + 1))            # beats accepted and not yet out
    part = Signal(range(beats))              # beats of the channel being received
    chans = Signal(range(8))                 # channels complete and without a record yet
    rec = Signal(range(channels))            # channel number of the next record
    out = dut.o.valid & dut.o.ready
    srec = dut.stats.valid & dut.stats.ready
    chan_done = take & (part == beats - 1)
    m.d.sync += [pend.eq(pend + take - out), chans.eq(chans + chan_done - srec)]
    with m.If(take):
        m.d.sync += part.eq(Mux(part == beats - 1, 0, part + 1))
    with m.If(srec):
        m.d.sync += rec.eq(Mux(rec == channels - 1, 0, rec + 1))
    m.d.comb += [
        Assert(~out | (pend > 0)),                           # no beat invented or repeated
        Assert(pend < cap),
        Assert(~srec | (chans > 0)),                         # no record before its channel
        Assert(~srec | (dut.stats.payload.channel == rec)),  # in order, none skipped
        Assert(chans < 7),
    ]
    return pend, part, chans, rec, out, srec


class _BNHarness(Harness):
    def __init__(self, cfg, unit=None):
        super().__init__()
        self.cfg = cfg
        self.unit = unit

    def dut(self, m):
        dut = self.unit if self.unit is not None else bn_unit_for(self.cfg)
        m.submodules.dut = dut
        _, _, take = drive_stream(m, self, dut.i, "i")
        m.d.comb += [dut.gamma.eq(self.free(len(dut.gamma), "gamma")),
                     dut.beta.eq(self.free(len(dut.beta), "beta")),
                     dut.o.ready.eq(self.free(1, "o_ready")),
                     dut.stats.ready.eq(self.free(1, "stats_ready"))]
        return dut, take


class BNStreamHarness(_BNHarness):
    """Stream rules on ``o`` and ``stats`` (inputs: the rules assumed, gaps and stalls free)."""

    def __init__(self, cfg, port, unit=None):
        super().__init__(cfg, unit)
        self.port = port

    def build(self, m):
        dut, _ = self.dut(m)
        stream_rule(m, getattr(dut, self.port), self.port)


class BNCountHarness(_BNHarness):
    """No element lost or duplicated, on ``o`` (beats) and ``stats`` (one record per channel).

    - an output beat never outruns the input: beat j leaves only after beat j was accepted;
    - statistics records come one per completed channel, numbered 0, 1, ... (mod ``channels``);
    - bounded response (``response=True``, property ``response``; ``count`` leaves it out): with
      ``o.ready`` and ``stats.ready`` high, a completed channel's pending beats (and record) come
      out, each within :func:`response_bound` cycles of the previous one.
    """

    def __init__(self, cfg, unit=None, *, response=True):
        super().__init__(cfg, unit)
        self.response = response

    def build(self, m):
        cfg = self.cfg
        dut, take = self.dut(m)
        pend, part, chans, _, out, srec = count_property(m, dut, take, beats=cfg.beats,
                                                         channels=cfg.channels, cap=4 * cfg.beats + 64)
        if not self.response:
            return
        bound = response_bound(cfg)
        both = dut.o.ready & dut.stats.ready
        for what, waiting, progress in (("o", pend - part > 0, out), ("stats", chans > 0, srec)):
            wait = Signal(range(bound + 2), name=f"wait_{what}")
            with m.If(progress | ~waiting):
                m.d.sync += wait.eq(0)
            with m.Elif(both & (wait <= bound)):
                m.d.sync += wait.eq(wait + 1)
            m.d.comb += Assert(wait <= bound)


class BNDrainHarness(_BNHarness):
    """No stalls (input valid until one batch is in, both outputs always ready): every beat of the
    batch and every channel's record is out by ``bn_latency_cycles(cfg)`` cycles."""

    def build(self, m):
        cfg = self.cfg
        dut = self.unit if self.unit is not None else bn_unit_for(cfg)
        m.submodules.dut = dut
        total = cfg.channels * cfg.beats
        offer_all(m, dut.i, total, "i")
        m.d.comb += [dut.i.payload.eq(self.free(len(dut.i.payload.as_value()), "i_payload")),
                     dut.gamma.eq(self.free(len(dut.gamma), "gamma")),
                     dut.beta.eq(self.free(len(dut.beta), "beta")),
                     dut.o.ready.eq(1), dut.stats.ready.eq(1)]
        outs = Signal(range(total + 2), name="beats_out")
        recs = Signal(range(cfg.channels + 2), name="records")
        with m.If(dut.o.valid):
            m.d.sync += outs.eq(outs + 1)
        with m.If(dut.stats.valid):
            m.d.sync += recs.eq(recs + 1)
        m.d.comb += [Assert(outs <= total), Assert(recs <= cfg.channels)]
        # the first beat is taken in cycle 0, the last y leaves in cycle latency - 1
        drain_check(m, bn_latency_cycles(cfg), (outs == total) & (recs == cfg.channels))
