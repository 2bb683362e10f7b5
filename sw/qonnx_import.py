"""Read a QONNX model (Brevitas, FINN, or ``l1bn export --format qonnx``) as an l1bn integer network.

The supported set (docs/interop.md), walked as a chain from the graph input to its output:

* the input: a ``Quant`` node (unsigned, power-of-two scale, zero point 0) on the float image;
* then per layer: an optional ``Flatten``/``Reshape`` (to ``(N, C*H*W)``, before a fully connected
  layer only), a MAC node ``Conv`` (group 1, dilation 1, equal strides and symmetric padding) or
  ``Gemm`` (``transB=1``, ``alpha=beta=1``) or ``MatMul``, whose weights are a ``Quant`` node
  (signed, power-of-two per-tensor scale) on an initializer; an optional bias (folded into the BN);
* for every layer but the last: any sequence of per-channel affine nodes (``BatchNormalization``,
  ``Mul``, ``Add``, ``Sub``, ``Div`` by constants; ``Cast`` to float types is ignored), an optional
  ``Relu``, then an activation ``Quant`` (unsigned, power-of-two scale): these fold into the integer
  multiplier, bias and shift of :mod:`l1bn.spec.reference.infer_bn`;
* the last layer's MAC output is the graph output (the logits are the accumulators).

Bit widths: weights, activations and the input 2..8. Rounding modes: ``HALF_UP`` (the
requantizer's own), ``FLOOR`` (folded as ``-1/2`` LSB into the bias) and ``ROUND``/``HALF_EVEN``
(ties to even; accepted only where a BN or a non-dyadic scale sits in front, so that an exact tie
does not occur in practice; a dyadic input to a ``ROUND`` quantizer is refused).

Anything else raises :class:`QONNXImportError` (a ``ValueError``) naming the node and the reason,
before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["QONNXImportError", "SUPPORTED_OPS", "BITS_RANGE", "load_qonnx", "qonnx_to_intnet",
           "execute_qonnx", "import_qonnx", "ImportResult"]

SUPPORTED_OPS = ("Quant", "Conv", "Gemm", "MatMul", "BatchNormalization", "Mul", "Add", "Sub", "Div",
                 "Relu", "Flatten", "Reshape", "Cast")
BITS_RANGE = (2, 8)
_ROUNDINGS = ("HALF_UP", "FLOOR", "ROUND", "HALF_EVEN")
_AFFINE = ("BatchNormalization", "Mul", "Add", "Sub", "Div", "Cast")


class QONNXImportError(ValueError):
    """A QONNX model outside the supported set (printed as one ``error:`` line)."""


_NAME_TAG = "l1bn-original-name:"


def _node_name(node) -> str:
    """The node's name in the user's file (qonnx's cleanup renames nodes; load_qonnx keeps the
    original in ``doc_string``)."""
    d = node.doc_string or ""
    if d.startswith(_NAME_TAG) and len(d) > len(_NAME_TAG):
        return d[len(_NAME_TAG):]
    return node.name or "?"


def _err(node, reason: str) -> QONNXImportError:
    return QONNXImportError(f"node {_node_name(node)} ({node.op_type}): {reason}")


# ------------------------------------------------------------------------------------ loading

def load_qonnx(path_or_model, *, batch: int | None = None):
    """A qonnx ``ModelWrapper`` after ``cleanup_model`` and shape inference (optionally rebatched)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    if isinstance(path_or_model, (str, Path)):
        p = Path(path_or_model)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such QONNX file")
        try:
            proto = onnx.load(str(p))
        except Exception as e:  # protobuf's own errors: a file that is not ONNX at all
            raise QONNXImportError(f"{p}: not an ONNX model ({type(e).__name__}: {e})") from None
    else:
        proto = path_or_model
    for n in proto.graph.node:  # error messages name nodes as the user's file does
        if n.name and not (n.doc_string or "").startswith(_NAME_TAG):
            n.doc_string = _NAME_TAG + n.name
    try:
        w = cleanup_model(ModelWrapper(proto), override_inpsize=batch)
        w = w.transform(InferShapes())
    except Exception as e:  # qonnx/onnx raise many types on malformed graphs
        msg = " ".join(str(e).split())  # one line, whatever the library printed
        raise QONNXImportError(f"qonnx cleanup/shape inference failed: {type(e).__name__}: {msg}") from None
    if len(w.graph.input) != 1 or len(w.graph.output) != 1:
        raise QONNXImportError(f"the graph has {len(w.graph.input)} inputs and {len(w.graph.output)} "
                               f"outputs; one image input and one logits output are supported")
    return w


