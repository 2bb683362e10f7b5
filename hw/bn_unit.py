"""Training-mode BN forward units: L1 (sign/abs dispersion), the L2 baseline (square/sqrt) and
range BN (max/min).

All implement :func:`l1bn.spec.reference.bn.bn_forward` bit for bit (docs/arith/bn_train.md) on one
shared skeleton, :class:`BNUnit`. They differ only in the dispersion operator, which lives in two
stage components: :class:`DispersionStage` (``|d|`` with a sign/abs datapath, ``d*d``, or a
running max/min) and :class:`RecipStage` (a constant multiply against a restoring square root,
chosen by the norm registry's ``sigma_kind``). Everything else (buffers, schedule, statistics,
normalize, affine, requantize) is the same code for all.

Stages (each its own :class:`wiring.Component` with an input stream ``i`` and an output stream
``o``, payloads from :func:`stage_payloads`, joined to the unit's engines with
``wiring.connect``; :func:`bn_stages` builds all four for a config so a synthesis flow can
measure one alone):

- ``stats``     :class:`StatsStage`      sum of x and mean (constant add, multiply, shift)
- ``disp``      :class:`DispersionStage` sum of |d| (L1), of d*d (L2), max d - min d (range)
- ``recip``     :class:`RecipStage`      s, sigma (times a constant, or restoring sqrt) and inv
                                          (restoring divider, one quotient bit per cycle)
- ``normalize`` :class:`NormalizeStage`  xhat = d*inv, gamma*xhat, rounding, + beta, saturation
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, Pipe, mul_latency, mul_parts, mul_terms, sum_levels
from l1bn.hw.arith import pick as _pick
from l1bn.hw.arith import sat as _sat
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import c_const, div_round_params, range_const
from l1bn.spec.norms import resolve

__all__ = ["BNUnit", "L1BNUnit", "L2BNUnit", "RangeBNUnit", "StatsStage", "DispersionStage", "RecipStage",
           "NormalizeStage", "bn_unit_for", "bn_stages", "stage_payloads", "bn_latency_cycles", "recip_cycles",
           "channel_overhead_cycles", "stats_layout", "stage_cycles", "bn_fill_cycles", "normalize_cuts",
           "normalize_depth_range", "NORMALIZE_PRIORITY"]


# ---------------------------------------------------------------------------------------------
# arithmetic helpers (Amaranth values; the same rules as l1bn.spec.intmath)


def _check_cfg(cfg, norm=None, who="BNUnit"):
    if not isinstance(cfg, BNConfig):
        raise TypeError(f"cfg={cfg!r} must be a BNConfig")
    if norm is not None and cfg.norm != norm:
        raise ValueError(f"cfg.norm={cfg.norm!r} does not match {who} (needs {norm!r})")


def _sqrt_steps(cfg) -> int:
    """Iterations of the restoring square root: one per result bit."""
    return (cfg.disp_bits + 1) // 2


def _mean_params(cfg):
    lo, hi = -(1 << (cfg.width - 1)) * cfg.n, ((1 << (cfg.width - 1)) - 1) * cfg.n
    return div_round_params(cfg.n, lo << cfg.frac, hi << cfg.frac)


def _s_params(cfg):
    return div_round_params(cfg.n, 0, (1 << cfg.disp_sum_bits) - 1)


def _div_round_operand(v, p):
    """``(v << 1) + offset``, the operand of the constant multiply."""
    return v.shift_left(1) + p.offset


def _div_round_shape(v_shape, p):
    return _div_round_operand(Signal(v_shape), p).shape()


def _div_round_cycles(v_shape, p) -> int:
    """Registers of :func:`_div_round_pipe`: the offset add, then the constant multiply."""
    return 1 + (mul_latency(_div_round_shape(v_shape, p), p.mult) if p.mult != 1 else 0)


def _div_round_pipe(pipe, v, p):
    """``div_round(v, n)`` through :class:`Pipe` registers; the final shift and subtract are
    combinational (the caller registers them)."""
    z = pipe.reg(_div_round_operand(v, p), "dr_off")
    if p.mult != 1:
        z = pipe.mul(z, p.mult, "dr_mul")
    return (z >> p.shift) - p.sub if p.sub else z >> p.shift


def _sigma_round(cfg) -> int:
    return 1 << (cfg.c_bits - 1)


def _const_sigma(cfg) -> bool:
    """True when the norm's sigma is a constant multiply of s (registry ``sigma_kind == "const"``:
    L1, range); False for a square root (``"sqrt"``: L2)."""
    return cfg.norm_spec.sigma_kind == "const"


def _sigma_const(cfg) -> int:
    """The constant of ``sigma = rnd(s * const, c_bits) + eps``: C (L1) or C(n) (range BN)."""
    return range_const(cfg.n, cfg.c_bits) if cfg.norm == "range" else c_const(cfg.c_bits)


def stage_cycles(cfg: BNConfig) -> dict:
    """Pipeline latencies of the stages (cycles; see :func:`bn_latency_cycles`).

    ``lane_tree``: registered adder levels over the lanes; ``mean``: registers of mu = div_round
    after the channel sum; ``disp``: from a dispersion beat at the stage's input to ``done``;
    ``s``/``sigma``: pipeline registers of s = div_round(D, n) and of sigma = rnd(s*C) (L1).
    """
    _check_cfg(cfg)
    lt = sum_levels(cfg.lanes)
    op = mul_latency(signed(cfg.dev_bits), signed(cfg.dev_bits)) if cfg.norm == "l2" else 1
    return {
        "lane_tree": lt,
        "stats": 1 + lt + 1 + _div_round_cycles(signed(cfg.sum_bits + cfg.frac), _mean_params(cfg)),
        "disp": 1 + op + lt + 1,
        # range BN: s is the range itself, no division by n
        "s": 0 if cfg.norm == "range" else _div_round_cycles(unsigned(cfg.disp_sum_bits), _s_params(cfg)),
        "sigma": mul_latency(unsigned(cfg.disp_bits), _sigma_const(cfg), add=_sigma_round(cfg)),
    }


def recip_cycles(cfg: BNConfig) -> int:
    """Cycles of :class:`RecipStage` from ``start`` to ``done`` (and back to idle).

    One cycle latches the dispersion sum, ``1 + s`` cycles compute ``s`` (the constant divider's
    pipeline, :func:`stage_cycles`), then L1: ``1 + sigma`` cycles ``sigma = rnd(s*C) + eps``
    (a pipelined constant multiply); L2: ``ceil(disp_bits/2)`` square-root cycles (one result bit
    each) and one cycle ``+ eps``; then ``recip_bits + 1`` divider cycles (one quotient bit each).
    """
    sc = stage_cycles(cfg)
    mid = 1 + sc["sigma"] if _const_sigma(cfg) else _sqrt_steps(cfg) + 1
    return 2 + sc["s"] + mid + cfg.recip_bits + 1


def channel_overhead_cycles(cfg: BNConfig) -> int:
    """Per-channel cycles the pipeline must hide: full rate needs ``n/lanes >= this``
    (the reciprocal plus the mean and dispersion pipelines: buffer ``c % 3`` is free again only
    when channel c has been normalized)."""
    sc = stage_cycles(cfg)
    return recip_cycles(cfg) + (1 + sc["stats"]) + (2 + sc["disp"])


def normalize_cuts(cfg: BNConfig) -> list[str]:
    """The register points of :class:`NormalizeStage` in pipeline order (``depth`` of them are
    used, chosen by :data:`NORMALIZE_PRIORITY`): the read beat ``x``, ``d = (x << frac) - mu``,
    the partial products of ``d*inv`` and their adder levels (the last is ``xhat``), those of
    ``gamma*xhat`` (the last is ``gx``), ``+ beta`` and the saturated ``y``."""
    _check_cfg(cfg)
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


def _check_depth(cfg, depth):
    lo, hi = normalize_depth_range(cfg)
    if depth is None:
        return hi
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise TypeError(f"depth={depth!r} must be an int")
    if not lo <= depth <= hi:
        raise ValueError(f"depth={depth} is out of range [{lo}, {hi}] for this config")
    return depth


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
    _check_cfg(cfg)
    depth = _check_depth(cfg, depth)
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
    return channel_overhead_cycles(cfg) + _check_depth(cfg, depth)


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


def stage_payloads(cfg: BNConfig) -> dict:
    """Payload shapes of the stage streams: ``{stage: (input payload, output payload)}``.

    ``stats``: a beat (``x``, lanes of ``signed(width)``; ``first``/``last`` of the channel) ->
    ``mu`` (``signed(mean_bits)``); ``disp``: a beat with its channel's ``mu`` -> the dispersion sum
    (``unsigned(disp_sum_bits)``); ``recip``: the dispersion sum -> ``s``, ``sigma``, ``inv``
    (``disp_bits``, ``sigma_bits``, ``inv_bits``); ``normalize``: a beat with its channel's ``mu``,
    ``inv``, ``gamma``, ``beta`` -> y (lanes of ``signed(out_width)``, the unit's ``o`` payload).
    """
    _check_cfg(cfg)
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


def _stage_ports(cfg, stage):
    """``i``/``o`` stream members of ``stage`` (:func:`stage_payloads`)."""
    pi, po = stage_payloads(cfg)[stage]
    return {"i": In(stream.Signature(pi)), "o": Out(stream.Signature(po))}


# ---------------------------------------------------------------------------------------------
# stages: each a wiring.Component with an input stream ``i`` and an output stream ``o``
#
# The statistics, dispersion and reciprocal-output streams are *tied-ready*: the stage (or its
# consumer) runs freely and never stalls, so ``i.ready`` is driven high and ``o.ready`` is not
# read. A real handshake there would need a skid register per stage, i.e. one more cycle or a
# ready path through the pipelines; the unit's slot registers (three buffers) are what absorbs
# the rate difference instead. The two streams that carry backpressure for real are the
# reciprocal's input (ready = idle) and both sides of normalize (ready = the pipeline advances).
# (``stream.Signature(always_ready=True)`` would say the same in the type, but its ``ready`` is a
# constant, which the per-stage synthesis harness cannot drive.)

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
        mark its first and last beat. Tied-ready: ``i.ready`` is always 1 (every valid beat is
        taken; no backpressure).
    o : Out(stream.Signature(signed(mean_bits)))
        One transfer per channel: ``valid`` is high for one cycle, ``stage_cycles(cfg)["stats"]``
        cycles after the ``last`` beat, with ``mu`` as payload (combinational from the last
        divider register: a shift and a constant subtract). ``o.ready`` is not read (the consumer
        takes every record). A new channel may start at once.

    Latency: ``stage_cycles(cfg)["stats"] = 1 + lane_tree + 1 + div_round registers``.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__(_stage_ports(cfg, "stats"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pipe = Pipe(m, prefix="st")
        sc = stage_cycles(cfg)
        beat = self.i.payload
        m.d.comb += self.i.ready.eq(1)
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
        p = _mean_params(cfg)
        m.d.comb += self.o.payload.eq(_div_round_pipe(pipe, total.shift_left(cfg.frac), p))
        m.d.comb += self.o.valid.eq(pipe.delay(done1, _div_round_cycles(signed(cfg.sum_bits + cfg.frac), p), "done"))
        return m


class DispersionStage(wiring.Component):
    """The dispersion sum of a channel: ``sum |d|`` (L1), ``sum d*d`` (L2) or ``max d - min d``
    (range), d = (x << frac) - mu.

    L1 uses a sign/abs datapath (a subtract, a conditional negate, an add): no multiplier. L2 squares
    every deviation (``lanes`` multipliers of ``dev_bits`` x ``dev_bits``, split into MULT18X18D
    partial products when wider than 18 bits). Range BN compares (a running max and min).
    Pipelined: d, |d| or d*d (products and adder levels), the lane adder levels and the running sum
    are registers; no enable.

    Ports
    -----
    i : In(stream.Signature(StructLayout(x, mu, first, last)))
        A beat (``ArrayLayout(signed(width), lanes)``) with its channel's mean
        (``signed(mean_bits)``) and the channel's first/last markers. Tied-ready (``i.ready`` = 1).
    o : Out(stream.Signature(unsigned(disp_sum_bits)))
        ``valid`` (a register) is high for one cycle, ``stage_cycles(cfg)["disp"]`` cycles after
        the ``last`` beat; the payload holds the channel's sum from then until the next one.
        ``o.ready`` is not read.

    Latency: ``stage_cycles(cfg)["disp"] = 1 (d) + operator (1, or the d*d multiply) + lane_tree + 1``.
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__(_stage_ports(cfg, "disp"))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        pipe = Pipe(m, prefix="dp")
        beat = self.i.payload
        m.d.comb += self.i.ready.eq(1)
        terms = []
        for k in range(cfg.lanes):
            d = Signal(signed(cfg.dev_bits), name=f"d{k}")
            m.d.sync += d.eq(beat.x[k].shift_left(cfg.frac) - beat.mu)
            if cfg.norm == "l1":
                t = Signal(unsigned(cfg.dev_bits), name=f"absd{k}")
                m.d.sync += t.eq(Mux(d[-1], -d, d))            # sign/abs
            elif cfg.norm == "range":
                t = Signal(signed(cfg.dev_bits), name=f"rd{k}")
                m.d.sync += t.eq(d)                            # max/min need no operator
            else:
                t = Signal(unsigned(2 * (cfg.dev_bits - 1) + 1), name=f"sqd{k}")
                m.d.comb += t.eq(pipe.mul(d, d, f"sq{k}"))     # square
            terms.append(t)
        sc = stage_cycles(cfg)
        lat = sc["disp"] - 1 - sc["lane_tree"]      # d and the operator
        valid, first, last = (pipe.delay(v, lat, n) for v, n in
                              ((self.i.valid, "v"), (beat.first, "f"), (beat.last, "l")))
        done = Signal()
        m.d.comb += self.o.valid.eq(done)
        if cfg.norm == "range":
            return self._range(m, pipe, terms, valid, first, last, done)
        tree = pipe.add_tree(terms, "lanes")
        valid, first, last = (pipe.delay(v, sc["lane_tree"], "t") for v in (valid, first, last))
        acc = Signal(unsigned(cfg.disp_sum_bits))
        m.d.sync += done.eq(valid & last)
        with m.If(valid):
            m.d.sync += acc.eq(Mux(first, 0, acc) + tree)
        m.d.comb += self.o.payload.eq(acc)
        return m

    def _range(self, m, pipe, terms, valid, first, last, done):
        # Range BN: comparators only. The lanes' max and min (a comparator chain, registered
        # through the same number of levels as the L1/L2 adder tree, so the stage latency is
        # shared), then a running max and min; D = max - min.
        cfg = self.cfg
        lt = stage_cycles(cfg)["lane_tree"]
        hi, lo = terms[0], terms[0]
        for t in terms[1:]:
            hi, lo = Mux(t > hi, t, hi), Mux(t < lo, t, lo)
        hi = pipe.delay(hi, lt, "mx") if lt else hi
        lo = pipe.delay(lo, lt, "mn") if lt else lo
        valid, first, last = (pipe.delay(v, lt, "t") for v in (valid, first, last))
        amax = Signal(signed(cfg.dev_bits), name="amax")   # (a tuple assignment left it unnamed)
        amin = Signal(signed(cfg.dev_bits), name="amin")
        m.d.sync += done.eq(valid & last)
        with m.If(valid):
            m.d.sync += [amax.eq(Mux(first | (hi > amax), hi, amax)),
                         amin.eq(Mux(first | (lo < amin), lo, amin))]
        m.d.comb += self.o.payload.eq(amax - amin)
        return m


class RecipStage(wiring.Component):
    """Per-channel scalars from the dispersion sum: ``s``, ``sigma`` and ``inv``.

    ``s = div_round(D, n)`` (constant add, multiply, shift; pipelined, ``stage_cycles()["s"]``
    registers; range BN: ``s = D``); the registry's ``sigma_kind`` chooses sigma: ``"const"`` (L1,
    range) ``sigma = rnd(s * K, c_bits) + eps`` (a pipelined constant multiply), ``"sqrt"`` (L2)
    ``sigma = isqrt(s) + eps`` by a restoring square root, one result bit per cycle; both:
    ``inv = floor(2**recip_bits / sigma)`` by a restoring divider, one quotient bit per cycle (the
    dividend is a constant power of two). Each square-root and divider step is one subtract whose
    borrow is the comparison.

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
        so a new transfer may come with ``o.valid``. Tied-ready: ``o.ready`` is not read.

    Latency: :func:`recip_cycles` (``2 + s + (1 + sigma | ceil(disp_bits/2) + 1) + recip_bits + 1``).
    """

    def __init__(self, cfg: BNConfig):
        _check_cfg(cfg)
        self.cfg = cfg
        super().__init__({**_stage_ports(cfg, "recip"), "hold": In(1)})

    def elaborate(self, platform):
        # A small FSM: LATCH -> MEAN (wait for the s pipeline) -> (SIGMA (wait for the sigma
        # pipeline) | SQRT x k) -> DIV x (R+1) -> IDLE. The pipelines run freely from the
        # registers they read, which hold during the wait.
        m = Module()
        cfg = self.cfg
        r = cfg.recip_bits
        sc = stage_cycles(cfg)
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
        s_new = dsum if cfg.norm == "range" else _div_round_pipe(pipe, dsum, _s_params(cfg))
        wait = Signal(range(max(sc["s"], sc["sigma"]) + 1))
        cnt = Signal(range(max(r + 1, _sqrt_steps(cfg)) + 1))
        rem = Signal(unsigned(cfg.sigma_bits + 1))     # divider remainder < sigma, one bit to shift
        q = Signal(unsigned(cfg.inv_bits))
        div_first = Signal()
        m.d.sync += done.eq(0)
        # the divider step runs every cycle whatever the state (its registers are only read in
        # DIV): no state decoding on its path; div_first starts it (remainder 0, dividend bit 1)
        m.d.sync += div_first.eq(0)
        cur = Signal(unsigned(cfg.sigma_bits + 1))
        diff = Signal(signed(cfg.sigma_bits + 2))
        m.d.comb += [cur.eq(Mux(div_first, 1, rem << 1)),   # the dividend 2**R: one 1, then 0s
                     diff.eq(cur - sigma)]
        ge = ~diff[-1]
        nq = (q << 1) | ge                                   # R + 1 steps shift every old bit out
        m.d.sync += [rem.eq(Mux(ge, diff[:cfg.sigma_bits + 1], cur)), q.eq(nq)]
        if _const_sigma(cfg):
            sig_new = pipe.mul(s, _sigma_const(cfg), "sig", add=_sigma_round(cfg))
        else:
            k = _sqrt_steps(cfg)
            v = Signal(unsigned(2 * k))                 # radicand, consumed two bits per step
            root = Signal(unsigned(k))
            srem = Signal(unsigned(k + 2))              # remainder <= 2*root
            # the square-root step also runs every cycle (read in SQRT only); sq_load starts it:
            # radicand s, root 0, remainder 0. s is registered the cycle sq_load is set.
            sq_load = Signal()
            m.d.sync += sq_load.eq(0)
            vv = Mux(sq_load, s, v)
            rt = Mux(sq_load, 0, root)
            cur = Signal(unsigned(k + 2))
            diff = Signal(signed(k + 3))
            m.d.comb += [cur.eq((Mux(sq_load, 0, srem) << 2) | vv[2 * k - 2:]),
                         diff.eq(cur - ((rt << 2) | 1))]
            ge = ~diff[-1]
            m.d.sync += [srem.eq(Mux(ge, diff[:k + 2], cur)), root.eq(Mux(ge, (rt << 1) | 1, rt << 1)),
                         v.eq(vv << 2)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [dsum.eq(self.i.payload), wait.eq(sc["s"])]
                    m.next = "MEAN"
            with m.State("MEAN"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += s.eq(s_new)
                    if _const_sigma(cfg):
                        m.d.sync += wait.eq(sc["sigma"])
                        m.next = "SIGMA"
                    else:
                        m.d.sync += [sq_load.eq(1), cnt.eq(k - 1)]
                        m.next = "SQRT"
            if _const_sigma(cfg):
                with m.State("SIGMA"):
                    m.d.sync += wait.eq(wait - 1)
                    with m.If(wait == 0):
                        m.d.sync += [sigma.eq((sig_new >> cfg.c_bits) + cfg.eps), div_first.eq(1), cnt.eq(0)]
                        m.next = "DIV"
            else:
                with m.State("SQRT"):
                    m.d.sync += cnt.eq(cnt - 1)
                    with m.If(cnt == 0):
                        m.next = "SIGMA2"
                with m.State("SIGMA2"):         # + eps in its own cycle, after the last root bit
                    m.d.sync += [sigma.eq(root + cfg.eps), div_first.eq(1), cnt.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == r):
                    m.d.sync += [inv.eq(nq), done.eq(1)]
                    m.next = "IDLE"
        m.d.comb += self.i.ready.eq(fsm.ongoing("IDLE") & ~self.hold)
        return m


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
        _check_cfg(cfg)
        self.cfg = cfg
        self.depth = _check_depth(cfg, depth)
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

        def move(on):
            for key in side:
                side[key] = pipe.reg(side[key], key, cut=on)

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
        return m


def bn_stages(cfg: BNConfig, *, depth: int | None = None) -> dict:
    """Fresh instances of the four stages for ``cfg``: ``stats``, ``disp``, ``recip``, ``normalize``
    (``depth``: the normalize pipeline depth)."""
    _check_cfg(cfg)
    return {"stats": StatsStage(cfg), "disp": DispersionStage(cfg), "recip": RecipStage(cfg),
            "normalize": NormalizeStage(cfg, depth=depth)}


# ---------------------------------------------------------------------------------------------
# the unit

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

    @classmethod
    def _check_args(cls, cfg, *, depth: int | None = None):
        _check_cfg(cfg, cls.norm, cls.__name__)
        _check_depth(cfg, depth)

    def __init__(self, cfg: BNConfig, *, depth: int | None = None):
        self.cfg = cfg
        self.depth = _check_depth(cfg, depth)
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
        m.submodules.normalize = nz = NormalizeStage(cfg, depth=self.depth)
        sc = stage_cycles(cfg)
        # The engines below talk to the stages through stream interfaces joined with
        # wiring.connect: to_* feed a stage's input, from_* take its output (stage_payloads).
        to_st, to_dp, to_rc, to_nz = (stream.Signature(stage_payloads(cfg)[k][0]).create(path=(f"to_{k}",))
                                      for k in ("stats", "disp", "recip", "normalize"))
        from_st, from_dp, from_rc = (c.o.signature.flip().create(path=(f"from_{k}",))
                                     for k, c in (("stats", st), ("disp", dp), ("recip", rc)))
        for a, b in ((to_st, st.i), (to_dp, dp.i), (to_rc, rc.i), (to_nz, nz.i),
                     (st.o, from_st), (dp.o, from_dp), (rc.o, from_rc)):
            wiring.connect(m, a, b)
        wiring.connect(m, nz.o, wiring.flipped(self.o))
        # the tied-ready outputs: every record is taken the cycle it is valid
        m.d.comb += [from_st.ready.eq(1), from_dp.ready.eq(1), from_rc.ready.eq(1)]
        pipe = Pipe(m, prefix="slot")

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
            m.d.sync += [gamma_s[g_slot].eq(g_gamma), beta_s[g_slot].eq(g_beta)]
        wa1 = Signal(range(nb + 2), init=1)    # always wa + 1 (no adder before the comparison)
        with m.If(take):
            m.d.sync += [wa.eq(Mux(last, 0, wa + 1)), wa1.eq(Mux(last, 1, wa + 2)),
                         first.eq(last), last.eq(Mux(last, nb == 1, wa == nb - 2))]
            with m.If(last):
                m.d.sync += rs.eq(nxt(rs))
        mslot = pipe.delay(rs, sc["stats"], "mslot")     # the slot of the channel whose mu is done
        with m.If(from_st.valid):
            m.d.sync += [mu_s[mslot].eq(from_st.payload), mu_ok[mslot].eq(1)]

        # --- dispersion -----------------------------------------------------------------------
        ds = Signal(range(3))
        dra = Signal(range(nb))
        dact = Signal()
        dv1, dfirst1, dlast1 = Signal(), Signal(), Signal()
        dslot1 = Signal(range(3))
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
        m.d.comb += [to_dp.payload.x.eq(_pick(dslot1, [p.data.as_value() for p in dps])),
                     to_dp.payload.mu.eq(dmu1), to_dp.payload.first.eq(dfirst1),
                     to_dp.payload.last.eq(dlast1), to_dp.valid.eq(dv1)]
        dslot2 = pipe.delay(dslot1, sc["disp"], "dslot")    # the slot whose sum is done
        with m.If(from_dp.valid):
            m.d.sync += [dsum_s[dslot2].eq(from_dp.payload), d_ok[dslot2].eq(1)]

        # --- reciprocal -----------------------------------------------------------------------
        cs = Signal(range(3))
        rslot = Signal(range(3))
        chan = Signal(range(cfg.channels))
        # Stream rule on stats: a record holds until taken. A finished record that finds the
        # stats register still occupied waits (rec_wait; s, sigma, inv stay in the reciprocal
        # stage, mu is kept here) and no reciprocal starts meanwhile. With stats.ready high
        # nothing ever waits, so the timing is that of bn_latency_cycles.
        stats_free = ~self.stats.valid | self.stats.ready
        rec_wait = Signal()
        rec_mu = Signal(signed(cfg.mean_bits))
        # to_rc: valid holds until taken (d_ok[cs] clears, cs moves only on the transfer); the
        # stats register's state goes in as hold, so it gates ready, not valid
        start = to_rc.valid & to_rc.ready
        m.d.comb += [to_rc.valid.eq(_pick(cs, d_ok)), to_rc.payload.eq(_pick(cs, dsum_s)),
                     rc.hold.eq(rec_wait | (from_rc.valid & ~stats_free))]
        with m.If(start):
            m.d.sync += [d_ok[cs].eq(0), rslot.eq(cs), cs.eq(nxt(cs))]
        with m.If(self.stats.ready):
            m.d.sync += self.stats.valid.eq(0)
        rec = from_rc.payload
        with m.If(from_rc.valid):
            m.d.sync += [inv_s[rslot].eq(rec.inv), inv_ok[rslot].eq(1)]
            with m.If(~stats_free):
                m.d.sync += [rec_wait.eq(1), rec_mu.eq(_pick(rslot, mu_s))]
        with m.If((from_rc.valid | rec_wait) & stats_free):
            m.d.sync += [
                rec_wait.eq(0),
                self.stats.valid.eq(1),
                self.stats.payload.channel.eq(chan),
                self.stats.payload.mu.eq(Mux(rec_wait, rec_mu, _pick(rslot, mu_s))),
                self.stats.payload.s.eq(rec.s),
                self.stats.payload.sigma.eq(rec.sigma),
                self.stats.payload.inv.eq(rec.inv),
                chan.eq(Mux(chan == cfg.channels - 1, 0, chan + 1)),
            ]

        # --- normalize ------------------------------------------------------------------------
        advance = to_nz.ready             # = ~o.valid | o.ready: the normalize pipeline advances
        ncan = nact | _pick(ns, inv_ok)
        issue = advance & ncan
        nlast = Signal(init=int(nb == 1))   # nra == nb - 1, as a register
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
            m.d.sync += [nslot1.eq(ns), nra.eq(Mux(nlast, 0, nra + 1)), nact.eq(~nlast),
                         nlast.eq(Mux(nlast, nb == 1, nra == nb - 2))]
            with m.If(nra == 0):
                m.d.sync += [nmu1.eq(_pick(ns, mu_s)), ninv1.eq(_pick(ns, inv_s)), ngamma1.eq(_pick(ns, gamma_s)),
                             nbeta1.eq(_pick(ns, beta_s)), inv_ok[ns].eq(0)]
            with m.If(nlast):
                m.d.sync += ns.eq(nxt(ns))
        m.d.sync += occ.eq(occ + (take & first) - (issue & nlast))
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
        # to_nz keeps the stream rule: nv1, the read data (read enable = advance) and the channel's
        # registers change only on an advancing cycle, i.e. when to_nz.ready is high
        m.d.comb += [
            to_nz.payload.x.eq(_pick(nslot1, [p.data.as_value() for p in nps])),
            to_nz.payload.mu.eq(nmu1), to_nz.payload.inv.eq(ninv1), to_nz.payload.gamma.eq(ngamma1),
            to_nz.payload.beta.eq(nbeta1), to_nz.valid.eq(nv1),
        ]
        return m


class L1BNUnit(BNUnit):
    __doc__ = ("L1-BN forward: the dispersion is sum |x - mu| (sign/abs datapath, no multiplier), "
               "sigma = c * mean|d| + eps (one constant multiply).\n\n" + BNUnit.__doc__)
    norm = "l1"


class RangeBNUnit(BNUnit):
    """Range-BN forward unit (comparators for max/min, one constant multiply by C(n) for sigma;
    docs/arith/range_bn.md)."""

    norm = "range"


class L2BNUnit(BNUnit):
    __doc__ = ("L2-BN forward baseline: the dispersion is sum (x - mu)^2 (a multiplier per lane), "
               "sigma = isqrt(mean d^2) + eps (restoring square root).\n\n" + BNUnit.__doc__)
    norm = "l2"


def bn_unit_for(cfg: BNConfig, *, depth: int | None = None) -> BNUnit:
    """A fresh forward unit for ``cfg.norm``, the class the norm registry names
    (:class:`L1BNUnit`, :class:`L2BNUnit`, :class:`RangeBNUnit`; ``depth``: the normalize pipeline
    depth, default the deepest)."""
    _check_cfg(cfg)
    return resolve(cfg.norm_spec.hw_unit)(cfg, depth=depth)
