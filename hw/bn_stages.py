"""The four stages of the forward BN unit (:mod:`l1bn.hw.bn_unit`), each a
:class:`wiring.Component` with an input stream ``i`` and an output stream ``o`` (payloads from
:func:`stage_payloads`); :func:`bn_stages` builds all four for a config so a synthesis flow can
measure one alone.

- ``stats``     :class:`StatsStage`      sum of x and mean (constant add, multiply, shift)
- ``disp``      :class:`DispersionStage` the norm's dispersion statistic D (sum of |d| for L1,
                                          of d*d for L2, max d - min d for range BN)
- ``recip``     :class:`RecipStage`      s, sigma (by the registry's ``sigma_kind``: times a
                                          constant, or a restoring sqrt) and inv (restoring
                                          divider, one quotient bit per cycle)
- ``normalize`` :class:`NormalizeStage`  xhat = d*inv, gamma*xhat, rounding, + beta, saturation

What differs per norm is not written here: the dispersion and reciprocal stages build the
norm's :class:`~l1bn.hw.bn_dispersion.Dispersion` (named by the unit class the registry's
``hw_unit`` names; :func:`norm_dispersion`) and the sigma datapath of its ``sigma_kind``
(:mod:`l1bn.hw.bn_sigma`).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import Pipe, mul_parts, mul_terms, sum_levels
from l1bn.hw.arith import sat as _sat
from l1bn.hw.bn_sigma import sigma_datapath
from l1bn.hw.const_div import div_round_cycles, div_round_pipe, mean_params
from l1bn.spec.config import BNConfig
from l1bn.spec.norms import resolve

__all__ = ["StatsStage", "DispersionStage", "RecipStage", "NormalizeStage", "bn_stages", "stage_payloads",
           "stage_signatures", "ALWAYS_READY",
           "stage_cycles", "recip_cycles", "norm_dispersion", "normalize_cuts", "normalize_depth_range",
           "NORMALIZE_PRIORITY", "check_cfg", "check_depth"]


def check_cfg(cfg, norm=None, who="BNUnit"):
    """``TypeError`` unless ``cfg`` is a :class:`BNConfig`; ``ValueError`` unless its norm is
    ``norm`` (when given; ``who`` names the class that needs it)."""
    if not isinstance(cfg, BNConfig):
        raise TypeError(f"cfg={cfg!r} must be a BNConfig")
    if norm is not None and cfg.norm != norm:
        raise ValueError(f"cfg.norm={cfg.norm!r} does not match {who} (needs {norm!r})")


def norm_dispersion(cfg: BNConfig):
    """The dispersion datapath of ``cfg.norm``: the ``dispersion`` class of the forward unit the
    registry's ``hw_unit`` names (:class:`~l1bn.hw.bn_dispersion.Dispersion`), for ``cfg``."""
    check_cfg(cfg)
    return resolve(cfg.norm_spec.hw_unit).dispersion(cfg)


def stage_cycles(cfg: BNConfig) -> dict:
    """Pipeline latencies of the stages (cycles; see :func:`l1bn.hw.bn_unit.bn_latency_cycles`).

    ``lane_tree``: registered adder levels over the lanes; ``stats``: from a beat at the stats
    stage's input to ``mu`` (the beat, the lane tree, the running sum, the registers of
    mu = div_round); ``disp``: from a dispersion beat at the stage's input to ``done`` (d, the
    norm's operator, the lane tree, the running statistic); ``s``/``sigma``: pipeline registers of
    the norm's ``s`` (``div_round(D, n)``, none for range BN) and of its sigma datapath (a
    constant multiply; none for a square root).
    """
    disp = norm_dispersion(cfg)
    lt = sum_levels(cfg.lanes)
    return {
        "lane_tree": lt,
        "stats": 1 + lt + 1 + div_round_cycles(signed(cfg.sum_bits + cfg.frac), mean_params(cfg)),
        "disp": 1 + disp.op_cycles + lt + 1,
        "s": disp.s_cycles,
        "sigma": sigma_datapath(cfg, disp).cycles,
    }


