"""``l1bn verilog train`` and ``l1bn sim train`` on a tiny integer-trained export (conv + BN +
linear): the Verilog and schedule, K steps on Icarus equal to the reference, and one-line refusals
with nothing written (a norm without a backward unit, bad sizes, an output inside the input, a
network the trainer cannot take)."""

import json

import numpy as np
import pytest
import torch
from test_train_accel import TWO_LAYER


def run_cli(argv, capsys):
    from l1bn.cli.main import main

    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """An export of the two-layer net after one reference step, with 32 test images and labels,
    carrying its training config (as ``l1bn train --integer`` writes it)."""
    from l1bn.spec.export import write_export
    from l1bn.spec.reference.train import fold_network, init_state, train_step
    from l1bn.sw.int_train import int_net

    cfg = TWO_LAYER
    rng = np.random.default_rng(5)
    x = rng.integers(0, 16, (32, *cfg.in_shape))
    y = rng.integers(0, cfg.classes, 32)
    state, _ = train_step(init_state(cfg, 0), x[:8], y[:8], cfg)
    out = tmp_path_factory.mktemp("tiny") / "export"
    write_export(int_net(cfg, fold_network(state, cfg)), out, source={"int_train_config": cfg.to_dict()},
                 extra={"test.inputs": (torch.as_tensor(x), cfg.abits, False, "test_input"),
                        "test.labels": (torch.as_tensor(y), 8, False, "test_label")})
    return out


def test_verilog_train_writes_the_design_and_schedule(tiny_export, tmp_path, capsys):
    from l1bn.hw.train.plan import TrainPlan
    from l1bn.hw.train.schedule import step_cycles

    out = tmp_path / "hw"
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(out), "--rows", "4"], capsys)
    assert code == 0, text
    s = json.loads((out / "schedule.json").read_text())
    plan = TrainPlan(TWO_LAYER, rows=4)
    assert s["cycles_per_step"] == step_cycles(plan) == sum(e["cycles"] for e in s["program"]) + 1
    assert s["batch"] == 8 and s["rows"] == 4 and s["memory_bits"] == plan.mem_bits
    assert "module train_accel" in (out / "train_accel.v").read_text()
    assert f"cycles per step {s['cycles_per_step']}" in text


def test_sim_train_on_icarus(tiny_export, capsys):
    code, text = run_cli(["sim", "train", str(tiny_export), "--simulator", "icarus", "--rows", "4",
                          "--steps", "3", "--json"], capsys)
    assert code == 0, text
    r = json.loads(text.strip().splitlines()[-1])
    assert r["passed"] and r["steps"] == 3 and r["batch"] == 8
    assert r["logit_mismatches"] == r["result_mismatches"] == r["state_mismatches"] == 0
    assert r["cycles_per_step"] == [r["formula_cycles"]]


@pytest.mark.parametrize("args,message", [
    (["--norm", "range"], "norm='range' has no backward unit"),
    (["--rows", "0"], "rows=0 is out of range; allowed 1..16"),
    (["--batch", "1"], "batch=1 is out of range; allowed 2..4096"),
    (["--batch", "33"], None),
])
def test_bad_options_give_one_line_and_write_nothing(tiny_export, tmp_path, capsys, args, message):
    out = tmp_path / "hw"
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(out), *args], capsys)
    if message is None:            # a batch larger than the images is fine for verilog, not for sim
        assert code == 0, text
        code, text = run_cli(["sim", "train", str(tiny_export), "--batch", "33"], capsys)
        assert code == 2 and text.strip() == "error: --steps 3 of batch 33 need 99 images; the export holds 32"
        return
    assert code == 2 and text.strip().startswith("error: ") and message in text and len(text.strip().splitlines()) == 1
    assert not out.exists()


def test_output_inside_the_input_is_refused(tiny_export, capsys):
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(tiny_export / "hw")], capsys)
    assert code == 2 and "is inside the input" in text
    assert not (tiny_export / "hw").exists()


def test_a_network_the_trainer_cannot_take(tiny_export, tmp_path, capsys):
    """A training config whose gradients are wider than the MAC array's operands."""
    import shutil

    from l1bn.spec.export import manifest_digest

    bad = tmp_path / "bad"
    shutil.copytree(tiny_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["source"]["int_train_config"]["gbits"] = 12
    m["manifest_sha256"] = manifest_digest(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    code, text = run_cli(["verilog", "train", str(bad), "-o", str(tmp_path / "hw")], capsys)
    assert code == 2 and "gbits=12: the MAC array takes operands of at most 8 bits" in text
    assert not (tmp_path / "hw").exists()
