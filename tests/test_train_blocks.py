"""The training accelerator's blocks alone in Amaranth's simulator, each against the integer
reference (bit-exact ``==``) and its cycle formula: the run-time shifters, the error quantizer,
..."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator
from l1bn.hw.train.fixed import RunShift, bitlen, magnitude, rnd_var, stochastic_var
from l1bn.hw.train.plan import TrainPlan
from l1bn.hw.train.quant import QuantEngine, quant_cycles
from l1bn.spec.reference.core import rshift_round_array
from l1bn.spec.reference.grad_quant import quantize_error, stochastic_shift
from l1bn.spec.training import IntTrainConfig, TrainLayer
from train_hw_model import daccw_words
from train_hw_rig import Rig, read_mem, run_cmd, simulate

TINY = IntTrainConfig(in_shape=(2, 4, 4), layers=(TrainLayer(kind="conv2d", out=3, kernel=3, stride=2, padding=1),
                                                 TrainLayer(kind="conv2d", out=5, kernel=3, stride=1, padding=1),
                                                 TrainLayer(kind="linear", out=4, kernel=1, stride=1, padding=0)),
                      batch=3, lfsr_lanes=4)


def test_run_time_shifters_match_the_reference():
    """rnd(v, s), the stochastic shift and bitlen(|v|) for every s in range, v across 9 bits."""
    m = Module()
    v, s, w = Signal(signed(9)), Signal(signed(7)), Signal(32)
    o1, o2, o3 = Signal(signed(20)), Signal(signed(20)), Signal(8)
    m.d.comb += [o1.eq(rnd_var(v, s, -5, 12)), o2.eq(stochastic_var(v, s, w, -5, 40)),
                 o3.eq(bitlen(magnitude(v)))]
    rng = np.random.default_rng(1)

    async def tb(ctx):
        cases = [(vv, ss) for vv in range(-256, 256, 5) for ss in range(-5, 13)]
        cases += [(vv, ss) for vv in (-256, 255, 0, 1, -1) for ss in range(30, 41)]
        for vv, ss in cases:
            ww = int(rng.integers(0, 2 ** 32))
            ctx.set(v, vv)
            ctx.set(s, ss)
            ctx.set(w, ww)
            await ctx.delay(1e-9)
            if ss <= 12:
                assert ctx.get(o1) == int(rshift_round_array(np.array([vv]), ss)[0]), (vv, ss)
            want = int(stochastic_shift(np.array([vv]), ss, np.array([ww], dtype=np.uint32))[0])
            assert ctx.get(o2) == want, (vv, ss, ww)
            assert ctx.get(o3) == abs(vv).bit_length()

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("stochastic,smin,smax", [(False, -5, 12), (True, -5, 40), (True, 0, 9), (False, -3, 0)])
def test_pipelined_run_time_shift_matches_the_reference(stochastic, smin, smax):
    """RunShift (decode register, add stage, shift stage) equals rnd(v, s) or the stochastic shift
    for every s in range, v across 9 bits, random words."""
    from amaranth import Signal as Sig

    m = Module()
    v, s, w = Sig(signed(9)), Sig(signed(8)), Sig(32)
    rs = RunShift(m, s, smin, smax, name="t", stochastic=stochastic)
    ta = Sig.like(rs.add(v, rs.bias(w)))
    u = Sig.like(rs.shift(ta))
    m.d.sync += [ta.eq(rs.add(v, rs.bias(w))), u.eq(rs.shift(ta))]
    rng = np.random.default_rng(3)

    async def tb(ctx):
        for ss in range(smin, smax + 1):
            ctx.set(s, ss)
            await ctx.tick()                       # the decode registers follow s
            for vv in list(range(-256, 256, 37)) + [-256, -1, 0, 1, 255]:
                ww = int(rng.integers(0, 2 ** 32))
                ctx.set(v, vv)
                ctx.set(w, ww)
                await ctx.tick().repeat(2)
                if stochastic:
                    want = int(stochastic_shift(np.array([vv]), ss, np.array([ww], dtype=np.uint32))[0])
                else:
                    want = int(rshift_round_array(np.array([vv]), ss)[0])
                assert ctx.get(u) == want, (vv, ss, ww)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_bitlen_of_wide_values():
    """The balanced priority encoder at 61 bits: every bit length 0..61, and random values."""
    m = Module()
    v = Signal(61)
    o = Signal(8)
    m.d.comb += o.eq(bitlen(v))
    rng = np.random.default_rng(2)
    values = [0] + [1 << k for k in range(61)] + [(1 << k) - 1 for k in range(1, 62)]
    values += [int(rng.integers(0, 1 << 61)) >> int(rng.integers(0, 61)) for _ in range(200)]

    async def tb(ctx):
        for val in values:
            ctx.set(v, val)
            await ctx.delay(1e-9)
            assert ctx.get(o) == val.bit_length(), val

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("layer,scale", [(0, 1 << 30), (1, 1000), (2, 50), (1, 0)])
def test_error_quantizer(layer, scale):
    """ebuf -> dacc and daccw equal quantize_error and the plan's word layout; cycles = E + 2."""
    plan = TrainPlan(TINY, rows=2)
    g = plan.layers[layer]
    rng = np.random.default_rng(layer)
    shape = (g.out, plan.n * g.hwo)
    v = rng.integers(-scale, scale + 1, shape) if scale else np.zeros(shape, dtype=np.int64)
    q, s = quantize_error(v, TINY.gbits)
    ebuf = np.zeros(plan.mem["ebuf"]["depth"], dtype=np.int64)
    ebuf[:v.size] = v.reshape(-1)
    eng = QuantEngine(plan)
    rig = Rig(eng, plan, {"ebuf": ebuf.tolist()})
    out = {}

    async def bench(ctx):
        out["cycles"], _ = await run_cmd(ctx, eng, op=layer, s=s)
        out["dacc"] = read_mem(ctx, rig.mems["dacc"], v.size)
        out["daccw"] = read_mem(ctx, rig.mems["daccw"])

    simulate(rig, bench)
    assert np.array_equal(out["dacc"], q.reshape(-1))
    want = daccw_words(plan, layer, q)
    assert np.array_equal(out["daccw"][:len(want)][:, :], want[:, :plan.rows])
    assert out["cycles"] == quant_cycles(v.size)


