"""The network part of an export's manifest (schema 3): an :class:`IntGraph` <-> JSON.

:func:`graph_manifest` writes the ``input``, ``output``, ``nodes`` and ``activations`` fields and
hands every integer tensor to the export's tensor writer; :func:`graph_from_manifest` reads them
back into an :class:`~l1bn.spec.reference.graph.IntGraph` (its construction checks the graph:
shapes, formats, weights in range, topological order) and :func:`check_derived` checks every
field that restates what the graph implies (shapes, formats, reduction lengths, accumulator
widths, exponents, liveness), so that a manifest edited by hand is refused field by field.
Every refusal is an :class:`ExportError` naming the node, tensor or field. docs/export.md
describes the fields.
"""

from __future__ import annotations

import numpy as np

from .reference.core import as_float64, as_int64
from .reference.formats import Fmt, to_codes
from .reference.graph import MAC_OPS, GraphInput, GraphOutput, IntGraph, Node, pow2_exp
from .reference.requant import Requant

__all__ = ["ExportError", "INPUT_QUANTIZERS", "graph_manifest", "graph_from_manifest", "check_derived"]


class ExportError(ValueError):
    """An export is missing, tampered with or inconsistent (printed as one ``error:`` line)."""


#: the input quantizer of each input rounding, in words (manifest ``input.quantizer``)
INPUT_QUANTIZERS = {
    "half_up": "clamp(floor(v / scale + 1/2), lo, hi)",
    "half_away": "clamp(v / scale, lo, hi) rounded half away from zero",
    "half_even": "clamp(v / scale, lo, hi) rounded half to even",
    "floor": "floor(clamp(v / scale, lo, hi))",
    "sign": "+1 if v >= 0 else -1",
    "integer": "none: the images are the integers",
}


def _floats(v) -> list:
    return [float(f) for f in as_float64(v)]


def _scale_list(v) -> list:
    """A scale as stored: one value when every channel has the same."""
    a = as_float64(v)
    return [float(a[0])] if a.size and bool(np.all(a == a[0])) else _floats(a)


def _exp_of(scale) -> int | None:
    return None if scale is None else pow2_exp(scale)


def _requant_manifest(node: Node, rq: Requant, w, out_exp: int | None) -> dict:
    cols = {"layout": "column"}
    mname = w.add(f"{node.name}.mult", rq.mult, bits=rq.mult_bits, signed=True, exp=rq.shift, role="requant_mult",
                  hex_fields=(rq.mult, rq.mult_bits), hex_info={**cols, "word_bits": rq.mult_bits})
    bname = w.add(f"{node.name}.bias", rq.bias, bits=rq.bias_bits, signed=True,
                  exp=None if out_exp is None else rq.shift + out_exp, role="requant_bias",
                  hex_fields=(rq.bias, rq.bias_bits), hex_info={**cols, "word_bits": rq.bias_bits})
    return {"mult": mname, "bias": bname, "shift": rq.shift, "mult_bits": rq.mult_bits, "bias_bits": rq.bias_bits,
            "out_bits": rq.out.bits, "relu": rq.relu, "rounding": rq.rounding, "format": rq.out.to_dict()}


