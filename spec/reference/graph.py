"""Integer networks as graphs: nodes in topological order, each naming its input tensors.

An :class:`IntGraph` is the integer network of an export (schema 3, docs/export.md): an input
description (:class:`GraphInput`), a tuple of :class:`Node` s in a topological order chosen so
that tensors die early (:func:`liveness_order`), and the output (:class:`GraphOutput`: the integer
logits and the float scale and offset that turn them into the source model's logits). Every tensor
is named; a node reads its ``inputs`` and writes its ``output``. Node operators:

============  ======================  ===========================================================
op            inputs                  computes (per image; ``N`` images at once)
============  ======================  ===========================================================
``conv2d``    (C, H, W)               ``sum_k W[o, k] * im2col(x)[k, p]`` (+ ``bias[o]``), zero
                                      padding, ``weight`` (O, C, kh, kw), ``stride``, ``padding``
``linear``    any shape, flattened    ``W @ flatten(x)`` (+ ``bias``), ``weight`` (O, K), (c, y, x)
                                      order (PyTorch ``flatten``)
``maxpool``   (C, H, W)               window max (``kernel``, ``stride``, ``padding``)
``avgpool``   (C, H, W)               window **sum** (zero padding counted); the 1/(kh*kw) is a scale
``add``       two equal shapes        ``a * in_mults[0] + b * in_mults[1]``
``requant``   any (channels first)    the requantizer alone
============  ======================  ===========================================================

``conv2d``, ``linear``, ``avgpool`` and ``add`` may end in a requantizer
(:class:`~l1bn.spec.reference.requant.Requant`, field ``requant``); without one their output is
the exact wide sum (an "accumulator"). Operand values and their encodings are
:class:`~l1bn.spec.reference.formats.Fmt` s: the input and weight formats are declared, every
other tensor's format follows from the node (accumulators: the signed or unsigned format just
wide enough for the exact range; requantized: the requantizer's output format; maxpool: its
input's). :meth:`IntGraph.tensors` gives each tensor's shape, format, producer, consumers and
last use, the facts a buffer planner needs.

Scales are metadata: the integer graph is closed under its own arithmetic. ``IntGraph.scales``
maps tensor names to their real scale (one value, or one per channel; ``real = int * scale``),
``Node.w_scale`` the weights'. The exporter folds every scale into the requantizers; only the
output's scale and offset are applied after the integers (:func:`float_logits`).

:func:`graph_from_chain` and :func:`chain_from_graph` convert to and from the chain
:class:`~l1bn.spec.reference.network.IntNet` that ``l1bn train`` exports and today's accelerator
runs; :func:`run_graph` is the executor (every product through
:func:`l1bn.spec.reference.mac.matmul`, the requantizer of :mod:`.requant`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .core import as_float64, as_int64, like, plain
from .formats import Fmt, check_values, fmt_for_range
from .network import IntLayer, IntNet, conv2d_int, linear_int
from .pool import add_int, avgpool_sum, maxpool_int, pool_out_size
from .requant import Requant, apply_requant, from_folded, to_folded

__all__ = ["OPS", "MAC_OPS", "INPUT_ROUNDINGS", "PREPROCESS_OPS", "GraphInput", "GraphOutput", "Node",
           "TensorInfo", "IntGraph", "pow2_exp", "run_graph", "float_logits", "graph_from_chain",
           "chain_from_graph", "liveness_order", "quantize_images"]

OPS = ("conv2d", "linear", "maxpool", "avgpool", "add", "requant")
MAC_OPS = ("conv2d", "linear")
#: how float images become the input integers (:func:`quantize_images`)
INPUT_ROUNDINGS = ("half_up", "half_away", "half_even", "floor", "sign", "integer")
PREPROCESS_OPS = ("mul", "add", "div")


def pow2_exp(v) -> int | None:
    """``e`` when every value of ``v`` equals ``2**-e`` (one power of two), else None."""
    s = np.unique(as_float64(v))
    if s.size != 1 or not (s[0] > 0 and math.isfinite(float(s[0]))):
        return None
    m, e = math.frexp(float(s[0]))
    return -(e - 1) if m == 0.5 else None


@dataclass(frozen=True)
class GraphInput:
    """The input tensor and how float images become its integers (:func:`quantize_images`).

    ``shape``: per image, as the source model takes it; ``fmt``: the integers' format; ``scale``:
    real value of one integer step (``x_int * scale``; 1.0 for images that are integers already);
    ``preprocess``: float32 operations the source model applies before its input quantizer, in
    order, each ``(op, values)`` with op in ``mul``, ``add``, ``div`` and one value or one per
    channel (Brevitas's ``2x - 1`` is ``(("mul", (2.0,)), ("add", (-1.0,)))``); ``rounding``:
    ``half_up`` ``floor(v + 1/2)``, ``half_away`` (ties away from 0, QONNX ``HALF_UP``),
    ``half_even`` (QONNX ``ROUND``), ``floor``, ``sign`` (bipolar: ``v >= 0`` -> +1), or
    ``integer`` (the images are the integers: no quantizer).
    """

    name: str
    shape: tuple
    fmt: Fmt
    scale: float
    rounding: str = "half_up"
    preprocess: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("input: name must be a non-empty string")
        if not self.shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.shape):
            raise ValueError(f"input: shape {list(self.shape)} must be positive integers")
        if not isinstance(self.fmt, Fmt):
            raise ValueError("input: fmt must be a Fmt")
        if not (isinstance(self.scale, float) and self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"input: scale {self.scale!r} must be a positive finite float")
        if self.rounding not in INPUT_ROUNDINGS:
            raise ValueError(f"input: rounding {self.rounding!r} is not one of {INPUT_ROUNDINGS}")
        if (self.rounding == "sign") != (self.fmt.kind == "bipolar"):
            raise ValueError("input: rounding 'sign' goes with a bipolar format, and only with it")
        for op, vals in self.preprocess:
            if op not in PREPROCESS_OPS:
                raise ValueError(f"input: preprocess op {op!r} is not one of {PREPROCESS_OPS}")
            v = np.asarray(vals, dtype=np.float64)
            if v.ndim != 1 or v.size not in (1, self.shape[0]) or not bool(np.isfinite(v).all()):
                raise ValueError(f"input: preprocess {op} values must be 1 or {self.shape[0]} (per channel) finite floats")
            if op == "div" and bool((v == 0).any()):
                raise ValueError("input: preprocess div by 0")
            if v.size > 1 and len(self.shape) != 3:
                raise ValueError("input: per-channel preprocessing needs a (C, H, W) input")


@dataclass(frozen=True)
class GraphOutput:
    """The logits tensor ``name`` (shape (C,)) and ``logit = int * scale[c] + offset[c]``
    (float64, one value per class; a source model's final float affine map, e.g. bnn_pynq's
    ``TensorNorm``, or the product of the last layer's input and weight scales)."""

    name: str
    scale: np.ndarray
    offset: np.ndarray

    @property
    def argmax_on_integers(self) -> bool:
        """The argmax of the integers is the argmax of the float logits: one positive scale
        and one offset for every class (ties aside)."""
        s, o = as_float64(self.scale), as_float64(self.offset)
        return bool(s.size and np.all(s == s[0]) and s[0] > 0 and np.all(o == o[0]))


@dataclass(frozen=True)
class Node:
    """One node of an :class:`IntGraph` (the module docstring's table).

    Attributes
    ----------
    name, op : str
    inputs : tuple of str
        Tensor names (two for ``add``, one otherwise).
    output : str
        The tensor it writes.
    weight : numpy.ndarray or None
        MAC nodes: int64 weights, conv2d (O, C, kh, kw), linear (O, K), in ``w_fmt``.
    w_fmt : Fmt or None
        MAC nodes: the weights' format (signed n-bit, narrow allowed, or bipolar = binary {-1,+1}).
    w_scale : numpy.ndarray or None
        MAC nodes, metadata: the weights' real scale, one value or one per output channel.
    bias : numpy.ndarray or None
        MAC nodes: int64 (O,), added to the accumulator in accumulator units (a quantized bias,
        Brevitas ``Int32Bias``: scale = input scale x weight scale).
    kernel : tuple
        Pooling: (kh, kw).
    stride, padding : int
        conv2d and pooling (symmetric zero padding; maxpool: padding never wins).
    in_mults : tuple
        add: the two integer multipliers (``(1, 1)`` for equal scales).
    requant : Requant or None
        The requantizer at the end of the node (required for ``requant`` nodes).
    """

    name: str
    op: str
    inputs: tuple
    output: str
    weight: np.ndarray | None = None
    w_fmt: Fmt | None = None
    w_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel: tuple = ()
    stride: int = 1
    padding: int = 0
    in_mults: tuple = ()
    requant: Requant | None = None

    @property
    def k(self) -> int:
        """MAC nodes: the reduction length (C*kh*kw or K)."""
        return int(np.prod(np.shape(self.weight)[1:], dtype=np.int64))

    @property
    def window(self) -> tuple:
        """conv2d and pooling: (kh, kw)."""
        return tuple(int(s) for s in np.shape(self.weight)[2:]) if self.op == "conv2d" else tuple(self.kernel)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of the graph: per-image ``shape``, ``fmt``, the index of its ``producer`` (-1 for
    the input), its ``consumers`` (node indices) and ``last`` use (``len(nodes)`` for the output:
    it lives to the end). ``sum_fmt`` is the format of the node's wide sum before its requantizer
    (None when the node has no sum)."""

    name: str
    shape: tuple
    fmt: Fmt
    producer: int
    consumers: tuple
    last: int
    sum_fmt: Fmt | None = None


def _int_tuple(v, what: str) -> tuple:
    t = tuple(v)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in t):
        raise ValueError(f"{what} {list(t)} must be integers")
    return tuple(int(s) for s in t)


def _range_prod(a: tuple, b: tuple) -> tuple:
    ext = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(ext), max(ext)


def _node_info(node: Node, ins: list[TensorInfo]) -> tuple[tuple, Fmt, Fmt | None]:
    """Shape and format of a node's output (and of its sum), checking everything it reads."""
    what = f"node {node.name} ({node.op})"
    if node.op not in OPS:
        raise ValueError(f"node {node.name}: op {node.op!r} is not one of {OPS}")
    want = 2 if node.op == "add" else 1
    if len(ins) != want:
        raise ValueError(f"{what}: has {len(ins)} inputs; {want} expected")
    x = ins[0]
    is_mac = node.op in MAC_OPS
    if is_mac != (node.weight is not None) or is_mac != (node.w_fmt is not None):
        raise ValueError(f"{what}: weight and w_fmt go with conv2d and linear nodes, and only with them")
    if node.bias is not None and not is_mac:
        raise ValueError(f"{what}: only MAC nodes have a bias")
    if node.op == "requant" and node.requant is None:
        raise ValueError(f"{what}: a requant node needs its requantizer")
    if node.op == "maxpool" and node.requant is not None:
        raise ValueError(f"{what}: maxpool has no requantizer (follow it with a requant node)")
    if node.op != "add" and node.in_mults:
        raise ValueError(f"{what}: in_mults belong to add nodes")
    if not isinstance(node.stride, int) or isinstance(node.stride, bool) or not 1 <= node.stride <= 64:
        raise ValueError(f"{what}: stride={node.stride!r} must be 1..64")
    if not isinstance(node.padding, int) or isinstance(node.padding, bool) or not 0 <= node.padding <= 64:
        raise ValueError(f"{what}: padding={node.padding!r} must be 0..64")
    if node.op not in ("conv2d", "maxpool", "avgpool") and (node.stride != 1 or node.padding != 0):
        raise ValueError(f"{what}: stride and padding belong to conv2d and pooling nodes")
    if node.op in ("maxpool", "avgpool"):
        if len(node.kernel) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in node.kernel):
            raise ValueError(f"{what}: kernel {list(node.kernel)} must be two positive integers")
    elif node.kernel:
        raise ValueError(f"{what}: kernel belongs to pooling nodes")
    lo, hi = x.fmt.lo, x.fmt.hi
    sum_fmt = None
    if is_mac:
        w = as_int64(node.weight, f"{node.name}.weight")
        check_values(w, node.w_fmt, f"node {node.name} weight")
        if node.op == "conv2d":
            if w.ndim != 4 or len(x.shape) != 3 or w.shape[1] != x.shape[0]:
                raise ValueError(f"{what}: weight {list(w.shape)} does not fit the input {list(x.shape)} "
                                 f"(O, C, kh, kw) with C = {x.shape[0] if x.shape else '?'}")
            ho = pool_out_size(x.shape[1], w.shape[2], node.stride, node.padding)
            wo = pool_out_size(x.shape[2], w.shape[3], node.stride, node.padding)
            if ho < 1 or wo < 1:
                raise ValueError(f"{what}: a {w.shape[2]}x{w.shape[3]} kernel does not fit the input {list(x.shape)}")
            shape = (int(w.shape[0]), ho, wo)
        else:
            k = int(np.prod(x.shape))
            if w.ndim != 2 or w.shape[1] != k:
                raise ValueError(f"{what}: weight {list(w.shape)} does not fit {k} inputs (O, K)")
            shape = (int(w.shape[0]),)
        plo, phi = _range_prod((node.w_fmt.lo, node.w_fmt.hi), (lo, hi))
        k = int(np.prod(w.shape[1:]))
        slo, shi = k * plo, k * phi
        if node.bias is not None:
            b = as_int64(node.bias, f"{node.name}.bias")
            if b.shape != (shape[0],):
                raise ValueError(f"{what}: bias {list(b.shape)} must be ({shape[0]},)")
            slo, shi = slo + min(int(b.min()), 0), shi + max(int(b.max()), 0)
        if node.w_scale is not None and np.size(node.w_scale) not in (1, shape[0]):
            raise ValueError(f"{what}: w_scale has {np.size(node.w_scale)} values; 1 or {shape[0]} expected")
        sum_fmt = fmt_for_range(slo, shi)
    elif node.op in ("maxpool", "avgpool"):
        if len(x.shape) != 3:
            raise ValueError(f"{what}: input {list(x.shape)} is not (C, H, W)")
        kh, kw = node.kernel
        if node.op == "maxpool" and node.padding and (node.padding >= kh or node.padding >= kw):
            raise ValueError(f"{what}: padding {node.padding} must be smaller than the kernel {list(node.kernel)}")
        ho = pool_out_size(x.shape[1], kh, node.stride, node.padding)
        wo = pool_out_size(x.shape[2], kw, node.stride, node.padding)
        if ho < 1 or wo < 1:
            raise ValueError(f"{what}: a {kh}x{kw} window does not fit the input {list(x.shape)}")
        shape = (x.shape[0], ho, wo)
        if node.op == "maxpool":
            return shape, x.fmt, None
        n = kh * kw
        slo, shi = (n * min(lo, 0), n * max(hi, 0)) if node.padding else (n * lo, n * hi)
        sum_fmt = fmt_for_range(slo, shi)
    elif node.op == "add":
        y = ins[1]
        if x.shape != y.shape:
            raise ValueError(f"{what}: input shapes {list(x.shape)} and {list(y.shape)} differ")
        m = _int_tuple(node.in_mults, f"{what}: in_mults")
        if len(m) != 2 or 0 in m or any(abs(v) > 1 << 30 for v in m):
            raise ValueError(f"{what}: in_mults {list(m)} must be two nonzero integers")
        alo, ahi = _range_prod((lo, hi), (m[0], m[0]))
        blo, bhi = _range_prod((y.fmt.lo, y.fmt.hi), (m[1], m[1]))
        sum_fmt = fmt_for_range(alo + blo, ahi + bhi)
        shape = x.shape
    else:   # requant
        shape, sum_fmt = x.shape, x.fmt
    rq = node.requant
    if rq is None:
        return shape, sum_fmt, sum_fmt
    if not isinstance(rq, Requant):
        raise ValueError(f"{what}: requant must be a Requant")
    if rq.channels != shape[0]:
        raise ValueError(f"{what}: the requantizer has {rq.channels} channels; the output has {shape[0]}")
    if sum_fmt.bits + rq.mult_bits + 1 > 62 or rq.bias_bits > 61:
        raise ValueError(f"{what}: {sum_fmt.bits}-bit sums x {rq.mult_bits}-bit multipliers (+ {rq.bias_bits}-bit "
                         "bias) exceed the reference's 62-bit range")
    return shape, rq.out, sum_fmt


@dataclass(frozen=True)
class IntGraph:
    """An integer network as a graph (module docstring). Validated on construction: a
    ``ValueError`` names the node and the problem."""

    input: GraphInput
    nodes: tuple
    output: GraphOutput
    scales: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "_info", self._infer())

    def _infer(self) -> dict:
        if not self.nodes:
            raise ValueError("the graph has no nodes")
        inp = self.input
        info = {inp.name: TensorInfo(inp.name, tuple(inp.shape), inp.fmt, -1, (), -1)}
        users: dict[str, list[int]] = {inp.name: []}
        names = set()
        for i, node in enumerate(self.nodes):
            if not isinstance(node, Node):
                raise ValueError(f"node {i}: not a Node")
            if node.name in names:
                raise ValueError(f"node {node.name}: the name is used twice")
            names.add(node.name)
            ins = []
            for t in node.inputs:
                if t not in info:
                    raise ValueError(f"node {node.name} ({node.op}): input {t!r} is not produced by an earlier node "
                                     "(nodes must be in topological order)")
                ins.append(info[t])
                users[t].append(i)
            if node.output in info:
                raise ValueError(f"node {node.name} ({node.op}): output {node.output!r} is written twice")
            shape, fmt, sum_fmt = _node_info(node, ins)
            info[node.output] = TensorInfo(node.output, tuple(shape), fmt, i, (), -1, sum_fmt)
            users[node.output] = []
        out = self.output
        if out.name not in info or out.name == inp.name:
            raise ValueError(f"output: tensor {out.name!r} is not produced by a node")
        oshape = info[out.name].shape
        if len(oshape) != 1:
            raise ValueError(f"output: tensor {out.name} has shape {list(oshape)}; the logits are (classes,)")
        for what, v in (("scale", out.scale), ("offset", out.offset)):
            a = as_float64(v)
            if a.size != oshape[0] or not bool(np.isfinite(a).all()):
                raise ValueError(f"output: {what} must be {oshape[0]} finite floats (one per class)")
        end = len(self.nodes)
        for t, us in users.items():
            if not us and t != out.name:
                raise ValueError(f"tensor {t}: used by no node and not the output")
            last = end if t == out.name else max(us)
            info[t] = TensorInfo(t, info[t].shape, info[t].fmt, info[t].producer, tuple(us), last, info[t].sum_fmt)
        for t, s in self.scales.items():
            if t not in info:
                raise ValueError(f"scales: {t!r} is not a tensor of the graph")
            a = as_float64(s)
            if a.size not in (1, info[t].shape[0]) or not bool(np.isfinite(a).all()) or not bool((a > 0).all()):
                raise ValueError(f"scales: {t} needs 1 or {info[t].shape[0]} positive finite values")
        return info

    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor (the input and each node's output) by name, in definition order."""
        return dict(self._info)

    def info(self, name: str) -> TensorInfo:
        return self._info[name]

    @property
    def in_shape(self) -> tuple:
        return tuple(self.input.shape)

    @property
    def out_shape(self) -> tuple:
        return self._info[self.output.name].shape

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def peak_live(self) -> int:
        """Most activation values (per image) alive at once when the nodes run in order: the
        inputs still to be read and the output being written (a buffer planner's lower bound)."""
        peak = 0
        for i in range(len(self.nodes)):
            live = sum(int(np.prod(t.shape)) for t in self._info.values() if t.producer <= i <= t.last)
            peak = max(peak, live)
        return peak


def liveness_order(nodes, input_name: str) -> tuple:
    """A topological order of ``nodes`` (any order in, each naming its inputs) that frees tensors
    early: repeatedly run, among the nodes whose inputs exist, the one that frees the most values
    (it is the last reader of its inputs), then the one reading the most recently made tensor,
    then the one first in the given order. Raises ``ValueError`` on a cycle or a missing input."""
    nodes = list(nodes)
    readers: dict[str, int] = {}
    for n in nodes:
        for t in n.inputs:
            readers[t] = readers.get(t, 0) + 1
    made = {input_name: 0}
    order, left = [], list(range(len(nodes)))
    remaining = dict(readers)
    while left:
        ready = [i for i in left if all(t in made for t in nodes[i].inputs)]
        if not ready:
            raise ValueError(f"nodes {', '.join(nodes[i].name for i in left)}: inputs never produced (or a cycle)")

        def key(i):
            ins = nodes[i].inputs
            frees = sum(1 for t in set(ins) if remaining[t] == ins.count(t))
            return (-frees, -max(made[t] for t in ins), i)

        i = min(ready, key=key)
        for t in nodes[i].inputs:
            remaining[t] -= 1
        made[nodes[i].output] = len(made)
        order.append(nodes[i])
        left.remove(i)
    return tuple(order)


# ---------------------------------------------------------------------------------- executor

def _run_node(node: Node, args: list[np.ndarray]) -> np.ndarray:
    x = args[0]
    if node.op == "conv2d":
        s = conv2d_int(x, node.weight, node.stride, node.padding)
    elif node.op == "linear":
        s = linear_int(x, node.weight)
    elif node.op == "maxpool":
        return maxpool_int(x, node.kernel, node.stride, node.padding)
    elif node.op == "avgpool":
        s = avgpool_sum(x, node.kernel, node.stride, node.padding)
    elif node.op == "add":
        s = add_int(x, args[1], *node.in_mults)
    else:
        s = x
    if node.bias is not None:
        b = as_int64(node.bias)
        s = s + b.reshape((1, -1) + (1,) * (s.ndim - 2))
    return s if node.requant is None else apply_requant(s, node.requant, channel_dim=1)


def run_graph(graph: IntGraph, x_int, *, check: bool = True, trace: bool = False, batch: int = 64):
    """Integer logits (N, classes) of integer images ``x_int`` (N, *input shape).

    Images go through in chunks of ``batch`` (memory: a convolution's im2col holds
    ``C*kh*kw x batch*Ho*Wo`` values). With ``check`` every node's inputs are checked against
    their formats. With ``trace`` also returns ``{tensor name: (N, ...) array}`` of every tensor.
    Results have the array type of ``x_int`` (numpy, or torch for a tensor).
    """
    x = np.asarray(plain(x_int))
    if x.dtype.kind not in "iub":
        raise ValueError("run_graph needs integer images; quantize floats with quantize_images first")
    x = x.astype(np.int64, copy=False)
    if tuple(x.shape[1:]) != graph.in_shape:
        raise ValueError(f"input shape {list(x.shape[1:])} != the network's input {list(graph.in_shape)}")
    check_values(x, graph.input.fmt, "input images")
    info = graph.tensors()
    if x.shape[0] == 0:
        return like(np.zeros((0,) + graph.out_shape, np.int64), x_int)
    outs, traces = [], []
    for s in range(0, x.shape[0], batch):
        env = {graph.input.name: x[s:s + batch]}
        for i, node in enumerate(graph.nodes):
            args = [env[t] for t in node.inputs]
            if check:
                for t, a in zip(node.inputs, args, strict=True):
                    check_values(a, info[t].fmt, f"node {node.name} input {t}")
            env[node.output] = _run_node(node, args)
            if not trace:
                for t in set(node.inputs):
                    if info[t].last == i:
                        del env[t]
        outs.append(env[graph.output.name])
        if trace:
            traces.append(env)
    logits = np.concatenate(outs)
    if not trace:
        return like(logits, x_int)
    names = list(info)
    return like(logits, x_int), {t: like(np.concatenate([e[t] for e in traces]), x_int) for t in names}


def float_logits(graph: IntGraph, logits) -> np.ndarray:
    """The source model's logits: ``int * output.scale + output.offset`` (float64)."""
    li = np.asarray(plain(logits), dtype=np.float64)
    return li * as_float64(graph.output.scale) + as_float64(graph.output.offset)


def quantize_images(inp: GraphInput, x) -> np.ndarray:
    """Float images (N, *shape) -> the input integers, as the source model's input quantizer.

    float32 throughout, in the source model's order (what ONNX Runtime and qonnx compute, so the
    integers are theirs bit for bit): each preprocess op, then ``v / scale``, then (except for
    ``sign``) clamp to the format's range, then the rounding (:class:`GraphInput`). ``integer``
    inputs must already be integers in range (any numeric dtype).
    """
    xf = np.asarray(plain(x))
    if xf.dtype.kind not in "fiub":
        raise ValueError(f"images must be numbers; got dtype {xf.dtype}")
    if tuple(xf.shape[1:]) != tuple(inp.shape):
        raise ValueError(f"images have shape {list(xf.shape[1:])} per image; the network takes {list(inp.shape)}")
    if inp.rounding == "integer":
        if not bool(np.all(np.isfinite(xf))) or not np.array_equal(xf, np.round(xf)):
            raise ValueError("this network takes integer images (no input quantizer); the images hold non-integers")
        return check_values(xf.astype(np.int64), inp.fmt, "images")
    v = xf.astype(np.float32)
    if not bool(np.isfinite(v).all()):
        raise ValueError("images hold NaN or infinite values")
    for op, vals in inp.preprocess:
        c = np.asarray(vals, dtype=np.float32)
        c = c.reshape((-1, 1, 1)) if c.size > 1 else c.reshape(())
        v = v * c if op == "mul" else (v + c if op == "add" else v / c)
    y = v / np.float32(inp.scale)
    if inp.rounding == "sign":
        return np.where(y >= 0, 1, -1).astype(np.int64)
    y = np.clip(y.astype(np.float64), inp.fmt.lo, inp.fmt.hi)
    if inp.rounding == "half_up":
        q = np.floor(y + 0.5)
    elif inp.rounding == "half_away":
        q = np.sign(y) * np.floor(np.abs(y) + 0.5)
    elif inp.rounding == "half_even":
        q = np.round(y)
    else:
        q = np.floor(y)
    return q.astype(np.int64)


# ------------------------------------------------------------------------------ chain <-> graph

def graph_from_chain(net: IntNet) -> IntGraph:
    """The graph of a chain network (``l1bn export`` of a trained run): one MAC node per layer,
    tensors ``input`` and ``<layer>.out``, every scale a power of two."""
    inp = GraphInput(name="input", shape=tuple(int(s) for s in net.in_shape),
                     fmt=Fmt(kind="signed" if net.in_signed else "unsigned", bits=int(net.in_bits)),
                     scale=float(2.0 ** -net.in_exp), rounding="half_up")
    nodes, scales = [], {"input": np.array([2.0 ** -net.in_exp])}
    prev = "input"
    for lay in net.layers:
        w_fmt = Fmt(kind="bipolar", bits=1) if lay.w_bits == 1 else Fmt(kind="signed", bits=int(lay.w_bits))
        out = f"{lay.name}.out"
        nodes.append(Node(name=lay.name, op=lay.type, inputs=(prev,), output=out,
                          weight=as_int64(lay.weight, f"{lay.name}.weight"), w_fmt=w_fmt,
                          w_scale=np.array([2.0 ** -lay.w_exp]), stride=int(lay.stride) if lay.type == "conv2d" else 1,
                          padding=int(lay.padding) if lay.type == "conv2d" else 0,
                          requant=None if lay.bn is None else from_folded(lay.bn)))
        scales[out] = np.array([2.0 ** -lay.out_exp])
        prev = out
    last = net.layers[-1]
    classes = int(last.out_shape[0])
    output = GraphOutput(name=prev, scale=np.full(classes, 2.0 ** -last.out_exp), offset=np.zeros(classes))
    return IntGraph(input=inp, nodes=tuple(nodes), output=output, scales=scales)


def chain_from_graph(graph: IntGraph) -> IntNet:
    """The chain :class:`IntNet` of a graph that is one (what today's accelerator runs), or a
    ``ValueError`` naming the first node (or the input) it cannot describe.

    A chain: MAC nodes only, each reading the previous one's output, no MAC bias, every node but
    the last ending in a half-up requantizer with an unsigned (ReLU) or signed full-range output,
    the last without; power-of-two per-tensor scales everywhere, no output offset; weights signed
    (narrow too) or binary; the input unsigned or signed (not bipolar) with a power-of-two scale. (How float
    images become the input integers, ``graph.input``, is not part of the chain: the accelerator
    takes the integers.)
    """
    inp = graph.input
    in_exp = pow2_exp(inp.scale)
    if inp.fmt.kind == "bipolar" or inp.fmt.narrow:
        raise ValueError(f"input: {inp.fmt.describe()} images")
    if in_exp is None:
        raise ValueError(f"input: the input scale {inp.scale:.6g} is not a power of two")
    layers = []
    prev, a_fmt, a_exp = inp.name, inp.fmt, in_exp
    info = graph.tensors()
    for i, node in enumerate(graph.nodes):
        what = f"node {node.name} ({node.op})"
        last = i == len(graph.nodes) - 1
        if node.op not in MAC_OPS:
            raise ValueError(f"{what}: a chain has conv2d and linear nodes only")
        if node.inputs != (prev,):
            raise ValueError(f"{what}: reads {list(node.inputs)}, not the previous output {prev} (a branch)")
        if node.bias is not None:
            raise ValueError(f"{what}: a MAC bias")
        if a_fmt.kind == "bipolar" or a_fmt.narrow:
            raise ValueError(f"{what}: {a_fmt.describe()} input activations")
        if node.w_fmt.kind == "unsigned":     # narrow signed weights are signed weights
            raise ValueError(f"{what}: {node.w_fmt.describe()} weights")
        w_exp = None if node.w_scale is None else pow2_exp(node.w_scale)
        if w_exp is None:
            raise ValueError(f"{what}: the weight scale is not one power of two")
        bn = None
        if node.requant is not None:
            if last:
                raise ValueError(f"{what}: the last node ends in a requantizer (the logits are accumulators)")
            bn = to_folded(node.requant)
            if bn is None:
                raise ValueError(f"{what}: its requantizer ({node.requant.rounding}, "
                                 f"{node.requant.out.describe()}, relu={node.requant.relu}) is not a chain layer's")
            out_exp = pow2_exp(graph.scales.get(node.output, np.array([0.0])))
            if out_exp is None:
                raise ValueError(f"{what}: the output scale is not one power of two")
        elif not last:
            raise ValueError(f"{what}: raw accumulators feed the next layer (no requantizer)")
        else:
            out_exp = w_exp + a_exp
        w_bits = 1 if node.w_fmt.kind == "bipolar" else node.w_fmt.bits
        t = info[node.output]
        layers.append(IntLayer(name=node.name, type=node.op, in_shape=tuple(info[prev].shape), out_shape=t.shape,
                               weight=as_int64(node.weight), w_bits=w_bits, w_exp=w_exp, a_bits=a_fmt.bits,
                               a_exp=a_exp, a_signed=a_fmt.kind == "signed", stride=node.stride,
                               padding=node.padding, bn=bn, out_exp=out_exp))
        prev, a_fmt, a_exp = node.output, t.fmt, out_exp
    if graph.output.name != prev:
        raise ValueError(f"output: tensor {graph.output.name} is not the last node's output")
    last = layers[-1]
    s = as_float64(graph.output.scale)
    if not (np.all(s == 2.0 ** -last.out_exp) and not np.any(as_float64(graph.output.offset))):
        raise ValueError("output: a float scale or offset after the integer logits")
    return IntNet(in_shape=graph.in_shape, in_bits=inp.fmt.bits, in_exp=in_exp, in_signed=inp.fmt.kind == "signed",
                  layers=tuple(layers))
