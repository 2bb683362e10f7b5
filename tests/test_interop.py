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
from l1bn.sw.qonnx_export import finn_prefix, intnet_to_qonnx, write_qonnx
from l1bn.sw.qonnx_import import (
    QONNXImportError,
    execute_qonnx,
    import_qonnx,
    load_qonnx,
    qonnx_to_graph,
    qonnx_to_intnet,
)
from onnx import numpy_helper


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
    assert "FINN's ConvertQONNXtoFINN first steps (ExtractBiasFromConv, GemmToMatMul, FoldTransposeIntoQuantInit, " \
           "InferDataTypes): ok" in text
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
    assert ops == {"Quant", "Conv", "Cast", "Mul", "Add", "Relu", "Flatten", "MatMul"}
    # FINN's first transforms on the file (GemmToMatMul crashed on the former bias-free Gemm): same logits
    fw = finn_prefix(out)
    assert np.array_equal(execute_qonnx(fw, x.numpy()), q)
    # the all-float32 variant from the CLI: no Cast, the same logits, FINN's first transforms pass too
    out32 = tmp_path / "model32.onnx"
    code, text = cli(["export", str(run), "--format", "qonnx", "--bn-dtype", "float32", "--out", str(out32)])
    assert code == 0 and "folded BN in float32" in text, text
    assert "Cast" not in {n.op_type for n in onnx.load(str(out32)).graph.node}
    q32 = execute_qonnx(out32, x.numpy())
    assert np.array_equal(q32.astype(np.float64) * _logit_scale(e.net), ref)
    assert np.array_equal(execute_qonnx(finn_prefix(out32), x.numpy()), q32)
    code, text = cli(["export", str(run), "--bn-dtype", "float32", "--out", str(tmp_path / "e")])
    assert code == 2 and "--bn-dtype goes with --format qonnx" in text and not (tmp_path / "e").exists()
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
    for p in (path, p32):   # FINN's first transforms on every export: they run and change no logit
        xf = x.numpy().astype(np.float32) / 16
        assert np.array_equal(execute_qonnx(finn_prefix(p), xf), execute_qonnx(p, xf))
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


def _zero_point(m):
    _set_input(m, _act_quant(m), 2, 1.0)


def _bits(m):
    _set_input(m, _act_quant(m), 3, 20.0)


def _rounding(m):
    _set_attr(_act_quant(m), "rounding_mode", "CEIL")


