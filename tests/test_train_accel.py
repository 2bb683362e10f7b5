"""The whole training accelerator in Amaranth's simulator: K steps of a tiny net (two BN layers,
a stride-2 convolution, a linear output layer) against the integer reference, bit for bit: every
step's logits, the per-step result, and after the last step every master weight, gamma, beta and
running statistic read back; the step period equals the schedule's formula."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from l1bn.hw.train.accel import TrainAccelerator
from l1bn.spec.reference.train import init_state, train_step
from l1bn.spec.training import IntTrainConfig, TrainLayer

TINY = IntTrainConfig(in_shape=(2, 4, 4), layers=(TrainLayer(kind="conv2d", out=3, kernel=3, stride=2, padding=1),
                                                 TrainLayer(kind="conv2d", out=5, kernel=3, stride=1, padding=1),
                                                 TrainLayer(kind="linear", out=4, kernel=1, stride=1, padding=0)),
                      batch=3, lfsr_lanes=4)


def reference_run(cfg, seed, batches):
    state = init_state(cfg, seed)
    logits, results = [], []
    for x, y in batches:
        state, r = train_step(state, x, y, cfg)
        logits.append(r.logits)
        results.append(r)
    return state, logits, results


def state_values(cfg, state):
    """The state in the accelerator's read-back order."""
    out = [m.reshape(-1) for m in state.master]
    for i in range(len(cfg.layers) - 1):
        out += [state.gamma[i], state.beta[i], state.run_mu[i], state.run_sigma[i]]
    return np.concatenate(out).tolist()


def simulate_steps(acc, batches):
    """Feed the batches back to back, collect z, o and the read-back state (pysim)."""
    sim = Simulator(acc)
    sim.add_clock(1e-8)
    got = {"z": [], "o": [], "st": [], "o_cycle": [], "in_cycle": []}
    npix = int(np.prod(acc.cfg.in_shape))
    beats = [(int(p), int(y)) for x, ys in batches for img, y in zip(x, ys, strict=True)
             for p in img.reshape(-1)]
    total_state = sum(s[2] for s in acc.dump_segments)

    async def bench(ctx):
        cyc, k = 0, 0
        ctx.set(acc.z.ready, 1)
        ctx.set(acc.o.ready, 1)
        ctx.set(acc.st.ready, 1)
        while len(got["o"]) < len(batches):
            if k < len(beats):
                ctx.set(acc.i.valid, 1)
                ctx.set(acc.i.payload.pixel, beats[k][0])
                ctx.set(acc.i.payload.label, beats[k][1])
            else:
                ctx.set(acc.i.valid, 0)
            await ctx.delay(1e-9)
            if k < len(beats) and ctx.get(acc.i.ready):
                if k % (npix * acc.cfg.batch) == 0:
                    got["in_cycle"].append(cyc)
                k += 1
            if ctx.get(acc.z.valid):
                got["z"].append(int(ctx.get(acc.z.payload)))
            if ctx.get(acc.o.valid):
                got["o"].append({f: int(getattr(ctx.get(acc.o.payload), f)) for f in ("step", "correct", "perr", "saturated")})
                got["o_cycle"].append(cyc)
            await ctx.tick()
            cyc += 1
        ctx.set(acc.i.valid, 0)
        ctx.set(acc.rd.valid, 1)
        while not ctx.get(acc.rd.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(acc.rd.valid, 0)
        while len(got["st"]) < total_state:
            if ctx.get(acc.st.valid):
                got["st"].append(int(ctx.get(acc.st.payload)))
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("norm", ["l1", pytest.param("l2", marks=pytest.mark.slow),
                                  pytest.param("range", marks=pytest.mark.slow)])
def test_tiny_net_trains_bit_exact(norm):
    import dataclasses
    cfg = dataclasses.replace(TINY, norm=norm)
    rng = np.random.default_rng(11)
    batches = [(rng.integers(0, 16, (cfg.batch, *cfg.in_shape)), rng.integers(0, cfg.classes, cfg.batch))
               for _ in range(2)]
    acc = TrainAccelerator(cfg, rows=2, seed=3)
    got = simulate_steps(acc, batches)
    state, logits, results = reference_run(cfg, 3, batches)
    assert got["z"] == np.concatenate([z.reshape(-1) for z in logits]).tolist()
    for k, (o, r) in enumerate(zip(got["o"], results, strict=True)):
        assert o["step"] == k + 1 and o["correct"] == r.correct and o["saturated"] == r.master_saturated
    assert got["st"] == state_values(cfg, state)
    # batches back to back: result to result is the formula; the first input beat to the
    # result is the formula less the three cycles before the loader takes the first beat
    assert np.diff(got["o_cycle"]).tolist() == [acc.cycles_per_step] * (len(batches) - 1)
    assert [o - i for o, i in zip(got["o_cycle"], got["in_cycle"], strict=True)] == [acc.cycles_per_step - 3] * len(batches)


TWO_LAYER = IntTrainConfig(in_shape=(1, 4, 4), layers=(TrainLayer(kind="conv2d", out=4),
                                                      TrainLayer(kind="linear", out=3, kernel=1, stride=1, padding=0)),
                           batch=8, lfsr_lanes=16)


@pytest.mark.parametrize("norm", ["l1", pytest.param("l2", marks=pytest.mark.slow), "range"])
def test_two_layer_net_on_icarus(norm, tmp_path):
    """3 steps of batch 8 on Icarus (cocotb): every step's logits and result, then every master
    weight, gamma, beta and running statistic read back, equal the reference; the result period
    equals the formula."""
    import dataclasses

    from l1bn.sim.simulate.train import simulate_train

    cfg = dataclasses.replace(TWO_LAYER, norm=norm)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (24, 1, 4, 4))
    y = rng.integers(0, 3, 24)
    r = simulate_train(cfg, x, y, steps=3, rows=4, seed=1, simulator="icarus", build_dir=tmp_path)
    assert r["passed"], r["first"]
    assert r["logit_mismatches"] == r["result_mismatches"] == r["state_mismatches"] == 0
    assert r["logits"] == 3 * 8 * 3 and r["state_values"] == 4 * 9 + 3 * 64 + 4 * 4
    assert r["cycles_per_step"] == [r["formula_cycles"]]


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_digits_cnn_on_verilator(norm, tmp_path):
    """The digits CNN, batch 8, 3 steps of real digits on Verilator (about 8 minutes: most of it
    the C++ build): every logit, result and state value equals the reference; the measured cycles
    per step equal the formula and the array is busy in >= 70 % of them."""
    import dataclasses

    from l1bn.sim.simulate.train import simulate_train
    from l1bn.spec.reference.train import quantize_images
    from l1bn.sw.data import digits_split

    cfg = IntTrainConfig(batch=8, norm=norm)
    split = digits_split()["train"]
    x = quantize_images(split[0][:24].numpy(), cfg)
    y = split[1][:24].numpy().astype(np.int64)
    r = simulate_train(dataclasses.replace(cfg), x, y, steps=3, rows=8, seed=0, simulator="verilator",
                       build_dir=tmp_path)
    assert r["passed"], r["first"]
    assert r["logit_mismatches"] == r["result_mismatches"] == r["state_mismatches"] == 0
    assert r["state_values"] == 15568
    assert r["cycles_per_step"] == [r["formula_cycles"]] and r["array_busy"] >= 0.70
