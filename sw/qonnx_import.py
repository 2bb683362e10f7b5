"""Read a QONNX model (Brevitas, FINN, or ``l1bn export --format qonnx``) as an l1bn integer network.

``l1bn import MODEL.onnx --out EXPORT`` (docs/interop.md): :func:`load_qonnx` cleans the model with
qonnx (``cleanup_model``, shape inference), :func:`~l1bn.sw.qonnx_graph.qonnx_to_graph` walks it into
the integer graph it computes (:mod:`l1bn.sw.qonnx_graph`: binary/bipolar and n-bit operands,
per-channel and float scales folded into requantizers, pooling, residual adds, biases, input
preprocessing, a float scale/offset after the logits), and :func:`import_qonnx` writes the export
with a test split: the digits test images, resized to the model's input (:func:`digits_for_input`),
and, with ``check``, qonnx ``execute_onnx``'s logits on them (``test.qat_logits``), so that
``l1bn infer`` reports the integer reference's agreement with qonnx.

Anything outside the supported set raises :class:`QONNXImportError` (a ``ValueError``) naming the
node, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .qonnx_graph import INPUT_TYPES, SUPPORTED_OPS, qonnx_to_graph
from .qonnx_quant import BITS_RANGE, NAME_TAG, QONNXImportError

__all__ = ["QONNXImportError", "SUPPORTED_OPS", "BITS_RANGE", "INPUT_TYPES", "load_qonnx", "qonnx_to_graph",
           "qonnx_to_intnet", "execute_qonnx", "import_qonnx", "ImportResult", "digits_for_input",
           "TEST_SPLIT_NOTE"]



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
        if n.name and not (n.doc_string or "").startswith(NAME_TAG):
            n.doc_string = NAME_TAG + n.name
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


def qonnx_to_intnet(model, *, mult_bits: int = 16):
    """The chain :class:`~l1bn.spec.reference.network.IntNet` of a QONNX model that is a chain
    (``(net, info)``); a model that is not one raises :class:`QONNXImportError` naming the node."""
    from l1bn.spec.reference.graph import chain_from_graph

    w = model if hasattr(model, "graph") and hasattr(model, "get_initializer") else load_qonnx(model)
    g, info = qonnx_to_graph(w, mult_bits=mult_bits)
    try:
        net = chain_from_graph(g)
    except ValueError as e:
        raise QONNXImportError(f"{e}: not a chain network (use qonnx_to_graph)") from None
    return net, info


# ------------------------------------------------------------------------------- test split

#: how the digits test split is fitted to a model's input (manifest ``source.test_split``)
TEST_SPLIT_NOTE = ("the 360 digits test images (8x8, pixel/16 in [0, 1]) upscaled by the largest integer factor "
                   "that fits (nearest neighbour), zero-padded (centred) to the model's H x W, the gray channel "
                   "repeated for every input channel; a flat input of K = s*s values takes the s x s image "
                   "flattened; for integer inputs (no input quantizer) round(x * max) of the input type")


def digits_for_input(shape, fmt=None, *, integer: bool = False):
    """The digits test split fitted to a model input of per-image ``shape`` (:data:`TEST_SPLIT_NOTE`):
    ``(x float32 (N, *shape), labels int64)``, or None when the shape is not an image or a square
    flat vector. With ``integer``, pixels are ``round(x * fmt.hi)`` (still float32: the model's
    input dtype)."""
    from .data import fit_images, test_split

    x, y = test_split()
    x, y = x.numpy(), y.numpy().astype(np.int64)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        s = int(round(shape[0] ** 0.5))
        if s * s != shape[0] or s < 8:
            return None
        img = fit_images(x, 1, s, s).reshape(x.shape[0], shape[0])
    elif len(shape) == 3 and shape[1] >= 8 and shape[2] >= 8:
        img = fit_images(x, *shape)
    else:
        return None
    if integer:
        img = np.round(img * fmt.hi).astype(np.float32)
    return np.ascontiguousarray(img, dtype=np.float32), y


# ------------------------------------------------------------------------------------ import

@dataclass(frozen=True)
class ImportResult:
    path: Path
    graph: object
    images: int
    agreement: float | None  # qonnx execute_onnx vs the integer reference, predictions
    disagreements: int | None
    max_logit_diff: float | None  # |qonnx logits - integer logits * scale - offset|
    accuracy: float | None
    qonnx_accuracy: float | None
    qonnx_s: float | None = None     # wall time of qonnx execute_onnx on the images
    reference_s: float | None = None  # wall time of the integer reference on them

    @property
    def net(self):
        """The graph (kept under its old name)."""
        return self.graph


def import_qonnx(model_path, out_dir, *, mult_bits: int = 24, rows: int = 4, force: bool = False,
                 check: bool = True, input_type: str | None = None, test_images: int | None = None) -> ImportResult:
    """``l1bn import``: a QONNX model -> an l1bn export folder (manifest + npy + hex).

    The model must be in the supported set (:mod:`l1bn.sw.qonnx_graph`); otherwise
    :class:`QONNXImportError` names the node and nothing is written. When the model's input is an
    image (or a square flat vector), the digits test split fitted to it (:func:`digits_for_input`;
    the first ``test_images`` of the 360) goes into the export (``test.inputs`` through the model's
    own input quantizer, ``test.labels``) and, with ``check``, ``test.qat_logits`` holds qonnx
    ``execute_onnx``'s logits on it. ``input_type``: the images' integer type of a model that has
    no input quantizer (FINN DataType name, e.g. ``UINT8``). ``mult_bits``: the requantizers'
    multiplier width; 24 (not the 16 of l1bn's own exports) because a float BN or scale folded
    into 16 bits is off by up to 2**-16 relative, and over the millions of activations of a CNV
    a few land on the other side of a rounding boundary than qonnx's float32.
    """
    import time

    from l1bn.spec.config import check_int
    from l1bn.spec.export import load_export, write_export
    from l1bn.spec.reference.graph import float_logits, quantize_images, run_graph

    check_int("rows", rows, 1, 64)
    if test_images is not None:
        check_int("test_images", test_images, 1, 360)
    out = Path(out_dir)
    src = Path(model_path).resolve()
    if out.resolve() == src or out.resolve() in src.parents:  # --force would delete the model itself
        raise ValueError(f"--out {out} holds the model {model_path}; choose a folder outside it")
    from l1bn.spec.outdir import check_output_dir

    check_output_dir(out, command="import", force=force)   # the one output rule, before any work
    w = load_qonnx(model_path)
    graph, info = qonnx_to_graph(w, mult_bits=mult_bits, input_type=input_type)
    extra = {}
    images = 0
    res = dict(agreement=None, disagreements=None, max_logit_diff=None, accuracy=None, qonnx_accuracy=None)
    inp = graph.input
    fitted = digits_for_input(inp.shape, inp.fmt, integer=inp.rounding == "integer")
    if fitted is not None:
        xf, y = fitted
        if test_images is not None:
            xf, y = xf[:test_images], y[:test_images]
        xi = quantize_images(inp, xf)
        images = int(xi.shape[0])
        extra["test.inputs"] = (xi, inp.fmt, None, "test_input")
        extra["test.labels"] = (y, 8, False, "test_label")
        if check:
            per_image = int(np.prod(inp.shape))
            t0 = time.perf_counter()
            ql = execute_qonnx(w, xf, batch=None if per_image <= 4096 else 16)
            tq = time.perf_counter() - t0
            t0 = time.perf_counter()
            il = float_logits(graph, run_graph(graph, xi))
            tr = time.perf_counter() - t0
            qp, ip = ql.argmax(1), il.argmax(1)
            res = dict(agreement=float((qp == ip).mean()), disagreements=int((qp != ip).sum()),
                       max_logit_diff=float(np.abs(ql.astype(np.float64) - il).max()),
                       accuracy=float((ip == y).mean()), qonnx_accuracy=float((qp == y).mean()),
                       qonnx_s=tq, reference_s=tr)
            extra["test.qat_logits"] = (np.asarray(ql), None, None, "qat_logits")
    source = {"qonnx": str(src), "producer": w.model.producer_name, "mult_bits": mult_bits,
              "nodes": info["nodes"], "input_rounding": inp.rounding, "input_type": input_type,
              "test_split": TEST_SPLIT_NOTE if fitted is not None else None,
              "note": "imported by l1bn import; test.qat_logits are qonnx execute_onnx's logits"}
    path = write_export(graph, out, source=source, extra=extra, rows=rows, force=force, command="import")
    e = load_export(path)  # what we wrote must load
    return ImportResult(path=path, graph=e.graph, images=images, **res)
