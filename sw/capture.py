"""Real BN-layer data from the trained digits CNN, as signed integers, for the hardware tests.

* :func:`bn_inputs`: the pre-BN activations of one BN layer for a batch of digits images;
* :func:`bn_grads`: the pre-BN activations and the upstream gradient ``dL/dy`` of the BN output
  from one real training step (cross-entropy loss, ``backward()``).

Both return ``(channels, n)`` int64 tensors: channel ``c`` of the layer, its ``n`` values taken
image by image in (image, y, x) order. Floats become signed ``width``-bit integers with one
power-of-two scale per tensor chosen from the data so that the range is used:
``k = floor(log2((2**(width-1) - 1) / max|v|))``, ``q = saturate(floor(v * 2**k + 1/2))``.

Layer choice (``layer=None``): the first BN layer with at least ``channels`` channels whose
spatial size ``HW`` divides ``n`` (then exactly ``n / HW`` images form the batch, so the batch the
statistics and gradients came from is exactly the ``n`` values returned); if none, the last layer
with enough channels and ``ceil(n / HW)`` images, truncated to ``n``. The CNN's BN layers are
0: 16 channels 8x8, 1: 32 channels 4x4, 2: 32 channels 2x2.

Images: a permutation of the 1437 training images drawn from ``seed``. The model: ``run_dir``
(a run written by ``l1bn train`` with a CNN with BN), or, when None, a float L1BN CNN trained
deterministically (seed 0, 4 epochs, a few seconds) once and cached in ``build/capture/``.
Everything is deterministic for given arguments.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from l1bn.spec.config import check_int
from l1bn.spec.reference.core import saturate

__all__ = ["CAPTURE_CONFIG", "capture_model", "to_int", "bn_inputs", "bn_grads"]

CAPTURE_CONFIG = {"model": "cnn", "norm": "l1", "float": True, "epochs": 4, "seed": 0}


def _cache_root() -> Path:
    env = os.environ.get("L1BN_CAPTURE_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / "build" / "capture"


def capture_model(run_dir=None):
    """(eval model, config) of ``run_dir``, or of the cached default float L1BN CNN."""
    from .train import load_run, run_config, train_run

    if run_dir is not None:
        return load_run(run_dir)
    c = CAPTURE_CONFIG
    config = run_config(model=c["model"], norm=c["norm"], qcfg=None, epochs=c["epochs"], seed=c["seed"])
    root = _cache_root()
    run = root / f"cnn-l1-float-e{c['epochs']}-s{c['seed']}"
    if not (run / "model.pt").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        with torch.random.fork_rng():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # bit-reproducible whatever the caller's thread count
            try:
                train_run(config, tmp)
            finally:
                torch.set_num_threads(threads)
        try:
            tmp.rename(run)  # atomic: concurrent callers never see a half-written run
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return load_run(run)


def to_int(v: torch.Tensor, width: int) -> tuple[torch.Tensor, int]:
    """Signed ``width``-bit integers of ``v`` with a data-chosen power-of-two scale: ``(q, k)``,
    ``q = saturate(floor(v * 2**k + 1/2), width)``, ``k`` as in the module docstring."""
    v = v.detach().double()
    m = float(v.abs().max()) if v.numel() else 0.0
    hi = (1 << (width - 1)) - 1
    k = 0 if m == 0.0 else math.floor(math.log2(hi / m))
    q = torch.floor(v * 2.0 ** k + 0.5).to(torch.int64)
    return saturate(q, width, True), k


def _bn_modules(model):
    bns = [b.bn for b in getattr(model, "blocks", []) if getattr(b, "bn", None) is not None]
    if not bns or model.__class__.__name__ != "DigitsCNN":
        raise ValueError("capture needs a digits CNN with BN layers (train with --model cnn --norm l1|l2)")
    return bns


_HW = (64, 16, 4)  # spatial sizes of the CNN's BN layers


def _plan(bns, n: int, channels: int, layer: int | None) -> tuple[int, int]:
    """(layer index, number of images)."""
    if layer is not None:
        check_int("layer", layer, 0, len(bns) - 1)
        if bns[layer].num_features < channels:
            raise ValueError(f"channels={channels} is out of range for BN layer {layer}; allowed "
                             f"1..{bns[layer].num_features}")
        return layer, -(-n // _HW[layer])
    ok = [i for i, b in enumerate(bns) if b.num_features >= channels]
    if not ok:
        raise ValueError(f"channels={channels} is out of range; allowed 1..{max(b.num_features for b in bns)}")
    exact = [i for i in ok if n % _HW[i] == 0]
    i = exact[0] if exact else ok[-1]
    return i, -(-n // _HW[i])


def _run(model, n: int, channels: int, seed: int, layer: int | None, grads: bool):
    from .data import train_split

    model = copy.deepcopy(model)  # the caller's running statistics stay untouched
    bns = _bn_modules(model)
    li, images = _plan(bns, n, channels, layer)
    x, y = train_split()
    if images > len(y):
        raise ValueError(f"n={n} needs {images} images at BN layer {li}; the training split has {len(y)}")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:images]
    got = {}

    def hook(mod, inp, out):
        got["x"] = inp[0].detach()
        if grads:
            out.register_hook(lambda g: got.__setitem__("dy", g.detach()))

    h = bns[li].register_forward_hook(hook)
    try:
        model.train()  # batch statistics, as in the training step the hardware mirrors
        for p in model.parameters():
            p.grad = None
        with torch.set_grad_enabled(grads):
            out = model(x[idx])
            if grads:
                F.cross_entropy(out, y[idx]).backward()
    finally:
        h.remove()

    def flat(t):  # (N, C, H, W) -> (C, N*H*W) in (image, y, x) order, first `channels` and `n`
        return t.transpose(0, 1).reshape(t.shape[1], -1)[:channels, :n]

    return flat(got["x"]), (flat(got["dy"]) if grads else None)


def _check(width, n, channels, seed):
    check_int("width", width, 2, 32)
    check_int("n", n, 1, 100_000)
    check_int("channels", channels, 1, 1024)
    check_int("seed", seed, 0, 2**63 - 1)


def bn_inputs(*, width: int, n: int, channels: int, seed: int = 0, run_dir=None,
              layer: int | None = None) -> torch.Tensor:
    """Pre-BN activations of a BN layer of the trained digits CNN: int64 ``(channels, n)``,
    signed ``width``-bit (module docstring for the scale, layer and image choice)."""
    _check(width, n, channels, seed)
    model, _ = capture_model(run_dir)
    xf, _ = _run(model, n, channels, seed, layer, grads=False)
    return to_int(xf, width)[0]


def bn_grads(*, width: int, n: int, channels: int, seed: int = 0, run_dir=None,
             layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_int, dy_int)``: pre-BN activations and ``dL/dy`` at the BN output from one training
    step (cross-entropy backward), each int64 ``(channels, n)`` signed ``width``-bit with its own
    power-of-two scale. ``x_int`` equals :func:`bn_inputs` for the same arguments."""
    _check(width, n, channels, seed)
    model, _ = capture_model(run_dir)
    xf, dyf = _run(model, n, channels, seed, layer, grads=True)
    return to_int(xf, width)[0], to_int(dyf, width)[0]