def recip_cycles(cfg: BNConfig) -> int:
    """Cycles of :class:`RecipStage` from ``start`` to ``done`` (and back to idle).

    One cycle latches the dispersion sum, ``1 + s`` cycles compute ``s`` (:func:`stage_cycles`),
    then the sigma datapath's cycles (``sigma_kind`` ``"const"``: ``1 + sigma``, a pipelined
    constant multiply; ``"sqrt"``: ``ceil(disp_bits/2)`` square-root cycles, one result bit each,
    and one cycle ``+ eps``), then ``recip_bits + 1`` divider cycles (one quotient bit each).
    """
    sc = stage_cycles(cfg)
    return 2 + sc["s"] + sigma_datapath(cfg, norm_dispersion(cfg)).mid_cycles + cfg.recip_bits + 1


def normalize_cuts(cfg: BNConfig) -> list[str]:
    """The register points of :class:`NormalizeStage` in pipeline order (``depth`` of them are
    used, chosen by :data:`NORMALIZE_PRIORITY`): the read beat ``x``, ``d = (x << frac) - mu``,
    the partial products of ``d*inv`` and their adder levels (the last is ``xhat``), those of
    ``gamma*xhat`` (the last is ``gx``), ``+ beta`` and the saturated ``y``."""
    check_cfg(cfg)
    s1 = cfg.recip_bits - cfg.xhat_frac
    k1 = sum_levels(mul_terms(signed(cfg.dev_bits), unsigned(cfg.inv_bits)) + (1 if s1 > 0 else 0))
    k2 = sum_levels(mul_terms(signed(cfg.gamma_width), signed(cfg.xhat_bits)) + (1 if cfg.affine_shift > 0 else 0))
    cuts = ["x", "d", "dinv_p"] + [f"dinv_t{i}" for i in range(k1 - 1)] + (["xhat"] if k1 else [])
    cuts += ["gx_p"] + [f"gx_t{i}" for i in range(k2 - 1)] + (["gx"] if k2 else []) + ["beta", "y"]
    return cuts


# which registers a shallower normalize pipeline keeps first: depth 2 is the original design
# (xhat and y), then the DSP outputs, then the DSP inputs, then the adder levels
NORMALIZE_PRIORITY = ("y", "xhat", "dinv_p", "gx_p", "gx", "d", "x", "beta")


def normalize_depth_range(cfg: BNConfig) -> tuple[int, int]:
    """Smallest and largest ``depth`` of :class:`NormalizeStage` (the default is the largest)."""
    return 2, len(normalize_cuts(cfg))


def _normalize_used(cfg, depth):
    cuts = normalize_cuts(cfg)
    order = [c for c in NORMALIZE_PRIORITY if c in cuts] + [c for c in cuts if c not in NORMALIZE_PRIORITY]
    return set(order[:depth])


def check_depth(cfg, depth):
    """The normalize pipeline depth ``depth`` checked for ``cfg`` (``None``: the deepest)."""
    lo, hi = normalize_depth_range(cfg)
    if depth is None:
        return hi
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise TypeError(f"depth={depth!r} must be an int")
    if not lo <= depth <= hi:
        raise ValueError(f"depth={depth} is out of range [{lo}, {hi}] for this config")
    return depth


def _lanes(cfg, shape):
    return data.ArrayLayout(shape, cfg.lanes)


