"""QONNX interop (docs/interop.md): l1bn -> QONNX checked by qonnx's executor, Brevitas -> QONNX ->
``l1bn import`` -> integer reference and hardware, and one clear error per unsupported case."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from l1bn.spec.export import load_export
from l1bn.spec.reference.network import random_int_net, run_net
from l1bn.sw import data
from l1bn.sw.qonnx_export import intnet_to_qonnx, write_qonnx
from l1bn.sw.qonnx_import import (
    QONNXImportError,
    execute_qonnx,
    import_qonnx,
    load_qonnx,
    qonnx_to_intnet,
)
from onnx import numpy_helper


@pytest.fixture
def cli(capsys):
    """Run ``l1bn ARGV`` in-process; return (exit status, stdout + stderr); 0 when it returns."""
    from l1bn.cli.main import main

    def run(argv):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


def _logit_scale(net) -> float:
    return 2.0 ** net.layers[-1].out_exp


@pytest.fixture(scope="session")
def brevitas_onnx(tmp_path_factory):
    """A small Brevitas CNN (QuantConv2d, BatchNorm2d, QuantReLU, QuantLinear; power-of-two
    fixed-point quantizers) trained 30 steps on the digits, exported with Brevitas's export_qonnx."""
    from l1bn.sw.brevitas_digits import build_brevitas_cnn, export_brevitas_qonnx, train_brevitas

    m = build_brevitas_cnn(seed=0)
    r = train_brevitas(m, steps=30, seed=0)
    assert r["test_accuracy"] > 0.5  # it learned something: BN statistics and scales are real
    return export_brevitas_qonnx(m, tmp_path_factory.mktemp("brevitas") / "brevitas.onnx")


@pytest.fixture(scope="session")
def brevitas_export(brevitas_onnx, tmp_path_factory):
    return import_qonnx(brevitas_onnx, tmp_path_factory.mktemp("brevitas-exp") / "export")


# ------------------------------------------------------------------------ l1bn -> QONNX

def test_export_qonnx_equals_integer_reference_on_every_test_image(trained_run, trained_export, tmp_path, cli):
    run, export = trained_run, trained_export   # session fixtures of conftest
    out = tmp_path / "model.onnx"
    code, text = cli(["export", str(run), "--format", "qonnx", "--out", str(out)])
    assert code == 0, text
    assert "qonnx cleanup_model + InferShapes + InferDataTypes: ok" in text
    e = load_export(export)
    x, _ = data.test_split()
    q = execute_qonnx(out, x.numpy())
    ref = np.asarray(run_net(e.net, e.test_inputs), dtype=np.float64)
    assert q.shape == ref.shape == (360, 10)
    assert np.array_equal(q.astype(np.float64) * _logit_scale(e.net), ref)  # same logits, bit for bit
    assert np.array_equal(q.argmax(1), ref.argmax(1))
    # the file passes qonnx's cleanup and shape inference again, and has the promised operators
    w = load_qonnx(out)
    assert w.check_all_tensor_shapes_specified()
    ops = {n.op_type for n in w.graph.node}
    assert ops == {"Quant", "Conv", "Cast", "Mul", "Add", "Relu", "Flatten", "Gemm"}
    # an existing file is kept without --force
    before = out.read_bytes()
    code, text = cli(["export", str(run), "--format", "qonnx", "--out", str(out)])
    assert code == 2 and text.count("error:") == 1 and "--force" in text and out.read_bytes() == before


