"""The BN forward unit's ``count`` property (no element lost or invented, one record per channel)
with the invariants that make it close without a depth bound.

:class:`~l1bn.sim.formal.bn.BNCountHarness` states ``count`` on the ports: harness counters of
the beats accepted and not yet out (``pend``), of the channels complete and without a record
(``chans``) and the channel number of the next record (``rec``). Alone, neither k-induction nor
ABC's ``pdr`` closes it: the counters are arithmetic relations over the unit's whole schedule
(three buffer slots, four engines, their slot flags). :class:`BNCountInvHarness` asserts the same
properties and, next to them, what the counters are in terms of the unit's state (its ``probes``;
all asserted, so proven with the property, not assumed):

- **buffer occupancy** (receive and normalize cursors): the beats accepted and not yet issued to
  the normalize pipeline are ``occ*nb - (wa != 0 ? nb - wa : 0) - nra`` (``occ`` channels
  written and not fully read, the receive engine's write address ``wa`` in its partial channel,
  the normalize engine's read count ``nra``); ``first`` is ``wa == 0``, ``last`` is
  ``wa == nb - 1``, and the harness's beat counter is ``wa``;
- **the normalize pipeline**: ``pend`` = buffered beats + the beat in the read register
  (``to_norm.valid``) + the stage's valid bits (its ``probes``, the last one ``o.valid``);
- **records** (the counter relation of the record path): ``chans`` = the channels' last beats
  inside the stats stage (a delay line of ``take & last``, its end equal to the stage's
  ``valid``) + the ``mu_ok`` slot flags + the dispersion engine's channel in flight (``dact``)
  + the last beats inside the dispersion stage (a delay line, its end the stage's ``valid``)
  + the ``d_ok`` flags + the reciprocal in flight (a harness flag from its start to its result,
  equal to "the stage is not idle or has its result") + a record waiting (``rec_wait``) + the
  record on ``stats``; the unit's channel counter is ``rec`` (+ 1 while a record is on
  ``stats``, whose channel is ``rec``);
- **slot positions**: the live channels, oldest first, sit in consecutive slots from the
  normalize engine's ``ns``: the channel being normalized (``nact``), the ``inv_ok`` flags, the
  reciprocal in flight, the ``d_ok`` flags, the dispersion stage, the dispersion engine
  (``dact``), the ``mu_ok`` flags, the stats stage, then the receive engine's channel: each flag
  is set exactly on its segment's slots, ``rs``, ``ds``, ``cs`` and ``rslot`` point at their
  segment, every slot number is below 3, and a receive channel in the slot being normalized
  (4 channels live) writes only beats already read (``wa <= nra``).

The delay lines run freely (no enable, like the stages they shadow), so k-induction determines
them, and the slot numbers the unit delays beside them, once ``k`` exceeds the stages' latency
(:func:`count_k`): with these invariants the property closes at ``k = 7``, in seconds, for every
norm, width and n (docs/formal.md).
"""

from __future__ import annotations

from amaranth import Mux, Signal
from amaranth.hdl import Assert, Fragment
from l1bn.hw.bn_stages import stage_cycles
from l1bn.hw.bn_unit import bn_unit_for

from .bn import count_property
from .props import Harness, drive_stream
from .stages import delay_line

__all__ = ["BNCountInvHarness", "count_k"]


def count_k(cfg) -> int:
    """Induction depth of :class:`BNCountInvHarness`: the longest free-running pipeline it does
    not state (the stats and dispersion stages, the slot numbers delayed beside them) plus four."""
    sc = stage_cycles(cfg)
    return max(sc["stats"], sc["disp"]) + 4


def _popcount(bits):
    return sum((b.as_unsigned() for b in bits[1:]), bits[0].as_unsigned())


