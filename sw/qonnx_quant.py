"""The quantizer nodes of a QONNX model, read for ``l1bn import`` (docs/interop.md).

:func:`quant_params` reads a ``Quant``, ``BipolarQuant`` or ``Trunc`` node into a
:class:`QuantParams`: its scale (one value or one per channel), zero point (must be 0), bit width,
signedness, narrow range, rounding mode, and the l1bn :class:`~l1bn.spec.reference.formats.Fmt` of
its integers (a ``BipolarQuant``, and a signed 1-bit ``Quant``, which qonnx computes as a sign, are
bipolar). :func:`quantized_ints` applies qonnx's own quantizer function to a constant (weights,
a quantized bias), so the integers are qonnx's bit for bit.

Errors are :class:`QONNXImportError` s naming the node as the user's file names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from l1bn.spec.reference.formats import Fmt

__all__ = ["QONNXImportError", "BITS_RANGE", "ROUNDINGS", "QUANT_OPS", "node_name", "node_error", "QuantParams",
           "quant_params", "quantized_ints", "NAME_TAG"]

#: bit widths of weights and activations the importer accepts
BITS_RANGE = (1, 16)
#: rounding modes of Quant / Trunc nodes the importer accepts (qonnx's names)
ROUNDINGS = ("ROUND", "HALF_EVEN", "HALF_UP", "FLOOR")
QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")
#: load_qonnx keeps each node's original name in its doc_string behind this tag
NAME_TAG = "l1bn-original-name:"


class QONNXImportError(ValueError):
    """A QONNX model outside the supported set (printed as one ``error:`` line)."""


def node_name(node) -> str:
    """The node's name in the user's file (qonnx's cleanup renames nodes; ``load_qonnx`` keeps the
    original in ``doc_string``)."""
    d = node.doc_string or ""
    if d.startswith(NAME_TAG) and len(d) > len(NAME_TAG):
        return d[len(NAME_TAG):]
    return node.name or "?"


def node_error(node, reason: str) -> QONNXImportError:
    return QONNXImportError(f"node {node_name(node)} ({node.op_type}): {reason}")


@dataclass(frozen=True)
class QuantParams:
    """A quantizer node's parameters (module docstring). ``scale`` is float64, flat (1 or C
    values) with ``scale_shape`` the constant's own shape; for ``Trunc`` nodes ``in_bits`` and
    ``out_scale`` are the truncation's input width and output scale (v2: its own input; v1: the
    input scale)."""

    node: object
    op: str
    scale: np.ndarray
    scale_shape: tuple
    bits: int
    signed: bool
    narrow: bool
    rounding: str
    fmt: Fmt
    in_bits: int | None = None
    out_scale: np.ndarray | None = None

    @property
    def per_tensor(self) -> bool:
        return bool(np.all(self.scale == self.scale[0]))


def _const(w, node, i: int, what: str) -> np.ndarray:
    v = w.get_initializer(node.input[i]) if i < len(node.input) and node.input[i] else None
    if v is None:
        raise node_error(node, f"{what} must be a constant (an initializer)")
    return np.asarray(v, dtype=np.float64)


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _one_int(node, v: np.ndarray, what: str) -> int:
    b = np.asarray(v).ravel()
    if b.size != 1 or float(b[0]) != int(b[0]):
        raise node_error(node, f"{what} {b.tolist()} is not one integer")
    return int(b[0])


def quant_params(w, node, what: str) -> QuantParams:
    """The parameters of quantizer ``node`` (``what`` names its role in errors: input, weight,
    activation, bias)."""
    op = node.op_type
    if op not in QUANT_OPS:
        raise node_error(node, f"expected a quantizer (Quant, BipolarQuant, Trunc) for the {what}")
    scale = _const(w, node, 1, f"{what} scale")
    if not (bool(np.isfinite(scale).all()) and bool((scale > 0).all())):
        raise node_error(node, f"{what} scale must be positive and finite")
    flat = scale.ravel()
    if op == "BipolarQuant":
        return QuantParams(node, op, flat, tuple(scale.shape), 1, True, False, "SIGN", Fmt(kind="bipolar", bits=1))
    zp = _const(w, node, 2, f"{what} zero point")
    if np.any(zp != 0):
        raise node_error(node, f"{what} zero point {np.unique(zp).tolist()} is not 0 (only symmetric quantizers "
                               "are supported)")
    signed = bool(_attr(node, "signed", 1))
    narrow = bool(_attr(node, "narrow", 0))
    rounding = str(_attr(node, "rounding_mode", "ROUND" if op == "Quant" else "FLOOR")).upper()
    if op == "Trunc":
        in_bits = _one_int(node, _const(w, node, 3, "input bit width"), f"{what} input bit width")
        if len(node.input) >= 6:      # Trunc v2: x, scale, zeropt, in_bits, out_scale, out_bits
            out_scale = _const(w, node, 4, f"{what} output scale").ravel()
            bits = _one_int(node, _const(w, node, 5, "output bit width"), f"{what} output bit width")
        else:                         # Trunc v1: x, scale, zeropt, in_bits, out_bits
            out_scale, bits = flat, _one_int(node, _const(w, node, 4, "output bit width"), f"{what} output bit width")
            signed, narrow = True, False
    else:
        in_bits, out_scale = None, None
        bits = _one_int(node, _const(w, node, 3, f"{what} bit width"), f"{what} bit width")
    lo, hi = BITS_RANGE
    if what == "bias":
        lo, hi = 2, 32
    if not lo <= bits <= hi:
        raise node_error(node, f"{what} bit width {bits} is out of range {lo}..{hi}")
    if rounding not in ROUNDINGS:
        raise node_error(node, f"{what} rounding_mode {rounding} is not supported ({', '.join(ROUNDINGS)})")
    if signed and bits == 1:   # qonnx computes a signed 1-bit Quant as a sign: bipolar
        if narrow:
            raise node_error(node, f"{what}: a narrow signed 1-bit quantizer holds only 0")
        fmt = Fmt(kind="bipolar", bits=1)
    else:
        try:
            fmt = Fmt(kind="signed" if signed else "unsigned", bits=bits, narrow=narrow)
        except ValueError as e:
            raise node_error(node, f"{what}: {e}") from None
    return QuantParams(node, op, flat, tuple(scale.shape), bits, signed, narrow, rounding, fmt, in_bits, out_scale)


def quantized_ints(w, q: QuantParams, raw: np.ndarray) -> np.ndarray:
    """The integers a ``Quant``/``BipolarQuant`` node makes of the constant ``raw``: qonnx's own
    integer step (``raw / scale`` in float32, then its sign, or clamp and its rounding function),
    so they are qonnx's integers bit for bit (qonnx then multiplies them by the scale)."""
    from qonnx.custom_op.general.intquant import max_int, min_int, resolve_rounding_mode

    scale = q.scale.reshape(q.scale_shape).astype(np.float32)
    y = raw.astype(np.float32) / scale
    if q.fmt.kind == "bipolar":
        return np.where(y >= 0, 1, -1).astype(np.int64)
    y = np.clip(y, min_int(q.signed, q.narrow, q.bits), max_int(q.signed, q.narrow, q.bits))
    return np.asarray(resolve_rounding_mode(q.rounding)(y), dtype=np.float64).astype(np.int64)