@pytest.mark.parametrize("edit, words", [
    (_op, ["(Sigmoid)", "operator Sigmoid is not supported"]),
    (_zero_point, ["(Quant)", "activation zero point [1.0] is not 0"]),
    (_bits, ["(Quant)", "activation bit width 20 is out of range 1..16"]),
    (_rounding, ["(Quant)", "activation rounding_mode CEIL is not supported"]),
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


def test_formerly_refused_cases_now_import_exactly(tmp_path):
    """Signed and narrow activations, per-channel and float scales, binary weights and ROUND on a
    dyadic map (half even, no BN in front): each imports, and the integer graph computes qonnx's
    predictions (exactly, where the map is dyadic)."""
    net = random_int_net(seed=0)
    m = intnet_to_qonnx(net)
    x = torch.randint(0, 16, (24, 1, 8, 8), generator=torch.Generator().manual_seed(1)).numpy()
    edits = {
        "signed": lambda p: _set_attr(_act_quant(p), "signed", 1),
        "narrow": lambda p: _set_attr(_act_quant(p), "narrow", 1),
        "per_channel": lambda p: _set_input(p, _quant_nodes(p)[1], 1,
                                            np.array([2.0 ** -4, 2.0 ** -3] * 8).reshape(16, 1, 1, 1)),
        "float_scale": lambda p: _set_input(p, _act_quant(p), 1, 0.3),
        "binary_weights": lambda p: _set_input(p, _quant_nodes(p)[1], 3, 1.0),
    }
    for name, edit in edits.items():
        p = _edited_proto(m, edit)
        g, _ = qonnx_to_graph(load_qonnx(p))
        q = execute_qonnx(p, x.astype(np.float32) / 16)
        from l1bn.spec.reference.graph import float_logits, run_graph

        ref = float_logits(g, run_graph(g, x))
        assert np.array_equal(q.argmax(1), ref.argmax(1)), name
        assert np.abs(q - ref).max() < 1e-3 * max(1.0, np.abs(q).max()), name
    # ROUND after a pure power-of-two rescale lands on ties: half-even requantizer, equal to qonnx
    import dataclasses

    from l1bn.spec.reference.graph import float_logits, run_graph
    from l1bn.spec.reference.infer_bn import fold_affine

    c1 = net.layers[0]
    ident = fold_affine(torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64),
                        acc_exp=c1.w_exp + c1.a_exp, out_exp=c1.out_exp, acc_bits=c1.acc_bits, out_bits=4)
    plain = dataclasses.replace(net, layers=(dataclasses.replace(c1, bn=ident),) + net.layers[1:])
    dyadic = _edited_proto(intnet_to_qonnx(plain), lambda p: _set_attr(_act_quant(p), "rounding_mode", "ROUND"))
    g, _ = qonnx_to_graph(load_qonnx(dyadic))
    assert g.nodes[0].requant.rounding == "half_even"
    q = execute_qonnx(dyadic, x.astype(np.float32) / 16)
    assert np.array_equal(q.astype(np.float64), float_logits(g, run_graph(g, x)))    # every logit
    assert not np.array_equal(run_graph(g, x), run_net(plain, x))     # half up would differ on ties
    back, _ = qonnx_to_intnet(load_qonnx(intnet_to_qonnx(plain)))  # HALF_UP: exact
    assert np.array_equal(np.asarray(run_net(back, x)), np.asarray(run_net(plain, x)))


def test_input_quantizer_equals_qonnx_on_random_floats():
    """quantize_images (the export's input quantizer) against qonnx's own Quant function, every
    rounding, signed and unsigned, float and power-of-two scales, with exact ties."""
    from l1bn.spec.reference.formats import Fmt
    from l1bn.spec.reference.graph import GraphInput, quantize_images
    from qonnx.custom_op.general.intquant import int_quant

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 2000), np.arange(-40, 41) / 16]).astype(np.float32).reshape(-1, 1, 1, 1)
    modes = {"ROUND": "half_even", "HALF_UP": "half_away", "FLOOR": "floor"}
    for signed in (0, 1):
        for scale in (2.0 ** -3, 0.0371):
            for mode, ours in modes.items():
                inp = GraphInput(name="input", shape=(1, 1, 1), fmt=Fmt(kind="signed" if signed else "unsigned", bits=5),
                                 scale=scale, rounding=ours, preprocess=(("mul", (2.0,)), ("add", (-1.0,))))
                v = (x * np.float32(2.0)) + np.float32(-1.0)
                want = int_quant(v, np.float32(scale), np.float32(0), np.float32(5), signed, 0, mode) / np.float32(scale)
                assert np.array_equal(quantize_images(inp, x), np.round(want).astype(np.int64)), (signed, scale, mode)


def test_refusals_in_python(tmp_path):
    net = random_int_net(seed=0)
    m = intnet_to_qonnx(net)
    two_tensor_mul = _edited_proto(m, lambda p: _mul_two_tensors(p))
    with pytest.raises(QONNXImportError, match="Mul of two computed tensors is not supported"):
        qonnx_to_graph(load_qonnx(two_tensor_mul))
    grouped = _edited_proto(m, lambda p: _set_attr(next(n for n in p.graph.node if n.op_type == "Conv"), "group", 2))
    with pytest.raises(QONNXImportError):
        qonnx_to_graph(load_qonnx(grouped))
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


def _mul_two_tensors(m):
    """The first Relu becomes Mul(x, x): a product of two computed tensors."""
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Mul"
    relu.input.append(relu.input[0])


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
