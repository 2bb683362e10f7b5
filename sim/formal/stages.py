"""Unbounded overflow proofs of the forward units' accumulating stages, by k-induction.

The unit-level ``overflow`` harness (:mod:`l1bn.sim.formal.bn_data`) records one channel from
reset and compares the unit's outputs with exact values; that is a bounded check (BMC), because
its induction needs a relation between the unit's internal accumulators and the recorded data
that neither ``pdr`` nor k-induction finds. Every accumulation of the forward unit happens in two
stages, :class:`~l1bn.hw.bn_stages.StatsStage` (``sum x``) and
:class:`~l1bn.hw.bn_stages.DispersionStage` (the norm's ``sum |d|``, ``sum d*d`` or running
``max``/``min`` of ``d``); the rest of the unit stores values in registers and buffers of the
stages' own payload widths (no arithmetic that grows with the run) or computes per element or
per channel in fixed-depth pipelines. The harnesses here drive one stage, on its own ports,
with every input its contract allows, for runs of any length, and prove unbounded:

- the channel framing of the unit's receive and dispersion engines (``first`` on beat 0,
  ``last`` on beat ``n/lanes - 1``, any gaps in ``valid``; the dispersion stage gets any ``mu``
  of the x range, per beat);
- ``o`` is valid exactly ``stage_cycles`` cycles after a channel's last beat;
- its payload is exact: ``mu = div_round(S << frac, n)`` (as ``2n*mu <= 2*(S << frac) + n <
  2n*(mu + 1)``), the dispersion statistic ``D`` equals the norm's exact rule
  (``Dispersion.exact_term``: ``|d|``, ``d*d``; range: ``max d - min d``) of the channel's
  deviations, all computed here in exact (growing) Amaranth arithmetic.

The **invariants** that make the induction close are asserted next to the properties (so they
are proven too): the harness's exact running value ``S`` (a sum, or a max and a min) of the
channel's beats so far and its element count ``c``; ``c`` equals the beat counter of the framing
(``c = beat``, or ``c = n/lanes`` after a last beat); ``S`` lies within ``c`` times the per-beat
range (``c*lo <= S <= c*hi``: the accumulator bound in terms of the element counter); and the
stage's own accumulator (its ``probes``, filled by ``elaborate``), read ``D`` cycles after the
input (the stage's published pipeline depth), equals the exact ``S`` of ``D`` cycles before.
Everything else in the stages is a free-running pipeline without enable, which k-induction
flushes once ``k`` exceeds the stage's latency.
"""

from __future__ import annotations

from amaranth import Const, Mux, Signal, signed
from amaranth.hdl import Assert, Assume, Fragment
from l1bn.hw.bn_stages import DispersionStage, StatsStage, norm_dispersion, stage_cycles

from .props import Harness

__all__ = ["StatsStageHarness", "DispStageHarness", "RecipStageHarness", "stage_k", "recip_k",
           "recip_top", "delay_line", "stats_invariants", "disp_invariants"]


def delay_line(m, value, n, name):
    """``value`` delayed by 0..n cycles (registers, no enable): ``[value, value@-1, ...]``."""
    out = [value]
    for j in range(1, n + 1):
        r = Signal(value.shape() if hasattr(value, "shape") else 1, name=f"{name}_d{j}")
        m.d.sync += r.eq(out[-1])
        out.append(r)
    return out


def stage_k(cfg, stage: str) -> int:
    """Induction depth of a stage harness: its latency to ``o`` plus two (every pipeline register
    is then determined by inputs inside the induction window)."""
    return stage_cycles(cfg)[stage] + 3


def _running(m, cfg, v, first, step, shape, name):
    """The exact running value ``S`` of the channel (``step(S, first)`` on a valid beat) and
    its element count ``c`` (0..n/lanes), both as registers. Returns (S, S_next, c)."""
    nb = cfg.beats
    s = Signal(shape, name=name)
    c = Signal(range(nb + 1), name=f"{name}_count")
    s_next = Signal(shape, name=f"{name}_next")
    m.d.comb += s_next.eq(Mux(v, step(s, first), s))
    m.d.sync += [s.eq(s_next), c.eq(Mux(v, Mux(first, 1, c + 1), c))]
    return s, s_next, c


def _counter_relation(m, cfg, beat, c):
    """Invariant: the element count equals the framing's beat counter (``n/lanes`` after a
    channel's last beat, 0 before the first)."""
    nb = cfg.beats
    m.d.comb += Assert((c == beat) | ((beat == 0) & (c == nb)))


