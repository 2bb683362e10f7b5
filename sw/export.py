"""Export a trained PyTorch run to integers for the hardware (the part of the export that needs torch).

:func:`export_run` loads a trained run (``model.pt``), folds its BN layers and quantizers into an
integer network (:func:`net_from_spec`), runs the QAT model on the digits test split and writes the
export with :func:`l1bn.spec.export.write_export`. The format itself (writing, reading,
validation, the ``.hex`` packing) is :mod:`l1bn.spec.export`, numpy only; its names are re-exported
here for existing callers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from l1bn.spec.export import (  # noqa: F401  (re-exported: the format lives in spec)
    DEFAULT_HEX_ROWS,
    SCHEMA,
    SCHEMA_VERSION,
    ExportedNet,
    ExportError,
    decode_hex_column,
    decode_hex_weights,
    encode_hex_column,
    encode_hex_weights,
    load_export,
    manifest_digest,
    write_export,
)
from l1bn.spec.reference.network import LAYER_TYPES, IntLayer, IntNet, quantize_input

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ExportError", "manifest_digest", "ExportedNet", "write_export", "load_export",
           "export_run", "net_from_spec", "encode_hex_weights", "decode_hex_weights",
           "encode_hex_column", "decode_hex_column", "DEFAULT_HEX_ROWS"]


# --------------------------------------------------------------------------- from a trained run

_DISP_NAMES = ("running_disp", "running_s", "running_mad", "running_abs", "running_var")


def _f64(x) -> np.ndarray:
    """A float vector (tensor or array) as numpy float64 (exact: float32 and float64 widen exactly)."""
    return np.asarray(torch.as_tensor(x).detach().cpu().double().numpy())


def _bn_affine_of(bn, what: str):
    """Float64 numpy (scale, offset) of a trained BN module in eval mode (see infer_bn.bn_affine)."""
    from l1bn.spec.reference.infer_bn import bn_affine

    for name in ("inference_affine", "affine"):
        fn = getattr(bn, name, None)
        if callable(fn):
            scale, offset = fn()
            return _f64(scale), _f64(offset)
    norm = getattr(bn, "norm", None)
    if norm is None:                 # a layer without a norm attribute (torch's): by its class
        from l1bn.sw.models import norm_of_layer

        norm = norm_of_layer(bn)
        if norm is None:
            raise ValueError(f"{what}: BN module {type(bn).__name__} is none of the registered norms' "
                             "layers (l1bn.spec.norms) and has no norm attribute")
    disp = next((getattr(bn, n) for n in _DISP_NAMES if getattr(bn, n, None) is not None), None)
    if disp is None:
        raise ValueError(f"{what}: BN module {type(bn).__name__} has no running dispersion "
                         f"(looked for {', '.join(_DISP_NAMES)})")
    c = disp.numel()
    gamma = bn.weight if getattr(bn, "weight", None) is not None else torch.ones(c)
    beta = bn.bias if getattr(bn, "bias", None) is not None else torch.zeros(c)
    scale, offset = bn_affine(norm=str(norm).lower(), mean=_f64(bn.running_mean), disp=_f64(disp),
                              gamma=_f64(gamma), beta=_f64(beta), eps=float(bn.eps))
    return scale, offset


def _int_weight(w, w_exp: int, what: str) -> np.ndarray:
    """Fake-quantized float weights on the 2**-w_exp grid -> exact int64 integers (numpy)."""
    w = torch.as_tensor(w).detach().cpu()
    if not w.dtype.is_floating_point:
        return w.to(torch.int64).numpy()
    v = w.double().numpy() * 2.0 ** w_exp
    if not bool(np.isfinite(v).all()):   # NaN compares false with every bound: refuse it by name
        raise ValueError(f"{what}: {int((~np.isfinite(v)).sum())} weight(s) are NaN or infinite; "
                         f"the run is damaged (retrain it)")
    q = np.floor(v + 0.5)
    if bool((np.abs(v - q) > 1e-6).any()):
        raise ValueError(f"{what}: weights are not on the 2**-{w_exp} grid of their quantizer "
                         f"(max distance {float(np.abs(v - q).max()):.3g} LSB); export needs QAT weights")
    return q.astype(np.int64)


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
                scale, offset = np.ones(out_shape[0]), np.zeros(out_shape[0])
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
    from l1bn.spec.outdir import check_output_dir, check_writable

    check_int("rows", rows, 1, 64)
    check_int("mult_bits", mult_bits, 2, 32)
    # before any work: --force replaces the output, never the run it reads (nor a folder holding it)
    check_output_dir(out_dir, command="export", inputs=[run], force=force)
    check_writable(out_dir)
    spec, inp, x_float, labels, model, cfg = load_trained(run)
    net = net_from_spec(spec, in_shape=inp["shape"], in_bits=inp["bits"], in_exp=inp["exp"],
                        in_signed=inp.get("signed", False), mult_bits=mult_bits)
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


def load_trained(run: Path):
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
