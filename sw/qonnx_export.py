"""Write an integer network (:class:`~l1bn.spec.reference.network.IntNet`) as a QONNX model (docs/interop.md).

QONNX is the ONNX dialect of Brevitas and FINN: standard ONNX operators plus a ``Quant`` node
(``qonnx.custom_op.general``) that fake-quantizes a tensor to ``bitwidth``-bit integers on the grid
``scale``. The graph written here computes exactly what the integer reference
(:func:`l1bn.spec.reference.network.run_net`) computes, in floating point:

    image (float, pixel/16, NCHW)
    -> Quant(scale 2**-in_exp, in_bits, unsigned, HALF_UP)               the input quantizer
    per layer:
    -> Conv (or Flatten + MatMul), weights = Quant(W_int * 2**-w_exp, 2**-w_exp, w_bits, signed)
       (a linear layer's weights are written transposed, (K, O), as MatMul reads them: a bias-free
       classifier as a Gemm without its C input crashes qonnx's GemmToMatMul, the first transform
       of FINN's ConvertQONNXtoFINN)
       with BN: -> Cast(double) -> Mul(M) -> Add(B) -> Relu -> Quant(2**-out_exp, out_bits, unsigned, HALF_UP)
    -> logits = the last layer's accumulators * 2**-(w_exp + a_exp)

The folded BN (``requantize(acc * mult + bias, shift)``, docs/arith/inference_bn.md) becomes
``M = mult * 2**(acc_exp - shift - out_exp)`` and ``B = bias * 2**(-shift - out_exp)``, so that
``(acc * 2**-acc_exp * M + B) * 2**out_exp = (acc * mult + bias) / 2**shift`` and the ``Quant`` node's
``HALF_UP`` rounding is the requantizer's round half up. Why the affine part is in float64: the product
``acc * mult`` needs up to ``acc_bits + mult_bits`` (~33) bits, more than float32's 24-bit
significand, and a rounded product would move values across rounding ties; float64 holds it exactly.
Every other tensor is float32 and exact (integers times powers of two, accumulators < 2**24).

A layer whose BN has no ReLU (signed outputs) uses ``FLOOR`` with ``+1/2`` folded into ``B``: QONNX's
``HALF_UP`` rounds negative ties away from zero, the requantizer rounds them up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["QONNX_DOMAIN", "OPSET", "BN_DTYPES", "FINN_PREFIX", "intnet_to_qonnx", "write_qonnx",
           "export_run_qonnx", "finn_prefix", "compare_with_reference"]

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13
FLOAT32_EXACT_BITS = 24  # an integer of at most this many bits (sign included) is exact in float32
BN_DTYPES = ("float64", "float32")
#: the qonnx transforms FINN's ConvertQONNXtoFINN applies first, in its order (finn
#: src/finn/transformation/qonnx/convert_qonnx_to_finn.py); the rest of it is FINN's own
FINN_PREFIX = ("ExtractBiasFromConv", "GemmToMatMul", "FoldTransposeIntoQuantInit", "InferDataTypes")


def _np(t) -> np.ndarray:
    """Tensor or array-like -> numpy int64/float64 array (torch tensors or numpy arrays)."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