class _StageHarness(Harness):
    stage = None

    def __init__(self, cfg, unit=None):
        super().__init__()
        self.cfg = cfg
        self.unit = unit

    def framing(self, m, dut):
        """Drive ``dut.i``: valid and x free, ``first``/``last`` from the beat counter (the unit's
        engines' framing). Returns (valid, beat counter)."""
        cfg = self.cfg
        nb = cfg.beats
        v = self.free(1, "i_valid")
        x = [self.free(signed(cfg.width), f"x{k}") for k in range(cfg.lanes)]
        beat = Signal(range(nb), name="beat")
        with m.If(v):
            m.d.sync += beat.eq(Mux(beat == nb - 1, 0, beat + 1))
        p = dut.i.payload
        m.d.comb += [dut.i.valid.eq(v), p.first.eq(beat == 0), p.last.eq(beat == nb - 1)]
        m.d.comb += [p.x[k].eq(x[k]) for k in range(cfg.lanes)]
        return v, beat, x

    def running(self, m, v, first, step, shape, name):
        return _running(m, self.cfg, v, first, step, shape, name)

    def counter_relation(self, m, beat, c):
        _counter_relation(m, self.cfg, beat, c)

    def elaborated(self, m):
        dut = self.unit if self.unit is not None else self.stage(self.cfg)
        # elaborated here (not lazily) so that the stage's probes exist when the harness uses them
        m.submodules.dut = Fragment.get(dut, None)
        return dut


class StatsStageHarness(_StageHarness):
    """``StatsStage``: the running sum and ``mu``, for runs of any length (see module)."""

    stage = StatsStage

    def build(self, m):
        dut = self.elaborated(m)
        v, beat, x = self.framing(m, dut)
        stats_invariants(m, self.cfg, dut, v, beat, x)


def stats_invariants(m, cfg, dut, v, beat, x):
    """The ``overflow.stats`` property and its invariants on a ``StatsStage`` ``dut`` (elaborated:
    its probes are named) whose input carries a beat of lanes ``x`` when ``v``, framed by the beat
    counter ``beat`` (``first`` on 0, ``last`` on ``n/lanes - 1``). Used by :class:`StatsStageHarness` and, inside the unit, by
    :class:`l1bn.sim.formal.bn_overflow.BNOverflowInvHarness`."""
    first, last = beat == 0, beat == cfg.beats - 1
    lo, hi = cfg.lanes * -(1 << (cfg.width - 1)), cfg.lanes * ((1 << (cfg.width - 1)) - 1)
    xs = sum(x[1:], x[0])
    wide = signed(cfg.sum_bits + 2)
    s, s_next, c = _running(m, cfg, v, first, lambda s, f: Mux(f, xs, s + xs), wide, "S")
    _counter_relation(m, cfg, beat, c)
    # the accumulator bound in terms of the element counter
    m.d.comb += Assert((c * lo <= s) & (s <= c * hi))
    # the stage's running sum, D = 1 + lane_tree cycles behind the input, equals S then
    d = 1 + stage_cycles(cfg)["lane_tree"]
    s_line = delay_line(m, s, d, "S")
    m.d.comb += Assert(dut.probes["acc"] == s_line[d])
    # o: valid exactly stage_cycles["stats"] cycles after a last beat, mu exact
    lat = stage_cycles(cfg)["stats"]
    done = delay_line(m, v & last, lat, "done")
    total = delay_line(m, s_next, lat, "total")
    m.d.comb += Assert(dut.o.valid == done[-1])
    n = cfg.n
    sx = 2 * (total[-1] << cfg.frac) + n
    mu = dut.o.payload
    m.d.comb += Assert(~dut.o.valid | ((2 * n * mu <= sx) & (sx < 2 * n * (mu + 1))))


class DispStageHarness(_StageHarness):
    """``DispersionStage``: the norm's running statistic and ``D``, any ``mu`` of the x range
    per beat, for runs of any length (see module)."""

    stage = DispersionStage

    def __init__(self, cfg, unit=None, *, vertices=True):
        super().__init__(cfg, unit)
        self.vertices = vertices

    def build(self, m):
        cfg = self.cfg
        dut = self.elaborated(m)
        v, beat, x = self.framing(m, dut)
        first = beat == 0
        mu = self.free(signed(cfg.mean_bits), "mu")
        xlo, xhi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
        if self.vertices:
            # x and mu at the ends of their ranges: every partial statistic (a sum of |d| or
            # d*d, a max, a min) is convex or monotone in each of them, so its extremes, and any
            # overflow, are reached there; it keeps the SAT problem free of the d*d multiplier's
            # full equivalence (vertices=False checks every value)
            m.d.comb += Assume((mu == (xlo << cfg.frac)) | (mu == (xhi << cfg.frac)))
            m.d.comb += [Assume((xk == xlo) | (xk == xhi)) for xk in x]
        # the contract: mu is a mean of x values, so it lies in the x range (frac bits)
        # and it is the channel's: the same on every beat of a channel (the dispersion engine
        # latches it at the channel's first beat)
        mu_prev = Signal(signed(cfg.mean_bits), name="mu_prev")
        with m.If(v):
            m.d.sync += mu_prev.eq(mu)
        m.d.comb += [dut.i.payload.mu.eq(mu),
                     Assume((mu >= (xlo << cfg.frac)) & (mu <= (xhi << cfg.frac))),
                     Assume(~v | first | (mu == mu_prev))]
        disp_invariants(m, cfg, dut, v, beat, x, mu, mu_prev)


