"""Training loop, checkpoint save/load for the digits models.

A run folder holds

* ``model.pt``: ``torch.save({"state_dict", "config", "l1bn_version"})`` where ``config`` is the
  JSON-able run configuration (:func:`run_config`): ``model, norm, float, wbits, abits,
  quantize_bn, a_range_log2, epochs, seed, lr, batch_size, device``;
* ``metrics.json``: ``config``, ``seed``, ``test_accuracy``, ``train_accuracy``, ``train_loss``
  (mean cross-entropy per epoch), ``test_loss``, ``n_train``, ``n_test``, ``time_s``, ``threads``.

Training: Adam (lr 3e-3 by default), cosine learning-rate decay to 0 over the run, batch 64,
cross-entropy. Everything random (initialization, shuffling) derives from ``seed``; on CPU a run
is bit-reproducible for a given seed and thread count.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import torch.nn.functional as F
from l1bn.spec.config import check_choice, check_int

from .data import digits_split
from .models import MODELS, NORMS, build_model
from .quant import QuantConfig

__all__ = ["run_config", "check_device", "train_model", "evaluate", "save_run", "load_run", "train_run"]


def _version() -> str:
    try:
        return version("l1bn")
    except PackageNotFoundError:
        return "unknown"


def run_config(*, model: str, norm: str, qcfg: QuantConfig | None, epochs: int, seed: int,
               lr: float = 3e-3, batch_size: int = 64, device: str = "cpu") -> dict:
    """Validated JSON-able run configuration (the ``config`` of checkpoint and metrics)."""
    check_choice("model", model, MODELS)
    check_choice("norm", norm, NORMS)
    check_int("epochs", epochs, 1, 10000)
    check_int("seed", seed, 0, 2**63 - 1)
    check_int("batch_size", batch_size, 2, 4096)
    check_choice("device", device, ("cpu", "cuda"))
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise ValueError(f"lr={lr!r} must be in (0, 1)")
    q = qcfg.to_dict() if qcfg is not None else {"wbits": None, "abits": None, "quantize_bn": False,
                                                  "a_range_log2": None}
    return {"model": model, "norm": norm, "float": qcfg is None, **q, "epochs": epochs, "seed": seed,
            "lr": float(lr), "batch_size": batch_size, "device": device}


def _qcfg_of(config: dict) -> QuantConfig | None:
    if config.get("float") or config.get("wbits") is None:
        return None
    return QuantConfig(wbits=config["wbits"], abits=config["abits"],
                       quantize_bn=bool(config.get("quantize_bn", False)),
                       a_range_log2=config.get("a_range_log2"))


def check_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available to this PyTorch "
                         f"(torch {torch.__version__}, cuda build: {torch.version.cuda}); use --device cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode; restores the previous mode."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch):
        out = model(x[i:i + batch].to(dev)).float()
        yy = y[i:i + batch].to(dev)
        correct += int((out.argmax(1) == yy).sum())
        loss += float(F.cross_entropy(out, yy, reduction="sum"))
    model.train(was)
    return correct / len(y), loss / len(y)


def train_model(config: dict, *, progress: Callable[[int, int, float], None] | None = None
                ) -> tuple[torch.nn.Module, dict]:
    """Train a model described by ``config`` (:func:`run_config`); return (eval model, metrics).

    ``progress(step, total_steps, loss)`` is called after every optimizer step.
    """
    dev = check_device(config["device"])
    torch.manual_seed(config["seed"])
    model = build_model(config["model"], config["norm"], _qcfg_of(config)).to(dev)
    split = digits_split()
    xtr, ytr = split["train"]
    xte, yte = split["test"]
    xtr_d, ytr_d = xtr.to(dev), ytr.to(dev)
    bs, epochs = config["batch_size"], config["epochs"]
    steps_per_epoch = (len(ytr) + bs - 1) // bs
    total = steps_per_epoch * epochs
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    g = torch.Generator().manual_seed(config["seed"])
    losses, step, t0 = [], 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        tot, cnt = 0.0, 0
        for idx in perm.split(bs):
            if len(idx) < 2:  # a batch of one has no batch statistics
                continue
            idx = idx.to(dev)
            loss = F.cross_entropy(model(xtr_d[idx]), ytr_d[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tot += float(loss.detach()) * len(idx)
            cnt += len(idx)
            if progress is not None:
                progress(step, total, float(loss.detach()))
        losses.append(tot / cnt)
    model.eval()
    test_acc, test_loss = evaluate(model, xte, yte)
    train_acc, _ = evaluate(model, xtr, ytr)
    metrics = {"config": config, "seed": config["seed"], "test_accuracy": test_acc, "test_loss": test_loss,
               "train_accuracy": train_acc, "train_loss": losses, "n_train": len(ytr), "n_test": len(yte),
               "time_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}
    return model, metrics


def save_run(model: torch.nn.Module, config: dict, metrics: dict, out_dir, *, force: bool = False) -> Path:
    """Write ``model.pt`` and ``metrics.json`` as the run folder ``out_dir``; return the folder.

    The files are written into a temporary folder beside ``out_dir`` that then replaces it in one
    step, so an interrupted save leaves the old run or none. An existing non-empty ``out_dir`` is
    replaced only with ``force``.
    """
    from l1bn.spec.outdir import check_output_dir, staged_dir

    out = check_output_dir(out_dir, command="train", force=force)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()   # serialized in memory: a full disk is then an OSError (ENOSPC) of our own write,
    torch.save({"state_dict": state, "config": config, "l1bn_version": _version()}, buf)   # not torch's
    with staged_dir(out, command="train") as tmp:
        (tmp / "model.pt").write_bytes(buf.getvalue())
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def load_run(run_dir) -> tuple[torch.nn.Module, dict]:
    """Restore the eval-mode CPU model and its config from a run folder written by :func:`save_run`."""
    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a trained run (no model.pt); train one with `l1bn train`")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file: one line, not a traceback
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'truncated?'})") from None
    if not isinstance(ck, dict) or "state_dict" not in ck or not isinstance(ck.get("config"), dict):
        raise ValueError(f"{path}: not an l1bn checkpoint (needs state_dict and config)")
    config = ck["config"]
    try:
        model = build_model(config["model"], config["norm"], _qcfg_of(config))
        model.load_state_dict(ck["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: the checkpoint does not fit its own config ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else '?'})") from None
    model.eval()
    return model, config


def train_run(config: dict, out_dir, *, progress=None, force: bool = False) -> tuple[torch.nn.Module, dict]:
    """:func:`train_model` then :func:`save_run`; returns (model, metrics).

    The output folder is checked before training (:func:`l1bn.spec.outdir.check_output_dir`): an
    earlier run is replaced only with ``force``, and nothing else is replaced; it must be writable.
    """
    from l1bn.spec.outdir import check_output_dir, check_writable

    check_output_dir(out_dir, command="train", force=force)
    check_writable(out_dir)
    model, metrics = train_model(config, progress=progress)
    save_run(model, config, metrics, out_dir, force=force)
    return model, metrics
