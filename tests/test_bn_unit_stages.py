"""The forward BN unit's stages alone in Amaranth's simulator: their stream interfaces
(``always_ready`` where the stage never waits, a real handshake where it does), each stage's
values against the integer reference and its latency against ``stage_cycles``/``recip_cycles``,
the per-norm dispersion and sigma datapaths the registry selects, and back-pressure under random
``valid``/``ready`` on the stages that carry it."""

import dataclasses

import numpy as np
import pytest
from amaranth import Shape, signed, unsigned
from amaranth.hdl import Fragment
from amaranth.lib import data, stream, wiring
from amaranth.sim import Simulator
from l1bn.hw.bn_sigma import SIGMA_DATAPATHS
from l1bn.hw.bn_unit import (
    DispersionStage,
    NormalizeStage,
    RecipStage,
    StatsStage,
    bn_stages,
    bn_unit_for,
    recip_cycles,
    stage_cycles,
    stage_payloads,
    stats_layout,
)
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import rnd_int
from l1bn.spec.norms import NORMS, SIGMA_KINDS, div_round_array, norm_spec
from l1bn.spec.reference.bn import bn_forward

CFGS = [BNConfig(norm=nm, width=8, n=16, lanes=2, channels=3) for nm in NORMS]


def test_every_sigma_kind_has_a_datapath():
    """Each ``sigma_kind`` the registry allows has a hardware sigma datapath, and no other."""
    assert set(SIGMA_DATAPATHS) == set(SIGMA_KINDS)


def test_a_bad_sigma_kind_is_refused():
    with pytest.raises(ValueError, match="sigma_kind='cbrt' of norm 'l1' is not allowed"):
        dataclasses.replace(norm_spec("l1"), sigma_kind="cbrt")


def _members(component):
    return dict(component.signature.members.items())


# which stage streams never wait: (i, o)
ALWAYS_READY = {"stats": (True, True), "disp": (True, True), "recip": (False, True), "normalize": (False, False)}


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
        ri, ro = ALWAYS_READY[name]
        assert m["i"] == wiring.In(stream.Signature(pay[name][0], always_ready=ri))
        assert m["o"] == wiring.Out(stream.Signature(pay[name][1], always_ready=ro))
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


