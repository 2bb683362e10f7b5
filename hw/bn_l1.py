"""L1-BN's own hardware: the parts of the forward and backward units that differ from the other
norms (the registry entry ``l1bn.spec.norms.L1`` names the units that use them).

Forward (:class:`L1Dispersion`): ``D = sum |d|`` by a sign/abs datapath (a subtract, a
conditional negate, an add: no multiplier); ``s = div_round(D, n)``; sigma is a constant multiply
by C = sqrt(pi/2) (``sigma_kind == "const"``).

Backward (:class:`L1BackwardTerm`): pass 2 subtracts one of two per-channel constants chosen by
the sign of d_i (a comparator and a mux, or with ``sign_in=True`` the forward's stored sign bit
and a mux): no multiplier per element before the common scale.
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed, unsigned
from l1bn.hw.arith import mul_latency
from l1bn.hw.bn_backward_term import BackwardTerm, backward_shapes, div_const, half, shr
from l1bn.hw.bn_dispersion import Dispersion
from l1bn.spec.config import BNBackwardConfig
from l1bn.spec.intmath import c_const

__all__ = ["L1Dispersion", "L1BackwardTerm"]


class L1Dispersion(Dispersion):
    """``f(d) = |d|`` (``unsigned(dev_bits)``, one register: the sign bit selects ``-d`` or
    ``d``), summed; sigma's constant is ``c_const(c_bits)``."""

    def lane_term(self, m, pipe, d, k: int):
        t = Signal(unsigned(self.cfg.dev_bits), name=f"absd{k}")
        m.d.sync += t.eq(Mux(d[-1], -d, d))            # sign/abs
        return t

    def sigma_const(self) -> int:
        # looked up at elaboration (the mutant test patches it)
        return c_const(self.cfg.c_bits)

    def exact_term(self, d):
        return Mux(d < 0, -d, d)


class L1BackwardTerm(BackwardTerm):
    """L1-BN's backward: ``mh = div(h * C)`` (one constant), the mean sign
    ``msgn = div((n - 2 * nneg) << F)`` and the two per-channel constants
    ``k+- = mean(dy) + rnd(mh * (+-1 - msgn))`` (registers ``kp``, ``kn``); pass 2 is
    ``u = (dy << F) - (k- if d_i < 0 else k+)``: a sign (a comparator on x, or the input bit with
    ``sign_in``) and a mux, 2 register stages."""

    takes_sign = True

    def __init__(self, cfg: BNBackwardConfig):
        super().__init__(cfg)
        u = signed(cfg.widths["u"])
        self.regs = {"kp": Signal(u, name="kp"), "kn": Signal(u, name="kn")}
        self.msgn = Signal(signed(cfg.inner_frac + 3), name="msgn")

    @classmethod
    def stored_bits(cls, cfg: BNBackwardConfig) -> dict:
        return {"pass2": 1}                 # sign(d_i) only

    def div_cycles(self) -> list:
        cfg, b, fr, k = self.cfg, self.cfg.bn, self.cfg.inner_frac, self.cfg.div_bits
        rc = div_const(cfg)
        return [mul_latency(backward_shapes(cfg)["h"], c_const(b.c_bits) * rc, add=half(k)),
                1 + mul_latency((b.n - 2 * Signal(range(b.n + 1))).shift_left(fr).shape(), rc, add=half(k))]

    def const_cycles(self) -> int:
        b, fr, mh = self.cfg.bn, self.cfg.inner_frac, backward_shapes(self.cfg)["mh"]
        return 1 + max(mul_latency(mh, ((1 << fr) - self.msgn).shape(), add=half(b.c_bits + fr)),
                       mul_latency(mh, (-(1 << fr) - self.msgn).shape(), add=half(b.c_bits + fr)))

    def steps(self, m, pc, r):
        cfg, b, fr, k = self.cfg, self.cfg.bn, self.cfg.inner_frac, self.cfg.div_bits
        rc = div_const(cfg)
        cc = c_const(b.c_bits)        # looked up at elaboration (the mutant test patches it)
        mh_new = shr(pc.mul(r["h"], cc * rc, "mh", add=half(k)), k)       # div(h * C): one constant
        msgn_in = pc.reg((b.n - 2 * r["nneg"]).shift_left(fr), "msgn_in")  # the DSP's input register
        self._msgn = shr(pc.mul(msgn_in, rc, "msgn", add=half(k)), k)
        qp = pc.reg((1 << fr) - self.msgn, "qp")
        qn = pc.reg(-(1 << fr) - self.msgn, "qn")
        sh = b.c_bits + fr
        self._kp = r["mean_dy"] + shr(pc.mul(r["mh"], qp, "kp", add=half(sh)), sh)
        self._kn = r["mean_dy"] + shr(pc.mul(r["mh"], qn, "kn", add=half(sh)), sh)
        return mh_new

    def latch_div(self, m):
        m.d.sync += self.msgn.eq(self._msgn)

    def latch_const(self, m):
        m.d.sync += [self.regs["kp"].eq(self._kp), self.regs["kn"].eq(self._kn)]

    def pass2(self, p2, *, xs, ds, vs, neg, c, sign_in: bool):
        b, fr = self.cfg.bn, self.cfg.inner_frac
        if sign_in:
            neg2 = p2.reg(p2.reg(neg, "neg"), "neg")
        else:
            neg2 = p2.reg(((xs.shift_left(b.frac) - c["mu"])[:b.dev_bits + 1]).as_signed()[-1], "neg")
        ds, vs = p2.reg(ds, "dy"), p2.reg(vs, "v")
        u = p2.reg(ds.shift_left(fr) - Mux(neg2, c["kn"], c["kp"]), "u")
        vs = p2.reg(vs, "v")
        return u, vs, 2