def _tiles(w: np.ndarray, rows: int) -> np.ndarray:
    """Weights (O, ...) -> the fields of the weight words (docs/export.md, ``weight_tiles``)."""
    o = w.shape[0]
    wm = w.reshape(o, -1)
    k, tiles = wm.shape[1], -(-o // rows)
    padded = np.zeros((tiles * rows, k), dtype=np.int64)
    padded[:o] = wm
    return padded.reshape(tiles, rows, k).transpose(0, 2, 1).reshape(-1, rows)


def graph_manifest(graph: IntGraph, w, rows: int) -> dict:
    """The network fields of a manifest; integer tensors go through the writer ``w``
    (``w.add(name, array, bits=, signed=, exp=, role=, hex_fields=, hex_info=, fmt=, scale=)``)."""
    info = graph.tensors()
    scale = {t: graph.scales.get(t) for t in info}
    nodes = []
    for node in graph.nodes:
        t = info[node.output]
        d = {"name": node.name, "op": node.op, "inputs": list(node.inputs), "output": node.output,
             "in_shapes": [list(info[i].shape) for i in node.inputs], "out_shape": list(t.shape),
             "in_formats": [info[i].fmt.to_dict() for i in node.inputs], "out_format": t.fmt.to_dict()}
        if node.op in MAC_OPS:
            wf = node.w_fmt
            wt = as_int64(node.weight)
            fields = _tiles(to_codes(wt, wf), rows)
            w_exp = _exp_of(node.w_scale)
            d["weight"] = w.add(f"{node.name}.weight", wt, bits=wf.bits, signed=wf.signed, fmt=wf, exp=w_exp,
                                scale=None if node.w_scale is None else _scale_list(node.w_scale), role="weight",
                                hex_fields=(fields, wf.bits),
                                hex_info={"layout": "weight_tiles", "rows": rows, "word_bits": rows * wf.bits,
                                          "field_bits": wf.bits})
            d.update(w_format=wf.to_dict(), w_bits=wf.bits, w_exp=w_exp, k=node.k)
            if node.op == "conv2d":
                d.update(kernel=list(node.window), stride=node.stride, padding=node.padding)
            d["acc_bias"] = None
            if node.bias is not None:
                b = as_int64(node.bias)
                bb = t.sum_fmt.bits
                d["acc_bias"] = w.add(f"{node.name}.acc_bias", b, bits=bb, signed=True, role="acc_bias",
                                      hex_fields=(b, bb), hex_info={"layout": "column", "word_bits": bb})
        elif node.op in ("maxpool", "avgpool"):
            d.update(kernel=list(node.kernel), stride=node.stride, padding=node.padding)
        elif node.op == "add":
            d["in_mults"] = [int(m) for m in node.in_mults]
        if t.sum_fmt is not None and node.op != "requant":
            d.update(acc_bits=t.sum_fmt.bits, acc_format=t.sum_fmt.to_dict())
        d["requant"] = None
        if node.requant is not None:
            d["requant"] = _requant_manifest(node, node.requant, w, _exp_of(scale[node.output]))
        nodes.append(d)
    acts = {}
    for name, t in info.items():
        s = scale[name]
        acts[name] = {"shape": list(t.shape), "format": t.fmt.to_dict(),
                      "scale": None if s is None else _scale_list(s), "exp": _exp_of(s),
                      "producer": None if t.producer < 0 else graph.nodes[t.producer].name,
                      "consumers": [graph.nodes[i].name for i in t.consumers], "last_use": t.last}
    inp, out = graph.input, graph.output
    ot = info[out.name]
    o_exp = pow2_exp(out.scale)
    if o_exp is not None and np.any(as_float64(out.offset)):
        o_exp = None
    return {
        "input": {"tensor": inp.name, "shape": list(inp.shape), "format": inp.fmt.to_dict(), "bits": inp.fmt.bits,
                  "signed": inp.fmt.signed, "scale": float(inp.scale), "exp": pow2_exp(inp.scale),
                  "rounding": inp.rounding,
                  "preprocess": [{"op": op, "values": _floats(v)} for op, v in inp.preprocess],
                  "quantizer": INPUT_QUANTIZERS[inp.rounding]},
        "output": {"tensor": out.name, "shape": list(ot.shape),
                   "kind": "accumulator" if graph.nodes[ot.producer].requant is None else "requantized",
                   "format": ot.fmt.to_dict(), "scale": _floats(out.scale), "offset": _floats(out.offset),
                   "exp": o_exp, "argmax_on_integers": out.argmax_on_integers},
        "nodes": nodes, "activations": acts, "peak_live_values": graph.peak_live(),
    }


# ------------------------------------------------------------------------------------- reading

def _need(d: dict, key: str, what: str, types):
    if not isinstance(d, dict):
        raise ExportError(f"{what}: not an object")
    if key not in d:
        raise ExportError(f"{what}: missing field {key!r}")
    v = d[key]
    tt = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, tt) or (isinstance(v, bool) and bool not in tt):
        raise ExportError(f"{what}: field {key!r}={v!r} has the wrong type")
    return v


def _fmt(d, what: str) -> Fmt:
    try:
        return Fmt.from_dict(d)
    except (ValueError, TypeError) as e:
        raise ExportError(f"{what}: {e}") from None


def _int_list(d, key, what, n=None) -> tuple:
    v = _need(d, key, what, list)
    if any(isinstance(x, bool) or not isinstance(x, int) for x in v) or (n is not None and len(v) != n):
        raise ExportError(f"{what}: field {key!r}={v!r} must be {n or 'a list of'} integers")
    return tuple(v)