class _Graph:
    """Small ONNX graph builder: initializers, nodes and unique names."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name: str, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list, output: str, *, name: str, domain: str = "", **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=name, domain=domain, **attrs))
        return output

    def quant(self, x: str, out: str, *, name: str, exp: int, bits: int, signed: bool,
              rounding: str = "HALF_UP") -> str:
        """A QONNX ``Quant``: ``clamp(round(x * 2**exp)) * 2**-exp`` on ``bits`` (un)signed integers."""
        ins = [x, self.const(f"{name}.scale", 2.0 ** -exp), self.const(f"{name}.zeropt", 0.0),
               self.const(f"{name}.bitwidth", float(bits))]
        return self.node("Quant", ins, out, name=name, domain=QONNX_DOMAIN, signed=int(signed),
                         narrow=0, rounding_mode=rounding)


def intnet_to_qonnx(net, *, batch: int = 1, bn_dtype: str = "float64", producer: str = "l1bn"):
    """The QONNX ``onnx.ModelProto`` of an integer network (module docstring).

    Parameters
    ----------
    net : IntNet
        From :func:`l1bn.spec.export.load_export` (``.net``) or :func:`l1bn.sw.export.net_from_spec`.
    batch : int, 1..65536
        Fixed batch size of the graph input (FINN's convention is 1; qonnx's ``ChangeBatchSize``
        changes it).
    bn_dtype : {"float64", "float32"}
        Precision of the folded-BN ``Mul``/``Add``. ``float64`` (a ``Cast`` in front) is exact by
        construction. ``float32`` leaves out the ``Cast`` (an all-float32 graph, as FINN's
        streamlining expects) and is exact except where ``acc * mult`` rounds in float32 *and* the
        value is within that rounding of a tie (docs/interop.md has the measured count).

    Raises
    ------
    ValueError
        A layer whose accumulator is wider than float32 holds exactly (24 bits), or a layer type
        other than conv2d / linear.
    """
    from l1bn.spec.config import check_choice, check_int
    from onnx import TensorProto, helper

    check_int("batch", batch, 1, 65536)
    check_choice("bn_dtype", bn_dtype, BN_DTYPES)
    ftype = np.float64 if bn_dtype == "float64" else np.float32
    g = _Graph()
    x = g.quant("image", "x0", name="in_quant", exp=net.in_exp, bits=net.in_bits, signed=net.in_signed)
    shape = tuple(net.in_shape)
    for i, layer in enumerate(net.layers):
        nm = layer.name
        if layer.acc_bits > FLOAT32_EXACT_BITS:
            raise ValueError(f"layer {nm}: {layer.acc_bits}-bit accumulators are not exact in float32 "
                             f"(at most {FLOAT32_EXACT_BITS} bits); QONNX export needs smaller layers")
        w = _np(layer.weight).astype(np.int64)
        wt = w if layer.type == "conv2d" else w.T      # MatMul: (K, O)
        wq = g.quant(g.const(f"{nm}.weight", wt * 2.0 ** -layer.w_exp), f"{nm}.weight_q", name=f"{nm}.weight_quant",
                     exp=layer.w_exp, bits=layer.w_bits, signed=True)
        if layer.type == "conv2d":
            kh, kw = w.shape[2:]
            p, s = int(layer.padding), int(layer.stride)
            acc = g.node("Conv", [x, wq], f"{nm}.acc", name=nm, kernel_shape=[int(kh), int(kw)],
                         pads=[p, p, p, p], strides=[s, s], dilations=[1, 1], group=1)
            cshape = (-1, 1, 1)  # per-channel constants broadcast over (N, C, H, W)
        elif layer.type == "linear":
            if len(shape) != 1:
                x = g.node("Flatten", [x], f"{nm}.flat", name=f"{nm}.flatten", axis=1)
            acc = g.node("MatMul", [x, wq], f"{nm}.acc", name=nm)
            cshape = (-1,)
        else:
            raise ValueError(f"layer {nm}: type {layer.type!r} cannot be written as QONNX (conv2d, linear)")
        bn = layer.bn
        last = i == len(net.layers) - 1
        if bn is None:
            x = acc
        else:
            acc_exp = layer.w_exp + layer.a_exp
            mult, bias = _np(bn.mult).astype(np.int64), _np(bn.bias).astype(np.int64)
            m = mult.astype(np.float64) * 2.0 ** (acc_exp - bn.shift - layer.out_exp)
            b = bias.astype(np.float64) * 2.0 ** (-bn.shift - layer.out_exp)
            if not bn.relu:
                b = b + 0.5 * 2.0 ** -layer.out_exp  # FLOOR(v + 1/2) = the requantizer's half up
            if ftype is np.float32 and not (np.array_equal(m.astype(np.float32), m)
                                            and np.array_equal(b.astype(np.float32), b)):
                raise ValueError(f"layer {nm}: the folded BN constants are not exact in float32 "
                                 f"(mult_bits={bn.mult_bits}, bias_bits={bn.bias_bits}); use --bn-dtype float64")
            h = acc
            if ftype is np.float64:
                h = g.node("Cast", [acc], f"{nm}.acc64", name=f"{nm}.cast", to=TensorProto.DOUBLE)
            h = g.node("Mul", [h, g.const(f"{nm}.bn_mul", m.reshape(cshape), ftype)], f"{nm}.bn_m",
                       name=f"{nm}.bn_mul")
            h = g.node("Add", [h, g.const(f"{nm}.bn_add", b.reshape(cshape), ftype)], f"{nm}.bn",
                       name=f"{nm}.bn_add")
            if bn.relu:
                h = g.node("Relu", [h], f"{nm}.relu", name=f"{nm}.relu")
            x = g.quant(h, f"{nm}.out", name=f"{nm}.out_quant", exp=layer.out_exp, bits=bn.out_bits,
                        signed=not bn.relu, rounding="HALF_UP" if bn.relu else "FLOOR")
        if last:
            g.nodes[-1].output[0] = "logits"
            x = "logits"
        shape = tuple(layer.out_shape)
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, *net.in_shape])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, *net.out_shape])
    graph = helper.make_graph(g.nodes, "l1bn", [inp], [out], initializer=g.inits)
    model = helper.make_model(graph, producer_name=producer,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    last = net.layers[-1]
    for k, v in {"l1bn.logit_exp": str(last.w_exp + last.a_exp),
                 "l1bn.note": "logits = integer accumulators * 2**-logit_exp"}.items():
        model.metadata_props.add(key=k, value=v)
    return model


def _check_and_clean(model):
    """qonnx cleanup + shape inference on the model (raises if either fails); returns the ModelProto."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    w = cleanup_model(ModelWrapper(model))
    w = w.transform(InferShapes()).transform(InferDataTypes())
    if not w.check_all_tensor_shapes_specified():
        raise ValueError("qonnx shape inference left tensors without a shape")
    return w.model


