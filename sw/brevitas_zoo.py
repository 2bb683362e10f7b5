"""The networks FINN and Brevitas users already have, built, trained briefly on the digits and
exported as QONNX (docs/interop.md, tests/test_interop_models.py, bench/interop_models.py).

* ``brevitas_examples.bnn_pynq``: TFC, SFC and LFC (fully connected, 28x28 input, ``2x - 1`` in
  ``forward`` in front of the input quantizer, bipolar or 2-bit signed narrow activations,
  ``TensorNorm`` after the last layer), CNV (3x32x32, signed 8-bit input, max pooling) in every bit
  configuration Brevitas ships, and the 4-bit ResNet-18 (per-channel float weight scales, residual
  adds, ``TruncAvgPool2d``, an ``Int32Bias`` classifier bias, no input quantizer: 8-bit pixels);
* :func:`build_residual`: a small residual network (two residual blocks, global average pooling,
  power-of-two fixed-point quantizers);
* :func:`build_float_scales`: a CNN with Brevitas's default quantizers (float scales, a signed 8-bit
  input, per-channel float weight scales in one layer, float biases, max pooling).

Models train with random initialisation for a few Adam steps on the digits fitted to their input
(:func:`l1bn.sw.qonnx_import.digits_for_input`): enough for real BN statistics and scales; the
property checked with them is agreement with qonnx, not accuracy.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["BNN_PYNQ", "MODELS", "model_input", "build_model", "train_on_digits", "export_model"]

BNN_PYNQ = ("tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a", "lfc_1w2a",
            "cnv_1w1a", "cnv_1w2a", "cnv_2w2a", "resnet18_4w4a")
#: every model of this module
MODELS = BNN_PYNQ + ("residual", "float_scales")


def model_input(name: str) -> tuple[tuple, str | None]:
    """``(per-image input shape, input type)``: the type is the FINN DataType of the images of a
    model without an input quantizer (ResNet-18 takes 8-bit pixels), else None."""
    if name.startswith(("tfc", "sfc", "lfc")):
        return (1, 28, 28), None
    if name.startswith("cnv"):
        return (3, 32, 32), None
    if name.startswith("resnet18"):
        return (3, 32, 32), "UINT8"
    if name in ("residual", "float_scales"):
        return (1, 8, 8), None
    raise ValueError(f"model {name!r} is not one of {', '.join(MODELS)}")


def _quiet():
    warnings.simplefilter("ignore")


def build_model(name: str, *, seed: int = 0):
    """The model ``name`` (one of :data:`MODELS`) with random weights from ``seed``."""
    import torch

    model_input(name)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        _quiet()
        if name in BNN_PYNQ:
            from brevitas_examples.bnn_pynq.models import model_with_cfg

            return model_with_cfg(name, False)[0]
        return build_residual() if name == "residual" else build_float_scales()


def build_residual():
    """Two residual blocks (conv-BN-ReLU-conv-BN-ReLU + skip, a ReLU after the add; the add's
    inputs share one quantizer, as in Brevitas's own ResNet), global average pooling, a linear
    classifier; 4-bit power-of-two fixed-point weights and activations, 1x8x8 input."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
    from torch import nn

    class W(Int8WeightPerTensorFixedPoint):
        bit_width = 4

    class A(Uint8ActPerTensorFixedPoint):
        bit_width = 4
        max_val = 4.0

    class In(Uint8ActPerTensorFixedPoint):
        bit_width = 4
        max_val = 1.0

    def conv(cin, cout):
        return qnn.QuantConv2d(cin, cout, 3, padding=1, bias=False, weight_quant=W)

    class Block(nn.Module):
        def __init__(self, c, shared):
            super().__init__()
            self.conv1, self.bn1 = conv(c, c), nn.BatchNorm2d(c)
            self.relu1 = qnn.QuantReLU(act_quant=A, return_quant_tensor=True)
            self.conv2, self.bn2 = conv(c, c), nn.BatchNorm2d(c)
            self.relu2 = shared          # the skip's quantizer: both inputs of the add on one grid
            self.out = qnn.QuantReLU(act_quant=A, return_quant_tensor=True)

        def forward(self, x):
            y = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
            return self.out(y + x)

    class Net(nn.Module):
        def __init__(self, c=8):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=In, return_quant_tensor=True)
            self.stem, self.bn = conv(1, c), nn.BatchNorm2d(c)
            self.act = qnn.QuantReLU(act_quant=A, return_quant_tensor=True)
            self.block1 = Block(c, self.act)
            self.block2 = Block(c, self.block1.out)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = qnn.QuantLinear(c, 10, bias=False, weight_quant=W)

        def forward(self, x):
            x = self.block2(self.block1(self.act(self.bn(self.stem(self.inp(x))))))
            return self.fc(self.pool(x).flatten(1))

    return Net()


def build_float_scales():
    """Brevitas's defaults: a signed 8-bit input quantizer with a float scale, ``QuantConv2d`` and
    ``QuantLinear`` with their default float-scale weights and float biases (one layer with
    per-channel float weight scales), ``QuantReLU`` with float scales, max pooling, 1x8x8 input."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat
    from torch import nn

    return nn.Sequential(
        qnn.QuantIdentity(return_quant_tensor=True),
        qnn.QuantConv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        qnn.QuantReLU(return_quant_tensor=True),
        nn.MaxPool2d(2),
        qnn.QuantConv2d(8, 16, 3, padding=1, weight_quant=Int8WeightPerChannelFloat),
        nn.BatchNorm2d(16),
        qnn.QuantReLU(return_quant_tensor=True),
        nn.Flatten(),
        qnn.QuantLinear(16 * 16, 10, bias=True),
    )


def _train_images(name: str):
    from .data import fit_images, train_split

    shape, itype = model_input(name)
    x, y = train_split()
    x = x.numpy()
    img = fit_images(x, *shape) if len(shape) == 3 else x
    if itype == "UINT8":
        img = np.round(img * 255)
    return img.astype(np.float32), y.numpy()


def train_on_digits(model, name: str, *, steps: int = 5, batch: int = 32, lr: float = 0.01, seed: int = 0) -> dict:
    """A few Adam steps of ``model`` (built by :func:`build_model`) on the digits training split
    fitted to its input; returns ``{"steps", "time_s", "loss"}``. The model is left in eval mode."""
    import torch
    from l1bn.spec.config import check_int

    check_int("steps", steps, 0, 100000)
    check_int("batch", batch, 2, 4096)
    x, y = _train_images(name)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    model.train()
    loss = float("nan")
    with warnings.catch_warnings():
        _quiet()
        for _ in range(steps):
            idx = torch.randint(0, xt.shape[0], (batch,), generator=g)
            out = model(xt[idx])
            out = out.value if hasattr(out, "value") else out
            lv = torch.nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad()
            lv.backward()
            opt.step()
            loss = float(lv)
    model.eval()
    return {"steps": steps, "time_s": time.perf_counter() - t0, "loss": loss}


def export_model(model, name: str, out_path) -> Path:
    """Brevitas's ``export_qonnx`` (TorchScript exporter) for a batch-1 input of the model's shape,
    written into a temporary file beside ``out_path`` and renamed into place."""
    import torch

    with warnings.catch_warnings():
        _quiet()
        from brevitas.export import export_qonnx

    shape, _ = model_input(name)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        model.eval()
        with warnings.catch_warnings():
            _quiet()
            export_qonnx(model, torch.zeros(1, *shape), tmp, dynamo=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
