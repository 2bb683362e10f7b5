"""A random integer graph with every node type (for tests and benches without a trained model).

:func:`random_int_graph` builds, for 1x8x8 unsigned images::

    input u4 (1, 8, 8)
    conv1   3x3 pad 1 -> 8 channels, 4-bit weights, a MAC bias, requant u4 half up
    pool1   maxpool 2x2 stride 2                                  (8, 4, 4)
    res_a   3x3 pad 1, requant u4 half even                       } a residual block
    res_b   3x3 pad 1, requant u4                                 }
    add1    pool1 + res_b (in_mults 1, 1), requant u4             }
    bin1    1x1 conv, binary weights {-1,+1}, requant bipolar     (8, 4, 4)
    proj    requant node: bipolar -> s3 narrow (mult -1..1)       (a standalone requantizer)
    gap     global average pool (window sum), requant s4
    fc      linear 8 -> 10, binary weights, MAC bias
    output  logits = int * scale + offset (per-class float scale, one offset)

The requantizer constants are drawn so every activation uses its range. ``seed`` seeds a numpy
``default_rng``; the same seed gives the same graph.
"""

from __future__ import annotations

import numpy as np

from .formats import Fmt
from .graph import GraphInput, GraphOutput, IntGraph, Node
from .requant import Requant

__all__ = ["random_int_graph", "random_chain_graph", "random_cnv_graph"]


def _rq(rng, c: int, *, shift: int, span: float, out: Fmt, relu: bool, rounding: str = "half_up") -> Requant:
    """Multipliers that map a sum of typical size ``span`` to about the output range."""
    mult = rng.integers(max(1, int(2 ** shift * out.hi / span / 2)), max(2, int(2 ** shift * out.hi / span * 2)),
                        c).astype(np.int64)
    bias = rng.integers(-(1 << shift) * 2, (1 << shift) * 2, c).astype(np.int64)
    mb = max(2, int(np.abs(mult).max()).bit_length() + 1)
    bb = max(2, int(np.abs(bias).max()).bit_length() + 1)
    return Requant(mult=mult, bias=bias, shift=shift, mult_bits=mb, bias_bits=bb, out=out, relu=relu,
                   rounding=rounding)


def random_int_graph(seed: int = 0, *, channels: int = 8, classes: int = 10) -> IntGraph:
    """The graph of the module docstring with random integers."""
    rng = np.random.default_rng(seed)
    u4, s4 = Fmt(kind="unsigned", bits=4), Fmt(kind="signed", bits=4)
    bip = Fmt(kind="bipolar", bits=1)
    c = channels

    def w4(*shape):
        return rng.integers(-8, 8, shape).astype(np.int64)

    def wbin(*shape):
        return rng.choice(np.array([-1, 1], dtype=np.int64), shape)

    nodes = [
        Node(name="conv1", op="conv2d", inputs=("input",), output="conv1.out", weight=w4(c, 1, 3, 3), w_fmt=s4,
             bias=rng.integers(-20, 20, c).astype(np.int64), padding=1,
             requant=_rq(rng, c, shift=12, span=9 * 15 * 4, out=u4, relu=True)),
        Node(name="pool1", op="maxpool", inputs=("conv1.out",), output="pool1.out", kernel=(2, 2), stride=2),
        Node(name="res_a", op="conv2d", inputs=("pool1.out",), output="res_a.out", weight=w4(c, c, 3, 3), w_fmt=s4,
             padding=1, requant=_rq(rng, c, shift=6, span=c * 9 * 15 * 4, out=u4, relu=True, rounding="half_even")),
        Node(name="res_b", op="conv2d", inputs=("res_a.out",), output="res_b.out", weight=w4(c, c, 3, 3), w_fmt=s4,
             padding=1, requant=_rq(rng, c, shift=14, span=c * 9 * 15 * 4, out=u4, relu=True)),
        Node(name="add1", op="add", inputs=("pool1.out", "res_b.out"), output="add1.out", in_mults=(1, 1),
             requant=_rq(rng, c, shift=8, span=30, out=u4, relu=True)),
        Node(name="bin1", op="conv2d", inputs=("add1.out",), output="bin1.out", weight=wbin(c, c, 1, 1),
             w_fmt=bip, requant=Requant(mult=rng.choice(np.array([-1, 1]), c).astype(np.int64),
                                        bias=rng.integers(-30, 30, c).astype(np.int64), shift=0, mult_bits=2,
                                        bias_bits=7, out=bip, relu=False)),
        Node(name="proj", op="requant", inputs=("bin1.out",), output="proj.out",
             requant=Requant(mult=rng.integers(-1, 2, c).astype(np.int64), bias=np.zeros(c, np.int64), shift=0,
                             mult_bits=2, bias_bits=1, out=Fmt(kind="signed", bits=3, narrow=True), relu=False)),
        Node(name="gap", op="avgpool", inputs=("proj.out",), output="gap.out", kernel=(4, 4), stride=4,
             requant=_rq(rng, c, shift=4, span=16, out=s4, relu=False)),
        Node(name="fc", op="linear", inputs=("gap.out",), output="fc.out", weight=wbin(classes, c), w_fmt=bip,
             bias=rng.integers(-5, 5, classes).astype(np.int64)),
    ]
    inp = GraphInput(name="input", shape=(1, 8, 8), fmt=u4, scale=1 / 16, rounding="half_up")
    out = GraphOutput(name="fc.out", scale=0.5 + rng.random(classes), offset=np.full(classes, 0.25))
    return IntGraph(input=inp, nodes=tuple(nodes), output=out)