def disp_invariants(m, cfg, dut, v, beat, x, mu, mu_prev):
    """The ``overflow.disp`` property and its invariants on a ``DispersionStage`` ``dut``
    (elaborated) whose input carries lanes ``x`` and ``mu`` when ``v``, framed by the beat counter
    ``beat``; ``mu_prev``: the ``mu`` of the previous valid beat (the stage's contract: ``mu`` in
    the x range, ``<< frac``, and the channel's, the same on every beat of a channel, which the
    caller assumes or proves). Used by :class:`DispStageHarness` and, inside the unit, by
    :class:`l1bn.sim.formal.bn_overflow.BNOverflowInvHarness`."""
    first, last = beat == 0, beat == cfg.beats - 1
    xlo, xhi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    ds = [(xk << cfg.frac) - mu for xk in x]
    disp = norm_dispersion(cfg)
    dmax = (xhi - xlo) << cfg.frac          # |d| <= dmax for every x and mu in range
    lat = stage_cycles(cfg)["disp"]
    d = lat - 1                              # input -> the running statistic's update
    if "acc" in dut.probes:                  # a sum of f(d): L1 |d|, L2 d*d
        terms = [disp.exact_term(dk) for dk in ds]
        ts = sum(terms[1:], terms[0])
        # the largest term: f(d) of |d| = dmax (|d| and d*d are even, growing in |d|)
        hi = cfg.lanes * _const_eval(disp.exact_term(Const(-dmax, signed(cfg.dev_bits + 1))))
        wide = signed(cfg.disp_sum_bits + 3)
        s, s_next, c = _running(m, cfg, v, first, lambda s, f: Mux(f, ts, s + ts), wide, "S")
        _counter_relation(m, cfg, beat, c)
        m.d.comb += Assert((s >= 0) & (s <= c * hi))     # the bound in terms of the count
        s_line = delay_line(m, s, d, "S")
        m.d.comb += Assert(dut.probes["acc"] == s_line[d])
        result = s_next
    else:                                    # range: running max and min of d
        dl = list(ds)
        hi_b, lo_b = dl[0], dl[0]
        for dk in dl[1:]:
            hi_b, lo_b = Mux(dk > hi_b, dk, hi_b), Mux(dk < lo_b, dk, lo_b)
        wide = signed(cfg.dev_bits + 1)
        smax, smax_next, c = _running(m, cfg, v, first, lambda s, f: Mux(f | (hi_b > s), hi_b, s),
                                      wide, "Smax")
        smin, smin_next, _ = _running(m, cfg, v, first, lambda s, f: Mux(f | (lo_b < s), lo_b, s),
                                      wide, "Smin")
        _counter_relation(m, cfg, beat, c)
        # every d of the channel so far used the channel's mu (the last beat's, mu_prev)
        m.d.comb += Assert((c == 0) | ((smin <= smax) & (smax <= (xhi << cfg.frac) - mu_prev)
                                       & (smin >= (xlo << cfg.frac) - mu_prev)))
        c_line = delay_line(m, c, d, "count")        # (the registers hold their reset 0 before)
        for name, sv in (("amax", smax), ("amin", smin)):
            line = delay_line(m, sv, d, name)
            m.d.comb += Assert((c_line[d] == 0) | (dut.probes[name] == line[d]))
        result = smax_next - smin_next
    done = delay_line(m, v & last, lat, "done")
    total = delay_line(m, result, lat, "total")
    m.d.comb += Assert(dut.o.valid == done[-1])
    m.d.comb += Assert(~dut.o.valid | (dut.o.payload == total[-1]))


