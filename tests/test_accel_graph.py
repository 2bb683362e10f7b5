"""The accelerator on graph exports (issue 27): chains with signed, narrow and bipolar inputs and
activations, binary weights, per-channel threshold and half-even requantizers, MAC and classifier
biases; logits bit-exact against the graph reference (:func:`l1bn.spec.reference.graph.run_graph`)
with random stalls on both streams, and one-line refusals naming the node for what it cannot run."""

import dataclasses

import numpy as np
import pytest
from l1bn.hw.accelerator import accelerator_from_export, accelerator_interface, layers_from_export
from l1bn.spec.reference.graph import IntGraph, run_graph
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
    # binary-only networks: the array's weights are the 1-bit codes
    assert (acc.mac_cfg.wbits == 1) == binary
    px = (x.reshape(len(x), -1) & ((1 << iface["in_bits"]) - 1)).tolist()
    outs, _ = _run_amaranth(acc, px, seed=shape[0] * 10 + shape[1])
    assert [o[1] for o in outs] == ref.tolist()
    assert [o[2] for o in outs] == np.argmax(ref, axis=1).tolist()


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
    with pytest.raises(ValueError, match=r"^node pool1 \(maxpool\): a maxpool node is not supported by the accelerator yet$"):
        layers_from_export(g)
    c = random_chain_graph(3)
    rq = c.nodes[1].requant
    rq7 = dataclasses.replace(rq, mult=np.ones(7, np.int64), bias=np.zeros(7, np.int64))
    bad = IntGraph(input=c.input, nodes=c.nodes[:-1] + (dataclasses.replace(c.nodes[-1], requant=rq7),),
                   output=c.output)
    with pytest.raises(ValueError, match=r"^node fc \(linear\): a requantizer on the last node"):
        layers_from_export(bad)
