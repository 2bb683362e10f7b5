"""A cleaned QONNX model -> the integer graph it computes (:class:`~l1bn.spec.reference.graph.IntGraph`).

The walk visits the ONNX nodes in topological order and keeps, for every ONNX tensor, what it is
in integer terms (a :class:`_Val`):

* ``float``: the float image and the preprocessing the model applies to it (``Mul``, ``Add``,
  ``Sub``, ``Div`` by constants, shape-only nodes) until its input quantizer, which becomes the
  export's input description (preprocess, scale, rounding);
* ``int``: a tensor of the integer graph and the real value it stands for, per channel
  ``real = int * scale[c] + offset[c]``, then an optional pending ``Relu``. Constant affine nodes
  (``BatchNormalization``, ``Mul``, ``Div``, ``Add``, ``Sub``, a float MAC bias, bnn_pynq's
  ``TensorNorm``) only change ``scale`` and ``offset``; shape-only nodes (``Reshape``, ``Flatten``,
  ``Squeeze``, ``Unsqueeze``, a ``Transpose`` that moves only size-1 axes, ``Identity``,
  ``Dropout``, a float ``Cast``) only change the view.

Nodes of the integer graph come from: ``Conv``/``Gemm``/``MatMul`` whose weights are a quantizer on
a constant (MAC; a quantized bias becomes the integer MAC bias, a float one an offset),
``MaxPool``, ``AveragePool``/``GlobalAveragePool`` (a window sum; the 1/(kh*kw) joins the scale),
``Add``/``Sub`` of two tensors (a residual add, the two inputs put on one grid), and every
``Quant``/``BipolarQuant``/``Trunc`` on an integer tensor: a requantizer whose constants fold the
pending scale, offset and ReLU (:func:`l1bn.spec.reference.requant.fold_requant`). A requantizer
right after a MAC, pool or add whose sum nothing else reads is fused into that node. What is left
at the graph output is the logits: the integers, and ``scale``/``offset`` applied after them.

Rounding of the quantizers: ``ROUND``/``HALF_EVEN`` becomes the half-even requantizer where the
folded constants are exact (dyadic maps: ties do occur and are rounded like qonnx), half up
elsewhere (a BN or a float scale in front: a tie needs an exact float coincidence);
``FLOOR`` is half up with ``-1/2`` LSB in the bias (exact); QONNX's ``HALF_UP`` rounds ties away
from zero, which is half up for values >= 0 and is refused on signed dyadic outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from l1bn.spec.reference.formats import Fmt
from l1bn.spec.reference.graph import (
    MAC_OPS,
    GraphInput,
    GraphOutput,
    IntGraph,
    Node,
    liveness_order,
)
from l1bn.spec.reference.requant import fold_requant

from .qonnx_quant import (
    QONNXImportError,
    QuantParams,
    node_error,
    node_name,
    quant_params,
    quantized_ints,
)

__all__ = ["SUPPORTED_OPS", "INPUT_TYPES", "qonnx_to_graph"]

SUPPORTED_OPS = ("Quant", "BipolarQuant", "Trunc", "Conv", "Gemm", "MatMul", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "BatchNormalization", "Mul", "Div", "Add", "Sub", "Relu", "Reshape",
                 "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout", "Cast")
_VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout", "Cast")
_AFFINE_OPS = ("Mul", "Div", "Add", "Sub")
#: integer input types for a model without an input quantizer (FINN's DataType names)
INPUT_TYPES = {"UINT8": Fmt(kind="unsigned", bits=8), "INT8": Fmt(kind="signed", bits=8),
               "UINT4": Fmt(kind="unsigned", bits=4), "INT4": Fmt(kind="signed", bits=4),
               "UINT2": Fmt(kind="unsigned", bits=2), "BIPOLAR": Fmt(kind="bipolar", bits=1),
               "BINARY": Fmt(kind="unsigned", bits=1)}


@dataclass
class _Val:
    """What an ONNX tensor is in integer terms (module docstring)."""

    kind: str                    # "float" (before the input quantizer) or "int"
    shape: tuple                 # the ONNX per-image shape (a view of the graph tensor)
    tensor: str = ""             # int: the graph tensor
    scale: np.ndarray | None = None    # int: (C,) real scale per channel of the graph tensor
    offset: np.ndarray | None = None   # int: (C,)
    relu: bool = False           # int: a Relu after the affine map, not applied yet
    pre: tuple = ()              # float: the preprocessing so far

    @property
    def plain(self) -> bool:
        """No pending offset or ReLU (a MAC may read it: linear in the integers)."""
        return self.kind == "int" and not self.relu and not np.any(self.offset)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _is_dyadic(v) -> bool:
    """At most 24 significant bits per value: a float64 product of such values is exact."""
    return all(x == 0 or (math.frexp(float(x))[0] * 2 ** 24) % 1 == 0 for x in np.ravel(v))


def _exact_channels(rq, a, b) -> np.ndarray:
    """Per channel: the requantizer's constants represent the map ``a * acc + b`` exactly."""
    s = 2.0 ** rq.shift
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), np.shape(rq.mult))
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), np.shape(rq.bias))
    return (np.asarray(rq.mult, dtype=np.float64) == a * s) & (np.asarray(rq.bias, dtype=np.float64) == b * s)


