"""Formal harnesses of the BN backward units (:mod:`l1bn.hw.bn_backward`), on their public ports.

Per channel the input stream carries 2n beats (pass 1, then pass 2); the unit returns one ``g``
record (dgamma, dbeta) after pass 1 and n dx beats for pass 2.
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed
from amaranth.hdl import Assert, Assume
from l1bn.hw.bn_backward import backward_latency_cycles, backward_unit_for

from .props import Harness, drain_check, drive_stream, offer_all, pending, stream_rule, watchdog

__all__ = ["BwdStreamHarness", "BwdCountHarness", "BwdOverflowHarness", "BwdAccHarness", "BwdDrainHarness",
           "response_bound", "unit_for", "acc_k"]


def unit_for(cfg):
    """The backward unit of ``cfg.bn.norm`` (the one the registry names)."""
    return backward_unit_for(cfg)


def response_bound(cfg) -> int:
    """Cycles within which, with ``o.ready`` and ``g.ready`` high, a due output comes out: twice
    the no-stall latency of a one-channel batch."""
    from dataclasses import replace
    return 2 * backward_latency_cycles(replace(cfg, bn=replace(cfg.bn, channels=1)))


class _BwdHarness(Harness):
    def __init__(self, cfg, unit=None):
        super().__init__()
        self.cfg, self.unit = cfg, unit

    def dut(self, m, *, elaborated=False):
        cfg = self.cfg
        dut = self.unit if self.unit is not None else unit_for(cfg)
        if elaborated:
            from amaranth.hdl import Fragment

            # elaborated now, not lazily: the harness's invariants use its probes
            m.submodules.dut = Fragment.get(dut, None)
        else:
            m.submodules.dut = dut
        _, _, take = drive_stream(m, self, dut.i, "i")
        self.mu = self.free(len(dut.mu), "mu")
        self.inv = self.free(len(dut.inv), "inv")
        self.gamma = self.free(len(dut.gamma), "gamma")
        m.d.comb += [dut.mu.eq(self.mu), dut.inv.eq(self.inv), dut.gamma.eq(self.gamma),
                     dut.o.ready.eq(self.free(1, "o_ready")), dut.g.ready.eq(self.free(1, "g_ready"))]
        # where the stream is: beat j of 2n in the current channel (pass 2 from j = n)
        n = cfg.bn.n
        beat = Signal(range(2 * n), name="beat")
        with m.If(take):
            m.d.sync += beat.eq(Mux(beat == 2 * n - 1, 0, beat + 1))
        return dut, take, beat


class BwdStreamHarness(_BwdHarness):
    """The stream rule on ``o`` or ``g``."""

    def __init__(self, cfg, port, unit=None):
        super().__init__(cfg, unit)
        self.port = port

    def build(self, m):
        dut, _, _ = self.dut(m)
        stream_rule(m, getattr(dut, self.port), self.port)


class BwdCountHarness(_BwdHarness):
    """One ``g`` record per channel, after its pass 1 and before its pass 2 starts; one dx beat
    per pass-2 beat, never ahead of it; with both outputs ready, due outputs come within
    :func:`response_bound` cycles."""

    def build(self, m):
        cfg = self.cfg
        n = cfg.bn.n
        dut, take, beat = self.dut(m)
        out = dut.o.valid & dut.o.ready
        grec = dut.g.valid & dut.g.ready
        p2 = take & (beat >= n)
        dx = pending(m, p2, out, 4 * n + 8, "dx_pending")
        gp = pending(m, take & (beat == n - 1), grec, 4, "g_pending")
        # pass 2 of a channel is taken only once its g record has gone
        m.d.comb += Assert(~(take & (beat == n)) | ((gp == 0) & ~grec) | ((gp == 1) & grec))
        both = dut.o.ready & dut.g.ready
        watchdog(m, response_bound(cfg), dx > 0, out, both, "o")
        watchdog(m, response_bound(cfg), gp > 0, grec, both, "g")


class BwdOverflowHarness(_BwdHarness):
    """dbeta = sum(dy) and dgamma = rnd(rnd(sdyd, t) * inv, R - F - t) with
    sdyd = (sum(dy*x) << frac) - mu*sum(dy), exact on the harness side, for the first channel.
    x, dy and mu are restricted to the ends of their contract ranges (sdyd is multilinear in
    them, so it takes its extremes there), inv is free in 0..2**R, and, as the reference does,
    statistics with ``|h| >= 2**(h_bits - 1)`` are outside the contract (assumed away)."""

    def build(self, m):
        cfg = self.cfg
        b = cfg.bn
        n = b.n
        dut, take, beat = self.dut(m)
        x, dy = dut.i.payload.x, dut.i.payload.dy
        xlo, xhi = -(1 << (b.width - 1)), (1 << (b.width - 1)) - 1
        glo, ghi = -(1 << (cfg.grad_width - 1)), (1 << (cfg.grad_width - 1)) - 1
        m.d.comb += [
            Assume(~dut.i.valid | (beat >= n) | (((x == xlo) | (x == xhi)) & ((dy == glo) | (dy == ghi)))),
            Assume((self.mu.as_signed() == (xlo << b.frac)) | (self.mu.as_signed() == (xhi << b.frac))),
            Assume(self.inv <= (1 << b.recip_bits)),
        ]
        done = Signal(name="pass1_seen")
        sdy = Signal(signed(cfg.grad_width + n.bit_length() + 2), name="exact_sum_dy")
        sdyx = Signal(signed(cfg.grad_width + b.width + n.bit_length() + 2), name="exact_sum_dyx")
        mu = Signal(signed(len(self.mu)), name="mu0")
        inv = Signal(len(self.inv), name="inv0")
        with m.If(take & (beat < n) & ~done):
            m.d.sync += [sdy.eq(Mux(beat == 0, 0, sdy) + dy), sdyx.eq(Mux(beat == 0, 0, sdyx) + dy * x)]
            with m.If(beat == 0):
                m.d.sync += [mu.eq(self.mu.as_signed()), inv.eq(self.inv)]
            with m.If(beat == n - 1):
                m.d.sync += done.eq(1)
        fr, r, t = cfg.inner_frac, b.recip_bits, cfg.h_preshift

        def rnd(v, s):
            return (v + (1 << (s - 1))) >> s if s > 0 else (v << -s if s < 0 else v)

        sdyd = (sdyx << b.frac) - mu * sdy
        h = rnd(rnd(sdyd, t) * inv, r - fr - t)
        first_g = Signal(name="first_g")
        grec = dut.g.valid & ~first_g
        with m.If(dut.g.valid & dut.g.ready):
            m.d.sync += first_g.eq(1)
        # the contract: the reference refuses statistics whose |sum dy*xhat| reaches 2**(h-1)
        hmax = 1 << (cfg.widths["h"] - 1)
        m.d.comb += Assume(~grec | ((h < hmax) & (h > -hmax)))
        m.d.comb += [
            Assert(~grec | done),
            Assert(~grec | (dut.g.payload.dbeta == sdy)),
            Assert(~grec | (dut.g.payload.dgamma == h)),
        ]


class BwdDrainHarness(_BwdHarness):
    """No stalls: one batch (2n beats per channel) goes in, both outputs always ready; all n dx
    per channel and every g record are out by ``backward_latency_cycles(cfg)`` cycles."""

    def build(self, m):
        cfg = self.cfg
        b = cfg.bn
        dut = self.unit if self.unit is not None else unit_for(cfg)
        m.submodules.dut = dut
        offer_all(m, dut.i, 2 * b.n * b.channels, "i")
        m.d.comb += [dut.i.payload.eq(self.free(len(dut.i.payload.as_value()), "i_payload")),
                     dut.mu.eq(self.free(len(dut.mu), "mu")), dut.inv.eq(self.free(len(dut.inv), "inv")),
                     dut.gamma.eq(self.free(len(dut.gamma), "gamma")),
                     dut.o.ready.eq(1), dut.g.ready.eq(1)]
        total = b.n * b.channels
        outs = Signal(range(total + 2), name="dx_out")
        recs = Signal(range(b.channels + 2), name="g_out")
        with m.If(dut.o.valid):
            m.d.sync += outs.eq(outs + 1)
        with m.If(dut.g.valid):
            m.d.sync += recs.eq(recs + 1)
        m.d.comb += [Assert(outs <= total), Assert(recs <= b.channels)]
        drain_check(m, backward_latency_cycles(cfg), (outs == total) & (recs == b.channels))


def acc_k(cfg) -> int:
    """Induction depth of :class:`BwdAccHarness`: pass 1's pipeline depth plus three."""
    from amaranth.hdl import Fragment

    unit = unit_for(cfg)
    Fragment.get(unit, None)            # elaborated for its pass-1 delay (an attribute)
    return unit.pass1_delay + 3