def random_chain_graph(seed: int = 0, *, binary: bool = False, classes: int = 7) -> IntGraph:
    """A chain of MAC nodes with the graph features the accelerator runs (issue 27), for 2x6x6
    images.

    ``binary=False``: signed s4 input; conv1 3x3 pad 1, binary weights, a bipolar threshold
    requantizer; conv2 3x3 stride 2, narrow s3 weights, a MAC bias, half-even requantizer to
    narrow s3 (no ReLU); conv3 1x1, requant u2 half up (ReLU); fc linear with a classifier bias;
    a per-class float output scale (a TensorNorm). ``binary=True``: bipolar input, every weight
    binary and every hidden activation bipolar (thresholds), no bias (the SFC-w1a1 pattern).
    """
    rng = np.random.default_rng(seed)
    bip = Fmt(kind="bipolar", bits=1)

    def wbin(*shape):
        return rng.choice(np.array([-1, 1], dtype=np.int64), shape)

    def thresholds(c, span):
        return Requant(mult=rng.choice(np.array([-1, 1]), c).astype(np.int64),
                       bias=rng.integers(-span, span + 1, c).astype(np.int64), shift=0, mult_bits=2,
                       bias_bits=max(2, span.bit_length() + 1), out=bip, relu=False)

    if binary:
        nodes = [
            Node(name="conv1", op="conv2d", inputs=("input",), output="conv1.out", weight=wbin(6, 2, 3, 3),
                 w_fmt=bip, padding=1, requant=thresholds(6, 4)),
            Node(name="conv2", op="conv2d", inputs=("conv1.out",), output="conv2.out", weight=wbin(5, 6, 3, 3),
                 w_fmt=bip, stride=2, requant=thresholds(5, 8)),
            Node(name="fc1", op="linear", inputs=("conv2.out",), output="fc1.out", weight=wbin(9, 20), w_fmt=bip,
                 requant=thresholds(9, 4)),
            Node(name="fc2", op="linear", inputs=("fc1.out",), output="fc2.out", weight=wbin(classes, 9), w_fmt=bip),
        ]
        inp = GraphInput(name="input", shape=(2, 6, 6), fmt=bip, scale=1.0, rounding="sign")
    else:
        s3n = Fmt(kind="signed", bits=3, narrow=True)
        nodes = [
            Node(name="conv1", op="conv2d", inputs=("input",), output="conv1.out", weight=wbin(6, 2, 3, 3),
                 w_fmt=bip, padding=1, requant=thresholds(6, 12)),
            Node(name="conv2", op="conv2d", inputs=("conv1.out",), output="conv2.out",
                 weight=rng.integers(-3, 4, (5, 6, 3, 3)).astype(np.int64), w_fmt=s3n, stride=2, padding=1,
                 bias=rng.integers(-6, 7, 5).astype(np.int64),
                 requant=_rq(rng, 5, shift=5, span=40, out=s3n, relu=False, rounding="half_even")),
            Node(name="conv3", op="conv2d", inputs=("conv2.out",), output="conv3.out",
                 weight=rng.integers(-2, 2, (4, 5, 1, 1)).astype(np.int64), w_fmt=Fmt(kind="signed", bits=2),
                 requant=_rq(rng, 4, shift=3, span=10, out=Fmt(kind="unsigned", bits=2), relu=True)),
            Node(name="fc", op="linear", inputs=("conv3.out",), output="fc.out",
                 weight=rng.integers(-8, 8, (classes, 36)).astype(np.int64), w_fmt=Fmt(kind="signed", bits=4),
                 bias=rng.integers(-40, 40, classes).astype(np.int64)),
        ]
        inp = GraphInput(name="input", shape=(2, 6, 6), fmt=Fmt(kind="signed", bits=4), scale=1 / 8)
    out = GraphOutput(name=nodes[-1].output, scale=0.5 + rng.random(classes), offset=rng.random(classes))
    return IntGraph(input=inp, nodes=tuple(nodes), output=out)


