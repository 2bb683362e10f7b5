"""Integer-only training of the digits models with the spec reference, and its run folder.

:func:`train_integer` trains ``model`` ("cnn" or "mlp", the shapes of :mod:`l1bn.sw.models`) from a
seeded random initialization with :mod:`l1bn.spec.reference.train` alone (no torch arithmetic: torch
only loads the digits split and writes the export). :func:`save_integer_run` writes a run folder::

    OUT/metrics.json     run settings, the IntTrainConfig, per-epoch loss and accuracies, times,
                         the training-mode vs folded agreement and the export check
    OUT/export/          an export (l1bn.sw.export.write_export) that `l1bn infer`,
                         `l1bn verilog net` and `l1bn sim net` take as they are

The export holds the folded inference network of :func:`l1bn.spec.reference.train.fold_network`
(the weights the training forward used and the running statistics folded into ``FoldedBN``), the
quantized test images and labels, and the trainer's own logits on them (``test.int_train_logits``).
:func:`check_export` reloads it and runs :func:`l1bn.spec.reference.network.run_net`: the logits must equal the
trainer's evaluation bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from l1bn.spec.config import check_choice, check_int
from l1bn.spec.reference import train as T
from l1bn.spec.training import DIGITS_CNN, IntTrainConfig, TrainLayer

from .data import digits_split

__all__ = ["INT_MODELS", "DIGITS_MLP", "layers_of", "int_net", "train_integer", "save_integer_run",
           "check_export", "agreement_train_mode"]

#: The MLP of ``l1bn.sw.models.DigitsMLP``: 64 -> 64 -> 64 -> 10.
DIGITS_MLP = (TrainLayer(kind="linear", out=64, kernel=1, stride=1, padding=0),
              TrainLayer(kind="linear", out=64, kernel=1, stride=1, padding=0),
              TrainLayer(kind="linear", out=10, kernel=1, stride=1, padding=0))
INT_MODELS = ("cnn", "mlp")


def layers_of(model: str) -> tuple:
    check_choice("model", model, INT_MODELS)
    return DIGITS_CNN if model == "cnn" else DIGITS_MLP


def int_net(cfg: IntTrainConfig, folded):
    """The :class:`l1bn.spec.reference.network.IntNet` of a folded network (``fold_network``'s layers)."""
    from l1bn.spec.reference.network import IntLayer, IntNet

    layers, shape = [], tuple(cfg.in_shape)
    for ge, fl in zip(cfg.geometry, folded, strict=True):
        conv = ge.layer.kind == "conv2d"
        out_shape = tuple(ge.out_shape) if conv else (ge.out_shape[0],)
        out_exp = cfg.a_exp if fl.bn is not None else fl.w_exp + fl.a_exp
        layers.append(IntLayer(name=ge.name, type=ge.layer.kind, in_shape=shape, out_shape=out_shape,
                               weight=torch.as_tensor(fl.weight, dtype=torch.int64), w_bits=cfg.wbits,
                               w_exp=fl.w_exp, a_bits=cfg.abits, a_exp=fl.a_exp, a_signed=False,
                               stride=ge.layer.stride, padding=ge.layer.padding, bn=fl.bn, out_exp=out_exp))
        shape = out_shape
    return IntNet(in_shape=tuple(cfg.in_shape), in_bits=cfg.abits, in_exp=cfg.in_exp, in_signed=False,
                  layers=tuple(layers))


def _digits(cfg: IntTrainConfig):
    split = digits_split()
    (xtr, ytr), (xte, yte) = split["train"], split["test"]
    return (T.quantize_images(xtr.numpy(), cfg), ytr.numpy().astype(np.int64),
            T.quantize_images(xte.numpy(), cfg), yte.numpy().astype(np.int64))


def _ce(logits: np.ndarray, labels: np.ndarray, exp: int) -> float:
    z = logits.astype(np.float64) * 2.0 ** -exp
    z = z - z.max(1, keepdims=True)
    return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]).mean())


def agreement_train_mode(state, x: np.ndarray, folded_pred: np.ndarray, labels: np.ndarray,
                         cfg: IntTrainConfig) -> dict:
    """The training-mode forward (batch statistics, batches of ``cfg.batch`` in order) on ``x``:
    its accuracy and how often its predictions equal the folded network's."""
    pred = []
    for s in range(0, len(x), cfg.batch):
        xb = x[s:s + cfg.batch]
        if len(xb) < 2:   # one image has no batch statistics: take the last two
            xb = x[-2:]
            z, _, _ = T.forward_train(state, xb, cfg)
            pred.append(z.argmax(1)[-1:])
            continue
        z, _, _ = T.forward_train(state, xb, cfg)
        pred.append(z.argmax(1))
    pred = np.concatenate(pred)
    return {"train_mode_accuracy": float((pred == labels).mean()),
            "train_mode_agreement": float((pred == folded_pred).mean()),
            "train_mode_disagreements": int((pred != folded_pred).sum())}


