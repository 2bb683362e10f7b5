"""``l1bn train --integer``: the run folder, the export that `l1bn infer` takes and that reproduces
the trainer's logits bit for bit, reproducibility, and one-line refusals of bad options."""

import json

import numpy as np
import pytest


def run_cli(argv, capsys):
    """``l1bn ARGV`` in-process: (exit status, stdout + stderr); a normal return is status 0."""
    from l1bn.cli.main import main

    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def int_run(tmp_path_factory):
    from l1bn.cli.main import main

    out = tmp_path_factory.mktemp("intrun") / "run"
    main(["train", "--integer", "--norm", "range", "--epochs", "2", "--seed", "3", "--out", str(out)])
    return out


def test_run_folder_metrics_and_export_reproduce_the_trainer(int_run, capsys):
    from l1bn.spec.export import load_export
    from l1bn.spec.reference import train as T
    from l1bn.spec.reference.network import run_net
    from l1bn.spec.training import IntTrainConfig

    m = json.loads((int_run / "metrics.json").read_text())
    assert m["kind"] == "integer" and m["norm"] == "range" and m["epochs"] == 2 and m["seed"] == 3
    assert m["export_logits_equal"] is True and m["export_prediction_agreement"] == 1.0
    assert len(m["train_loss"]) == 2 and m["train_loss"][1] < m["train_loss"][0]
    assert m["test_accuracy"] > 0.8                       # 2 epochs of w4a4 range BN
    cfg = IntTrainConfig.from_dict(m["int_train_config"])
    assert (cfg.norm, cfg.wbits, cfg.abits, cfg.gbits) == ("range", 4, 4, 8)
    e = load_export(int_run / "export")
    logits = run_net(e.net, e.test_inputs)
    assert np.array_equal(logits, e.tensors["test.int_train_logits"])
    acc = float((logits.argmax(1) == e.test_labels).mean())
    assert acc == m["test_accuracy"]
    code, out = run_cli(["infer", str(int_run / "export"), "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == m["test_accuracy"]
    # the exported first layer is the forward weight of the masters (4-bit, QAT exponent rule)
    w = e.net.layers[0].weight
    assert int(w.min()) >= -8 and int(w.max()) <= 7 and e.net.layers[0].w_exp == e.manifest["nodes"][0]["w_exp"]
    assert T.MULT_BITS == e.net.layers[0].bn.mult_bits


def test_same_seed_same_run(int_run, tmp_path, capsys):
    code, _ = run_cli(["train", "--integer", "--wbits", "4", "--abits", "4", "--norm", "range", "--epochs", "2",
                       "--seed", "3", "--out", str(tmp_path / "again")], capsys)
    assert code == 0
    a = json.loads((int_run / "export" / "manifest.json").read_text())
    b = json.loads((tmp_path / "again" / "export" / "manifest.json").read_text())
    assert a["manifest_sha256"] == b["manifest_sha256"]          # every tensor, bit for bit
    ma = json.loads((int_run / "metrics.json").read_text())
    mb = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert ma["train_loss"] == mb["train_loss"] and ma["test_accuracy"] == mb["test_accuracy"]


@pytest.mark.parametrize("args,msg", [
    (["--integer", "--float"], "--integer trains with integers only; it contradicts --float"),
    (["--gbits", "6"], "--gbits belong to integer training; add --integer"),
    (["--integer", "--lr", "0.01"], "--lr is the float trainer's Adam rate"),
    (["--integer", "--norm", "none"], "choose --norm l1, l2 or range"),
    (["--integer", "--gbits", "30"], "gbits=30 is out of range; allowed 2..24"),
    (["--integer", "--lr-decay", "x"], "--lr-decay='x' must be comma-separated epochs"),
    (["--integer", "--norm", "l2", "--gbits", "16"], "conv1 BN: .* 64-bit dx_product"),
    (["--integer", "--norm", "l2", "--wbits", "8", "--abits", "8"], r"conv1 BN: .* 63-bit intermediate \(disp_numerator\)"),
    (["--integer", "--quantize-bn"], "drop --quantize-bn"),
])
def test_bad_options_one_error_line_nothing_written(args, msg, tmp_path, capsys):
    import re

    out = tmp_path / "run"
    code, text = run_cli(["train", *args, "--out", str(out)], capsys)
    assert code == 2
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and re.search(msg, lines[0]), text
    assert not out.exists()


def test_mlp_trains_too(tmp_path, capsys):
    code, _ = run_cli(["train", "--integer", "--model", "mlp", "--epochs", "1", "--out", str(tmp_path / "mlp")],
                      capsys)
    assert code == 0
    m = json.loads((tmp_path / "mlp" / "metrics.json").read_text())
    assert m["export_logits_equal"] is True and m["model"] == "mlp"
    assert np.isfinite(m["test_loss"])
