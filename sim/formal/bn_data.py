"""Data properties of the BN forward units: the statistics and y against the reference formulas.

The harness records the first channel's n elements and its gamma/beta as they are accepted and
checks, on the public ports only:

- the ``stats`` record: ``2n*mu <= 2*(S << frac) + n < 2n*(mu + 1)`` (``mu = div_round``),
  ``s`` from the dispersion statistic (the norm's rule, from its own hardware module:
  ``Dispersion.exact_dispersion`` and ``exact_s_holds``: ``div_round(sum |d|, n)``,
  ``div_round(sum d*d, n)``, range ``max d - min d``), ``sigma`` (a ``"const"`` sigma_kind:
  ``rnd(s*K, c_bits) + eps`` with the registry's K (``NormSpec.sigma_const``); ``"sqrt"``:
  ``(sigma - eps)**2 <= s < (sigma - eps + 1)**2``) and ``inv*sigma <= 2**R < (inv + 1)*sigma``;
- each y: ``sat(rnd(gamma * rnd(d*inv, R - xhat_frac), affine_shift) + beta, out_width)``
  with the record's mu and inv.

Everything on the harness side is exact (Amaranth widens every sum and product), so a register
that is one bit too narrow anywhere in the unit shows up as a mismatch. With ``vertices=True`` the
data (x, gamma, beta) are restricted to the ends of their ranges: every statistic and every
intermediate is monotone, convex or multilinear in each input, so its extremes, and therefore any
overflow, are reached there; that is the overflow check and it is much cheaper to solve than the
full equivalence (``vertices=False``).
"""

from __future__ import annotations

from amaranth import Const, Mux, Signal, signed
from amaranth.hdl import Assert, Assume
from l1bn.hw.bn_unit import bn_unit_for
from l1bn.spec.norms import resolve

from .props import Harness, drive_stream

__all__ = ["BNDataHarness"]


def _rnd(v, s):
    return (v + (1 << (s - 1))) >> s if s > 0 else (v << -s if s < 0 else v)


def _sat(v, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


class BNDataHarness(Harness):
    def __init__(self, cfg, *, vertices=False, stalls=True, unit=None):
        super().__init__()
        self.cfg, self.vertices, self.stalls, self.unit = cfg, vertices, stalls, unit

    def _vertex(self, m, value, shape):
        if self.vertices:
            lo, hi = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
            m.d.comb += Assume((value == lo) | (value == hi))

    def build(self, m):
        cfg = self.cfg
        dut = self.unit if self.unit is not None else bn_unit_for(cfg)
        m.submodules.dut = dut
        # stalls=False: input always valid, outputs always ready (one fixed schedule; the
        # stream and count properties cover the stall patterns)
        _, _, take = drive_stream(m, self, dut.i, "i", valid=None if self.stalls else 1)
        gamma, beta = self.free(len(dut.gamma), "gamma"), self.free(len(dut.beta), "beta")
        m.d.comb += [dut.gamma.eq(gamma), dut.beta.eq(beta),
                     dut.o.ready.eq(self.free(1, "o_ready") if self.stalls else 1),
                     dut.stats.ready.eq(self.free(1, "stats_ready") if self.stalls else 1)]
        n, lanes, nb = cfg.n, cfg.lanes, cfg.beats
        for k in range(lanes):
            self._vertex(m, dut.i.payload[k], signed(cfg.width))
        self._vertex(m, gamma, signed(cfg.gamma_width))
        self._vertex(m, beta, signed(cfg.beta_width))

        # record the first channel
        xs = [Signal(signed(cfg.width), name=f"x{j}") for j in range(n)]
        g = Signal(signed(cfg.gamma_width), name="g")
        b = Signal(signed(cfg.beta_width), name="b")
        got = Signal(range(nb + 1), name="beats_in")
        with m.If(take & (got < nb)):
            m.d.sync += got.eq(got + 1)
            for j in range(nb):
                with m.If(got == j):
                    m.d.sync += [xs[j * lanes + k].eq(dut.i.payload[k]) for k in range(lanes)]
            with m.If(got == 0):
                m.d.sync += [g.eq(gamma), b.eq(beta)]

        # the first stats record (channel 0 of the first batch)
        st = dut.stats.payload
        have = Signal(name="have_stats")
        mu = Signal(signed(cfg.mean_bits), name="rec_mu")
        inv = Signal(range((1 << cfg.recip_bits) + 1), name="rec_inv")
        first_rec = dut.stats.valid & ~have
        with m.If(first_rec):
            m.d.sync += [have.eq(1), mu.eq(st.mu), inv.eq(st.inv)]

        S = sum(xs[1:], xs[0])
        two_n = 2 * n
        sx = 2 * (S << cfg.frac) + n
        m.d.comb += Assert(~first_rec | (got == nb))          # statistics after the whole channel
        m.d.comb += Assert(~first_rec | ((two_n * st.mu <= sx) & (sx < two_n * (st.mu + 1))))
        ds = [(x << cfg.frac) - st.mu for x in xs]
        # the norm's own rule as expressions (its hw module, by the registry: not the dut's, so
        # a mutant or wrapped unit is checked against the real rule)
        disp = resolve(cfg.norm_spec.hw_unit).dispersion(cfg)
        D = disp.exact_dispersion(ds)
        m.d.comb += Assert(~first_rec | disp.exact_s_holds(D, st.s))
        if cfg.norm_spec.sigma_kind == "const":
            k = cfg.norm_spec.sigma_const(cfg)     # the reference's constant, not the unit's
            m.d.comb += Assert(~first_rec | (st.sigma == _rnd(st.s * k, cfg.c_bits) + cfg.eps))
        else:
            r = st.sigma - cfg.eps
            m.d.comb += Assert(~first_rec | ((st.sigma >= cfg.eps) & (r * r <= st.s) & (st.s < (r + 1) * (r + 1))))
        one = Const(1 << cfg.recip_bits)
        m.d.comb += Assert(~first_rec | ((st.inv * st.sigma <= one) & (one < (st.inv + 1) * st.sigma)))

        # y, in order, for the first channel
        outs = Signal(range(nb + 1), name="beats_out")
        out = dut.o.valid & dut.o.ready
        with m.If(out & (outs < nb)):
            m.d.sync += outs.eq(outs + 1)
        m.d.comb += Assert(~(out & (outs < nb)) | have)        # y after its statistics
        for j in range(nb):
            with m.If(out & (outs == j)):
                for k in range(lanes):
                    x = xs[j * lanes + k]
                    d = (x << cfg.frac) - mu
                    xhat = _rnd(d * inv, cfg.recip_bits - cfg.xhat_frac)
                    y = _sat(_rnd(g * xhat, cfg.affine_shift) + b, cfg.out_width)
                    m.d.comb += Assert(dut.o.payload[k] == y)
