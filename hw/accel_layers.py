"""The layers of an exported network as the accelerator runs them (no torch).

:func:`layers_from_export` turns a loaded export (:func:`l1bn.spec.export.load_export`, which
reads and validates ``manifest.json``, the ``.npy`` tensors and their ``.hex`` images) into
:class:`AccelLayer` s: integer weights, folded-BN multipliers, biases and shifts, and the im2col
geometry, all taken from the loaded integer network. Every refusal is a ``ValueError`` that names
the layer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from amaranth import signed, unsigned
from amaranth.lib import data
from l1bn.spec.config import MACConfig
from l1bn.spec.reference.network import IntNet

__all__ = ["AccelLayer", "layers_from_export", "accelerator_interface", "output_layout", "pool_weights",
           "bits_for", "cdiv", "chw"]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def bits_for(n: int) -> int:
    """Unsigned bits that count 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class AccelLayer:
    """One layer as the accelerator runs it (all integers, no tensors).

    ``in_chw`` / ``out_chw`` are (C, H, W) (a linear layer's output is (O, 1, 1)); ``kernel``,
    ``stride``, ``padding`` describe the im2col; ``weights`` is the signed weight matrix
    ``W[o][k]`` (``O`` rows of ``K`` ints, ``k`` in (c, ky, kx) order); ``mult`` / ``bias`` /
    ``shift`` / ``out_bits`` the folded BN (None for the last layer, whose accumulators are the
    logits).
    """

    name: str
    type: str
    in_chw: tuple
    out_chw: tuple
    kernel: tuple
    stride: int
    padding: int
    w_bits: int
    a_bits: int
    acc_bits: int
    weights: tuple
    mult: tuple | None
    bias: tuple | None
    shift: int | None
    out_bits: int | None
    mult_bits: int | None
    bias_bits: int | None
    #: issue 27 (graph exports): the input activations are two's complement values (signed or
    #: bipolar -1/+1; ``a_bits`` is then their signed width, 2 for bipolar)
    a_signed: bool = False
    #: the input activations are bipolar (-1/+1)
    a_bipolar: bool = False
    #: the requantizer's output range (ReLU included) and rounding; None: the chain rule
    #: (half up, ReLU, ``0 .. 2**out_bits - 1``)
    out_lo: int | None = None
    out_hi: int | None = None
    rounding: str = "half_up"
    #: bipolar output: ``+1 if acc * mult + bias >= 0 else -1`` (a per-channel threshold)
    bipolar_out: bool = False
    #: the last layer: a bias added to the accumulators (a classifier bias), and the logits' width
    logit_bias: tuple | None = None
    logit_bits: int | None = None
    #: a max pool after the requantizer (kh, kw, stride): ``out_chw`` is the pooled shape,
    #: ``conv_chw`` the convolution's. Each output group computes the ``kh*kw`` positions of one
    #: pooling window in its first columns; the writeback keeps their maximum. ``pool_pad``: the
    #: pool's padding (a window position outside the map computes a position inside the window
    #: instead: a repeated value never changes a maximum, and padding never wins)
    pool: tuple | None = None
    conv_chw: tuple | None = None
    pool_pad: int = 0
    #: the tensors it reads, stored one after the other in the activation memory (their channels
    #: concatenated: an add reads two), and the tensor it writes; empty: a chain (the previous
    #: layer's output; hand-built layer lists)
    inputs: tuple = ()
    output: str = ""

    @property
    def out_range(self) -> tuple[int, int] | None:
        """(lo, hi) of the requantized output (None for the last layer)."""
        if self.mult is None:
            return None
        if self.out_lo is None:
            return 0, (1 << self.out_bits) - 1
        return self.out_lo, self.out_hi

    @property
    def k(self) -> int:
        return self.in_chw[0] * self.kernel[0] * self.kernel[1]

    @property
    def positions(self) -> int:
        return self.out_chw[1] * self.out_chw[2]

    @property
    def channels(self) -> int:
        return self.out_chw[0]


