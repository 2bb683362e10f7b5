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
- the batch is out by ``bn_latency_cycles(cfg)``, so the depth ``latency + 1`` covers every
  output of the batch and the drain check (this is a bounded check over the whole batch: BMC to
  that depth).
"""

from __future__ import annotations

from amaranth import Array, Const, Signal, Value, signed, unsigned
from amaranth.hdl import Assert, Fragment
from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for, stage_cycles

from .model import forward_model
from .props import Harness, drain_check, offer_all
from .stages import delay_line

__all__ = ["BNBatchHarness", "batch_depth"]


def batch_depth(cfg) -> int:
    """BMC depth that covers one batch and the unit's latency: steps 0 .. latency. The first
    beat is taken in step 0, the last y leaves in step latency - 1, and the drain check (every
    output out) is asserted from step latency on, so the last step checks it once."""
    return bn_latency_cycles(cfg) + 1


class BNBatchHarness(Harness):
    def __init__(self, cfg, unit=None, *, only=None, outputs=True, lemmas=True):
        super().__init__()
        self.cfg, self.unit, self.lemmas = cfg, unit, lemmas
        self.only, self.outputs = only, outputs     # a subset of the checks (by name), y or not

    def build(self, m):
        cfg = self.cfg
        self._n_dp = self._nz_shadow = None         # built once per elaboration
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
            if self.lemmas:
                # a mean lies in the range of its data: what bounds every d = (x << frac) - mu
                # to the dispersion datapath's dev_bits (a consequence of the relation above)
                xlo, xhi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
                m.d.comb += Assert(~at_mu | ((pr["mu"] >= (xlo << cfg.frac)) & (pr["mu"] <= (xhi << cfg.frac))))
            folds = []
            vals, _ = forward_model(cfg, xs[c], gs[c], bs[c], {**dummy, "mu": mus[c]}, folds=folds)
            m.d.comb += Assert(~(pr["disp_valid"] & (n_d == c)) | (pr["disp_sum"] == vals["disp_sum"].items[0]))
            if self.lemmas:
                # the dispersion stage's running statistic after each beat of the channel equals
                # the program's fold over the channel's elements so far (its prefixes: the
                # folds after sum x), so the final D is one step from the last lemma
                self._running_lemmas(m, pr, folds[1:], c, mus[c])
        # lemmas on the data movement (no arithmetic): every beat the dispersion and normalize
        # engines read from the buffers and hand to their stages is the channel's recorded x,
        # with the channel's mu (and, to normalize, the record's inv and the channel's gamma and
        # beta). The sums and y are then checked from the stage inputs, not through the memory.
        n_dp = Signal(range(total + 2), name="disp_beats")
        n_nz = Signal(range(total + 2), name="norm_beats")
        tdp, tnz = pr["to_disp"], pr["to_norm"]
        nz_take = tnz.valid & tnz.ready
        with m.If(tdp.valid):
            m.d.sync += n_dp.eq(n_dp + 1)
        with m.If(nz_take):
            m.d.sync += n_nz.eq(n_nz + 1)
        m.d.comb += [Assert(n_dp <= total), Assert(n_nz <= total)]
        haves, reps = [], []
        for c in range(chans):
            have = Signal(name=f"have{c}")
            rep = {"mu": Signal(signed(cfg.mean_bits), name=f"mu{c}"),
                   "s": Signal(unsigned(cfg.disp_bits), name=f"s{c}"),
                   "sigma": Signal(unsigned(cfg.sigma_bits), name=f"sigma{c}"),
                   "inv": Signal(unsigned(cfg.inv_bits), name=f"inv{c}")}
            haves.append(have)
            reps.append(rep)
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
                if not self.lemmas:
                    (y,) = forward_model(cfg, [x_now], gs[c], bs[c], rep)[0]["y"].items
                    m.d.comb += Assert(~mine | (have & (dut.o.payload[k] == y)))
                    continue
                # in two asserted steps whose conjunction is the check above: (a) the beat the
                # normalize pipeline delivers now entered it with this element and the channel's
                # record values (data movement); (b) y is the program's y of what entered
                # (arithmetic only, no memory, no index)
                sh = self._norm_shadow(m, pr, n_nz)
                p_sh = sh["payload"]
                m.d.comb += Assert(~mine | (have & (sh["index"] == outs) & (p_sh.x[k] == x_now)
                                            & (p_sh.mu == rep["mu"]) & (p_sh.inv == rep["inv"])
                                            & (p_sh.gamma == gs[c]) & (p_sh.beta == bs[c])))
                (y,) = forward_model(cfg, [p_sh.x[k]], p_sh.gamma, p_sh.beta,
                                     {"mu": p_sh.mu, "inv": p_sh.inv, "s": Const(0), "sigma": Const(0)})[0]["y"].items
                m.d.comb += Assert(~mine | (dut.o.payload[k] == y))
        if self.lemmas:
            for c in range(chans):
                for j in range(nb):
                    xj = [xs[c][j * lanes + k] for k in range(lanes)]
                    at_dp = tdp.valid & (n_dp == c * nb + j)
                    m.d.comb += Assert(~at_dp | ((tdp.payload.mu == mus[c])
                                                 & _all(tdp.payload.x[k] == xj[k] for k in range(lanes))))
                    at_nz = nz_take & (n_nz == c * nb + j)
                    p = tnz.payload
                    m.d.comb += Assert(~at_nz | (haves[c] & (p.mu == reps[c]["mu"]) & (p.inv == reps[c]["inv"])
                                                 & (p.gamma == gs[c]) & (p.beta == bs[c])
                                                 & _all(p.x[k] == xj[k] for k in range(lanes))))
        drain_check(m, bn_latency_cycles(cfg), (outs == total) & (recs == chans))

    def _norm_shadow(self, m, pr, n_nz):
        """The normalize stage's input beat (payload, its number), delayed by the pipeline's
        depth: the beat the stage delivers now (the harness never stalls ``o``)."""
        if getattr(self, "_nz_shadow", None) is None:
            tnz = pr["to_norm"]
            depth = pr["norm_depth"]
            take = tnz.valid & tnz.ready
            pay = delay_line(m, Value.cast(tnz.payload), depth, "nz_in")[depth]
            idx = delay_line(m, n_nz, depth, "nz_index")[depth]
            v = delay_line(m, take, depth, "nz_valid")[depth]
            m.d.comb += Assert(v == pr["o_valid"])        # the alignment: depth cycles, no loss
            self._nz_shadow = {"payload": tnz.payload.shape()(pay), "index": idx}
        return self._nz_shadow

    def _running_lemmas(self, m, pr, folds, c, mu):
        """Per beat of channel ``c`` entering the dispersion stage: the stage's running sum
        (``acc``) or running max and min (``amax``, ``amin``), ``stage_cycles["disp"] - 1`` cycles
        later, equals the program's prefix of that fold (the alignment of
        :class:`~l1bn.sim.formal.stages.DispStageHarness`)."""
        cfg = self.cfg
        nb, lanes = cfg.beats, cfg.lanes
        probes = pr["disp_stage"].probes
        tdp = pr["to_disp"]
        d = stage_cycles(cfg)["disp"] - 1
        names = {"sum": "acc", "max": "amax", "min": "amin"}
        if getattr(self, "_n_dp", None) is None:
            self._n_dp = Signal(range(cfg.channels * nb + 2), name="disp_beat")
            with m.If(tdp.valid):
                m.d.sync += self._n_dp.eq(self._n_dp + 1)
        mine = tdp.valid & (self._n_dp >= c * nb) & (self._n_dp < (c + 1) * nb)
        # the last beat in was channel c's: the prefix register holds c's running value
        in_c = Signal(name=f"disp_in{c}")
        with m.If(tdp.valid):
            m.d.sync += in_c.eq(mine)
        in_line = delay_line(m, in_c, d, f"disp_in{c}")
        for kind, prefixes in folds:
            probe = probes[names[kind]]
            per_beat = Array(prefixes[(j + 1) * lanes - 1] for j in range(nb))
            width = max(len(Value.cast(p)) for p in prefixes) + 1
            run = Signal(signed(width), name=f"{kind}_prefix{c}")
            with m.If(mine):
                m.d.sync += run.eq(per_beat[self._n_dp - c * nb])
            line = delay_line(m, run, d, f"{kind}_prefix{c}")
            # the stage's register is d cycles behind its input
            m.d.comb += Assert(~in_line[d] | (probe == line[d]))


def _all(conds):
    conds = list(conds)
    out = conds[0]
    for c in conds[1:]:
        out = out & c
    return out
