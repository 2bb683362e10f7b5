"""The accelerator on graph exports (issue 27): chains with signed, narrow and bipolar inputs and
activations, binary weights, per-channel threshold and half-even requantizers, MAC and classifier
biases; logits bit-exact against the graph reference (:func:`l1bn.spec.reference.graph.run_graph`)
with random stalls on both streams, and one-line refusals naming the node for what it cannot run."""

import dataclasses
import re

import numpy as np
import pytest
from amaranth.hdl import Fragment
from l1bn.hw.accel_layers import cdiv, pool_weights
from l1bn.hw.accel_plan import Plan
from l1bn.hw.accelerator import accelerator_from_export, accelerator_interface, layers_from_export
from l1bn.spec.reference.graph import IntGraph, Node, run_graph
from l1bn.spec.reference.graph_random import random_chain_graph, random_int_graph
from test_accelerator import _run_amaranth


def _images(g, n, seed):
    rng = np.random.default_rng(seed)
    if g.input.fmt.kind == "bipolar":
        return rng.choice([-1, 1], (n, *g.in_shape))
    x = rng.integers(g.input.fmt.lo, g.input.fmt.hi + 1, (n, *g.in_shape))
    x[0] = g.input.fmt.lo          # corner: every pixel at the most negative value
    return x


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (3, 1)])
def test_graph_chain_bit_exact_with_stalls(binary, shape):
    g = random_chain_graph(3, binary=binary)
    x = _images(g, 3, seed=1)
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=shape[0], cols=shape[1])
    iface = accelerator_interface(g)
    assert iface["in_signed"] and acc.mac_cfg.signed_a
    # binary-only networks: the array's weights are the 1-bit codes; the padded conv1 keeps the
    # product path, the other layers (binary x bipolar) switch to the XNOR path
    assert (acc.mac_cfg.wbits == 1) == binary
    assert acc.plan.xnor_layers == ((False, True, True, True) if binary else (False,) * 4)
    px = (x.reshape(len(x), -1) & ((1 << iface["in_bits"]) - 1)).tolist()
    outs, _ = _run_amaranth(acc, px, seed=shape[0] * 10 + shape[1])
    assert [o[1] for o in outs] == ref.tolist()
    assert [o[2] for o in outs] == np.argmax(ref, axis=1).tolist()


def _xnor_graph():
    """random_chain_graph(binary=True) without padding: every layer binary x bipolar."""
    g = random_chain_graph(3, binary=True)
    n1, n2, fc1, fc2 = g.nodes
    rng = np.random.default_rng(0)
    fc1 = dataclasses.replace(fc1, weight=rng.choice(np.array([-1, 1], dtype=np.int64), (9, 5)))
    return IntGraph(input=g.input, nodes=(dataclasses.replace(n1, padding=0), n2, fc1, fc2), output=g.output)


@pytest.mark.parametrize("shape,xnor", [((4, 3), None), ((3, 1), None), ((4, 3), False)])
def test_binary_bipolar_network_runs_on_the_xnor_array(shape, xnor):
    """Every layer binary x bipolar and unpadded: the array is the XNOR-popcount one (unless
    ``xnor=False``), the stored activations and pixels are 1-bit codes, and the logits stay
    bit-exact (random stalls); with padding (a zero operand) the product array is kept and
    ``xnor=True`` is refused."""
    g = _xnor_graph()
    x = _images(g, 3, seed=1)
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=shape[0], cols=shape[1], xnor=xnor)
    on = xnor is None
    assert acc.plan.xnor == on and acc.mac_cfg.xnor == on and acc.lane_bits == (1 if on else 2)
    px = (x.reshape(len(x), -1) & 3).tolist()
    outs, _ = _run_amaranth(acc, px, seed=shape[0])
    assert [o[1] for o in outs] == ref.tolist()
    layers, inp = layers_from_export(random_chain_graph(3, binary=True))
    kw = {"in_chw": inp["shape"], "in_bits": inp["bits"], "in_signed": True, "rows": shape[0], "cols": shape[1]}
    assert not Plan(layers, **kw).xnor
    with pytest.raises(ValueError, match="xnor=True: the XNOR-popcount array needs every layer binary x bipolar"):
        Plan(layers, **kw, xnor=True)


