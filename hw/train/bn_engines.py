"""The BN engines of the training accelerator: one forward and one backward engine per BN layer,
each around the registry's unit for that layer's config (the unit's ``n`` is the layer's
``batch * Ho * Wo``, so every layer has its own unit; docs/train_accel.md says why).

:class:`BNForwardEngine` (docs/arith/training.md, 3.2 and 3.4): streams the layer's accumulators
from ``acc`` (channel after channel) into the forward unit with the channel's forward gamma and
beta (``sat(rnd(master, master_bits - width), width)``, from the master memories); writes each
``y`` as the next layer's activation ``min(max(rnd(y, bn_extra_frac), 0), 2**abits - 1)`` to
``act`` and its straight-through mask bit to ``mask``; writes each channel's batch ``mu`` and
``inv`` (what the backward needs) and updates the running statistics (``mu << sh``,
``sigma << sh``, the momentum step, the first step copies).

:class:`BNBackwardEngine` (section 6): per channel, the unit's two passes over
``(x, dy)``, ``x`` from ``acc`` and ``dy = sat(rnd(dA * mask, s), gbits)`` computed on the way from
``da`` and ``mask``; the unit's ``dx`` (configured to be ``u * gamma * inv`` exactly,
:func:`~l1bn.hw.train.plan.bn_backward_hw_config`) goes to ``ebuf``, ``dgamma`` and ``dbeta`` to
their memories, and the bit lengths of the three maxima come back in ``done``.

Both feed their unit through a read pipeline and a one-beat skid buffer (:class:`~l1bn.hw.train.
engine.Skid`): the pipeline advances while the buffer is empty (a register, so the unit's ``ready``
reaches only the buffer, not the read enables that gate the shared memories' addresses), and the
unit sees its input valid every cycle it can take one, so its latency formula holds. In the
forward engine the memories' outputs are the pipeline's last stage; in the backward engine three
more register stages follow them (the masked ``dA``, ``dA + r``, the shift of the ``dy``
quantizer: ``BNB_FEED_STAGES``).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out
from l1bn.hw.arith import rnd, sat
from l1bn.hw.bn_backward import backward_latency_cycles
from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for
from l1bn.hw.train.bus import mem_shape, read_bus, write_bus
from l1bn.hw.train.engine import Handshake, Skid, command, sint_for, uint_for
from l1bn.hw.train.fixed import MaxTracker, RunShift, sat_to
from l1bn.hw.train.plan import TrainPlan
from l1bn.spec.norms import resolve

__all__ = ["BNForwardEngine", "BNBackwardEngine", "bnf_cycles", "bnb_cycles", "BNF_EXTRA", "BNB_EXTRA"]

#: command handshake -> first beat taken, and last y -> done valid (forward)
BNF_EXTRA = 2
#: register stages between the backward engine's reads and its unit (the dy quantizer: the mask,
#: dA + r, the shift)
BNB_FEED_STAGES = 3
#: the same for the backward engine: 3, plus its feed stages
BNB_EXTRA = 3 + BNB_FEED_STAGES


def _stage(m: Module, en, v, name: str) -> Signal:
    """``v`` registered when ``en``."""
    v = Value.cast(v)
    r = Signal(v.shape(), name=name)
    with m.If(en):
        m.d.sync += r.eq(v)
    return r


def bnf_cycles(plan: TrainPlan, layer: int) -> int:
    """Cycles from the command handshake to ``done`` valid: the unit's latency plus BNF_EXTRA."""
    return bn_latency_cycles(plan.bn_cfgs[layer]) + BNF_EXTRA


def bnb_cycles(plan: TrainPlan, layer: int) -> int:
    """Cycles from the command handshake to ``done`` valid: the unit's latency plus BNB_EXTRA."""
    return backward_latency_cycles(plan.bwd_cfgs[layer]) + BNB_EXTRA


def _ports(plan, reads=(), writes=()):
    mem = plan.mem
    out = {f"rd_{n}": Out(read_bus(mem[n]["depth"], mem_shape(mem[n]))) for n in reads}
    out.update({f"wr_{n}": Out(write_bus(mem[n]["depth"], mem_shape(mem[n]))) for n in writes})
    return out


def forward_param(master, master_bits: int, width: int):
    """``sat(rnd(master, master_bits - width), width)``: a forward gamma or beta (3.1)."""
    return sat(rnd(master, master_bits - width), width)[:width].as_signed()