def execute_qonnx(model, x, *, batch: int | None = None) -> np.ndarray:
    """``qonnx.core.onnx_exec.execute_onnx`` on float images ``x`` (N, ...): the output, float32.

    ``model`` is a path or a ``ModelWrapper``/``ModelProto``; it is rebatched to ``N`` (qonnx's
    ``ChangeBatchSize``) unless ``batch`` says otherwise, in which case ``x`` goes through in
    chunks of ``batch``.
    """
    from qonnx.core.onnx_exec import execute_onnx

    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    n = int(x.shape[0])
    b = n if batch is None else int(batch)
    proto = model.model if hasattr(model, "model") else model
    w = load_qonnx(proto, batch=b)
    iname, oname = w.graph.input[0].name, w.graph.output[0].name
    outs = []
    for s in range(0, n, b):
        chunk = x[s:s + b]
        if chunk.shape[0] < b:  # pad the last chunk to the fixed batch
            chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0],) + chunk.shape[1:], np.float32)])
        try:
            outs.append(execute_onnx(w, {iname: chunk})[oname])
        except Exception as e:  # onnxruntime's and qonnx's own errors: one line naming the library
            msg = " ".join(str(e).split())[:400]
            raise QONNXImportError(f"qonnx execute_onnx (onnxruntime) cannot run the model: "
                                   f"{type(e).__name__}: {msg}") from None
    return np.concatenate(outs)[:n]


# ----------------------------------------------------------------------------- graph walking

def _pow2_exp(node, scale: np.ndarray, what: str) -> int:
    """``e`` with ``scale == 2**-e`` (one value for the tensor), else an error naming the node."""
    s = np.unique(np.asarray(scale, dtype=np.float64).ravel())
    if s.size != 1:
        raise _err(node, f"{what} scale has {s.size} different values (per-channel); only one "
                         f"per-tensor power-of-two scale is supported")
    v = float(s[0])
    if not (v > 0 and math.isfinite(v)):
        raise _err(node, f"{what} scale {v!r} is not a positive power of two")
    m, e = math.frexp(v)
    if m != 0.5:
        raise _err(node, f"{what} scale {v:.6g} is not a power of two (only power-of-two scales map "
                         f"to shifts in the hardware)")
    return -(e - 1)


@dataclass
class _Quant:
    node: object
    exp: int
    bits: int
    signed: bool
    narrow: bool
    rounding: str


def _quant_params(w, node, what: str) -> _Quant:
    from qonnx.custom_op.registry import getCustomOp

    if node.op_type != "Quant":
        raise _err(node, f"expected a Quant node for the {what}")
    scale, zp, bw = (w.get_initializer(node.input[i]) for i in (1, 2, 3))
    if scale is None or zp is None or bw is None:
        raise _err(node, f"{what} scale, zero point and bit width must be constants")
    if np.any(np.asarray(zp) != 0):
        raise _err(node, f"{what} zero point {np.unique(zp).tolist()} is not 0 (only symmetric "
                         f"quantizers are supported)")
    exp = _pow2_exp(node, scale, what)
    b = float(np.asarray(bw).ravel()[0])
    if np.asarray(bw).size != 1 or b != int(b):
        raise _err(node, f"{what} bit width {np.asarray(bw).ravel().tolist()} is not one integer")
    bits = int(b)
    lo, hi = BITS_RANGE
    if not lo <= bits <= hi:
        raise _err(node, f"{what} bit width {bits} is out of range {lo}..{hi}")
    op = getCustomOp(node)
    rounding = str(op.get_nodeattr("rounding_mode")).upper()
    if rounding not in _ROUNDINGS:
        raise _err(node, f"{what} rounding_mode {rounding} is not supported ({', '.join(_ROUNDINGS)})")
    return _Quant(node, exp, bits, bool(op.get_nodeattr("signed")), bool(op.get_nodeattr("narrow")), rounding)