def _trace(cfg, seed=0):
    from l1bn.spec.reference.train import init_state, train_step
    rng = np.random.default_rng(seed)
    state = init_state(cfg, seed)
    x = rng.integers(0, 1 << cfg.abits, (cfg.batch, *cfg.in_shape))
    y = rng.integers(0, cfg.classes, cfg.batch)
    _, r = train_step(state, x, y, cfg, trace=True)
    return state, x, y, r.trace


@pytest.mark.parametrize("rows", [2, 3])
def test_mac_engine_runs_every_product(rows):
    """Every MAC operation of a tiny net (stride 2, padding, a linear layer) on the engine:
    outputs equal the reference's acc, logits, input and weight gradients; ``done`` reports the
    bit length of the (masked) max; cycles equal mac_cycles."""
    from l1bn.hw.train.mac_engine import MacEngine, mac_cycles
    from train_hw_model import fw_words, fwt_words

    plan = TrainPlan(TINY, rows=rows)
    cfg = TINY
    _, x, _, tr = _trace(cfg)
    act = np.zeros(plan.mem["act"]["depth"], dtype=np.int64)
    act[:x.size] = x.transpose(1, 0, 2, 3).reshape(-1)
    mask = np.zeros(plan.mem["mask"]["depth"], dtype=np.int64)
    fw = np.zeros((plan.mem["fw"]["depth"], rows), dtype=np.int64)
    fwt = np.zeros((plan.mem["fwt"]["depth"], rows), dtype=np.int64)
    for g in plan.layers:
        t = tr[g.name]
        if g.bn:
            a = t["act"].reshape(-1)
            act[plan.bases["act"][g.index + 1]:][:a.size] = a
            mk = t["mask"].reshape(-1)
            mask[plan.bases["acc"][g.index]:][:mk.size] = mk
        words = fw_words(plan, g.index, t["w"])
        fw[plan.bases["fw"][g.index]:][:len(words)] = words
        if g.index:
            words = fwt_words(plan, g.index, t["w"])
            fwt[plan.bases["fwt"][g.index]:][:len(words)] = words
    eng = MacEngine(plan)
    rig = Rig(eng, plan, {"act": act.tolist(), "mask": mask.tolist(), "fw": fw.tolist(), "fwt": fwt.tolist()})
    got = []

    async def bench(ctx):
        for key in plan.mac_order:
            kind, i = key
            g = plan.layers[i]
            dacc = tr[g.name]["dacc"]
            if kind != "fwd":                       # this layer's gradient, as the quantizer leaves it
                for e, v in enumerate(dacc.reshape(-1)):
                    ctx.set(rig.mems["dacc"].memory.data[e], int(v))
                for w, word in enumerate(daccw_words(plan, i, dacc)):
                    ctx.set(rig.mems["daccw"].memory.data[w], [int(v) for v in word])
            cyc, done = await run_cmd(ctx, eng, op=plan.mac_order.index(key))
            dst = {"fwd": "acc" if g.bn else "logits", "da": "da", "dw": "dw"}[kind]
            got.append((key, cyc, int(done.bits), read_mem(ctx, rig.mems[dst])))

    simulate(rig, bench)
    for (kind, i), cyc, bits, mem in got:
        g = plan.layers[i]
        t = tr[g.name]
        op = plan.mac_ops[(kind, i)]
        if kind == "fwd":
            want = t["acc"].reshape(-1) if g.bn else tr["logits"].reshape(-1)
            base = plan.bases["acc"][i] if g.bn else 0
        elif kind == "dw":
            want, base = t["dW"].reshape(-1), plan.bases["master"][i]
        else:
            ig = t["input_grad"]
            want, base = ig.reshape(-1), 0
        assert np.array_equal(mem[base:base + want.size], want), (kind, i)
        mx = np.abs(want * tr[plan.layers[i - 1].name]["mask"].reshape(-1)).max() if kind == "da" else np.abs(want).max()
        assert bits == int(mx).bit_length(), (kind, i)
        assert cyc == mac_cycles(plan, op), (kind, i, cyc, mac_cycles(plan, op))


