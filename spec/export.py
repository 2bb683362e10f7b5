"""The export format of an integer network: writing, reading and validating it (numpy, no torch).

An export is a folder (docs/export.md):

* ``manifest.json``: schema name and version, the network graph (ordered layers with type, shapes,
  stride, padding, relu, operand widths and scale exponents, the folded-BN shift) and, per tensor,
  its file, dtype, shape, bit width, signedness, scale exponent and sha256 (of the ``.npy`` and of
  its ``.hex``);
* one ``.npy`` per tensor (integer weights, folded-BN multipliers and biases, the quantized test
  images, their labels and the QAT model's logits on them);
* one ``$readmemh`` ``.hex`` per hardware tensor, laid out as the hardware memories read it, its
  words packed by the word codec (:mod:`l1bn.spec.words`).

This module is the only reader of ``manifest.json`` (:func:`read_manifest`, used by
:func:`load_export`). :func:`load_export` refuses anything inconsistent with an
:class:`ExportError` (a ``ValueError``) naming the tensor and the problem, and returns an
:class:`ExportedNet` whose network (:class:`~l1bn.spec.reference.network.IntNet`) and tensors are
numpy arrays. :func:`write_export` writes into a temporary folder beside the target and renames it
into place, so a half-written export never exists under the target name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import check_int
from .outdir import check_output_dir, staged_dir
from .reference.core import as_int64, int_range, plain
from .reference.infer_bn import FoldedBN
from .reference.network import LAYER_TYPES, IntLayer, IntNet
from .words import hex_lines, hex_text, pack, parse_hex, unpack

__all__ = ["SCHEMA", "SCHEMA_VERSION", "MANIFEST", "DEFAULT_HEX_ROWS", "ExportError", "ExportedNet",
           "manifest_digest", "read_manifest", "write_export", "load_export", "encode_hex_weights",
           "decode_hex_weights", "encode_hex_column", "decode_hex_column", "weight_tile_fields"]

SCHEMA = "l1bn.export"
SCHEMA_VERSION = 2   # 2: manifest_sha256 covers the whole manifest
DEFAULT_HEX_ROWS = 4  # MACConfig's default array height
#: the manifest's file name inside an export folder
MANIFEST = "manifest.json"
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
    """A loaded, validated export.

    ``tensors``: name -> numpy array (int64 for integer tensors, float32 otherwise); ``net``: the
    integer network, its weights and folded-BN constants int64 numpy arrays.
    """

    path: Path
    manifest: dict
    net: IntNet
    tensors: dict = field(repr=False)

    @property
    def test_inputs(self) -> np.ndarray | None:
        return self.tensors.get("test.inputs")

    @property
    def test_labels(self) -> np.ndarray | None:
        return self.tensors.get("test.labels")

    @property
    def qat_logits(self) -> np.ndarray | None:
        return self.tensors.get("test.qat_logits")


# ----------------------------------------------------------------------------------------- hex

def weight_tile_fields(w, rows: int) -> np.ndarray:
    """Weights (O, ...) -> the fields of the weight words, int64 ``(tiles * K, rows)``.

    The weight matrix is ``W = w.reshape(O, K)`` (K in (c, ky, kx) order for convolutions). Word
    ``t*K + k`` holds ``W[t*rows + r, k]`` in field ``r`` for ``r = 0..rows-1``; rows past O are 0.
    One word = the weights of one reduction step for one tile of ``rows`` output channels.
    """
    wm = as_int64(w, "w")
    o = wm.shape[0]
    wm = wm.reshape(o, -1)
    k, tiles = wm.shape[1], -(-o // rows)
    padded = np.zeros((tiles * rows, k), dtype=np.int64)
    padded[:o] = wm
    return padded.reshape(tiles, rows, k).transpose(0, 2, 1).reshape(-1, rows)


def encode_hex_weights(w, bits: int, rows: int) -> list[str]:
    """Weights (O, ...) -> ``$readmemh`` lines for a MAC array ``rows`` high.

    Word ``t*K + k`` (:func:`weight_tile_fields`) holds ``W[t*rows + r, k]`` in bits
    ``[r*bits, (r+1)*bits)`` (LSB first), ``bits``-bit two's complement.
    """
    return hex_lines(pack(weight_tile_fields(w, rows), bits), rows * bits)


def _weights_from_words(words: list[int], shape: tuple, bits: int, rows: int) -> np.ndarray:
    o = shape[0]
    k = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    tiles = -(-o // rows)
    if len(words) != tiles * k:
        raise ValueError(f"has {len(words)} words; expected {tiles * k} ({tiles} tiles x K={k})")
    fields = unpack(words, bits, rows)
    wm = fields.reshape(tiles, k, rows).transpose(0, 2, 1).reshape(tiles * rows, k)
    if bool((wm[o:] != 0).any()):
        raise ValueError("padding rows are not zero")
    return wm[:o].reshape(shape)


def decode_hex_weights(lines: list[str], shape: tuple, bits: int, rows: int) -> np.ndarray:
    """Inverse of :func:`encode_hex_weights` (raises ``ValueError`` on a malformed file)."""
    return _weights_from_words(parse_hex("\n".join(lines)), tuple(shape), bits, rows)


def encode_hex_column(v, bits: int) -> list[str]:
    """One value per line, ``bits``-bit two's complement (per-channel constants: mult, bias)."""
    return hex_lines(pack(as_int64(v, "v").reshape(-1), bits), bits)


