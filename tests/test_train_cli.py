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
    (["--norm", "range"], "norm='range' has no backward unit"),     # a registry without range's unit
    (["--rows", "0"], "rows=0 is out of range; allowed 1..16"),
    (["--batch", "1"], "batch=1 is out of range; allowed 2..4096"),
    (["--batch", "33"], None),
])
def test_bad_options_give_one_line_and_write_nothing(tiny_export, tmp_path, capsys, args, message, monkeypatch):
    import dataclasses

    from l1bn.spec import norms

    # range has a backward unit now: the refusal of a norm without one is checked on a registry
    # whose range entry names none
    monkeypatch.setitem(norms.NORMS, "range", dataclasses.replace(norms.RANGE, hw_backward=""))
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


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_error_line(code, text, *words):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    for w in words:
        assert w in lines[0], text


def test_verilog_train_follows_the_output_rule(tiny_export, tmp_path, capsys):
    """The one output rule (issue 32, docs/reliability.md): a folder of the user's files or another
    command's output is refused with one line and left as it was; the command's own earlier output
    (its marker) is replaced whole, so no file of an earlier design survives, and no temporary is
    left beside it."""
    import shutil

    from l1bn.spec.outdir import output_owner

    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("\\documentclass{book}\n")
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(mine)], capsys)
    _one_error_line(code, text, "did not write")
    assert _files(mine) == {"thesis.tex": b"\\documentclass{book}\n"}
    other = tmp_path / "other-export"
    shutil.copytree(tiny_export, other)
    before = _files(other)
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(other)], capsys)
    _one_error_line(code, text, "holds the output of `l1bn export`")
    assert _files(other) == before
    out = tmp_path / "hw"
    assert run_cli(["verilog", "train", str(tiny_export), "-o", str(out), "--rows", "2"], capsys)[0] == 0
    assert output_owner(out) == "verilog train"
    (out / "old_design.v").write_text("module old; endmodule\n")
    code, text = run_cli(["verilog", "train", str(tiny_export), "-o", str(out), "--rows", "2"], capsys)
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == [".l1bn-output.json", "schedule.json", "train_accel.v"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hw", "other-export", "thesis"]


def test_sim_train_refuses_a_bad_build_folder_before_any_work(tiny_export, tmp_path, capsys, monkeypatch):
    """``$L1BN_BUILD_DIR`` a file, or under one: one line before the reference steps or the
    generator run, nothing written."""
    import l1bn.sim.simulate.train as st

    def no_work(*a, **k):
        raise AssertionError("the work started")

    monkeypatch.setattr(st, "simulate_train", no_work, raising=False)
    f = tmp_path / "afile"
    f.write_text("x\n")
    for root, words in ((f, "is a file, not a folder"), (f / "build", "is a file, not a folder")):
        monkeypatch.setenv("L1BN_BUILD_DIR", str(root))
        code, text = run_cli(["sim", "train", str(tiny_export), "--simulator", "icarus"], capsys)
        _one_error_line(code, text, "build folder ($L1BN_BUILD_DIR)", words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and f.read_text() == "x\n"


def test_prove_train_follows_the_output_rule(tiny_export, tmp_path, capsys):
    """``prove train -o DIR``: a folder of other files or an export is refused with one line before
    any proof runs, and left as it was."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    for out, words in ((mine, "did not write"), (tiny_export, "holds the output of `l1bn export`")):
        before = _files(out)
        code, text = run_cli(["prove", "train", "-o", str(out)], capsys)
        _one_error_line(code, text, words)
        assert _files(out) == before
