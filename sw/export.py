"""Export a trained run to integers for the hardware, and load (and validate) an export.

An export is a folder (docs/export.md):

* ``manifest.json``: schema name and version, the network graph (ordered layers with type, shapes,
  stride, padding, relu, operand widths and scale exponents, the folded-BN shift) and, per tensor,
  its file, dtype, shape, bit width, signedness, scale exponent and sha256 (of the ``.npy`` and of
  its ``.hex``);
* one ``.npy`` per tensor (integer weights, folded-BN multipliers and biases, the quantized test
  images, their labels and the QAT model's logits on them);
* one ``$readmemh`` ``.hex`` per hardware tensor, laid out as the hardware memories read it.

:func:`load_export` refuses anything inconsistent with an :class:`ExportError` (a ``ValueError``)
naming the tensor and the problem. :func:`write_export` writes into a temporary folder beside the
target and renames it into place, so a half-written export never exists under the target name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from l1bn.spec.reference.core import int_range
from l1bn.spec.reference.infer_bn import FoldedBN

from .netrun import LAYER_TYPES, IntLayer, IntNet

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ExportError", "manifest_digest", "ExportedNet", "write_export", "load_export",
           "export_run", "net_from_spec", "encode_hex_weights", "decode_hex_weights",
           "encode_hex_column", "decode_hex_column", "DEFAULT_HEX_ROWS"]

SCHEMA = "l1bn.export"
SCHEMA_VERSION = 2   # 2: manifest_sha256 covers the whole manifest
DEFAULT_HEX_ROWS = 4  # MACConfig's default array height
_MANIFEST = "manifest.json"
_DIGEST = "manifest_sha256"


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without ``manifest_sha256``.

    The manifest holds every tensor's sha256, so this one digest covers the whole export: each
    number that decides the arithmetic (shapes, bit widths, exponents, shifts, which tensor a layer
    uses) and, through the tensor checksums, every stored value.
    """
    body = {k: v for k, v in manifest.items() if k != _DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ExportError(ValueError):
    """An export is missing, tampered with or inconsistent (printed as one ``error:`` line)."""


@dataclass(frozen=True)
class ExportedNet:
    """A loaded, validated export."""

    path: Path
    manifest: dict
    net: IntNet
    tensors: dict = field(repr=False)  # name -> torch.Tensor (int64 for integers, float32 otherwise)

    @property
    def test_inputs(self) -> torch.Tensor | None:
        return self.tensors.get("test.inputs")

    @property
    def test_labels(self) -> torch.Tensor | None:
        return self.tensors.get("test.labels")

    @property
    def qat_logits(self) -> torch.Tensor | None:
        return self.tensors.get("test.qat_logits")


# ----------------------------------------------------------------------------------------- hex

def _hex_digits(bits: int) -> int:
    return max(1, (bits + 3) // 4)


def encode_hex_weights(w: torch.Tensor, bits: int, rows: int) -> list[str]:
    """Weights (O, ...) -> ``$readmemh`` lines for a MAC array ``rows`` high.

    The weight matrix is ``W = w.reshape(O, K)`` (K in (c, ky, kx) order for convolutions). Word
    ``t*K + k`` holds ``W[t*rows + r, k]`` for ``r = 0..rows-1``, field ``r`` in bits
    ``[r*bits, (r+1)*bits)`` (LSB first), ``bits``-bit two's complement; rows past O are 0.
    One word = the weights of one reduction step for one tile of ``rows`` output channels.
    """
    w = torch.as_tensor(w)   # the reference may hand numpy arrays
    o = w.shape[0]
    wm = w.reshape(o, -1).to(torch.int64)
    k = wm.shape[1]
    tiles = -(-o // rows)
    padded = torch.zeros(tiles * rows, k, dtype=torch.int64)
    padded[:o] = wm
    fields = (padded & ((1 << bits) - 1)).reshape(tiles, rows, k).permute(0, 2, 1).reshape(-1, rows).tolist()
    digits = _hex_digits(rows * bits)
    lines = []
    for row in fields:  # export time only: a few thousand words
        word = 0
        for r, f in enumerate(row):
            word |= f << (r * bits)
        lines.append(f"{word:0{digits}x}")
    return lines


def decode_hex_weights(lines: list[str], shape: tuple, bits: int, rows: int) -> torch.Tensor:
    """Inverse of :func:`encode_hex_weights` (raises ``ValueError`` on a malformed file)."""
    o = shape[0]
    k = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    tiles = -(-o // rows)
    if len(lines) != tiles * k:
        raise ValueError(f"has {len(lines)} words; expected {tiles * k} ({tiles} tiles x K={k})")
    words = [int(s, 16) for s in lines]
    mask = (1 << bits) - 1
    fields = torch.tensor([[(wd >> (r * bits)) & mask for r in range(rows)] for wd in words],
                          dtype=torch.int64)
    if any(wd >> (rows * bits) for wd in words):
        raise ValueError(f"a word is wider than rows*bits = {rows * bits} bits")
    signed = torch.where(fields >= (1 << (bits - 1)), fields - (1 << bits), fields)
    wm = signed.reshape(tiles, k, rows).permute(0, 2, 1).reshape(tiles * rows, k)
    if bool((wm[o:] != 0).any()):
        raise ValueError("padding rows are not zero")
    return wm[:o].reshape(shape)


def encode_hex_column(v: torch.Tensor, bits: int) -> list[str]:
    """One value per line, ``bits``-bit two's complement (per-channel constants: mult, bias)."""
    digits = _hex_digits(bits)
    v = torch.as_tensor(v)   # the reference may hand numpy arrays
    return [f"{x & ((1 << bits) - 1):0{digits}x}" for x in v.flatten().to(torch.int64).tolist()]


def decode_hex_column(lines: list[str], bits: int) -> torch.Tensor:
    vals = [int(s, 16) for s in lines]
    if any(x >> bits for x in vals):
        raise ValueError(f"a word is wider than {bits} bits")
    t = torch.tensor(vals, dtype=torch.int64)
    return torch.where(t >= (1 << (bits - 1)), t - (1 << bits), t)


# ------------------------------------------------------------------------------------- writing

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _int_dtype(bits: int, signed: bool) -> str:
    """Smallest numpy integer type holding ``bits``-bit values."""
    for b in (8, 16, 32, 64):
        if bits <= b:
            return f"{'int' if signed else 'uint'}{b}"
    raise ValueError(f"{bits}-bit values do not fit 64 bits")


class _Writer:
    def __init__(self, root: Path):
        self.root = root
        self.tensors: dict[str, dict] = {}

    def add(self, name: str, t: torch.Tensor, *, bits: int | None, signed: bool = True,
            exp: int | None = None, hex_lines: list[str] | None = None, hex_info: dict | None = None,
            role: str = "") -> str:
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} written twice")
        t = torch.as_tensor(t)   # the reference may hand numpy arrays
        if bits is None:
            arr = t.detach().to(torch.float32).numpy()
        else:
            lo, hi = int_range(bits, signed)
            if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
                raise ValueError(f"tensor {name}: values {int(t.min())}..{int(t.max())} exceed "
                                 f"{bits}-bit {'signed' if signed else 'unsigned'} range {lo}..{hi}")
            arr = t.detach().to(torch.int64).numpy().astype(_int_dtype(bits, signed))
        fname = f"{name}.npy"
        np.save(self.root / fname, arr, allow_pickle=False)
        entry = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "bits": bits,
                 "signed": signed if bits is not None else None, "exp": exp, "role": role,
                 "sha256": _sha256(self.root / fname)}
        if hex_lines is not None:
            hname = f"{name}.hex"
            (self.root / hname).write_text("\n".join(hex_lines) + "\n")
            entry["hex"] = {"file": hname, "sha256": _sha256(self.root / hname), "words": len(hex_lines),
                            **(hex_info or {})}
        self.tensors[name] = entry
        return name


def _layer_manifest(layer: IntLayer, w: _Writer, rows: int) -> dict:
    wname = w.add(f"{layer.name}.weight", layer.weight, bits=layer.w_bits, signed=True, exp=layer.w_exp,
                  role="weight", hex_lines=encode_hex_weights(layer.weight, layer.w_bits, rows),
                  hex_info={"layout": "weight_tiles", "rows": rows, "word_bits": rows * layer.w_bits,
                            "field_bits": layer.w_bits})
    d = {"name": layer.name, "type": layer.type, "in_shape": list(layer.in_shape),
         "out_shape": list(layer.out_shape), "stride": layer.stride, "padding": layer.padding,
         "relu": layer.relu, "k": layer.k, "w_bits": layer.w_bits, "w_exp": layer.w_exp,
         "a_bits": layer.a_bits, "a_exp": layer.a_exp, "a_signed": layer.a_signed,
         "acc_bits": layer.acc_bits, "acc_exp": layer.w_exp + layer.a_exp, "out_exp": layer.out_exp,
         "weight": wname, "bn": None}
    if layer.type == "conv2d":
        d["kernel"] = list(layer.weight.shape[2:])
    if layer.bn is not None:
        bn = layer.bn
        mname = w.add(f"{layer.name}.mult", bn.mult, bits=bn.mult_bits, signed=True,
                      exp=bn.shift, role="bn_mult", hex_lines=encode_hex_column(bn.mult, bn.mult_bits),
                      hex_info={"layout": "column", "word_bits": bn.mult_bits})
        bname = w.add(f"{layer.name}.bias", bn.bias, bits=bn.bias_bits, signed=True,
                      exp=bn.shift + layer.out_exp, role="bn_bias",
                      hex_lines=encode_hex_column(bn.bias, bn.bias_bits),
                      hex_info={"layout": "column", "word_bits": bn.bias_bits})
        d["bn"] = {"mult": mname, "bias": bname, "shift": bn.shift, "mult_bits": bn.mult_bits,
                   "bias_bits": bn.bias_bits, "out_bits": bn.out_bits, "relu": bn.relu}
    return d


def write_export(net: IntNet, out_dir, *, source: dict | None = None, extra: dict | None = None,
                 rows: int = DEFAULT_HEX_ROWS, force: bool = False) -> Path:
    """Write ``net`` (and ``extra`` tensors: name -> (tensor, bits or None, signed)) as an export.

    Writes into a temporary folder beside ``out_dir`` and moves it into place in one step
    (:func:`l1bn.sw.outdir.staged_dir`): an interrupted export leaves the old folder or none. An
    existing ``out_dir`` is replaced only with ``force`` (or when it is empty).
    """
    from l1bn.spec.config import check_int

    from .outdir import check_output_dir, staged_dir

    check_int("rows", rows, 1, 64)
    out = check_output_dir(out_dir, force=force)
    with staged_dir(out) as tmp:
        w = _Writer(tmp)
        layers = [_layer_manifest(layer, w, rows) for layer in net.layers]
        for name, (t, bits, signed, role) in (extra or {}).items():
            w.add(name, t, bits=bits, signed=signed, role=role)
        manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source": source or {},
                    "input": {"shape": list(net.in_shape), "bits": net.in_bits, "exp": net.in_exp,
                              "signed": net.in_signed,
                              "quantizer": "clamp(floor(x * 2**exp + 1/2), lo, hi)"},
                    "output": {"shape": list(net.out_shape), "kind": "accumulator",
                               "exp": net.layers[-1].out_exp},
                    "hex_rows": rows, "layers": layers, "tensors": w.tensors}
        manifest[_DIGEST] = manifest_digest(manifest)
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")   # last: marks it complete
    return out


# ------------------------------------------------------------------------------------- loading

def _need(d: dict, key: str, what: str, types):
    if key not in d:
        raise ExportError(f"{what}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise ExportError(f"{what}: field {key!r}={v!r} has the wrong type")
    return v


def _load_tensor(root: Path, name: str, entry: dict) -> torch.Tensor:
    what = f"tensor {name}"
    fname = _need(entry, "file", what, str)
    path = root / fname
    if Path(fname).name != fname:
        raise ExportError(f"{what}: file name {fname!r} must be a plain name inside the export")
    if not path.is_file():
        raise ExportError(f"{what}: file {fname} is missing")
    digest = _sha256(path)
    if digest != _need(entry, "sha256", what, str):
        raise ExportError(f"{what}: sha256 of {fname} is {digest[:12]}..., manifest says "
                          f"{entry['sha256'][:12]}... (file corrupted or modified)")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # a matching sha256 over a bad file means the manifest was rewritten too
        raise ExportError(f"{what}: {fname} is not a valid .npy file ({e})") from None
    if str(arr.dtype) != _need(entry, "dtype", what, str):
        raise ExportError(f"{what}: dtype {arr.dtype} != declared {entry['dtype']}")
    if list(arr.shape) != _need(entry, "shape", what, list):
        raise ExportError(f"{what}: shape {list(arr.shape)} != declared {entry['shape']}")
    bits = entry.get("bits")
    if bits is None:
        return torch.from_numpy(arr.astype(np.float32))
    if not np.issubdtype(arr.dtype, np.integer):
        raise ExportError(f"{what}: dtype {arr.dtype} is not an integer type but bits={bits}")
    t = torch.from_numpy(arr.astype(np.int64))
    lo, hi = int_range(int(bits), bool(entry.get("signed")))
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ExportError(f"{what}: values {int(t.min())}..{int(t.max())} are outside the declared "
                          f"{bits}-bit {'signed' if entry.get('signed') else 'unsigned'} range {lo}..{hi}")
    hexd = entry.get("hex")
    if hexd is not None:
        hname = _need(hexd, "file", f"{what} hex", str)
        hpath = root / hname
        if Path(hname).name != hname or not hpath.is_file():
            raise ExportError(f"{what}: hex file {hname} is missing")
        if _sha256(hpath) != _need(hexd, "sha256", f"{what} hex", str):
            raise ExportError(f"{what}: sha256 of {hname} does not match the manifest (file corrupted or modified)")
        lines = [s.strip() for s in hpath.read_text().splitlines() if s.strip()]
        try:
            if hexd.get("layout") == "weight_tiles":
                back = decode_hex_weights(lines, tuple(arr.shape), int(hexd["field_bits"]), int(hexd["rows"]))
            elif hexd.get("layout") == "column":
                if len(lines) != t.numel():
                    raise ValueError(f"has {len(lines)} words; the tensor has {t.numel()} values")
                back = decode_hex_column(lines, int(hexd["word_bits"])).reshape(t.shape)
            else:
                raise ValueError(f"unknown layout {hexd.get('layout')!r}")
        except (ValueError, KeyError, RuntimeError) as e:
            raise ExportError(f"{what}: hex file {hname} is malformed: {e}") from None
        if not torch.equal(back, t):
            raise ExportError(f"{what}: hex file {hname} does not hold the same values as {fname}")
    return t


def _tensor_for(tensors: dict, entries: dict, name, what: str, *, shape=None, bits=None, role=None):
    if not isinstance(name, str) or name not in entries:
        raise ExportError(f"{what}: tensor {name!r} is not declared in the manifest")
    t = tensors[name]
    e = entries[name]
    if shape is not None and list(t.shape) != list(shape):
        raise ExportError(f"tensor {name}: shape {list(t.shape)} does not match layer {what} (expected {list(shape)})")
    if bits is not None and e.get("bits") != bits:
        raise ExportError(f"tensor {name}: bits={e.get('bits')} but layer {what} declares {bits}")
    if role is not None and e.get("hex") is None:
        raise ExportError(f"tensor {name}: the .hex memory image is missing from the manifest")
    return t


def load_export(export_dir) -> ExportedNet:
    """Load and validate an export folder; raise :class:`ExportError` naming any problem.

    The structure is checked first (so that a damaged export is named precisely), the manifest
    checksum last; any other failure while reading a damaged manifest is an ``ExportError`` too.
    """
    try:
        return _load_export(export_dir)
    except ExportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, RuntimeError, OverflowError) as e:
        raise ExportError(f"{export_dir}: inconsistent manifest ({type(e).__name__}: {e})") from None


def _load_export(export_dir) -> ExportedNet:
    root = Path(export_dir)
    mpath = root / _MANIFEST
    if not root.is_dir():
        raise ExportError(f"{root}: no such export folder")
    if not mpath.is_file():
        raise ExportError(f"{root}: {_MANIFEST} is missing (not an l1bn export)")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise ExportError(f"{mpath}: schema is {m.get('schema') if isinstance(m, dict) else None!r}, expected {SCHEMA!r}")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ExportError(f"{mpath}: schema_version {m.get('schema_version')!r} is not supported "
                          f"(this l1bn reads version {SCHEMA_VERSION}); re-export the run")
    entries = _need(m, "tensors", "manifest", dict)
    tensors = {name: _load_tensor(root, name, e) for name, e in entries.items()}
    inp = _need(m, "input", "manifest", dict)
    in_shape = tuple(_need(inp, "shape", "input", list))
    in_bits = _need(inp, "bits", "input", int)
    in_signed = _need(inp, "signed", "input", bool)
    shape, bits, signed, exp = in_shape, in_bits, in_signed, _need(inp, "exp", "input", int)
    layers = []
    lds = _need(m, "layers", "manifest", list)
    if not lds:
        raise ExportError("manifest: the network has no layers")
    for i, ld in enumerate(lds):
        what = f"layer {i}"
        if not isinstance(ld, dict):
            raise ExportError(f"{what}: not an object")
        name = _need(ld, "name", what, str)
        what = f"{name}"
        typ = _need(ld, "type", what, str)
        if typ not in LAYER_TYPES:
            raise ExportError(f"layer {name}: type {typ!r} is not one of {LAYER_TYPES}")
        if tuple(_need(ld, "in_shape", what, list)) != tuple(shape):
            raise ExportError(f"layer {name}: in_shape {ld['in_shape']} does not follow the previous output {list(shape)}")
        if _need(ld, "a_bits", what, int) != bits or _need(ld, "a_signed", what, bool) != signed \
                or _need(ld, "a_exp", what, int) != exp:
            raise ExportError(f"layer {name}: input activation format (a_bits={ld['a_bits']}, a_exp={ld['a_exp']}, "
                              f"a_signed={ld['a_signed']}) does not match the previous output "
                              f"({bits} bits, exp {exp}, signed={signed})")
        out_shape = tuple(_need(ld, "out_shape", what, list))
        w_bits = _need(ld, "w_bits", what, int)
        weight = _tensor_for(tensors, entries, ld.get("weight"), name, bits=w_bits, role="weight")
        stride, padding = _need(ld, "stride", what, int), _need(ld, "padding", what, int)
        if not (1 <= stride <= 64 and 0 <= padding <= 64):
            raise ExportError(f"layer {name}: stride={stride} (allowed 1..64) or padding={padding} "
                              "(allowed 0..64) out of range")
        if typ == "conv2d":
            if weight.dim() != 4 or weight.shape[1] != shape[0] or len(shape) != 3:
                raise ExportError(f"tensor {ld['weight']}: shape {list(weight.shape)} does not fit conv2d "
                                  f"layer {name} with input {list(shape)}")
            kh, kw = weight.shape[2:]
            expect = (weight.shape[0], (shape[1] + 2 * padding - kh) // stride + 1,
                      (shape[2] + 2 * padding - kw) // stride + 1)
        else:
            k = int(np.prod(shape))
            if weight.dim() != 2 or weight.shape[1] != k:
                raise ExportError(f"tensor {ld['weight']}: shape {list(weight.shape)} does not fit linear "
                                  f"layer {name} with {k} inputs")
            expect = (weight.shape[0],)
        if out_shape != tuple(expect):
            raise ExportError(f"layer {name}: out_shape {list(out_shape)} != {list(expect)} implied by "
                              f"weight shape, stride and padding")
        bnd = ld.get("bn")
        bn = None
        out_exp = ld.get("out_exp")
        if bnd is not None:
            if not isinstance(bnd, dict):
                raise ExportError(f"layer {name}: bn must be an object or null")
            mb, bb = _need(bnd, "mult_bits", what, int), _need(bnd, "bias_bits", what, int)
            mult = _tensor_for(tensors, entries, bnd.get("mult"), name, shape=[out_shape[0]], bits=mb, role="bn")
            bias = _tensor_for(tensors, entries, bnd.get("bias"), name, shape=[out_shape[0]], bits=bb, role="bn")
            shift, ob = _need(bnd, "shift", what, int), _need(bnd, "out_bits", what, int)
            if not (0 <= shift <= 62 and 1 <= ob <= 32):
                raise ExportError(f"layer {name}: bn shift={shift} (allowed 0..62) or out_bits={ob} "
                                  f"(allowed 1..32) out of range")
            bn = FoldedBN(mult=mult, bias=bias, shift=shift, mult_bits=mb,
                          bias_bits=bb, out_bits=ob,
                          relu=_need(bnd, "relu", what, bool))
            if bn.relu != _need(ld, "relu", what, bool):
                raise ExportError(f"layer {name}: relu={ld['relu']} disagrees with bn.relu={bn.relu}")
            bits, signed = bn.out_bits, not bn.relu
            if not isinstance(out_exp, int):
                raise ExportError(f"layer {name}: out_exp must be an integer")
        else:
            if i != len(lds) - 1:
                raise ExportError(f"layer {name}: only the last layer may output raw accumulators (bn=null)")
        layer = IntLayer(name=name, type=typ, in_shape=tuple(shape), out_shape=out_shape, weight=weight,
                         w_bits=w_bits, w_exp=_need(ld, "w_exp", what, int), a_bits=ld["a_bits"],
                         a_exp=ld["a_exp"], a_signed=ld["a_signed"], stride=stride, padding=padding,
                         bn=bn, out_exp=out_exp)
        try:
            layer.mac_config()
        except ValueError as e:
            raise ExportError(f"layer {name}: {e}") from None
        layers.append(layer)
        shape, exp = out_shape, out_exp
    net = IntNet(in_shape=in_shape, in_bits=in_bits, in_exp=inp["exp"], in_signed=in_signed,
                 layers=tuple(layers))
    _check_derived(m, entries, net)
    want = m.get(_DIGEST)
    if not isinstance(want, str):
        raise ExportError(f"{mpath}: {_DIGEST} is missing (not written by this l1bn); re-export the run")
    if manifest_digest(m) != want:
        raise ExportError(f"{mpath}: the manifest does not match its {_DIGEST} (edited or corrupted); "
                          "re-export the run")
    return ExportedNet(path=root, manifest=m, net=net, tensors=tensors)


def _check_derived(m: dict, entries: dict, net: IntNet) -> None:
    """Every manifest number that restates another (or follows from the tensors) must agree."""
    def same(what, field_, got, want):
        if got != want:
            raise ExportError(f"{what}: {field_}={got!r} disagrees with {want!r} implied by the tensors "
                              "and the other fields")

    rows = m.get("hex_rows")
    for ld, layer in zip(m["layers"], net.layers, strict=True):
        what = f"layer {layer.name}"
        same(what, "k", ld.get("k"), layer.k)
        same(what, "acc_bits", ld.get("acc_bits"), layer.acc_bits)
        same(what, "acc_exp", ld.get("acc_exp"), layer.w_exp + layer.a_exp)
        if layer.type == "conv2d":
            same(what, "kernel", ld.get("kernel"), list(layer.weight.shape[2:]))
        we = entries[ld["weight"]]
        same(f"tensor {ld['weight']}", "exp", we.get("exp"), layer.w_exp)
        same(f"tensor {ld['weight']}", "signed", we.get("signed"), True)
        same(f"tensor {ld['weight']}", "role", we.get("role"), "weight")
        hx = we["hex"]
        same(f"tensor {ld['weight']} hex", "rows", hx.get("rows"), rows)
        same(f"tensor {ld['weight']} hex", "field_bits", hx.get("field_bits"), layer.w_bits)
        same(f"tensor {ld['weight']} hex", "word_bits", hx.get("word_bits"), layer.w_bits * (rows or 0))
        if layer.bn is None:
            same(what, "out_exp", ld.get("out_exp"), layer.w_exp + layer.a_exp)
            continue
        bn, bd = layer.bn, ld["bn"]
        for key, role, exp, bits in (("mult", "bn_mult", bn.shift, bn.mult_bits),
                                     ("bias", "bn_bias", bn.shift + layer.out_exp, bn.bias_bits)):
            e = entries[bd[key]]
            same(f"tensor {bd[key]}", "exp", e.get("exp"), exp)
            same(f"tensor {bd[key]}", "role", e.get("role"), role)
            same(f"tensor {bd[key]}", "signed", e.get("signed"), True)
            same(f"tensor {bd[key]} hex", "word_bits", e["hex"].get("word_bits"), bits)
    last = net.layers[-1]
    out = m.get("output")
    if not isinstance(out, dict):
        raise ExportError("manifest: field 'output' is missing")
    same("output", "shape", out.get("shape"), list(last.out_shape))
    same("output", "exp", out.get("exp"), last.out_exp)
    same("output", "kind", out.get("kind"), "accumulator")
    x = entries.get("test.inputs")
    if x is not None:
        same("input", "shape", m["input"]["shape"], list(x["shape"][1:]))
        same("input", "bits", m["input"]["bits"], x.get("bits"))
        same("input", "signed", m["input"]["signed"], x.get("signed"))


# --------------------------------------------------------------------------- from a trained run

_DISP_NAMES = ("running_disp", "running_s", "running_mad", "running_abs", "running_var")


def _bn_affine_of(bn, what: str):
    """Float64 (scale, offset) of a trained BN module in eval mode (see infer_bn.bn_affine)."""
    from l1bn.spec.reference.infer_bn import bn_affine

    for name in ("inference_affine", "affine"):
        fn = getattr(bn, name, None)
        if callable(fn):
            scale, offset = fn()
            return torch.as_tensor(scale).double(), torch.as_tensor(offset).double()
    norm = getattr(bn, "norm", None)
    if norm is None:
        norm = "l1" if "l1" in type(bn).__name__.lower() else "l2"
    disp = next((getattr(bn, n) for n in _DISP_NAMES if getattr(bn, n, None) is not None), None)
    if disp is None:
        raise ValueError(f"{what}: BN module {type(bn).__name__} has no running dispersion "
                         f"(looked for {', '.join(_DISP_NAMES)})")
    c = disp.numel()
    gamma = bn.weight if getattr(bn, "weight", None) is not None else torch.ones(c)
    beta = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros(c)
    return bn_affine(norm=str(norm).lower(), mean=bn.running_mean, disp=disp, gamma=gamma, beta=beta,
                     eps=float(bn.eps))


def _int_weight(w, w_exp: int, what: str) -> torch.Tensor:
    """Fake-quantized float weights on the 2**-w_exp grid -> exact integers."""
    w = torch.as_tensor(w).detach()
    if not w.dtype.is_floating_point:
        return w.to(torch.int64)
    v = w.double() * 2.0 ** w_exp
    q = torch.floor(v + 0.5)
    if bool(((v - q).abs() > 1e-6).any()):
        raise ValueError(f"{what}: weights are not on the 2**-{w_exp} grid of their quantizer "
                         f"(max distance {float((v - q).abs().max()):.3g} LSB); export needs QAT weights")
    return q.to(torch.int64)


def net_from_spec(spec: list, *, in_shape: tuple, in_bits: int, in_exp: int, in_signed: bool = False,
                  mult_bits: int = 16) -> IntNet:
    """Build the integer network from a model's ``export_spec()`` (ordered per-layer dicts)."""
    from l1bn.spec.reference.infer_bn import fold_affine

    layers = []
    shape, a_bits, a_exp, a_signed = tuple(in_shape), in_bits, in_exp, in_signed
    for i, d in enumerate(spec):
        name = str(d.get("name", f"layer{i}"))
        typ = d.get("type", d.get("kind"))
        typ = {"conv": "conv2d", "conv2d": "conv2d", "linear": "linear", "fc": "linear"}.get(typ, typ)
        if typ not in LAYER_TYPES:
            raise ValueError(f"layer {name}: type {typ!r} cannot be exported; supported: {LAYER_TYPES}")
        w_bits, w_exp = int(d["w_bits"]), int(d["w_exp"])
        weight = _int_weight(d["weight"], w_exp, f"layer {name}")
        stride, padding = int(d.get("stride", 1)), int(d.get("padding", 0))
        if typ == "conv2d":
            o, _, kh, kw = weight.shape
            out_shape = (o, (shape[1] + 2 * padding - kh) // stride + 1, (shape[2] + 2 * padding - kw) // stride + 1)
        else:
            out_shape = (weight.shape[0],)
        if d.get("bias") is not None:
            raise ValueError(f"layer {name}: a MAC layer with its own bias is not supported (fold it into BN)")
        layer = IntLayer(name=name, type=typ, in_shape=shape, out_shape=out_shape, weight=weight,
                         w_bits=w_bits, w_exp=w_exp, a_bits=a_bits, a_exp=a_exp, a_signed=a_signed,
                         stride=stride, padding=padding, bn=None, out_exp=w_exp + a_exp)
        bnmod = d.get("bn")
        relu = bool(d.get("relu", bnmod is not None))
        if bnmod is not None or relu or d.get("out_bits") is not None:
            out_bits, out_exp = int(d["out_bits"]), int(d["out_exp"])
            if bnmod is not None:
                scale, offset = _bn_affine_of(bnmod, f"layer {name}")
            else:  # a bare requantizer: identity affine map
                scale, offset = torch.ones(out_shape[0], dtype=torch.float64), torch.zeros(out_shape[0], dtype=torch.float64)
            bn = fold_affine(scale, offset, acc_exp=w_exp + a_exp, out_exp=out_exp, acc_bits=layer.acc_bits,
                             out_bits=out_bits, relu=relu, mult_bits=mult_bits)
            layer = IntLayer(**{**layer.__dict__, "bn": bn, "out_exp": out_exp})
            a_bits, a_exp, a_signed = out_bits, out_exp, not relu
        elif i != len(spec) - 1:
            raise ValueError(f"layer {name}: only the last layer may output raw accumulators")
        layers.append(layer)
        shape = out_shape
    return IntNet(in_shape=tuple(in_shape), in_bits=in_bits, in_exp=in_exp, in_signed=in_signed,
                  layers=tuple(layers))


def export_run(run_dir, out_dir, *, rows: int = DEFAULT_HEX_ROWS, mult_bits: int = 16,
               force: bool = False) -> Path:
    """Export the trained run in ``run_dir`` (``model.pt``) to ``out_dir``; return the folder."""
    run = Path(run_dir)
    if not (run / "model.pt").is_file():
        raise FileNotFoundError(f"{run}: not a trained run (model.pt is missing); train one with `l1bn train`")
    from l1bn.spec.config import check_int

    from .outdir import check_output_dir

    check_int("rows", rows, 1, 64)
    check_int("mult_bits", mult_bits, 2, 32)
    # before any work: --force replaces the output, never the run it reads (nor a folder holding it)
    check_output_dir(out_dir, inputs=[run], force=force)
    spec, inp, x_float, labels, model, cfg = _load_trained(run)
    net = net_from_spec(spec, in_shape=inp["shape"], in_bits=inp["bits"], in_exp=inp["exp"],
                        in_signed=inp.get("signed", False), mult_bits=mult_bits)
    from .netrun import quantize_input

    x_int = quantize_input(x_float, bits=net.in_bits, exp=net.in_exp, signed=net.in_signed)
    with torch.no_grad():
        qat_logits = model(x_float).double()
    extra = {"test.inputs": (x_int, net.in_bits, net.in_signed, "test_input"),
             "test.labels": (torch.as_tensor(labels).to(torch.int64), 8, False, "test_label"),
             "test.qat_logits": (qat_logits, None, None, "qat_logits")}
    source = {"run_dir": str(run.resolve()), "config": _jsonable(cfg)}
    return write_export(net, out_dir, source=source, extra=extra, rows=rows, force=force)


def _jsonable(cfg):
    if cfg is None:
        return None
    for name in ("to_dict", "as_dict"):
        if callable(getattr(cfg, name, None)):
            return json.loads(json.dumps(getattr(cfg, name)(), default=str))
    if hasattr(cfg, "to_json"):
        return json.loads(cfg.to_json())
    try:
        import dataclasses

        return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    except TypeError:
        return json.loads(json.dumps(cfg, default=str))


def _load_trained(run: Path):
    """(export_spec, input description, float test images, labels, eval model, config) of a run.

    Uses the training package's contract: ``l1bn.sw.train.load_run(run_dir) -> (model, config)``,
    ``model.export_spec()`` (ordered per-layer dicts; an optional leading ``{"type": "input"}``
    entry or ``model.input_spec()`` describes the input quantizer) and the fixed digits split of
    ``l1bn.sw.data``.
    """
    try:
        from . import data as data_mod
        from .train import load_run
    except ModuleNotFoundError as e:
        raise ValueError(f"cannot export {run}: the training package is not available ({e.name} is missing)") from None
    model, cfg = load_run(run)
    model.eval()
    spec = list(model.export_spec())
    inp = None
    if spec and spec[0].get("type") == "input":
        inp = spec.pop(0)
    elif callable(getattr(model, "input_spec", None)):
        inp = model.input_spec()
    if inp is None:
        raise ValueError(f"{run}: the model does not describe its input quantizer (no input entry in export_spec)")
    inp = {"shape": tuple(inp.get("shape", (1, 8, 8))), "bits": int(inp["bits"]), "exp": int(inp["exp"]),
           "signed": bool(inp.get("signed", False))}
    x, y = _test_split(data_mod, cfg)
    return spec, inp, x, y, model, cfg


def _test_split(data_mod, cfg):
    """The digits test split as float images (N, 1, 8, 8) and labels, from ``l1bn.sw.data``."""
    for name in ("test_split", "load_test", "load_split", "digits_split", "load_digits_split", "get_split"):
        fn = getattr(data_mod, name, None)
        if not callable(fn):
            continue
        out = fn("test") if name in ("load_split", "get_split") else fn()
        if isinstance(out, dict):
            out = out["test"]
        if isinstance(out, (tuple, list)) and len(out) >= 2 and torch.is_tensor(out[0]):
            x, y = out[0], out[1]
        elif isinstance(out, (tuple, list)) and len(out) >= 2 and isinstance(out[1], (tuple, list)):
            x, y = out[1]  # (train, test)
        else:
            continue
        x = torch.as_tensor(x).float()
        if x.dim() == 3:
            x = x[:, None]
        return x, torch.as_tensor(y).to(torch.int64)
    raise ValueError("l1bn.sw.data offers no test split this exporter understands")