def decode_hex_column(lines: list[str], bits: int) -> np.ndarray:
    """Inverse of :func:`encode_hex_column`: int64 (n,)."""
    return unpack(parse_hex("\n".join(lines)), bits, 1)[:, 0]


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

    def add(self, name: str, t, *, bits: int | None, signed: bool = True,
            exp: int | None = None, hex_words: list[str] | None = None, hex_info: dict | None = None,
            role: str = "") -> str:
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} written twice")
        if bits is None:
            arr = np.asarray(plain(t), dtype=np.float32)
        else:
            ti = as_int64(t, name)
            lo, hi = int_range(bits, signed)
            if ti.size and (int(ti.min()) < lo or int(ti.max()) > hi):
                raise ValueError(f"tensor {name}: values {int(ti.min())}..{int(ti.max())} exceed "
                                 f"{bits}-bit {'signed' if signed else 'unsigned'} range {lo}..{hi}")
            arr = ti.astype(_int_dtype(bits, signed))
        fname = f"{name}.npy"
        np.save(self.root / fname, arr, allow_pickle=False)   # memory order kept (a transposed weight: fortran_order)
        entry = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "bits": bits,
                 "signed": signed if bits is not None else None, "exp": exp, "role": role,
                 "sha256": _sha256(self.root / fname)}
        if hex_words is not None:
            words, word_bits = hex_words
            hname = f"{name}.hex"
            (self.root / hname).write_text(hex_text(words, word_bits))
            entry["hex"] = {"file": hname, "sha256": _sha256(self.root / hname), "words": len(words),
                            **(hex_info or {})}
        self.tensors[name] = entry
        return name


def _layer_manifest(layer: IntLayer, w: _Writer, rows: int) -> dict:
    wname = w.add(f"{layer.name}.weight", layer.weight, bits=layer.w_bits, signed=True, exp=layer.w_exp,
                  role="weight",
                  hex_words=(pack(weight_tile_fields(layer.weight, rows), layer.w_bits), rows * layer.w_bits),
                  hex_info={"layout": "weight_tiles", "rows": rows, "word_bits": rows * layer.w_bits,
                            "field_bits": layer.w_bits})
    d = {"name": layer.name, "type": layer.type, "in_shape": list(layer.in_shape),
         "out_shape": list(layer.out_shape), "stride": layer.stride, "padding": layer.padding,
         "relu": layer.relu, "k": layer.k, "w_bits": layer.w_bits, "w_exp": layer.w_exp,
         "a_bits": layer.a_bits, "a_exp": layer.a_exp, "a_signed": layer.a_signed,
         "acc_bits": layer.acc_bits, "acc_exp": layer.w_exp + layer.a_exp, "out_exp": layer.out_exp,
         "weight": wname, "bn": None}
    if layer.type == "conv2d":
        d["kernel"] = [int(s) for s in np.shape(layer.weight)[2:]]
    if layer.bn is not None:
        bn = layer.bn
        mname = w.add(f"{layer.name}.mult", bn.mult, bits=bn.mult_bits, signed=True, exp=bn.shift,
                      role="bn_mult", hex_words=(pack(as_int64(bn.mult).reshape(-1), bn.mult_bits), bn.mult_bits),
                      hex_info={"layout": "column", "word_bits": bn.mult_bits})
        bname = w.add(f"{layer.name}.bias", bn.bias, bits=bn.bias_bits, signed=True,
                      exp=bn.shift + layer.out_exp, role="bn_bias",
                      hex_words=(pack(as_int64(bn.bias).reshape(-1), bn.bias_bits), bn.bias_bits),
                      hex_info={"layout": "column", "word_bits": bn.bias_bits})
        d["bn"] = {"mult": mname, "bias": bname, "shift": bn.shift, "mult_bits": bn.mult_bits,
                   "bias_bits": bn.bias_bits, "out_bits": bn.out_bits, "relu": bn.relu}
    return d


