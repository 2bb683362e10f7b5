"""Training-mode BN backward units: L1 (sign-based gradient) and the L2 baseline.

Both implement :func:`l1bn.spec.reference.bn_backward.bn_backward` bit for bit (the spec;
docs/arith/bn_backward.md). They share one skeleton and differ only in the per-element term of
the second pass: L1 subtracts one of two per-channel constants chosen by the sign of d_i (a
comparator and a mux, or with ``sign_in=True`` the forward's stored sign bit and a mux); L2
rebuilds xhat_i = d_i * inv (a multiply) and multiplies it by mean(dy*xhat) (a second multiply).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import rnd as _rnd
from l1bn.hw.arith import sat as _sat
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import c_const

__all__ = ["L1BNBackwardUnit", "L2BNBackwardUnit", "stored_state_bits", "backward_latency_cycles",
           "PER_CHANNEL_CYCLES"]

# Cycles between the last beat of pass 1 and the first beat of pass 2 with no stalls:
# four per-channel arithmetic steps and one cycle presenting (dgamma, dbeta).
PER_CHANNEL_CYCLES = 5


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
    per channel, n beats of pass 1, ``PER_CHANNEL_CYCLES`` arithmetic cycles, n beats of pass 2;
    the last dx is registered (+1)."""
    return cfg.bn.channels * (2 * cfg.bn.n + PER_CHANNEL_CYCLES) + 1


class _BNBackwardUnit(wiring.Component):
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

    def _check(self, cfg, sign_in):
        if not isinstance(sign_in, bool):
            raise ValueError(f"sign_in={sign_in!r} must be a bool")
        if sign_in and self.norm != "l1":
            raise ValueError(f"sign_in=True is not supported by {type(self).__name__}: its pass 2 "
                             "rebuilds xhat_i from x, so x cannot be replaced by a sign bit; "
                             "only L1BNBackwardUnit takes sign_in")
        if not isinstance(cfg, BNBackwardConfig):
            raise ValueError(f"cfg={cfg!r} must be a BNBackwardConfig")
        if cfg.bn.norm != self.norm:
            raise ValueError(f"cfg.bn.norm={cfg.bn.norm!r} does not match {type(self).__name__} "
                             f"(needs {self.norm!r})")
        if cfg.bn.lanes != 1:
            raise ValueError(f"lanes={cfg.bn.lanes} is not supported by the backward unit; allowed 1..1")

    def __init__(self, cfg: BNBackwardConfig, *, sign_in: bool = False):
        try:
            self._check(cfg, sign_in)
        except ValueError:
            self._MustUse__silence = True   # a refused object is not an unused design
            raise
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
        # Two passes over the channel: pass 1 reduces to per-channel scalars, a short
        # sequence of per-channel steps turns them into constants, pass 2 is one subtract
        # (L1: of a sign-selected constant) and one scale multiply per element.
        m = Module()
        cfg, b, w = self.cfg, self.cfg.bn, self.cfg.widths
        n, fr, r, k, t = b.n, cfg.inner_frac, b.recip_bits, cfg.div_bits, cfg.h_preshift
        rc = ((1 << (k + 1)) // n + 1) >> 1

        def div(v):
            return _rnd(v * rc, k)

        x, dy = self.i.payload.x, self.i.payload.dy
        mu = Signal(signed(b.dev_bits))
        inv = Signal(unsigned(b.recip_bits + 1))
        gamma = Signal(signed(b.gamma_width))
        first = Signal(init=1)
        cnt = Signal(range(n))
        last = cnt == n - 1

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

        if self.sign_in:
            # the forward's bit, in both passes: mean(sgn) and the pass-2 select see the same
            # sgn_i, and no subtractor/comparator is built (pass-2 x is don't care)
            neg = self.i.payload.neg
        else:
            # mu/inv/gamma: the live ports at the first beat, then the latched copy
            mu_now = Mux(first, self.mu, mu)
            d = Signal(signed(b.dev_bits + 1))
            m.d.comb += d.eq((x << b.frac) - mu_now)
            neg = d[-1]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # ready/valid are single unconditional assignments (continuous assigns in Verilog), so
        # they hold their value from time 0 in event-driven simulators
        with m.FSM() as fsm:
            with m.State("ACC"):
                with m.If(self.i.valid):
                    with m.If(first):
                        m.d.sync += [mu.eq(self.mu), inv.eq(self.inv), gamma.eq(self.gamma), first.eq(0)]
                    m.d.sync += [
                        sum_dy.eq(Mux(first, 0, sum_dy) + dy),
                        sum_dyx.eq(Mux(first, 0, sum_dyx) + dy * x),
                        nneg.eq(Mux(first, 0, nneg) + neg),
                        cnt.eq(Mux(last, 0, cnt + 1)),
                    ]
                    with m.If(last):
                        m.next = "SDYD"
            with m.State("SDYD"):
                m.d.sync += sdyd.eq((sum_dyx << b.frac) - mu * sum_dy)
                m.next = "H"
            with m.State("H"):
                m.d.sync += [
                    h.eq(_rnd(_rnd(sdyd, t) * inv, r - fr - t)),
                    mean_dy.eq(div(sum_dy << fr)),
                ]
                m.next = "DIV"
            with m.State("DIV"):
                if self.norm == "l1":
                    m.d.sync += [
                        mh.eq(div(h * c_const(b.c_bits))),
                        msgn.eq(div((n - 2 * nneg) << fr)),
                    ]
                else:
                    m.d.sync += mh.eq(div(h))   # mean(dy*xhat)
                m.d.sync += gi.eq(gamma * inv)
                m.next = "CONST"
            with m.State("CONST"):
                if self.norm == "l1":
                    m.d.sync += [
                        kp.eq(mean_dy + _rnd(mh * ((1 << fr) - msgn), b.c_bits + fr)),
                        kn.eq(mean_dy + _rnd(mh * (-(1 << fr) - msgn), b.c_bits + fr)),
                    ]
                m.next = "GRAD"
            with m.State("GRAD"):
                with m.If(self.g.ready):
                    m.next = "PASS2"
            with m.State("PASS2"):
                take = self.i.valid & (~self.o.valid | self.o.ready)
                if self.norm == "l1":
                    u = (dy << fr) - Mux(neg, kn, kp)
                else:
                    xhat = _rnd(d * inv, r - b.xhat_frac)
                    u = (dy << fr) - mean_dy - _rnd(xhat * mh, b.xhat_frac)
                shift = fr + b.gamma_frac + r - b.frac - cfg.grad_out_frac
                with m.If(take):
                    m.d.sync += [
                        self.o.payload.eq(_sat(_rnd(u * gi, shift), cfg.grad_out_width)),
                        self.o.valid.eq(1),
                        cnt.eq(Mux(last, 0, cnt + 1)),
                    ]
                    with m.If(last):
                        m.d.sync += first.eq(1)
                        m.next = "ACC"
        m.d.comb += [
            self.i.ready.eq(fsm.ongoing("ACC") | (fsm.ongoing("PASS2") & (~self.o.valid | self.o.ready))),
            self.g.valid.eq(fsm.ongoing("GRAD")),
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
