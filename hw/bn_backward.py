"""Training-mode BN backward units: L1 (sign-based gradient) and the L2 baseline.

Both implement :func:`l1bn.spec.reference.bn_backward.bn_backward` bit for bit (the spec;
docs/arith/bn_backward.md). They share one skeleton and differ only in the per-element term of
the second pass: L1 subtracts one of two per-channel constants chosen by the sign of d_i (a
comparator and a mux, or with ``sign_in=True`` the forward's stored sign bit and a mux); L2
rebuilds xhat_i = d_i * inv (a multiply) and multiplies it by mean(dy*xhat) (a second multiply).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, Pipe, mul_latency
from l1bn.hw.arith import rnd as _rnd
from l1bn.hw.arith import sat as _sat
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import c_const

__all__ = ["L1BNBackwardUnit", "L2BNBackwardUnit", "stored_state_bits", "backward_latency_cycles",
           "per_channel_cycles", "pass2_cycles"]

def _half(s: int) -> int:
    """The rounding constant of ``rnd(v, s)``: 2**(s-1) for s > 0, else 0."""
    return 1 << (s - 1) if s > 0 else 0


def _shr(v, s: int):
    """The shift of ``rnd(v, s)`` after its constant was added: ``v >> s`` or ``v << -s``."""
    return v >> s if s > 0 else v.shift_left(-s) if s < 0 else v


def _shapes(cfg):
    b, w = cfg.bn, cfg.widths
    return {
        "mu": signed(b.dev_bits), "inv": unsigned(b.recip_bits + 1), "gamma": signed(b.gamma_width),
        "sum_dy": signed(w["sum_dy"]), "sdyd": signed(w["sdyd"]), "h": signed(w["h"]),
        "mh": signed(w["hc"] - b.count_bits + 2), "u": signed(w["u"]),
        "gi": signed(w["gamma_inv"]),
    }


def _step_cycles(cfg, norm: str) -> dict:
    """Cycles of each per-channel step after the last pass-1 beat (the FSM's waits): ``drain``
    (the last beat reaches the accumulators), then each step's pipeline latency: ``sdyd``
    (mu*sum_dy), ``h`` (rnd(sdyd)*inv and mean(dy)), ``div`` (the constant divisions by n and
    gamma*inv), ``const`` (L1: the two constants mh*(+-1 - mean(sgn)))."""
    from amaranth import Signal

    b, fr, r, k, t = cfg.bn, cfg.inner_frac, cfg.bn.recip_bits, cfg.div_bits, cfg.h_preshift
    sh = _shapes(cfg)
    rc = ((1 << (k + 1)) // b.n + 1) >> 1
    h_in = _rnd(Signal(sh["sdyd"]), t).shape()
    mdy_in = Signal(sh["sum_dy"]).shift_left(fr).shape()
    div = [mul_latency(sh["gamma"], sh["inv"])]
    if norm == "l1":
        div += [mul_latency(sh["h"], c_const(b.c_bits) * rc, add=_half(k)),
                1 + mul_latency((b.n - 2 * Signal(range(b.n + 1))).shift_left(fr).shape(), rc, add=_half(k))]
        msgn = Signal(signed(fr + 3))
        const = 1 + max(mul_latency(sh["mh"], ((1 << fr) - msgn).shape(), add=_half(b.c_bits + fr)),
                        mul_latency(sh["mh"], (-(1 << fr) - msgn).shape(), add=_half(b.c_bits + fr)))
    else:
        div += [mul_latency(sh["h"], rc, add=_half(k))]
        const = 0
    return {
        "drain": 1 + mul_latency(signed(cfg.grad_width), signed(b.width)),
        "sdyd": mul_latency(sh["mu"], sh["sum_dy"]),
        "h": max(1 + mul_latency(h_in, sh["inv"], add=_half(r - fr - t)),
                 mul_latency(mdy_in, rc, add=_half(k))),
        "div": max(div),
        "const": const,
    }


def _build_pass2(p2, cfg, norm, sign_in, *, x, dy, neg, take, c):
    """The pass-2 datapath on :class:`Pipe` ``p2``: ``(dx before saturation, its valid, register
    stages so far)``. Used by the unit and, on throwaway signals, by :func:`_pass2_cycles`."""
    b, fr, r = cfg.bn, cfg.inner_frac, cfg.bn.recip_bits
    xs, ds, vs = p2.reg(x, "x"), p2.reg(dy, "dy"), p2.reg(take, "v")
    n = 1
    if norm == "l1":
        if sign_in:
            neg2 = p2.reg(p2.reg(neg, "neg"), "neg")
        else:
            neg2 = p2.reg(((xs.shift_left(b.frac) - c["mu"])[:b.dev_bits + 1]).as_signed()[-1], "neg")
        ds, vs = p2.reg(ds, "dy"), p2.reg(vs, "v")
        u = p2.reg(ds.shift_left(fr) - Mux(neg2, c["kn"], c["kp"]), "u")
        vs = p2.reg(vs, "v")
        n += 2
    else:
        d2 = p2.reg((xs.shift_left(b.frac) - c["mu"])[:b.dev_bits + 1].as_signed(), "d")
        ds, vs = p2.reg(ds, "dy"), p2.reg(vs, "v")
        s1 = r - b.xhat_frac
        lat = mul_latency(d2.shape(), c["inv"].shape(), add=_half(s1))
        xhat = _shr(p2.mul(d2, c["inv"], "xhat", add=_half(s1)), s1)
        ds, vs = p2.delay(ds, lat, "dy"), p2.delay(vs, lat, "v")
        lat2 = mul_latency(xhat.shape(), c["mh"].shape(), add=_half(b.xhat_frac))
        xm = _shr(p2.mul(xhat, c["mh"], "xm", add=_half(b.xhat_frac)), b.xhat_frac)
        # (dy << F) - mean(dy) while xhat*mean(dy*xhat) is multiplied: one subtract per stage
        dsm = p2.delay(ds.shift_left(fr) - c["mdy"], lat2, "dym")
        vs = p2.delay(vs, lat2, "v")
        u = p2.reg(dsm - xm, "u")
        vs = p2.reg(vs, "v")
        n += 2 + lat + lat2
    shift = fr + b.gamma_frac + r - b.frac - cfg.grad_out_frac
    lat = mul_latency(u.shape(), c["gi"].shape(), add=_half(shift))
    dx = _shr(p2.mul(u, c["gi"], "dx", add=_half(shift)), shift)
    return dx, p2.delay(vs, lat, "v"), n + lat


def _pass2_cycles(cfg, norm: str) -> int:
    """Register stages of pass 2, from an accepted beat to dx on ``o`` (the output register
    included): :func:`_build_pass2` on throwaway signals, so the count is the hardware's."""
    from amaranth import Fragment, Module

    b, w = cfg.bn, cfg.widths
    sh = _shapes(cfg)
    c = {"mu": Signal(sh["mu"]), "inv": Signal(sh["inv"]), "mdy": Signal(signed(w["sum_dy"] + cfg.inner_frac + 1)),
         "mh": Signal(sh["mh"]), "gi": Signal(sh["gi"]), "kp": Signal(sh["u"]), "kn": Signal(sh["u"])}
    m = Module()
    _, _, n = _build_pass2(Pipe(m), cfg, norm, norm == "l1", x=Signal(signed(b.width)),
                           dy=Signal(signed(cfg.grad_width)), neg=Signal(), take=Signal(), c=c)
    Fragment.get(m, None)    # elaborated, so that it is not reported as an unused design
    return n + 1


def pass2_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles from an accepted pass-2 beat to its dx on ``o`` (the pipeline depth, output
    register included)."""
    return _pass2_cycles(cfg, cfg.bn.norm)


def per_channel_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles between the last beat of pass 1 and the first beat of pass 2 with no stalls: the
    drain, each per-channel step's pipeline plus one cycle to latch it, and one cycle presenting
    (dgamma, dbeta) (was 5 before the steps were pipelined)."""
    st = _step_cycles(cfg, cfg.bn.norm)
    return st["drain"] + (st["sdyd"] + 1) + (st["h"] + 1) + (st["div"] + 1) + (st["const"] + 1) + 1


def stored_state_bits(cfg: BNBackwardConfig) -> dict:
    """Bits per element kept from the forward pass for each unit, and read in each pass.

    Both units need x (``width`` bits) per element: dgamma = sum(dy * xhat) is a sum over elements
    of a value that depends on x, so no per-channel summary suffices. The difference is pass 2:
    L1 needs only sign(d_i) (1 bit; recomputed from x by one comparator, or with
    ``L1BNBackwardUnit(cfg, sign_in=True)`` the forward's stored bit), L2 needs xhat_i
    (recomputed from x by a multiply, or stored with xhat_frac + more bits).
    """
    b = cfg.bn
    return {
        "l1": b.width,
        "l2": b.width,
        "l1_pass2": 1,
        "l2_pass2": b.width,
        "l2_pass2_if_xhat_stored": b.xhat_frac + (b.count_bits + 1) // 2 + 2,
    }


def backward_latency_cycles(cfg: BNBackwardConfig) -> int:
    """Cycles from the first accepted beat of a batch to the last dx beat, no stalls (lanes = 1):
    per channel, n beats of pass 1, :func:`per_channel_cycles` P, n beats of pass 2; dx leaves
    the pass-2 pipeline D = ``_pass2_cycles`` cycles after its beat. Pass 2 of a channel starts
    only when the previous channel's dx have all left (its constants are then replaced), which
    costs ``max(0, D + 2 - n - P)`` more cycles per channel after the first (the check is a
    register, one cycle late)."""
    b = cfg.bn
    p, d = per_channel_cycles(cfg), _pass2_cycles(cfg, b.norm)
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
    then ``PER_CHANNEL_CYCLES`` = 5 cycles (sum dy*d; H and mean(dy); the divisions by n and
    gamma*inv; the two L1 constants; presenting g); then pass 2 accepts a beat whenever the
    dx register is free or being read, dx appears one cycle after its beat. No stalls:
    ``backward_latency_cycles(cfg) = channels * (2n + 5) + 1`` cycles per batch.

    Bit widths: every register is sized from ``cfg.widths`` (see ``BNBackwardConfig``); the
    arithmetic is the reference's, stage for stage.
    """

    norm = None

    @classmethod
    def _check_args(cls, cfg, *, sign_in: bool = False):
        if not isinstance(sign_in, bool):
            raise TypeError(f"sign_in={sign_in!r} must be a bool")
        if sign_in and cls.norm != "l1":
            raise ValueError(f"sign_in=True is not supported by {cls.__name__}: its pass 2 "
                             "rebuilds xhat_i from x, so x cannot be replaced by a sign bit; "
                             "only L1BNBackwardUnit takes sign_in")
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
        # for, ``_step_cycles``), pass 2 is a pipeline stalled by ``o`` (L1: a sign-selected
        # subtract, L2: d*inv and xhat*mean(dy*xhat), then the scale multiply u*gamma*inv).
        m = Module()
        cfg, b, w = self.cfg, self.cfg.bn, self.cfg.widths
        n, fr, r, k, t = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits, cfg.h_preshift
        rc = ((1 << (k + 1)) // n + 1) >> 1
        cc = c_const(b.c_bits)        # looked up at elaboration (the mutant test patches it)
        steps = _step_cycles(cfg, self.norm)

        x, dy = self.i.payload.x, self.i.payload.dy
        mu = Signal(signed(b.dev_bits))
        inv = Signal(unsigned(b.recip_bits + 1))
        gamma = Signal(signed(b.gamma_width))
        first = Signal(init=1)
        cnt = Signal(range(n))
        last = Signal(init=int(n == 1))        # cnt == n - 1, as a register

        sum_dy = Signal(signed(w["sum_dy"]))
        sum_dyx = Signal(signed(w["sum_dyx"]))
        nneg = Signal(range(n + 1))
        sdyd = Signal(signed(w["sdyd"]))
        h = Signal(signed(w["h"]))
        mean_dy = Signal(signed(w["sum_dy"] + fr + 1))
        mh = Signal(signed(w["hc"] - b.count_bits + 2))
        msgn = Signal(signed(fr + 3))
        gi = Signal(signed(w["gamma_inv"]))
        kp = Signal(signed(w["u"]))
        kn = Signal(signed(w["u"]))
        wait = Signal(range(max(steps.values()) + 2))

        # --- pass 1: input register, sign and dy*x registered, accumulators -------------------
        p1 = Pipe(m, prefix="p1")
        take1 = Signal()
        xa, dya, va, fa = (p1.reg(v, nm) for v, nm in ((x, "x"), (dy, "dy"), (take1, "v"), (first, "f")))
        if self.sign_in:
            nega = p1.reg(self.i.payload.neg, "neg")
            negb = p1.reg(nega, "neg")
        else:
            negb = p1.reg(((xa.shift_left(b.frac) - mu)[:b.dev_bits + 1]).as_signed()[-1], "neg")
        lat1 = mul_latency(dya.shape(), xa.shape())
        dyb, vb, fb = (p1.delay(v, lat1, nm) for v, nm in ((dya, "dy"), (va, "v"), (fa, "f")))
        negb = p1.delay(negb, lat1 - 1, "neg")
        dyx = p1.mul(dya, xa, "dyx")
        with m.If(vb):
            m.d.sync += [
                sum_dy.eq(Mux(fb, 0, sum_dy) + dyb),
                sum_dyx.eq(Mux(fb, 0, sum_dyx) + dyx),
                nneg.eq(Mux(fb, 0, nneg) + negb),
            ]

        # --- per-channel steps: free-running pipelines from registers held during the wait ----
        pc = Pipe(m, prefix="pc")
        sdyd_new = sum_dyx.shift_left(b.frac) - pc.mul(mu, sum_dy, "musdy")
        h_in = pc.reg(_rnd(sdyd, t), "hin")
        h_new = _shr(pc.mul(h_in, inv, "h", add=_half(r - fr - t)), r - fr - t)
        mdy_new = _shr(pc.mul(sum_dy.shift_left(fr), rc, "mdy", add=_half(k)), k)
        if self.norm == "l1":
            mh_new = _shr(pc.mul(h, cc * rc, "mh", add=_half(k)), k)      # div(h * C): one constant
            msgn_in = pc.reg((n - 2 * nneg).shift_left(fr), "msgn_in")     # the DSP's input register
            msgn_new = _shr(pc.mul(msgn_in, rc, "msgn", add=_half(k)), k)
            qp = pc.reg((1 << fr) - msgn, "qp")
            qn = pc.reg(-(1 << fr) - msgn, "qn")
            kp_new = mean_dy + _shr(pc.mul(mh, qp, "kp", add=_half(b.c_bits + fr)), b.c_bits + fr)
            kn_new = mean_dy + _shr(pc.mul(mh, qn, "kn", add=_half(b.c_bits + fr)), b.c_bits + fr)
        else:
            mh_new = _shr(pc.mul(h, rc, "mh", add=_half(k)), k)            # mean(dy*xhat)
        gi_new = pc.mul(gamma, inv, "gi")

        # --- pass 2: a pipeline that advances when dx can move --------------------------------
        advance = ~self.o.valid | self.o.ready
        p2 = Pipe(m, advance, prefix="p2")
        take2 = Signal()
        mu2 = Signal.like(mu)
        inv2 = Signal.like(inv)
        mdy2, mh2, gi2, kp2, kn2 = (Signal.like(v, name=f"{v.name}2") for v in (mean_dy, mh, gi, kp, kn))
        dx, vs, _ = _build_pass2(p2, cfg, self.norm, self.sign_in, x=x, dy=dy,
                                 neg=self.i.payload.neg if self.sign_in else None, take=take2,
                                 c={"mu": mu2, "inv": inv2, "mdy": mdy2, "mh": mh2, "gi": gi2, "kp": kp2, "kn": kn2})
        with m.If(advance):
            m.d.sync += [self.o.payload.eq(_sat(dx, cfg.grad_out_width)), self.o.valid.eq(vs)]
        inflight = Signal(range(_pass2_cycles(cfg, self.norm) + 3))   # beats taken, dx not yet out
        m.d.sync += inflight.eq(inflight + take2 - (self.o.valid & self.o.ready))
        empty = Signal(init=1)        # inflight == 0, one cycle late (a register)
        m.d.sync += empty.eq(inflight == 0)
        wz = Signal()                 # wait == 0, as a register kept with wait

        def setw(v):
            m.d.sync += [wait.eq(v), wz.eq(v == 0)]

        def dec():
            m.d.sync += [wait.eq(wait - 1), wz.eq(wait == 1)]

        def count():
            m.d.sync += [cnt.eq(Mux(last, 0, cnt + 1)), last.eq(Mux(last, n == 1, cnt == n - 2))]

        with m.FSM() as fsm:
            with m.State("ACC"):
                with m.If(self.i.valid):
                    with m.If(first):
                        m.d.sync += [mu.eq(self.mu), inv.eq(self.inv), gamma.eq(self.gamma), first.eq(0)]
                    count()
                    with m.If(last):
                        setw(steps["drain"] - 1)
                        m.next = "DRAIN"
            with m.State("DRAIN"):        # the last beat reaches the accumulators
                dec()
                with m.If(wz):
                    setw(steps["sdyd"])
                    m.next = "SDYD"
            with m.State("SDYD"):
                dec()
                with m.If(wz):
                    m.d.sync += sdyd.eq(sdyd_new)
                    setw(steps["h"])
                    m.next = "H"
            with m.State("H"):
                dec()
                with m.If(wz):
                    m.d.sync += [h.eq(h_new), mean_dy.eq(mdy_new)]
                    setw(steps["div"])
                    m.next = "DIV"
            with m.State("DIV"):
                dec()
                with m.If(wz):
                    m.d.sync += [mh.eq(mh_new), gi.eq(gi_new)]
                    setw(steps["const"])
                    if self.norm == "l1":
                        m.d.sync += msgn.eq(msgn_new)
                    m.next = "CONST"
            with m.State("CONST"):
                dec()
                with m.If(wz):
                    if self.norm == "l1":
                        m.d.sync += [kp.eq(kp_new), kn.eq(kn_new)]
                    m.next = "GRAD"
            with m.State("GRAD"):
                # pass 2 takes its constants here: the previous channel's dx have all left
                with m.If(self.g.valid & self.g.ready):
                    m.d.sync += [mu2.eq(mu), inv2.eq(inv), mdy2.eq(mean_dy), mh2.eq(mh), gi2.eq(gi),
                                 kp2.eq(kp), kn2.eq(kn)]
                    m.next = "PASS2"
            with m.State("PASS2"):
                with m.If(take2):
                    count()
                    with m.If(last):
                        m.d.sync += first.eq(1)
                        m.next = "ACC"
        m.d.comb += [
            take1.eq(fsm.ongoing("ACC") & self.i.valid),
            take2.eq(fsm.ongoing("PASS2") & self.i.valid & advance),
            self.i.ready.eq(fsm.ongoing("ACC") | (fsm.ongoing("PASS2") & advance)),
            self.g.valid.eq(fsm.ongoing("GRAD") & empty),
            self.g.payload.dgamma.eq(h),
            self.g.payload.dbeta.eq(sum_dy),
        ]
        return m


class L1BNBackwardUnit(_BNBackwardUnit):
    __doc__ = "L1-BN backward: pass 2 is a sign select between two per-channel constants.\n\n" + \
        _BNBackwardUnit.__doc__
    norm = "l1"


class L2BNBackwardUnit(_BNBackwardUnit):
    __doc__ = ("L2-BN backward baseline: pass 2 rebuilds xhat_i (multiply) and scales it (multiply). "
               "``sign_in=True`` raises ValueError (pass 2 needs x).\n\n") + _BNBackwardUnit.__doc__
    norm = "l2"
