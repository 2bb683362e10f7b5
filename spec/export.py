"""The export format of an integer network: writing, reading and validating it (numpy, no torch).

An export is a folder (docs/export.md):

* ``manifest.json``: schema name and version, the network graph (the input quantizer, nodes in
  topological order with their operator, input and output tensors, shapes, formats, weights,
  requantizers; every activation's shape, format, scale and live range; the output's float scale
  and offset; :mod:`l1bn.spec.export_graph`) and, per tensor, its file, dtype, shape, bit width,
  format, scale exponent and sha256 (of the ``.npy`` and of its ``.hex``);
* one ``.npy`` per tensor (integer weights, requantizer multipliers and biases, the quantized test
  images, their labels and the source model's logits on them);
* one ``$readmemh`` ``.hex`` per hardware tensor, laid out as the hardware memories read it, its
  words packed by the word codec (:mod:`l1bn.spec.words`).

This module is the only reader of ``manifest.json`` (:func:`read_manifest`, used by
:func:`load_export`). :func:`load_export` refuses anything inconsistent with an
:class:`ExportError` (a ``ValueError``) naming the tensor and the problem, and returns an
:class:`ExportedNet` whose network (:class:`~l1bn.spec.reference.graph.IntGraph`; ``.net`` the
chain :class:`~l1bn.spec.reference.network.IntNet` when the graph is one) and tensors are numpy
arrays. :func:`write_export` writes into a temporary folder beside the target and renames it
into place, so a half-written export never exists under the target name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import check_int
from .export_graph import ExportError, check_derived, graph_from_manifest, graph_manifest
from .outdir import check_output_dir, staged_dir
from .reference.core import as_int64, int_range, plain
from .reference.formats import Fmt, check_values, from_codes
from .reference.graph import IntGraph, chain_from_graph, graph_from_chain
from .reference.network import IntNet
from .words import hex_lines, hex_text, pack, parse_hex, unpack

__all__ = ["SCHEMA", "SCHEMA_VERSION", "MANIFEST", "DEFAULT_HEX_ROWS", "ExportError", "ExportedNet",
           "manifest_digest", "read_manifest", "write_export", "load_export", "encode_hex_weights",
           "decode_hex_weights", "encode_hex_column", "decode_hex_column", "weight_tile_fields"]

SCHEMA = "l1bn.export"
SCHEMA_VERSION = 3   # 2: manifest_sha256 covers the whole manifest; 3: the network is a graph of nodes
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


#: what the accelerator runs today (hw/accel_layers.py), for the refusal of anything else
ACCELERATOR_TODAY = ("a chain of conv2d/linear layers with power-of-two scales and unsigned or signed "
                     "half-up requantizers")


@dataclass(frozen=True)
class ExportedNet:
    """A loaded, validated export.

    ``graph``: the integer network (:class:`~l1bn.spec.reference.graph.IntGraph`; weights and
    requantizer constants int64 numpy arrays); ``tensors``: name -> numpy array (int64 for integer
    tensors, float32 otherwise); ``net``: the same network as a chain
    :class:`~l1bn.spec.reference.network.IntNet` (what today's accelerator runs), or an
    :class:`ExportError` naming the first node that makes it not a chain.
    """

    path: Path
    manifest: dict
    graph: IntGraph
    tensors: dict = field(repr=False)

    @property
    def net(self) -> IntNet:
        cached = self.__dict__.get("_chain")
        if cached is None:
            try:
                cached = chain_from_graph(self.graph)
            except ValueError as e:
                raise ExportError(f"{e}: not supported by the accelerator yet ({ACCELERATOR_TODAY})") from None
            object.__setattr__(self, "_chain", cached)
        return cached

    @property
    def is_chain(self) -> bool:
        try:
            return isinstance(self.net, IntNet)
        except ExportError:
            return False

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

    def add(self, name: str, t, *, bits: int | None, signed: bool = True, exp: int | None = None,
            fmt: Fmt | None = None, scale: list | None = None, hex_fields: tuple | None = None,
            hex_info: dict | None = None, role: str = "") -> str:
        """Write tensor ``name``: float32 when ``bits`` is None, else integers checked against
        ``bits``/``signed`` (or ``fmt``: bipolar, narrow); ``hex_fields = (fields, field_bits)``
        also writes its ``.hex`` (the fields packed by :func:`l1bn.spec.words.pack`)."""
        if name in self.tensors:
            raise ValueError(f"tensor {name!r} written twice")
        if bits is None:
            arr = np.asarray(plain(t), dtype=np.float32)
        else:
            ti = as_int64(t, name)
            lo, hi = int_range(bits, signed)
            if fmt is not None:
                check_values(ti, fmt, f"tensor {name}")
            elif ti.size and (int(ti.min()) < lo or int(ti.max()) > hi):
                raise ValueError(f"tensor {name}: values {int(ti.min())}..{int(ti.max())} exceed "
                                 f"{bits}-bit {'signed' if signed else 'unsigned'} range {lo}..{hi}")
            arr = ti.astype(_int_dtype(bits, signed))
        fname = f"{name}.npy"
        np.save(self.root / fname, arr, allow_pickle=False)   # memory order kept (a transposed weight: fortran_order)
        entry = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "bits": bits,
                 "signed": signed if bits is not None else None, "exp": exp, "role": role,
                 "sha256": _sha256(self.root / fname)}
        if fmt is not None:
            entry["format"] = fmt.to_dict()
        if scale is not None:
            entry["scale"] = scale
        if hex_fields is not None:
            fields, fbits = hex_fields
            fa = as_int64(fields)
            words = pack(fa, fbits)
            word_bits = fbits * (fa.shape[1] if fa.ndim == 2 else 1)
            hname = f"{name}.hex"
            (self.root / hname).write_text(hex_text(words, word_bits))
            entry["hex"] = {"file": hname, "sha256": _sha256(self.root / hname), "words": len(words),
                            **(hex_info or {})}
        self.tensors[name] = entry
        return name


def write_export(net: IntNet | IntGraph, out_dir, *, source: dict | None = None, extra: dict | None = None,
                 rows: int = DEFAULT_HEX_ROWS, force: bool = False, command: str = "export") -> Path:
    """Write ``net`` (and ``extra`` tensors: name -> (array, bits or a Fmt or None, signed, role)) as an export.

    ``net`` is an :class:`~l1bn.spec.reference.graph.IntGraph` or a chain
    :class:`~l1bn.spec.reference.network.IntNet` (written as its graph,
    :func:`~l1bn.spec.reference.graph.graph_from_chain`). Writes into a temporary folder beside
    ``out_dir`` and moves it into place in one step (:func:`l1bn.spec.outdir.staged_dir`): an
    interrupted export leaves the old folder or none. An existing ``out_dir`` is replaced only with
    ``force`` (or when it is empty), and only when it is an export folder
    (:mod:`l1bn.spec.outdir`: the marker ``command`` writes). Arrays may be numpy arrays or torch CPU tensors (read through
    ``__array__``).
    """
    check_int("rows", rows, 1, 64)
    graph = net if isinstance(net, IntGraph) else graph_from_chain(net)
    out = check_output_dir(out_dir, command=command, force=force)
    with staged_dir(out, command=command) as tmp:
        w = _Writer(tmp)
        body = graph_manifest(graph, w, rows)
        for name, (t, bits, signed, role) in (extra or {}).items():
            if isinstance(bits, Fmt):
                w.add(name, t, bits=bits.bits, signed=bits.signed, fmt=bits, role=role)
            else:
                w.add(name, t, bits=bits, signed=signed, role=role)
        manifest = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "source": source or {},
                    "hex_rows": rows, **body, "tensors": w.tensors}
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
    if not isinstance(d, dict):
        raise ExportError(f"{what}: not an object")
    if key not in d:
        raise ExportError(f"{what}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise ExportError(f"{what}: field {key!r}={v!r} has the wrong type")
    return v


def _entry_fmt(entry: dict, what: str) -> Fmt | None:
    f = entry.get("format")
    if f is None:
        return None
    try:
        fmt = Fmt.from_dict(f)
    except (ValueError, TypeError) as e:
        raise ExportError(f"{what}: format {f!r}: {e}") from None
    if fmt.bits != entry.get("bits") or fmt.signed != entry.get("signed"):
        raise ExportError(f"{what}: format {f} disagrees with bits={entry.get('bits')}, signed={entry.get('signed')}")
    return fmt


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
    fmt = _entry_fmt(entry, what)
    if fmt is None or fmt.kind != "bipolar":   # bipolar: -1 and +1 in one bit, checked below
        lo, hi = int_range(int(bits), bool(entry.get("signed")))
        if t.size and (int(t.min()) < lo or int(t.max()) > hi):
            raise ExportError(f"{what}: values {int(t.min())}..{int(t.max())} are outside the declared "
                              f"{bits}-bit {'signed' if entry.get('signed') else 'unsigned'} range {lo}..{hi}")
    if fmt is not None:
        try:
            check_values(t, fmt, what)
        except ValueError as e:
            raise ExportError(str(e)) from None
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
                if fmt is not None:
                    back = from_codes(back, fmt)
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


def load_export(export_dir) -> ExportedNet:
    """Load and validate an export folder; raise :class:`ExportError` naming any problem.

    The structure is checked first (so that a damaged export is named precisely), the manifest
    checksum last; any other failure while reading a damaged manifest is an ``ExportError`` too.
    """
    try:
        return _load_export(export_dir)
    except ExportError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, RuntimeError, OverflowError,
            AttributeError) as e:
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
    rows = _need(m, "hex_rows", "manifest", int)

    def tensor_for(name, what: str, *, bits=None, role=None):
        if not isinstance(name, str) or name not in entries:
            raise ExportError(f"{what}: tensor {name!r} is not declared in the manifest")
        e = entries[name]
        if bits is not None and e.get("bits") != bits:
            raise ExportError(f"tensor {name}: bits={e.get('bits')} but {what} declares {bits}")
        if role is not None and e.get("role") != role:
            raise ExportError(f"tensor {name}: role={e.get('role')!r} but {what} uses it as {role!r}")
        if role is not None and e.get("hex") is None:
            raise ExportError(f"tensor {name}: the .hex memory image is missing from the manifest")
        return tensors[name]

    graph = graph_from_manifest(m, tensor_for, entries)
    check_derived(m, entries, graph, rows)
    want = m.get(_DIGEST)
    if not isinstance(want, str):
        raise ExportError(f"{mpath}: {_DIGEST} is missing (not written by this l1bn); re-export the run")
    if manifest_digest(m) != want:
        raise ExportError(f"{mpath}: the manifest does not match its {_DIGEST} (edited or corrupted); "
                          "re-export the run")
    return ExportedNet(path=root, manifest=m, graph=graph, tensors=tensors)