def _mixed_graph(seed):
    """The CNV-w1a1 pattern, small: a signed s4 input into a padded binary conv1 (product path),
    then binary x bipolar layers: conv2 with a 2x2 max pool merged into it, fc1 and the
    classifier (XNOR path)."""
    from l1bn.spec.reference.formats import Fmt

    rng = np.random.default_rng(seed)
    g = random_chain_graph(seed, binary=True)
    n1, n2, fc1, fc2 = g.nodes
    pool = Node(name="pool2", op="maxpool", inputs=(n2.output,), output="pool2.out", kernel=(2, 2), stride=2)
    fc1 = dataclasses.replace(fc1, inputs=("pool2.out",), weight=rng.choice(np.array([-1, 1], dtype=np.int64), (9, 5)))
    inp = dataclasses.replace(g.input, fmt=Fmt(kind="signed", bits=4), rounding="half_up")
    return IntGraph(input=inp, nodes=(n1, n2, pool, fc1, fc2), output=g.output)


@pytest.mark.parametrize("shape,xnor", [((3, 4), None), ((2, 5), None), ((3, 4), False)])
def test_mixed_network_switches_to_xnor_per_layer(shape, xnor):
    """A network that mixes a wider first layer with binary x bipolar ones: the product array
    runs the binary x bipolar layers' tiles on its XNOR path (``plan.switch``; the padded first
    layer and ``xnor=False`` on the product path), with pooling on the XNOR layer, bit-exact
    against run_graph with random stalls."""
    g = _mixed_graph(4)
    x = _images(g, 3, seed=6)
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=shape[0], cols=shape[1], xnor=xnor)
    on = xnor is None
    assert not acc.plan.xnor and acc.plan.switch == on and acc.lane_bits >= 4
    # the activation memory's lanes as narrow as the stored -1/+1 values, the image's 4 bits:
    # the issuer picks and sign-extends each separately
    assert (acc.plan.img_lane_bits, acc.plan.act_lane_bits) == (4, 2)
    assert acc.plan.xnor_layers == (False, on, on, on)
    assert [lp.xnor for lp in acc.plan.layers] == list(acc.plan.xnor_layers)
    assert acc.layers[1].pool == (2, 2, 2)
    px = (x.reshape(len(x), -1) & ((1 << acc.plan.in_bits) - 1)).tolist()
    outs, _ = _run_amaranth(acc, px, seed=shape[1])
    assert [o[1] for o in outs] == ref.tolist()


def test_switch_needs_twos_complement_operands():
    from l1bn.hw.mac_array import MACArray
    from l1bn.spec.config import MACConfig

    for cfg in (MACConfig(rows=2, cols=2, wbits=2, abits=2, signed_w=True, signed_a=False),
                MACConfig(rows=2, cols=2, wbits=1, abits=1, signed_w=True, signed_a=True, bipolar_a=True, xnor=True)):
        with pytest.raises(ValueError, match=r"^switch \(per-tile XNOR\) needs two's complement"):
            MACArray(cfg, switch=True)


def test_graph_layers_fold_the_mac_bias_and_keep_the_rules():
    g = random_chain_graph(3)
    layers, inp = layers_from_export(g)
    assert inp == {"shape": (2, 6, 6), "bits": 4, "signed": True}
    conv1, conv2, conv3, fc = layers
    assert conv1.bipolar_out and conv1.w_bits == 1 and conv1.a_signed
    n2 = g.node("conv2")
    assert conv2.bias == tuple((n2.requant.bias + n2.bias * n2.requant.mult).tolist())
    assert (conv2.out_lo, conv2.out_hi, conv2.rounding) == (-3, 3, "half_even") and conv2.a_bits == 2
    assert (conv3.out_lo, conv3.out_hi) == (None, None) and conv3.a_signed   # the chain rule (u2, ReLU)
    assert fc.logit_bias == tuple(g.node("fc").bias.tolist()) and not fc.a_signed
    assert fc.logit_bits >= fc.acc_bits