def write_export(net: IntNet, out_dir, *, source: dict | None = None, extra: dict | None = None,
                 rows: int = DEFAULT_HEX_ROWS, force: bool = False, command: str = "export") -> Path:
    """Write ``net`` (and ``extra`` tensors: name -> (array, bits or None, signed, role)) as an export.

    Writes into a temporary folder beside ``out_dir`` and moves it into place in one step
    (:func:`l1bn.spec.outdir.staged_dir`): an interrupted export leaves the old folder or none. An
    existing ``out_dir`` is replaced only with ``force`` (or when it is empty), and only when it is
    an export folder (:mod:`l1bn.spec.outdir`: the marker ``command`` writes). Arrays may be
    numpy arrays or torch CPU tensors (read through ``__array__``).
    """
    check_int("rows", rows, 1, 64)
    out = check_output_dir(out_dir, command=command, force=force)
    with staged_dir(out, command=command) as tmp:
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
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")   # last: marks it complete
    return out


# ------------------------------------------------------------------------------------- loading

def read_manifest(export_dir) -> dict:
    """The raw manifest of an export folder (parsed JSON, not validated: :func:`load_export`
    validates). Raises :class:`ExportError` when the folder or its manifest is missing or the
    manifest is not a JSON object."""
    root = Path(export_dir)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise ExportError(f"{root}: no such export folder")
    if not mpath.is_file():
        raise ExportError(f"{root}: {MANIFEST} is missing (not an l1bn export)")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{mpath}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ExportError(f"{mpath}: not a text file ({e})") from None
    if not isinstance(m, dict):
        raise ExportError(f"{mpath}: schema is None, expected {SCHEMA!r}")
    return m


def _need(d: dict, key: str, what: str, types):
    if key not in d:
        raise ExportError(f"{what}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise ExportError(f"{what}: field {key!r}={v!r} has the wrong type")
    return v


def _load_tensor(root: Path, name: str, entry: dict) -> np.ndarray:
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
        return arr.astype(np.float32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ExportError(f"{what}: dtype {arr.dtype} is not an integer type but bits={bits}")
    t = arr.astype(np.int64)
    lo, hi = int_range(int(bits), bool(entry.get("signed")))
    if t.size and (int(t.min()) < lo or int(t.max()) > hi):
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
        try:
            words = parse_hex(hpath.read_text())
            if hexd.get("layout") == "weight_tiles":
                back = _weights_from_words(words, tuple(arr.shape), int(hexd["field_bits"]), int(hexd["rows"]))
            elif hexd.get("layout") == "column":
                if len(words) != t.size:
                    raise ValueError(f"has {len(words)} words; the tensor has {t.size} values")
                back = unpack(words, int(hexd["word_bits"]), 1).reshape(t.shape)
            else:
                raise ValueError(f"unknown layout {hexd.get('layout')!r}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ExportError(f"{what}: hex file {hname} is malformed: {e}") from None
        if not np.array_equal(back, t):
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
    mpath = root / MANIFEST
    m = read_manifest(root)
    if m.get("schema") != SCHEMA:
        raise ExportError(f"{mpath}: schema is {m.get('schema')!r}, expected {SCHEMA!r}")
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
            if weight.ndim != 4 or len(shape) != 3 or weight.shape[1] != shape[0]:
                raise ExportError(f"tensor {ld['weight']}: shape {list(weight.shape)} does not fit conv2d "
                                  f"layer {name} with input {list(shape)}")
            kh, kw = weight.shape[2:]
            expect = (weight.shape[0], (shape[1] + 2 * padding - kh) // stride + 1,
                      (shape[2] + 2 * padding - kw) // stride + 1)
        else:
            k = int(np.prod(shape))
            if weight.ndim != 2 or weight.shape[1] != k:
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
            same(what, "kernel", ld.get("kernel"), [int(s) for s in layer.weight.shape[2:]])
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
