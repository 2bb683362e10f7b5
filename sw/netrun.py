"""Integer network runner: executes an exported low-bit network layer by layer in int64.

Each layer is a MAC (a convolution lowered to a matrix product by im2col, or a fully connected
layer) followed either by the folded inference BN + requantizer of
:mod:`l1bn.spec.reference.infer_bn` (one multiply, one add, one rounding shift, ReLU, saturation)
or, for the last layer, by nothing: its accumulators are the logits. Every product goes through
:func:`l1bn.spec.reference.mac.matmul`, the same reference the MAC hardware is checked against.
Whole batches are processed at once; there is no Python loop over images or elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from l1bn.spec.config import MACConfig
from l1bn.spec.reference.infer_bn import FoldedBN, apply_folded
from l1bn.spec.reference.mac import acc_bits, check_operands, matmul

__all__ = ["IntLayer", "IntNet", "im2col", "conv2d_int", "linear_int", "run_layer", "run_net",
           "quantize_input"]

LAYER_TYPES = ("conv2d", "linear")


@dataclass(frozen=True)
class IntLayer:
    """One integer layer of an exported network.

    Attributes
    ----------
    name : str
    type : {"conv2d", "linear"}
        A ``linear`` layer flattens its input in (C, H, W) order first.
    in_shape, out_shape : tuple of int
        Per-image shapes, (C, H, W) for conv2d outputs, (O,) for linear outputs.
    weight : torch.Tensor
        int64; conv2d (O, C, kh, kw), linear (O, K). Signed ``w_bits`` values.
    w_bits, w_exp : int
        Real weight = ``weight * 2**-w_exp``.
    a_bits, a_exp, a_signed
        The input activations: ``a_bits`` wide, real value = ``a * 2**-a_exp``.
    stride, padding : int
        conv2d only (zero padding); 1 and 0 for linear.
    bn : FoldedBN or None
        Folded BN + requantizer producing the next layer's activations; None: output accumulators.
    out_exp : int or None
        Output scale exponent (activations: ``bn.out_bits`` wide; accumulators: ``w_exp + a_exp``).
    """

    name: str
    type: str
    in_shape: tuple
    out_shape: tuple
    weight: torch.Tensor
    w_bits: int
    w_exp: int
    a_bits: int
    a_exp: int
    a_signed: bool
    stride: int
    padding: int
    bn: FoldedBN | None
    out_exp: int | None

    @property
    def relu(self) -> bool:
        return bool(self.bn is not None and self.bn.relu)

    @property
    def k(self) -> int:
        """Reduction length of the MAC (C*kh*kw or K)."""
        return int(self.weight[0].numel())

    def mac_config(self) -> MACConfig:
        """The MAC array arithmetic this layer needs (operand widths, reduction length)."""
        return MACConfig(wbits=self.w_bits, abits=self.a_bits, signed_w=True,
                         signed_a=self.a_signed, k=self.k)

    @property
    def acc_bits(self) -> int:
        return acc_bits(self.mac_config())


@dataclass(frozen=True)
class IntNet:
    """An integer network: input quantizer description plus ordered layers."""

    in_shape: tuple
    in_bits: int
    in_exp: int
    in_signed: bool
    layers: tuple

    @property
    def out_shape(self) -> tuple:
        return tuple(self.layers[-1].out_shape)


def quantize_input(x: torch.Tensor, *, bits: int, exp: int, signed: bool = False) -> torch.Tensor:
    """Float images to integers as the QAT input quantizer does: ``clamp(floor(x * 2**exp + 1/2))``."""
    from l1bn.spec.reference.core import saturate

    q = torch.floor(x.to(torch.float64) * 2.0 ** exp + 0.5).to(torch.int64)
    return saturate(q, bits, signed)


def im2col(x: torch.Tensor, kh: int, kw: int, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """(N, C, H, W) int64 -> columns (C*kh*kw, N*Ho*Wo), rows in (c, ky, kx) order (= weight.reshape(O, -1))."""
    n, c, h, w = x.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    patches = x.unfold(2, kh, stride).unfold(3, kw, stride)  # N, C, Ho, Wo, kh, kw
    cols = patches.permute(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)
    return cols, ho, wo


def conv2d_int(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Exact integer convolution (N, C, H, W) x (O, C, kh, kw) -> int64 accumulators (N, O, Ho, Wo)."""
    o, _, kh, kw = weight.shape
    cols, ho, wo = im2col(x.to(torch.int64), kh, kw, stride, padding)
    acc = matmul(weight.reshape(o, -1), cols)  # O, N*Ho*Wo
    return acc.reshape(o, x.shape[0], ho, wo).permute(1, 0, 2, 3)