def _const_eval(expr) -> int:
    """The value of a constant Amaranth expression (a one-step simulation)."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    m = Module()
    out = Signal(signed(64))
    m.d.comb += out.eq(expr)
    sim = Simulator(m)
    res = {}

    async def tb(ctx):
        res["v"] = ctx.get(out)

    sim.add_testbench(tb)
    sim.run()
    return res["v"]


def recip_top(cfg) -> int:
    """The largest dispersion statistic ``D`` of ``n`` elements of the x range (with any mu of
    it): ``n * f(dmax)`` for a sum (L1 ``|d|``, L2 ``d*d``), ``dmax`` for range (the reciprocal
    stage's contract)."""
    xlo, xhi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    dmax = (xhi - xlo) << cfg.frac
    if "acc" in _reduce_probes(cfg):
        disp = norm_dispersion(cfg)
        return cfg.n * _const_eval(disp.exact_term(Const(-dmax, signed(cfg.dev_bits + 1))))
    return dmax


def recip_k(cfg) -> int:
    """Induction depth of :class:`RecipStageHarness`: the stage's cycles plus two. The counter
    invariants the harness states (every state's counter within the values that state gives it)
    leave no unreachable detour: any state in the window traces back to a start at most
    :func:`~l1bn.hw.bn_stages.recip_cycles` cycles earlier (without them, k also had to cover
    the wait and step counters running once through every value of their registers: 37-41 for
    L2, 24-25 for L1 and range)."""
    from l1bn.hw.bn_stages import recip_cycles

    return recip_cycles(cfg) + 2


class RecipStageHarness(Harness):
    """``RecipStage`` (``s``, ``sigma``, ``inv`` from the dispersion sum ``D``), for runs of any
    length: any gaps and ``hold``, every ``D`` the norm's statistic can take for ``n`` elements
    (``D <= n*max f(d)``; range: ``D <= (max x - min x) << frac``); each result valid exactly
    :func:`~l1bn.hw.bn_stages.recip_cycles` after its start and exact against the reference
    program's rules (``div_round`` / the norm's ``s``, its sigma rule, ``recip``), generated by
    :func:`l1bn.sim.formal.model` from the same program text as the numpy reference.

    A computation re-initializes every register it reads from its start, so k-induction closes
    once ``k`` covers a computation (:func:`recip_k`), given the **counter invariants** asserted
    here on the stage's FSM (its ``probes``): exactly one state is ongoing, and each counting
    state's counter lies within the values that state gives it (``MEAN``: ``wait <= s cycles``;
    ``SIGMA``: ``wait <=`` the constant multiply's cycles; ``SQRT``: ``cnt <= steps - 1``;
    ``DIV``: ``cnt <= recip_bits``); so every state traces back to its start within
    :func:`~l1bn.hw.bn_stages.recip_cycles` cycles. The harness's copy of ``D``, taken at the
    start, is the only state that lives longer.
    """

    def __init__(self, cfg, unit=None):
        super().__init__()
        self.cfg, self.unit = cfg, unit

    def build(self, m):
        from l1bn.hw.bn_stages import RecipStage, recip_cycles

        from .model import AmaranthOps, Lanes

        cfg = self.cfg
        dut = self.unit if self.unit is not None else RecipStage(cfg)
        # elaborated here: the counter invariants name its probes
        m.submodules.dut = Fragment.get(dut, None)
        pr = getattr(dut, "inner", dut).probes
        states = pr["states"]
        m.d.comb += Assert(sum((st.as_unsigned() for st in states[1:]), states[0].as_unsigned()) == 1)
        m.d.comb += [Assert(~ongoing | (c <= top)) for ongoing, c, top in pr["counters"]]
        v = self.free(1, "i_valid")
        dsum = self.free(len(dut.i.payload), "dsum")
        m.d.comb += [dut.i.valid.eq(v), dut.i.payload.eq(dsum), dut.hold.eq(self.free(1, "hold"))]
        # the contract: D of n elements of the x range, with any mu of it
        m.d.comb += Assume(~v | (dsum <= recip_top(cfg)))
        start = v & dut.i.ready
        held = Signal(len(dut.i.payload), name="dsum_taken")
        with m.If(start):
            m.d.sync += held.eq(dsum)
        lat = recip_cycles(cfg)
        starts = delay_line(m, start, lat, "start")
        m.d.comb += Assert(dut.o.valid == starts[-1])
        # the reference program's per-channel part, on the record
        rec = dut.o.payload
        ops = AmaranthOps({"s": rec.s, "sigma_core": rec.sigma - cfg.eps, "inv": rec.inv})
        rule = cfg.norm_spec
        D = Lanes([held])
        if "acc" in _reduce_probes(cfg):
            s = ops.div_round(D, cfg.n, name="s")
        else:
            s = ops.named("s", D)
        sigma = rule.sigma_rule(ops, s, cfg) + cfg.eps
        ops.checks.append(("sigma", rec.sigma == sigma.items[0]))
        ops.recip(sigma, cfg.recip_bits, name="inv")
        m.d.comb += [Assert(~dut.o.valid | ok) for _, ok in ops.checks]


def _reduce_probes(cfg) -> set:
    """The names of the dispersion stage's probes (``acc``: a sum; ``amax``/``amin``: range)."""
    stage = DispersionStage(cfg)
    Fragment.get(stage, None)
    return set(stage.probes)