class BNForwardEngine(wiring.Component):
    """The training-mode BN forward of one layer (module docstring).

    Interface
    ---------
    cmd : In(stream of {sh, first})    ``sh = s_w + wbits - 1`` (the running statistics' shift),
                                       ``first``: the first step (copy the batch statistics)
    done : Out(stream)
    rd_acc, rd_gamma, rd_beta ; wr_act, wr_mask ; wr_stat_mu, wr_stat_inv ;
    rd_run_mu, wr_run_mu, rd_run_sigma, wr_run_sigma
    """

    def __init__(self, plan: TrainPlan, layer: int):
        self.plan, self.layer = plan, layer
        self.bcfg = plan.bn_cfgs[layer]
        members = command({"cmd": {"sh": uint_for(plan.cfg.master_bits - 1), "first": uint_for(1)}})
        members.update(_ports(plan, reads=("acc", "gamma", "beta", "run_mu", "run_sigma"),
                              writes=("act", "mask", "stat_mu", "stat_inv", "run_mu", "run_sigma")))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, cfg, b = self.plan, self.plan.cfg, self.bcfg
        g = p.layers[self.layer]
        total, n = g.out * b.n, b.n
        abase, cbase = p.bases["acc"][self.layer], p.bases["chan"][self.layer]
        nbase = p.bases["act"][self.layer + 1]
        hs = Handshake(m, self)
        sh, first = Signal.like(self.cmd.payload.sh, name="sh"), Signal(name="first_step")
        with m.If(hs.start):
            m.d.sync += [sh.eq(self.cmd.payload.sh), first.eq(self.cmd.payload.first)]
        m.submodules.unit = unit = bn_unit_for(b)
        feed = stream.Signature(unit.i.payload.shape()).create(path=("feed",))
        wiring.connect(m, feed, unit.i)
        ys = stream.Signature(unit.o.payload.shape()).flip().create(path=("ys",))
        wiring.connect(m, unit.o, ys)
        stats = stream.Signature(unit.stats.payload.shape()).flip().create(path=("stats_in",))
        wiring.connect(m, unit.stats, stats)

        # feeder: acc[e], gamma/beta[c] read together; the read data is the unit's input
        run = Signal(name="run")
        e = Signal(range(total + 1), name="e")
        j = Signal(range(n), name="j")
        c = Signal(range(g.out), name="c")
        skid = Skid(m, name="feed_skid")
        adv = skid.adv
        pv = Signal(name="feed_pv")           # the memories' outputs hold a beat
        with m.If(hs.start):
            m.d.sync += [run.eq(1), e.eq(0), j.eq(0), c.eq(0)]
        for port, addr in ((self.rd_acc, abase + e), (self.rd_gamma, cbase + c), (self.rd_beta, cbase + c)):
            m.d.comb += [port.en.eq(adv & run), port.addr.eq(addr)]
        with m.If(adv):
            m.d.sync += pv.eq(run)
            with m.If(run):
                m.d.sync += [e.eq(e + 1), j.eq(Mux(j == n - 1, 0, j + 1))]
                with m.If(j == n - 1):
                    m.d.sync += c.eq(c + 1)
                with m.If(e == total - 1):
                    m.d.sync += run.eq(0)
        fv, (xv, gv, bv) = skid.out(pv, feed.ready, [self.rd_acc.data, self.rd_gamma.data, self.rd_beta.data])
        m.d.comb += [feed.valid.eq(fv), feed.payload[0].eq(xv),
                     unit.gamma.eq(forward_param(gv, cfg.master_bits, b.gamma_width)),
                     unit.beta.eq(forward_param(bv, cfg.master_bits, b.beta_width))]

        # outputs: activation and mask of every y, in order
        hi = (1 << cfg.abits) - 1
        y = ys.payload[0]
        eo = Signal(range(total + 1), name="eo")
        with m.If(hs.start):
            m.d.sync += eo.eq(0)
        m.d.comb += ys.ready.eq(1)
        a = rnd(y, cfg.bn_extra_frac)
        act = Mux(a < 0, 0, Mux(a > hi, hi, a))
        mask = (y > 0) & ((y << 1) < ((2 * hi + 1) << cfg.bn_extra_frac))
        m.d.comb += [
            self.wr_act.en.eq(ys.valid), self.wr_act.addr.eq(nbase + eo), self.wr_act.data.eq(act),
            self.wr_mask.en.eq(ys.valid), self.wr_mask.addr.eq(abase + eo), self.wr_mask.data.eq(mask),
        ]
        with m.If(ys.valid):
            m.d.sync += eo.eq(eo + 1)
            with m.If(eo == total - 1):
                hs.finish()

        self._statistics(m, stats, sh=sh, first=first, cbase=cbase)
        return m


    def _statistics(self, m, stats, *, sh, first, cbase):
        """The statistics stream: mu and inv for the backward, and the running statistics'
        read-modify-write (three register stages, no cycle cost: see below)."""
        p, cfg = self.plan, self.plan.cfg
        st = stats.payload
        m.d.comb += stats.ready.eq(1)
        for port, v in ((self.wr_stat_mu, st.mu), (self.wr_stat_inv, st.inv)):
            m.d.comb += [port.en.eq(stats.valid), port.addr.eq(cbase + st.channel), port.data.eq(v)]
        for port in (self.rd_run_mu, self.rd_run_sigma):
            m.d.comb += [port.en.eq(stats.valid), port.addr.eq(cbase + st.channel)]
        v1 = Signal(name="st_v1")
        ch1 = Signal.like(st.channel, name="st_ch1")
        mu1 = Signal.like(st.mu, name="st_mu1")
        sg1 = Signal.like(st.sigma, name="st_sigma1")
        m.d.sync += [v1.eq(stats.valid), ch1.eq(st.channel), mu1.eq(st.mu), sg1.eq(st.sigma)]
        # The momentum step ``old + rnd(vb - old, msh)`` in three register stages (it runs once
        # per channel, and the last channel's statistics come n beats before its last y, so the
        # stages cost no cycle): (2) the block RAM's read data and ``vb + 2**(msh-1)`` registered;
        # (3) the difference registered; the shift is wiring, and the add goes into the write.
        msh = cfg.momentum_shift                    # 1..16 (IntTrainConfig)
        v2, ch2 = _stage(m, 1, v1, "st_v2"), _stage(m, 1, ch1, "st_ch2")
        v3, ch3 = _stage(m, 1, v2, "st_v3"), _stage(m, 1, ch2, "st_ch3")
        for rd, wr, v, name in ((self.rd_run_mu, self.wr_run_mu, mu1, "mu"),
                                (self.rd_run_sigma, self.wr_run_sigma, sg1, "sigma")):
            width = p.mem[f"run_{name}"]["bits"]
            vb = Signal(signed(width + 1), name=f"run_{name}_b")
            m.d.comb += vb.eq(v.as_signed() << sh if v.shape().signed else v << sh)
            old2 = _stage(m, 1, rd.data, f"run_{name}_old2")
            vb2 = _stage(m, 1, vb, f"run_{name}_b2")
            vbh2 = _stage(m, 1, vb + (1 << (msh - 1)), f"run_{name}_bh2")
            d3 = _stage(m, 1, vbh2 - old2, f"run_{name}_d3")
            old3 = _stage(m, 1, old2, f"run_{name}_old3")
            vb3 = _stage(m, 1, vb2, f"run_{name}_b3")
            new = Signal(signed(width + 2), name=f"run_{name}_new")
            m.d.comb += new.eq(Mux(first, vb3, old3 + (d3 >> msh)))
            m.d.comb += [wr.en.eq(v3), wr.addr.eq(cbase + ch3), wr.data.eq(new)]


