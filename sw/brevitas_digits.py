"""A small Brevitas network for the digits, trained briefly and exported as QONNX (docs/interop.md).

It stands for "a model trained outside l1bn": Brevitas layers with power-of-two fixed-point
quantizers and a plain ``nn.BatchNorm2d`` (classic L2 statistics), exported with Brevitas's own
``export_qonnx``. ``l1bn import`` then turns the file into an l1bn export.

Network (input 1x8x8, pixel/16)::

    QuantIdentity   unsigned 4 bit, scale 2**-4            (input quantizer)
    QuantConv2d 3x3 pad 1, 1 -> 8,   4-bit weights, no bias -> BatchNorm2d -> QuantReLU u4
    QuantConv2d 3x3 pad 1 stride 2, 8 -> 16                  -> BatchNorm2d -> QuantReLU u4
    Flatten -> QuantLinear 256 -> 10, 4-bit weights, no bias  (logits)

Weights: ``Int8WeightPerTensorFixedPoint`` at 4 bits (narrow range -7..7, power-of-two scale);
activations: ``Uint8ActPerTensorFixedPoint`` at 4 bits (learned power-of-two scale).

``python -m l1bn.sw.brevitas_digits --steps 150 --out model.onnx`` trains and exports.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["build_brevitas_cnn", "train_brevitas", "export_brevitas_qonnx"]


def build_brevitas_cnn(*, wbits: int = 4, abits: int = 4, channels=(8, 16), seed: int = 0):
    """The Brevitas network of the module docstring (float weights from ``seed``)."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brevitas warns about optional kernels it does not need
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint

    class W(Int8WeightPerTensorFixedPoint):
        bit_width = wbits

    class A(Uint8ActPerTensorFixedPoint):
        bit_width = abits
        max_val = 4.0

    class In(Uint8ActPerTensorFixedPoint):
        bit_width = abits
        max_val = 1.0

    torch.manual_seed(seed)
    c1, c2 = channels
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=In, return_quant_tensor=True),
        qnn.QuantConv2d(1, c1, 3, padding=1, bias=False, weight_quant=W),
        nn.BatchNorm2d(c1),
        qnn.QuantReLU(act_quant=A, return_quant_tensor=True),
        qnn.QuantConv2d(c1, c2, 3, stride=2, padding=1, bias=False, weight_quant=W),
        nn.BatchNorm2d(c2),
        qnn.QuantReLU(act_quant=A, return_quant_tensor=True),
        nn.Flatten(),
        qnn.QuantLinear(c2 * 16, 10, bias=False, weight_quant=W),
    )


def train_brevitas(model, *, steps: int = 150, batch: int = 64, lr: float = 0.01, seed: int = 0) -> dict:
    """A few Adam steps on the digits training split; returns ``{"test_accuracy", "time_s"}``."""
    import torch
    from l1bn.spec.config import check_int

    from .data import digits_split

    check_int("steps", steps, 0, 100000)
    d = digits_split()
    (xtr, ytr), (xte, yte) = d["train"], d["test"]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, xtr.shape[0], (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).double().mean())
    return {"test_accuracy": acc, "time_s": time.perf_counter() - t0}


def export_brevitas_qonnx(model, out_path) -> Path:
    """Brevitas's ``export_qonnx`` (TorchScript exporter) for a 1x1x8x8 input, written atomically."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brevitas.export import export_qonnx

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qonnx(model, torch.zeros(1, 1, 8, 8), tmp, dynamo=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m l1bn.sw.brevitas_digits", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    m = build_brevitas_cnn(seed=a.seed)
    r = train_brevitas(m, steps=a.steps, seed=a.seed)
    path = export_brevitas_qonnx(m, a.out)
    print(f"brevitas cnn: {a.steps} steps in {r['time_s']:.1f} s, test accuracy {100 * r['test_accuracy']:.2f} % "
          f"(brevitas, float BN) -> {path}")


if __name__ == "__main__":
    main()
