"""Whole-batch equivalence of a BN forward unit with the reference, the model generated from spec.

The harness feeds one batch (``channels`` channels of ``n`` elements, every value free) without
stalls, records it, and checks every output of the unit on its public ports against the
reference program (:func:`l1bn.spec.reference.program.bn_forward_program`) run on the Amaranth
backend (:func:`l1bn.sim.formal.model.forward_model`): the same program text the numpy reference
runs, not a hand-written copy.

- each channel's ``stats`` record: numbered in order, after the channel's last element, and its
  ``mu``, ``s``, ``sigma`` and ``inv`` meet the program's defining relations (``div_round``,
  the norm's dispersion and sigma rules, ``isqrt``, ``recip``) for that channel's data;
- each y (every lane of every beat of every channel): equal to the program's y, computed from
  the channel's data and the (checked) record;
- the batch is out by ``bn_latency_cycles(cfg)``, so the depth ``latency + 2`` covers every
  output of the batch (this is a bounded check over the whole batch: BMC to that depth).
"""

from __future__ import annotations

from amaranth import Array, Const, Signal, signed, unsigned
from amaranth.hdl import Assert, Fragment
from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for

from .model import forward_model
from .props import Harness, drain_check, offer_all

__all__ = ["BNBatchHarness", "batch_depth"]


def batch_depth(cfg) -> int:
    """BMC depth that covers one batch and the unit's latency."""
    return bn_latency_cycles(cfg) + 2


class BNBatchHarness(Harness):
    def __init__(self, cfg, unit=None, *, only=None, outputs=True):
        super().__init__()
        self.cfg, self.unit = cfg, unit
        self.only, self.outputs = only, outputs     # a subset of the checks (by name), y or not

    def build(self, m):
        cfg = self.cfg
        dut = self.unit if self.unit is not None else bn_unit_for(cfg)
        # elaborated now, not lazily: the lemmas below use its probes
        m.submodules.dut = Fragment.get(dut, None)
        pr = dut.probes
        nb, lanes, chans = cfg.beats, cfg.lanes, cfg.channels
        total = chans * nb
        take, got = offer_all(m, dut.i, total, "i")
        gamma, beta = self.free(signed(cfg.gamma_width), "gamma"), self.free(signed(cfg.beta_width), "beta")
        m.d.comb += [dut.i.payload.eq(self.free(len(dut.i.payload.as_value()), "i_payload")),
                     dut.gamma.eq(gamma), dut.beta.eq(beta), dut.o.ready.eq(1), dut.stats.ready.eq(1)]
        # the batch, as taken
        xs = [[Signal(signed(cfg.width), name=f"x{c}_{j}") for j in range(cfg.n)] for c in range(chans)]
        gs = [Signal(signed(cfg.gamma_width), name=f"gamma{c}") for c in range(chans)]
        bs = [Signal(signed(cfg.beta_width), name=f"beta{c}") for c in range(chans)]
        for c in range(chans):
            for j in range(nb):
                with m.If(take & (got == c * nb + j)):
                    m.d.sync += [xs[c][j * lanes + k].eq(dut.i.payload[k]) for k in range(lanes)]
                    if j == 0:
                        m.d.sync += [gs[c].eq(gamma), bs[c].eq(beta)]
        # the records, latched per channel
        st = dut.stats.payload
        recs = Signal(range(chans + 2), name="records")
        with m.If(dut.stats.valid):
            m.d.sync += recs.eq(recs + 1)
        outs = Signal(range(total + 2), name="beats_out")
        with m.If(dut.o.valid):
            m.d.sync += outs.eq(outs + 1)
        m.d.comb += [Assert(recs <= chans), Assert(outs <= total)]
        # lemmas (asserted, so proven, in the cycle each intermediate appears; smtbmc then
        # assumes them in later cycles): channel c's mu from the stats stage and its dispersion
        # statistic D from the dispersion stage equal the program's for the channel's data.
        # They split the record's check into short steps the solver takes one at a time.
        n_mu = Signal(range(chans + 2), name="mus")
        n_d = Signal(range(chans + 2), name="disps")
        with m.If(pr["mu_valid"]):
            m.d.sync += n_mu.eq(n_mu + 1)
        with m.If(pr["disp_valid"]):
            m.d.sync += n_d.eq(n_d + 1)
        mus = [Signal(signed(cfg.mean_bits), name=f"stage_mu{c}") for c in range(chans)]
        for c in range(chans):
            at_mu = pr["mu_valid"] & (n_mu == c)
            with m.If(at_mu):
                m.d.sync += mus[c].eq(pr["mu"])
            dummy = {k: Const(0) for k in ("s", "sigma", "inv")}    # (only mu, D are used here)
            vals, chk = forward_model(cfg, xs[c], gs[c], bs[c], {**dummy, "mu": pr["mu"]})
            m.d.comb += [Assert(~at_mu | ok) for name, ok in chk if name == "mu"]
            vals, _ = forward_model(cfg, xs[c], gs[c], bs[c], {**dummy, "mu": mus[c]})
            m.d.comb += Assert(~(pr["disp_valid"] & (n_d == c)) | (pr["disp_sum"] == vals["disp_sum"].items[0]))
        for c in range(chans):
            have = Signal(name=f"have{c}")
            rep = {"mu": Signal(signed(cfg.mean_bits), name=f"mu{c}"),
                   "s": Signal(unsigned(cfg.disp_bits), name=f"s{c}"),
                   "sigma": Signal(unsigned(cfg.sigma_bits), name=f"sigma{c}"),
                   "inv": Signal(unsigned(cfg.inv_bits), name=f"inv{c}")}
            now = dut.stats.valid & (recs == c)
            with m.If(now):
                m.d.sync += [have.eq(1)] + [rep[k].eq(getattr(st, k)) for k in rep]
            m.d.comb += [Assert(~now | (got == total) | (got >= (c + 1) * nb)),  # after its data
                         Assert(~now | (st.channel == c)),
                         Assert(~now | (st.mu == mus[c]))]                  # lemma: the stage's mu
            # the record's relations: the program on the whole channel, with the record as it
            # comes out (asserted in that cycle only: each relation is proven once)
            live = {k: getattr(st, k) for k in rep}
            _, checks = forward_model(cfg, xs[c], gs[c], bs[c], live)
            m.d.comb += [Assert(~now | ok) for name, ok in checks
                         if self.only is None or name in self.only]
            # y: the same program on the elements of the beat now out (its element-wise part
            # uses the channel's checked mu and inv; one y per lane instead of n per step)
            beat = Signal(range(nb), name=f"beat{c}")
            mine = dut.o.valid & (outs >= c * nb) & (outs < (c + 1) * nb)
            m.d.comb += beat.eq(outs - c * nb)
            for k in range(lanes if self.outputs else 0):
                x_now = Array(xs[c][j * lanes + k] for j in range(nb))[beat]
                (y,) = forward_model(cfg, [x_now], gs[c], bs[c], rep)[0]["y"].items
                m.d.comb += Assert(~mine | (have & (dut.o.payload[k] == y)))
        drain_check(m, bn_latency_cycles(cfg), (outs == total) & (recs == chans))
