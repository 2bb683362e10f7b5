"""The layers of an exported network as the accelerator runs them (no torch).

:func:`layers_from_export` turns a loaded export (:func:`l1bn.spec.export.load_export`, which
reads and validates ``manifest.json``, the ``.npy`` tensors and their ``.hex`` images) into
:class:`AccelLayer` s: integer weights, folded-BN multipliers, biases and shifts, and the im2col
geometry, all taken from the loaded integer network. Every refusal is a ``ValueError`` that names
the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth import signed, unsigned
from amaranth.lib import data
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


def _net(exported_net) -> IntNet:
    """The chain network of a loaded export (or an ``IntNet`` itself). A graph that is not a chain
    (pooling, residual adds, bipolar activations, float scales, ...) raises the export's error,
    which names the first node the accelerator cannot run yet."""
    net = getattr(exported_net, "net", exported_net)
    if not isinstance(net, IntNet):
        raise ValueError(f"exported_net={exported_net!r} must be an ExportedNet (the result of load_export) "
                         "or an IntNet")
    return net


def _ints(a) -> tuple:
    """A numpy integer array as nested tuples of Python ints."""
    return tuple(np.asarray(a, dtype=np.int64).tolist())


def layers_from_export(exported_net) -> tuple[list[AccelLayer], dict]:
    """The layers of a loaded export (or of an ``IntNet``) as :class:`AccelLayer` s, and the input
    description ``{"shape": (C, H, W), "bits": pixel bits}``.

    Refused (``ValueError`` naming the node, "not supported by the accelerator yet"): any graph
    that is not a chain (:attr:`l1bn.spec.export.ExportedNet.net`), signed images or activations,
    BN without ReLU (signed activations), 1-bit weights, a last layer with a folded BN.
    """
    net = _net(exported_net)
    if net.in_signed:
        raise ValueError("input: signed images are not supported by the accelerator yet (unsigned pixels only)")
    layers = []
    for i, lay in enumerate(net.layers):
        name, typ = lay.name, lay.type
        last = i == len(net.layers) - 1
        if lay.a_signed:
            raise ValueError(f"node {name} ({typ}): signed input activations are not supported by the accelerator "
                             "yet (ReLU layers only)")
        wshape = np.shape(lay.weight)
        in_chw = chw(lay.in_shape)
        if typ == "conv2d":
            kernel, stride, padding = (int(wshape[2]), int(wshape[3])), int(lay.stride), int(lay.padding)
            out_chw = chw(lay.out_shape)
        elif typ == "linear":
            kernel, stride, padding = (in_chw[1], in_chw[2]), 1, 0
            out_chw = (int(lay.out_shape[0]), 1, 1)
        else:
            raise ValueError(f"layer {name}: type {typ!r} is not supported (conv2d, linear)")
        if lay.w_bits < 2:
            raise ValueError(f"node {name} ({typ}): w_bits={lay.w_bits} (binary weights) is not supported by the "
                             "accelerator yet (2..8)")
        bn = lay.bn
        if bn is None:
            if not last:
                raise ValueError(f"layer {name}: only the last layer may output raw accumulators")
            mult = bias = shift = ob = mb = bb = None
        else:
            if last:
                raise ValueError(f"layer {name}: the last layer must output accumulators (bn null)")
            if not bn.relu:
                raise ValueError(f"node {name} ({typ}): a requantizer without ReLU gives signed activations; not "
                                 "supported by the accelerator yet")
            mb, bb = int(bn.mult_bits), int(bn.bias_bits)
            mult, bias = _ints(bn.mult), _ints(bn.bias)
            shift, ob = int(bn.shift), int(bn.out_bits)
        layers.append(AccelLayer(name=name, type=typ, in_chw=in_chw, out_chw=out_chw, kernel=kernel,
                                 stride=stride, padding=padding, w_bits=int(lay.w_bits),
                                 a_bits=int(lay.a_bits), acc_bits=int(lay.acc_bits),
                                 weights=_ints(np.reshape(lay.weight, (wshape[0], -1))),
                                 mult=mult, bias=bias, shift=shift, out_bits=ob, mult_bits=mb, bias_bits=bb))
    return layers, {"shape": chw(net.in_shape), "bits": int(net.in_bits)}


def accelerator_interface(exported_net) -> dict:
    """Port widths of the accelerator for an export, without building it.

    Returns ``{"in_bits", "logit_bits", "classes", "pixels", "argmax_bits"}``: the input stream
    carries ``pixels`` beats of ``in_bits`` per image; the output beat has ``classes`` logits of
    ``logit_bits`` signed bits and the argmax.
    """
    net = _net(exported_net)
    last = net.layers[-1]
    classes = int(last.out_shape[0])
    return {"in_bits": int(net.in_bits), "logit_bits": int(last.acc_bits), "classes": classes,
            "pixels": math.prod(int(s) for s in net.in_shape), "argmax_bits": bits_for(classes)}
