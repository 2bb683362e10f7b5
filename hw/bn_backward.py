"""Training-mode BN backward units: L1 (sign-based gradient), the L2 baseline and range BN
(gradient through the max and min).

All implement :func:`l1bn.spec.reference.bn_backward.bn_backward` bit for bit (the spec;
docs/arith/bn_backward.md). They share one skeleton, :class:`_BNBackwardUnit`, and differ only in
what pass 1 keeps besides the shared sums, the per-channel constants and the per-element term of
the second pass, which each norm keeps in its own module (:class:`~l1bn.hw.bn_l1.L1BackwardTerm`:
one of two per-channel constants chosen by the sign of d_i, a comparator and a mux, or with
``sign_in=True`` the forward's stored sign bit and a mux; :class:`~l1bn.hw.bn_l2.L2BackwardTerm`:
xhat_i = d_i * inv rebuilt by a multiply and multiplied by mean(dy*xhat), a second multiply;
:class:`~l1bn.hw.bn_range.RangeBackwardTerm`: a running max and min of x with their tie counts in
pass 1, two serial divisions by the counts per channel, two equality compares and a select in
pass 2; the interface is :mod:`l1bn.hw.bn_backward_term`), named by the norm's unit class (the
class the registry's ``hw_backward`` names).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, Pipe, mul_latency
from l1bn.hw.arith import rnd as _rnd
from l1bn.hw.arith import sat as _sat
from l1bn.hw.bn_backward_term import backward_shapes, div_const, half, shr
from l1bn.hw.bn_l1 import L1BackwardTerm
from l1bn.hw.bn_l2 import L2BackwardTerm
from l1bn.hw.bn_range import RangeBackwardTerm
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.norms import NORMS, norm_spec, resolve

__all__ = ["L1BNBackwardUnit", "L2BNBackwardUnit", "RangeBNBackwardUnit", "stored_state_bits", "backward_latency_cycles",
           "per_channel_cycles", "pass2_cycles", "backward_term", "backward_unit_class", "backward_unit_for"]


def backward_unit_class(norm: str):
    """The backward unit class the registry's ``hw_backward`` names for ``norm``; ``ValueError``
    for a norm without a backward unit."""
    spec = norm_spec(norm)
    if not spec.hw_backward:
        have = [nm for nm, s in NORMS.items() if s.hw_backward]
        raise ValueError(f"norm={norm!r} has no backward unit; the norms with one are "
                         f"{', '.join(map(repr, have))}")
    return resolve(spec.hw_backward)


def backward_unit_for(cfg: BNBackwardConfig, *, sign_in: bool = False):
    """A fresh backward unit for ``cfg.bn.norm``, the class the registry names (``sign_in``: see
    the unit)."""
    return backward_unit_class(cfg.bn.norm)(cfg, sign_in=sign_in)


def backward_term(cfg: BNBackwardConfig):
    """The backward term of ``cfg.bn.norm``: the ``term`` class of the backward unit the
    registry's ``hw_backward`` names (:class:`~l1bn.hw.bn_backward_term.BackwardTerm`), for ``cfg``;
    ``ValueError`` for a norm without a backward unit."""
    return backward_unit_class(cfg.bn.norm).term(cfg)


def _step_cycles(cfg, term) -> dict:
    """Cycles of each per-channel step after the last pass-1 beat (the FSM's waits): ``drain``
    (the last beat reaches the accumulators), then each step's pipeline latency: ``sdyd``
    (mu*sum_dy), ``h`` (rnd(sdyd)*inv and mean(dy)), ``div`` (gamma*inv and the norm's divisions
    by n), ``const`` (the norm's constants, e.g. L1's two mh*(+-1 - mean(sgn)); 0 for none)."""
    b, fr, r, k, t = cfg.bn, cfg.inner_frac, cfg.bn.recip_bits, cfg.div_bits, cfg.h_preshift
    sh = backward_shapes(cfg)
    h_in = _rnd(Signal(sh["sdyd"]), t).shape()
    mdy_in = Signal(sh["sum_dy"]).shift_left(fr).shape()
    return {
        "drain": 1 + mul_latency(signed(cfg.grad_width), signed(b.width)),
        "sdyd": mul_latency(sh["mu"], sh["sum_dy"]),
        "h": max(1 + mul_latency(h_in, sh["inv"], add=half(r - fr - t)),
                 mul_latency(mdy_in, div_const(cfg), add=half(k))),
        "div": max([mul_latency(sh["gamma"], sh["inv"])] + term.div_cycles()),
        "const": term.const_cycles(),
    }


def _build_pass2(p2, cfg, term, sign_in, *, x, dy, neg, take, c):
    """The pass-2 datapath on :class:`Pipe` ``p2``: ``(dx before saturation, its valid, register
    stages so far)``: the beat registered, the norm's term ``u`` (``term.pass2``), then
    ``rnd(u * gamma*inv)``. Used by the unit and, on throwaway signals, by :func:`_pass2_cycles`."""
    b, fr, r = cfg.bn, cfg.inner_frac, cfg.bn.recip_bits
    xs, ds, vs = p2.reg(x, "x"), p2.reg(dy, "dy"), p2.reg(take, "v")
    u, vs, n = term.pass2(p2, xs=xs, ds=ds, vs=vs, neg=neg, c=c, sign_in=sign_in)
    n += 1
    shift = fr + b.gamma_frac + r - b.frac - cfg.grad_out_frac
    lat = mul_latency(u.shape(), c["gi"].shape(), add=half(shift))
    dx = shr(p2.mul(u, c["gi"], "dx", add=half(shift)), shift)
    return dx, p2.delay(vs, lat, "v"), n + lat


def _pass2_cycles(cfg, term) -> int:
    """Register stages of pass 2, from an accepted beat to dx on ``o`` (the output register
    included): :func:`_build_pass2` on throwaway signals, so the count is the hardware's."""
    from amaranth import Fragment

    b, w = cfg.bn, cfg.widths
    sh = backward_shapes(cfg)
    c = {"mu": Signal(sh["mu"]), "inv": Signal(sh["inv"]), "mdy": Signal(signed(w["sum_dy"] + cfg.inner_frac + 1)),
         "mh": Signal(sh["mh"]), "gi": Signal(sh["gi"]), **{k: Signal(v.shape()) for k, v in term.regs.items()}}
    m = Module()
    _, _, n = _build_pass2(Pipe(m), cfg, term, term.takes_sign, x=Signal(signed(b.width)),
                           dy=Signal(signed(cfg.grad_width)), neg=Signal(), take=Signal(), c=c)
    Fragment.get(m, None)    # elaborated, so that it is not reported as an unused design
    return n + 1


def pass2_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles from an accepted pass-2 beat to its dx on ``o`` (the pipeline depth, output
    register included)."""
    return _pass2_cycles(cfg, backward_term(cfg))


def per_channel_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles between the last beat of pass 1 and the first beat of pass 2 with no stalls: the
    drain, each per-channel step's pipeline plus one cycle to latch it, and one cycle presenting
    (dgamma, dbeta) (was 5 before the steps were pipelined)."""
    st = _step_cycles(cfg, backward_term(cfg))
    return st["drain"] + (st["sdyd"] + 1) + (st["h"] + 1) + (st["div"] + 1) + (st["const"] + 1) + 1


def stored_state_bits(cfg: BNBackwardConfig) -> dict:
    """Bits per element kept from the forward pass for each unit, and read in each pass:
    ``<norm>`` (pass 1) and ``<norm>_<what>`` (the norm's :meth:`BackwardTerm.stored_bits`).

    Both units need x (``width`` bits) per element: dgamma = sum(dy * xhat) is a sum over elements
    of a value that depends on x, so no per-channel summary suffices. The difference is pass 2:
    L1 needs only sign(d_i) (1 bit; recomputed from x by one comparator, or with
    ``L1BNBackwardUnit(cfg, sign_in=True)`` the forward's stored bit), L2 needs xhat_i
    (recomputed from x by a multiply, or stored with xhat_frac + more bits).
    """
    out = {}
    for name, spec in NORMS.items():          # in registry order, the norms with a backward unit
        if spec.hw_backward:
            out[name] = cfg.bn.width
            out.update({f"{name}_{k}": v for k, v in resolve(spec.hw_backward).term.stored_bits(cfg).items()})
    return out


def backward_latency_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles from the first accepted beat of a batch to the last dx beat, no stalls (lanes = 1):
    per channel, n beats of pass 1, :func:`per_channel_cycles` P, n beats of pass 2; dx leaves
    the pass-2 pipeline D = ``_pass2_cycles`` cycles after its beat. Pass 2 of a channel starts
    only when the previous channel's dx have all left (its constants are then replaced), which
    costs ``max(0, D + 2 - n - P)`` more cycles per channel after the first (the check is a
    register, one cycle late)."""
    b = cfg.bn
    p, d = per_channel_cycles(cfg), pass2_cycles(cfg)
    extra = max(0, d + 2 - b.n - p)
    return b.channels * (2 * b.n + p) + (b.channels - 1) * extra + d


class _BNBackwardUnit(CheckedComponent):
    """BN backward unit for one ``BNBackwardConfig`` (``cfg.bn.lanes`` must be 1).

    Parameters
    ----------
    cfg : BNBackwardConfig
    sign_in : bool, keyword-only (L1 only; default False)
        Take sign(d_i) from the input field ``neg`` instead of computing it from x and mu. Then
        pass 2 does not read x, so the forward only has to keep 1 bit per element for pass 2.
        ``sign_in=False`` generates exactly the Verilog of the unit without this option.

    Interface
    ---------
    i : In(stream.Signature(StructLayout({"x": signed(width), "dy": signed(grad_width)})))
        Per channel, the channel's n elements twice: pass 1 (statistics) then pass 2 (dx).
        With ``sign_in`` the layout is ``{"x", "dy", "neg": unsigned(1)}``: ``neg`` = 1 when
        d_i = (x_i << frac) - mu < 0 (the reference's ``BNBackwardResult.sign``), read in both
        passes (it feeds the count of negatives in pass 1 and the select in pass 2); ``x`` is
        read in pass 1 only and is "don't care" in pass 2.
    mu : In(signed(width + frac + 1)), inv : In(unsigned(recip_bits + 1)),
    gamma : In(signed(gamma_width))
        The channel's forward statistics and gamma, latched with the first beat of pass 1.
    o : Out(stream.Signature(signed(grad_out_width)))
        dx, one per pass-2 beat, in order (``grad_out_frac`` fractional bits, saturated).
    g : Out(stream.Signature(StructLayout({"dgamma": signed(h), "dbeta": signed(sum_dy)})))
        Per channel, after pass 1; pass 2 starts once it is accepted.

    Schedule and latency
    --------------------
    Pass 1 accepts one beat per cycle (three accumulators: sum dy, sum dy*x, count of d < 0);
    then :func:`per_channel_cycles` cycles of per-channel steps (sum dy*d; H and mean(dy); the
    divisions by n and gamma*inv; the norm's constants; presenting g); then pass 2 accepts a beat
    whenever its pipeline advances, dx appears :func:`pass2_cycles` cycles after its beat. No
    stalls: :func:`backward_latency_cycles` cycles per batch.

    Bit widths: every register is sized from ``cfg.widths`` (see ``BNBackwardConfig``); the
    arithmetic is the reference's, stage for stage.
    """

    norm = None
    #: the norm's backward term (:class:`~l1bn.hw.bn_backward_term.BackwardTerm` subclass)
    term = None

    @classmethod
    def _check_args(cls, cfg, *, sign_in: bool = False):
        if not isinstance(sign_in, bool):
            raise TypeError(f"sign_in={sign_in!r} must be a bool")
        if sign_in and not cls.term.takes_sign:
            takers = [p.rpartition(":")[2] for p in (s.hw_backward for s in NORMS.values())
                      if p and resolve(p).term.takes_sign]
            raise ValueError(f"sign_in=True is not supported by {cls.__name__}: {cls.term.no_sign_reason}; "
                             f"only {', '.join(takers)} takes sign_in")
        if not isinstance(cfg, BNBackwardConfig):
            raise TypeError(f"cfg={cfg!r} must be a BNBackwardConfig")
        if cfg.bn.norm != cls.norm:
            raise ValueError(f"cfg.bn.norm={cfg.bn.norm!r} does not match {cls.__name__} "
                             f"(needs {cls.norm!r})")
        if cfg.bn.lanes != 1:
            raise ValueError(f"lanes={cfg.bn.lanes} is not supported by the backward unit; allowed 1..1")

    def __init__(self, cfg: BNBackwardConfig, *, sign_in: bool = False):
        self.cfg = cfg
        self.sign_in = sign_in
        b, w = cfg.bn, cfg.widths
        fields = {"x": signed(b.width), "dy": signed(cfg.grad_width)}
        if sign_in:
            fields["neg"] = unsigned(1)
        self.in_layout = data.StructLayout(fields)
        self.g_layout = data.StructLayout({"dgamma": signed(w["h"]), "dbeta": signed(w["sum_dy"])})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "mu": In(signed(b.dev_bits)),
            "inv": In(unsigned(b.recip_bits + 1)),
            "gamma": In(signed(b.gamma_width)),
            "o": Out(stream.Signature(signed(cfg.grad_out_width))),
            "g": Out(stream.Signature(self.g_layout)),
        })

    def elaborate(self, platform):
        # Two passes over the channel: pass 1 reduces to per-channel scalars (a registered
        # input beat, registered sign and dy*x product, then the accumulators), a sequence of
        # per-channel steps turns them into constants (each a pipelined multiply the FSM waits
        # for, ``_step_cycles``), pass 2 is a pipeline stalled by ``o`` (the norm's term, then the
        # scale multiply u*gamma*inv). Each part is a method below; ``r`` holds the registers
        # they share.
        m = Module()
        term = self.term(self.cfg)
        r = self._registers()
        take1 = Signal()
        take2 = Signal()
        self._pass1(m, r, term, take1)
        new = self._steps(m, r, term)
        advance, c2 = self._pass2(m, r, term, take2)
        self._control(m, r, term, new, c2, take1, take2, advance)
        return m

    def _registers(self) -> dict:
        """The per-channel registers: the latched inputs (``mu``, ``inv``, ``gamma``), the beat
        counter (``first``, ``cnt``, ``last``), pass 1's sums, the steps' results and the FSM's
        wait counter (widths from ``cfg.widths``)."""
        cfg, b, w = self.cfg, self.cfg.bn, self.cfg.widths
        sh = backward_shapes(cfg)
        r = {"mu": Signal(sh["mu"], name="mu"), "inv": Signal(sh["inv"], name="inv"),
             "gamma": Signal(sh["gamma"], name="gamma"), "first": Signal(init=1, name="first"),
             "cnt": Signal(range(b.n), name="cnt"),
             "last": Signal(init=int(b.n == 1), name="last")}       # cnt == n - 1, as a register
        for name, shape in [("sum_dy", sh["sum_dy"]), ("sum_dyx", signed(w["sum_dyx"])), ("nneg", range(b.n + 1)),
                            ("sdyd", sh["sdyd"]), ("h", sh["h"]), ("mean_dy", signed(w["sum_dy"] + cfg.inner_frac + 1)),
                            ("mh", sh["mh"]), ("gi", sh["gi"])]:
            r[name] = Signal(shape, name=name)
        return r

    def _pass1(self, m, r, term, take1):
        """Pass 1: the input beat registered, the sign of d and dy*x registered (a pipelined
        multiply), then the accumulators sum dy, sum dy*x and the count of negatives; the norm's
        own pass-1 work (``term.pass1``) on the registered beat."""
        b = self.cfg.bn
        x, dy = self.i.payload.x, self.i.payload.dy
        p1 = Pipe(m, prefix="p1")
        xa, dya, va, fa = (p1.reg(v, nm) for v, nm in ((x, "x"), (dy, "dy"), (take1, "v"), (r["first"], "f")))
        term.pass1(m, x=xa, valid=va, first=fa)
        if self.sign_in:
            nega = p1.reg(self.i.payload.neg, "neg")
            negb = p1.reg(nega, "neg")
        else:
            negb = p1.reg(((xa.shift_left(b.frac) - r["mu"])[:b.dev_bits + 1]).as_signed()[-1], "neg")
        lat1 = mul_latency(dya.shape(), xa.shape())
        self.pass1_delay = 1 + lat1      # a pass-1 beat's handshake -> its accumulator update
        dyb, vb, fb = (p1.delay(v, lat1, nm) for v, nm in ((dya, "dy"), (va, "v"), (fa, "f")))
        negb = p1.delay(negb, lat1 - 1, "neg")
        dyx = p1.mul(dya, xa, "dyx")
        with m.If(vb):
            m.d.sync += [
                r["sum_dy"].eq(Mux(fb, 0, r["sum_dy"]) + dyb),
                r["sum_dyx"].eq(Mux(fb, 0, r["sum_dyx"]) + dyx),
                r["nneg"].eq(Mux(fb, 0, r["nneg"]) + negb),
            ]

    def _steps(self, m, r, term) -> dict:
        """The per-channel steps: free-running pipelines from registers held during the wait
        (sum dy*d, H, mean(dy), the norm's mh and constants, gamma*inv); returns the next value
        of each shared register, latched by :meth:`_control`."""
        cfg, b = self.cfg, self.cfg.bn
        fr, rb, k, t = cfg.inner_frac, b.recip_bits, cfg.div_bits, cfg.h_preshift
        pc = Pipe(m, prefix="pc")
        new = {"sdyd": r["sum_dyx"].shift_left(b.frac) - pc.mul(r["mu"], r["sum_dy"], "musdy")}
        h_in = pc.reg(_rnd(r["sdyd"], t), "hin")
        new["h"] = shr(pc.mul(h_in, r["inv"], "h", add=half(rb - fr - t)), rb - fr - t)
        new["mean_dy"] = shr(pc.mul(r["sum_dy"].shift_left(fr), div_const(cfg), "mdy", add=half(k)), k)
        new["mh"] = term.steps(m, pc, r)
        new["gi"] = pc.mul(r["gamma"], r["inv"], "gi")
        return new

    def _pass2(self, m, r, term, take2):
        """Pass 2: a pipeline that advances when dx can move (``o`` empty or taken), from the
        constants copied when the channel's pass 2 starts (returned, by name, for
        :meth:`_control` to load); dx saturated into the ``o`` register."""
        cfg = self.cfg
        advance = ~self.o.valid | self.o.ready
        p2 = Pipe(m, advance, prefix="p2")
        c = {"mu": Signal.like(r["mu"], name="mu2"), "inv": Signal.like(r["inv"], name="inv2"),
             **{key: Signal.like(v, name=f"{v.name}2") for key, v in
                (("mdy", r["mean_dy"]), ("mh", r["mh"]), ("gi", r["gi"]), *term.regs.items())}}
        dx, vs, _ = _build_pass2(p2, cfg, term, self.sign_in, x=self.i.payload.x, dy=self.i.payload.dy,
                                 neg=self.i.payload.neg if self.sign_in else None, take=take2, c=c)
        with m.If(advance):
            m.d.sync += [self.o.payload.eq(_sat(dx, cfg.grad_out_width)), self.o.valid.eq(vs)]
        return advance, c

    def _control(self, m, r, term, new, c2, take1, take2, advance):
        """The FSM: ACC (pass 1) -> DRAIN -> SDYD -> H -> DIV -> CONST (each waits for its
        step's pipeline, then latches its result) -> GRAD (presents g; pass 2 takes its
        constants when g is taken, once the previous channel's dx have all left) -> PASS2."""
        n = self.cfg.bn.n
        steps = _step_cycles(self.cfg, term)
        wait = Signal(range(max(steps.values()) + 2))
        inflight = Signal(range(_pass2_cycles(self.cfg, term) + 3))   # beats taken, dx not yet out
        m.d.sync += inflight.eq(inflight + take2 - (self.o.valid & self.o.ready))
        empty = Signal(init=1)        # inflight == 0, one cycle late (a register)
        m.d.sync += empty.eq(inflight == 0)
        wz = Signal()                 # wait == 0, as a register kept with wait
        cnt, last = r["cnt"], r["last"]

        def setw(v):
            m.d.sync += [wait.eq(v), wz.eq(v == 0)]

        def count():
            m.d.sync += [cnt.eq(Mux(last, 0, cnt + 1)), last.eq(Mux(last, n == 1, cnt == n - 2))]

        def step(state, nxt, loads=(), latch=None, after=None):
            """A wait state: when its pipeline is done, load ``loads`` (and the norm's ``latch``),
            start the wait of step ``after`` and go to ``nxt``."""
            with m.State(state):
                m.d.sync += [wait.eq(wait - 1), wz.eq(wait == 1)]
                with m.If(wz):
                    m.d.sync += [r[k].eq(new[k]) for k in loads]
                    if latch is not None:
                        latch(m)
                    if after is not None:
                        setw(steps[after])
                    m.next = nxt

        with m.FSM() as fsm:
            with m.State("ACC"):
                with m.If(self.i.valid):
                    with m.If(r["first"]):
                        m.d.sync += [r["mu"].eq(self.mu), r["inv"].eq(self.inv), r["gamma"].eq(self.gamma),
                                     r["first"].eq(0)]
                    count()
                    with m.If(last):
                        setw(steps["drain"] - 1)
                        m.next = "DRAIN"
            step("DRAIN", "SDYD", after="sdyd")        # the last beat reaches the accumulators
            step("SDYD", "H", ("sdyd",), after="h")
            step("H", "DIV", ("h", "mean_dy"), after="div")
            step("DIV", "CONST", ("mh", "gi"), term.latch_div, after="const")
            step("CONST", "GRAD", (), term.latch_const)
            with m.State("GRAD"):
                # pass 2 takes its constants here: the previous channel's dx have all left
                with m.If(self.g.valid & self.g.ready):
                    src = {"mu": r["mu"], "inv": r["inv"], "mdy": r["mean_dy"], "mh": r["mh"], "gi": r["gi"],
                           **term.regs}
                    m.d.sync += [c2[k].eq(src[k]) for k in c2]
                    m.next = "PASS2"
            with m.State("PASS2"):
                with m.If(take2):
                    count()
                    with m.If(last):
                        m.d.sync += r["first"].eq(1)
                        m.next = "ACC"
        # the registers the formal harness's invariants name (l1bn.sim.formal.backward)
        self.probes = {"acc_state": fsm.ongoing("ACC"), "first": r["first"], "cnt": cnt, "last": last,
                       "sum_dy": r["sum_dy"], "sum_dyx": r["sum_dyx"], "nneg": r["nneg"],
                       "pass1_delay": self.pass1_delay}
        m.d.comb += [
            take1.eq(fsm.ongoing("ACC") & self.i.valid),
            take2.eq(fsm.ongoing("PASS2") & self.i.valid & advance),
            self.i.ready.eq(fsm.ongoing("ACC") | (fsm.ongoing("PASS2") & advance)),
            self.g.valid.eq(fsm.ongoing("GRAD") & empty),
            self.g.payload.dgamma.eq(r["h"]),
            self.g.payload.dbeta.eq(r["sum_dy"]),
        ]


class L1BNBackwardUnit(_BNBackwardUnit):
    __doc__ = "L1-BN backward: pass 2 is a sign select between two per-channel constants.\n\n" + \
        _BNBackwardUnit.__doc__
    norm = "l1"
    term = L1BackwardTerm


class L2BNBackwardUnit(_BNBackwardUnit):
    __doc__ = ("L2-BN backward baseline: pass 2 rebuilds xhat_i (multiply) and scales it (multiply). "
               "``sign_in=True`` raises ValueError (pass 2 needs x).\n\n") + _BNBackwardUnit.__doc__
    norm = "l2"
    term = L2BackwardTerm


class RangeBNBackwardUnit(_BNBackwardUnit):
    __doc__ = ("Range-BN backward: the gradient through the max and min; pass 1 also keeps the "
               "channel's max and min of x and their tie counts, pass 2 compares x with them and "
               "selects a constant. ``sign_in=True`` raises ValueError (pass 2 needs x).\n\n"
               ) + _BNBackwardUnit.__doc__
    norm = "range"
    term = RangeBackwardTerm
