"""Network shapes for operation counts: the layers of a training network, without weights.

A :class:`NetShape` is an input shape ``(C, H, W)`` and a tuple of layers:

- :class:`Conv` (square kernel, stride, zero padding) and :class:`Linear` (flattens its input in
  ``(c, y, x)`` order): the MAC layers; ``bn`` says whether training-mode BN follows, ``act``
  whether ReLU and the activation quantizer follow it;
- :class:`MaxPool` (square window, stride), :class:`GlobalAvgPool`;
- :class:`Residual`: a body and a shortcut (empty = identity) whose outputs are added, then ReLU
  and the activation quantizer when ``act``.

The integer training contract (docs/arith/training.md) covers chains of conv2d and linear layers,
each but the last followed by BN, ReLU and the activation quantizer:
:func:`from_train_config` turns an :class:`~l1bn.spec.training.IntTrainConfig` into that shape.
Pooling and residual blocks extend it for the standard shapes :data:`NETWORKS` (the digits CNN,
FINN's CNV and a CIFAR ResNet-18), used by :mod:`l1bn.spec.opcount`.

Pure Python; shapes only (no data, no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import check_int

__all__ = ["Conv", "Linear", "MaxPool", "GlobalAvgPool", "Residual", "NetShape", "NETWORKS",
           "network_names", "network_shape", "from_train_config", "cnv_shape", "resnet18_shape"]


@dataclass(frozen=True, kw_only=True)
class Conv:
    """A conv2d layer: ``out`` channels, ``kernel`` x ``kernel``, ``stride``, zero ``padding``;
    followed by BN when ``bn`` and by ReLU + activation quantizer when ``act``."""

    out: int
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    bn: bool = True
    act: bool = True

    def __post_init__(self):
        check_int("out", self.out, 1, 65536)
        check_int("kernel", self.kernel, 1, 15)
        check_int("stride", self.stride, 1, 8)
        check_int("padding", self.padding, 0, self.kernel - 1)
        _check_flags(self)


@dataclass(frozen=True, kw_only=True)
class Linear:
    """A fully connected layer of ``out`` features (flattens its input per image)."""

    out: int
    bn: bool = True
    act: bool = True

    def __post_init__(self):
        check_int("out", self.out, 1, 65536)
        _check_flags(self)


@dataclass(frozen=True, kw_only=True)
class MaxPool:
    """Max pooling over ``kernel`` x ``kernel`` windows with ``stride`` (default: the kernel)."""

    kernel: int = 2
    stride: int = 0

    def __post_init__(self):
        check_int("kernel", self.kernel, 1, 15)
        if self.stride == 0:
            object.__setattr__(self, "stride", self.kernel)
        check_int("stride", self.stride, 1, 15)


@dataclass(frozen=True, kw_only=True)
class GlobalAvgPool:
    """The mean over every position of each channel: (C, H, W) -> (C, 1, 1)."""


@dataclass(frozen=True, kw_only=True)
class Residual:
    """``act(body(x) + shortcut(x))``; an empty ``shortcut`` is the identity."""

    body: tuple
    shortcut: tuple = ()
    act: bool = True

    def __post_init__(self):
        for name in ("body", "shortcut"):
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)) or not all(isinstance(la, LAYER_TYPES) for la in v):
                raise ValueError(f"Residual {name}={v!r} must be a tuple of layers")
            object.__setattr__(self, name, tuple(v))
        if not self.body:
            raise ValueError("a Residual needs a non-empty body")
        _check_flags(self, ("act",))


def _check_flags(obj, names=("bn", "act")):
    for name in names:
        if not isinstance(getattr(obj, name), bool):
            raise ValueError(f"{name}={getattr(obj, name)!r} must be True or False")


LAYER_TYPES = (Conv, Linear, MaxPool, GlobalAvgPool, Residual)


@dataclass(frozen=True, kw_only=True)
class NetShape:
    """A network's input shape ``(C, H, W)`` and its layers (``name`` for reports).

    The last MAC layer must be a :class:`Linear` without BN: its accumulators are the logits, as
    in the training contract."""

    name: str
    in_shape: tuple
    layers: tuple

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} must be a non-empty string")
        shp = tuple(self.in_shape) if isinstance(self.in_shape, (tuple, list)) else None
        if shp is None or len(shp) != 3:
            raise ValueError(f"in_shape={self.in_shape!r} must be (C, H, W)")
        for what, v in zip(("C", "H", "W"), shp, strict=True):
            check_int(f"in_shape {what}", v, 1, 65536)
        object.__setattr__(self, "in_shape", shp)
        layers = tuple(self.layers) if isinstance(self.layers, (tuple, list)) else ()
        if not layers or not all(isinstance(la, LAYER_TYPES) for la in layers):
            raise ValueError(f"layers={self.layers!r} must be a non-empty tuple of layers")
        object.__setattr__(self, "layers", layers)
        last = layers[-1]
        if not isinstance(last, Linear) or last.bn or last.act:
            raise ValueError("the last layer must be Linear(bn=False, act=False): its accumulators are the logits")


def from_train_config(cfg, *, name: str = "digits") -> NetShape:
    """The shape of the integer training contract's chain network ``cfg``
    (:class:`~l1bn.spec.training.IntTrainConfig`): every layer but the last followed by BN, ReLU
    and the activation quantizer."""
    out = []
    for i, la in enumerate(cfg.layers):
        last = i == len(cfg.layers) - 1
        if la.kind == "conv2d":
            out.append(Conv(out=la.out, kernel=la.kernel, stride=la.stride, padding=la.padding,
                            bn=not last, act=not last))
        else:
            out.append(Linear(out=la.out, bn=not last, act=not last))
    return NetShape(name=name, in_shape=tuple(cfg.in_shape), layers=tuple(out))


def cnv_shape() -> NetShape:
    """FINN's CNV on 32x32x3: 3x3 convolutions without padding 64, 64 | maxpool 2 | 128, 128 |
    maxpool 2 | 256, 256, then fully connected 512, 512, 10; BN after every layer but the last
    (59,461,376 MACs and 1,542,848 weights per image)."""
    conv = [Conv(out=c, kernel=3) for c in (64, 64, 128, 128, 256, 256)]
    return NetShape(name="cnv", in_shape=(3, 32, 32),
                    layers=(conv[0], conv[1], MaxPool(kernel=2), conv[2], conv[3], MaxPool(kernel=2),
                            conv[4], conv[5], Linear(out=512), Linear(out=512),
                            Linear(out=10, bn=False, act=False)))


def _basic_block(out: int, stride: int, in_ch: int) -> Residual:
    body = (Conv(out=out, kernel=3, stride=stride, padding=1),
            Conv(out=out, kernel=3, stride=1, padding=1, act=False))
    short = () if stride == 1 and in_ch == out else (Conv(out=out, kernel=1, stride=stride, act=False),)
    return Residual(body=body, shortcut=short)


def resnet18_shape() -> NetShape:
    """CIFAR ResNet-18 on 32x32x3: conv3x3 64 (padding 1), four stages of two basic blocks
    (64, 128, 256, 512 channels; stride 2 and a 1x1 conv + BN shortcut at the first block of
    stages 2-4), global average pooling, linear 10."""
    layers, ch = [Conv(out=64, kernel=3, stride=1, padding=1)], 64
    for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(_basic_block(out, stride, ch))
        layers.append(_basic_block(out, 1, out))
        ch = out
    layers += [GlobalAvgPool(), Linear(out=10, bn=False, act=False)]
    return NetShape(name="resnet18", in_shape=(3, 32, 32), layers=tuple(layers))


def _digits() -> NetShape:
    from .training import IntTrainConfig

    return from_train_config(IntTrainConfig(), name="digits")


#: The standard shapes by name: the digits CNN of the training contract (``IntTrainConfig``'s
#: default), FINN's CNV and a CIFAR ResNet-18.
NETWORKS = {"digits": _digits, "cnv": cnv_shape, "resnet18": resnet18_shape}


def network_names() -> tuple[str, ...]:
    return tuple(NETWORKS)


def network_shape(name: str) -> NetShape:
    """The standard shape ``name`` (one of :data:`NETWORKS`)."""
    if name not in NETWORKS:
        raise ValueError(f"network={name!r} is unknown; allowed {', '.join(NETWORKS)}")
    return NETWORKS[name]()
