"""Training-mode BN forward units: L1 (sign/abs dispersion) and the L2 baseline (square/sqrt).

Both implement :func:`l1bn.spec.reference.bn.bn_forward` bit for bit (docs/arith/bn_train.md) on one
shared skeleton, :class:`BNUnit`. The two differ only in the dispersion operator, which lives in two
stage components: :class:`DispersionStage` (``|d|`` with a sign/abs datapath against ``d*d``) and
:class:`RecipStage` (a constant multiply by c against a restoring square root). Everything else
(buffers, schedule, statistics, normalize, affine, requantize) is the same code for both.

Stages (each its own :class:`wiring.Component`; :func:`bn_stages` builds all four for a config so
a synthesis flow can measure one alone):

- ``stats``     :class:`StatsStage`      sum of x and mean (constant add, multiply, shift)
- ``disp``      :class:`DispersionStage` sum of |d| (L1) or of d*d (L2)
- ``recip``     :class:`RecipStage`      s, sigma (L1: times c; L2: restoring sqrt) and inv
                                          (restoring divider, one quotient bit per cycle)
- ``normalize`` :class:`NormalizeStage`  xhat = d*inv, gamma*xhat, rounding, + beta, saturation
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import pick as _pick
from l1bn.hw.arith import rnd as _rnd
from l1bn.hw.arith import sat as _sat
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import c_const, div_round_params

__all__ = ["BNUnit", "L1BNUnit", "L2BNUnit", "StatsStage", "DispersionStage", "RecipStage",
           "NormalizeStage", "bn_unit_for", "bn_stages", "bn_latency_cycles", "recip_cycles",
           "channel_overhead_cycles", "stats_layout"]


# ---------------------------------------------------------------------------------------------
# arithmetic helpers (Amaranth values; the same rules as l1bn.spec.intmath)


def _div_round(v, n, lo, hi):
    """``div_round(v, n)`` for v in [lo, hi]: a constant add, a constant multiply and a shift."""
    p = div_round_params(n, lo, hi)
    z = ((v << 1) + p.offset) * p.mult if p.mult != 1 else (v << 1) + p.offset
    return (z >> p.shift) - p.sub if p.sub else z >> p.shift


def _lane_sum(values):
    """Balanced adder tree (Amaranth grows the widths)."""
    values = list(values)
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def _check_cfg(cfg, norm=None, who="BNUnit"):
    if not isinstance(cfg, BNConfig):
        raise ValueError(f"cfg={cfg!r} must be a BNConfig")
    if norm is not None and cfg.norm != norm:
        raise ValueError(f"cfg.norm={cfg.norm!r} does not match {who} (needs {norm!r})")


def _sqrt_steps(cfg) -> int:
    """Iterations of the restoring square root: one per result bit."""
    return (cfg.disp_bits + 1) // 2


def recip_cycles(cfg: BNConfig) -> int:
    """Cycles of :class:`RecipStage` from ``start`` to ``done`` (and back to idle).

    One cycle latches the dispersion sum, one computes ``s`` (constant divider), then L1: one
    cycle ``sigma = rnd(s*C) + eps``; L2: ``ceil(disp_bits/2)`` square-root cycles (one result bit
    each); then ``recip_bits + 1`` divider cycles (one quotient bit each).
    """
    mid = 1 if cfg.norm == "l1" else _sqrt_steps(cfg)
    return 2 + mid + cfg.recip_bits + 1


def channel_overhead_cycles(cfg: BNConfig) -> int:
    """Per-channel cycles the pipeline must hide: full rate needs ``n/lanes >= this``."""
    return recip_cycles(cfg) + 5


def bn_latency_cycles(cfg: BNConfig) -> int:
    """Cycles from the first accepted input beat to the last output beat of a batch of
    ``cfg.channels`` channels, with input always valid and output always ready (no stalls).

    The schedule as an exact max-plus recurrence (B = n/lanes beats, O = :func:`recip_cycles`;
    channel c, all times are cycle numbers, the first beat is cycle 0)::

        a0[c] = max(al[c-1] + 1, n0[c-3] + 1)    first input beat (buffer c%3 reused after the
        al[c] = a0[c] + B - 1                    normalize pass of c-3 has read ahead of it)
        d0[c] = max(al[c] + 2, dl[c-1] + 1)      first dispersion read (mu ready 2 cycles later)
        dl[c] = d0[c] + B - 1
        r[c]  = max(dl[c] + 3, r[c-1] + O)       reciprocal start (dispersion sum registered)
        n0[c] = max(r[c] + O + 1, nl[c-1] + 1)   first normalize read (inv registered)
        nl[c] = n0[c] + B - 1
        latency = nl[channels-1] + 4             (read, xhat, y registers; +1 counts cycle 0)

    When ``B >= O + 5`` (:func:`channel_overhead_cycles`) nothing ever waits and this is
    ``(channels + 2) * B + O + 7``: a new channel every B cycles, ``lanes`` elements per cycle.
    """
    _check_cfg(cfg)
    b, o = cfg.beats, recip_cycles(cfg)
    al = dl = r = nl = -(10 ** 9)
    n0s = []
    for c in range(cfg.channels):
        a0 = max(al + 1, n0s[c - 3] + 1 if c >= 3 else 0)
        al = a0 + b - 1
        d0 = max(al + 2, dl + 1)
        dl = d0 + b - 1
        r = max(dl + 3, r + o)
        n0 = max(r + o + 1, nl + 1)
        nl = n0 + b - 1
        n0s.append(n0)
    return nl + 4


def stats_layout(cfg: BNConfig) -> data.StructLayout:
    """Payload of the ``stats`` stream: the channel index and its batch statistics."""
    return data.StructLayout({
        "channel": unsigned(max(1, (cfg.channels - 1).bit_length())),
        "mu": signed(cfg.mean_bits),
        "s": unsigned(cfg.disp_bits),
        "sigma": unsigned(cfg.sigma_bits),
        "inv": unsigned(cfg.inv_bits),
    })


def _lanes(cfg, shape):
    return data.ArrayLayout(shape, cfg.lanes)


# ---------------------------------------------------------------------------------------------
# stages

class StatsStage(wiring.Component):
    """Sum of x over a channel and its mean ``mu = div_round(S << frac, n)``.

    Ports
    -----
    x : In(ArrayLayout(signed(width), lanes)); valid, first, last : In(1)
        One beat of the channel; ``first``/``last`` mark its first and last beat.
    mu : Out(signed(mean_bits)); sum : Out(signed(sum_bits)); done : Out(1)
        ``done`` is high for one cycle, the cycle after the ``last`` beat; ``sum`` is registered,
        ``mu`` is combinational from it (a constant add, a constant multiply and a shift; no
        divider). Both hold until the next ``last`` beat. A new channel may start at once.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__({
            "x": In(_lanes(cfg, signed(cfg.width))), "valid": In(1), "first": In(1), "last": In(1),
            "mu": Out(signed(cfg.mean_bits)), "sum": Out(signed(cfg.sum_bits)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        acc = Signal(signed(cfg.sum_bits))
        total = Mux(self.first, 0, acc) + _lane_sum(self.x[k] for k in range(cfg.lanes))
        m.d.sync += self.done.eq(self.valid & self.last)
        with m.If(self.valid):
            m.d.sync += acc.eq(total)
            with m.If(self.last):
                m.d.sync += self.sum.eq(total)
        lo, hi = -(1 << (cfg.width - 1)) * cfg.n, ((1 << (cfg.width - 1)) - 1) * cfg.n
        m.d.comb += self.mu.eq(_div_round(self.sum << cfg.frac, cfg.n, lo << cfg.frac, hi << cfg.frac))
        return m


class DispersionStage(wiring.Component):
    """The dispersion sum of a channel: ``sum |d|`` (L1) or ``sum d*d`` (L2), d = (x << frac) - mu.

    L1 uses a sign/abs datapath (a subtract, a conditional negate, an add): no multiplier. L2 squares
    every deviation (``lanes`` multipliers of ``dev_bits`` x ``dev_bits``).

    Ports
    -----
    x : In(ArrayLayout(signed(width), lanes)); valid, first, last : In(1)
    mu : In(signed(mean_bits))
        The channel's mean, valid with every beat.
    disp_sum : Out(unsigned(disp_sum_bits)); done : Out(1)
        Registered: ``done`` is high for one cycle, the cycle after the ``last`` beat, and
        ``disp_sum`` holds the channel's sum from then until the next ``last`` beat.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__({
            "x": In(_lanes(cfg, signed(cfg.width))), "valid": In(1), "first": In(1), "last": In(1),
            "mu": In(signed(cfg.mean_bits)),
            "disp_sum": Out(unsigned(cfg.disp_sum_bits)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        acc = Signal(unsigned(cfg.disp_sum_bits))
        terms = []
        for k in range(cfg.lanes):
            d = Signal(signed(cfg.dev_bits), name=f"d{k}")
            m.d.comb += d.eq((self.x[k] << cfg.frac) - self.mu)
            if cfg.norm == "l1":
                t = Signal(unsigned(cfg.dev_bits), name=f"absd{k}")
                m.d.comb += t.eq(Mux(d[-1], -d, d))            # sign/abs
            else:
                t = Signal(unsigned(2 * (cfg.dev_bits - 1) + 1), name=f"sqd{k}")
                m.d.comb += t.eq(d * d)                          # square
            terms.append(t)
        m.d.sync += self.done.eq(self.valid & self.last)
        with m.If(self.valid):
            m.d.sync += acc.eq(Mux(self.first, 0, acc) + _lane_sum(terms))
        m.d.comb += self.disp_sum.eq(acc)
        return m


class RecipStage(wiring.Component):
    """Per-channel scalars from the dispersion sum: ``s``, ``sigma`` and ``inv``.

    ``s = div_round(D, n)`` (constant add, multiply, shift); L1: ``sigma = rnd(s * C, c_bits) +
    eps`` (a constant multiply); L2: ``sigma = isqrt(s) + eps`` by a restoring square root, one
    result bit per cycle; both: ``inv = floor(2**recip_bits / sigma)`` by a restoring divider, one
    quotient bit per cycle (the dividend is a constant power of two).

    Ports
    -----
    start : In(1); disp_sum : In(unsigned(disp_sum_bits))
        ``disp_sum`` is sampled in the cycle ``start`` is high while ``busy`` is low.
    busy, done : Out(1)
        ``done`` is high for one cycle, :func:`recip_cycles` cycles after ``start``; ``busy`` is
        low again in that cycle, so a new ``start`` may come with ``done``.
    s : Out(unsigned(disp_bits)); sigma : Out(unsigned(sigma_bits)); inv : Out(unsigned(inv_bits))
        Valid from ``done`` until the next ``done``.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__({
            "start": In(1), "disp_sum": In(unsigned(cfg.disp_sum_bits)),
            "busy": Out(1), "done": Out(1),
            "s": Out(unsigned(cfg.disp_bits)), "sigma": Out(unsigned(cfg.sigma_bits)),
            "inv": Out(unsigned(cfg.inv_bits)),
        })

    def elaborate(self, platform):
        # A small FSM: LATCH -> MEAN -> (SIGMA | SQRT x k) -> DIV x (R+1) -> IDLE. The square root
        # and the divider are the textbook restoring algorithms, one bit per cycle, so both
        # units pay the same divider and differ only in SIGMA against SQRT.
        m = Module()
        cfg = self.cfg
        r = cfg.recip_bits
        dsum = Signal(unsigned(cfg.disp_sum_bits))
        cnt = Signal(range(max(r + 1, _sqrt_steps(cfg)) + 1))
        rem = Signal(unsigned(cfg.sigma_bits + 1))     # divider remainder < sigma, one bit to shift
        q = Signal(unsigned(cfg.inv_bits))
        m.d.sync += self.done.eq(0)
        if cfg.norm == "l2":
            k = _sqrt_steps(cfg)
            v = Signal(unsigned(2 * k))                 # radicand, consumed two bits per step
            root = Signal(unsigned(k))
            srem = Signal(unsigned(k + 2))              # remainder <= 2*root
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += dsum.eq(self.disp_sum)
                    m.next = "MEAN"
            with m.State("MEAN"):
                s = _div_round(dsum, cfg.n, 0, (1 << cfg.disp_sum_bits) - 1)
                m.d.sync += self.s.eq(s)
                if cfg.norm == "l1":
                    m.next = "SIGMA"
                else:
                    m.d.sync += [v.eq(s), root.eq(0), srem.eq(0), cnt.eq(k - 1)]
                    m.next = "SQRT"
            if cfg.norm == "l1":
                with m.State("SIGMA"):
                    m.d.sync += [self.sigma.eq(_rnd(self.s * c_const(cfg.c_bits), cfg.c_bits) + cfg.eps),
                                 rem.eq(0), q.eq(0), cnt.eq(0)]
                    m.next = "DIV"
            else:
                with m.State("SQRT"):
                    trial = Signal(unsigned(k + 2))
                    cur = Signal(unsigned(k + 2))
                    m.d.comb += [cur.eq((srem << 2) | v[-2:]), trial.eq((root << 2) | 1)]
                    ge = cur >= trial
                    nroot = Mux(ge, (root << 1) | 1, root << 1)
                    m.d.sync += [
                        srem.eq(Mux(ge, cur - trial, cur)),
                        root.eq(nroot),
                        v.eq(v << 2),
                        cnt.eq(cnt - 1),
                    ]
                    with m.If(cnt == 0):
                        m.d.sync += [self.sigma.eq(nroot + cfg.eps), rem.eq(0), q.eq(0), cnt.eq(0)]
                        m.next = "DIV"
            with m.State("DIV"):
                cur = Signal(unsigned(cfg.sigma_bits + 1))
                m.d.comb += cur.eq((rem << 1) | (cnt == 0))   # the dividend 2**R: one 1, then 0s
                ge = cur >= self.sigma
                nq = (q << 1) | ge
                m.d.sync += [rem.eq(Mux(ge, cur - self.sigma, cur)), q.eq(nq), cnt.eq(cnt + 1)]
                with m.If(cnt == r):
                    m.d.sync += [self.inv.eq(nq), self.done.eq(1)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class NormalizeStage(wiring.Component):
    """Normalize, affine and requantize one beat: two register stages, stalled by ``en``.

    ``xhat = rnd(d * inv, recip_bits - xhat_frac)`` (``lanes`` multipliers), then
    ``y = sat(rnd(gamma * xhat, affine_shift) + beta, out_width)`` (``lanes`` multipliers).

    Ports
    -----
    en : In(1)
        Advance the pipeline this cycle (the registers hold while low).
    x : In(ArrayLayout(signed(width), lanes)); valid : In(1)
    mu : In(signed(mean_bits)); inv : In(unsigned(inv_bits))
    gamma : In(signed(gamma_width)); beta : In(signed(beta_width))
        The beat and its channel's parameters, sampled together when ``en`` is high.
    y : Out(ArrayLayout(signed(out_width), lanes)); y_valid : Out(1)
        Registered; a beat sampled at an ``en`` edge appears two ``en`` edges later.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__({
            "en": In(1), "x": In(_lanes(cfg, signed(cfg.width))), "valid": In(1),
            "mu": In(signed(cfg.mean_bits)), "inv": In(unsigned(cfg.inv_bits)),
            "gamma": In(signed(cfg.gamma_width)), "beta": In(signed(cfg.beta_width)),
            "y": Out(_lanes(cfg, signed(cfg.out_width))), "y_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        xhat = Signal(_lanes(cfg, signed(cfg.xhat_bits)))
        gamma = Signal(signed(cfg.gamma_width))
        beta = Signal(signed(cfg.beta_width))
        v = Signal()
        with m.If(self.en):
            m.d.sync += [v.eq(self.valid), gamma.eq(self.gamma), beta.eq(self.beta),
                         self.y_valid.eq(v)]
            for k in range(cfg.lanes):
                d = (self.x[k] << cfg.frac) - self.mu
                m.d.sync += xhat[k].eq(_rnd(d * self.inv, cfg.recip_bits - cfg.xhat_frac))
                y = _rnd(gamma * xhat[k], cfg.affine_shift) + beta
                m.d.sync += self.y[k].eq(_sat(y, cfg.out_width))
        return m


def bn_stages(cfg: BNConfig) -> dict:
    """Fresh instances of the four stages for ``cfg``: ``stats``, ``disp``, ``recip``, ``normalize``."""
    _check_cfg(cfg)
    return {"stats": StatsStage(cfg), "disp": DispersionStage(cfg), "recip": RecipStage(cfg),
            "normalize": NormalizeStage(cfg)}


# ---------------------------------------------------------------------------------------------
# the unit

class BNUnit(wiring.Component):
    """Training-mode BN forward for one :class:`BNConfig`: batch statistics, normalize, affine,
    requantize, exactly as :func:`l1bn.spec.reference.bn.bn_forward`.

    Interface
    ---------
    i : In(stream.Signature(ArrayLayout(signed(width), lanes)))
        Each channel's n elements in order (lane k of a beat is element ``beat*lanes + k``),
        channel 0 first; batches of ``channels`` channels follow one another without a break.
    gamma : In(signed(gamma_width)); beta : In(signed(beta_width))
        The channel's affine parameters, sampled with the channel's first accepted beat on ``i``
        (the unit keeps them until the channel is normalized).
    o : Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))
        y, in the order of ``i`` (``out_frac`` fractional bits, saturated).
    stats : Out(stream.Signature(StructLayout(channel, mu, s, sigma, inv)))
        Each channel's batch statistics (bit widths: ``mean_bits``, ``disp_bits``, ``sigma_bits``,
        ``inv_bits``; ``channel`` counts 0..channels-1 and wraps at each batch), valid from the
        cycle its ``inv`` is known, before its first y. It never stalls the data path: when
        the next channel's statistics arrive before these were taken, they replace them (hold
        ``ready`` high to see every channel; the ``channel`` field tells which one you got).

    Schedule
    --------
    x is stored in one of three buffers (``amaranth.lib.memory.Memory``, depth n/lanes, one write
    and two read ports) used in turn, channel c in buffer c % 3. Four engines work on different
    channels at once:

    1. receive (c+2): write the beat into its buffer, accumulate the sum (:class:`StatsStage`);
       the mean is ready 2 cycles after the last beat;
    2. dispersion (c+1): read the buffer, accumulate |d| or d*d (:class:`DispersionStage`);
    3. reciprocal (c+1): s, sigma, inv (:class:`RecipStage`), :func:`recip_cycles` cycles =
       ``recip_bits + 4`` (L1) or ``recip_bits + 3 + ceil(disp_bits/2)`` (L2);
    4. normalize (c): read the buffer again, xhat, affine, requantize (:class:`NormalizeStage`),
       y three cycles after its read.

    A buffer is written again (channel c+3) while it is still being normalized (channel c): the
    write of beat j waits until beat j has been read, so three buffers suffice. Every engine
    starts its next channel the cycle after its last beat of the previous one, so with
    ``n/lanes >= recip_cycles + 5`` (:func:`channel_overhead_cycles`) the unit accepts ``lanes``
    elements every cycle in steady state, and a batch takes
    ``(channels + 2) * n/lanes + recip_cycles + 7`` cycles from its first input beat to its last
    output beat; :func:`bn_latency_cycles` gives the exact count for every config (a max-plus
    recurrence that is also right when n/lanes is small and engines wait).

    Backpressure: ``o.ready`` low freezes the normalize pipeline and its buffer reads (nothing
    is lost or repeated); receive then stops when it would overwrite an unread beat. Gaps in
    ``i.valid`` only delay the engines.
    """

    norm = None

    def __init__(self, cfg: BNConfig):
        try:
            _check_cfg(cfg, self.norm, type(self).__name__)
        except ValueError:
            self._MustUse__silence = True   # a refused object is not an unused design
            raise
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(_lanes(cfg, signed(cfg.width)))),
            "gamma": In(signed(cfg.gamma_width)),
            "beta": In(signed(cfg.beta_width)),
            "o": Out(stream.Signature(_lanes(cfg, signed(cfg.out_width)))),
            "stats": Out(stream.Signature(stats_layout(cfg))),
        })

    def elaborate(self, platform):
        # Channels flow through three buffer slots; per-slot registers carry each channel's
        # scalars from the engine that makes them to the engine that uses them, with a ready
        # flag per slot (set by the producer, cleared by the consumer when it starts).
        m = Module()
        cfg = self.cfg
        nb = cfg.beats
        m.submodules.stats = st = StatsStage(cfg)
        m.submodules.disp = dp = DispersionStage(cfg)
        m.submodules.recip = rc = RecipStage(cfg)
        m.submodules.normalize = nz = NormalizeStage(cfg)

        lay = _lanes(cfg, signed(cfg.width))
        wps, dps, nps = [], [], []
        for k in range(3):
            mem = Memory(shape=lay, depth=nb, init=[])
            m.submodules[f"buf{k}"] = mem
            wps.append(mem.write_port())
            dps.append(mem.read_port())
            nps.append(mem.read_port())

        def slots(shape, name):
            return Array(Signal(shape, name=f"{name}{k}") for k in range(3))

        def nxt(v):
            return Mux(v == 2, 0, v + 1)

        mu_s = slots(signed(cfg.mean_bits), "mu_s")
        dsum_s = slots(unsigned(cfg.disp_sum_bits), "dsum_s")
        inv_s = slots(unsigned(cfg.inv_bits), "inv_s")
        gamma_s = slots(signed(cfg.gamma_width), "gamma_s")
        beta_s = slots(signed(cfg.beta_width), "beta_s")
        mu_ok, d_ok, inv_ok = slots(1, "mu_ok"), slots(1, "d_ok"), slots(1, "inv_ok")

        # --- receive ------------------------------------------------------------------------
        rs = Signal(range(3))
        wa = Signal(range(nb))
        occ = Signal(range(5))            # channels written (even partly) and not yet fully read
        mslot = Signal(range(3))
        ns = Signal(range(3))
        nra = Signal(range(nb + 1))       # reads issued in the channel being normalized
        nact = Signal()
        on_rs = nact & (ns == rs)         # normalize is still reading the slot we write
        ok = ~(on_rs & (nra <= wa)) & ((wa != 0) | (occ < 3) | on_rs)
        take = Signal()
        m.d.comb += [self.i.ready.eq(ok), take.eq(self.i.valid & ok)]
        first, last = wa == 0, wa == nb - 1
        for k in range(3):
            m.d.comb += [wps[k].addr.eq(wa), wps[k].data.eq(self.i.payload),
                         wps[k].en.eq(take & (rs == k))]
        m.d.comb += [st.x.eq(self.i.payload), st.valid.eq(take), st.first.eq(first), st.last.eq(last)]
        with m.If(take):
            m.d.sync += wa.eq(Mux(last, 0, wa + 1))
            with m.If(first):
                m.d.sync += [gamma_s[rs].eq(self.gamma), beta_s[rs].eq(self.beta)]
            with m.If(last):
                m.d.sync += [rs.eq(nxt(rs)), mslot.eq(rs)]
        with m.If(st.done):
            m.d.sync += [mu_s[mslot].eq(st.mu), mu_ok[mslot].eq(1)]

        # --- dispersion -----------------------------------------------------------------------
        ds = Signal(range(3))
        dra = Signal(range(nb))
        dact = Signal()
        dv1, dfirst1, dlast1 = Signal(), Signal(), Signal()
        dslot1, dslot2 = Signal(range(3)), Signal(range(3))
        dmu1 = Signal(signed(cfg.mean_bits))
        dcan = dact | _pick(ds, mu_ok)
        dlast = dra == nb - 1
        for k in range(3):
            m.d.comb += dps[k].addr.eq(dra)
        m.d.sync += dv1.eq(dcan)
        with m.If(dcan):
            m.d.sync += [dfirst1.eq(dra == 0), dlast1.eq(dlast), dslot1.eq(ds),
                         dra.eq(Mux(dlast, 0, dra + 1)), dact.eq(~dlast)]
            with m.If(dra == 0):
                m.d.sync += [dmu1.eq(_pick(ds, mu_s)), mu_ok[ds].eq(0)]
            with m.If(dlast):
                m.d.sync += ds.eq(nxt(ds))
        m.d.comb += [dp.x.eq(_pick(dslot1, [p.data.as_value() for p in dps])), dp.valid.eq(dv1),
                     dp.first.eq(dfirst1), dp.last.eq(dlast1), dp.mu.eq(dmu1)]
        with m.If(dv1 & dlast1):
            m.d.sync += dslot2.eq(dslot1)
        with m.If(dp.done):
            m.d.sync += [dsum_s[dslot2].eq(dp.disp_sum), d_ok[dslot2].eq(1)]

        # --- reciprocal -----------------------------------------------------------------------
        cs = Signal(range(3))
        rslot = Signal(range(3))
        chan = Signal(range(cfg.channels))
        m.d.comb += [rc.start.eq(_pick(cs, d_ok) & ~rc.busy), rc.disp_sum.eq(_pick(cs, dsum_s))]
        with m.If(rc.start):
            m.d.sync += [d_ok[cs].eq(0), rslot.eq(cs), cs.eq(nxt(cs))]
        with m.If(self.stats.ready):
            m.d.sync += self.stats.valid.eq(0)
        with m.If(rc.done):
            m.d.sync += [
                inv_s[rslot].eq(rc.inv), inv_ok[rslot].eq(1),
                self.stats.valid.eq(1),
                self.stats.payload.channel.eq(chan),
                self.stats.payload.mu.eq(_pick(rslot, mu_s)),
                self.stats.payload.s.eq(rc.s),
                self.stats.payload.sigma.eq(rc.sigma),
                self.stats.payload.inv.eq(rc.inv),
                chan.eq(Mux(chan == cfg.channels - 1, 0, chan + 1)),
            ]

        # --- normalize ------------------------------------------------------------------------
        advance = ~self.o.valid | self.o.ready
        ncan = nact | _pick(ns, inv_ok)
        issue = advance & ncan
        nlast = nra == nb - 1
        nv1 = Signal()
        nslot1 = Signal(range(3))
        nmu1 = Signal(signed(cfg.mean_bits))
        ninv1 = Signal(unsigned(cfg.inv_bits))
        ngamma1 = Signal(signed(cfg.gamma_width))
        nbeta1 = Signal(signed(cfg.beta_width))
        for k in range(3):
            m.d.comb += [nps[k].addr.eq(nra), nps[k].en.eq(advance)]
        with m.If(advance):
            m.d.sync += nv1.eq(ncan)
        with m.If(issue):
            m.d.sync += [nslot1.eq(ns), nra.eq(Mux(nlast, 0, nra + 1)), nact.eq(~nlast)]
            with m.If(nra == 0):
                m.d.sync += [nmu1.eq(_pick(ns, mu_s)), ninv1.eq(_pick(ns, inv_s)), ngamma1.eq(_pick(ns, gamma_s)),
                             nbeta1.eq(_pick(ns, beta_s)), inv_ok[ns].eq(0)]
            with m.If(nlast):
                m.d.sync += ns.eq(nxt(ns))
        m.d.sync += occ.eq(occ + (take & first) - (issue & nlast))
        m.d.comb += [
            nz.en.eq(advance), nz.x.eq(_pick(nslot1, [p.data.as_value() for p in nps])),
            nz.valid.eq(nv1), nz.mu.eq(nmu1), nz.inv.eq(ninv1), nz.gamma.eq(ngamma1),
            nz.beta.eq(nbeta1),
            self.o.payload.eq(nz.y), self.o.valid.eq(nz.y_valid),
        ]
        return m


class L1BNUnit(BNUnit):
    __doc__ = ("L1-BN forward: the dispersion is sum |x - mu| (sign/abs datapath, no multiplier), "
               "sigma = c * mean|d| + eps (one constant multiply).\n\n" + BNUnit.__doc__)
    norm = "l1"


class L2BNUnit(BNUnit):
    __doc__ = ("L2-BN forward baseline: the dispersion is sum (x - mu)^2 (a multiplier per lane), "
               "sigma = isqrt(mean d^2) + eps (restoring square root).\n\n" + BNUnit.__doc__)
    norm = "l2"


def bn_unit_for(cfg: BNConfig) -> BNUnit:
    """A fresh :class:`L1BNUnit` or :class:`L2BNUnit` for ``cfg.norm``."""
    _check_cfg(cfg)
    return (L1BNUnit if cfg.norm == "l1" else L2BNUnit)(cfg)