def _requant(rd, what: str, tensor_for) -> Requant:
    mb, bb = _need(rd, "mult_bits", what, int), _need(rd, "bias_bits", what, int)
    mult = tensor_for(rd.get("mult"), what, bits=mb, role="requant_mult")
    bias = tensor_for(rd.get("bias"), what, bits=bb, role="requant_bias")
    fmt = _fmt(_need(rd, "format", what, dict), f"{what} requant format")
    try:
        return Requant(mult=mult, bias=bias, shift=_need(rd, "shift", what, int), mult_bits=mb, bias_bits=bb,
                       out=fmt, relu=_need(rd, "relu", what, bool), rounding=_need(rd, "rounding", what, str))
    except ValueError as e:
        raise ExportError(f"{what}: {e}") from None


def graph_from_manifest(m: dict, tensor_for, entries: dict) -> IntGraph:
    """The :class:`IntGraph` of a manifest. ``tensor_for(name, what, bits=None, role=None)``
    returns a loaded tensor (checking that the manifest declares it); ``entries`` are the
    manifest's tensor entries (for the weight scales)."""
    inp = _need(m, "input", "manifest", dict)
    pre = []
    for p in _need(inp, "preprocess", "input", list):
        vals = _need(p, "values", "input preprocess", list)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
            raise ExportError(f"input preprocess: values {vals!r} must be numbers")
        pre.append((_need(p, "op", "input preprocess", str), tuple(float(v) for v in vals)))
    scale = _need(inp, "scale", "input", (int, float))
    try:
        gin = GraphInput(name=_need(inp, "tensor", "input", str), shape=_int_list(inp, "shape", "input"),
                         fmt=_fmt(_need(inp, "format", "input", dict), "input format"), scale=float(scale),
                         rounding=_need(inp, "rounding", "input", str), preprocess=tuple(pre))
    except ValueError as e:
        raise ExportError(str(e)) from None
    nodes = []
    nds = _need(m, "nodes", "manifest", list)
    if not nds:
        raise ExportError("manifest: the network has no nodes")
    for i, nd in enumerate(nds):
        what = f"node {i}"
        name = _need(nd, "name", what, str)
        what = f"node {name}"
        op = _need(nd, "op", what, str)
        ins = _need(nd, "inputs", what, list)
        if any(not isinstance(t, str) for t in ins):
            raise ExportError(f"{what}: inputs {ins!r} must be tensor names")
        kw = {}
        if op in MAC_OPS:
            wf = _fmt(_need(nd, "w_format", what, dict), f"{what} w_format")
            wname = nd.get("weight")
            kw["weight"] = tensor_for(wname, what, bits=wf.bits, role="weight")
            kw["w_fmt"] = wf
            sc = entries[wname].get("scale")
            if sc is not None:
                if not isinstance(sc, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in sc):
                    raise ExportError(f"tensor {wname}: scale {sc!r} must be a list of numbers")
                kw["w_scale"] = np.asarray(sc, dtype=np.float64)
            if nd.get("acc_bias") is not None:
                kw["bias"] = tensor_for(nd["acc_bias"], what, role="acc_bias")
            if op == "conv2d":
                kw.update(stride=_need(nd, "stride", what, int), padding=_need(nd, "padding", what, int))
        elif op in ("maxpool", "avgpool"):
            kw.update(kernel=_int_list(nd, "kernel", what, 2), stride=_need(nd, "stride", what, int),
                      padding=_need(nd, "padding", what, int))
        elif op == "add":
            kw["in_mults"] = _int_list(nd, "in_mults", what, 2)
        rd = nd.get("requant")
        if rd is not None:
            kw["requant"] = _requant(rd, what, tensor_for)
        nodes.append(Node(name=name, op=op, inputs=tuple(ins), output=_need(nd, "output", what, str), **kw))
    out = _need(m, "output", "manifest", dict)
    for key in ("scale", "offset"):
        v = _need(out, key, "output", list)
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
            raise ExportError(f"output: {key} {v!r} must be numbers")
    gout = GraphOutput(name=_need(out, "tensor", "output", str), scale=np.asarray(out["scale"], dtype=np.float64),
                       offset=np.asarray(out["offset"], dtype=np.float64))
    acts = _need(m, "activations", "manifest", dict)
    scales = {}
    for t, a in acts.items():
        s = _need(a, "scale", f"activation {t}", (list, type(None)))
        if s is not None:
            if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in s):
                raise ExportError(f"activation {t}: scale {s!r} must be numbers")
            scales[t] = np.asarray(s, dtype=np.float64)
    try:
        return IntGraph(input=gin, nodes=tuple(nodes), output=gout, scales=scales)
    except ValueError as e:
        raise ExportError(str(e)) from None