#: metadata key of the .onnx files l1bn writes (the output rule: --force replaces only those)
OUTPUT_KEY = "l1bn.output"


def check_qonnx_output(out_path, *, inputs=(), force: bool = False) -> Path:
    """The output rule (:mod:`l1bn.spec.outdir`) for the one ``.onnx`` file: a name ending in
    ``.onnx``, never a folder, an input or a path under a file; an existing file only with
    ``force`` and only when l1bn wrote it (its metadata holds :data:`OUTPUT_KEY`), never a model of
    someone else's. Checked before any work."""
    from l1bn.spec.outdir import check_output_file, check_writable

    out = check_output_file(out_path, inputs=inputs, option="--out")
    if out.suffix != ".onnx":  # also keeps --force from overwriting a run's model.pt or an export folder
        raise ValueError(f"--out {out}: a QONNX file name must end in .onnx")
    if out.exists():
        if not force:
            raise ValueError(f"--out {out} exists; pass --force to replace it")
        if not _written_by_l1bn(out):
            raise ValueError(f"--out {out} is not a QONNX file l1bn wrote; --force replaces only those "
                             f"(choose another name)")
    check_writable(out)
    return out


def _written_by_l1bn(path: Path) -> bool:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file at all: not ours
        return False
    return any(p.key == OUTPUT_KEY for p in m.metadata_props)