def _two_steps(cfg, seed=0):
    """State after one step, the images and labels of a second step and its trace and result."""
    from l1bn.spec.reference.train import init_state, train_step
    rng = np.random.default_rng(seed)
    s0 = init_state(cfg, seed)
    x0 = rng.integers(0, 1 << cfg.abits, (cfg.batch, *cfg.in_shape))
    y0 = rng.integers(0, cfg.classes, cfg.batch)
    s1, _ = train_step(s0, x0, y0, cfg)
    x = rng.integers(0, 1 << cfg.abits, (cfg.batch, *cfg.in_shape))
    y = rng.integers(0, cfg.classes, cfg.batch)
    s2, r = train_step(s1, x, y, cfg, trace=True)
    return s1, s2, x, y, r.trace


def _chan(plan, name, values_per_layer):
    out = np.zeros(plan.mem[name]["depth"], dtype=np.int64)
    for i, v in zip(plan.bn_layers, values_per_layer, strict=False):
        out[plan.bases["chan"][i]:][:len(v)] = v
    return out


@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
@pytest.mark.parametrize("layer", [0, 1])
def test_bn_forward_engine(norm, layer):
    """acc -> act, mask, mu, inv and the running statistics (momentum step) of the reference's
    second step; cycles = the unit's latency + BNF_EXTRA."""
    import dataclasses

    from l1bn.hw.train.bn_engines import BNForwardEngine, bnf_cycles
    from l1bn.spec.reference.grad_quant import forward_weight

    cfg = dataclasses.replace(TINY, norm=norm)
    plan = TrainPlan(cfg, rows=2)
    s1, s2, _, _, tr = _two_steps(cfg, seed=layer)
    g = plan.layers[layer]
    t = tr[g.name]
    acc = np.zeros(plan.mem["acc"]["depth"], dtype=np.int64)
    acc[plan.bases["acc"][layer]:][:t["acc"].size] = t["acc"].reshape(-1)
    init = {"acc": acc, "gamma": _chan(plan, "gamma", s1.gamma), "beta": _chan(plan, "beta", s1.beta),
            "run_mu": _chan(plan, "run_mu", s1.run_mu), "run_sigma": _chan(plan, "run_sigma", s1.run_sigma)}
    eng = BNForwardEngine(plan, layer)
    rig = Rig(eng, plan, {k: v.tolist() for k, v in init.items()})
    _, s_w = forward_weight(s1.master[layer], cfg.wbits)
    out = {}

    async def bench(ctx):
        out["cycles"], _ = await run_cmd(ctx, eng, sh=s_w + cfg.wbits - 1, first=0)
        for name in ("act", "mask", "stat_mu", "stat_inv", "run_mu", "run_sigma"):
            out[name] = read_mem(ctx, rig.mems[name])

    simulate(rig, bench)
    size, cb = t["acc"].size, plan.bases["chan"][layer]
    assert np.array_equal(out["act"][plan.bases["act"][layer + 1]:][:size], t["act"].reshape(-1))
    assert np.array_equal(out["mask"][plan.bases["acc"][layer]:][:size], t["mask"].reshape(-1))
    assert np.array_equal(out["stat_mu"][cb:cb + g.out], t["bn"].mu)
    assert np.array_equal(out["stat_inv"][cb:cb + g.out], t["bn"].inv)
    assert np.array_equal(out["run_mu"][cb:cb + g.out], s2.run_mu[layer])
    assert np.array_equal(out["run_sigma"][cb:cb + g.out], s2.run_sigma[layer])
    assert out["cycles"] == bnf_cycles(plan, layer)