def _simulate(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def _batch(cfg, seed):
    """Random x (channels, n) over the full range, channel 0 all equal, channel 1 extremes only."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    x = rng.integers(lo, hi + 1, (cfg.channels, cfg.n), dtype=np.int64)
    x[0] = 5
    x[1] = [lo, hi] * (cfg.n // 2)
    gamma = rng.integers(-(1 << (cfg.gamma_width - 1)), 1 << (cfg.gamma_width - 1), cfg.channels)
    beta = rng.integers(-(1 << (cfg.beta_width - 1)), 1 << (cfg.beta_width - 1), cfg.channels)
    return x, gamma, beta


def _feed_channels(dut, cfg, x, mu=None, *, seed):
    """Stream the channels of ``x`` (beats of ``lanes``) into a tied-ready stage with random
    input gaps; returns ``(last-beat cycle per channel, [(cycle, payload) of every o.valid])``."""
    rng = np.random.default_rng(seed)
    lasts, outs = [], []

    async def tb(ctx):
        cyc = 0
        for c in range(cfg.channels):
            for b in range(cfg.beats):
                while rng.random() < 0.3:                        # a gap
                    ctx.set(dut.i.valid, 0)
                    if ctx.get(dut.o.valid):
                        outs.append((cyc, ctx.get(dut.o.payload)))
                    await ctx.tick()
                    cyc += 1
                p = dut.i.payload
                for k in range(cfg.lanes):
                    ctx.set(p.x[k], int(x[c, b * cfg.lanes + k]))
                ctx.set(p.first, b == 0)
                ctx.set(p.last, b == cfg.beats - 1)
                if mu is not None:
                    ctx.set(p.mu, int(mu[c]))
                ctx.set(dut.i.valid, 1)
                assert ctx.get(dut.i.ready) == 1                  # always_ready: a constant 1
                if ctx.get(dut.o.valid):
                    outs.append((cyc, ctx.get(dut.o.payload)))
                await ctx.tick()
                cyc += 1
            lasts.append(cyc - 1)
        ctx.set(dut.i.valid, 0)
        for _ in range(40):
            if ctx.get(dut.o.valid):
                outs.append((cyc, ctx.get(dut.o.payload)))
            await ctx.tick()
            cyc += 1

    _simulate(dut, tb)
    return lasts, outs


@pytest.mark.parametrize("cfg", CFGS[:1], ids=lambda c: c.norm)
def test_stats_stage_mean_and_latency(cfg):
    """StatsStage alone: one mu per channel, equal to the reference's, exactly
    ``stage_cycles()["stats"]`` cycles after the channel's last beat."""
    x, gamma, beta = _batch(cfg, seed=1)
    lasts, outs = _feed_channels(StatsStage(cfg), cfg, x, seed=2)
    ref = bn_forward(x, gamma, beta, cfg)
    assert [v for _, v in outs] == ref.mu.tolist()
    assert [t - last for (t, _), last in zip(outs, lasts, strict=True)] == [stage_cycles(cfg)["stats"]] * cfg.channels


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_dispersion_stage_of_each_norm(cfg):
    """DispersionStage alone, with the datapath the registry selects for the norm: D equals the
    reference's ``disp_sum`` (sum |d|, sum d*d, max - min), exactly ``stage_cycles()["disp"]``
    cycles after the channel's last beat."""
    x, gamma, beta = _batch(cfg, seed=3)
    ref = bn_forward(x, gamma, beta, cfg)
    lasts, outs = _feed_channels(DispersionStage(cfg), cfg, x, ref.mu, seed=4)
    assert [v for _, v in outs] == ref.disp_sum.tolist()
    assert [t - last for (t, _), last in zip(outs, lasts, strict=True)] == [stage_cycles(cfg)["disp"]] * cfg.channels


def _recip_expect(cfg, dsum):
    s = dsum if cfg.norm == "range" else int(div_round_array(np.array([dsum]), cfg.n)[0])
    sigma = int(norm_spec(cfg.norm).sigma_core(np.array([s]), cfg)[0]) + cfg.eps
    return s, sigma, (1 << cfg.recip_bits) // sigma


def _recip_values(cfg):
    # the largest reachable D: s = D/n (range: s = D) at the top of unsigned(disp_bits)
    top = ((1 << cfg.disp_bits) - 1) * (1 if cfg.norm == "range" else cfg.n)
    return [0, 1, 7 * cfg.n + 3, top // 3, top]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_recip_stage_handshake_latency_and_values(cfg):
    """RecipStage alone: ready only while idle and not held; o.valid exactly recip_cycles after
    the transfer, for one cycle; s, sigma, inv as the reference; back-to-back transfers."""
    dut = RecipStage(cfg)
    values = _recip_values(cfg)
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

    _simulate(dut, tb)
    assert seen == [_recip_expect(cfg, v) for v in values]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: c.norm)
def test_recip_stage_under_random_valid_and_hold(cfg):
    """The reciprocal stage's input is a real handshake: with ``i.valid`` and ``hold`` at random
    (a value stays on ``i`` until taken), every value is taken once and gives one record, in
    order, equal to the reference."""
    dut = RecipStage(cfg)
    rng = np.random.default_rng(11)
    values = _recip_values(cfg) * 2
    seen = []

    async def tb(ctx):
        k = 0
        for _ in range(len(values) * (recip_cycles(cfg) + 8)):
            valid = k < len(values) and rng.random() < 0.6
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, values[k] if k < len(values) else 0)
            ctx.set(dut.hold, rng.random() < 0.3)
            if ctx.get(dut.o.valid):
                p = dut.o.payload
                seen.append((ctx.get(p.s), ctx.get(p.sigma), ctx.get(p.inv)))
            if valid and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()

    _simulate(dut, tb)
    assert seen == [_recip_expect(cfg, v) for v in values]


def _y(cfg, x, mu, inv, gamma, beta):
    """y = sat(rnd(gamma * rnd(d * inv, R - xhat_frac), affine_shift) + beta), d = (x << frac) - mu."""
    d = (x << cfg.frac) - mu
    xhat = rnd_int(d * inv, cfg.recip_bits - cfg.xhat_frac)
    v = rnd_int(gamma * xhat, cfg.affine_shift) + beta
    return max(-(1 << (cfg.out_width - 1)), min((1 << (cfg.out_width - 1)) - 1, v))


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

    _simulate(dut, tb)
    assert got == [_y(cfg, 17, 5, 1 << 12, 3, -2), _y(cfg, -9, 5, 1 << 12, 3, -2)]


