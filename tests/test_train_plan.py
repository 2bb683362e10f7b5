"""The training accelerator's plan (hw/train/plan.py): its tap lists, layouts and MAC operations
reproduce the integer reference's products bit for bit when walked the way the hardware walks
them (tests/train_hw_model.py), and bad configs are refused."""

import numpy as np
import pytest
from l1bn.hw.train.plan import TrainPlan, tap_lists, train_geometry
from l1bn.spec.reference.train import init_state, train_step
from l1bn.spec.training import IntTrainConfig, TrainLayer
from train_hw_model import daccw_words, fw_words, fwt_words, run_mac_op

TINY = IntTrainConfig(in_shape=(2, 5, 5), layers=(TrainLayer(kind="conv2d", out=3, kernel=3, stride=2, padding=1),
                                                 TrainLayer(kind="conv2d", out=5, kernel=2, stride=1, padding=1),
                                                 TrainLayer(kind="linear", out=4, kernel=1, stride=1, padding=0)),
                      batch=3, lfsr_lanes=16)


def _placed(plan, name, base, words):
    mem = np.zeros((plan.mem[name]["depth"], plan.rows), dtype=np.int64)
    mem[base:base + len(words)] = words
    return mem


def _trace(cfg, seed=0):
    rng = np.random.default_rng(seed)
    state = init_state(cfg, seed)
    x = rng.integers(0, 1 << cfg.abits, (cfg.batch, *cfg.in_shape))
    y = rng.integers(0, cfg.classes, cfg.batch)
    _, r = train_step(state, x, y, cfg, trace=True)
    return x, r.trace


@pytest.mark.parametrize("cfg", [TINY, IntTrainConfig(batch=2)], ids=["tiny", "digits"])
@pytest.mark.parametrize("rows", [1, 4, 5])
def test_mac_ops_reproduce_the_reference_products(cfg, rows):
    plan = TrainPlan(cfg, rows=rows)
    x, tr = _trace(cfg)
    n = cfg.batch
    act = np.zeros(plan.mem["act"]["depth"], dtype=np.int64)
    act[:x.size] = x.transpose(1, 0, 2, 3).reshape(-1)            # (c, n, y, x)
    for i in plan.bn_layers:
        a = tr[cfg.names[i]]["act"].reshape(-1)
        act[plan.bases["act"][i + 1]:plan.bases["act"][i + 1] + a.size] = a
    for g in plan.layers:
        t = tr[g.name]
        # forward: acc (o, n, y, x) or the logits (n, class)
        out = np.zeros(plan.mem["acc" if g.bn else "logits"]["depth"], dtype=np.int64)
        run_mac_op(plan.mac_ops[("fwd", g.index)], rows, _placed(plan, "fw", plan.bases["fw"][g.index], fw_words(plan, g.index, t["w"])),
                   act, out)
        if g.bn:
            b = plan.bases["acc"][g.index]
            assert np.array_equal(out[b:b + t["acc"].size], t["acc"].reshape(-1))
        else:
            assert np.array_equal(out.reshape(n, g.out), tr["logits"])
        dacc = t["dacc"]                                           # (O, N*HWo)
        # weight gradient: (o, c, tap) in the master layout
        out = np.zeros(plan.mem["dw"]["depth"], dtype=np.int64)
        run_mac_op(plan.mac_ops[("dw", g.index)], rows, daccw_words(plan, g.index, dacc), act, out)
        b = plan.bases["master"][g.index]
        assert np.array_equal(out[b:b + g.weights], t["dW"].reshape(-1))
        if g.index > 0:
            out = np.zeros(plan.mem["da"]["depth"], dtype=np.int64)
            wt = _placed(plan, "fwt", plan.bases["fwt"][g.index], fwt_words(plan, g.index, t["w"]))
            run_mac_op(plan.mac_ops[("da", g.index)], rows, wt,
                       dacc.reshape(-1), out)
            ig = t["input_grad"]                                   # (C, N, H, W)
            assert np.array_equal(out[:ig.size], ig.reshape(-1))


def test_tap_lists_cover_every_valid_product_once():
    for g in train_geometry(TINY):
        tl = tap_lists(g)
        pairs = {(t, qo, qi) for qo, lst in tl["fwd"].items() for t, qi in lst}
        assert pairs == {(t, qo, qi) for qi, lst in tl["da"].items() for t, qo in lst}
        assert pairs == {(t, qo, qi) for t, lst in tl["dw"].items() for qo, qi in lst}
        assert len(pairs) == sum(len(v) for v in tl["fwd"].values())


def test_bad_configs_are_refused(monkeypatch):
    import dataclasses

    from l1bn.spec import norms

    with pytest.raises(ValueError, match="rows=0 must be an integer in 1..16"):
        TrainPlan(TINY, rows=0)
    with pytest.raises(ValueError, match="gbits=12: the MAC array takes operands of at most 8 bits"):
        TrainPlan(IntTrainConfig(gbits=12), rows=4)
    TrainPlan(IntTrainConfig(norm="range"), rows=4)         # range has its backward unit
    # a norm whose registry entry names no backward unit is refused
    monkeypatch.setitem(norms.NORMS, "range", dataclasses.replace(norms.RANGE, hw_backward=""))
    with pytest.raises(ValueError, match="norm='range' has no backward unit"):
        TrainPlan(IntTrainConfig(norm="range"), rows=4)


def test_step_figures_and_table():
    """The whole-step figures add up: the blocks are the schedule's entries, the busy fraction is
    beats over cycles; the table has one row per trainable norm and their ratio."""
    from l1bn.hw.train.schedule import schedule, step_cycles
    from l1bn.sim.report.train import _block_of, step_figures, train_norms, whole_step_table

    rows = {n: step_figures(n) for n in train_norms()}
    assert set(rows) >= {"l1", "l2"}
    for n, r in rows.items():
        plan = TrainPlan(IntTrainConfig(batch=8, norm=n), rows=8)
        assert r["cycles_per_step"] == step_cycles(plan) == sum(r["blocks"].values()) + 1
        assert r["blocks"]["MAC array"] == sum(e["cycles"] for e in schedule(plan) if e["engine"] == "mac")
        assert r["array_busy"] == plan.mac_beats / r["cycles_per_step"]
    lines = whole_step_table(rows)
    assert len(lines) == 1 + len(rows) + len(rows) - 1
    from l1bn.spec.norms import BASELINE

    ratios = [f"{n}/{BASELINE}: cycles {rows[n]['cycles_per_step'] / rows[BASELINE]['cycles_per_step']:.4f}"
              for n in rows if n != BASELINE]
    assert [ln.split(",")[0] for ln in lines[1 + len(rows):]] == ratios
    assert [_block_of(m) for m in ("top.dut.mac.array", "\\\\top.dut.mac", "top.dut.bnb0.unit", "top.dut.mem_acc",
                                   "top.dut.seq", "top")] == ["MAC array", "MAC issue/write", "BN backward",
                                                              "memories", "update, prep, loss, quantizers, control", None]