def test_graph_features_still_refused_name_the_node():
    g = random_int_graph(0)
    raw = dataclasses.replace(g, nodes=tuple(dataclasses.replace(n, requant=None) if n.name == "res_b" else n
                                             for n in g.nodes))
    with pytest.raises(ValueError, match=r"^node res_b \(conv2d\): raw accumulators feeding the next node "
                                         r"\(no requantizer\) is not supported by the accelerator yet$"):
        layers_from_export(raw)
    # an add without a requantizer is fused into a conv2d / linear node only
    rawadd = _raw_add(g)
    bad = dataclasses.replace(rawadd, nodes=tuple(dataclasses.replace(n, inputs=("add1.out",)) if n.name == "proj"
                                                  else n for n in rawadd.nodes if n.name != "bin1"))
    with pytest.raises(ValueError, match=r"^node add1 \(add\): an add node without a requantizer is not "
                                         r"supported by the accelerator yet$"):
        layers_from_export(bad)
    # a skip from the image itself: only the first layer reads the image memory
    with pytest.raises(ValueError, match=r"^node add1 \(add\): reading the input image \(only the first layer"):
        layers_from_export(_skip_from_input_graph())
    c = random_chain_graph(3)
    rq = c.nodes[1].requant
    rq7 = dataclasses.replace(rq, mult=np.ones(7, np.int64), bias=np.zeros(7, np.int64))
    bad = IntGraph(input=c.input, nodes=c.nodes[:-1] + (dataclasses.replace(c.nodes[-1], requant=rq7),),
                   output=c.output)
    with pytest.raises(ValueError, match=r"^node fc \(linear\): a requantizer on the last node"):
        layers_from_export(bad)


def _raw_add(g):
    """``g`` with add1's requantizer removed: its exact sum feeds the next node."""
    return dataclasses.replace(g, nodes=tuple(dataclasses.replace(n, requant=None) if n.name == "add1" else n
                                              for n in g.nodes))


def _residual_variant(seed):
    """random_int_graph (a residual add, a standalone requantizer, global average pooling with a
    requantizer) changed to reach the other paths: conv1's max pool 3x3 stride 2 padding 1
    (merged, padded), a 3x3 stride 1 padding 1 max pool on pool1.out, which the add also reads
    (an identity layer of its own; the add's second input, so layer 0 writes above word 0), a 2x2 max pool stride 1 after the add (merged into it), and
    a 3x3 padded max pool on the standalone requantizer's mostly negative values (a padded
    position must never win: a zero would), and a 2x2 average pool without a requantizer whose
    sums feed the classifier (fused into it)."""
    rng = np.random.default_rng(seed)
    g = random_int_graph(seed)
    n = {node.name: node for node in g.nodes}
    nodes = (
        n["conv1"],
        dataclasses.replace(n["pool1"], kernel=(3, 3), stride=2, padding=1),
        Node(name="mp2", op="maxpool", inputs=("pool1.out",), output="mp2.out", kernel=(3, 3), stride=1, padding=1),
        dataclasses.replace(n["res_a"], inputs=("mp2.out",)),
        n["res_b"], dataclasses.replace(n["add1"], inputs=("res_b.out", "pool1.out")),
        Node(name="mp3", op="maxpool", inputs=("add1.out",), output="mp3.out", kernel=(2, 2), stride=1),
        dataclasses.replace(n["bin1"], inputs=("mp3.out",)),
        dataclasses.replace(n["proj"], requant=dataclasses.replace(n["proj"].requant, bias=np.full(8, -2, np.int64),
                                                                   bias_bits=3)),
        Node(name="mp4", op="maxpool", inputs=("proj.out",), output="mp4.out", kernel=(3, 3), stride=1, padding=1),
        dataclasses.replace(n["gap"], inputs=("mp4.out",), kernel=(2, 2), stride=2, padding=1, requant=None),
        dataclasses.replace(n["fc"], weight=rng.choice(np.array([-1, 1], dtype=np.int64), (10, 32))),
    )
    return IntGraph(input=g.input, nodes=nodes, output=g.output)