@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
@pytest.mark.parametrize("layer", [0, 1])
def test_bn_backward_engine(norm, layer):
    """(acc, dA, mask) -> u * gamma * inv, dgamma, dbeta of the reference and their maxima;
    cycles = the unit's latency + BNB_EXTRA."""
    import dataclasses

    from l1bn.hw.train.bn_engines import BNBackwardEngine, bnb_cycles

    cfg = dataclasses.replace(TINY, norm=norm)
    plan = TrainPlan(cfg, rows=2)
    s1, _, _, _, tr = _two_steps(cfg, seed=layer + 3)
    g = plan.layers[layer]
    t, above = tr[g.name], tr[plan.layers[layer + 1].name]
    acc = np.zeros(plan.mem["acc"]["depth"], dtype=np.int64)
    mask = np.zeros(plan.mem["mask"]["depth"], dtype=np.int64)
    acc[plan.bases["acc"][layer]:][:t["acc"].size] = t["acc"].reshape(-1)
    mask[plan.bases["acc"][layer]:][:t["acc"].size] = t["mask"].reshape(-1)
    da = np.zeros(plan.mem["da"]["depth"], dtype=np.int64)
    ig = above["input_grad"].reshape(-1)
    da[:ig.size] = ig
    _, s = quantize_error(ig * t["mask"].reshape(-1), cfg.gbits)
    init = {"acc": acc, "mask": mask, "da": da, "gamma": _chan(plan, "gamma", s1.gamma),
            "stat_mu": _chan(plan, "stat_mu", [tr[plan.layers[i].name]["bn"].mu for i in plan.bn_layers]),
            "stat_inv": _chan(plan, "stat_inv", [tr[plan.layers[i].name]["bn"].inv for i in plan.bn_layers])}
    eng = BNBackwardEngine(plan, layer)
    rig = Rig(eng, plan, {k: v.tolist() for k, v in init.items()})
    out = {}

    async def bench(ctx):
        out["cycles"], out["done"] = await run_cmd(ctx, eng, s=s)
        for name in ("ebuf", "dgamma", "dbeta"):
            out[name] = read_mem(ctx, rig.mems[name])

    simulate(rig, bench)
    cb = plan.bases["chan"][layer]
    assert np.array_equal(out["ebuf"][:t["dxw"].size], t["dxw"].reshape(-1))
    assert np.array_equal(out["dgamma"][cb:cb + g.out], t["dgamma"])
    assert np.array_equal(out["dbeta"][cb:cb + g.out], t["dbeta"])
    d = out["done"]
    assert int(d.dx) == int(np.abs(t["dxw"]).max()).bit_length()
    assert int(d.dgamma) == int(np.abs(t["dgamma"]).max()).bit_length()
    assert int(d.dbeta) == int(np.abs(t["dbeta"]).max()).bit_length()
    assert out["cycles"] == bnb_cycles(plan, layer)