def test_round_trip_random_net_is_exact(tmp_path):
    """IntNet -> QONNX -> import -> IntNet computes the same integers (random weights, odd channels)."""
    net = random_int_net(seed=3, channels=(6, 10, 7))
    path = write_qonnx(net, tmp_path / "r.onnx")
    back, _ = qonnx_to_intnet(load_qonnx(path))
    x = torch.randint(0, 16, (40, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    a, b = run_net(net, x), run_net(back, x)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    q = execute_qonnx(path, x.numpy().astype(np.float32) / 16)
    assert np.array_equal(q.astype(np.float64) * _logit_scale(net), np.asarray(a, dtype=np.float64))
    # the all-float32 variant (no Cast, for FINN) holds the same constants exactly: same integers back
    p32 = write_qonnx(net, tmp_path / "r32.onnx", bn_dtype="float32")
    m32 = onnx.load(str(p32))
    assert "Cast" not in {n.op_type for n in m32.graph.node}
    assert {numpy_helper.to_array(t).dtype for t in m32.graph.initializer} <= {np.dtype("float32"), np.dtype("int64")}
    back32, _ = qonnx_to_intnet(load_qonnx(p32))
    assert np.array_equal(np.asarray(run_net(back32, x)), np.asarray(a))
    with pytest.raises(ValueError, match="bn_dtype"):
        intnet_to_qonnx(net, bn_dtype="float16")


# ---------------------------------------------------------------- Brevitas -> QONNX -> l1bn

def test_brevitas_import_reference_equals_qonnx_on_every_test_image(brevitas_onnx, brevitas_export):
    r = brevitas_export
    e = load_export(r.path)
    assert r.images == 360 and r.agreement == 1.0 and r.disagreements == 0
    x, y = data.test_split()
    q = execute_qonnx(brevitas_onnx, x.numpy())
    ref = np.asarray(run_net(e.net, e.test_inputs))
    assert np.array_equal(q.argmax(1), ref.argmax(1))
    assert [lay.type for lay in e.net.layers] == ["conv2d", "conv2d", "linear"]
    assert all(lay.w_bits == 4 for lay in e.net.layers) and e.net.in_bits == 4 and e.net.in_exp == 4
    # the export's stored qonnx logits are what qonnx computes
    assert np.array_equal(np.asarray(e.qat_logits), q)


def test_brevitas_import_cli_prints_agreement(brevitas_onnx, tmp_path, cli):
    code, text = cli(["import", str(brevitas_onnx), "--out", str(tmp_path / "exp")])
    assert code == 0, text
    assert "agreement         100.00 %  (0 of 360 predictions differ" in text
    code, text = cli(["infer", str(tmp_path / "exp")])
    assert code == 0, text
    assert "agreement         100.00 %" in text


@pytest.mark.slow
def test_brevitas_import_on_the_hardware(brevitas_export, tmp_path):
    from l1bn.sim.simulate.net import simulate_net

    r = simulate_net(brevitas_export.path, simulator="icarus", images=3, build_dir=tmp_path)
    assert r["images"] == 3 and r["mismatches"] == 0 and r["passed"]
    assert r["cycles_per_image"] == r["formula_cycles"]


# ------------------------------------------------------------------------- refusals

def _edited(src, tmp_path, edit) -> str:
    m = onnx.load(str(src))
    edit(m)
    p = tmp_path / "edited.onnx"
    onnx.save(m, str(p))
    return str(p)


def _set_input(m, node, i, value):
    """Point input ``i`` of ``node`` to a new constant (exporters share equal constants)."""
    name = f"{node.input[i]}.edited"
    m.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    node.input[i] = name


def _quant_nodes(m):
    return [n for n in m.graph.node if n.op_type == "Quant"]


def _act_quant(m):
    """The first activation Quant (after a Relu) of the model."""
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    return next(n for n in m.graph.node if n.op_type == "Quant" and n.input[0] == relu.output[0])


def _op(m):
    next(n for n in m.graph.node if n.op_type == "Relu").op_type = "Sigmoid"


def _scale(m):
    _set_input(m, _act_quant(m), 1, 0.3)


def _bits(m):
    _set_input(m, _act_quant(m), 3, 12.0)


@pytest.mark.parametrize("edit, words", [
    (_op, ["(Sigmoid)", "operator Sigmoid is not supported"]),
    (_scale, ["(Quant)", "activation scale 0.3 is not a power of two"]),
    (_bits, ["(Quant)", "activation bit width 12 is out of range 2..8"]),
])
def test_unsupported_case_one_error_nothing_written(brevitas_onnx, tmp_path, cli, edit, words):
    src = _edited(brevitas_onnx, tmp_path, edit)
    out = tmp_path / "out" / "exp"
    code, text = cli(["import", src, "--out", str(out)])
    lines = [s for s in text.splitlines() if s.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: node "), text
    assert "Traceback" not in text and all(w in lines[0] for w in words), lines[0]
    # names the node as the Brevitas file names it (not qonnx's cleanup name)
    assert lines[0].split()[2].startswith("/"), lines[0]
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_refusals_in_python(tmp_path):
    net = random_int_net(seed=0)
    m = intnet_to_qonnx(net)
    signed = _edited_proto(m, lambda p: _set_attr(_act_quant(p), "signed", 1))
    with pytest.raises(QONNXImportError, match="signed activations are not supported"):
        qonnx_to_intnet(load_qonnx(signed))
    per_channel = _edited_proto(m, lambda p: _set_input(p, _quant_nodes(p)[1], 1,
                                                        np.array([2.0 ** -4, 2.0 ** -3] * 8).reshape(16, 1, 1, 1)))
    with pytest.raises(QONNXImportError, match="per-channel"):
        qonnx_to_intnet(load_qonnx(per_channel))
    one_bit = _edited_proto(m, lambda p: _set_input(p, _quant_nodes(p)[1], 3, 1.0))
    with pytest.raises(QONNXImportError, match="weight bit width 1 is out of range 2..8"):
        qonnx_to_intnet(load_qonnx(one_bit))
    narrow = _edited_proto(m, lambda p: _set_attr(_act_quant(p), "narrow", 1))
    with pytest.raises(QONNXImportError, match="narrow-range activations"):
        qonnx_to_intnet(load_qonnx(narrow))
    half_even = _edited_proto(m, lambda p: _set_attr(_act_quant(p), "rounding_mode", "ROUND"))
    qonnx_to_intnet(load_qonnx(half_even))  # a BN-like non-dyadic scale in front: accepted
    # a pure power-of-two rescale in front of a ROUND quantizer lands on ties: refused
    import dataclasses

    from l1bn.spec.reference.infer_bn import fold_affine

    c1 = net.layers[0]
    ident = fold_affine(torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64),
                        acc_exp=c1.w_exp + c1.a_exp, out_exp=c1.out_exp, acc_bits=c1.acc_bits, out_bits=4)
    plain = dataclasses.replace(net, layers=(dataclasses.replace(c1, bn=ident),) + net.layers[1:])
    dyadic = _edited_proto(intnet_to_qonnx(plain), lambda p: _set_attr(_act_quant(p), "rounding_mode", "ROUND"))
    with pytest.raises(QONNXImportError, match="use rounding_mode HALF_UP"):
        qonnx_to_intnet(load_qonnx(dyadic))
    back, _ = qonnx_to_intnet(load_qonnx(intnet_to_qonnx(plain)))  # HALF_UP: exact
    x = torch.randint(0, 16, (8, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    assert np.array_equal(np.asarray(run_net(back, x)), np.asarray(run_net(plain, x)))
    with pytest.raises(FileNotFoundError):
        import_qonnx(tmp_path / "missing.onnx", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # --force never deletes what the command reads
    with pytest.raises(ValueError, match="must end in .onnx"):
        write_qonnx(net, tmp_path / "model.pt", force=True)
    src = write_qonnx(net, tmp_path / "held" / "m.onnx")
    with pytest.raises(ValueError, match="holds the model"):
        import_qonnx(src, tmp_path / "held", force=True)
    assert src.is_file() and not (tmp_path / "model.pt").exists()


def _edited_proto(m, edit):
    c = onnx.ModelProto()
    c.CopyFrom(m)
    edit(c)
    return c


def _set_attr(node, name, value):
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))
