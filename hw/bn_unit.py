"""Training-mode BN forward units: L1 (sign/abs dispersion), the L2 baseline (square/sqrt) and
range BN (max/min).

All implement :func:`l1bn.spec.reference.bn.bn_forward` bit for bit (docs/arith/bn_train.md) on one
shared skeleton, :class:`BNUnit`. They differ only in the dispersion datapath, which each norm
keeps in its own module (:class:`~l1bn.hw.bn_l1.L1Dispersion`, :class:`~l1bn.hw.bn_l2.L2Dispersion`,
:class:`~l1bn.hw.bn_range.RangeDispersion`; the interface is :mod:`l1bn.hw.bn_dispersion`), named
by the norm's unit class below (the class the registry's ``hw_unit`` names), and in the sigma
datapath that the registry's ``sigma_kind`` chooses (:mod:`l1bn.hw.bn_sigma`). Everything else
(buffers, schedule, statistics, normalize, affine, requantize) is the same code for all.

The unit is four engines around four stage components (:mod:`l1bn.hw.bn_stages`: ``stats``,
``disp``, ``recip``, ``normalize``, each a :class:`wiring.Component` with an input stream ``i``
and an output stream ``o``, joined to the engines with ``wiring.connect``).
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, Pipe
from l1bn.hw.arith import pick as _pick
from l1bn.hw.bn_l1 import L1Dispersion
from l1bn.hw.bn_l2 import L2Dispersion
from l1bn.hw.bn_range import RangeDispersion
from l1bn.hw.bn_stages import (
    NORMALIZE_PRIORITY,
    DispersionStage,
    NormalizeStage,
    RecipStage,
    StatsStage,
    bn_stages,
    check_cfg,
    check_depth,
    norm_dispersion,
    normalize_cuts,
    normalize_depth_range,
    recip_cycles,
    stage_cycles,
    stage_payloads,
    stage_signatures,
)
from l1bn.spec.config import BNConfig
from l1bn.spec.norms import resolve

__all__ = ["BNUnit", "L1BNUnit", "L2BNUnit", "RangeBNUnit", "StatsStage", "DispersionStage", "RecipStage",
           "NormalizeStage", "bn_unit_for", "bn_stages", "stage_payloads", "bn_latency_cycles", "recip_cycles",
           "channel_overhead_cycles", "stats_layout", "stage_cycles", "bn_fill_cycles", "normalize_cuts",
           "normalize_depth_range", "NORMALIZE_PRIORITY", "norm_dispersion"]


def channel_overhead_cycles(cfg: BNConfig) -> int:
    """Per-channel cycles the pipeline must hide: full rate needs ``n/lanes >= this``
    (the reciprocal plus the mean and dispersion pipelines: buffer ``c % 3`` is free again only
    when channel c has been normalized)."""
    sc = stage_cycles(cfg)
    return recip_cycles(cfg) + (1 + sc["stats"]) + (2 + sc["disp"])



def bn_latency_cycles(cfg: BNConfig, *, depth: int | None = None) -> int:
    """Cycles from the first accepted input beat to the last output beat of a batch of
    ``cfg.channels`` channels, with input always valid and output always ready (no stalls).

    ``depth``: the normalize pipeline depth (default: the largest, :func:`normalize_depth_range`).

    The schedule as an exact max-plus recurrence (B = n/lanes beats, O = :func:`recip_cycles`,
    M = 1 + ``stats`` and D = 2 + ``disp`` of :func:`stage_cycles`; channel c, all times are cycle
    numbers, the first beat is cycle 0)::

        a0[c] = max(al[c-1] + 1, n0[c-3] + 1)    first input beat (buffer c%3 reused after the
        al[c] = a0[c] + B - 1                    normalize pass of c-3 has read ahead of it)
        d0[c] = max(al[c] + M, dl[c-1] + 1)      first dispersion read (mu ready M cycles later)
        dl[c] = d0[c] + B - 1
        r[c]  = max(dl[c] + D, r[c-1] + O)       reciprocal start (dispersion sum registered)
        n0[c] = max(r[c] + O + 1, nl[c-1] + 1)   first normalize read (inv registered)
        nl[c] = n0[c] + B - 1
        latency = nl[channels-1] + 2 + depth     (read, depth registers; +1 counts cycle 0)

    When ``B >= O + M + D`` (:func:`channel_overhead_cycles`) nothing ever waits and this is
    ``(channels + 2) * B + O + M + D + depth``: a new channel every B cycles, ``lanes`` elements
    per cycle (:func:`bn_fill_cycles` is everything but ``(channels + 2) * B``).
    """
    check_cfg(cfg)
    depth = check_depth(cfg, depth)
    sc = stage_cycles(cfg)
    b, o, mw, dw = cfg.beats, recip_cycles(cfg), 1 + sc["stats"], 2 + sc["disp"]
    al = dl = r = nl = -(10 ** 9)
    n0s = []
    for c in range(cfg.channels):
        a0 = max(al + 1, n0s[c - 3] + 1 if c >= 3 else 0)
        al = a0 + b - 1
        d0 = max(al + mw, dl + 1)
        dl = d0 + b - 1
        r = max(dl + dw, r + o)
        n0 = max(r + o + 1, nl + 1)
        nl = n0 + b - 1
        n0s.append(n0)
    return nl + 2 + depth


def bn_fill_cycles(cfg: BNConfig, *, depth: int | None = None) -> int:
    """The pipeline's fill and drain at full rate: latency = ``(channels + 2) * n/lanes`` plus
    this, ``channel_overhead_cycles + depth`` (valid when ``n/lanes >= channel_overhead_cycles``)."""
    return channel_overhead_cycles(cfg) + check_depth(cfg, depth)


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


def _slots(shape, name):
    """Three registers of ``shape``, one per buffer slot (``<name>0`` .. ``<name>2``)."""
    return Array(Signal(shape, name=f"{name}{k}") for k in range(3))


def _nxt(v):
    """The next slot after ``v`` (0, 1, 2, 0, ...)."""
    return Mux(v == 2, 0, v + 1)


class _Slots:
    """The unit's per-slot registers: a channel's scalars, carried from the engine that makes
    them to the engines that use them (slot = the channel's buffer, c % 3), with a ready flag per
    slot (set by the producer, cleared by the consumer when it starts the channel).

    ``mu`` (stats -> dispersion, reciprocal, normalize; flag ``mu_ok``), ``dsum`` (dispersion ->
    reciprocal; ``d_ok``), ``inv`` (reciprocal -> normalize; ``inv_ok``), ``gamma``, ``beta``
    (receive -> normalize).
    """

    def __init__(self, cfg: BNConfig):
        self.mu = _slots(signed(cfg.mean_bits), "mu_s")
        self.dsum = _slots(unsigned(cfg.disp_sum_bits), "dsum_s")
        self.inv = _slots(unsigned(cfg.inv_bits), "inv_s")
        self.gamma = _slots(signed(cfg.gamma_width), "gamma_s")
        self.beta = _slots(signed(cfg.beta_width), "beta_s")
        self.mu_ok, self.d_ok, self.inv_ok = _slots(1, "mu_ok"), _slots(1, "d_ok"), _slots(1, "inv_ok")


class BNUnit(CheckedComponent):
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
        cycle its ``inv`` is known, before its first y. A record holds (valid and payload) until
        ``ready``, so every channel's record comes out once; while one waits, the next
        channel's reciprocal does not start, so a consumer that holds ``ready`` low stalls the
        unit (hold it high for full rate: the latency formulas assume that).

    Schedule
    --------
    x is stored in one of three buffers (``amaranth.lib.memory.Memory``, depth n/lanes, one write
    and two read ports) used in turn, channel c in buffer c % 3. Four engines work on different
    channels at once:

    1. receive (c+2): write the beat into its buffer, accumulate the sum (:class:`StatsStage`);
       the mean is ready ``1 + stage_cycles(cfg)["stats"]`` cycles after the last beat;
    2. dispersion (c+1): read the buffer, accumulate |d|, d*d or max/min (:class:`DispersionStage`);
    3. reciprocal (c+1): s, sigma, inv (:class:`RecipStage`), :func:`recip_cycles` cycles
       (the sigma datapath by the registry's ``sigma_kind``);
    4. normalize (c): read the buffer again, xhat, affine, requantize (:class:`NormalizeStage`),
       y ``depth + 1`` cycles after its read.

    Each engine talks to its stage through ``lib.stream`` interfaces joined with
    ``wiring.connect`` (:func:`stage_payloads`; docs/bn_unit.md, "Stage interfaces").

    A buffer is written again (channel c+3) while it is still being normalized (channel c): the
    write of beat j waits until beat j has been read, so three buffers suffice. Every engine
    starts its next channel the cycle after its last beat of the previous one, so with
    ``n/lanes >= channel_overhead_cycles(cfg)`` the unit accepts ``lanes`` elements every cycle in
    steady state, and a batch takes ``(channels + 2) * n/lanes + bn_fill_cycles(cfg)`` cycles from
    its first input beat to its last output beat; :func:`bn_latency_cycles` gives the exact count
    for every config (a max-plus recurrence that is also right when n/lanes is small and engines
    wait).

    Backpressure: ``o.ready`` low freezes the normalize pipeline and its buffer reads (nothing
    is lost or repeated); receive then stops when it would overwrite an unread beat. Gaps in
    ``i.valid`` only delay the engines.
    """

    norm = None
    #: the norm's dispersion datapath (:class:`~l1bn.hw.bn_dispersion.Dispersion` subclass)
    dispersion = None

    @classmethod
    def _check_args(cls, cfg, *, depth: int | None = None):
        check_cfg(cfg, cls.norm, cls.__name__)
        check_depth(cfg, depth)

    def __init__(self, cfg: BNConfig, *, depth: int | None = None):
        self.cfg = cfg
        self.depth = check_depth(cfg, depth)
        super().__init__({
            "i": In(stream.Signature(_lanes(cfg, signed(cfg.width)))),
            "gamma": In(signed(cfg.gamma_width)),
            "beta": In(signed(cfg.beta_width)),
            "o": Out(stream.Signature(_lanes(cfg, signed(cfg.out_width)))),
            "stats": Out(stream.Signature(stats_layout(cfg))),
        })

    def elaborate(self, platform):
        # Channels flow through three buffer slots; per-slot registers (_Slots) carry each
        # channel's scalars from the engine that makes them to the engine that uses them. Four
        # engines, each a method below, work on different channels at once: receive (c+2),
        # dispersion (c+1), reciprocal (c+1), normalize (c). They talk to the stages through
        # stream interfaces joined with wiring.connect: to_* feed a stage's input, from_* take
        # its output (stage_payloads).
        m = Module()
        cfg = self.cfg
        m.submodules.stats = st = StatsStage(cfg)
        m.submodules.disp = dp = DispersionStage(cfg)
        m.submodules.recip = rc = RecipStage(cfg)
        m.submodules.normalize = nz = NormalizeStage(cfg, depth=self.depth)
        sc = stage_cycles(cfg)
        to_st, to_dp, to_rc, to_nz = (stage_signatures(cfg, k)[0].create(path=(f"to_{k}",))
                                      for k in ("stats", "disp", "recip", "normalize"))
        from_st, from_dp, from_rc = (c.o.signature.flip().create(path=(f"from_{k}",))
                                     for k, c in (("stats", st), ("disp", dp), ("recip", rc)))
        for a, b in ((to_st, st.i), (to_dp, dp.i), (to_rc, rc.i), (to_nz, nz.i),
                     (st.o, from_st), (dp.o, from_dp), (rc.o, from_rc)):
            wiring.connect(m, a, b)
        wiring.connect(m, nz.o, wiring.flipped(self.o))
        pipe = Pipe(m, prefix="slot")
        # internal registers the formal harnesses' invariants name (l1bn.sim.formal); no logic
        self.probes = {}
        wps, dps, nps = self._buffers(m)
        sl = _Slots(cfg)
        rx = self._receive(m, pipe, wps, sl, to_st, from_st, sc)
        self._dispersion(m, pipe, dps, sl, to_dp, from_dp, sc)
        self._reciprocal(m, rc, sl, to_rc, from_rc)
        self._normalize(m, nps, sl, rx, to_nz)
        # each channel's mean and dispersion statistic as their stages deliver them, for the
        # formal harnesses' lemmas (l1bn.sim.formal.bn_batch); the engines' cursors, slot flags
        # and handshakes, for the count invariants (l1bn.sim.formal.bn_count)
        self.probes |= {"mu_valid": from_st.valid, "mu": from_st.payload,
                        "disp_valid": from_dp.valid, "disp_sum": from_dp.payload,
                        "to_disp": to_dp, "to_norm": to_nz, "disp_stage": dp,
                        "norm_stage": nz, "recip_stage": rc, "rx": rx, "mu_ok": sl.mu_ok, "d_ok": sl.d_ok, "to_recip": to_rc,
                        "from_recip": from_rc, "norm_depth": self.depth, "o_valid": self.o.valid,
                        "stats_stage": st, "from_disp": from_dp, "mu_s": sl.mu, "dsum_s": sl.dsum}
        return m

    def _buffers(self, m):
        """The three x buffers (``amaranth.lib.memory.Memory``, depth n/lanes, a beat per word):
        their write ports, dispersion read ports and normalize read ports."""
        cfg = self.cfg
        lay = _lanes(cfg, signed(cfg.width))
        wps, dps, nps = [], [], []
        for k in range(3):
            mem = Memory(shape=lay, depth=cfg.beats, init=[])
            m.submodules[f"buf{k}"] = mem
            wps.append(mem.write_port())
            dps.append(mem.read_port())
            nps.append(mem.read_port())
        return wps, dps, nps

    def _receive(self, m, pipe, wps, sl, to_st, from_st, sc):
        """Receive engine (channel c+2): takes the unit's ``i`` beats into buffer ``rs`` (the
        write registered a cycle later) and into the stats stage (``to_st``); gamma and beta go
        to the slot a cycle later; ``mu`` from ``from_st`` goes to the slot of its channel.

        A beat is taken unless it would overwrite one the normalize engine has not read (its
        read cursor ``ns``, ``nra``, ``nact`` is created here, driven by :meth:`_normalize`):
        ``occ`` counts the channels written and not yet fully read, ``le`` is ``nra <= wa``.
        Returns the signals :meth:`_normalize` updates or reads, as a dict.
        """
        cfg = self.cfg
        nb = cfg.beats
        rs = Signal(range(3))
        wa = Signal(range(nb))
        occ = Signal(range(5))            # channels written (even partly) and not yet fully read
        ns = Signal(range(3))
        nra = Signal(range(nb + 1))       # reads issued in the channel being normalized
        nact = Signal()
        on_rs = nact & (ns == rs)         # normalize is still reading the slot we write
        # le == (nra <= wa), kept as a register updated from the comparisons of this cycle's
        # values (they run in parallel with the handshake), so no comparator is on the path
        le = Signal(init=1)
        ok = ~(on_rs & le) & ((wa != 0) | (occ < 3) | on_rs)
        take = Signal()
        m.d.comb += [self.i.ready.eq(ok), take.eq(self.i.valid & ok)]
        # wa == 0 and wa == nb - 1 as registers (no comparator on the handshake path)
        first, last = Signal(init=1), Signal(init=int(nb == 1))
        for k in range(3):
            # the write is registered (one cycle later): the handshake logic does not reach the
            # RAM's write port in the same cycle; reads of a channel start >= 3 cycles after its
            # last write, and a slot is rewritten only after it was read (later is safe)
            m.d.sync += [wps[k].addr.eq(wa), wps[k].data.eq(self.i.payload),
                         wps[k].en.eq(take & (rs == k))]
        m.d.comb += [to_st.payload.x.eq(self.i.payload), to_st.payload.first.eq(first),
                     to_st.payload.last.eq(last), to_st.valid.eq(take)]
        # gamma and beta go to their slot one cycle later (off the handshake path)
        g_take = Signal()
        g_slot = Signal(range(3))
        g_gamma = Signal(signed(cfg.gamma_width))
        g_beta = Signal(signed(cfg.beta_width))
        m.d.sync += [g_take.eq(take & first), g_slot.eq(rs), g_gamma.eq(self.gamma), g_beta.eq(self.beta)]
        with m.If(g_take):
            m.d.sync += [sl.gamma[g_slot].eq(g_gamma), sl.beta[g_slot].eq(g_beta)]
        wa1 = Signal(range(nb + 2), init=1)    # always wa + 1 (no adder before the comparison)
        with m.If(take):
            m.d.sync += [wa.eq(Mux(last, 0, wa + 1)), wa1.eq(Mux(last, 1, wa + 2)),
                         first.eq(last), last.eq(Mux(last, nb == 1, wa == nb - 2))]
            with m.If(last):
                m.d.sync += rs.eq(_nxt(rs))
        mslot = pipe.delay(rs, sc["stats"], "mslot")     # the slot of the channel whose mu is done
        with m.If(from_st.valid):
            m.d.sync += [sl.mu[mslot].eq(from_st.payload), sl.mu_ok[mslot].eq(1)]
        return {"take": take, "first": first, "last": last, "wa": wa, "wa1": wa1, "occ": occ, "le": le, "rs": rs,
                "ns": ns, "nra": nra, "nact": nact}

    def _dispersion(self, m, pipe, dps, sl, to_dp, from_dp, sc):
        """Dispersion engine (channel c+1): once the channel's ``mu`` is ready, reads its buffer
        (registered: beat, first/last, slot, mu) into the dispersion stage (``to_dp``); the
        stage's D (``from_dp``) goes to the slot of its channel."""
        cfg = self.cfg
        nb = cfg.beats
        ds = Signal(range(3))
        dra = Signal(range(nb))
        dact = Signal()
        dv1, dfirst1, dlast1 = Signal(), Signal(), Signal()
        dslot1 = Signal(range(3))
        dmu1 = Signal(signed(cfg.mean_bits))
        dcan = dact | _pick(ds, sl.mu_ok)
        self.probes |= {"dact": dact, "dra": dra, "ds": ds}
        dlast = dra == nb - 1
        for k in range(3):
            # read only the buffer of the channel in flight (an SRAM buffer then costs one read
            # per beat, not one per buffer and cycle); the data of other cycles is not used
            m.d.comb += [dps[k].addr.eq(dra), dps[k].en.eq(dcan & (ds == k))]
        m.d.sync += dv1.eq(dcan)
        with m.If(dcan):
            m.d.sync += [dfirst1.eq(dra == 0), dlast1.eq(dlast), dslot1.eq(ds),
                         dra.eq(Mux(dlast, 0, dra + 1)), dact.eq(~dlast)]
            with m.If(dra == 0):
                m.d.sync += [dmu1.eq(_pick(ds, sl.mu)), sl.mu_ok[ds].eq(0)]
            with m.If(dlast):
                m.d.sync += ds.eq(_nxt(ds))
        m.d.comb += [to_dp.payload.x.eq(_pick(dslot1, [p.data.as_value() for p in dps])),
                     to_dp.payload.mu.eq(dmu1), to_dp.payload.first.eq(dfirst1),
                     to_dp.payload.last.eq(dlast1), to_dp.valid.eq(dv1)]
        dslot2 = pipe.delay(dslot1, sc["disp"], "dslot")    # the slot whose sum is done
        with m.If(from_dp.valid):
            m.d.sync += [sl.dsum[dslot2].eq(from_dp.payload), sl.d_ok[dslot2].eq(1)]

    def _reciprocal(self, m, rc, sl, to_rc, from_rc):
        """Reciprocal engine (channel c+1): starts the reciprocal stage (``to_rc``) on the next
        slot's D; its result (``from_rc``) goes to the slot (``inv``) and, with the slot's
        ``mu``, to the unit's ``stats`` stream.

        Stream rule on ``stats``: a record holds until taken. A finished record that finds the
        ``stats`` register still occupied waits (``rec_wait``; s, sigma, inv stay in the stage,
        mu is kept here) and no reciprocal starts meanwhile (``rc.hold``). With ``stats.ready``
        high nothing ever waits, so the timing is that of :func:`bn_latency_cycles`.
        """
        cfg = self.cfg
        cs = Signal(range(3))
        rslot = Signal(range(3))
        chan = Signal(range(cfg.channels))
        stats_free = ~self.stats.valid | self.stats.ready
        rec_wait = Signal()
        rec_mu = Signal(signed(cfg.mean_bits))
        self.probes |= {"rec_wait": rec_wait, "chan": chan, "cs": cs, "rslot": rslot}
        # to_rc: valid holds until taken (d_ok[cs] clears, cs moves only on the transfer); the
        # stats register's state goes in as hold, so it gates ready, not valid
        start = to_rc.valid & to_rc.ready
        m.d.comb += [to_rc.valid.eq(_pick(cs, sl.d_ok)), to_rc.payload.eq(_pick(cs, sl.dsum)),
                     rc.hold.eq(rec_wait | (from_rc.valid & ~stats_free))]
        with m.If(start):
            m.d.sync += [sl.d_ok[cs].eq(0), rslot.eq(cs), cs.eq(_nxt(cs))]
        with m.If(self.stats.ready):
            m.d.sync += self.stats.valid.eq(0)
        rec = from_rc.payload
        with m.If(from_rc.valid):
            m.d.sync += [sl.inv[rslot].eq(rec.inv), sl.inv_ok[rslot].eq(1)]
            with m.If(~stats_free):
                m.d.sync += [rec_wait.eq(1), rec_mu.eq(_pick(rslot, sl.mu))]
        with m.If((from_rc.valid | rec_wait) & stats_free):
            m.d.sync += [
                rec_wait.eq(0),
                self.stats.valid.eq(1),
                self.stats.payload.channel.eq(chan),
                self.stats.payload.mu.eq(Mux(rec_wait, rec_mu, _pick(rslot, sl.mu))),
                self.stats.payload.s.eq(rec.s),
                self.stats.payload.sigma.eq(rec.sigma),
                self.stats.payload.inv.eq(rec.inv),
                chan.eq(Mux(chan == cfg.channels - 1, 0, chan + 1)),
            ]

    def _normalize(self, m, nps, sl, rx, to_nz):
        """Normalize engine (channel c): once the channel's ``inv`` is ready, reads its buffer
        again into the normalize stage (``to_nz``), advancing only when the stage does
        (``to_nz.ready``); then updates the receive engine's write guard (``rx``: ``occ``,
        ``le``) from this cycle's take and read."""
        cfg = self.cfg
        nb = cfg.beats
        ns, nra, nact = rx["ns"], rx["nra"], rx["nact"]
        advance = to_nz.ready             # = ~o.valid | o.ready: the normalize pipeline advances
        ncan = nact | _pick(ns, sl.inv_ok)
        issue = advance & ncan
        nlast = Signal(init=int(nb == 1))   # nra == nb - 1, as a register
        self.probes |= {"nlast": nlast, "inv_ok": sl.inv_ok}
        nv1 = Signal()
        nslot1 = Signal(range(3))
        nmu1 = Signal(signed(cfg.mean_bits))
        ninv1 = Signal(unsigned(cfg.inv_bits))
        ngamma1 = Signal(signed(cfg.gamma_width))
        nbeta1 = Signal(signed(cfg.beta_width))
        for k in range(3):
            # one read per issued beat, in the buffer being normalized (nv1 marks the data valid)
            m.d.comb += [nps[k].addr.eq(nra), nps[k].en.eq(issue & (ns == k))]
        with m.If(advance):
            m.d.sync += nv1.eq(ncan)
        with m.If(issue):
            m.d.sync += [nslot1.eq(ns), nra.eq(Mux(nlast, 0, nra + 1)), nact.eq(~nlast),
                         nlast.eq(Mux(nlast, nb == 1, nra == nb - 2))]
            with m.If(nra == 0):
                m.d.sync += [nmu1.eq(_pick(ns, sl.mu)), ninv1.eq(_pick(ns, sl.inv)),
                             ngamma1.eq(_pick(ns, sl.gamma)), nbeta1.eq(_pick(ns, sl.beta)), sl.inv_ok[ns].eq(0)]
            with m.If(nlast):
                m.d.sync += ns.eq(_nxt(ns))
        self._write_guard(m, rx, issue, nlast)
        # to_nz keeps the stream rule: nv1, the read data (read enable = issue, within advance) and the channel's
        # registers change only on an advancing cycle, i.e. when to_nz.ready is high
        m.d.comb += [
            to_nz.payload.x.eq(_pick(nslot1, [p.data.as_value() for p in nps])),
            to_nz.payload.mu.eq(nmu1), to_nz.payload.inv.eq(ninv1), to_nz.payload.gamma.eq(ngamma1),
            to_nz.payload.beta.eq(nbeta1), to_nz.valid.eq(nv1),
        ]

    def _write_guard(self, m, rx, issue, nlast):
        """``occ`` and ``le`` (:meth:`_receive`) for the next cycle, from this cycle's write
        (``take``, at ``wa``) and normalize read (``issue``, at ``nra``)."""
        take, first, last = rx["take"], rx["first"], rx["last"]
        nra, wa, wa1, le = rx["nra"], rx["wa"], rx["wa1"], rx["le"]
        m.d.sync += rx["occ"].eq(rx["occ"] + (take & first) - (issue & nlast))
        c_le, c_lt, c_le1, c_z = nra <= wa, nra < wa, nra <= wa1, nra == 0
        with m.If(take & last):
            m.d.sync += le.eq(Mux(issue, nlast, c_z))          # wa' = 0: le' = (nra' == 0)
        with m.Elif(issue & nlast):
            m.d.sync += le.eq(1)                               # nra' = 0
        with m.Elif(issue & ~take):
            m.d.sync += le.eq(c_lt)                            # nra + 1 <= wa
        with m.Elif(take & ~issue):
            m.d.sync += le.eq(c_le1)                           # nra <= wa + 1
        with m.Else():
            m.d.sync += le.eq(c_le)


class L1BNUnit(BNUnit):
    __doc__ = ("L1-BN forward: the dispersion is sum |x - mu| (sign/abs datapath, no multiplier), "
               "sigma = c * mean|d| + eps (one constant multiply).\n\n" + BNUnit.__doc__)
    norm = "l1"
    dispersion = L1Dispersion


class RangeBNUnit(BNUnit):
    """Range-BN forward unit (comparators for max/min, one constant multiply by C(n) for sigma;
    docs/arith/range_bn.md)."""

    norm = "range"
    dispersion = RangeDispersion


class L2BNUnit(BNUnit):
    __doc__ = ("L2-BN forward baseline: the dispersion is sum (x - mu)^2 (a multiplier per lane), "
               "sigma = isqrt(mean d^2) + eps (restoring square root).\n\n" + BNUnit.__doc__)
    norm = "l2"
    dispersion = L2Dispersion


def bn_unit_for(cfg: BNConfig, *, depth: int | None = None) -> BNUnit:
    """A fresh forward unit for ``cfg.norm``, the class the norm registry names
    (:class:`L1BNUnit`, :class:`L2BNUnit`, :class:`RangeBNUnit`; ``depth``: the normalize pipeline
    depth, default the deepest)."""
    check_cfg(cfg)
    return resolve(cfg.norm_spec.hw_unit)(cfg, depth=depth)
