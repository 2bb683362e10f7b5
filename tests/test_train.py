"""Digits split, models, training run folder, load_run, export contract, CLI errors."""

import json
import subprocess
import sys

import pytest
import torch
from l1bn.sw import data
from l1bn.sw.models import build_model
from l1bn.sw.quant import QuantConfig
from l1bn.sw.train import load_run, run_config, train_run


def test_split_is_fixed_and_stratified():
    (xtr, _), (xte, yte) = data.train_split(), data.test_split()
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert float(xte.min()) >= 0 and float(xte.max()) <= 1
    assert int(yte.bincount().min()) >= 35
    assert torch.equal(data.test_split()[0], xte)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", ["l1", "l2", "none"])
def test_models_forward_backward(model, norm):
    m = build_model(model, norm, QuantConfig(wbits=3, abits=3, quantize_bn=True))
    out = m(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 10)
    out.sum().backward()
    spec = m.export_spec()
    assert [d["relu"] for d in spec] == [True] * (len(spec) - 1) + [False]
    for d in spec:
        w = d["weight"] * 2 ** d["w_exp"]
        assert torch.equal(w, torch.floor(w)) and int(w.min()) >= -4 and int(w.max()) <= 3


def test_bad_model_and_norm():
    with pytest.raises(ValueError, match="model"):
        build_model("resnet", "l1", None)
    with pytest.raises(ValueError, match="norm"):
        build_model("cnn", "l3", None)
    with pytest.raises(ValueError, match="float model"):
        build_model("cnn", "l1", None).export_spec()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = run_config(model="cnn", norm="l1", qcfg=QuantConfig(wbits=4, abits=4), epochs=2, seed=0)
    model, metrics = train_run(cfg, out)
    return out, model, metrics


def test_run_folder_and_reload(run):
    out, model, metrics = run
    m = json.loads((out / "metrics.json").read_text())
    assert m["seed"] == 0 and m["config"]["wbits"] == 4 and len(m["train_loss"]) == 2
    assert m["train_loss"][1] < m["train_loss"][0] and m["test_accuracy"] > 0.8
    loaded, cfg = load_run(out)
    assert cfg == m["config"] and not loaded.training
    x, _ = data.test_split()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    exps = [d["w_exp"] for d in loaded.export_spec()]
    assert exps == [int(b.mac.w_exp) for b in loaded.blocks] + [int(loaded.fc.w_exp)]


def test_export_agrees_with_qat(run):
    """The exporter's integer network reproduces the QAT model's predictions."""
    from l1bn.spec.reference.network import quantize_input, run_net
    from l1bn.sw.export import net_from_spec

    out, _, _ = run
    model, _ = load_run(out)
    inp = model.input_spec()
    net = net_from_spec(model.export_spec(), in_shape=inp["shape"], in_bits=inp["bits"], in_exp=inp["exp"])
    x, _ = data.test_split()
    logits = run_net(net, quantize_input(x, bits=inp["bits"], exp=inp["exp"]))
    with torch.no_grad():
        qat = model(x)
    assert float((logits.argmax(1) == qat.argmax(1)).double().mean()) >= 0.995


def test_deterministic(run, tmp_path):
    out, model, metrics = run
    cfg = metrics["config"]
    _, m2 = train_run(cfg, tmp_path)
    assert m2["train_loss"] == metrics["train_loss"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "l1bn.cli.main", "train", *args], capture_output=True, text=True)


def test_cli_errors(tmp_path):
    for args, msg in ((["--model", "vgg"], "--model"), (["--norm", "l3"], "--norm"),
                      (["--wbits", "9"], "wbits=9"), (["--abits", "1"], "abits=1"),
                      (["--device", "cuda"], "cuda")):
        if args[0] == "--device" and torch.cuda.is_available():
            continue
        r = _cli(*args, "--out", str(tmp_path / "x"))
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_train(tmp_path):
    r = _cli("--model", "mlp", "--norm", "l2", "--wbits", "8", "--abits", "8", "--epochs", "1",
             "--seed", "3", "--out", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["config"]["model"] == "mlp" and m["seed"] == 3 and 0 < m["test_accuracy"] <= 1