def _place(plan, name, base, values):
    out = np.zeros(plan.mem[name]["depth"], dtype=np.int64)
    for b, v in zip(base, values, strict=True):
        out[b:b + v.size] = v.reshape(-1)
    return out


def _reference_update(state, tr, cfg):
    """The masters, gamma, beta and bank after the contract's updates (quantize_update of the spec,
    tensor by tensor in its order) and the count of clipped values."""
    from l1bn.spec.reference.grad_quant import quantize_update
    bank, n = state.lfsr, 0
    lo, hi = -(1 << (cfg.master_bits - 1)), (1 << (cfg.master_bits - 1)) - 1
    master, gamma, beta = list(state.master), list(state.gamma), list(state.beta)
    for i, nm in enumerate(cfg.names):
        items = [(master, tr[nm]["dW"], "weights", cfg.lr_shift)]
        if i < len(cfg.names) - 1:
            items += [(gamma, tr[nm]["dgamma"], "gamma", cfg.bn_lr_shift),
                      (beta, tr[nm]["dbeta"], "beta", cfg.bn_lr_shift)]
        for par, grad, what, lr in items:
            delta, _, bank = quantize_update(grad, cfg.gbits, cfg.update_shift(what, lr), cfg.grad_rounding, bank)
            new = par[i] - delta.reshape(par[i].shape)
            n += int(((new < lo) | (new > hi)).sum())
            par[i] = np.clip(new, lo, hi)
    return master, gamma, beta, bank, n