def linear_int(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Exact integer fully connected layer: (N, ...) flattened in (C, H, W) order -> (N, O)."""
    return matmul(weight, x.reshape(x.shape[0], -1).T).T


def run_layer(layer: IntLayer, x: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """One layer: MAC then (folded BN + requantizer) or raw accumulators."""
    if tuple(x.shape[1:]) != tuple(layer.in_shape):
        raise ValueError(f"layer {layer.name}: input shape {tuple(x.shape[1:])} != declared {tuple(layer.in_shape)}")
    if check:
        check_operands(layer.weight.reshape(layer.weight.shape[0], -1), x, layer.mac_config())
    if layer.type == "conv2d":
        acc = conv2d_int(x, layer.weight, layer.stride, layer.padding)
    elif layer.type == "linear":
        acc = linear_int(x, layer.weight)
    else:
        raise ValueError(f"layer {layer.name}: type={layer.type!r} is not one of {LAYER_TYPES}")
    if layer.bn is None:
        return acc
    return apply_folded(acc, layer.bn, channel_dim=1)


def run_net(net: IntNet, x_int: torch.Tensor, *, check: bool = True, trace: bool = False):
    """Integer logits (N, classes) of integer images ``x_int`` (N, C, H, W).

    With ``trace`` also returns the list of every layer's output.
    """
    if isinstance(x_int, torch.Tensor) and (x_int.is_floating_point() or x_int.is_complex()):
        raise ValueError("run_net needs integer images (N, C, H, W); quantize floats with quantize_input first")
    x = x_int.to(torch.int64)
    if tuple(x.shape[1:]) != tuple(net.in_shape):
        raise ValueError(f"input shape {tuple(x.shape[1:])} != network input {tuple(net.in_shape)}")
    outs = []
    for layer in net.layers:
        x = run_layer(layer, x, check=check)
        if trace:
            outs.append(x)
    return (x, outs) if trace else x


def random_int_net(seed: int = 0, *, w_bits: int = 4, a_bits: int = 4, in_bits: int = 4,
                   channels=(16, 32, 32), classes: int = 10, norm: str = "l1") -> IntNet:
    """A random network with the shape of the digits CNN (for tests and benches without training).

    1x8x8 -> conv3x3 (s1) -> conv3x3 s2 -> conv3x3 s2 -> linear; random BN statistics folded
    with :func:`l1bn.spec.reference.infer_bn.fold_bn`.
    """
    from l1bn.spec.reference.infer_bn import fold_bn

    g = torch.Generator().manual_seed(seed)
    wlo, whi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    layers = []
    shape, a_exp, a_signed, abits = (1, 8, 8), in_bits, False, in_bits
    for i, (c, s) in enumerate(zip(channels, (1, 2, 2), strict=False)):
        w = torch.randint(wlo, whi + 1, (c, shape[0], 3, 3), generator=g)
        w_exp = w_bits
        lay = IntLayer(name=f"conv{i + 1}", type="conv2d", in_shape=shape,
                       out_shape=(c, (shape[1] - 1) // s + 1, (shape[2] - 1) // s + 1), weight=w,
                       w_bits=w_bits, w_exp=w_exp, a_bits=abits, a_exp=a_exp, a_signed=a_signed,
                       stride=s, padding=1, bn=None, out_exp=a_bits)
        acc_exp = w_exp + a_exp
        # statistics roughly those of the accumulator, so the outputs use the activation range
        std = float(w.float().pow(2).sum((1, 2, 3)).mean().sqrt()) * (1 << abits) / 4 * 2.0 ** -acc_exp
        mean = (torch.rand(c, generator=g) - 0.5) * std
        disp = (0.5 + torch.rand(c, generator=g)) * std * (0.8 if norm == "l1" else std)
        gamma = 0.5 + torch.rand(c, generator=g)
        beta = torch.rand(c, generator=g) * 0.5
        bn = fold_bn(norm=norm, mean=mean, disp=disp, gamma=gamma, beta=beta, eps=1e-5, acc_exp=acc_exp,
                     out_exp=a_bits, acc_bits=lay.acc_bits, out_bits=a_bits, relu=True)
        layers.append(IntLayer(**{**lay.__dict__, "bn": bn}))
        shape, a_exp, abits = lay.out_shape, a_bits, a_bits
    k = shape[0] * shape[1] * shape[2]
    w = torch.randint(wlo, whi + 1, (classes, k), generator=g)
    layers.append(IntLayer(name="fc", type="linear", in_shape=shape, out_shape=(classes,), weight=w,
                           w_bits=w_bits, w_exp=w_bits, a_bits=abits, a_exp=a_exp, a_signed=False,
                           stride=1, padding=0, bn=None, out_exp=w_bits + a_exp))
    return IntNet(in_shape=(1, 8, 8), in_bits=in_bits, in_exp=in_bits, in_signed=False, layers=tuple(layers))