class BwdAccHarness(_BwdHarness):
    """Pass 1's accumulators (``sum dy``, ``sum dy*x``, the count of negative d) never wrap, for
    runs of any length (k-induction): any stalls, every x, dy, mu and inv, channels without end.

    The invariants that make the induction close, asserted (so proven) next to the property:

    - the FSM is in pass 1 (``ACC``) exactly while the harness's beat counter is in pass 1
      (``beat < n``); its element counter equals the beat's index in the pass; its ``first``
      flag is ``beat == 0`` (counter relations);
    - the exact sums ``Sdy``, ``Sdyx`` of the channel's pass-1 beats so far (here, wide) lie in
      ``c`` times the per-beat range, ``c`` the pass-1 beats so far (the accumulator bound in
      terms of the element counter);
    - the unit's accumulators, ``pass1_delay`` cycles behind the handshake (a free-running
      pipeline), equal ``Sdy`` and ``Sdyx`` of then; the count of negatives is at most ``c``;
    - ``g``'s ``dbeta`` is the channel's exact ``sum dy``.
    """

    def build(self, m):
        cfg = self.cfg
        b = cfg.bn
        n = b.n
        dut, take, beat = self.dut(m, elaborated=True)
        pr = dut.probes
        x, dy = dut.i.payload.x, dut.i.payload.dy
        xlo, xhi = -(1 << (b.width - 1)), (1 << (b.width - 1)) - 1
        glo, ghi = -(1 << (cfg.grad_width - 1)), (1 << (cfg.grad_width - 1)) - 1
        prods = [a * c for a in (xlo, xhi) for c in (glo, ghi)]
        pmin, pmax = min(prods), max(prods)
        p1 = take & (beat < n)
        c = Signal(range(n + 1), name="count")     # pass-1 beats in the sums (n once complete)
        with m.If(p1):
            m.d.sync += c.eq(Mux(beat == 0, 1, c + 1))
        wide_dy = signed(cfg.grad_width + n.bit_length() + 2)
        wide_dyx = signed(cfg.grad_width + b.width + n.bit_length() + 2)
        sdy, sdyx = Signal(wide_dy, name="exact_sum_dy"), Signal(wide_dyx, name="exact_sum_dyx")
        first = beat == 0
        sdy_n, sdyx_n = Mux(first, 0, sdy) + dy, Mux(first, 0, sdyx) + dy * x
        with m.If(p1):
            m.d.sync += [sdy.eq(sdy_n), sdyx.eq(sdyx_n)]
        m.d.comb += [
            Assert(pr["acc_state"] == (beat < n)),                       # counter relations
            Assert(pr["cnt"] == Mux(beat < n, beat, beat - n)),
            Assert(pr["first"] == first),
            Assert(pr["last"] == (pr["cnt"] == n - 1)),
            Assert(Mux(beat >= n, c == n, Mux(beat == 0, (c == 0) | (c == n), c == beat))),
            Assert((c * glo <= sdy) & (sdy <= c * ghi)),                 # bounds by the count
            Assert((c * pmin <= sdyx) & (sdyx <= c * pmax)),
            Assert(~dut.g.valid | (dut.g.payload.dbeta == sdy)),
        ]
        # the accumulators, pass1_delay cycles behind: a line of the exact sums and counts
        d = pr["pass1_delay"]
        lines = {"sum_dy": [sdy], "sum_dyx": [sdyx], "count": [c]}
        for name, line in lines.items():
            for j in range(1, d + 1):
                r = Signal(line[0].shape(), name=f"{name}_d{j}")
                m.d.sync += r.eq(line[-1])
                line.append(r)
        m.d.comb += [Assert(pr["sum_dy"] == lines["sum_dy"][d]),
                     Assert(pr["sum_dyx"] == lines["sum_dyx"][d]),
                     Assert(pr["nneg"] <= lines["count"][d])]