def _check_placement(plan, layers):
    """Tensors live at the same time never share a word; an add's two inputs are one block."""
    size = {lay.output: lay.channels * cdiv(lay.out_chw[1] * lay.out_chw[2], plan.cols) for lay in layers[:-1]}
    made = {lay.output: i for i, lay in enumerate(layers[:-1])}
    end = {t: max([made[t]] + [i for i, lay in enumerate(layers) if t in lay.inputs]) for t in made}
    for a in made:
        assert 0 <= plan.bases[a] and plan.bases[a] + size[a] <= plan.act_depth
        for b in made:
            if a < b and made[a] <= end[b] and made[b] <= end[a]:
                assert plan.bases[a] + size[a] <= plan.bases[b] or plan.bases[b] + size[b] <= plan.bases[a], (a, b)
    for lay in layers:
        if len(lay.inputs) == 2:
            assert plan.bases[lay.inputs[1]] == plan.bases[lay.inputs[0]] + size[lay.inputs[0]]


@pytest.mark.parametrize("variant,shape,stalls", [("random", (4, 4), False), ("variant", (4, 9), True),
                                                   ("raw add", (3, 4), True)])
def test_residual_graph_bit_exact(variant, shape, stalls):
    """Every graph node on the accelerator (issue 27): a residual add (a 1x1 convolution over its
    two inputs stored one after the other), standalone requantizers, average pooling with a
    requantizer and fused into the classifier, max pools merged, padded and on an identity layer;
    logits bit-exact against run_graph, the measured image period equal to the formula."""
    g = {"random": random_int_graph(0), "variant": _residual_variant(0), "raw add": _raw_add(random_int_graph(0))}[variant]
    x = _images(g, 2, seed=5)[::-1]     # a random image first (the corner image hides a bad first write)
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=shape[0], cols=shape[1])
    types = [lay.type for lay in acc.layers]
    if variant == "random":
        assert types == ["conv2d", "conv2d", "conv2d", "add", "conv2d", "requant", "avgpool", "linear"]
    elif variant == "raw add":      # the add's exact sum fused into bin1: [W, W] on both inputs
        assert types == ["conv2d", "conv2d", "conv2d", "conv2d", "requant", "avgpool", "linear"]
        assert acc.layers[3].inputs == ("pool1.out", "res_b.out") and acc.layers[3].k == 16
    else:
        assert types == ["conv2d", "maxpool", "conv2d", "conv2d", "add", "conv2d", "requant", "linear"]
        assert [lay.pool for lay in acc.layers] == [(3, 3, 2), (3, 3, 1), None, None, (2, 2, 1), None, (3, 3, 1),
                                                    None]
        assert acc.layers[-1].inputs == ("mp4.out",) and acc.layers[-1].k == 8 * 3 * 3
    _check_placement(acc.plan, acc.layers)
    if variant == "variant":
        assert acc.plan.layers[0].out_base > 0
    px = (x.reshape(len(x), -1) & ((1 << acc.plan.in_bits) - 1)).tolist()
    outs, starts = _run_amaranth(acc, px, seed=7 if stalls else None)
    assert [o[1] for o in outs] == ref.tolist()
    assert [o[2] for o in outs] == np.argmax(ref, axis=1).tolist()
    if not stalls:
        assert outs[1][0] - outs[0][0] == acc.cycles_per_image
        assert outs[0][0] - starts[0] == acc.latency