class BNCountInvHarness(Harness):
    """``count`` of :class:`~l1bn.sim.formal.bn.BNCountHarness` (without the response
    watchdog) plus the invariants of the module docstring. ``unit``: the unit to check (default
    ``bn_unit_for(cfg)``), or a mutant wrapper of one (its ``inner`` unit's probes are used)."""

    def __init__(self, cfg, unit=None):
        super().__init__()
        self.cfg, self.unit = cfg, unit

    def build(self, m):
        self.count_invariants(m)

    def count_invariants(self, m):
        """Instantiate the unit, state ``count`` and the invariants; returns the unit, its
        probes and the input handshake (``dut``, ``pr``, ``take``), for harnesses that add
        properties beside them (:mod:`~l1bn.sim.formal.bn_overflow`)."""
        cfg = self.cfg
        dut = self.unit if self.unit is not None else bn_unit_for(cfg)
        # elaborated here: the invariants name its probes (a mutant wrapper's: its inner unit's)
        m.submodules.dut = Fragment.get(dut, None)
        pr = getattr(dut, "inner", dut).probes
        _, _, take = drive_stream(m, self, dut.i, "i")
        m.d.comb += [dut.gamma.eq(self.free(len(dut.gamma), "gamma")),
                     dut.beta.eq(self.free(len(dut.beta), "beta")),
                     dut.o.ready.eq(self.free(1, "o_ready")),
                     dut.stats.ready.eq(self.free(1, "stats_ready"))]
        nb, nch = cfg.beats, cfg.channels
        cap = 3 * nb + pr["norm_depth"] + 4      # three buffers, the pipeline, the output
        pend, part, chans, rec, out, srec = count_property(m, dut, take, beats=nb, channels=nch, cap=cap)
        # invariants: the engines' cursors (counter relations)
        rx = pr["rx"]
        occ, wa, nra, first, last = rx["occ"], rx["wa"], rx["nra"], rx["first"], rx["last"]
        nact, dact, dra = rx["nact"], pr["dact"], pr["dra"]
        m.d.comb += [Assert(part == wa), Assert(first == (wa == 0)), Assert(last == (wa == nb - 1)),
                     Assert(nra < nb), Assert(nact == (nra != 0)), Assert(pr["nlast"] == (nra == nb - 1)),
                     Assert(dra < nb), Assert(dact == (dra != 0)), Assert(rx["le"] == (nra <= wa)),
                     Assert(rx["wa1"] == wa + 1)]
        # buffer occupancy: beats accepted and not yet issued to the normalize pipeline, and
        # pend = those + the beat in its read register + the stage's valid bits (the stage
        # advances in lock step on to_norm.ready; the last one is o.valid)
        buffered = occ * nb - Mux(first, 0, nb - wa) - nra
        valid = [pr["to_norm"].valid, *pr["norm_stage"].probes["valid"]]
        m.d.comb += Assert(pend == buffered + _popcount(valid))
        # the channels in the slots, oldest first, by the engine (or flag) that holds them:
        # normalize (nact), inv_ok, reciprocal, d_ok, dispersion stage, dispersion engine (dact),
        # mu_ok, stats stage, the partial channel of the receive engine; the delay lines of the
        # stages' last beats and of the reciprocal's start (free-running, as the stages) end at
        # the stages' valid
        sc = stage_cycles(cfg)
        st_line = delay_line(m, take & last, sc["stats"], "st_last")
        to_dp = pr["to_disp"]
        dp_line = delay_line(m, to_dp.valid & to_dp.payload.last, sc["disp"], "dp_last")
        to_rc, from_rc = pr["to_recip"], pr["from_recip"]
        # the reciprocal in flight: from its start to its result (o.valid, the cycle after the
        # stage is idle again); its timing does not matter to the count, only that it is busy
        in_recip = Signal(name="recip_busy")
        m.d.sync += in_recip.eq((to_rc.valid & to_rc.ready) | (in_recip & ~from_rc.valid))
        idle = pr["recip_stage"].probes["idle"]
        m.d.comb += [Assert(pr["mu_valid"] == st_line[-1]), Assert(pr["disp_valid"] == dp_line[-1]),
                     Assert(in_recip == (~idle | from_rc.valid)), Assert(~from_rc.valid | idle)]
        mu_ok, d_ok, inv_ok = list(pr["mu_ok"]), list(pr["d_ok"]), list(pr["inv_ok"])
        segments = [nact, _popcount(inv_ok), in_recip, _popcount(d_ok), _popcount(dp_line), dact,
                    _popcount(mu_ok), _popcount(st_line[1:])]
        at = [Signal(range(16), name=f"pos{j}") for j in range(len(segments) + 1)]
        m.d.comb += at[0].eq(0)
        m.d.comb += [at[j + 1].eq(at[j] + seg) for j, seg in enumerate(segments)]
        ns = rx["ns"]

        def slot_at(p):             # the slot of the channel p places after the normalize one
            v = ns + p
            return Mux(v >= 6, v - 6, Mux(v >= 3, v - 3, v))

        def rel(k):                 # how far slot k is after the normalize engine's slot
            return Mux(k >= ns, k - ns, k + 3 - ns)

        complete = at[-1]
        m.d.comb += [Assert(v < 3) for v in (ns, rx["rs"], pr["ds"], pr["cs"], pr["rslot"])]
        m.d.comb += [Assert(complete <= 3), Assert(occ == complete + (wa != 0)),
                     Assert(rx["rs"] == slot_at(complete)),
                     Assert(~((complete == 3) & (wa != 0)) | (wa <= nra)),
                     Assert(pr["cs"] == slot_at(at[3])),
                     Assert(~in_recip | (pr["rslot"] == slot_at(at[2]))),
                     Assert(pr["ds"] == slot_at(at[5]))]
        for k in range(3):
            m.d.comb += [Assert(inv_ok[k] == ((at[1] <= rel(k)) & (rel(k) < at[2]))),
                         Assert(d_ok[k] == ((at[3] <= rel(k)) & (rel(k) < at[4]))),
                         Assert(mu_ok[k] == ((at[6] <= rel(k)) & (rel(k) < at[7])))]
        # records: the channels complete and without a record taken are those after the
        # inv_ok flags, plus the record waiting and the one on stats
        rec_wait = pr["rec_wait"]
        m.d.comb += [Assert(~rec_wait | (~in_recip & dut.stats.valid)),
                     Assert(chans == complete - at[2] + rec_wait + dut.stats.valid)]
        chan = pr["chan"]
        m.d.comb += [Assert(rec < nch), Assert(~dut.stats.valid | (dut.stats.payload.channel == rec)),
                     Assert(chan == Mux(dut.stats.valid, Mux(rec == nch - 1, 0, rec + 1), rec))]
        return {"dut": dut, "pr": pr, "take": take}
