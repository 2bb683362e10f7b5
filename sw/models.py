"""Integer-friendly models for the digits data: an MLP and a small CNN, with norm = l1 | l2 | none.

No pooling and no bias except BN's beta; the CNN downsamples with stride-2 convolutions. With a
:class:`~l1bn.sw.quant.QuantConfig` every MAC layer sees power-of-two fake-quantized weights and
activations (see :mod:`l1bn.sw.quant`), so the trained model maps onto integer MACs, one folded
per-channel BN and shifts.

CNN (input 1x8x8)::

    in-quant (unsigned abits, exp = abits)
    conv1 3x3 pad 1 stride 1, 1 -> 16   [16x8x8] -> BN -> ReLU -> act-quant
    conv2 3x3 pad 1 stride 2, 16 -> 32  [32x4x4] -> BN -> ReLU -> act-quant
    conv3 3x3 pad 1 stride 2, 32 -> 32  [32x2x2] -> BN -> ReLU -> act-quant
    flatten (128, in (c, y, x) order) -> fc 128 -> 10 (no bias; its accumulators are the logits)

MLP (input flattened to 64)::

    in-quant -> fc1 64 -> 64 -> BN -> ReLU -> act-quant
             -> fc2 64 -> 64 -> BN -> ReLU -> act-quant -> fc 64 -> 10

The BN layer is the one the norm registry (``l1bn.spec.norms``) names: ``"l1"`` uses
:class:`~l1bn.sw.layers.L1BatchNorm2d`/``1d``, ``"l2"`` ``nn.BatchNorm2d``/``1d``, ``"range"``
:class:`~l1bn.sw.range_bn.RangeBatchNorm2d`/``1d``; ``"none"`` leaves ReLU directly after the MAC.

Export contract: ``model.input_spec()`` and ``model.export_spec()`` (see their docstrings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from l1bn.spec.config import check_choice
from l1bn.spec.norms import norm_names, norm_spec, resolve
from torch import nn

from .quant import QuantConfig, fake_quant, weight_exp

__all__ = ["MODELS", "NORMS", "norm_of_layer", "QConv2d", "QLinear", "ActQuant", "DigitsCNN", "DigitsMLP",
           "build_model"]

MODELS = ("mlp", "cnn")
NORMS = (*norm_names(), "none")


class _QWeight:
    """Mixin: per-tensor power-of-two fake-quantized weight; the exponent lives in buffer ``w_exp``.

    In training mode every forward recomputes ``w_exp`` from ``max|w|`` and stores it; in eval mode
    the stored exponent is used (it is what the export reads).
    """

    def _init_q(self, wbits: int | None):
        self.wbits = wbits
        self.register_buffer("w_exp", torch.tensor(weight_exp(self.weight, wbits) if wbits else 0))

    def qweight(self) -> torch.Tensor:
        if self.wbits is None:
            return self.weight
        if self.training:
            self.w_exp.fill_(weight_exp(self.weight, self.wbits))
        return fake_quant(self.weight, int(self.w_exp), self.wbits, signed=True)


class QConv2d(nn.Conv2d, _QWeight):
    """Bias-free conv with fake-quantized weights (``wbits=None``: float)."""

    def __init__(self, cin: int, cout: int, *, stride: int, wbits: int | None):
        super().__init__(cin, cout, 3, stride=stride, padding=1, bias=False)
        self._init_q(wbits)

    def forward(self, x):
        return F.conv2d(x, self.qweight(), None, self.stride, self.padding)


class QLinear(nn.Linear, _QWeight):
    """Bias-free linear layer with fake-quantized weights (``wbits=None``: float)."""

    def __init__(self, cin: int, cout: int, *, wbits: int | None):
        super().__init__(cin, cout, bias=False)
        self._init_q(wbits)

    def forward(self, x):
        return F.linear(x, self.qweight())


class ActQuant(nn.Module):
    """Unsigned fake quantizer ``bits`` wide on the grid ``2**-exp`` (``bits=None``: identity)."""

    def __init__(self, bits: int | None, exp: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("exp", torch.tensor(int(exp)))

    def forward(self, x):
        return x if self.bits is None else fake_quant(x, int(self.exp), self.bits, signed=False)


class _Block(nn.Module):
    """MAC -> BN (optional) -> [BN-output quant] -> ReLU -> act-quant."""

    def __init__(self, mac: nn.Module, bn: nn.Module | None, qcfg: QuantConfig | None):
        super().__init__()
        self.mac, self.bn = mac, bn
        self.abits = qcfg.abits if qcfg else None
        self.quantize_bn = bool(qcfg and qcfg.quantize_bn and bn is not None)
        self.act = ActQuant(self.abits, qcfg.a_exp if qcfg else 0)

    def forward(self, x):
        h = self.mac(x)
        if self.bn is not None:
            h = self.bn(h)
            if self.quantize_bn:
                h = fake_quant(h, int(self.act.exp), self.abits + 1, signed=True)
        return self.act(torch.relu(h))


def norm_of_layer(layer) -> str | None:
    """The registered norm whose torch layer class (``layer1d``/``layer2d`` of its registry
    entry) ``layer`` is an instance of, the most derived match; None when it is none of them."""
    best = None
    for name in norm_names():
        for path in (norm_spec(name).layer1d, norm_spec(name).layer2d):
            cls = resolve(path) if path else None
            if cls is not None and isinstance(layer, cls) and (best is None or issubclass(cls, best[1])):
                best = (name, cls)
    return best[0] if best else None


def _make_bn(norm: str, c: int, dim: int):
    """The BN layer the norm registry names (``l1bn.spec.norms``), or None for ``"none"``."""
    if norm == "none":
        return None
    rule = norm_spec(norm)
    return resolve(rule.layer2d if dim == 2 else rule.layer1d)(c)


class _DigitsNet(nn.Module):
    def __init__(self, norm: str, qcfg: QuantConfig | None):
        super().__init__()
        check_choice("norm", norm, NORMS)
        if qcfg is not None and not isinstance(qcfg, QuantConfig):
            raise ValueError(f"qcfg must be a QuantConfig or None, got {type(qcfg).__name__}")
        self.norm, self.qcfg = norm, qcfg
        self.inq = ActQuant(qcfg.abits if qcfg else None, qcfg.in_exp if qcfg else 0)

    def input_spec(self) -> dict:
        """``{"shape": (1, 8, 8), "bits", "exp", "signed": False}`` of the input quantizer."""
        self._need_quant()
        return {"type": "input", "shape": (1, 8, 8), "bits": self.qcfg.abits, "exp": self.qcfg.in_exp,
                "signed": False}

    def _need_quant(self):
        if self.qcfg is None:
            raise ValueError("a float model (trained with --float) has no integer form; train with "
                             "--wbits/--abits to export it")

    def export_spec(self) -> list[dict]:
        """Ordered per-layer description for the integer export (eval mode; no input entry).

        Each dict has: ``name`` (str), ``type`` ("conv2d" | "linear"), ``weight`` (float tensor,
        exactly on the grid ``2**-w_exp``: integers = weight * 2**w_exp), ``w_bits``, ``w_exp``
        (the stored exponent the forward used), ``a_bits``/``a_exp`` (the layer's input activation
        bits/exponent; unsigned), ``stride``, ``padding``, ``bias`` (always None), ``bn`` (the BN
        module in eval mode or None), ``norm`` (a registry name or "none"), ``relu`` (bool) and, for
        every layer but the last, ``out_bits``/``out_exp`` (unsigned activation after ReLU). The
        last layer (``fc``) has ``relu=False`` and no output quantizer: its int accumulators are
        the logits. The input quantizer is :meth:`input_spec`.
        """
        self._need_quant()
        q = self.qcfg
        spec, a_bits, a_exp = [], q.abits, q.in_exp
        blocks = list(self.blocks) + [None]
        for i, blk in enumerate(blocks):
            mac = blk.mac if blk is not None else self.fc
            conv = isinstance(mac, nn.Conv2d)
            with torch.no_grad():
                w = fake_quant(mac.weight.detach(), int(mac.w_exp), q.wbits, signed=True)
            d = {"name": f"conv{i + 1}" if conv else ("fc" if blk is None else f"fc{i + 1}"),
                 "type": "conv2d" if conv else "linear", "weight": w, "w_bits": q.wbits,
                 "w_exp": int(mac.w_exp), "a_bits": a_bits, "a_exp": a_exp,
                 "stride": mac.stride[0] if conv else 1, "padding": mac.padding[0] if conv else 0,
                 "bias": None, "norm": self.norm if blk is not None else "none",
                 "bn": blk.bn if blk is not None else None, "relu": blk is not None}
            if blk is not None:
                d["out_bits"], d["out_exp"] = q.abits, int(blk.act.exp)
                a_exp = int(blk.act.exp)
            spec.append(d)
        return spec


class DigitsCNN(_DigitsNet):
    """The digits CNN (module docstring); ``forward(x: (N, 1, 8, 8) in [0, 1]) -> logits (N, 10)``."""

    def __init__(self, norm: str = "l1", qcfg: QuantConfig | None = None):
        super().__init__(norm, qcfg)
        wb = qcfg.wbits if qcfg else None
        chans, strides = (1, 16, 32, 32), (1, 2, 2)
        self.blocks = nn.ModuleList(
            _Block(QConv2d(chans[i], chans[i + 1], stride=strides[i], wbits=wb),
                   _make_bn(norm, chans[i + 1], 2), qcfg) for i in range(3))
        self.fc = QLinear(128, 10, wbits=wb)

    def forward(self, x):
        h = self.inq(x)
        for b in self.blocks:
            h = b(h)
        return self.fc(h.flatten(1))


class DigitsMLP(_DigitsNet):
    """The digits MLP (module docstring); ``forward(x: (N, 1, 8, 8) or (N, 64)) -> logits (N, 10)``."""

    def __init__(self, norm: str = "l1", qcfg: QuantConfig | None = None, hidden: int = 64):
        super().__init__(norm, qcfg)
        wb = qcfg.wbits if qcfg else None
        self.blocks = nn.ModuleList([
            _Block(QLinear(64, hidden, wbits=wb), _make_bn(norm, hidden, 1), qcfg),
            _Block(QLinear(hidden, hidden, wbits=wb), _make_bn(norm, hidden, 1), qcfg)])
        self.fc = QLinear(hidden, 10, wbits=wb)

    def forward(self, x):
        h = self.inq(x).flatten(1)
        for b in self.blocks:
            h = b(h)
        return self.fc(h)


def build_model(model: str, norm: str, qcfg: QuantConfig | None) -> nn.Module:
    """A fresh digits model: ``model`` in ("mlp", "cnn"), ``norm`` in ("l1", "l2", "none"),
    ``qcfg`` a QuantConfig for QAT or None for float."""
    check_choice("model", model, MODELS)
    check_choice("norm", norm, NORMS)
    return (DigitsCNN if model == "cnn" else DigitsMLP)(norm, qcfg)
