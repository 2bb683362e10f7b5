"""The networks FINN and Brevitas users already have (issue 27): every model of Brevitas's
``brevitas_examples.bnn_pynq`` (12 configurations), a small residual network and a model with
Brevitas's default float scales, built with random weights, trained a few steps on the digits
fitted to their input, exported with ``brevitas.export.export_qonnx``, then ``l1bn import`` and
``l1bn infer``: 100 % of the integer reference's predictions equal qonnx ``execute_onnx``'s.

Slow (1 min 31 s of CPU (user) for all 14, 7 min 55 s of wall time on the shared 2-core
machine): each model is built, trained and exported once per session (``zoo`` fixture). Images: the 360 digits test images for the 8x8 and 28x28 models, the
first 60 for CNV and the first 10 for ResNet-18 (qonnx's executor and the reference take about 1 s
and 0.2 s per ResNet-18 image on one core).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from l1bn.spec.export import load_export
from l1bn.sw.brevitas_zoo import MODELS, build_model, export_model, model_input, train_on_digits

#: name -> (training steps, batch, test images checked)
PLAN = {name: (5, 32, 360) for name in MODELS}
PLAN.update({n: (3, 16, 60) for n in ("cnv_1w1a", "cnv_1w2a", "cnv_2w2a")})
# float_scales: 40 steps, past the 30 batches Brevitas collects activation statistics over
PLAN.update({"resnet18_4w4a": (2, 8, 10), "residual": (10, 32, 360), "float_scales": (40, 32, 360)})


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """name -> the QONNX file of that model, trained and exported on first use (cached)."""
    root = tmp_path_factory.mktemp("zoo")
    cache: dict[str, object] = {}

    def get(name):
        if name not in cache:
            steps, batch, _ = PLAN[name]
            m = build_model(name, seed=0)
            train_on_digits(m, name, steps=steps, batch=batch, seed=0)
            cache[name] = export_model(m, name, root / f"{name}.onnx")
        return cache[name]

    return get




def _features(name: str, e) -> None:
    """What the import must have found in each model (the features issue 27 lists)."""
    g = e.graph
    ops = [n.op for n in g.nodes]
    info = g.tensors()
    fmts = {info[n.output].fmt.kind for n in g.nodes if n.requant is not None}
    if name.startswith(("tfc", "sfc", "lfc", "cnv")):
        bits_w, bits_a = int(name[4]), int(name[6])
        wf = {n.w_fmt.kind for n in g.nodes if n.weight is not None}
        assert wf == ({"bipolar"} if bits_w == 1 else {"signed"}), wf
        assert fmts == ({"bipolar"} if bits_a == 1 else {"signed"}), fmts          # signed hidden activations
        assert [op for op, _ in g.input.preprocess] == ["mul", "add"]               # 2x - 1 in forward
        assert not np.all(g.output.scale == 1.0) or np.any(g.output.offset)         # TensorNorm, trained
    if name.startswith(("tfc", "sfc", "lfc")):
        one_bit = name.endswith("1w1a")      # bnn_pynq's IN_BIT_WIDTH: 1 for 1w1a, else 2
        assert (g.input.fmt.kind, g.input.rounding) == (("bipolar", "sign") if one_bit else ("signed", "half_even"))
        assert set(ops) == {"linear"}
    if name.startswith("cnv"):
        assert ops.count("maxpool") == 2 and g.input.fmt.kind == "signed" and g.input.fmt.bits == 8
    if name == "resnet18_4w4a":
        assert ops.count("add") == 8 and ops.count("avgpool") == 1 and g.input.rounding == "integer"
        assert g.nodes[-1].bias is not None                                          # Int32Bias, integer
        assert any(n.w_scale is not None and np.unique(n.w_scale).size > 1 for n in g.nodes)  # per channel
        live = [t for t in info.values() if len(t.consumers) == 2]
        assert live and all(t.last > t.producer + 1 for t in live)                   # skip paths
    if name == "residual":
        assert ops.count("add") == 2 and ops.count("avgpool") == 1
        assert all(np.unique(s).size == 1 and np.log2(s[0]) % 1 == 0 for s in g.scales.values())  # pow2
    if name == "float_scales":
        assert ops.count("maxpool") == 1 and g.input.fmt.kind == "signed"
        assert any(np.log2(s) % 1 != 0 for s in g.scales.values() for s in s)     # float scales
        assert np.any(g.output.offset != g.output.offset[0])                         # a float classifier bias
        assert any(n.w_scale is not None and np.unique(n.w_scale).size > 1 for n in g.nodes)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_model_imports_and_infer_agrees_with_qonnx(zoo, cli, tmp_path, name):
    path = zoo(name)
    _, _, images = PLAN[name]
    out = tmp_path / "export"
    argv = ["import", str(path), "--out", str(out), "--test-images", str(images)]
    itype = model_input(name)[1]
    if itype is not None:
        argv += ["--input-type", itype]
    code, text = cli(argv)
    assert code == 0, text
    assert f"agreement         100.00 %  (0 of {images} predictions differ" in text, text
    code, text = cli(["infer", str(out), "--json"])
    assert code == 0, text
    r = json.loads(text)
    assert r["images"] == images and r["agreement"] == 1.0 and r["disagreements"] == 0, r
    e = load_export(out)
    _features(name, e)
    print(f"\n{name}: {images} images, agreement {100 * r['agreement']:.2f} %, "
          f"max |logit difference| {r['max_logit_diff']:.3g}")


@pytest.mark.slow
def test_model_without_input_quantizer_needs_its_input_type(zoo, cli, tmp_path):
    code, text = cli(["import", str(zoo("resnet18_4w4a")), "--out", str(tmp_path / "e"), "--no-check"])
    lines = text.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--input-type" in lines[0] and "(Conv)" in lines[0], text
    assert not (tmp_path / "e").exists()


#: models the accelerator runs (issue 27), checked on Verilator with this many test images
ACCEL_IMAGES = {"tfc_2w2a": 5, "sfc_1w1a": 5}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACCEL_IMAGES))
def test_accelerator_runs_the_imported_model_bit_exact(zoo, cli, tmp_path, name):
    """``l1bn sim net`` on Verilator: every logit of the first images equals the integer reference
    (the graph executor), and the measured image period equals the plan's formula."""
    n = ACCEL_IMAGES[name]
    out = tmp_path / "export"
    code, text = cli(["import", str(zoo(name)), "--out", str(out), "--test-images", str(n)])
    assert code == 0, text
    code, text = cli(["sim", "net", str(out), "--json"])
    assert code == 0, text
    r = json.loads(text[text.index("{"):])
    assert r["images"] == n and r["mismatches"] == 0 and r["passed"], r
    periods = r["cycles_per_image"] if isinstance(r["cycles_per_image"], list) else [r["cycles_per_image"]]
    assert periods and all(p == r["formula_cycles"] for p in periods), r