@pytest.mark.parametrize("depth", [2, None])
def test_normalize_stage_under_random_valid_and_ready(depth):
    """NormalizeStage alone, ``i.valid`` and ``o.ready`` at random: every beat taken comes out
    once, in order, with the formula's y (nothing lost or repeated), and ``o`` keeps the stream
    rule (valid and payload hold while ``ready`` is low)."""
    cfg = CFGS[1]
    dut = NormalizeStage(cfg, depth=depth)
    rng = np.random.default_rng(7)
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    beats = [([int(v) for v in rng.integers(lo, hi + 1, cfg.lanes)], int(rng.integers(-900, 900)),
              int(rng.integers(1, 1 << 14)), int(rng.integers(-100, 100)), int(rng.integers(-100, 100)))
             for _ in range(60)]
    got = []

    async def tb(ctx):
        k, held, cyc = 0, None, 0
        while len(got) < len(beats):
            cyc += 1
            assert cyc < len(beats) * 20, "the stage stopped"
            valid = k < len(beats) and rng.random() < 0.6
            ready = rng.random() < 0.5
            if valid:
                xs, mu, inv, g, b = beats[k]
                p = dut.i.payload
                for j in range(cfg.lanes):
                    ctx.set(p.x[j], xs[j])
                ctx.set(p.mu, mu)
                ctx.set(p.inv, inv)
                ctx.set(p.gamma, g)
                ctx.set(p.beta, b)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.o.ready, ready)
            out = [ctx.get(dut.o.payload[j]) for j in range(cfg.lanes)] if ctx.get(dut.o.valid) else None
            if held is not None:
                assert out == held                      # held from the cycle it was refused
            held = out if out is not None and not ready else None
            if out is not None and ready:
                got.append(out)
            if valid and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()

    _simulate(dut, tb)
    assert got == [[_y(cfg, x, mu, inv, g, b) for x in xs] for xs, mu, inv, g, b in beats]


def test_no_branch_on_norm_names_in_shared_hw_code():
    """What differs per norm sits in that norm's own module (the modules of the dispersion
    datapath and backward term its units name): no other hw module compares a norm, or anything,
    with a norm's name."""
    import inspect
    import re
    from pathlib import Path

    import l1bn.hw
    from l1bn.spec.norms import resolve

    own = set()
    for spec in NORMS.values():
        own.add(inspect.getsourcefile(resolve(spec.hw_unit).dispersion))
        if spec.hw_backward:
            own.add(inspect.getsourcefile(resolve(spec.hw_backward).term))
    names = "|".join(re.escape(n) for n in NORMS)
    branch = re.compile(rf"""(\bnorm\w*\s*(==|!=|\bin\b))|((==|!=)\s*["']({names})["'])|(["']({names})["']\s*(==|!=))""")
    shared = [p for p in sorted(Path(l1bn.hw.__file__).parent.glob("*.py")) if str(p) not in own]
    assert own and len(shared) > 10
    hits = [f"{p.name}:{i}: {line.strip()}" for p in shared
            for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    # the one allowed form: a unit checks that its config is for its own norm (cls.norm)
    assert [h for h in hits if not re.search(r"\.norm != (cls\.)?norm\b|\.norm != cls\.norm", h)] == []


def test_no_hw_elaborate_method_is_longer_than_about_80_lines():
    """Long ``elaborate`` methods are split into named sub-components or helpers (amaranth's
    SyncFIFOBuffered is about 70 lines): every ``elaborate`` under hw/ (hw/train included) stays
    within 90 lines."""
    import ast
    from pathlib import Path

    import l1bn.hw

    root = Path(l1bn.hw.__file__).parent
    lengths = {}
    for p in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "elaborate":
                lengths[f"{p.relative_to(root)}:{node.lineno}"] = node.end_lineno - node.lineno + 1
    assert len(lengths) > 20                       # the walk found the components
    assert {k: v for k, v in lengths.items() if v > 90} == {}
