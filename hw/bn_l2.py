"""L2-BN's own hardware (the baseline): the parts of the forward and backward units that differ
from the other norms (the registry entry ``l1bn.spec.norms.L2`` names the units that use them).

Forward (:class:`L2Dispersion`): ``D = sum d*d``, one ``dev_bits``-square multiplier per lane
(split into MULT18X18D partial products when wider than 18 bits); ``s = div_round(D, n)``; sigma
is a restoring square root (``sigma_kind == "sqrt"``, :class:`l1bn.hw.bn_sigma.SqrtSigma`).

Backward (:class:`L2BackwardTerm`): pass 2 rebuilds xhat_i = d_i * inv (a multiply) and
multiplies it by mean(dy*xhat) (a second multiply).
"""

from __future__ import annotations

from amaranth import Signal, signed, unsigned
from l1bn.hw.arith import mul_latency
from l1bn.hw.bn_backward_term import BackwardTerm, backward_shapes, div_const, half, shr
from l1bn.hw.bn_dispersion import Dispersion

__all__ = ["L2Dispersion", "L2BackwardTerm"]


class L2Dispersion(Dispersion):
    """``f(d) = d*d`` (``unsigned(2*(dev_bits-1)+1)``): a pipelined multiply,
    ``mul_latency(dev_bits, dev_bits)`` cycles, summed."""

    @property
    def op_cycles(self) -> int:
        dev = signed(self.cfg.dev_bits)
        return mul_latency(dev, dev)

    def lane_term(self, m, pipe, d, k: int):
        t = Signal(unsigned(2 * (self.cfg.dev_bits - 1) + 1), name=f"sqd{k}")
        m.d.comb += t.eq(pipe.mul(d, d, f"sq{k}"))     # square
        return t

    def exact_term(self, d):
        return d * d


class L2BackwardTerm(BackwardTerm):
    """L2-BN's backward (the baseline): ``mh = div(h) = mean(dy * xhat)``; pass 2 rebuilds
    ``xhat_i = rnd(d_i * inv)`` (a multiply) and ``u = ((dy << F) - mean(dy)) - rnd(xhat_i * mh)``
    (a second multiply). It reads x in pass 2, so it cannot take a sign bit instead."""

    no_sign_reason = "its pass 2 rebuilds xhat_i from x, so x cannot be replaced by a sign bit"

    @classmethod
    def stored_bits(cls, cfg) -> dict:
        # x (rebuilding xhat_i by a multiply), or xhat_i itself
        b = cfg.bn
        return {"pass2": b.width, "pass2_if_xhat_stored": b.xhat_frac + (b.count_bits + 1) // 2 + 2}

    def div_cycles(self) -> list:
        k = self.cfg.div_bits
        return [mul_latency(backward_shapes(self.cfg)["h"], div_const(self.cfg), add=half(k))]

    def steps(self, m, pc, r):
        k = self.cfg.div_bits
        return shr(pc.mul(r["h"], div_const(self.cfg), "mh", add=half(k)), k)      # mean(dy*xhat)

    def pass2(self, p2, *, xs, ds, vs, neg, c, sign_in: bool):
        b, fr, r = self.cfg.bn, self.cfg.inner_frac, self.cfg.bn.recip_bits
        d2 = p2.reg((xs.shift_left(b.frac) - c["mu"])[:b.dev_bits + 1].as_signed(), "d")
        ds, vs = p2.reg(ds, "dy"), p2.reg(vs, "v")
        s1 = r - b.xhat_frac
        lat = mul_latency(d2.shape(), c["inv"].shape(), add=half(s1))
        xhat = shr(p2.mul(d2, c["inv"], "xhat", add=half(s1)), s1)
        ds, vs = p2.delay(ds, lat, "dy"), p2.delay(vs, lat, "v")
        lat2 = mul_latency(xhat.shape(), c["mh"].shape(), add=half(b.xhat_frac))
        xm = shr(p2.mul(xhat, c["mh"], "xm", add=half(b.xhat_frac)), b.xhat_frac)
        # (dy << F) - mean(dy) while xhat*mean(dy*xhat) is multiplied: one subtract per stage
        dsm = p2.delay(ds.shift_left(fr) - c["mdy"], lat2, "dym")
        vs = p2.delay(vs, lat2, "v")
        u = p2.reg(dsm - xm, "u")
        vs = p2.reg(vs, "v")
        return u, vs, 2 + lat + lat2