def test_unsigned_network_with_half_even_requantizer():
    """Only unsigned tensors but a half-even requantizer with many ties (shift 3, mult 1): the
    writeback applies the node's rounding, not the chain rule's half up."""
    from l1bn.spec.reference.formats import Fmt
    from l1bn.spec.reference.requant import Requant

    rng = np.random.default_rng(2)
    u4 = Fmt(kind="unsigned", bits=4)
    g = random_int_graph(0)
    rq = Requant(mult=np.ones(4, np.int64), bias=np.zeros(4, np.int64), shift=3, mult_bits=2, bias_bits=1, out=u4,
                 relu=True, rounding="half_even")
    conv = Node(name="conv", op="conv2d", inputs=("input",), output="conv.out", weight=rng.integers(-1, 2, (4, 1, 3, 3)),
                w_fmt=Fmt(kind="signed", bits=2), padding=1, requant=rq)
    fc = Node(name="fc", op="linear", inputs=("conv.out",), output="fc.out", weight=rng.integers(-8, 8, (3, 256)),
              w_fmt=Fmt(kind="signed", bits=4))
    g = IntGraph(input=g.input, nodes=(conv, fc), output=dataclasses.replace(g.output, name="fc.out",
                                                                            scale=np.ones(3), offset=np.zeros(3)))
    x = _images(g, 2, seed=3)[::-1]
    acc = accelerator_from_export(g, rows=4, cols=4)
    assert not acc.plan.signed_acts and acc.plan.general_rules
    outs, _ = _run_amaranth(acc, x.reshape(len(x), -1).tolist())
    assert [o[1] for o in outs] == np.asarray(run_graph(g, x)).tolist()


def test_average_pool_sum_fused_into_the_classifier():
    """W' @ x == W @ windowsum(x) exactly, padding and overlapping windows included."""
    from l1bn.spec.reference.pool import avgpool_sum

    g = _residual_variant(0)
    fc = next(lay for lay in layers_from_export(g)[0] if lay.name == "fc")
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (5, 8, 3, 3))
    for kernel, stride, pad in [((2, 2), 2, 1), ((3, 3), 1, 1), ((3, 3), 3, 0)]:
        avg = dataclasses.replace(g.node("gap"), kernel=kernel, stride=stride, padding=pad)
        s = avgpool_sum(x, kernel, stride, pad)
        w = rng.integers(-2, 3, (4, int(np.prod(s.shape[1:]))))
        wf = pool_weights(w, s.shape[1:], (8, 3, 3), avg)
        assert np.array_equal(x.reshape(5, -1) @ wf.T, s.reshape(5, -1) @ w.T)
    assert fc.w_bits == 2


def _pool_graph(seed, stride):
    """random_chain_graph with a 2x2 max pool (``stride``; 1: overlapping windows) after conv1's
    bipolar thresholds and a 2x2 stride-1 max pool after conv2's signed narrow outputs."""
    rng = np.random.default_rng(seed)
    g = random_chain_graph(seed)
    n1, n2, n3, fc = g.nodes
    pool1 = Node(name="pool1", op="maxpool", inputs=(n1.output,), output="pool1.out", kernel=(2, 2), stride=stride)
    n2 = dataclasses.replace(n2, inputs=("pool1.out",), stride=1, padding=1)
    pool2 = Node(name="pool2", op="maxpool", inputs=(n2.output,), output="pool2.out", kernel=(2, 2), stride=1)
    n3 = dataclasses.replace(n3, inputs=("pool2.out",))
    k = 4 * (2 if stride == 2 else 4) ** 2
    fc = dataclasses.replace(fc, weight=rng.integers(-8, 8, (7, k)).astype(np.int64))
    return IntGraph(input=g.input, nodes=(n1, pool1, n2, pool2, n3, fc), output=g.output)


@pytest.mark.parametrize("stride", [2, 1])
@pytest.mark.parametrize("shape", [(4, 4), (3, 5)])
def test_max_pool_on_the_fly_bit_exact(stride, shape):
    """Max pooling in the writeback: each output group computes one window's positions, the
    maximum of their requantized values goes to one lane; exact for bipolar and signed values,
    disjoint and overlapping windows, with random stalls."""
    g = _pool_graph(3, stride)
    x = _images(g, 3, seed=2)
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=shape[0], cols=shape[1])
    assert [lay.pool for lay in acc.layers] == [(2, 2, stride), (2, 2, 1), None, None]
    px = (x.reshape(len(x), -1) & ((1 << acc.plan.in_bits) - 1)).tolist()
    outs, _ = _run_amaranth(acc, px, seed=stride * 7 + shape[0])
    assert [o[1] for o in outs] == ref.tolist()


def test_max_pool_needs_a_window_per_group():
    g = _pool_graph(3, 2)
    with pytest.raises(ValueError, match="2x2 max pool needs cols >= 4"):
        accelerator_from_export(g, rows=16, cols=2)
    # the automatic shape search only considers shapes that fit the window
    acc = accelerator_from_export(g)
    Fragment.get(acc, None)
    assert acc.cols >= 4