def random_cnv_graph(seed: int = 0, *, wbits: int = 1, abits: int = 1, classes: int = 10,
                     in_shape: tuple = (3, 32, 32), widths: tuple = (64, 64, 128, 128, 256, 256, 512, 512)) -> IntGraph:
    """FINN's CNV topology (BNN-PYNQ ``cnv_WxAy``) with random integers, for benches and tests
    that need its shape, not its accuracy::

        input u8 (3, 32, 32)
        conv 3x3 (no padding) 64, 64 | maxpool 2 | 128, 128 | maxpool 2 | 256, 256
        linear 512, 512, classes (the last without a requantizer: the logits)

    ``wbits`` / ``abits`` 1: binary weights {-1, +1} / bipolar activations by per-channel
    thresholds; 2: signed narrow 2-bit weights {-1, 0, 1} / signed 2-bit activations (half-even
    requantizers). The first layer takes the 8-bit pixels. ``widths`` and ``in_shape`` scale it
    down (the 6 convolution widths, then the 2 hidden linear widths).
    """
    if wbits not in (1, 2) or abits not in (1, 2):
        raise ValueError(f"wbits={wbits}, abits={abits}: CNV comes with 1 or 2 bits each")
    rng = np.random.default_rng(seed)
    bip = Fmt(kind="bipolar", bits=1)
    w_fmt = bip if wbits == 1 else Fmt(kind="signed", bits=2, narrow=True)
    a_fmt = bip if abits == 1 else Fmt(kind="signed", bits=2)

    def weights(*shape):
        vals = np.array([-1, 1] if wbits == 1 else [-1, 0, 1], dtype=np.int64)
        return rng.choice(vals, shape)

    def requant(c, span):
        if abits == 1:
            return Requant(mult=rng.choice(np.array([-1, 1]), c).astype(np.int64),
                           bias=rng.integers(-span, span + 1, c).astype(np.int64), shift=0, mult_bits=2,
                           bias_bits=max(2, int(span).bit_length() + 1), out=bip, relu=False)
        return _rq(rng, c, shift=8, span=span, out=a_fmt, relu=False, rounding="half_even")

    nodes, prev, (c, h, w) = [], "input", in_shape
    convs, fcs = widths[:6], widths[6:]
    for i, o in enumerate(convs):
        name = f"conv{i}"
        a_in = 255 if i == 0 else 1
        span = max(4, int(np.sqrt(c * 9) * a_in))
        nodes.append(Node(name=name, op="conv2d", inputs=(prev,), output=f"{name}.out", weight=weights(o, c, 3, 3),
                          w_fmt=w_fmt, requant=requant(o, span)))
        prev, c, h, w = f"{name}.out", o, h - 2, w - 2
        if i in (1, 3):
            nodes.append(Node(name=f"pool{i}", op="maxpool", inputs=(prev,), output=f"pool{i}.out", kernel=(2, 2),
                              stride=2))
            prev, h, w = f"pool{i}.out", h // 2, w // 2
    k = c * h * w
    for i, o in enumerate((*fcs, classes)):
        name, last = f"fc{i}", i == len(fcs)
        nodes.append(Node(name=name, op="linear", inputs=(prev,), output=f"{name}.out", weight=weights(o, k),
                          w_fmt=w_fmt, requant=None if last else requant(o, max(4, int(np.sqrt(k))))))
        prev, k = f"{name}.out", o
    inp = GraphInput(name="input", shape=tuple(in_shape), fmt=Fmt(kind="unsigned", bits=8), scale=1 / 255,
                     rounding="half_up")
    out = GraphOutput(name=prev, scale=np.ones(classes), offset=np.zeros(classes))
    return IntGraph(input=inp, nodes=tuple(nodes), output=out)
