"""The BN forward unit's accumulators inside the unit, unbounded: ``overflow.unit``.

The stage harnesses (:mod:`~l1bn.sim.formal.stages`) prove the stats, dispersion and reciprocal
stages on their own ports, for runs of any length, each under a **contract** on its input (its
beats framed by a beat counter; the dispersion stage's ``mu`` in the x range and the same on
every beat of a channel; the reciprocal's ``D`` at most the norm's largest statistic of ``n``
elements). :class:`BNOverflowInvHarness` proves, in the whole unit under any stalls and for any
number of channels, that the unit gives its stages those contracts, and it re-proves the stats
and dispersion accumulators there (the stage harnesses' invariants, on the unit's internal
streams), so no register of the unit's accumulating path wraps:

- ``count`` and its occupancy and slot invariants (:class:`~l1bn.sim.formal.bn_count.BNCountInvHarness`):
  among them, the stats stage's framing: ``first``/``last`` are ``wa == 0`` / ``wa == n-1``;
- **the stats stage in the unit** (every x on ``i``): the exact running sum ``S`` of the
  receive channel and its count ``c = wa`` (``n`` after a last beat), ``c*lo <= S <= c*hi``,
  the stage's accumulator equal to ``S`` of ``1 + lane_tree`` cycles before, ``mu`` exact on its
  output (``2n*mu <= 2*(S << frac) + n < 2n*(mu + 1)``);
- **the slot registers of mu** (every one, and the dispersion engine's copy) lie in the x range
  (``<< frac``): so does every mean the stats stage delivers;
- **the dispersion stage's contract and accumulator** (every x its buffer read returns): a
  harness beat counter of the beats handed to the stage (``dra = beat + valid`` mod n/lanes;
  ``first``/``last`` on beats 0 and n/lanes - 1), ``mu`` the same on every beat of a channel
  (the engine's copy equals the previous beat's once a channel has started); then the
  dispersion harness's invariants (the exact running statistic, its bound in terms of the count,
  the accumulator, or range's running max and min, equal to it, ``D`` exact);
- **the reciprocal stage's contract**: every slot's ``D`` and the stage's input at most the norm's
  largest statistic (``n * max f(d)``; range: ``(max x - min x) << frac``).

With :class:`~l1bn.sim.formal.stages.RecipStageHarness` (the reciprocal for every such ``D``,
any gaps and ``hold``) this covers every register that carries a value from element to element
or computes a channel's statistics. The normalize pipeline (per element: ``d*inv``,
``gamma*xhat``, ``+ beta``) is not in it: its ``xhat`` width holds for a channel's own mu and inv
only (docs/formal.md, what is still bounded).

``k`` is :func:`~l1bn.sim.formal.bn_count.count_k` (the stage harnesses' windows are shorter).
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed
from amaranth.hdl import Assert

from .bn_count import BNCountInvHarness, count_k
from .stages import disp_invariants, recip_top, stats_invariants

__all__ = ["BNOverflowInvHarness", "overflow_k"]


def overflow_k(cfg) -> int:
    """Induction depth of :class:`BNOverflowInvHarness`: that of ``count``."""
    return count_k(cfg)


class BNOverflowInvHarness(BNCountInvHarness):
    """``count`` with its invariants, plus the accumulators and stage contracts of the module
    docstring, inside the unit. ``unit``: as :class:`BNCountInvHarness` (a mutant's ``inner``
    unit's probes are used)."""

    def build(self, m):
        cfg = self.cfg
        ctx = self.count_invariants(m)
        dut, pr, take = ctx["dut"], ctx["pr"], ctx["take"]
        nb, lanes = cfg.beats, cfg.lanes
        xlo, xhi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
        mlo, mhi = xlo << cfg.frac, xhi << cfg.frac

        def in_range(mu):
            return (mu >= mlo) & (mu <= mhi)

        # the stats stage: its beats are the unit's takes, framed by the receive engine's wa
        xs = [dut.i.payload[k] for k in range(lanes)]
        stats_invariants(m, cfg, pr["stats_stage"], take, pr["rx"]["wa"], xs)
        # every mean in a slot (and the dispersion engine's copy) is in the x range
        to_dp = pr["to_disp"]
        m.d.comb += [Assert(in_range(mu)) for mu in (*pr["mu_s"], to_dp.payload.mu)]
        # the dispersion stage's framing: the beats handed to it, counted here
        dv = to_dp.valid
        beat = Signal(range(nb), name="disp_beat")
        with m.If(dv):
            m.d.sync += beat.eq(Mux(beat == nb - 1, 0, beat + 1))
        m.d.comb += [Assert(pr["dra"] == Mux(dv & (beat == nb - 1), 0, beat + dv)),
                     Assert(~dv | ((to_dp.payload.first == (beat == 0))
                                   & (to_dp.payload.last == (beat == nb - 1))))]
        # its mu is the channel's: once a channel has started, the engine's copy is the one
        # every earlier beat of the channel carried
        mu_prev = Signal(signed(cfg.mean_bits), name="disp_mu_prev")
        with m.If(dv):
            m.d.sync += mu_prev.eq(to_dp.payload.mu)
        m.d.comb += Assert((beat == 0) | (to_dp.payload.mu == mu_prev))
        disp_invariants(m, cfg, pr["disp_stage"], dv, beat,
                        [to_dp.payload.x[k] for k in range(lanes)], to_dp.payload.mu, mu_prev)
        # the reciprocal stage's contract: every D it can be given is at most the largest
        top = recip_top(cfg)
        from_dp, to_rc = pr["from_disp"], pr["to_recip"]
        m.d.comb += [Assert(d <= top) for d in pr["dsum_s"]]
        m.d.comb += [Assert(~from_dp.valid | (from_dp.payload <= top)),
                     Assert(~to_rc.valid | (to_rc.payload <= top))]