def test_verilog_net_of_a_pooled_graph_export(tmp_path):
    """``l1bn verilog net`` on a graph export with max pools and biases: the Verilog, the MAC
    nodes' .hex files (a max pool has none) and the schedule with the pooled groups."""
    import json

    from l1bn.sim.verilog.net import write_net_verilog
    from l1bn.spec.export import write_export

    g = _pool_graph(3, 2)
    path = write_export(g, tmp_path / "e", rows=4)
    files = write_net_verilog(path, tmp_path / "v", rows=4, cols=4)
    names = sorted(f.name for f in files)
    assert "accelerator.v" in names and "schedule.json" in names
    assert {"conv1.weight.hex", "conv2.weight.hex", "fc.weight.hex"} <= set(names)
    sched = json.loads((tmp_path / "v" / "schedule.json").read_text())
    assert [s["G"] for s in sched["layers"]] == [9, 4, 1, 1]     # pooled positions, one window per group


def _skip_from_input_graph():
    """conv1 (one channel) added to the image itself: a skip connection from the network input."""
    g = random_int_graph(0)
    conv1, add1 = g.node("conv1"), g.node("add1")
    c1 = dataclasses.replace(conv1, weight=conv1.weight[:1], bias=conv1.bias[:1],
                             requant=dataclasses.replace(conv1.requant, mult=conv1.requant.mult[:1],
                                                         bias=conv1.requant.bias[:1]))
    rq1 = dataclasses.replace(add1.requant, mult=add1.requant.mult[:1], bias=add1.requant.bias[:1])
    return IntGraph(input=g.input, output=dataclasses.replace(g.output, name="fc.out"), nodes=(
        c1, Node(name="add1", op="add", inputs=("conv1.out", "input"), output="add1.out", in_mults=(1, 1),
                 requant=rq1),
        dataclasses.replace(g.node("fc"), inputs=("add1.out",), weight=np.ones((10, 64), np.int64))))


def _two_adds_graph():
    """random_int_graph with a second add that reads pool1.out again (pool1.out feeds two adds)."""
    g = random_int_graph(0)
    add1 = g.node("add1")
    add2 = dataclasses.replace(add1, name="add2", inputs=("pool1.out", "add1.out"), output="add2.out")
    nodes = []
    for n in g.nodes:
        nodes.append(dataclasses.replace(n, inputs=("add2.out",)) if n.name == "bin1" else n)
        if n.name == "add1":
            nodes.append(add2)
    return dataclasses.replace(g, nodes=tuple(nodes))


def _wide_weights_graph():
    """random_chain_graph's classifier with 12-bit weights."""
    from l1bn.spec.reference.formats import Fmt

    g = random_chain_graph(3)
    fc = g.nodes[-1]
    fc = dataclasses.replace(fc, weight=fc.weight * 200, w_fmt=Fmt(kind="signed", bits=12))
    return dataclasses.replace(g, nodes=g.nodes[:-1] + (fc,))


@pytest.mark.parametrize("graph,message", [
    (_skip_from_input_graph, r"node add1 \(add\): reading the input image \(only the first layer reads it\)"),
    (_two_adds_graph, r"node add2 \(add\): tensor pool1\.out read by two adds \(add1 and add2\)"),
    (_wide_weights_graph, r"node fc \(linear\): s12 weights \(the MAC array takes at most 8 bits\)"),
])
def test_verilog_net_refuses_in_one_line(graph, message, tmp_path, cli):
    """What the accelerator cannot run: one ``error:`` line naming the node, exit 2, no output
    folder (the export itself is valid: ``write_export`` and the graph reference take it)."""
    from l1bn.spec.export import write_export

    path = write_export(graph(), tmp_path / "e", rows=4)
    code, out = cli(["verilog", "net", str(path), "-o", str(tmp_path / "v")])
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"error: {message} is not supported by the accelerator yet", lines[0])
    assert not (tmp_path / "v").exists()