def _int_weights(w, qnode, q: _Quant) -> np.ndarray:
    """The integer weights a weight ``Quant`` node produces (qonnx's own quantizer, so bit-equal)."""
    from qonnx.custom_op.general.intquant import int_quant as quant

    raw = w.get_initializer(qnode.input[0])
    if raw is None:
        raise _err(qnode, "the weights must be a constant (an initializer)")
    scale = float(2.0 ** -q.exp)
    fq = quant(raw.astype(np.float32), np.float32(scale), np.float32(0.0), np.float32(q.bits), int(q.signed),
               int(q.narrow), q.rounding)
    ints = np.asarray(fq, dtype=np.float64) / scale
    if not np.array_equal(ints, np.round(ints)):
        raise _err(qnode, "quantized weights are not integers times the scale")
    return ints.astype(np.int64)


@dataclass
class _Layer:
    name: str
    type: str
    mac: object
    weight: np.ndarray
    wq: _Quant
    stride: int = 1
    padding: int = 0
    in_shape: tuple = ()
    out_shape: tuple = ()
    scale: np.ndarray | None = None  # per-channel affine on the real accumulator
    offset: np.ndarray | None = None
    dyadic: bool = True  # the affine map is exact in powers of two (rounding ties can occur)
    relu: bool = False
    aq: _Quant | None = None
    onnx_nodes: list = field(default_factory=list)


