"""The layers of an exported network as the accelerator runs them (reads the export, no torch).

:func:`layers_from_export` turns a loaded export (``manifest.json`` and its ``.hex`` memory images)
into :class:`AccelLayer` s: integer weights, folded-BN multipliers, biases and shifts, and the
im2col geometry. Every refusal is a ``ValueError`` that names the tensor or layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from amaranth import signed, unsigned
from amaranth.lib import data

__all__ = ["AccelLayer", "layers_from_export", "accelerator_interface", "output_layout",
           "weight_matrix", "bits_for", "cdiv", "chw"]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def bits_for(n: int) -> int:
    """Unsigned bits that count 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())




@dataclass(frozen=True)
class AccelLayer:
    """One layer as the accelerator runs it (all integers, no tensors).

    ``in_chw`` / ``out_chw`` are (C, H, W) (a linear layer's output is (O, 1, 1)); ``kernel``,
    ``stride``, ``padding`` describe the im2col; ``weight_words`` are the ``.hex`` words
    (``rows * w_bits`` bits each); ``mult`` / ``bias`` / ``shift`` / ``out_bits`` the folded BN
    (None for the last layer, whose accumulators are the logits).
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
    weight_words: tuple
    mult: tuple | None
    bias: tuple | None
    shift: int | None
    out_bits: int | None
    mult_bits: int | None
    bias_bits: int | None
    #: output channels packed per weight word (the export's ``hex_rows``); None: the array's rows
    word_rows: int | None = None

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


def _read_hex(root: Path, entry: dict, what: str) -> list[int]:
    h = entry.get("hex")
    if not isinstance(h, dict) or "file" not in h:
        raise ValueError(f"tensor {what}: the manifest names no .hex memory image")
    path = root / h["file"]
    if not path.is_file():
        raise ValueError(f"tensor {what}: memory file {h['file']} is missing")
    try:
        return [int(s, 16) for s in path.read_text().split()]
    except ValueError:
        raise ValueError(f"tensor {what}: {h['file']} is not a $readmemh file") from None


def _to_signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def _manifest_and_root(exported_net):
    manifest = getattr(exported_net, "manifest", None)
    path = getattr(exported_net, "path", None)
    if not isinstance(manifest, dict) or path is None:
        raise ValueError(f"exported_net={exported_net!r} must be an ExportedNet (the result of load_export)")
    return manifest, Path(path)


def layers_from_export(exported_net) -> tuple[list[AccelLayer], dict]:
    """The layers of a loaded export as :class:`AccelLayer` s, and the input description."""
    m, root = _manifest_and_root(exported_net)
    tensors = m["tensors"]
    rows = int(m.get("hex_rows", 4))
    inp = m["input"]
    if inp.get("signed"):
        raise ValueError("input: signed images are not supported by the accelerator (unsigned pixels only)")
    layers = []
    lds = m["layers"]
    for i, ld in enumerate(lds):
        name, typ = ld["name"], ld["type"]
        last = i == len(lds) - 1
        if ld["a_signed"]:
            raise ValueError(f"layer {name}: signed input activations are not supported (ReLU layers only)")
        wt = tensors[ld["weight"]]
        wshape = tuple(wt["shape"])
        in_chw = chw(ld["in_shape"])
        if typ == "conv2d":
            kernel, stride, padding = (wshape[2], wshape[3]), int(ld["stride"]), int(ld["padding"])
            out_chw = chw(ld["out_shape"])
        elif typ == "linear":
            kernel, stride, padding = (in_chw[1], in_chw[2]), 1, 0
            out_chw = (int(ld["out_shape"][0]), 1, 1)
        else:
            raise ValueError(f"layer {name}: type {typ!r} is not supported (conv2d, linear)")
        if wt["hex"].get("rows", rows) != rows:
            raise ValueError(f"tensor {ld['weight']}: packed for {wt['hex'].get('rows')} rows, export says {rows}")
        if ld["w_bits"] < 2:
            raise ValueError(f"layer {name}: w_bits={ld['w_bits']} is not supported (2..8)")
        words = _read_hex(root, wt, ld["weight"])
        k = in_chw[0] * kernel[0] * kernel[1]
        if len(words) != cdiv(out_chw[0], rows) * k:
            raise ValueError(f"tensor {ld['weight']}: {len(words)} words in {wt['hex']['file']}, "
                             f"expected {cdiv(out_chw[0], rows) * k}")
        bn = ld.get("bn")
        if bn is None:
            if not last:
                raise ValueError(f"layer {name}: only the last layer may output raw accumulators")
            mult = bias = shift = ob = mb = bb = None
        else:
            if last:
                raise ValueError(f"layer {name}: the last layer must output accumulators (bn null)")
            if not bn["relu"]:
                raise ValueError(f"layer {name}: BN without ReLU gives signed activations; not supported")
            mb, bb = int(bn["mult_bits"]), int(bn["bias_bits"])
            mult = tuple(_to_signed(v, mb) for v in _read_hex(root, tensors[bn["mult"]], bn["mult"]))
            bias = tuple(_to_signed(v, bb) for v in _read_hex(root, tensors[bn["bias"]], bn["bias"]))
            for nm, vals in ((bn["mult"], mult), (bn["bias"], bias)):
                if len(vals) != out_chw[0]:
                    raise ValueError(f"tensor {nm}: {len(vals)} words, expected {out_chw[0]} (one per channel)")
            shift, ob = int(bn["shift"]), int(bn["out_bits"])
        layers.append(AccelLayer(name=name, type=typ, in_chw=in_chw, out_chw=out_chw, kernel=tuple(kernel),
                                 stride=stride, padding=padding, w_bits=int(ld["w_bits"]),
                                 a_bits=int(ld["a_bits"]), acc_bits=int(ld["acc_bits"]),
                                 weight_words=tuple(words), mult=mult, bias=bias, shift=shift, out_bits=ob,
                                 mult_bits=mb, bias_bits=bb, word_rows=rows))
    return layers, {"shape": chw(inp["shape"]), "bits": int(inp["bits"]), "rows": rows}


def weight_matrix(layer: AccelLayer, rows: int) -> list[list[int]]:
    """The layer's signed weights ``W[o][k]`` (``O`` x ``K``), decoded from its ``.hex`` words.

    ``rows`` is the packing of ``layer.weight_words`` when the layer does not name it
    (``word_rows``): word ``t*K + k`` holds channels ``t*rows .. t*rows + rows - 1`` of step ``k``,
    ``w_bits`` each, LSB first.
    """
    r = layer.word_rows or rows
    k, wb = layer.k, layer.w_bits
    mask = (1 << wb) - 1
    w = [[0] * k for _ in range(layer.channels)]
    for o in range(layer.channels):
        t, i = divmod(o, r)
        for kk in range(k):
            w[o][kk] = _to_signed((layer.weight_words[t * k + kk] >> (i * wb)) & mask, wb)
    return w


def accelerator_interface(exported_net) -> dict:
    """Port widths of the accelerator for an export, without building it.

    Returns ``{"in_bits", "logit_bits", "classes", "pixels", "argmax_bits"}``: the input stream
    carries ``pixels`` beats of ``in_bits`` per image; the output beat has ``classes`` logits of
    ``logit_bits`` signed bits and the argmax.
    """
    m, _ = _manifest_and_root(exported_net)
    last = m["layers"][-1]
    classes = int(last["out_shape"][0])
    return {"in_bits": int(m["input"]["bits"]), "logit_bits": int(last["acc_bits"]), "classes": classes,
            "pixels": math.prod(int(s) for s in m["input"]["shape"]), "argmax_bits": bits_for(classes)}
