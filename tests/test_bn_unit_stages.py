"""The forward BN unit's stage interfaces (streams joined with ``wiring.connect``) and the
registry's ``sigma_kind`` that chooses the reciprocal stage's sigma datapath."""

import dataclasses

import pytest
from l1bn.spec.norms import NORMS, SIGMA_KINDS, norm_spec


def test_every_norm_has_a_valid_sigma_kind():
    assert SIGMA_KINDS == ("const", "sqrt")
    for name, spec in NORMS.items():
        assert spec.sigma_kind in SIGMA_KINDS, name
    # L1 and range multiply s by a constant, L2 takes a square root
    assert {n: s.sigma_kind for n, s in NORMS.items()} == {"l1": "const", "l2": "sqrt", "range": "const"}


def test_a_bad_sigma_kind_is_refused():
    with pytest.raises(ValueError, match="sigma_kind='cbrt' of norm 'l1' is not allowed"):
        dataclasses.replace(norm_spec("l1"), sigma_kind="cbrt")


# ---------------------------------------------------------------------------------------------
# stage interfaces

import numpy as np  # noqa: E402
from amaranth import Shape, signed, unsigned  # noqa: E402
from amaranth.hdl import Fragment  # noqa: E402
from amaranth.lib import data, stream, wiring  # noqa: E402
from amaranth.sim import Simulator  # noqa: E402
from l1bn.hw.bn_unit import (  # noqa: E402
    NormalizeStage,
    RecipStage,
    bn_stages,
    bn_unit_for,
    recip_cycles,
    stage_payloads,
    stats_layout,
)
from l1bn.spec.config import BNConfig  # noqa: E402
from l1bn.spec.norms import div_round_array  # noqa: E402

CFGS = [BNConfig(norm=nm, width=8, n=16, lanes=2, channels=3) for nm in ("l1", "l2", "range")]


def _members(component):
    return dict(component.signature.members.items())


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_stage_ports_are_streams_with_the_documented_payloads(cfg):
    pay = stage_payloads(cfg)
    lanes_x = data.ArrayLayout(signed(cfg.width), cfg.lanes)
    assert pay["stats"] == (data.StructLayout({"x": lanes_x, "first": 1, "last": 1}), signed(cfg.mean_bits))
    assert pay["disp"][1] == unsigned(cfg.disp_sum_bits) and pay["recip"][0] == unsigned(cfg.disp_sum_bits)
    assert dict(pay["recip"][1]) == dict(data.StructLayout({
        "s": unsigned(cfg.disp_bits), "sigma": unsigned(cfg.sigma_bits), "inv": unsigned(cfg.inv_bits)}))
    assert Shape.cast(pay["normalize"][0]).width == (cfg.lanes * cfg.width + cfg.mean_bits + cfg.inv_bits
                                                     + cfg.gamma_width + cfg.beta_width)
    for name, stage in bn_stages(cfg).items():
        m = _members(stage)
        assert m["i"] == wiring.In(stream.Signature(pay[name][0]))
        assert m["o"] == wiring.Out(stream.Signature(pay[name][1]))
        assert set(m) == ({"i", "o", "hold"} if name == "recip" else {"i", "o"})
        Fragment.get(stage, None)      # elaborates alone (per-stage synthesis)


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_unit_public_ports_are_unchanged(cfg):
    unit = bn_unit_for(cfg)
    m = _members(unit)
    assert set(m) == {"i", "gamma", "beta", "o", "stats"}
    assert m["i"] == wiring.In(stream.Signature(data.ArrayLayout(signed(cfg.width), cfg.lanes)))
    assert m["o"] == wiring.Out(stream.Signature(data.ArrayLayout(signed(cfg.out_width), cfg.lanes)))
    assert m["stats"] == wiring.Out(stream.Signature(stats_layout(cfg)))
    assert m["gamma"].shape == signed(cfg.gamma_width) and m["beta"].shape == signed(cfg.beta_width)
    # the normalize stage's output is the unit's o payload
    assert stage_payloads(cfg)["normalize"][1] == data.ArrayLayout(signed(cfg.out_width), cfg.lanes)
    Fragment.get(unit, None)