@pytest.mark.parametrize("rounding,lanes", [("stochastic", 4), ("stochastic", 1), ("nearest", 4)])
def test_update_engine(rounding, lanes):
    """Every tensor's update in the contract's order: masters, gamma, beta and the LFSR bank equal
    the spec's (``quantize_update``, from masters pushed to both ends so some saturate); done
    reports the largest new weight and the saturation count; cycles = update_cycles."""
    import dataclasses

    from l1bn.hw.train.update import UpdateEngine, update_cycles

    cfg = dataclasses.replace(TINY, grad_rounding=rounding, lfsr_lanes=lanes)
    plan = TrainPlan(cfg, rows=2)
    s1, _, _, _, tr = _two_steps(cfg, seed=5)
    top = (1 << (cfg.master_bits - 1)) - 1
    master = [m.copy() for m in s1.master]
    gamma = [g.copy() for g in s1.gamma]
    for i, nm in enumerate(cfg.names):            # clip where the step pushes hardest
        master[i].reshape(-1)[np.argmax(tr[nm]["dW"])] = -top - 1
        master[i].reshape(-1)[np.argmin(tr[nm]["dW"])] = top
    gamma[0][np.argmin(tr[cfg.names[0]]["dgamma"])] = top
    s1 = dataclasses.replace(s1, master=tuple(master), gamma=tuple(gamma))
    want_m, want_g, want_b, want_bank, want_sat = _reference_update(s1, tr, cfg)
    names = cfg.names
    mb = [plan.bases["master"][g.index] for g in plan.layers]
    cb = [plan.bases["chan"][i] for i in plan.bn_layers]
    init = {"lfsr": s1.lfsr.astype(np.int64), "master": _place(plan, "master", mb, s1.master),
            "dw": _place(plan, "dw", mb, [tr[nm]["dW"] for nm in names]),
            "gamma": _place(plan, "gamma", cb, s1.gamma), "beta": _place(plan, "beta", cb, s1.beta),
            "dgamma": _place(plan, "dgamma", cb, [tr[names[i]]["dgamma"] for i in plan.bn_layers]),
            "dbeta": _place(plan, "dbeta", cb, [tr[names[i]]["dbeta"] for i in plan.bn_layers])}
    eng = UpdateEngine(plan)
    rig = Rig(eng, plan, {k: v.tolist() for k, v in init.items()})
    out = {"done": []}

    async def bench(ctx):
        for op, (what, i) in enumerate(plan.update_tensors()):
            grad = {"weights": tr[names[i]]["dW"], "gamma": tr[names[i]].get("dgamma"),
                    "beta": tr[names[i]].get("dbeta")}[what]
            mx = int(np.abs(grad).max())
            s = (mx.bit_length() - (cfg.gbits - 1) if mx else 0) + max(0, -plan.update_shift(what))
            cyc, done = await run_cmd(ctx, eng, op=op, s=s)
            out["done"].append((what, i, cyc, int(done.max), int(done.sat)))
        for name in ("master", "gamma", "beta", "lfsr"):
            out[name] = read_mem(ctx, rig.mems[name])

    simulate(rig, bench)
    assert np.array_equal(out["master"], _place(plan, "master", mb, want_m))
    assert np.array_equal(out["gamma"], _place(plan, "gamma", cb, want_g))
    assert np.array_equal(out["beta"], _place(plan, "beta", cb, want_b))
    assert np.array_equal(out["lfsr"], want_bank.astype(np.int64))
    for what, i, cyc, mx, _ in out["done"]:
        assert cyc == update_cycles(plan, what, i)
        if what == "weights":
            assert mx == int(np.abs(want_m[i]).max())
    assert sum(d[4] for d in out["done"]) == want_sat > 0


def test_prep_engine():
    """Every layer's forward weights in the fw and fwt layouts; done reports s_w."""
    from l1bn.hw.train.update import PrepEngine, prep_cycles
    from l1bn.spec.reference.grad_quant import forward_weight
    from train_hw_model import fw_words, fwt_words

    plan = TrainPlan(TINY, rows=2)
    s1, _, _, _, _ = _two_steps(TINY, seed=2)
    master = list(s1.master)
    master[1] = np.zeros_like(master[1])                     # an all-zero layer: s_w = 0
    master[2] = master[2] // 300                             # small magnitudes: a left shift
    mb = [plan.bases["master"][g.index] for g in plan.layers]
    eng = PrepEngine(plan)
    rig = Rig(eng, plan, {"master": _place(plan, "master", mb, master).tolist()})
    out = []

    async def bench(ctx):
        for g in plan.layers:
            cyc, done = await run_cmd(ctx, eng, op=g.index, max=int(np.abs(master[g.index]).max()))
            out.append((cyc, int(done.s_w)))
        out.append((read_mem(ctx, rig.mems["fw"]), read_mem(ctx, rig.mems["fwt"])))

    simulate(rig, bench)
    fw, fwt = out[-1]
    for g in plan.layers:
        w, s = forward_weight(master[g.index], TINY.wbits)
        assert out[g.index] == (prep_cycles(plan, g.index), s)
        words = fw_words(plan, g.index, w)
        assert np.array_equal(fw[plan.bases["fw"][g.index]:][:len(words)], words)
        if g.index:
            words = fwt_words(plan, g.index, w)
            assert np.array_equal(fwt[plan.bases["fwt"][g.index]:][:len(words)], words)