def train_integer(cfg: IntTrainConfig, *, model: str, epochs: int, seed: int,
                  progress: Callable[[int, int, float], None] | None = None):
    """Train with the integer reference; return ``(state, metrics, data)``.

    ``progress(step, total_steps, loss)`` after every step. ``data`` is the quantized
    ``(xtr, ytr, xte, yte)``.
    """
    check_int("epochs", epochs, 1, 10000)
    check_int("seed", seed, 0, 2**32 - 1)
    if tuple(cfg.layers) != layers_of(model) or tuple(cfg.in_shape) != (1, 8, 8):
        raise ValueError(f"the config's layers are not the digits {model}")
    xtr, ytr, xte, yte = data = _digits(cfg)
    state = T.init_state(cfg, seed)
    steps = -(-len(ytr) // cfg.batch)
    if len(ytr) % cfg.batch == 1:
        steps -= 1
    total, done = steps * epochs, 0
    hist = {"train_loss": [], "train_batch_accuracy": [], "test_accuracy_per_epoch": [], "epoch_time_s": []}
    sat, t0 = 0, time.perf_counter()
    for e in range(epochs):
        def step_progress(k, _n, loss, base=done):
            if progress is not None:
                progress(base + k, total, loss)

        state, r = T.train_epoch(state, xtr, ytr, cfg, epoch=e, progress=step_progress)
        done += r.steps
        z, _ = T.evaluate(state, xte, cfg)
        hist["train_loss"].append(r.loss)
        hist["train_batch_accuracy"].append(r.train_accuracy)
        hist["test_accuracy_per_epoch"].append(float((z.argmax(1) == yte).mean()))
        hist["epoch_time_s"].append(r.time_s)
        sat += r.master_saturated
    train_time = time.perf_counter() - t0
    folded = T.fold_network(state, cfg)
    zte, exp = T.evaluate(state, xte, cfg, folded=folded)
    ztr, _ = T.evaluate(state, xtr, cfg, folded=folded)
    metrics = {
        "kind": "integer", "model": model, "norm": cfg.norm, "epochs": epochs, "seed": seed,
        "int_train_config": cfg.to_dict(),
        "test_accuracy": float((zte.argmax(1) == yte).mean()), "test_loss": _ce(zte, yte, exp),
        "train_accuracy": float((ztr.argmax(1) == ytr).mean()),
        **hist, "master_saturated": sat, "n_train": len(ytr), "n_test": len(yte),
        "time_s": train_time, "mean_epoch_time_s": float(np.mean(hist["epoch_time_s"])),
        "eval": "folded running statistics (fold_network): what the export computes",
        **agreement_train_mode(state, xte, zte.argmax(1), yte, cfg),
    }
    return state, metrics, data


def check_export(export_dir, logits: np.ndarray) -> dict:
    """Reload an export, run :func:`l1bn.spec.reference.network.run_net` on its test images, compare with
    ``logits`` (the trainer's evaluation): ``{"logits_equal", "prediction_agreement"}``."""
    from l1bn.spec.export import load_export
    from l1bn.spec.reference.network import run_net

    e = load_export(export_dir)
    got = np.asarray(run_net(e.net, e.test_inputs))
    return {"export_logits_equal": bool(np.array_equal(got, logits)),
            "export_prediction_agreement": float((got.argmax(1) == logits.argmax(1)).mean())}


def save_integer_run(state, cfg: IntTrainConfig, metrics: dict, data, out_dir, *,
                     force: bool = False) -> tuple[Path, dict]:
    """Write ``OUT/metrics.json`` and ``OUT/export/`` (staged: the folder appears whole or not at
    all), after checking that the export reproduces the trainer's logits; return ``OUT`` and the
    metrics with the check added."""
    from l1bn.spec.export import write_export
    from l1bn.spec.outdir import check_output_dir, staged_dir

    out = check_output_dir(out_dir, command="train", force=force)
    _, _, xte, yte = data
    folded = T.fold_network(state, cfg)
    zte, exp = T.evaluate(state, xte, cfg, folded=folded)
    net = int_net(cfg, folded)
    zb = cfg.mac_config(cfg.names[-1]).acc_bits
    extra = {"test.inputs": (torch.as_tensor(xte), cfg.abits, False, "test_input"),
             "test.labels": (torch.as_tensor(yte), 8, False, "test_label"),
             "test.int_train_logits": (torch.as_tensor(zte), zb, True, "int_train_logits")}
    source = {"trainer": "l1bn train --integer", "model": metrics["model"], "seed": metrics["seed"],
              "epochs": metrics["epochs"], "int_train_config": cfg.to_dict(), "logit_exp": exp}
    with staged_dir(out, command="train") as tmp:
        write_export(net, tmp / "export", source=source, extra=extra)
        check = check_export(tmp / "export", zte)
        if not check["export_logits_equal"]:
            raise RuntimeError("the export does not reproduce the trainer's logits (a bug: please report it)")
        metrics = {**metrics, **check}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out, metrics