def check_derived(m: dict, entries: dict, graph: IntGraph, rows) -> None:
    """Every manifest field that restates another, or follows from the tensors, must agree."""
    def same(what, field_, got, want):
        if got != want:
            raise ExportError(f"{what}: {field_}={got!r} disagrees with {want!r} implied by the tensors "
                              "and the other fields")

    expected = graph_manifest(graph, _Recorder(), rows if isinstance(rows, int) and rows >= 1 else 1)
    for key in ("input", "output"):
        for f, want in expected[key].items():
            same(key, f, m[key].get(f), want)
    for nd, want in zip(m["nodes"], expected["nodes"], strict=True):
        what = f"node {nd['name']}"
        for f, v in want.items():
            if f in ("requant", "weight", "acc_bias"):
                continue
            same(what, f, nd.get(f), v)
        extra = set(nd) - set(want)
        if extra:
            raise ExportError(f"{what}: unknown fields {sorted(extra)} for a {nd['op']} node")
        if (nd.get("requant") is None) != (want["requant"] is None):
            raise ExportError(f"{what}: requant presence disagrees")
        if want["requant"] is not None:
            for f, v in want["requant"].items():
                if f not in ("mult", "bias"):
                    same(f"{what} requant", f, nd["requant"].get(f), v)
    same("manifest", "activations", sorted(m["activations"]), sorted(expected["activations"]))
    for t, want in expected["activations"].items():
        for f, v in want.items():
            same(f"activation {t}", f, m["activations"][t].get(f), v)
    same("manifest", "peak_live_values", m.get("peak_live_values"), expected["peak_live_values"])
    # the tensor entries restate the node fields
    for node, nd in zip(graph.nodes, m["nodes"], strict=True):
        if node.op in MAC_OPS:
            e = entries[nd["weight"]]
            wf = node.w_fmt
            same(f"tensor {nd['weight']}", "exp", e.get("exp"), _exp_of(node.w_scale))
            same(f"tensor {nd['weight']}", "format", e.get("format"), wf.to_dict())
            same(f"tensor {nd['weight']}", "signed", e.get("signed"), wf.signed)
            hx = e["hex"]
            same(f"tensor {nd['weight']} hex", "layout", hx.get("layout"), "weight_tiles")
            same(f"tensor {nd['weight']} hex", "rows", hx.get("rows"), rows)
            same(f"tensor {nd['weight']} hex", "field_bits", hx.get("field_bits"), wf.bits)
            same(f"tensor {nd['weight']} hex", "word_bits", hx.get("word_bits"), wf.bits * (rows or 0))
            if nd.get("acc_bias") is not None:
                e = entries[nd["acc_bias"]]
                same(f"tensor {nd['acc_bias']}", "bits", e.get("bits"), graph.info(node.output).sum_fmt.bits)
        if node.requant is not None:
            rq, rd = node.requant, nd["requant"]
            out_exp = _exp_of(graph.scales.get(node.output))
            for key, exp, bits in (("mult", rq.shift, rq.mult_bits),
                                   ("bias", None if out_exp is None else rq.shift + out_exp, rq.bias_bits)):
                e = entries[rd[key]]
                same(f"tensor {rd[key]}", "exp", e.get("exp"), exp)
                same(f"tensor {rd[key]}", "signed", e.get("signed"), True)
                same(f"tensor {rd[key]} hex", "layout", e["hex"].get("layout"), "column")
                same(f"tensor {rd[key]} hex", "word_bits", e["hex"].get("word_bits"), bits)
    x = entries.get("test.inputs")
    if x is not None:
        same("input", "shape", m["input"]["shape"], list(x["shape"][1:]))
        f = graph.input.fmt
        same("tensor test.inputs", "bits", x.get("bits"), f.bits)
        same("tensor test.inputs", "signed", x.get("signed"), f.signed)
        if x.get("format") is not None or f.narrow or f.kind == "bipolar":
            same("tensor test.inputs", "format", x.get("format"), f.to_dict())


class _Recorder:
    """A tensor writer that writes nothing: :func:`check_derived` replays :func:`graph_manifest`
    with it to get the fields the graph implies."""

    def add(self, name, *_, **__) -> str:
        return name