class _Builder:
    def __init__(self, w, *, mult_bits: int, input_type: str | None):
        self.w = w
        self.mult_bits = mult_bits
        self.input_type = input_type
        self.vals: dict[str, _Val] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple] = {}       # graph tensor -> per-image shape
        self.fmts: dict[str, Fmt] = {}           # graph tensor -> format
        self.sums: dict[str, tuple] = {}         # graph tensor -> (lo, hi) of the values it holds
        self.scales: dict[str, np.ndarray] = {}
        self.sources: dict[str, list] = {}       # graph node -> ONNX node names
        self.counts: dict[str, int] = {}
        self.inp: GraphInput | None = None
        self.in_name = w.graph.input[0].name

    # ------------------------------------------------------------------------------ helpers
    def oshape(self, t: str) -> tuple:
        s = self.w.get_tensor_shape(t)
        if s is None:
            raise QONNXImportError(f"tensor {t}: no shape after qonnx's shape inference")
        return tuple(int(d) for d in s[1:])

    def const(self, t: str):
        v = self.w.get_initializer(t) if t else None
        return None if v is None else np.asarray(v, dtype=np.float64)

    def name(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}{self.counts[kind]}"

    def add_node(self, onnx_node, node: Node, *, shape: tuple, fmt: Fmt, rng: tuple, scale) -> str:
        self.nodes.append(node)
        self.shapes[node.output] = tuple(shape)
        self.fmts[node.output] = fmt
        self.sums[node.output] = rng
        if scale is not None:
            self.scales[node.output] = np.asarray(scale, dtype=np.float64).ravel()
        self.sources[node.name] = [node_name(onnx_node)]
        return node.output

    def channels(self, v: _Val) -> int:
        return self.shapes[v.tensor][0]

    def int_val(self, node, t: str, what: str) -> _Val:
        v = self.vals.get(t)
        if v is None:
            raise node_error(node, f"{what} {t} is not computed by the supported nodes in front of it")
        if v.kind == "float":
            if t == self.in_name and self.inp is None:
                return self.raw_input(node)
            raise node_error(node, f"the {what} is the float image: it must go through a Quant node (the "
                                   "input quantizer) first")
        return v

    def raw_input(self, node) -> _Val:
        """The graph input read by a node other than a quantizer: integer images (--input-type)."""
        it = self.input_type
        if it is None:
            from qonnx.core.datatype import DataType

            dt = self.w.get_tensor_datatype(self.in_name)
            if dt is not None and dt.is_integer() and dt != DataType["INT32"] and dt.name in INPUT_TYPES:
                it = dt.name
        if it is None:
            raise node_error(node, f"reads the graph input {self.in_name} directly: the model has no input quantizer. "
                                   "If its images are integers (e.g. 8-bit pixels), say which with "
                                   f"--input-type ({', '.join(INPUT_TYPES)}); otherwise add a Quant in front")
        fmt = INPUT_TYPES[it]
        shape = self.oshape(self.in_name)
        self.inp = GraphInput(name="input", shape=shape, fmt=fmt, scale=1.0,
                              rounding="sign" if fmt.kind == "bipolar" else "integer")
        self.shapes["input"], self.fmts["input"] = shape, fmt
        self.sums["input"] = (fmt.lo, fmt.hi)
        self.scales["input"] = np.array([1.0])
        c = shape[0]
        v = _Val("int", shape, "input", np.ones(c), np.zeros(c))
        self.vals[self.in_name] = v
        return v

    def channel_vec(self, node, v: _Val, const: np.ndarray, what: str, *, bn: bool = False) -> np.ndarray:
        """A constant that acts per channel of ``v``'s graph tensor (a scalar, or C values along
        the view's channel axis, broadcast from the right; ``bn``: a (C,) vector of axis 1)."""
        c = self.channels(v)
        a = np.asarray(const, dtype=np.float64)
        if a.size == 1:
            return np.full(c, float(a.ravel()[0]))
        if bn:
            if a.shape != (c,) or not v.shape or v.shape[0] != c:
                raise node_error(node, f"{what} parameters of shape {list(a.shape)} do not fit {c} channels")
            return a
        vs = v.shape
        lead = a.shape[:len(a.shape) - len(vs)] if a.ndim > len(vs) else ()
        if any(d != 1 for d in lead):
            raise node_error(node, f"{what} constant of shape {list(a.shape)} changes the batch")
        tail = a.shape[len(lead):]
        tail = (1,) * (len(vs) - len(tail)) + tuple(tail)
        ok = len(vs) >= 1 and tail[0] == c == vs[0] and all(d == 1 for d in tail[1:]) \
            and int(np.prod(vs)) == int(np.prod(self.shapes[v.tensor]))
        if not ok:
            raise node_error(node, f"{what} constant of shape {list(a.shape)} is not per channel of a "
                                   f"{list(vs)} tensor with {c} channels")
        return a.reshape(c)

    # ------------------------------------------------------------------------------ the walk
    def run(self) -> IntGraph:
        w = self.w
        for n in w.graph.node:
            if n.op_type not in SUPPORTED_OPS:
                raise node_error(n, f"operator {n.op_type} is not supported; supported: {', '.join(SUPPORTED_OPS)}")
        self.vals[self.in_name] = _Val("float", self.oshape(self.in_name))
        consumed_input = False
        consts: set[str] = set()
        for n in w.graph.node:
            ins = list(n.input)
            if all(not t or t in consts or self.const(t) is not None for t in ins):
                consts.update(n.output)   # a constant subgraph (a weight quantizer): read by its consumer
                continue
            if self.in_name in ins:
                consumed_input = True
            handler = getattr(self, f"op_{n.op_type}")
            out = handler(n)
            if out is not None:
                self.vals[n.output[0]] = out
        if not consumed_input:
            raise QONNXImportError(f"the graph input {self.in_name} is not used")
        oname = w.graph.output[0].name
        v = self.vals.get(oname)
        if v is None or v.kind != "int":
            raise QONNXImportError(f"the graph output {oname} is not computed from the image by the supported nodes")
        if v.relu:
            raise QONNXImportError(f"the graph output {oname} ends in a Relu without a quantizer after it")
        shape = self.shapes[v.tensor]
        if len(shape) != 1 and int(np.prod(shape)) != shape[0]:
            raise QONNXImportError(f"the graph output {oname} has shape {list(shape)}; the logits are (classes,)")
        if len(shape) != 1:   # (C, 1, 1) logits: a 1x1 view node would be needed; refuse clearly
            raise QONNXImportError(f"the graph output {oname} is a (C, 1, 1) map; flatten the logits before the output")
        out = GraphOutput(name=v.tensor, scale=v.scale.copy(), offset=v.offset.copy())
        return self.finish(out)

    def finish(self, out: GraphOutput) -> IntGraph:
        nodes = _fuse(liveness_order(self.nodes, "input"), out.name, self.scales, self.sources)
        nodes = liveness_order(nodes, "input")
        used = {"input"} | {n.output for n in nodes}
        scales = {t: s for t, s in self.scales.items() if t in used}
        try:
            return IntGraph(input=self.inp, nodes=nodes, output=out, scales=scales)
        except ValueError as e:
            raise QONNXImportError(f"the integer graph is not valid: {e}") from None

    # ------------------------------------------------------------------------------ views
    def view(self, n, v: _Val) -> _Val:
        return replace(v, shape=self.oshape(n.output[0]))

    def op_Identity(self, n):
        return self.vals_in(n)

    op_Dropout = op_Identity

    def vals_in(self, n) -> _Val:
        v = self.vals.get(n.input[0])
        if v is None:
            if n.input[0] == self.in_name:
                v = self.vals[self.in_name]
            else:
                raise node_error(n, f"input {n.input[0]} is not computed by the supported nodes in front of it")
        return v

    def op_Cast(self, n):
        from onnx import TensorProto

        if _attr(n, "to") not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
            raise node_error(n, "Cast to a non-float type is not supported")
        return self.vals_in(n)

    def op_Reshape(self, n):
        v = self.vals_in(n)
        oshape = tuple(int(d) for d in self.w.get_tensor_shape(n.output[0]))
        ishape = tuple(int(d) for d in self.w.get_tensor_shape(n.input[0]))
        if oshape[0] != ishape[0] or int(np.prod(oshape)) != int(np.prod(ishape)):
            raise node_error(n, f"reshapes {list(ishape)} to {list(oshape)}: it moves data across the batch")
        return self.view(n, v)

    op_Flatten = op_Reshape
    op_Squeeze = op_Reshape
    op_Unsqueeze = op_Reshape

    def op_Transpose(self, n):
        v = self.vals_in(n)
        ishape = tuple(int(d) for d in self.w.get_tensor_shape(n.input[0]))
        perm = list(_attr(n, "perm", list(range(len(ishape)))[::-1]))
        moved = [p for p in perm if ishape[p] != 1]
        if perm[0] != 0 or moved != sorted(moved):
            raise node_error(n, f"Transpose perm={perm} of a {list(ishape)} tensor changes the data order "
                                "(only size-1 axes may move)")
        return self.view(n, v)

    # ------------------------------------------------------------------------------ affine
    def op_BatchNormalization(self, n):
        v = self.vals_in(n)
        if v.kind != "int":
            raise node_error(n, "a BatchNormalization before the input quantizer is not supported")
        if v.relu:
            raise node_error(n, "a BatchNormalization after a Relu (no quantizer in between) is not supported")
        cs = [self.const(t) for t in n.input[1:5]]
        if any(c is None for c in cs):
            raise node_error(n, "scale, B, mean and var must be constants")
        gamma, beta, mean, var = (self.channel_vec(n, v, c, "BatchNormalization", bn=True) for c in cs)
        k = gamma / np.sqrt(var + float(_attr(n, "epsilon", 1e-5)))
        return replace(v, scale=v.scale * k, offset=v.offset * k + beta - mean * k)

    def _affine(self, n, op: str):
        a, b = n.input[0], n.input[1]
        ca, cb = self.const(a), self.const(b)
        if ca is None and cb is None:
            if op in ("Add", "Sub"):
                return self.residual(n, op)
            raise node_error(n, f"{op} of two computed tensors is not supported (only a residual Add/Sub)")
        if ca is not None and cb is not None:
            raise node_error(n, "both inputs are constants")
        first = ca is None             # x op c (else c op x)
        v = self.vals_in_name(n, a if first else b)
        c = cb if first else ca
        if v.kind == "float":
            return self.preprocess(n, v, op, c, first)
        if v.relu:
            raise node_error(n, f"a {op} after a Relu (no quantizer in between) is not supported")
        k = self.channel_vec(n, v, c, op)
        if op == "Mul":
            return replace(v, scale=v.scale * k, offset=v.offset * k)
        if op == "Div":
            if not first or np.any(k == 0):
                raise node_error(n, "only division of the activations by a nonzero constant is supported")
            return replace(v, scale=v.scale / k, offset=v.offset / k)
        if op == "Add":
            return replace(v, offset=v.offset + k)
        return replace(v, offset=v.offset - k) if first else replace(v, scale=-v.scale, offset=k - v.offset)

    def vals_in_name(self, n, t: str) -> _Val:
        v = self.vals.get(t)
        if v is None:
            raise node_error(n, f"input {t} is not computed by the supported nodes in front of it")
        return v

    def op_Mul(self, n):
        return self._affine(n, "Mul")

    def op_Div(self, n):
        return self._affine(n, "Div")

    def op_Add(self, n):
        return self._affine(n, "Add")

    def op_Sub(self, n):
        return self._affine(n, "Sub")

    def preprocess(self, n, v: _Val, op: str, c: np.ndarray, first: bool) -> _Val:
        """An elementwise float op on the image before the input quantizer (float32 order kept)."""
        c = np.asarray(c, dtype=np.float64)
        ishape = self.oshape(self.in_name)
        if c.size != 1:
            if len(ishape) != 3 or v.shape != ishape or c.size != ishape[0] or \
                    any(d != 1 for d in c.shape[-2:]) or c.shape[-3] != ishape[0]:
                raise node_error(n, f"input preprocessing by a constant of shape {list(c.shape)}: only a scalar "
                                    "or one value per channel of the image is supported")
        vals = tuple(float(x) for x in np.asarray(c, dtype=np.float32).ravel())
        neg = tuple(-x for x in vals)
        if op == "Mul":
            steps = (("mul", vals),)
        elif op == "Add":
            steps = (("add", vals),)
        elif op == "Sub":
            steps = (("add", neg),) if first else (("mul", (-1.0,)), ("add", vals))   # c - x = (-x) + c, exact
        else:
            if not first:
                raise node_error(n, "input preprocessing c / x is not supported")
            steps = (("div", vals),)
        return replace(v, pre=v.pre + steps, shape=self.oshape(n.output[0]))

    def op_Relu(self, n):
        v = self.vals_in(n)
        if v.kind != "int":
            raise node_error(n, "a Relu before the input quantizer is not supported")
        if v.plain and self.fmts[v.tensor].lo >= 0 and bool(np.all(v.scale > 0)):
            return v                       # already >= 0: nothing to do
        return replace(v, relu=True)

    # ------------------------------------------------------------------------------ quantizers
    def op_Quant(self, n):
        return self.quantizer(n)

    op_BipolarQuant = op_Quant
    op_Trunc = op_Quant

    def quantizer(self, n) -> _Val:
        x = n.input[0]
        v = self.vals.get(x)
        if v is None and x == self.in_name:
            v = self.vals[self.in_name]
        if v is None:
            raise node_error(n, f"input {x} is not computed by the supported nodes in front of it")
        if v.kind == "float":
            return self.input_quant(n, v)
        what = "activation"
        q = quant_params(self.w, n, what)
        c = self.channels(v)
        qs = self.channel_vec(n, v, q.scale.reshape(q.scale_shape), "quantizer scale") if q.scale.size > 1 \
            else np.full(c, float(q.scale[0]))
        if q.op == "Trunc":
            a, b = self.trunc_map(n, q, v, qs)
            out_scale = np.full(c, float(q.out_scale[0])) if q.out_scale.size == 1 else \
                self.channel_vec(n, v, q.out_scale, "Trunc output scale")
        else:
            a, b = v.scale / qs, v.offset / qs
            out_scale = qs
        relu = v.relu or q.fmt.kind == "unsigned"
        if v.relu and q.fmt.kind == "bipolar":       # relu(x) >= 0: always +1
            a, b = np.zeros(c), np.zeros(c)
        if q.rounding == "FLOOR":
            b = b - 0.5
        lo, hi = self.sums[v.tensor]
        try:
            rq, exact = fold_requant(a, b, acc_lo=lo, acc_hi=hi, out=q.fmt, relu=relu and q.fmt.kind != "bipolar",
                                     rounding="half_up", mult_bits=self.mult_bits)
        except ValueError as e:
            raise node_error(n, f"the requantizer does not fit: {e}") from None
        if q.rounding in ("ROUND", "HALF_EVEN") and q.fmt.kind != "bipolar" and (exact or _exact_channels(rq, a, b).any()):
            # per channel (issue 32): one channel whose map is exact (a bias of 0 among float biases)
            # lands on ties like qonnx's; the others' constants are rounded, either rule fits them
            rq = replace(rq, rounding="half_even")
        if q.rounding == "HALF_UP" and exact and q.fmt.kind == "signed" and not relu:
            raise node_error(n, "rounding_mode HALF_UP rounds negative ties away from zero, l1bn's requantizer "
                                "rounds them up, and with no BatchNormalization or float scale in front the values "
                                "land on ties; use rounding_mode FLOOR or ROUND")
        name = self.name("rq")
        shape = self.shapes[v.tensor]
        node = Node(name=name, op="requant", inputs=(v.tensor,), output=f"{name}.out", requant=rq)
        out = self.add_node(n, node, shape=shape, fmt=q.fmt, rng=(q.fmt.lo, q.fmt.hi), scale=out_scale)
        return _Val("int", v.shape, out, out_scale.copy(), np.zeros(c))

    def trunc_map(self, n, q: QuantParams, v: _Val, qs: np.ndarray):
        """``Trunc``: ``y = round(x / scale)`` (an integer already), ``/ 2**t``, clamp, rounding."""
        if not v.plain:
            raise node_error(n, "a Trunc after an offset or a Relu is not supported")
        r = v.scale / qs
        if not np.allclose(r, np.round(r), rtol=1e-6, atol=0) or np.any(np.round(r) < 1):
            raise node_error(n, f"the Trunc input scale is not an integer multiple of its scale (ratio {r[0]:.6g})")
        if q.out_scale.size != 1 or qs.size and not np.all(qs == qs[0]):
            raise node_error(n, "a per-channel Trunc is not supported")
        if len(n.input) >= 6:   # v2: trunc_scale = 2**round(log2(out_scale / scale))
            t = 2.0 ** np.round(np.log2(float(q.out_scale[0]) / float(qs[0])))
        else:                   # v1: 2**(in_bits - out_bits)
            t = 2.0 ** (q.in_bits - q.bits)
        return np.round(r) / t, np.zeros_like(r)

    def input_quant(self, n, v: _Val) -> _Val:
        if self.inp is not None:
            raise node_error(n, "a second quantizer on the float image (one input quantizer is supported)")
        q = quant_params(self.w, n, "input")
        if not q.per_tensor:
            raise node_error(n, "a per-channel input scale is not supported")
        rounding = {"ROUND": "half_even", "HALF_EVEN": "half_even", "HALF_UP": "half_away", "FLOOR": "floor",
                    "SIGN": "sign"}[q.rounding]
        if q.fmt.kind == "bipolar":
            rounding = "sign"
        if rounding == "half_away" and q.fmt.kind == "unsigned":
            rounding = "half_up"      # the clamp leaves no negative values: ties away from 0 = up
        if q.op == "Trunc":
            raise node_error(n, "a Trunc as the input quantizer is not supported")
        shape = self.oshape(self.in_name)
        try:
            self.inp = GraphInput(name="input", shape=shape, fmt=q.fmt, scale=float(q.scale[0]), rounding=rounding,
                                  preprocess=v.pre)
        except ValueError as e:
            raise node_error(n, str(e)) from None
        self.shapes["input"], self.fmts["input"] = shape, q.fmt
        self.sums["input"] = (q.fmt.lo, q.fmt.hi)
        self.scales["input"] = np.array([float(q.scale[0])])
        self.sources["input"] = [node_name(n)]
        c = shape[0]
        return _Val("int", v.shape, "input", np.full(c, float(q.scale[0])), np.zeros(c))

    # ------------------------------------------------------------------------------ MACs
    def weights(self, n, i: int):
        """The integer weights of MAC ``n`` (input ``i``): a quantizer on a constant, maybe followed
        by Transposes. Returns ``(ints, QuantParams, scale)`` with ``scale`` broadcast to the ints'
        shape."""
        perms = []
        prod = self.w.find_producer(n.input[i])
        while prod is not None and prod.op_type == "Transpose":
            perms.append(_attr(prod, "perm"))
            prod = self.w.find_producer(prod.input[0])
        if prod is None or prod.op_type not in ("Quant", "BipolarQuant"):
            raise node_error(n, "the weights are not quantized (no Quant/BipolarQuant on a constant in front of them)")
        raw = self.const(prod.input[0])
        if raw is None:
            raise node_error(prod, "the weights must be a constant (an initializer)")
        q = quant_params(self.w, prod, "weight")
        if q.fmt.kind == "unsigned":
            raise node_error(prod, "weights must be signed")
        ints = quantized_ints(self.w, q, raw)
        scale = np.broadcast_to(q.scale.reshape(q.scale_shape), ints.shape)
        for perm in reversed(perms):
            perm = list(perm) if perm is not None else list(range(ints.ndim))[::-1]
            ints, scale = np.transpose(ints, perm), np.transpose(scale, perm)
        return ints, q, scale

    def out_channel_scale(self, q: QuantParams, scale: np.ndarray, axis: int) -> np.ndarray:
        """One weight scale per output channel (``axis`` of the weights), else an error."""
        moved = np.moveaxis(scale, axis, 0).reshape(scale.shape[axis], -1)
        if not np.all(moved == moved[:, :1]):
            raise node_error(q.node, "the weight scale varies along the reduction axis (only per-tensor or "
                                     "per-output-channel scales are supported)")
        return moved[:, 0].astype(np.float64)

    def mac_input(self, n, t: str) -> _Val:
        v = self.int_val(n, t, "input")
        if v.kind != "int":
            raise node_error(n, "the input must be quantized first")
        if not v.plain:
            raise node_error(n, "its input has an offset or a Relu not followed by a quantizer (the MAC needs "
                                "integers on one grid)")
        if not np.all(v.scale == v.scale[0]):
            raise node_error(n, "its input has per-channel scales; a MAC needs one input scale")
        return v

    def op_Conv(self, n):
        v = self.mac_input(n, n.input[0])
        wt, q, wsc = self.weights(n, 1)
        if _attr(n, "group", 1) != 1:
            raise node_error(n, f"group={_attr(n, 'group')} (grouped/depthwise) is not supported")
        if any(d != 1 for d in _attr(n, "dilations", [1, 1])):
            raise node_error(n, "dilated convolutions are not supported")
        if _attr(n, "auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise node_error(n, "auto_pad is not supported (write explicit pads)")
        st, pads = list(_attr(n, "strides", [1, 1])), list(_attr(n, "pads", [0, 0, 0, 0]))
        if len(set(st)) != 1 or len(set(pads)) != 1:
            raise node_error(n, f"strides {st} and pads {pads} must be equal in every direction")
        xs = self.shapes[v.tensor]
        if v.shape != xs or len(xs) != 3:
            raise node_error(n, f"a Conv on a {list(v.shape)} view of a {list(xs)} tensor is not supported")
        if wt.ndim != 4 or wt.shape[1] != xs[0]:
            raise node_error(n, f"weights of shape {list(wt.shape)} do not fit the input {list(xs)}")
        wscale = self.out_channel_scale(q, wsc, axis=0)
        return self.mac(n, v, wt, q, wscale, op="conv2d", stride=int(st[0]), padding=int(pads[0]),
                        bias_in=n.input[2] if len(n.input) > 2 else "")

    def op_Gemm(self, n):
        if _attr(n, "transA", 0) or _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0:
            raise node_error(n, "only Gemm with transA=0, alpha=1, beta=1 is supported")
        v = self.mac_input(n, n.input[0])
        wt, q, wsc = self.weights(n, 1)
        tb = bool(_attr(n, "transB", 0))
        wscale = self.out_channel_scale(q, wsc, axis=0 if tb else 1)
        return self.mac(n, v, wt if tb else wt.T, q, wscale, op="linear",
                        bias_in=n.input[2] if len(n.input) > 2 else "")

    def op_MatMul(self, n):
        v = self.mac_input(n, n.input[0])
        wt, q, wsc = self.weights(n, 1)
        if wt.ndim != 2:
            raise node_error(n, f"MatMul weights of shape {list(wt.shape)}; (K, O) expected")
        wscale = self.out_channel_scale(q, wsc, axis=1)
        return self.mac(n, v, wt.T, q, wscale, op="linear", bias_in="")

    def mac(self, n, v: _Val, wt: np.ndarray, q: QuantParams, wscale: np.ndarray, *, op: str, bias_in: str,
            stride: int = 1, padding: int = 0) -> _Val:
        xs = self.shapes[v.tensor]
        if op == "linear":
            if len(v.shape) != 1 or wt.shape[1] != int(np.prod(xs)):
                raise node_error(n, f"{n.op_type} on a {list(v.shape)} input with weights {list(wt.shape)}; "
                                    "flatten it to (N, K) first")
        o = wt.shape[0]
        acc_scale = float(v.scale[0]) * wscale
        offset = np.zeros(o)
        bias = None
        if bias_in:
            bprod = self.w.find_producer(bias_in)
            if bprod is not None and bprod.op_type == "Quant":
                bq = quant_params(self.w, bprod, "bias")
                raw = self.const(bprod.input[0])
                if raw is None:
                    raise node_error(bprod, "the bias must be a constant (an initializer)")
                breal = quantized_ints(self.w, bq, raw).astype(np.float64) * np.broadcast_to(bq.scale, (o,))
                ints = breal / acc_scale
                if np.allclose(ints, np.round(ints), rtol=0, atol=1e-3 * max(1.0, float(np.abs(ints).max()))):
                    bias = np.round(ints).astype(np.int64)   # Int32Bias: on the accumulator's grid
                else:
                    offset = offset + breal
            elif bprod is not None:
                raise node_error(n, f"a bias computed by {bprod.op_type} is not supported")
            else:
                b = self.const(bias_in)
                if b is None:
                    raise node_error(n, "the bias must be a constant")
                if b.size not in (1, o):
                    raise node_error(n, f"a bias of shape {list(b.shape)} is not per output channel")
                offset = offset + np.broadcast_to(b.ravel(), (o,))
        out_shape = self.oshape(n.output[0])
        if op == "conv2d" and out_shape[0] != o:
            raise node_error(n, f"output shape {list(out_shape)} does not fit {o} output channels")
        name = self.name("conv" if op == "conv2d" else "fc")
        node = Node(name=name, op=op, inputs=(v.tensor,), output=f"{name}.out", weight=wt, w_fmt=q.fmt,
                    w_scale=wscale, bias=bias, stride=stride, padding=padding)
        fmt = self.fmts[v.tensor]
        ext = [q.fmt.lo * fmt.lo, q.fmt.lo * fmt.hi, q.fmt.hi * fmt.lo, q.fmt.hi * fmt.hi]
        k = int(np.prod(wt.shape[1:]))
        lo, hi = k * min(ext), k * max(ext)
        if bias is not None:
            lo, hi = lo + min(int(bias.min()), 0), hi + max(int(bias.max()), 0)
        shape = out_shape if op == "conv2d" else (o,)
        if op == "conv2d" and len(shape) != 3:
            raise node_error(n, f"output shape {list(shape)} is not (C, H, W)")
        self.add_node(n, node, shape=shape, fmt=fmt, rng=(lo, hi), scale=acc_scale)
        return _Val("int", self.oshape(n.output[0]), node.output, acc_scale.copy(), offset)

    # ------------------------------------------------------------------------------ pooling
    def pool_geometry(self, n, xs: tuple):
        if _attr(n, "ceil_mode", 0):
            raise node_error(n, "ceil_mode=1 is not supported")
        if any(d != 1 for d in _attr(n, "dilations", [1, 1])):
            raise node_error(n, "dilated pooling is not supported")
        if _attr(n, "auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise node_error(n, "auto_pad is not supported (write explicit pads)")
        k = list(_attr(n, "kernel_shape"))
        st = list(_attr(n, "strides", [1, 1]))
        pads = list(_attr(n, "pads", [0, 0, 0, 0]))
        if len(set(st)) != 1 or len(set(pads)) != 1 or len(k) != 2:
            raise node_error(n, f"kernel {k}, strides {st} and pads {pads}: 2-D windows with one stride and one "
                                "padding in every direction are supported")
        return (int(k[0]), int(k[1])), int(st[0]), int(pads[0])

    def op_MaxPool(self, n):
        if len(n.output) > 1 and n.output[1]:
            raise node_error(n, "the Indices output is not supported")
        v = self.int_val(n, n.input[0], "input")
        xs = self.shapes[v.tensor]
        if v.shape != xs or len(xs) != 3:
            raise node_error(n, f"a MaxPool on a {list(v.shape)} view is not supported")
        if np.any(v.scale <= 0):
            raise node_error(n, "a MaxPool after a negative scale (max does not commute with it)")
        kernel, stride, pad = self.pool_geometry(n, xs)
        name = self.name("pool")
        node = Node(name=name, op="maxpool", inputs=(v.tensor,), output=f"{name}.out", kernel=kernel, stride=stride,
                    padding=pad)
        out_shape = self.oshape(n.output[0])
        self.add_node(n, node, shape=out_shape, fmt=self.fmts[v.tensor], rng=self.sums[v.tensor],
                      scale=self.scales.get(v.tensor))
        return replace(v, tensor=node.output, shape=out_shape)    # max commutes with the pending map

    def op_AveragePool(self, n):
        v = self.int_val(n, n.input[0], "input")
        xs = self.shapes[v.tensor]
        if v.shape != xs or len(xs) != 3:
            raise node_error(n, f"an average pool on a {list(v.shape)} view is not supported")
        if n.op_type == "GlobalAveragePool":
            kernel, stride, pad = (xs[1], xs[2]), 1, 0
        else:
            kernel, stride, pad = self.pool_geometry(n, xs)
            if pad and not _attr(n, "count_include_pad", 0):
                raise node_error(n, "padding with count_include_pad=0 (a divisor per position) is not supported")
        if v.relu or (pad and np.any(v.offset)):
            raise node_error(n, "an average pool after a Relu or an offset (with padding) is not supported")
        name = self.name("avgpool")
        node = Node(name=name, op="avgpool", inputs=(v.tensor,), output=f"{name}.out", kernel=kernel, stride=stride,
                    padding=pad)
        kk = kernel[0] * kernel[1]
        fmt = self.fmts[v.tensor]
        lo, hi = (kk * min(fmt.lo, 0), kk * max(fmt.hi, 0)) if pad else (kk * fmt.lo, kk * fmt.hi)
        out_shape = self.oshape(n.output[0])
        scale = v.scale / kk
        self.add_node(n, node, shape=out_shape, fmt=fmt, rng=(lo, hi), scale=scale if v.plain else None)
        return replace(v, tensor=node.output, shape=out_shape, scale=scale)   # the offset of a mean stays

    op_GlobalAveragePool = op_AveragePool

    # ------------------------------------------------------------------------------ residual add
    def residual(self, n, op: str) -> _Val:
        a = self.int_val(n, n.input[0], "input")
        b = self.int_val(n, n.input[1], "input")
        if a.kind != "int" or b.kind != "int":
            raise node_error(n, f"a residual {op} needs two quantized tensors")
        if a.relu or b.relu:
            raise node_error(n, f"a residual {op} of a Relu output with no quantizer in between is not supported")
        if self.shapes[a.tensor] != self.shapes[b.tensor] or a.shape != b.shape:
            raise node_error(n, f"inputs of shapes {list(a.shape)} and {list(b.shape)} (broadcasting is not supported)")
        if not (np.all(a.scale == a.scale[0]) and np.all(b.scale == b.scale[0])):
            raise node_error(n, f"a residual {op} of tensors with per-channel scales is not supported")
        sa, sb = float(a.scale[0]), float(b.scale[0])
        ka, kb, s = _align(sa, sb)
        if op == "Sub":
            kb = -kb
        name = self.name("add")
        node = Node(name=name, op="add", inputs=(a.tensor, b.tensor), output=f"{name}.out", in_mults=(ka, kb))
        fa, fb = self.fmts[a.tensor], self.fmts[b.tensor]
        ra = sorted((ka * fa.lo, ka * fa.hi))
        rb = sorted((kb * fb.lo, kb * fb.hi))
        c = self.shapes[a.tensor][0]
        self.add_node(n, node, shape=self.shapes[a.tensor], fmt=fa, rng=(ra[0] + rb[0], ra[1] + rb[1]),
                      scale=np.full(c, s))
        off = a.offset + (b.offset if op == "Add" else -b.offset)
        return _Val("int", a.shape, node.output, np.full(c, s), off)


def _align(sa: float, sb: float) -> tuple[int, int, float]:
    """Integer multipliers ``(ka, kb)`` and the sum's scale ``s`` with ``ka * s == sa`` and
    ``kb * s == sb``: (1, 1) for equal scales, a power of two for a power-of-two ratio, else a
    16-bit fixed-point ratio (``kb = 2**f``; then ``ka * s`` approximates ``sa``)."""
    if sa == sb:
        return 1, 1, sa
    r = sa / sb
    for big, swap in ((r, False), (1 / r, True)):
        m, e = math.frexp(big)
        if m == 0.5 and e - 1 >= 1 and e - 1 <= 30:
            k = 1 << (e - 1)
            return (1, k, sa) if swap else (k, 1, sb)
    f = max(0, 14 - max(0, math.frexp(r)[1]))
    ka, kb = round(r * 2 ** f), 1 << f
    return int(ka), int(kb), sb / kb


def _fuse(nodes, out_name: str, scales: dict, sources: dict) -> list:
    """Fuse each requant node into the MAC, pool or add whose sum it alone reads."""
    nodes = list(nodes)
    readers: dict[str, int] = {}
    for n in nodes:
        for t in n.inputs:
            readers[t] = readers.get(t, 0) + 1
    by_out = {n.output: i for i, n in enumerate(nodes)}
    drop, rename = set(), {}
    for i, r in enumerate(nodes):
        if r.op != "requant":
            continue
        t = r.inputs[0]
        j = by_out.get(t)
        if j is None or t == out_name or readers.get(t, 0) != 1:
            continue
        p = nodes[j]
        if p.op not in (*MAC_OPS, "avgpool", "add") or p.requant is not None or j in drop:
            continue
        nodes[j] = replace(p, requant=r.requant)
        rename[r.output] = t
        if r.output in scales:
            scales[t] = scales[r.output]
        sources[p.name] = sources.get(p.name, []) + sources.pop(r.name, [])
        drop.add(i)
    kept = [n for i, n in enumerate(nodes) if i not in drop]
    return [replace(n, inputs=tuple(rename.get(t, t) for t in n.inputs)) for n in kept]


def qonnx_to_graph(model, *, mult_bits: int = 16, input_type: str | None = None):
    """The :class:`IntGraph` a cleaned QONNX model (``load_qonnx``) computes, and ``info``:
    ``{"nodes": graph node -> ONNX node names}``. ``input_type``: the FINN DataType name of the
    images of a model with no input quantizer (``UINT8``, ...). Raises
    :class:`QONNXImportError` naming the first node outside the supported set."""
    from l1bn.spec.config import check_int

    check_int("mult_bits", mult_bits, 2, 32)
    if input_type is not None and input_type not in INPUT_TYPES:
        raise ValueError(f"input_type={input_type!r} is not one of {', '.join(INPUT_TYPES)}")
    b = _Builder(model, mult_bits=mult_bits, input_type=input_type)
    g = b.run()
    return g, {"nodes": {n.name: b.sources.get(n.name, []) for n in g.nodes}}