class BNBackwardEngine(wiring.Component):
    """The BN backward of one layer (module docstring).

    Interface
    ---------
    cmd : In(stream of {s})            the dy quantizer's shift
    done : Out(stream of {dx, dgamma, dbeta})   bit lengths of the three maxima
    rd_acc, rd_da, rd_mask, rd_stat_mu, rd_stat_inv, rd_gamma ; wr_ebuf, wr_dgamma, wr_dbeta
    """

    def __init__(self, plan: TrainPlan, layer: int):
        self.plan, self.layer = plan, layer
        self.bcfg = plan.bwd_cfgs[layer]
        self.smin = -(plan.cfg.gbits - 1)
        self.smax = plan.mem["da"]["bits"] - (plan.cfg.gbits - 1)
        w = self.bcfg.widths
        members = command({"cmd": {"s": sint_for(self.smin, self.smax)},
                           "done": {"dx": uint_for(self.bcfg.grad_out_width), "dgamma": uint_for(w["h"]),
                                    "dbeta": uint_for(w["sum_dy"])}})
        members.update(_ports(plan, reads=("acc", "da", "mask", "stat_mu", "stat_inv", "gamma"),
                              writes=("ebuf", "dgamma", "dbeta")))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p, cfg, bc = self.plan, self.plan.cfg, self.bcfg
        b = bc.bn
        g = p.layers[self.layer]
        total, n = g.out * b.n, b.n
        abase, cbase = p.bases["acc"][self.layer], p.bases["chan"][self.layer]
        hs = Handshake(m, self)
        s = Signal.like(self.cmd.payload.s, name="s")
        with m.If(hs.start):
            m.d.sync += s.eq(self.cmd.payload.s)
        unit_cls = resolve(b.norm_spec.hw_backward)
        m.submodules.unit = unit = unit_cls(bc)
        feed = stream.Signature(unit.i.payload.shape()).create(path=("feed",))
        wiring.connect(m, feed, unit.i)
        dxs = stream.Signature(unit.o.payload.shape()).flip().create(path=("dxs",))
        wiring.connect(m, unit.o, dxs)
        gs = stream.Signature(unit.g.payload.shape()).flip().create(path=("gs",))
        wiring.connect(m, unit.g, gs)

        # feeder: per channel, the n elements twice (pass 1, pass 2)
        run = Signal(name="run")
        j = Signal(range(n), name="j")
        second = Signal(name="second")
        c = Signal(range(g.out), name="c")
        cb = Signal(range(total + 1), name="cbase_e")          # c * n
        skid = Skid(m, name="feed_skid")
        adv = skid.adv
        pv = Signal(name="feed_pv")           # the last feed stage holds a beat
        with m.If(hs.start):
            m.d.sync += [run.eq(1), j.eq(0), second.eq(0), c.eq(0), cb.eq(0)]
        for port, addr in ((self.rd_acc, abase + cb + j), (self.rd_da, cb + j), (self.rd_mask, abase + cb + j),
                           (self.rd_stat_mu, cbase + c), (self.rd_stat_inv, cbase + c), (self.rd_gamma, cbase + c)):
            m.d.comb += [port.en.eq(adv & run), port.addr.eq(addr)]
        # the reads' data, then BNB_FEED_STAGES register stages, all advancing together with adv:
        # the gated dA (mask), dA + r, the shift; dy's saturation is the unit's input register
        vs = [Signal(name=f"feed_v{k}") for k in range(BNB_FEED_STAGES)]
        with m.If(adv):
            m.d.sync += [vs[0].eq(run), pv.eq(vs[-1])]
            m.d.sync += [vs[k].eq(vs[k - 1]) for k in range(1, BNB_FEED_STAGES)]
            with m.If(run):
                m.d.sync += j.eq(Mux(j == n - 1, 0, j + 1))
                with m.If(j == n - 1):
                    m.d.sync += second.eq(~second)
                    with m.If(second):
                        m.d.sync += [c.eq(c + 1), cb.eq(cb + n)]
                        with m.If(c == g.out - 1):
                            m.d.sync += run.eq(0)
        rs = RunShift(m, s, self.smin, self.smax, name="dys")
        gated = _stage(m, adv, Mux(self.rd_mask.data, self.rd_da.data, 0), "dA")
        summed = _stage(m, adv, rs.add(gated, rs.bias()), "dA_r")
        shifted = _stage(m, adv, rs.shift(summed), "dA_sh")
        side = [self.rd_acc.data, self.rd_stat_mu.data, self.rd_stat_inv.data, self.rd_gamma.data]
        for k in range(BNB_FEED_STAGES):
            side = [_stage(m, adv, v, f"side{i}_{k}") for i, v in enumerate(side)]
        fv, (x, dy, mu, inv, gam) = skid.out(pv, feed.ready, [*side[:1], sat_to(shifted, cfg.gbits), *side[1:]])
        m.d.comb += [feed.valid.eq(fv), feed.payload.x.eq(x), feed.payload.dy.eq(dy),
                     unit.mu.eq(mu), unit.inv.eq(inv),
                     unit.gamma.eq(forward_param(gam, cfg.master_bits, b.gamma_width))]

        # outputs: dx in order to ebuf, (dgamma, dbeta) per channel; the three maxima
        trackers = {}
        for name, width in (("dx", bc.grad_out_width), ("dgamma", bc.widths["h"]), ("dbeta", bc.widths["sum_dy"])):
            trackers[name] = tr = MaxTracker(width)
            m.submodules[f"max_{name}"] = tr
            m.d.comb += tr.clear.eq(hs.start)
        eo = Signal(range(total + 1), name="eo")
        co = Signal(range(g.out + 1), name="co")
        with m.If(hs.start):
            m.d.sync += [eo.eq(0), co.eq(0)]
        m.d.comb += [dxs.ready.eq(1), gs.ready.eq(1),
                     self.wr_ebuf.en.eq(dxs.valid), self.wr_ebuf.addr.eq(eo), self.wr_ebuf.data.eq(dxs.payload),
                     trackers["dx"].take.eq(dxs.valid), trackers["dx"].value.eq(dxs.payload)]
        for name, port in (("dgamma", self.wr_dgamma), ("dbeta", self.wr_dbeta)):
            v = getattr(gs.payload, name)
            m.d.comb += [port.en.eq(gs.valid), port.addr.eq(cbase + co), port.data.eq(v),
                         trackers[name].take.eq(gs.valid), trackers[name].value.eq(v)]
        with m.If(gs.valid):
            m.d.sync += co.eq(co + 1)
        last = Signal(name="last_dx")
        m.d.sync += last.eq(0)
        with m.If(dxs.valid):
            m.d.sync += eo.eq(eo + 1)
            with m.If(eo == total - 1):
                m.d.sync += last.eq(1)
        with m.If(last):
            hs.finish(**{k: t.bits for k, t in trackers.items()})
        return m