def _recip_expect(cfg, dsum):
    s = dsum if cfg.norm == "range" else int(div_round_array(np.array([dsum]), cfg.n)[0])
    sigma = int(norm_spec(cfg.norm).sigma_core(np.array([s]), cfg)[0]) + cfg.eps
    return s, sigma, (1 << cfg.recip_bits) // sigma


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_recip_stage_handshake_latency_and_values(cfg):
    """RecipStage alone: ready only while idle and not held; o.valid exactly recip_cycles after
    the transfer, for one cycle; s, sigma, inv as the reference; back-to-back transfers."""
    dut = RecipStage(cfg)
    # the largest reachable D: s = D/n (range: s = D) at the top of unsigned(disp_bits)
    top = ((1 << cfg.disp_bits) - 1) * (1 if cfg.norm == "range" else cfg.n)
    values = [0, 1, 7 * cfg.n + 3, top // 3, top]
    lat = recip_cycles(cfg)
    seen = []

    async def tb(ctx):
        ctx.set(dut.hold, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, values[0])
        for _ in range(3):                      # held: nothing is taken
            assert ctx.get(dut.i.ready) == 0
            await ctx.tick()
        ctx.set(dut.hold, 0)
        for v in values:
            ctx.set(dut.i.payload, v)
            while not ctx.get(dut.i.ready):
                await ctx.tick()
            await ctx.tick()                    # the transfer
            for k in range(1, lat + 1):
                valid = ctx.get(dut.o.valid)
                assert valid == (k == lat), (v, k)
                if k < lat:
                    assert ctx.get(dut.i.ready) == 0
                    await ctx.tick()
            p = dut.o.payload
            seen.append((ctx.get(p.s), ctx.get(p.sigma), ctx.get(p.inv)))
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [_recip_expect(cfg, v) for v in values]


def test_normalize_stage_backpressure_holds_the_stream():
    """NormalizeStage alone: i.ready = ~o.valid | o.ready, a beat appears after depth cycles, and
    o holds valid and payload while o.ready is low."""
    cfg = CFGS[0]
    dut = NormalizeStage(cfg)
    depth = dut.depth
    got = []

    async def tb(ctx):
        p = dut.i.payload
        ctx.set(p.mu, 5)
        ctx.set(p.inv, 1 << 12)
        ctx.set(p.gamma, 3)
        ctx.set(p.beta, -2)
        ctx.set(dut.o.ready, 1)
        ctx.set(p.x[0], 17)
        ctx.set(p.x[1], -9)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(depth - 1):
            assert ctx.get(dut.o.valid) == 0
            await ctx.tick()
        assert ctx.get(dut.o.valid) == 1
        ctx.set(dut.o.ready, 0)
        first = [ctx.get(dut.o.payload[k]) for k in range(cfg.lanes)]
        for _ in range(4):                      # stalled: held, and nothing new is accepted
            assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.o.valid) == 1
            assert [ctx.get(dut.o.payload[k]) for k in range(cfg.lanes)] == first
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready) == 1
        await ctx.tick()
        assert ctx.get(dut.o.valid) == 0
        got.extend(first)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # y = sat(rnd(gamma * rnd(d * inv, R - xhat_frac), affine_shift) + beta), d = (x << frac) - mu
    from l1bn.spec.intmath import rnd_int

    def y(x):
        d = (x << cfg.frac) - 5
        xhat = rnd_int(d * (1 << 12), cfg.recip_bits - cfg.xhat_frac)
        v = rnd_int(3 * xhat, cfg.affine_shift) - 2
        return max(-(1 << (cfg.out_width - 1)), min((1 << (cfg.out_width - 1)) - 1, v))

    assert got == [y(17), y(-9)]