def stage_payloads(cfg: BNConfig) -> dict:
    """Payload shapes of the stage streams: ``{stage: (input payload, output payload)}``.

    ``stats``: a beat (``x``, lanes of ``signed(width)``; ``first``/``last`` of the channel) ->
    ``mu`` (``signed(mean_bits)``); ``disp``: a beat with its channel's ``mu`` -> the dispersion sum
    (``unsigned(disp_sum_bits)``); ``recip``: the dispersion sum -> ``s``, ``sigma``, ``inv``
    (``disp_bits``, ``sigma_bits``, ``inv_bits``); ``normalize``: a beat with its channel's ``mu``,
    ``inv``, ``gamma``, ``beta`` -> y (lanes of ``signed(out_width)``, the unit's ``o`` payload).
    """
    check_cfg(cfg)
    x = _lanes(cfg, signed(cfg.width))
    return {
        "stats": (data.StructLayout({"x": x, "first": 1, "last": 1}), signed(cfg.mean_bits)),
        "disp": (data.StructLayout({"x": x, "mu": signed(cfg.mean_bits), "first": 1, "last": 1}),
                 unsigned(cfg.disp_sum_bits)),
        "recip": (unsigned(cfg.disp_sum_bits),
                  data.StructLayout({"s": unsigned(cfg.disp_bits), "sigma": unsigned(cfg.sigma_bits),
                                     "inv": unsigned(cfg.inv_bits)})),
        "normalize": (data.StructLayout({"x": x, "mu": signed(cfg.mean_bits), "inv": unsigned(cfg.inv_bits),
                                         "gamma": signed(cfg.gamma_width), "beta": signed(cfg.beta_width)}),
                      _lanes(cfg, signed(cfg.out_width))),
    }


#: Which stage streams never wait (``stream.Signature(always_ready=True)``: ``ready`` is the
#: constant 1): the statistics and dispersion pipelines run freely, so they take every beat and
#: their consumer must take every result, and so must the reciprocal stage's.
ALWAYS_READY = {"stats": (True, True), "disp": (True, True), "recip": (False, True),
                "normalize": (False, False)}


def stage_signatures(cfg: BNConfig, stage: str) -> tuple:
    """``(i, o)`` stream signatures of ``stage`` (payloads from :func:`stage_payloads`,
    ``always_ready`` from :data:`ALWAYS_READY`)."""
    (pi, po), (ri, ro) = stage_payloads(cfg)[stage], ALWAYS_READY[stage]
    return stream.Signature(pi, always_ready=ri), stream.Signature(po, always_ready=ro)


def _stage_ports(cfg, stage):
    """``i``/``o`` stream members of ``stage`` (:func:`stage_signatures`)."""
    si, so = stage_signatures(cfg, stage)
    return {"i": In(si), "o": Out(so)}


# ---------------------------------------------------------------------------------------------
# stages: each a wiring.Component with an input stream ``i`` and an output stream ``o``
#
# The statistics, dispersion and reciprocal-output streams never wait, and their types say so
# (always_ready: ``ready`` is the constant 1). A real handshake there would need a skid buffer per
# stage deep enough for the pipeline's latency, or a ready path through the pipelines; the unit's
# slot registers (three buffers) absorb the rate difference instead. The streams that carry
# back-pressure for real are the reciprocal's input (ready = idle and not held) and both sides of
# normalize (ready = the pipeline advances).