class _Walker:
    def __init__(self, w):
        self.w = w
        self.consumers: dict[str, list] = {}
        for n in w.graph.node:
            for t in n.input:
                self.consumers.setdefault(t, []).append(n)
        self.out_name = w.graph.output[0].name

    def next(self, tensor: str):
        """The one node consuming ``tensor`` (None at the graph output)."""
        cs = self.consumers.get(tensor, [])
        if tensor == self.out_name and not cs:
            return None
        if len(cs) != 1:
            if not cs:
                raise QONNXImportError(f"tensor {tensor} is used by no node and is not the graph output")
            raise QONNXImportError(f"tensor {tensor} feeds {len(cs)} nodes ({', '.join(_node_name(c) for c in cs)}); "
                                   f"only a chain of layers is supported (no branches or skip connections)")
        return cs[0]

    def const(self, node, i: int, what: str) -> np.ndarray:
        v = self.w.get_initializer(node.input[i]) if i < len(node.input) and node.input[i] else None
        if v is None:
            raise _err(node, f"{what} must be a constant (an initializer)")
        return np.asarray(v, dtype=np.float64)

    def weight_quant(self, node, i: int):
        prod = self.w.find_producer(node.input[i])
        if prod is None:
            raise _err(node, "the weights are not quantized (no Quant node in front of them)")
        q = _quant_params(self.w, prod, "weight")
        if not q.signed:
            raise _err(prod, "weights must be signed")
        return prod, q

    def attr(self, node, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                from onnx import helper

                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default


def _channel_vec(node, v: np.ndarray, c: int, conv: bool, what: str) -> np.ndarray:
    """A constant as a per-channel vector: a scalar, or ``c`` values along the channel axis
    (axis -3 of ``(..., C, 1, 1)`` after a Conv, the last axis after a Gemm/MatMul or for BN)."""
    v = np.asarray(v, dtype=np.float64)
    if v.size == 1:
        return np.full(c, float(v.ravel()[0]))
    if conv:
        ok = v.ndim >= 3 and v.shape[-3] == c and v.shape[-2:] == (1, 1) and all(d == 1 for d in v.shape[:-3])
    else:
        ok = v.ndim >= 1 and v.shape[-1] == c and all(d == 1 for d in v.shape[:-1])
    if not ok:
        raise _err(node, f"{what} constant of shape {list(v.shape)} is not per channel ({c} channels)")
    return v.reshape(c)


def _is_dyadic(v: np.ndarray) -> bool:
    """Every value has at most 8 significant bits (an integer times a power of two, like a
    power-of-two rescale), so a quantizer after it can land exactly on a rounding tie."""
    return bool(_dyadic_each(v).all())


def _dyadic_each(v: np.ndarray) -> np.ndarray:
    """:func:`_is_dyadic` of each value (a bool array of ``v``'s size; ROUND is checked per channel)."""
    return np.array([(math.frexp(float(x))[0] * 256) % 1 == 0 for x in np.ravel(v)], dtype=bool)


def qonnx_to_intnet(model, *, mult_bits: int = 16):
    """Walk a cleaned QONNX model and build the :class:`~l1bn.spec.reference.network.IntNet` it computes.

    Returns ``(net, info)``: ``info`` has ``"input_quant"`` (the input ``_Quant``), ``"nodes"``
    (layer name -> ONNX node names) and ``"input_name"``.
    """
    from l1bn.spec.config import check_int
    from l1bn.spec.reference.infer_bn import fold_affine
    from l1bn.spec.reference.network import IntLayer, IntNet

    check_int("mult_bits", mult_bits, 2, 32)
    w = model if hasattr(model, "graph") and hasattr(model, "get_initializer") else load_qonnx(model)
    walk = _Walker(w)
    for n in w.graph.node:
        if n.op_type not in SUPPORTED_OPS:
            raise _err(n, f"operator {n.op_type} is not supported; supported: {', '.join(SUPPORTED_OPS)}")
    iname = w.graph.input[0].name
    ishape = tuple(int(d) for d in w.get_tensor_shape(iname))
    node = walk.next(iname)
    if node is None or node.op_type != "Quant":
        raise QONNXImportError(f"the input {iname} must go through a Quant node first (the input quantizer); "
                               f"found {node.op_type if node is not None else 'the graph output'}")
    inq = _quant_params(w, node, "input")
    if inq.signed:
        raise _err(node, "signed input images are not supported (unsigned pixels only)")
    shape = ishape[1:]
    t = node.output[0]
    layers: list[_Layer] = []
    node = walk.next(t)
    while node is not None:
        names = []
        flat = False
        in_shape = shape  # a linear layer flattens its (C, H, W) input itself
        while node is not None and node.op_type in ("Flatten", "Reshape"):
            oshape = tuple(int(d) for d in w.get_tensor_shape(node.output[0]))
            if len(oshape) != 2 or oshape[1] != int(np.prod(shape)) or (node.op_type == "Flatten"
                                                                       and walk.attr(node, "axis", 1) != 1):
                raise _err(node, f"reshapes {list(shape)} to {list(oshape[1:])}; only flattening to (N, C*H*W) "
                                 f"in front of Gemm/MatMul is supported")
            names.append(_node_name(node))
            flat = True
            shape = (int(oshape[1]),)
            t = node.output[0]
            node = walk.next(t)
        if node is None:
            raise QONNXImportError(f"the graph ends after {names[-1]} without a MAC layer")
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            raise _err(node, f"expected a MAC node (Conv, Gemm, MatMul) after {t}")
        mac = node
        names.append(_node_name(mac))
        idx = len(layers) + 1
        if mac.op_type == "Conv":
            if flat or len(shape) != 3:
                raise _err(mac, f"Conv on an input of shape {list(shape)}; (C, H, W) expected")
            if mac.input[0] != t:
                raise _err(mac, "the activations must be the first input")
            qn, wq = walk.weight_quant(mac, 1)
            wt = _int_weights(w, qn, wq)
            if walk.attr(mac, "group", 1) != 1:
                raise _err(mac, f"group={walk.attr(mac, 'group')} (grouped/depthwise) is not supported")
            if any(d != 1 for d in walk.attr(mac, "dilations", [1, 1])):
                raise _err(mac, "dilated convolutions are not supported")
            if walk.attr(mac, "auto_pad", "NOTSET") not in ("NOTSET", ""):
                raise _err(mac, "auto_pad is not supported (write explicit pads)")
            st = list(walk.attr(mac, "strides", [1, 1]))
            pads = list(walk.attr(mac, "pads", [0, 0, 0, 0]))
            if len(set(st)) != 1 or len(set(pads)) != 1:
                raise _err(mac, f"strides {st} and pads {pads} must be equal in every direction")
            if wt.ndim != 4 or wt.shape[1] != shape[0]:
                raise _err(mac, f"weights of shape {list(wt.shape)} do not fit the input {list(shape)}")
            lay = _Layer(name=f"conv{idx}", type="conv2d", mac=mac, weight=wt, wq=wq, stride=int(st[0]),
                         padding=int(pads[0]))
            out = tuple(int(d) for d in w.get_tensor_shape(mac.output[0]))[1:]
        else:
            if len(shape) != 1:
                raise _err(mac, f"{mac.op_type} on an input of shape {list(shape)}; flatten it first")
            if mac.op_type == "Gemm":
                if walk.attr(mac, "transA", 0) or walk.attr(mac, "alpha", 1.0) != 1.0 \
                        or walk.attr(mac, "beta", 1.0) != 1.0:
                    raise _err(mac, "only Gemm with transA=0, alpha=1, beta=1 is supported")
                qn, wq = walk.weight_quant(mac, 1)
                wt = _int_weights(w, qn, wq)
                if not walk.attr(mac, "transB", 0):
                    wt = wt.T
            else:
                qn, wq = walk.weight_quant(mac, 1)
                wt = _int_weights(w, qn, wq).T
            if mac.input[0] != t:
                raise _err(mac, "the activations must be the first input")
            if wt.ndim != 2 or wt.shape[1] != shape[0]:
                raise _err(mac, f"weights of shape {list(wt.shape)} do not fit {shape[0]} inputs")
            lay = _Layer(name=f"fc{idx}", type="linear", mac=mac, weight=wt, wq=wq)
            out = (int(wt.shape[0]),)
        c = out[0]
        conv = lay.type == "conv2d"
        scale, offset = np.ones(c), np.zeros(c)
        dyadic = np.ones(c, dtype=bool)   # per channel: its values can land on a rounding tie
        bias_in = 2 if mac.op_type in ("Conv", "Gemm") else None
        has_bias = bias_in is not None and len(mac.input) > bias_in and bool(mac.input[bias_in])
        if has_bias:
            bprod = w.find_producer(mac.input[bias_in])
            if bprod is not None:
                raise _err(mac, "a computed (quantized) bias is not supported; export the bias as a float "
                                "constant or fold it into the BN")
            offset = offset + _channel_vec(mac, walk.const(mac, bias_in, "bias"), c, False, "bias")
            dyadic &= _dyadic_each(offset)
        lay.in_shape, lay.out_shape = tuple(in_shape), out
        t = mac.output[0]
        node = walk.next(t)
        # per-channel affine (BN / Mul / Add ...), optional Relu, activation Quant
        while node is not None and node.op_type in _AFFINE:
            names.append(_node_name(node))
            if node.op_type == "Cast":
                from onnx import TensorProto

                if walk.attr(node, "to") not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
                    raise _err(node, "Cast to a non-float type is not supported")
            elif node.op_type == "BatchNormalization":
                gamma, beta, mean, var = (_channel_vec(node, walk.const(node, i, n), c, False, n)
                                          for i, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
                eps = float(walk.attr(node, "epsilon", 1e-5))
                k = gamma / np.sqrt(var + eps)
                scale, offset = scale * k, offset * k + beta - mean * k
                dyadic[:] = False
            else:
                other = 1 if node.input[0] == t else 0
                if node.input[1 - other] != t:
                    raise _err(node, "malformed chain")
                v = _channel_vec(node, walk.const(node, other, node.op_type + " operand"), c, conv, node.op_type)
                dyadic &= _dyadic_each(v) if v.size == c else bool(_is_dyadic(v))
                if node.op_type == "Mul":
                    scale, offset = scale * v, offset * v
                elif node.op_type == "Div":
                    if other == 0 or np.any(v == 0):
                        raise _err(node, "only division of the activations by a nonzero constant is supported")
                    scale, offset = scale / v, offset / v
                    dyadic &= _dyadic_each(1.0 / v) if v.size == c else bool(_is_dyadic(1.0 / v))
                elif node.op_type == "Add":
                    offset = offset + v
                else:  # Sub
                    scale, offset = (scale, offset - v) if other == 1 else (-scale, v - offset)
            t = node.output[0]
            node = walk.next(t)
        if node is not None and node.op_type == "Relu":
            names.append(_node_name(node))
            lay.relu = True
            t = node.output[0]
            node = walk.next(t)
        if node is None:  # the last layer: its accumulators are the output
            if has_bias and len(names) == names.index(_node_name(mac)) + 1:
                raise _err(mac, "a bias on the last layer is not supported (the logits are the integer "
                                "accumulators); train it with bias=False")
            if lay.relu or not (np.all(scale == 1) and np.all(offset == 0)):
                raise QONNXImportError(f"node {names[-1]}: the last layer must end at its MAC "
                                       f"({_node_name(mac)}); a Relu, BN or scale after it is not supported "
                                       f"(the logits are the integer accumulators)")
            lay.onnx_nodes = names
            layers.append(lay)
            break
        if node.op_type != "Quant":
            raise _err(node, f"expected the activation Quant after {names[-1]}")
        aq = _quant_params(w, node, "activation")
        if aq.signed:
            raise _err(node, "signed activations are not supported (unsigned activations after ReLU only)")
        if aq.narrow:  # the requantizer saturates at 2**bits - 1, a narrow quantizer at 2**bits - 2
            raise _err(node, f"narrow-range activations (0..{2 ** aq.bits - 2}) are not supported; "
                             f"the requantizer's range is 0..{2 ** aq.bits - 1}")
        if aq.rounding in ("ROUND", "HALF_EVEN") and dyadic.any():
            # per channel: one channel whose bias is exactly 0 (or a power of two) lands on ties
            # although its neighbours do not
            where = ", ".join(str(int(i)) for i in np.flatnonzero(dyadic)[:8]) + (" ..." if dyadic.sum() > 8 else "")
            raise _err(node, f"rounding_mode ROUND rounds ties to even, l1bn's requantizer rounds half up, "
                             f"and on channel(s) {where} ({int(dyadic.sum())} of {c}) no BatchNormalization "
                             f"or non-power-of-two scale or bias sits in front, so values land on ties; use "
                             f"rounding_mode HALF_UP")
        names.append(_node_name(node))
        lay.aq, lay.scale, lay.offset, lay.dyadic = aq, scale, offset, bool(dyadic.any())
        lay.onnx_nodes = names
        layers.append(lay)
        shape = out
        t = node.output[0]
        # a Relu after an unsigned Quant changes nothing
        node = walk.next(t)
        while node is not None and node.op_type == "Relu":
            t = node.output[0]
            node = walk.next(t)
        if node is None:
            raise QONNXImportError(f"node {names[-1]}: the graph ends with an activation quantizer; the "
                                   f"last layer must output its accumulators (the logits)")

    # integer layers
    int_layers = []
    a_bits, a_exp = inq.bits, inq.exp
    for lay in layers:
        w_exp = lay.wq.exp
        base = IntLayer(name=lay.name, type=lay.type, in_shape=tuple(lay.in_shape), out_shape=tuple(lay.out_shape),
                        weight=np.asarray(lay.weight, dtype=np.int64), w_bits=lay.wq.bits, w_exp=w_exp,
                        a_bits=a_bits, a_exp=a_exp, a_signed=False, stride=lay.stride, padding=lay.padding,
                        bn=None, out_exp=w_exp + a_exp)
        try:
            base.mac_config()
        except ValueError as e:
            raise _err(lay.mac, str(e)) from None
        if lay.aq is not None:
            off = lay.offset.copy()
            if lay.aq.rounding == "FLOOR":  # floor(v) = floor((v - 1/2) + 1/2): half up with -1/2 LSB
                off = off - 0.5 * 2.0 ** -lay.aq.exp
            try:
                bn = fold_affine(lay.scale, off, acc_exp=w_exp + a_exp,
                                 out_exp=lay.aq.exp, acc_bits=base.acc_bits, out_bits=lay.aq.bits, relu=True,
                                 mult_bits=mult_bits)
            except ValueError as e:
                raise _err(lay.aq.node, f"the folded BN does not fit: {e}") from None
            base = IntLayer(**{**base.__dict__, "bn": bn, "out_exp": lay.aq.exp})
            a_bits, a_exp = lay.aq.bits, lay.aq.exp
        int_layers.append(base)
    if not int_layers:
        raise QONNXImportError("the graph has no MAC layer")
    net = IntNet(in_shape=tuple(ishape[1:]), in_bits=inq.bits, in_exp=inq.exp, in_signed=False,
                 layers=tuple(int_layers))
    info = {"input_quant": inq, "input_name": iname,
            "nodes": {lay.name: lay.onnx_nodes for lay in layers}}
    return net, info


# ------------------------------------------------------------------------------------ import

@dataclass(frozen=True)
class ImportResult:
    path: Path
    net: object
    images: int
    agreement: float | None  # qonnx execute_onnx vs the integer reference, predictions
    disagreements: int | None
    max_logit_diff: float | None  # |qonnx logits - integer logits * 2**-exp|
    accuracy: float | None
    qonnx_accuracy: float | None


def _input_ints(x: np.ndarray, q: _Quant) -> np.ndarray:
    """The test images through the model's own input quantizer (qonnx's function: bit-equal)."""
    from qonnx.custom_op.general.intquant import int_quant as quant

    s = np.float32(2.0 ** -q.exp)
    fq = quant(x.astype(np.float32), s, np.float32(0.0), np.float32(q.bits), int(q.signed), int(q.narrow),
               q.rounding)
    return np.round(np.asarray(fq, dtype=np.float64) / float(s)).astype(np.int64)


def import_qonnx(model_path, out_dir, *, mult_bits: int = 16, rows: int = 4, force: bool = False,
                 check: bool = True) -> ImportResult:
    """``l1bn import``: a QONNX model -> an l1bn export folder (manifest + npy + hex).

    The model must be in the supported set (module docstring); otherwise
    :class:`QONNXImportError` names the node and nothing is written. When the model takes
    ``(N, 1, 8, 8)`` (or ``(N, 64)``) images, the digits test split goes into the export
    (``test.inputs`` through the model's own input quantizer, ``test.labels``) and, with ``check``,
    ``test.qat_logits`` holds qonnx ``execute_onnx``'s logits on it, so ``l1bn infer`` reports the
    agreement of the integer reference with qonnx.
    """
    from l1bn.spec.config import check_int
    from l1bn.spec.export import load_export, write_export
    from l1bn.spec.reference.network import run_net

    check_int("rows", rows, 1, 64)
    out = Path(out_dir)
    src = Path(model_path).resolve()
    if out.resolve() == src or out.resolve() in src.parents:  # --force would delete the model itself
        raise ValueError(f"--out {out} holds the model {model_path}; choose a folder outside it")
    from l1bn.spec.outdir import check_output_dir

    check_output_dir(out, command="import", force=force)   # the one output rule, before any work
    w = load_qonnx(model_path)
    net, info = qonnx_to_intnet(w, mult_bits=mult_bits)
    extra = {}
    images = 0
    res = dict(agreement=None, disagreements=None, max_logit_diff=None, accuracy=None, qonnx_accuracy=None)
    if tuple(net.in_shape) in ((1, 8, 8), (64,)):
        from .data import test_split

        x, y = test_split()
        xf = x.numpy().reshape((x.shape[0], *net.in_shape))
        xi = np.asarray(_input_ints(xf, info["input_quant"]), dtype=np.int64)
        images = int(xi.shape[0])
        extra["test.inputs"] = (xi, net.in_bits, False, "test_input")
        extra["test.labels"] = (y.numpy().astype(np.int64), 8, False, "test_label")
        if check:
            ql = execute_qonnx(w, xf)
            il = np.asarray(run_net(net, xi), dtype=np.float64) * 2.0 ** -net.layers[-1].out_exp
            qp, ip, lab = ql.argmax(1), il.argmax(1), y.numpy()
            res = dict(agreement=float((qp == ip).mean()), disagreements=int((qp != ip).sum()),
                       max_logit_diff=float(np.abs(ql.astype(np.float64) - il).max()),
                       accuracy=float((ip == lab).mean()), qonnx_accuracy=float((qp == lab).mean()))
            extra["test.qat_logits"] = (np.asarray(ql), None, None, "qat_logits")
    source = {"qonnx": str(Path(model_path).resolve()), "producer": w.model.producer_name,
              "mult_bits": mult_bits, "layers": info["nodes"],
              "input_rounding": info["input_quant"].rounding,
              "note": "imported by l1bn import; test.qat_logits are qonnx execute_onnx's logits"}
    path = write_export(net, out, source=source, extra=extra, rows=rows, force=force, command="import")
    e = load_export(path)  # what we wrote must load
    return ImportResult(path=path, net=e.net, images=images, **res)
