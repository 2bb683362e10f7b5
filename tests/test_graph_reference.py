"""The graph reference (spec/reference/graph, requant, pool, formats) against naive models, its
export (schema 3) round trip, and the refusals: bit-exact ``==`` everywhere, corner values
(rounding ties, saturation, narrow ranges, the bipolar zero)."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
from l1bn.spec.export import ExportError, load_export, write_export
from l1bn.spec.images import load_images
from l1bn.spec.reference.formats import Fmt, check_values, fmt_for_range, from_codes, to_codes
from l1bn.spec.reference.graph import (
    GraphInput,
    GraphOutput,
    IntGraph,
    Node,
    chain_from_graph,
    float_logits,
    graph_from_chain,
    liveness_order,
    quantize_images,
    run_graph,
)
from l1bn.spec.reference.graph_random import random_int_graph
from l1bn.spec.reference.infer_bn import apply_folded
from l1bn.spec.reference.network import random_int_net, run_net
from l1bn.spec.reference.pool import add_int, avgpool_sum, maxpool_int
from l1bn.spec.reference.requant import (
    Requant,
    apply_requant,
    fold_requant,
    from_folded,
    requantize_sum,
    rshift_half_even,
)

U4, S4, BIP = Fmt(kind="unsigned", bits=4), Fmt(kind="signed", bits=4), Fmt(kind="bipolar", bits=1)


# ------------------------------------------------------------------------------- naive models

def _round(fr: Fraction, mode: str) -> int:
    """Exact rounding of a rational: half up (toward +inf on ties) or half even."""
    fl = fr.numerator // fr.denominator
    rest = fr - fl
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and (mode == "half_up" or fl % 2 == 1)):
        return fl + 1
    return fl


def _naive_requant(z: int, rq: Requant, c: int) -> int:
    v = z * int(rq.mult[c]) + int(rq.bias[c])
    if rq.out.kind == "bipolar":
        return 1 if v >= 0 else -1
    y = _round(Fraction(v, 1 << rq.shift), rq.rounding)
    lo = max(rq.out.lo, 0) if rq.relu else rq.out.lo
    return min(max(y, lo), rq.out.hi)


def _naive_node(node: Node, args):
    """One node with Python loops and Python ints."""
    x = args[0]
    n = x.shape[0]
    if node.op in ("conv2d", "maxpool", "avgpool"):
        kh, kw = node.window
        s, p = node.stride, node.padding
        c, h, w = x.shape[1:]
        ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        oc = node.weight.shape[0] if node.op == "conv2d" else c
        out = np.zeros((n, oc, ho, wo), dtype=object)
        for i in range(n):
            for o in range(oc):
                for yy in range(ho):
                    for xx in range(wo):
                        vals = []
                        for ci in (range(c) if node.op == "conv2d" else [o]):
                            for dy in range(kh):
                                for dx in range(kw):
                                    iy, ix = yy * s + dy - p, xx * s + dx - p
                                    inside = 0 <= iy < h and 0 <= ix < w
                                    v = int(x[i, ci, iy, ix]) if inside else None
                                    if node.op == "conv2d":
                                        vals.append(int(node.weight[o, ci, dy, dx]) * (v or 0))
                                    elif node.op == "avgpool":
                                        vals.append(v or 0)
                                    elif inside:
                                        vals.append(v)
                        out[i, o, yy, xx] = max(vals) if node.op == "maxpool" else sum(vals)
    elif node.op == "linear":
        flat = x.reshape(n, -1)
        out = np.array([[sum(int(node.weight[o, k]) * int(flat[i, k]) for k in range(flat.shape[1]))
                         for o in range(node.weight.shape[0])] for i in range(n)], dtype=object)
    elif node.op == "add":
        out = x.astype(object) * node.in_mults[0] + args[1].astype(object) * node.in_mults[1]
    else:
        out = x.astype(object)
    if node.bias is not None:
        out = out + node.bias.astype(object).reshape((1, -1) + (1,) * (out.ndim - 2))
    if node.requant is not None:
        rq = node.requant
        res = np.empty(out.shape, dtype=object)
        for idx in np.ndindex(out.shape):
            res[idx] = _naive_requant(int(out[idx]), rq, idx[1])
        out = res
    return out.astype(np.int64)


def _naive_graph(g: IntGraph, x):
    env = {g.input.name: np.asarray(x, dtype=np.int64)}
    for node in g.nodes:
        env[node.output] = _naive_node(node, [env[t] for t in node.inputs])
    return env


# ----------------------------------------------------------------------------- requantizer

def test_half_even_shift_equals_exact_rounding_on_every_tie():
    z = np.arange(-300, 301, dtype=np.int64)
    for s in (0, 1, 2, 3, 5):
        got = rshift_half_even(z, s)
        want = [_round(Fraction(int(v), 1 << s), "half_even") for v in z]
        assert got.tolist() == want
    assert rshift_half_even(np.array([-5, -3, -1, 1, 3, 5]), 1).tolist() == [-2, -2, 0, 0, 2, 2]   # ties to even


@pytest.mark.parametrize("out, relu", [(U4, True), (S4, False), (S4, True), (Fmt(kind="signed", bits=2, narrow=True), False),
                                       (Fmt(kind="unsigned", bits=3, narrow=True), True), (BIP, False)])
@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_requantizer_equals_the_naive_model(out, relu, rounding):
    rng = np.random.default_rng(1)
    c = 5
    shift = 0 if out.kind == "bipolar" else 3
    rq = Requant(mult=rng.integers(-20, 21, c), bias=rng.integers(-50, 51, c), shift=shift, mult_bits=6,
                 bias_bits=7, out=out, relu=relu, rounding=rounding if out.kind != "bipolar" else "half_up")
    acc = np.concatenate([rng.integers(-60, 61, (40, c)), np.zeros((1, c), np.int64)])   # zero: the bipolar tie
    got = apply_requant(acc, rq, channel_dim=1)
    want = np.array([[_naive_requant(int(acc[i, j]), rq, j) for j in range(c)] for i in range(acc.shape[0])])
    assert np.array_equal(got, want)
    assert got.min() >= (max(out.lo, 0) if relu else out.lo) and got.max() <= out.hi
    if out.kind == "bipolar":
        assert set(np.unique(got)) <= {-1, 1}
        z = acc * rq.mult + rq.bias
        assert np.array_equal(got[z == 0], np.ones(int((z == 0).sum()), np.int64))   # 0 -> +1


def test_requantizer_saturates_and_narrow_ranges():
    big = np.array([-10**6, -9, -8, -7, 0, 7, 8, 10**6])
    assert requantize_sum(big, shift=0, out=S4, relu=False).tolist() == [-8, -8, -8, -7, 0, 7, 7, 7]
    nar = Fmt(kind="signed", bits=4, narrow=True)
    assert requantize_sum(big, shift=0, out=nar, relu=False).tolist() == [-7, -7, -7, -7, 0, 7, 7, 7]
    assert requantize_sum(big, shift=0, out=Fmt(kind="unsigned", bits=4, narrow=True),
                          relu=True).tolist() == [0, 0, 0, 0, 0, 7, 8, 14]
    assert requantize_sum(np.array([-3, 3]), shift=1, out=S4, relu=False).tolist() == [-1, 2]   # half up
    assert requantize_sum(np.array([-3, 3]), shift=1, out=S4, relu=False, rounding="half_even").tolist() == [-2, 2]


def test_chain_requantizer_is_the_folded_bn():
    net = random_int_net(seed=2)
    acc = np.random.default_rng(0).integers(-3000, 3000, (7, 16, 8, 8))
    bn = net.layers[0].bn
    assert np.array_equal(apply_requant(acc, from_folded(bn)), apply_folded(acc, bn))


def test_fold_exact_for_dyadic_maps_and_threshold_for_bipolar():
    rq, exact = fold_requant(np.array([0.25, 0.5]), np.array([0.5, -1.0]), acc_lo=-100, acc_hi=100, out=S4, relu=False,
                             rounding="half_even")
    assert exact
    acc = np.arange(-100, 101)[:, None].repeat(2, 1)
    want = np.clip(np.round(acc * np.array([0.25, 0.5]) + np.array([0.5, -1.0])), -8, 7)   # np.round: half even
    assert np.array_equal(apply_requant(acc, rq), want.astype(np.int64))
    rq, exact = fold_requant(np.array([1 / 3]), np.array([0.1]), acc_lo=-100, acc_hi=100, out=S4, relu=False)
    assert not exact and abs(rq.mult[0] / 2 ** rq.shift - 1 / 3) <= 2.0 ** -(rq.shift + 1)
    # bipolar: the exact threshold of a * acc + b >= 0, for positive, negative and zero a
    a, b = np.array([0.37, -1.5, 0.0, 0.0, 2.0]), np.array([1.11, 4.5, 0.0, -1.0, -1e9])
    rq, exact = fold_requant(a, b, acc_lo=-50, acc_hi=50, out=BIP, relu=False)
    acc = np.arange(-50, 51)[:, None].repeat(5, 1)
    assert exact and np.array_equal(apply_requant(acc, rq), np.where(acc * a + b >= 0, 1, -1))
    assert rq.bias_bits <= 8      # the threshold is clamped to the sum's range


def test_requant_and_format_refusals():
    with pytest.raises(ValueError, match="bipolar format is 1 bit"):
        Fmt(kind="bipolar", bits=2)
    with pytest.raises(ValueError, match="relu must be True"):
        Requant(mult=np.ones(1, np.int64), bias=np.zeros(1, np.int64), shift=0, mult_bits=2, bias_bits=1, out=U4,
                relu=False)
    with pytest.raises(ValueError, match="holds -1 and \\+1 only; found 0"):
        check_values(np.array([1, 0, -1]), BIP, "w")
    assert fmt_for_range(0, 240) == Fmt(kind="unsigned", bits=8)
    assert fmt_for_range(-9, 8) == Fmt(kind="signed", bits=5)
    v = np.array([1, -1, -1, 1])
    assert to_codes(v, BIP).tolist() == [0, 1, 1, 0] and from_codes(np.array([0, -1, 1, 0]), BIP).tolist() == v.tolist()


# ----------------------------------------------------------------------------- pool and add

def test_pooling_and_add_equal_the_naive_model():
    rng = np.random.default_rng(3)
    x = rng.integers(-8, 8, (3, 4, 7, 6))
    for k, s, p in (((2, 2), 2, 0), ((3, 3), 2, 1), ((3, 2), 1, 1), ((7, 6), 1, 0)):
        node = Node(name="m", op="maxpool", inputs=("x",), output="y", kernel=k, stride=s, padding=p)
        assert np.array_equal(maxpool_int(x, k, s, p), _naive_node(node, [x]))
        node = dataclasses.replace(node, op="avgpool")
        assert np.array_equal(avgpool_sum(x, k, s, p), _naive_node(node, [x]))
    # padding never wins: an all-negative map keeps its values at the border
    neg = -np.ones((1, 1, 2, 2), np.int64) * 5
    assert maxpool_int(neg, (2, 2), 1, 1).tolist() == [[[[-5] * 3] * 3]]
    assert add_int(x, x[::-1], 2, -1).tolist() == (2 * x - x[::-1]).tolist()


# --------------------------------------------------------------------------------- the graph

def test_random_graph_with_every_node_type_equals_the_naive_model():
    g = random_int_graph(seed=0)
    assert {n.op for n in g.nodes} == {"conv2d", "linear", "maxpool", "avgpool", "add", "requant"}
    x = np.random.default_rng(0).integers(0, 16, (6, 1, 8, 8))
    logits, trace = run_graph(g, x, trace=True, batch=4)
    naive = _naive_graph(g, x)
    for name, t in g.tensors().items():
        assert np.array_equal(trace[name], naive[name]), name
        assert t.fmt.lo <= int(trace[name].min()) and int(trace[name].max()) <= t.fmt.hi, name
    assert np.array_equal(logits, naive["fc.out"])
    # every format is used: bipolar activations, signed narrow, half-even rounding, MAC biases
    assert np.array_equal(np.unique(trace["bin1.out"]), [-1, 1])
    assert float_logits(g, logits).shape == (6, 10)


def test_chain_graph_and_run_net_agree_both_ways():
    net = random_int_net(seed=5, channels=(6, 10, 7))
    g = graph_from_chain(net)
    x = np.random.default_rng(1).integers(0, 16, (30, 1, 8, 8))
    assert np.array_equal(run_graph(g, x, batch=7), run_net(net, x))
    back = chain_from_graph(g)
    assert np.array_equal(run_net(back, x), run_net(net, x))
    assert [lay.acc_bits for lay in back.layers] == [g.info(n.output).sum_fmt.bits for n in g.nodes]
    assert g.output.argmax_on_integers
    with pytest.raises(ValueError, match=r"node conv1 \(conv2d\): a MAC bias"):
        chain_from_graph(random_int_graph(seed=1))


def _residual_nodes():
    w = np.ones((2, 2, 1, 1), np.int64)
    rq = Requant(mult=np.ones(2, np.int64), bias=np.zeros(2, np.int64), shift=0, mult_bits=2, bias_bits=1, out=U4,
                 relu=True)
    return [
        Node(name="a", op="conv2d", inputs=("input",), output="a.out", weight=np.ones((2, 1, 1, 1), np.int64),
             w_fmt=S4, requant=rq),
        Node(name="b", op="conv2d", inputs=("a.out",), output="b.out", weight=w, w_fmt=S4, requant=rq),
        Node(name="c", op="conv2d", inputs=("b.out",), output="c.out", weight=w, w_fmt=S4, requant=rq),
        Node(name="add", op="add", inputs=("a.out", "c.out"), output="add.out", in_mults=(1, 1), requant=rq),
        Node(name="fc", op="linear", inputs=("add.out",), output="fc.out", weight=np.ones((3, 8), np.int64), w_fmt=S4),
    ]


def _graph(nodes, **kw):
    inp = GraphInput(name="input", shape=(1, 2, 2), fmt=U4, scale=1.0, rounding="integer")
    out = GraphOutput(name=nodes[-1].output, scale=np.ones(3), offset=np.zeros(3))
    return IntGraph(input=inp, nodes=tuple(nodes), output=out, **kw)


def test_liveness_order_and_the_facts_a_buffer_planner_needs():
    nodes = _residual_nodes()
    order = liveness_order([nodes[i] for i in (3, 4, 1, 0, 2)], "input")
    assert [n.name for n in order] == ["a", "b", "c", "add", "fc"]
    g = _graph(order)
    t = g.tensors()
    assert t["a.out"].consumers == (1, 3) and t["a.out"].last == 3      # the skip path lives until the add
    assert t["fc.out"].last == len(g.nodes) and t["input"].producer == -1
    assert g.peak_live() == 8 + 8 + 8        # during the add: a.out, c.out and add.out
    with pytest.raises(ValueError, match="inputs never produced"):
        liveness_order(nodes[1:], "input")


@pytest.mark.parametrize("edit, words", [
    (lambda ns: [ns[1], ns[0], *ns[2:]], "node b (conv2d): input 'a.out' is not produced by an earlier node"),
    (lambda ns: [dataclasses.replace(ns[0], weight=np.ones((2, 3, 1, 1), np.int64)), *ns[1:]],
     "node a (conv2d): weight [2, 3, 1, 1] does not fit the input [1, 2, 2]"),
    (lambda ns: [dataclasses.replace(ns[0], w_fmt=BIP, weight=np.zeros((2, 1, 1, 1), np.int64)), *ns[1:]],
     "node a weight: a bipolar tensor holds -1 and +1 only; found 0"),
    (lambda ns: [*ns[:3], dataclasses.replace(ns[3], in_mults=(1, 0)), ns[4]], "in_mults [1, 0] must be two nonzero"),
    (lambda ns: [*ns[:2], dataclasses.replace(ns[2], inputs=("a.out",)), *ns[3:]], "tensor b.out: used by no node"),
    (lambda ns: [*ns[:4], dataclasses.replace(ns[4], name="a")], "node a: the name is used twice"),
    (lambda ns: [*ns[:3], dataclasses.replace(ns[3], requant=None, op="maxpool", kernel=(1, 1), in_mults=())],
     "node add (maxpool): has 2 inputs"),
])
def test_bad_graphs_are_refused_naming_the_node(edit, words):
    with pytest.raises(ValueError) as e:
        _graph(edit(_residual_nodes()))
    assert words in str(e.value)


# ------------------------------------------------------------------------------- inputs

def test_quantize_images_roundings_and_preprocessing():
    x = np.array([[[[-0.25, 0.0, 0.03125, 0.09375, 0.5, 2.0]]]], dtype=np.float32)   # 1/32 and 3/32: ties
    inp = GraphInput(name="input", shape=(1, 1, 6), fmt=S4, scale=1 / 16, rounding="half_even")
    assert quantize_images(inp, x).tolist() == [[[[-4, 0, 0, 2, 7, 7]]]]
    inp = dataclasses.replace(inp, rounding="half_away")
    assert quantize_images(inp, -x).tolist() == [[[[4, 0, -1, -2, -8, -8]]]]
    inp = dataclasses.replace(inp, rounding="half_up")
    assert quantize_images(inp, -x).tolist() == [[[[4, 0, 0, -1, -8, -8]]]]
    inp = GraphInput(name="input", shape=(1, 1, 6), fmt=BIP, scale=1.0, rounding="sign",
                     preprocess=(("mul", (2.0,)), ("add", (-1.0,))))
    assert quantize_images(inp, x).tolist() == [[[[-1, -1, -1, -1, 1, 1]]]]    # 2x - 1 >= 0 -> +1 (0.5 -> 0 -> +1)
    ints = GraphInput(name="input", shape=(1, 1, 6), fmt=U4, scale=1.0, rounding="integer")
    with pytest.raises(ValueError, match="integer images"):
        quantize_images(ints, x)


def test_load_images_checks_files_shapes_and_labels(tmp_path):
    g = random_int_graph(seed=0)
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(5))
    xi, y, kind = load_images(g, tmp_path / "x.npy", tmp_path / "y.npy")
    assert kind == "float" and np.array_equal(xi, np.clip(np.floor(x * 16 + 0.5), 0, 15)) and y.tolist() == [0, 1, 2, 3, 4]
    np.save(tmp_path / "xi.npy", xi.astype(np.uint8))
    assert np.array_equal(load_images(g, tmp_path / "xi.npy")[0], xi)
    bad = {"flat.npy": x.reshape(5, 64), "big.npy": (xi + 16).astype(np.int16), "obj.npy": None, "empty.npy": x[:0]}
    for name, arr in bad.items():
        if arr is None:
            np.save(tmp_path / name, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            np.save(tmp_path / name, arr)
    np.save(tmp_path / "y3.npy", np.arange(3))
    np.save(tmp_path / "y10.npy", np.array([0, 1, 2, 3, 10]))
    for imgs, labs, words in (("flat.npy", None, "shape [5, 64]; the network takes (N, 1, 8, 8)"),
                              ("big.npy", None, "values 16..31 are outside the u4 range"),
                              ("obj.npy", None, "not a numeric .npy array"),
                              ("empty.npy", None, "holds no images"), ("nope.npy", None, "no such file"),
                              ("x.npy", "y3.npy", "expected (5,), one label per image"),
                              ("x.npy", "y10.npy", "labels 0..10 are outside 0..9")):
        with pytest.raises(ValueError, match=None) as e:
            load_images(g, tmp_path / imgs, None if labs is None else tmp_path / labs)
        assert words in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ the export

def test_graph_export_round_trip_and_hex_codes(tmp_path):
    g = random_int_graph(seed=4)
    x = np.random.default_rng(2).integers(0, 16, (12, 1, 8, 8))
    p = write_export(g, tmp_path / "e", extra={"test.inputs": (x, U4, None, "test_input")})
    e = load_export(p)
    assert np.array_equal(run_graph(e.graph, x), run_graph(g, x))
    m = e.manifest
    assert m["schema_version"] == 3 and [n["op"] for n in m["nodes"]][:5] == ["conv2d", "maxpool", "conv2d", "conv2d", "add"]
    a = m["activations"]["pool1.out"]
    assert a["consumers"] == ["res_a", "add1"] and a["last_use"] == 4 and a["format"] == U4.to_dict()
    assert m["nodes"][4]["in_shapes"] == [[8, 4, 4], [8, 4, 4]] and m["output"]["argmax_on_integers"] is False
    # binary weights: one bit per weight in the .hex, code 1 = -1
    hx = m["tensors"]["fc.weight"]["hex"]
    assert hx["field_bits"] == 1 and hx["word_bits"] == 4
    first = int((p / "fc.weight.hex").read_text().split()[0], 16)
    assert [(first >> r) & 1 for r in range(4)] == (g.node("fc").weight[:4, 0] < 0).astype(int).tolist()
    # not a chain, but the accelerator runs it: the add, the requant node and the average pool
    # as convolutions, the max pool merged into conv1
    from l1bn.hw.accel_layers import layers_from_export

    assert [lay.type for lay in layers_from_export(e)[0]] == ["conv2d", "conv2d", "conv2d", "add", "conv2d",
                                                            "requant", "avgpool", "linear"]
    assert not e.is_chain




def test_infer_cli_on_a_graph_export_and_your_own_images(tmp_path, cli):
    g = random_int_graph(seed=4)
    x = np.random.default_rng(2).integers(0, 16, (12, 1, 8, 8))
    labels = float_logits(g, run_graph(g, x)).argmax(1)
    labels[:3] = (labels[:3] + 1) % 10      # 9 of 12 right
    p = write_export(g, tmp_path / "e", extra={"test.inputs": (x, U4, None, "test_input"),
                                               "test.labels": (labels, 8, False, "test_label")})
    code, text = cli(["infer", str(p), "--json"])
    assert code == 0 and json.loads(text)["accuracy"] == 0.75
    np.save(tmp_path / "x.npy", (x / 16).astype(np.float32))        # float images: quantized to the same x
    np.save(tmp_path / "y.npy", labels)
    code, text = cli(["infer", str(p), "--images", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")])
    assert code == 0 and "integer accuracy  75.00 %" in text and "(float images)" in text, text
    np.save(tmp_path / "bad.npy", x[:, :, :4])
    for argv, words in ((["--images", str(tmp_path / "bad.npy")], "the network takes (N, 1, 8, 8) images"),
                        (["--labels", str(tmp_path / "y.npy")], "--labels needs --images")):
        code, text = cli(["infer", str(p), *argv])
        lines = text.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], text


def _edit(p, fn):
    m = json.loads((p / "manifest.json").read_text())
    fn(m)
    (p / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("fn, words", [
    (lambda m: m["nodes"][4].update(inputs=["pool1.out", "res_a.out"]), "used by no node"),
    (lambda m: m["nodes"][1].update(op="avgpool"), "node pool1: out_format"),
    (lambda m: m["activations"]["pool1.out"].update(last_use=9), "activation pool1.out: last_use=9 disagrees"),
    (lambda m: m["nodes"][5]["requant"].update(format={"kind": "bipolar", "bits": 2, "narrow": False}),
     "bipolar format is 1 bit"),
    (lambda m: m["tensors"]["bin1.weight"].update(format={"kind": "signed", "bits": 1, "narrow": False}),
     "tensor bin1.weight"),
    (lambda m: m["input"].update(rounding="round"), "input: rounding 'round' is not one of"),
    (lambda m: m["output"].update(offset=[0.0]), "output: offset must be 10 finite floats"),
])
def test_edited_graph_manifest_is_refused(tmp_path, fn, words):
    p = write_export(random_int_graph(seed=4), tmp_path / "e")
    _edit(p, fn)
    with pytest.raises(ExportError) as e:
        load_export(p)
    assert words in str(e.value)


# ------------------------------------------------------------------- sim net's data options

@pytest.fixture(scope="module")
def chain_export(tmp_path_factory):
    """A chain export (random digits-CNN shape) with 8 test images, and a graph export."""
    root = tmp_path_factory.mktemp("simdata")
    net = random_int_net(seed=6)
    x = np.random.default_rng(3).integers(0, 16, (8, 1, 8, 8))
    labels = run_net(net, x).argmax(1)
    chain = write_export(net, root / "chain", extra={"test.inputs": (x, 4, False, "test_input"),
                                                     "test.labels": (labels, 8, False, "test_label")})
    g = random_int_graph(seed=0)       # raw accumulators into an add: the accelerator cannot run it
    g = dataclasses.replace(g, nodes=tuple(dataclasses.replace(n, requant=None) if n.name == "res_b" else n
                                           for n in g.nodes))
    graph = write_export(g, root / "graph", extra={"test.inputs": (x, 4, False, "test_input")})
    np.save(root / "x.npy", (x / 16).astype(np.float32))
    np.save(root / "y.npy", labels)
    np.save(root / "bad.npy", x[:, :, :4])
    return root, chain, graph, x, labels


def test_sim_net_refuses_bad_data_and_graphs_before_building(chain_export, cli, monkeypatch, tmp_path):
    root, chain, graph, _, _ = chain_export
    build = tmp_path / "build"
    monkeypatch.setenv("L1BN_BUILD_DIR", str(build))
    cases = [
        ([str(chain), "--images", str(root / "bad.npy")], "the network takes (N, 1, 8, 8) images"),
        ([str(chain), "--images", str(root / "missing.npy")], "no such file"),
        ([str(chain), "--images", "3", "--labels", str(root / "y.npy")], "--labels goes with --images X.npy"),
        ([str(chain), "--images", "9"], "images=9 is out of range"),
        ([str(graph)], "node res_b (conv2d): raw accumulators feeding the next node (no requantizer) is not "
                       "supported by the accelerator yet"),
    ]
    for argv, words in cases:
        code, text = cli(["sim", "net", *argv])
        lines = text.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (argv, text)
    assert not build.exists()


@pytest.mark.slow
def test_sim_net_runs_your_own_images(chain_export, tmp_path):
    from l1bn.sim.simulate.net import simulate_net
    from l1bn.spec.images import load_images

    root, chain, _, x, labels = chain_export
    e = load_export(chain)
    xi, y, kind = load_images(e.graph, root / "x.npy", root / "y.npy")
    assert kind == "float" and np.array_equal(xi, x)
    r = simulate_net(e, simulator="icarus", inputs=xi[:2], labels=y[:2], build_dir=tmp_path)
    assert r["images"] == 2 and r["mismatches"] == 0 and r["passed"] and r["hw_accuracy"] == 1.0