class StatsStage(wiring.Component):
    """Sum of x over a channel and its mean ``mu = div_round(S << frac, n)``.

    Pipelined: the beat is registered, the lanes are summed by registered adder levels, the
    running sum is a register, and the constant divider (an add, a constant multiply split for
    MULT18X18D, a shift) has its own registers; the pipeline runs freely (no enable), so a result
    follows every channel.

    Ports
    -----
    i : In(stream.Signature(StructLayout(x, first, last)))
        One beat of a channel: ``x`` (``ArrayLayout(signed(width), lanes)``), ``first``/``last``
        mark its first and last beat. ``always_ready``: every valid beat is taken (no
        back-pressure).
    o : Out(stream.Signature(signed(mean_bits)))
        One transfer per channel: ``valid`` is high for one cycle, ``stage_cycles(cfg)["stats"]``
        cycles after the ``last`` beat, with ``mu`` as payload (combinational from the last
        divider register: a shift and a constant subtract). ``always_ready``: the consumer takes
        every record. A new channel may start at once.

    Latency: ``stage_cycles(cfg)["stats"] = 1 + lane_tree + 1 + div_round registers``.
    """

    def __init__(self, cfg: BNConfig):
        check_cfg(cfg)
        self.cfg = cfg
        super().__init__(_stage_ports(cfg, "stats"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pipe = Pipe(m, prefix="st")
        sc = stage_cycles(cfg)
        beat = self.i.payload
        # the inputs are registered first: the receive handshake ends at a register
        tree = pipe.add_tree([pipe.reg(beat.x[k], "x") for k in range(cfg.lanes)], "lanes")
        valid, first, last = (pipe.delay(v, 1 + sc["lane_tree"], n) for v, n in
                              ((self.i.valid, "v"), (beat.first, "f"), (beat.last, "l")))
        acc = Signal(signed(cfg.sum_bits))
        total = Signal(signed(cfg.sum_bits))
        done1 = Signal()
        m.d.sync += done1.eq(valid & last)
        with m.If(valid):
            m.d.sync += acc.eq(Mux(first, 0, acc) + tree)
        m.d.comb += total.eq(acc)
        # the running sum, for the formal harness's invariant (l1bn.sim.formal.stages)
        self.probes = {"acc": acc}
        p = mean_params(cfg)
        m.d.comb += self.o.payload.eq(div_round_pipe(pipe, total.shift_left(cfg.frac), p))
        m.d.comb += self.o.valid.eq(pipe.delay(done1, div_round_cycles(signed(cfg.sum_bits + cfg.frac), p), "done"))
        return m


class DispersionStage(wiring.Component):
    """The dispersion statistic D of a channel, d = (x << frac) - mu: the norm's
    :class:`~l1bn.hw.bn_dispersion.Dispersion` (:func:`norm_dispersion`) gives the per-lane
    operator and the reduction (L1: ``sum |d|``, a sign/abs datapath, no multiplier; L2:
    ``sum d*d``, ``lanes`` multipliers of ``dev_bits`` x ``dev_bits`` split into MULT18X18D
    partial products; range BN: ``max d - min d``, comparators). Pipelined: d, the operator, the
    lane levels and the running statistic are registers; no enable.

    Ports
    -----
    i : In(stream.Signature(StructLayout(x, mu, first, last)))
        A beat (``ArrayLayout(signed(width), lanes)``) with its channel's mean
        (``signed(mean_bits)``) and the channel's first/last markers. ``always_ready``.
    o : Out(stream.Signature(unsigned(disp_sum_bits)))
        ``valid`` (a register) is high for one cycle, ``stage_cycles(cfg)["disp"]`` cycles after
        the ``last`` beat; the payload holds the channel's D from then until the next one.
        ``always_ready``: the consumer takes every record.

    Latency: ``stage_cycles(cfg)["disp"] = 1 (d) + op_cycles (1, or the d*d multiply) + lane_tree + 1``.
    """

    def __init__(self, cfg: BNConfig):
        check_cfg(cfg)
        self.cfg = cfg
        super().__init__(_stage_ports(cfg, "disp"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        disp = norm_dispersion(cfg)
        pipe = Pipe(m, prefix="dp")
        beat = self.i.payload
        terms = []
        for k in range(cfg.lanes):
            d = Signal(signed(cfg.dev_bits), name=f"d{k}")
            m.d.sync += d.eq(beat.x[k].shift_left(cfg.frac) - beat.mu)
            terms.append(disp.lane_term(m, pipe, d, k))
        valid, first, last = (pipe.delay(v, 1 + disp.op_cycles, n) for v, n in
                              ((self.i.valid, "v"), (beat.first, "f"), (beat.last, "l")))
        done = Signal()
        m.d.comb += self.o.valid.eq(done)
        m.d.comb += self.o.payload.eq(disp.reduce(m, pipe, terms, valid, first, last, done))
        # the running statistic's registers, for the formal harness's invariants
        # (l1bn.sim.formal.stages): what the norm's reduce() names
        self.probes = dict(getattr(disp, "probes", {}))
        return m


class RecipStage(wiring.Component):
    """Per-channel scalars from the dispersion sum: ``s``, ``sigma`` and ``inv``.

    ``s`` is the norm's (:meth:`~l1bn.hw.bn_dispersion.Dispersion.s_value`: ``div_round(D, n)``,
    a constant add, multiply and shift, ``stage_cycles()["s"]`` registers; range BN: ``s = D``);
    the registry's ``sigma_kind`` chooses sigma: ``"const"`` (L1,
    range) ``sigma = rnd(s * K, c_bits) + eps`` (a pipelined constant multiply), ``"sqrt"`` (L2)
    ``sigma = isqrt(s) + eps`` by a restoring square root, one result bit per cycle; both:
    ``inv = floor(2**recip_bits / sigma)`` by a restoring divider, one quotient bit per cycle (the
    dividend is a constant power of two). Each square-root and divider step is one subtract whose
    borrow is the comparison. The sigma datapath is :mod:`l1bn.hw.bn_sigma`'s for the norm's
    ``sigma_kind``.

    Ports
    -----
    i : In(stream.Signature(unsigned(disp_sum_bits)))
        The dispersion sum; a real handshake: ``i.ready`` is high while the stage is idle and
        ``hold`` is low, and a transfer (``valid & ready``) starts the computation.
    hold : In(1)
        Accept nothing while high (the unit holds it while its ``stats`` register has a record
        nobody took yet; combinational into ``i.ready``).
    o : Out(stream.Signature(StructLayout(s, sigma, inv)))
        ``unsigned(disp_bits)``, ``unsigned(sigma_bits)``, ``unsigned(inv_bits)``, all registers.
        ``valid`` is high for one cycle, :func:`recip_cycles` cycles after the ``i`` transfer, and
        the payload holds from then until the next one. ``i.ready`` is high again in that cycle,
        so a new transfer may come with ``o.valid``. ``always_ready``: the consumer takes every
        record.

    Latency: :func:`recip_cycles` (``2 + s + (1 + sigma | ceil(disp_bits/2) + 1) + recip_bits + 1``).
    """

    def __init__(self, cfg: BNConfig):
        check_cfg(cfg)
        self.cfg = cfg
        super().__init__({**_stage_ports(cfg, "recip"), "hold": In(1)})

    def elaborate(self, platform):
        # A small FSM: LATCH -> MEAN (wait for the s pipeline) -> the sigma datapath's states
        # (SIGMA: wait for the constant multiply | SQRT x k, SIGMA2) -> DIV x (R+1) -> IDLE. The
        # pipelines run freely from the registers they read, which hold during the wait.
        m = Module()
        cfg = self.cfg
        r = cfg.recip_bits
        sc = stage_cycles(cfg)
        disp = norm_dispersion(cfg)
        sig = sigma_datapath(cfg, disp)
        pipe = Pipe(m, prefix="rc")
        # the result registers (the payload of o is wired from them)
        s = Signal(unsigned(cfg.disp_bits))
        sigma = Signal(unsigned(cfg.sigma_bits))
        inv = Signal(unsigned(cfg.inv_bits))
        done = Signal()
        m.d.comb += [self.o.payload.s.eq(s), self.o.payload.sigma.eq(sigma), self.o.payload.inv.eq(inv),
                     self.o.valid.eq(done)]
        start = self.i.valid & self.i.ready
        dsum = Signal(unsigned(cfg.disp_sum_bits))
        s_new = disp.s_value(pipe, dsum)
        wait = Signal(range(max(sc["s"], sc["sigma"]) + 1))
        cnt = Signal(range(max(r + 1, sig.count) + 1))
        div_first = Signal()
        m.d.sync += done.eq(0)
        nq = self._divider(m, sigma, div_first)
        sig.build(m, pipe, s)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [dsum.eq(self.i.payload), wait.eq(sc["s"])]
                    m.next = "MEAN"
            with m.State("MEAN"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += s.eq(s_new)
                    sig.begin(m, wait, cnt)
            sig.states(m, sigma, div_first, cnt, wait)
            with m.State("DIV"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == r):
                    m.d.sync += [inv.eq(nq), done.eq(1)]
                    m.next = "IDLE"
        m.d.comb += self.i.ready.eq(fsm.ongoing("IDLE") & ~self.hold)
        # for the formal invariants (l1bn.sim.formal.bn_count: idle; l1bn.sim.formal.stages:
        # every state's counter within the values its state gives it, and one state ongoing)
        counted = [("MEAN", wait, sc["s"]), *sig.counted(wait, cnt), ("DIV", cnt, r)]
        self.probes = {"idle": fsm.ongoing("IDLE"),
                       "counters": [(fsm.ongoing(st), c, top) for st, c, top in counted],
                       "states": [fsm.ongoing(st) for st in ("IDLE", *sig.state_names, "MEAN", "DIV")]}
        return m

    def _divider(self, m, sigma, div_first):
        """The restoring divider ``floor(2**recip_bits / sigma)``: one step per cycle, the
        quotient so far shifted in from the right; returns the next quotient (``inv`` after
        ``recip_bits + 1`` steps). The step runs every cycle whatever the state (its registers are
        only read in DIV): no state decoding on its path; ``div_first`` (set with sigma) starts it
        with remainder 0 and the dividend's one 1 bit."""
        cfg = self.cfg
        rem = Signal(unsigned(cfg.sigma_bits + 1))     # divider remainder < sigma, one bit to shift
        q = Signal(unsigned(cfg.inv_bits))
        m.d.sync += div_first.eq(0)
        cur = Signal(unsigned(cfg.sigma_bits + 1))
        diff = Signal(signed(cfg.sigma_bits + 2))
        m.d.comb += [cur.eq(Mux(div_first, 1, rem << 1)),   # the dividend 2**R: one 1, then 0s
                     diff.eq(cur - sigma)]
        ge = ~diff[-1]
        nq = (q << 1) | ge                                   # R + 1 steps shift every old bit out
        m.d.sync += [rem.eq(Mux(ge, diff[:cfg.sigma_bits + 1], cur)), q.eq(nq)]
        return nq


class NormalizeStage(wiring.Component):
    """Normalize, affine and requantize one beat: ``depth`` register stages, stalled by backpressure.

    ``xhat = rnd(d * inv, recip_bits - xhat_frac)``, then
    ``y = sat(rnd(gamma * xhat, affine_shift) + beta, out_width)``. The multiplies are split into
    MULT18X18D partial products with registered inputs and outputs and registered adder levels
    (the rounding constant is one more adder term). :func:`normalize_cuts` lists the register
    points; ``depth`` of them are used (:data:`NORMALIZE_PRIORITY`), default all of them; depth 2
    (xhat and y) is the original two-stage design.

    Ports
    -----
    i : In(stream.Signature(StructLayout(x, mu, inv, gamma, beta)))
        A beat (``ArrayLayout(signed(width), lanes)``) and its channel's ``mu``
        (``signed(mean_bits)``), ``inv`` (``unsigned(inv_bits)``), ``gamma``
        (``signed(gamma_width)``), ``beta`` (``signed(beta_width)``). A real handshake:
        ``i.ready = ~o.valid | o.ready`` (the whole pipeline advances this cycle), so ``i.ready``
        is combinational from ``o.ready``.
    o : Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))
        y, registered; a beat taken at an advancing edge appears ``depth`` advancing edges later.
        ``valid`` and payload hold while ``ready`` is low (the pipeline freezes).

    Latency: ``depth`` cycles when ``o.ready`` stays high.
    """

    def __init__(self, cfg: BNConfig, *, depth: int | None = None):
        check_cfg(cfg)
        self.cfg = cfg
        self.depth = check_depth(cfg, depth)
        super().__init__(_stage_ports(cfg, "normalize"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        used = _normalize_used(cfg, self.depth)
        cuts = normalize_cuts(cfg)
        en = Signal()      # the pipeline advances: o is empty or taken
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        pipe = Pipe(m, en, prefix="nz")
        # the side values (valid and the channel's parameters) travel with the beat
        beat = self.i.payload
        side = {"valid": self.i.valid, "mu": beat.mu, "inv": beat.inv, "gamma": beat.gamma, "beta": beat.beta}
        lanes = [beat.x[k] for k in range(cfg.lanes)]

        # the valid bit's registers in order, for the formal count invariants (l1bn.sim.formal)
        self.probes = {"valid": []}

        def move(on):
            for key in side:
                side[key] = pipe.reg(side[key], key, cut=on)
            if on:
                self.probes["valid"].append(side["valid"])

        def cut(name, values):
            """Register ``values`` (and the side values) at cut point ``name`` if it is used."""
            move(name in used)
            return [pipe.reg(v, name, cut=name in used) for v in values]

        def levels(prefix, last):
            names = [c for c in cuts if c.startswith(prefix + "_t")] + [last]
            return [c in used for c in names if c in cuts]

        s1, s2 = cfg.recip_bits - cfg.xhat_frac, cfg.affine_shift
        add1 = 1 << (s1 - 1) if s1 > 0 else 0     # the rounding constants: one more adder term
        add2 = 1 << (s2 - 1) if s2 > 0 else 0
        lanes = cut("x", lanes)
        lanes = cut("d", [(x.shift_left(cfg.frac) - side["mu"])[:cfg.dev_bits].as_signed() for x in lanes])
        # partial products (registered: the DSP output register), then the adder levels
        prods = [[pipe.product(p, "dinv_p", cut="dinv_p" in used).shift_left(sh) for p, sh in mul_parts(x, side["inv"])]
                 for x in lanes]
        move("dinv_p" in used)
        lv1 = levels("dinv", "xhat")
        xh = []
        for terms in prods:
            v = pipe.add_tree(terms + ([Const(add1)] if add1 else []), "xhat", cuts=lv1)
            xh.append((v >> s1 if s1 > 0 else v.shift_left(-s1))[:cfg.xhat_bits].as_signed())
        for on in lv1:
            move(on)
        gx_terms = [[pipe.product(p, "gx_p", cut="gx_p" in used).shift_left(sh) for p, sh in mul_parts(side["gamma"], x)]
                    for x in xh]
        move("gx_p" in used)
        lv2 = levels("gx", "gx")
        gx = []
        for terms in gx_terms:
            v = pipe.add_tree(terms + ([Const(add2)] if add2 else []), "gx", cuts=lv2)
            gx.append(v >> s2 if s2 > 0 else v.shift_left(-s2))
        for on in lv2:
            move(on)
        lanes = cut("beta", [v + side["beta"] for v in gx])
        lanes = [_sat(v, cfg.out_width) for v in lanes]
        for k in range(cfg.lanes):
            y = pipe.reg(lanes[k], "y", cut=True)
            m.d.comb += self.o.payload[k].eq(y)
        m.d.comb += self.o.valid.eq(pipe.reg(side["valid"], "valid"))
        self.probes["valid"].append(self.o.valid)
        return m


def bn_stages(cfg: BNConfig, *, depth: int | None = None) -> dict:
    """Fresh instances of the four stages for ``cfg``: ``stats``, ``disp``, ``recip``, ``normalize``
    (``depth``: the normalize pipeline depth)."""
    check_cfg(cfg)
    return {"stats": StatsStage(cfg), "disp": DispersionStage(cfg), "recip": RecipStage(cfg),
            "normalize": NormalizeStage(cfg, depth=depth)}
