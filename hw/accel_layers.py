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

__all__ = ["AccelLayer", "layers_from_export", "accelerator_interface", "output_layout",
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
    #: a max pool after the requantizer (kh, kw, stride; no padding): ``out_chw`` is the pooled
    #: shape, ``conv_chw`` the convolution's. Each output group computes the ``kh*kw`` positions
    #: of one pooling window in its first columns; the writeback keeps their maximum.
    pool: tuple | None = None
    conv_chw: tuple | None = None

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

    Runs a chain of ``conv2d`` / ``linear`` nodes, each reading the previous one's output:
    unsigned, signed (narrow too) or bipolar inputs and activations, signed / narrow / binary
    weights, per-channel requantizers of any kind (:mod:`l1bn.spec.reference.requant`: half-up or
    half-even rounding, unsigned, signed or narrow outputs, bipolar thresholds; float scales and
    TensorNorm are already folded into them or into the output's float scale), a MAC bias (folded
    into the requantizer's bias; on the last node added to the logits).

    A ``maxpool`` (no padding) right after a requantized convolution is merged into it
    (:attr:`AccelLayer.pool`: max pooling on the fly, in the writeback).

    Refused (``ValueError`` naming the node, "not supported by the accelerator yet"): average
    pooling, other max pools, residual adds, standalone requantizers, branches, unsigned weights, a last node with a
    requantizer, a hidden node without one.
    """
    from l1bn.spec.config import signed_bits

    g = _graph(exported_net)
    info = g.tensors()
    inp = g.input
    if len(chw(inp.shape)) != 3:
        raise ValueError(f"input: shape {list(inp.shape)}")
    layers = []
    prev = inp.name
    for i, node in enumerate(g.nodes):
        name, typ = node.name, node.op
        what = f"node {name} ({typ})"
        last = i == len(g.nodes) - 1
        if typ == "maxpool" and node.inputs == (prev,) and layers and layers[-1].mult is not None \
                and layers[-1].pool is None and layers[-1].type == "conv2d" and not node.padding and not last:
            lay = layers[-1]
            kh, kw = (int(k) for k in node.kernel)
            layers[-1] = dataclasses.replace(lay, pool=(kh, kw, int(node.stride)), conv_chw=lay.out_chw,
                                             out_chw=chw(info[node.output].shape))
            prev = node.output
            continue
        if typ == "maxpool" and node.padding:
            raise _todo(what, "a padded max pool")
        if typ not in ("conv2d", "linear"):
            raise _todo(what, f"{'an' if typ[0] in 'aeiou' else 'a'} {typ} node")
        if node.inputs != (prev,):
            raise _todo(what, f"reading {list(node.inputs)} instead of the previous output {prev} (a branch)")
        if node.w_fmt.kind == "unsigned":
            raise _todo(what, f"{node.w_fmt.describe()} weights")
        a_fmt = info[prev].fmt
        a_bits, a_signed = _stored(a_fmt)
        wshape = np.shape(node.weight)
        in_chw = chw(info[prev].shape)
        if typ == "conv2d":
            kernel, stride, padding = (int(wshape[2]), int(wshape[3])), int(node.stride), int(node.padding)
            out_chw = chw(info[node.output].shape)
        else:
            kernel, stride, padding = (in_chw[1], in_chw[2]), 1, 0
            out_chw = (int(wshape[0]), 1, 1)
        w_bits = 1 if node.w_fmt.kind == "bipolar" else int(node.w_fmt.bits)
        bipolar_a = a_fmt.kind == "bipolar"
        acc = MACConfig(wbits=w_bits, abits=1 if bipolar_a else a_fmt.bits, signed_w=True,
                        signed_a=a_fmt.kind != "unsigned", bipolar_a=bipolar_a,
                        k=int(np.prod(wshape[1:]))).acc_bits
        mac_bias = None if node.bias is None else np.asarray(node.bias, dtype=np.int64)
        rq = node.requant
        extra = {"a_signed": a_signed}
        if rq is None:
            if not last:
                raise _todo(what, "raw accumulators feeding the next node (no requantizer)")
            mult = bias = shift = ob = mb = bb = None
            if mac_bias is not None:
                sf = info[node.output].fmt
                extra |= {"logit_bias": _ints(mac_bias), "logit_bits": max(acc, signed_bits(sf.lo, sf.hi))}
        else:
            if last:
                raise _todo(what, "a requantizer on the last node (the logits are its accumulators)")
            m64, b64 = np.asarray(rq.mult, dtype=np.int64), np.asarray(rq.bias, dtype=np.int64)
            if mac_bias is not None:        # (acc + b) * m + c = acc * m + (b * m + c), exactly
                b64 = b64 + mac_bias * m64
            mult, bias, shift = _ints(m64), _ints(b64), int(rq.shift)
            mb = int(rq.mult_bits)
            bb = max(int(rq.bias_bits), signed_bits(min(int(b64.min()), 0), max(int(b64.max()), 0)))
            out = rq.out
            ob = 2 if out.kind == "bipolar" else out.bits
            extra |= {"out_lo": rq.lo, "out_hi": out.hi, "rounding": rq.rounding,
                      "bipolar_out": out.kind == "bipolar"}
            if out.kind == "unsigned" and not out.narrow and rq.rounding == "half_up":
                extra |= {"out_lo": None, "out_hi": None}        # the chain rule
        layers.append(AccelLayer(name=name, type=typ, in_chw=in_chw, out_chw=out_chw, kernel=kernel,
                                 stride=stride, padding=padding, w_bits=w_bits, a_bits=a_bits, acc_bits=acc,
                                 weights=_ints(np.reshape(node.weight, (wshape[0], -1))),
                                 mult=mult, bias=bias, shift=shift, out_bits=ob, mult_bits=mb, bias_bits=bb,
                                 **extra))
        prev = node.output
    if g.output.name != prev:
        raise ValueError(f"output: tensor {g.output.name} is not the last node's output")
    bits, signed = _stored(inp.fmt)
    return layers, {"shape": chw(inp.shape), "bits": bits, "signed": signed}


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