def test_dumper_reads_back_under_backpressure():
    """The read-back of every dumped memory (``master`` with its registered output, read latency
    2; the per-channel memories, 1): all values in order, with ``o`` always ready (cycles =
    dump_cycles) and with ``o`` refusing one beat in three and two in a row."""
    from l1bn.hw.train.io import Dumper, dump_cycles, dump_segments

    plan = TrainPlan(TINY, rows=2)
    assert plan.mem["master"]["latency"] == 2
    rng = np.random.default_rng(4)
    init = {n: rng.integers(-2000, 2000, plan.mem[n]["depth"]).tolist()
            for n in ("master", "gamma", "beta", "run_mu")}
    init["run_sigma"] = rng.integers(0, 2000, plan.mem["run_sigma"]["depth"]).tolist()
    want = [init[mem][b + j] for mem, b, c, _ in dump_segments(plan) for j in range(c)]
    eng = Dumper(plan)
    rig = Rig(eng, plan, init)
    got = {}

    async def bench(ctx):
        for name, refuse in (("ready", ()), ("stalled", (1, 4, 5))):
            vals = []
            ctx.set(eng.cmd.valid, 1)
            await ctx.tick()
            ctx.set(eng.cmd.valid, 0)
            ctx.set(eng.done.ready, 1)
            cyc = 1
            while not ctx.get(eng.done.valid):
                ready = cyc % 7 not in refuse
                ctx.set(eng.o.ready, ready)
                if ready and ctx.get(eng.o.valid):
                    vals.append(int(ctx.get(eng.o.payload)))
                await ctx.tick()
                cyc += 1
            await ctx.tick()
            got[name] = (cyc, vals)

    simulate(rig, bench)
    assert got["ready"] == (dump_cycles(plan), want)
    assert got["stalled"][1] == want



@pytest.mark.parametrize("cfg", [TINY, IntTrainConfig(batch=4)], ids=["tiny", "digits"])
def test_loss_engine(cfg):
    """logits -> the softmax-CE gradient g (ebuf, class-major), the logits on ``z`` in order, the
    bit length of max |g|, the correct count and the probability error; cycles = loss_cycles."""
    from l1bn.hw.train.loss import LossEngine, loss_cycles

    plan = TrainPlan(cfg, rows=2)
    _, _, _, y, tr = _two_steps(cfg, seed=7)
    z = tr["logits"]
    n, C = z.shape
    logits = np.zeros(plan.mem["logits"]["depth"], dtype=np.int64)
    logits[:z.size] = z.reshape(-1)
    eng = LossEngine(plan)
    rig = Rig(eng, plan, {"logits": logits.tolist(), "labels": y.tolist()})
    out = {"z": []}

    def watch(ctx):
        if ctx.get(eng.z.valid):
            out["z"].append(int(ctx.get(eng.z.payload)))

    async def bench(ctx):
        ctx.set(eng.z.ready, 1)
        shift = cfg.log2e_bits + tr["logit_exp"] - cfg.exp_frac
        out["cycles"], out["done"] = await run_cmd(ctx, eng, shift=shift, watch=watch)
        out["ebuf"] = read_mem(ctx, rig.mems["ebuf"], n * C)

    simulate(rig, bench)
    g = tr["loss"]["g"]
    p = g + (np.eye(C, dtype=np.int64)[y] << cfg.prob_bits)
    assert np.array_equal(out["ebuf"], g.T.reshape(-1))
    assert out["z"] == z.reshape(-1).tolist()
    d = out["done"]
    assert int(d.bits) == int(np.abs(g).max()).bit_length()
    assert int(d.correct) == int((z.argmax(1) == y).sum())
    assert int(d.perr) == int(((1 << cfg.prob_bits) - p[np.arange(n), y]).sum())
    assert out["cycles"] == loss_cycles(plan)