def output_layout(classes: int, logit_bits: int) -> data.StructLayout:
    """Output beat: ``logits`` (``classes`` signed accumulators) and ``argmax`` (first maximum)."""
    return data.StructLayout({
        "logits": data.ArrayLayout(signed(logit_bits), classes),
        "argmax": unsigned(bits_for(classes)),
    })


def chw(shape) -> tuple:
    """An activation shape as (C, H, W); a flat (K,) vector is (K, 1, 1)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise ValueError(f"activation shape {list(shape)} is neither (C, H, W) nor (K,)")


def _graph(exported_net):
    """The integer graph of a loaded export (or of an ``IntNet`` / ``IntGraph`` itself)."""
    from l1bn.spec.reference.graph import IntGraph, graph_from_chain

    g = getattr(exported_net, "graph", exported_net)
    if isinstance(g, IntNet):
        g = graph_from_chain(g)
    if not isinstance(g, IntGraph):
        raise ValueError(f"exported_net={exported_net!r} must be an ExportedNet (the result of load_export), "
                         "an IntGraph or an IntNet")
    return g


def _ints(a) -> tuple:
    """A numpy integer array as nested tuples of Python ints."""
    return tuple(np.asarray(a, dtype=np.int64).tolist())


def _stored(fmt) -> tuple[int, bool]:
    """(bits, two's complement) of a tensor format as the accelerator stores it: unsigned values
    as they are, signed ones in their width, bipolar ones as the values -1/+1 in 2 bits."""
    if fmt.kind == "unsigned":
        return fmt.bits, False
    return (2 if fmt.kind == "bipolar" else fmt.bits), True


def _todo(what: str, feature: str) -> ValueError:
    return ValueError(f"{what}: {feature} is not supported by the accelerator yet")


def layers_from_export(exported_net) -> tuple[list[AccelLayer], dict]:
    """The layers of a loaded export (or of an ``IntGraph`` / ``IntNet``) as :class:`AccelLayer` s,
    and the input description ``{"shape": (C, H, W), "bits": port bits, "signed": two's complement}``.

    Every layer is a convolution on the one MAC array (a ``linear`` node is one whose kernel covers
    its input), run in the graph's node order, reading stored tensors (:attr:`AccelLayer.inputs`;
    :class:`~l1bn.hw.accel_plan.Plan` places them in the activation memory):

    - ``conv2d`` / ``linear``: unsigned, signed (narrow too) or bipolar inputs and activations,
      signed / narrow / binary weights, per-channel requantizers of any kind
      (:mod:`l1bn.spec.reference.requant`; float scales and TensorNorm are already folded into them
      or into the output's float scale), a MAC bias (folded into the requantizer's bias; on the last
      node added to the logits);
    - ``add`` with a requantizer: a 1x1 convolution over the two inputs stored one after the other
      (``2C`` channels; weights ``in_mults[0]`` on channel ``c`` and ``in_mults[1]`` on ``C + c``
      of output ``c``, 0 elsewhere): ``a * ka + b * kb`` exactly, then its requantizer;
    - ``avgpool`` with a requantizer: a ``kh x kw`` convolution (stride, zero padding) whose weight
      is 1 on its own channel: the window sum, then the requantizer (global average pooling: the
      window is the map). Without one, its sum must feed one ``linear`` node, which then reads the
      pool's input with the pooled weights spread over each window (the same exact sum);
    - ``add`` without a requantizer, read by one ``conv2d`` / ``linear`` node: fused into it (it
      reads the add's two inputs with weights ``[W * ka, W * kb]``, the same exact sum);
    - ``requant``: a 1x1 identity convolution and the requantizer;
    - ``maxpool`` (padding too): merged into the requantized layer that writes its input when that
      tensor has no other reader (max pooling on the fly, :attr:`AccelLayer.pool`), otherwise into
      an identity layer (a requantizer that changes no value) reading it.

    Refused (``ValueError`` naming the node, "not supported by the accelerator yet"): an add or
    average pool without a requantizer (but the fusions above), unsigned weights, a node other than
    the first reading the image, a tensor that is an input of two adds, weights, in_mults or fused
    weights wider than 8 bits, a last node with a requantizer, a hidden node without one.
    """
    from l1bn.spec.reference.graph import MAC_OPS

    g = _graph(exported_net)
    info = g.tensors()
    inp = g.input
    if len(chw(inp.shape)) != 3:
        raise ValueError(f"input: shape {list(inp.shape)}")
    layers: list[AccelLayer] = []
    #: tensor -> the average pool (no requantizer) whose sum it is, fused into the linear node
    #: that reads it, or the add (no requantizer), fused into the conv2d / linear node that reads it
    pending: dict = {}
    nodes = g.nodes
    for i, node in enumerate(nodes):
        name, typ = node.name, node.op
        what = f"node {name} ({typ})"
        last = i == len(nodes) - 1
        for t in node.inputs:
            if t in pending and not (node.inputs == (t,) and (typ == "linear" or typ == "conv2d"
                                                               and pending[t].op == "add")):
                raise _todo(what, f"reading the {pending[t].op} sum {t} (no requantizer; only "
                                  f"{'a linear' if pending[t].op == 'avgpool' else 'a conv2d or linear'} node may read it)")
        if typ == "maxpool":
            lay = _maxpool(node, what, info, layers, last)
            if lay is not None:
                layers.append(lay)
        elif typ == "avgpool" and node.requant is None:
            if last or len(info[node.output].consumers) != 1:
                raise _todo(what, "an average pool without a requantizer that does not feed one linear node")
            pending[node.output] = node
        elif typ == "add" and node.requant is None and node.bias is None and not last \
                and len(info[node.output].consumers) == 1 and nodes[info[node.output].consumers[0]].op in MAC_OPS:
            pending[node.output] = node
        elif typ in ("add", "avgpool", "requant"):
            if node.requant is None:
                raise _todo(what, f"{'an' if typ[0] in 'aeiou' else 'a'} {typ} node without a requantizer")
            if last:
                raise _todo(what, "a requantizer on the last node (the logits are its accumulators)")
            layers.append(_elementwise(node, what, info))
        elif typ in ("conv2d", "linear"):
            layers.append(_mac_layer(node, what, info, last, pending.pop(node.inputs[0], None)))
        else:
            raise _todo(what, f"{'an' if typ[0] in 'aeiou' else 'a'} {typ} node")
    if not layers or layers[-1].mult is not None:
        raise ValueError(f"output: tensor {g.output.name} is not the accumulators of a conv2d/linear node")
    if g.output.name != layers[-1].output:
        raise ValueError(f"output: tensor {g.output.name} is not the last node's output")
    for lay in layers[1:]:
        if inp.name in lay.inputs:
            raise _todo(f"node {lay.name} ({lay.type})", "reading the input image (only the first layer reads it)")
    if layers[0].inputs != (inp.name,):
        raise _todo(f"node {layers[0].name} ({layers[0].type})", "a first layer that does not read the input image")
    pairs: dict = {}
    for lay in layers:
        if len(lay.inputs) == 2:
            for t in lay.inputs:
                if t in pairs:
                    raise _todo(f"node {lay.name} ({lay.type})",
                                f"tensor {t} read by two adds ({pairs[t]} and {lay.name})")
                pairs[t] = lay.name
    bits, signed = _stored(inp.fmt)
    return layers, {"shape": chw(inp.shape), "bits": bits, "signed": signed}


def _in_fmt(fmts) -> tuple[int, bool]:
    """(bits, two's complement) the array reads for the concatenated tensors of ``fmts``: two's
    complement when any is, then wide enough for each (an unsigned value gains a sign bit)."""
    st = [_stored(f) for f in fmts]
    if any(s for _, s in st):
        return max(b + (not s) for b, s in st), True
    return max(b for b, _ in st), False


def _requant_fields(rq, mac_bias=None) -> dict:
    """The :class:`AccelLayer` fields of a requantizer (a MAC bias folded into its bias)."""
    from l1bn.spec.config import signed_bits

    m64, b64 = np.asarray(rq.mult, dtype=np.int64), np.asarray(rq.bias, dtype=np.int64)
    if mac_bias is not None:        # (acc + b) * m + c = acc * m + (b * m + c), exactly
        b64 = b64 + mac_bias * m64
    out = rq.out
    f = {"mult": _ints(m64), "bias": _ints(b64), "shift": int(rq.shift),
         "out_bits": 2 if out.kind == "bipolar" else out.bits, "mult_bits": int(rq.mult_bits),
         "bias_bits": max(int(rq.bias_bits), signed_bits(min(int(b64.min()), 0), max(int(b64.max()), 0))),
         "out_lo": rq.lo, "out_hi": out.hi, "rounding": rq.rounding, "bipolar_out": out.kind == "bipolar"}
    if out.kind == "unsigned" and not out.narrow and rq.rounding == "half_up":
        f |= {"out_lo": None, "out_hi": None}        # the chain rule
    return f


def _identity_requant(fmt, channels: int) -> dict:
    """Requantizer fields that leave every value of ``fmt`` as it is (mult 1, bias 0, shift 0,
    clamp to the format's own range; a bipolar value keeps its sign)."""
    f = {"mult": (1,) * channels, "bias": (0,) * channels, "shift": 0, "mult_bits": 2, "bias_bits": 2,
         "out_bits": 2 if fmt.kind == "bipolar" else fmt.bits, "out_lo": fmt.lo, "out_hi": fmt.hi,
         "rounding": "half_up", "bipolar_out": fmt.kind == "bipolar"}
    if fmt.kind == "unsigned" and not fmt.narrow:
        f |= {"out_lo": None, "out_hi": None}
    return f


def _synth_layer(name, typ, inputs, output, info, *, weights, kernel, stride, padding, out_chw, rq) -> AccelLayer:
    """A layer the graph does not write as a MAC node (add, average pool, requant, identity before
    a max pool): integer ``weights`` (O rows of K) on the inputs stored one after the other."""
    from l1bn.spec.config import signed_bits

    w = np.asarray(weights, dtype=np.int64)
    w_bits = signed_bits(min(int(w.min()), 0), max(int(w.max()), 0))
    if w_bits > 8:
        raise _todo(f"node {name} ({typ})", f"{w_bits}-bit weights (in_mults or pooled weights; at most 8)")
    a_bits, a_signed = _in_fmt([info[t].fmt for t in inputs])
    c = sum(chw(info[t].shape)[0] for t in inputs)
    in_chw = (c, *chw(info[inputs[0]].shape)[1:])
    acc = MACConfig(wbits=w_bits, abits=a_bits, signed_w=True, signed_a=a_signed, k=w.shape[1]).acc_bits
    return AccelLayer(name=name, type=typ, in_chw=in_chw, out_chw=out_chw, kernel=kernel, stride=stride,
                      padding=padding, w_bits=w_bits, a_bits=a_bits, acc_bits=acc, weights=_ints(w),
                      a_signed=a_signed, inputs=tuple(inputs), output=output, **rq)


def _elementwise(node, what, info) -> AccelLayer:
    """``add``, ``avgpool`` or ``requant`` (each with its requantizer) as a convolution."""
    x = chw(info[node.inputs[0]].shape)
    c = x[0]
    rq = _requant_fields(node.requant, None if node.bias is None else np.asarray(node.bias, dtype=np.int64))
    eye = np.eye(c, dtype=np.int64)
    if node.op == "add":
        ka, kb = (int(k) for k in node.in_mults)
        a, b = node.inputs
        if a == b:      # x * ka + x * kb: one input
            inputs, w = (a,), eye * (ka + kb)
        else:
            inputs, w = (a, b), np.concatenate([eye * ka, eye * kb], axis=1)
        return _synth_layer(node.name, "add", inputs, node.output, info, weights=w, kernel=(1, 1), stride=1,
                            padding=0, out_chw=x, rq=rq)
    if node.op == "avgpool":
        kh, kw = (int(k) for k in node.kernel)
        w = np.repeat(eye, kh * kw, axis=1)          # k in (c, ky, kx) order: 1 on the own channel
        return _synth_layer(node.name, "avgpool", node.inputs, node.output, info, weights=w, kernel=(kh, kw),
                            stride=int(node.stride), padding=int(node.padding),
                            out_chw=chw(info[node.output].shape), rq=rq)
    return _synth_layer(node.name, "requant", node.inputs, node.output, info, weights=eye, kernel=(1, 1),
                        stride=1, padding=0, out_chw=x, rq=rq)


def _maxpool(node, what, info, layers, last):
    """A max pool merged into the layer before it (returns None) or into a new identity layer."""
    if last:
        raise _todo(what, "a max pool as the last node (the logits are accumulators)")
    kh, kw = (int(k) for k in node.kernel)
    pool = (kh, kw, int(node.stride))
    (t,) = node.inputs
    out_chw = chw(info[node.output].shape)
    prev = layers[-1] if layers else None
    if prev is not None and prev.output == t and prev.mult is not None and prev.pool is None \
            and len(info[t].consumers) == 1:
        layers[-1] = dataclasses.replace(prev, pool=pool, pool_pad=int(node.padding), conv_chw=prev.out_chw,
                                         out_chw=out_chw, output=node.output)
        return None
    fmt = info[t].fmt
    x = chw(info[t].shape)
    lay = _synth_layer(f"{node.name}", "maxpool", (t,), t, info, weights=np.eye(x[0], dtype=np.int64),
                       kernel=(1, 1), stride=1, padding=0, out_chw=x, rq=_identity_requant(fmt, x[0]))
    return dataclasses.replace(lay, pool=pool, pool_pad=int(node.padding), conv_chw=x, out_chw=out_chw,
                               output=node.output)


def _mac_layer(node, what, info, last, fused) -> AccelLayer:
    """A conv2d / linear node; ``fused``: the average pool or add (no requantizer) whose sum it
    reads (the node then reads that node's inputs)."""
    from l1bn.spec.config import signed_bits

    typ = node.op
    avg = fused if fused is not None and fused.op == "avgpool" else None
    add = fused if fused is not None and fused.op == "add" else None
    srcs = (node.inputs[0],) if fused is None else fused.inputs
    if add is not None and srcs[0] == srcs[1]:
        srcs = srcs[:1]
    src = srcs[0]
    if node.w_fmt.kind == "unsigned":
        raise _todo(what, f"{node.w_fmt.describe()} weights")
    a_fmt = info[src].fmt
    a_bits, a_signed = _stored(a_fmt)
    wshape = np.shape(node.weight)
    in_chw = chw(info[src].shape)
    weight = np.reshape(node.weight, (wshape[0], -1))
    w_bits = 1 if node.w_fmt.kind == "bipolar" else int(node.w_fmt.bits)
    if w_bits > 8:
        raise _todo(what, f"{node.w_fmt.describe()} weights (the MAC array takes at most 8 bits)")
    if add is not None:
        # W (a * ka + b * kb) = [W * ka, W * kb] on the two inputs stored one after the other
        ka, kb = (int(k) for k in add.in_mults)
        wc = weight.reshape(wshape[0], in_chw[0], -1)
        weight = (wc * (ka + kb) if len(srcs) == 1 else np.concatenate([wc * ka, wc * kb], axis=1))
        weight = weight.reshape(wshape[0], -1)
        w_bits = signed_bits(min(int(weight.min()), 0), max(int(weight.max()), 0))
        if w_bits > 8:
            raise _todo(what, f"reading {add.name}'s sum: its weights times in_mults need {w_bits} bits (at most 8)")
        a_bits, a_signed = _in_fmt([info[t].fmt for t in srcs])
        in_chw = (in_chw[0] * len(srcs), *in_chw[1:])
    if typ == "conv2d":
        kernel, stride, padding = (int(wshape[2]), int(wshape[3])), int(node.stride), int(node.padding)
        out_chw = chw(info[node.output].shape)
    else:
        kernel, stride, padding = (in_chw[1], in_chw[2]), 1, 0
        out_chw = (int(wshape[0]), 1, 1)
    if avg is not None:
        weight = pool_weights(weight, chw(info[avg.output].shape), in_chw, avg)
        w_bits = signed_bits(min(int(weight.min()), 0), max(int(weight.max()), 0))
        if w_bits > 8:
            raise _todo(what, f"reading {avg.name}'s sum: its pooled weights need {w_bits} bits (at most 8)")
    bipolar_a = a_fmt.kind == "bipolar" and add is None
    if add is None:
        acc = MACConfig(wbits=w_bits, abits=1 if bipolar_a else a_fmt.bits, signed_w=True,
                        signed_a=a_fmt.kind != "unsigned", bipolar_a=bipolar_a,
                        k=int(weight.shape[1])).acc_bits
    else:
        acc = MACConfig(wbits=w_bits, abits=a_bits, signed_w=True, signed_a=a_signed, k=int(weight.shape[1])).acc_bits
    mac_bias = None if node.bias is None else np.asarray(node.bias, dtype=np.int64)
    rq = node.requant
    extra = {"a_signed": a_signed, "a_bipolar": bipolar_a, "inputs": srcs, "output": node.output}
    if rq is None:
        if not last:
            raise _todo(what, "raw accumulators feeding the next node (no requantizer)")
        extra |= {"mult": None, "bias": None, "shift": None, "out_bits": None, "mult_bits": None,
                  "bias_bits": None}
        if mac_bias is not None:
            sf = info[node.output].fmt
            extra |= {"logit_bias": _ints(mac_bias), "logit_bits": max(acc, signed_bits(sf.lo, sf.hi))}
    else:
        if last:
            raise _todo(what, "a requantizer on the last node (the logits are its accumulators)")
        extra |= _requant_fields(rq, mac_bias)
    return AccelLayer(name=node.name, type=typ, in_chw=in_chw, out_chw=out_chw, kernel=kernel, stride=stride,
                      padding=padding, w_bits=w_bits, a_bits=a_bits, acc_bits=acc, weights=_ints(weight), **extra)


def pool_weights(weight, pooled_chw, in_chw, avg) -> np.ndarray:
    """Linear weights on an average pool's window sums, as weights on the pool's input:
    ``W'[o, c, y, x] = sum of W[o, c, p]`` over the windows ``p`` that cover ``(y, x)`` (padding
    covers nothing), so that ``W' @ x == W @ windowsum(x)`` exactly."""
    c, ph, pw = pooled_chw
    _, h, w = in_chw
    kh, kw = (int(k) for k in avg.kernel)
    s, pad = int(avg.stride), int(avg.padding)
    wp = np.asarray(weight, dtype=np.int64).reshape(-1, c, ph, pw)
    out = np.zeros((wp.shape[0], c, h, w), dtype=np.int64)
    for py in range(ph):
        for px in range(pw):
            y0, x0 = py * s - pad, px * s - pad
            ys, xs = slice(max(y0, 0), min(y0 + kh, h)), slice(max(x0, 0), min(x0 + kw, w))
            out[:, :, ys, xs] += wp[:, :, py, px][:, :, None, None]
    return out.reshape(wp.shape[0], -1)


def accelerator_interface(exported_net) -> dict:
    """Port widths of the accelerator for an export, without building it.

    Returns ``{"in_bits", "in_signed", "logit_bits", "classes", "pixels", "argmax_bits"}``: the
    input stream carries ``pixels`` beats of ``in_bits`` per image (two's complement when
    ``in_signed``; bipolar pixels as -1/+1 in 2 bits); the output beat has ``classes`` logits of
    ``logit_bits`` signed bits and the argmax of those integers.
    """
    layers, inp = layers_from_export(exported_net)
    last = layers[-1]
    classes = last.channels
    return {"in_bits": inp["bits"], "in_signed": inp["signed"], "logit_bits": last.logit_bits or last.acc_bits,
            "classes": classes, "pixels": math.prod(inp["shape"]), "argmax_bits": bits_for(classes)}