def write_qonnx(net, out_path, *, batch: int = 1, bn_dtype: str = "float64", force: bool = False,
                clean: bool = True) -> Path:
    """Write ``net`` as a QONNX file: into a temporary file beside ``out_path``, renamed into place.

    With ``clean`` the written model is the one qonnx's ``cleanup_model`` and ``InferShapes`` return
    (readable tensor names, every shape annotated), so FINN can read it as is. An existing file is
    replaced only with ``force``, and only when l1bn wrote it (:func:`check_qonnx_output`).
    """
    import onnx

    out = check_qonnx_output(out_path, force=force)
    model = intnet_to_qonnx(net, batch=batch, bn_dtype=bn_dtype)
    onnx.checker.check_model(model)
    if clean:
        model = _check_and_clean(model)
    model.metadata_props.add(key=OUTPUT_KEY, value="l1bn export --format qonnx")   # marks it as ours
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export_run_qonnx(run_dir, out_path, *, mult_bits: int = 16, batch: int = 1, force: bool = False,
                     bn_dtype: str = "float64"):
    """``l1bn export RUN --format qonnx``: the trained run's integer network as QONNX.

    The integer network is built exactly as :func:`l1bn.sw.export.export_run` builds it (same folded
    BN constants), so the QONNX model computes what ``l1bn infer`` computes. Returns ``(path, net)``.
    """
    from l1bn.spec.config import check_int

    from .export import load_trained, net_from_spec

    run = Path(run_dir)
    if not (run / "model.pt").is_file():
        raise FileNotFoundError(f"{run}: not a trained run (model.pt is missing); train one with `l1bn train`")
    check_int("mult_bits", mult_bits, 2, 32)
    spec, inp, _, _, _, _ = load_trained(run)
    net = net_from_spec(spec, in_shape=inp["shape"], in_bits=inp["bits"], in_exp=inp["exp"],
                        in_signed=inp.get("signed", False), mult_bits=mult_bits)
    return write_qonnx(net, out_path, batch=batch, force=force, bn_dtype=bn_dtype), net


def finn_prefix(model):
    """Apply :data:`FINN_PREFIX` (qonnx's transforms, FINN's order) to a QONNX model (path,
    ``ModelProto`` or ``ModelWrapper``); returns the transformed ``ModelWrapper``. Raises what a
    transform raises (the bug this guards against: ``GemmToMatMul`` on a Gemm without a bias
    raised ``IndexError``)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    w = model if isinstance(model, ModelWrapper) else ModelWrapper(str(model) if isinstance(model, Path) else model)
    for t in (ExtractBiasFromConv(), GemmToMatMul(), FoldTransposeIntoQuantInit(), InferDataTypes()):
        w = w.transform(t)
    return w


def compare_with_reference(model_path, net, x, labels=None) -> dict:
    """Run the QONNX file with qonnx's ``execute_onnx`` on float images ``x`` and compare it with the
    integer reference (:func:`l1bn.spec.reference.network.run_net`, what ``l1bn infer`` runs) on the same images.

    Returns ``images``, ``agreement`` (equal predictions), ``disagreements``, ``logits_equal``
    (qonnx logits * 2**logit_exp == integer logits on every image), ``max_logit_diff`` (in
    integer logit units), ``qonnx_accuracy`` and ``accuracy`` (with ``labels``).
    """
    from l1bn.spec.reference.network import quantize_input, run_net

    from .qonnx_import import execute_qonnx

    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    q = execute_qonnx(model_path, x).astype(np.float64) * 2.0 ** net.layers[-1].out_exp
    xi = quantize_input(x, bits=net.in_bits, exp=net.in_exp, signed=net.in_signed)
    ref = np.asarray(run_net(net, xi), dtype=np.float64)
    qp, rp = q.argmax(1), ref.argmax(1)
    r = {"images": int(x.shape[0]), "agreement": float((qp == rp).mean()), "disagreements": int((qp != rp).sum()),
         "logits_equal": bool(np.array_equal(q, ref)), "max_logit_diff": float(np.abs(q - ref).max())}
    if labels is not None:
        lab = np.asarray(labels)
        r.update(qonnx_accuracy=float((qp == lab).mean()), accuracy=float((rp == lab).mean()))
    return r
