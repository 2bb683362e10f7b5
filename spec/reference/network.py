"""The reference network executor: an exported low-bit network, layer by layer, in numpy int64.

Each layer is a MAC (a convolution lowered to a matrix product by im2col, or a fully connected
layer) followed either by the folded inference BN + requantizer of
:mod:`l1bn.spec.reference.infer_bn` (one multiply, one add, one rounding shift, ReLU, saturation)
or, for the last layer, by nothing: its accumulators are the logits. Every product goes through
:func:`l1bn.spec.reference.mac.matmul`, the same reference the MAC hardware is checked against.
Whole batches are processed at once; there is no Python loop over images or elements.

numpy is the interface: weights, folded-BN constants, images and results are int64 arrays. A torch
CPU tensor passed as images is read through ``__array__`` and the result comes back as a tensor
(:func:`l1bn.spec.reference.core.like`); nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..config import MACConfig
from ..norms import norm_spec
from .core import as_int64, int_range, like, plain
from .infer_bn import FoldedBN, apply_folded, fold_bn
from .mac import acc_bits, check_operands, matmul

__all__ = ["LAYER_TYPES", "IntLayer", "IntNet", "im2col", "conv2d_int", "linear_int", "run_layer",
           "run_net", "quantize_input", "random_int_net"]

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
    weight : numpy.ndarray
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
    weight: np.ndarray
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
        return int(np.prod(np.shape(self.weight)[1:], dtype=np.int64))

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


def quantize_input(x, *, bits: int, exp: int, signed: bool = False):
    """Float images to integers as the QAT input quantizer does: ``clamp(floor(x * 2**exp + 1/2))``.

    ``x`` is a float array (or tensor); the result is int64 in the same array type.
    """
    xf = np.asarray(plain(x), dtype=np.float64)
    q = np.floor(xf * 2.0 ** exp + 0.5)
    lo, hi = int_range(bits, signed)
    return like(np.clip(q, lo, hi).astype(np.int64), x)


def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """(N, C, H, W) int64 -> ``(columns, Ho, Wo)``: columns (C*kh*kw, N*Ho*Wo), rows in (c, ky, kx)
    order (= ``weight.reshape(O, -1)``), columns in (n, oy, ox) order."""
    xa = as_int64(x, "x")
    n, c, h, w = xa.shape
    if padding:
        xa = np.pad(xa, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    patches = sliding_window_view(xa, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
    cols = patches.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)   # N, C, Ho, Wo, kh, kw ->
    return like(cols, x), ho, wo


def _conv(xa: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    o = w.shape[0]
    cols, ho, wo = im2col(xa, w.shape[2], w.shape[3], stride, padding)
    acc = matmul(w.reshape(o, -1), cols)                      # O, N*Ho*Wo
    return acc.reshape(o, xa.shape[0], ho, wo).transpose(1, 0, 2, 3)


def conv2d_int(x, weight, stride: int = 1, padding: int = 0):
    """Exact integer convolution (N, C, H, W) x (O, C, kh, kw) -> int64 accumulators (N, O, Ho, Wo)."""
    return like(np.ascontiguousarray(_conv(as_int64(x, "x"), as_int64(weight, "weight"), stride, padding)), x)


def linear_int(x, weight):
    """Exact integer fully connected layer: (N, ...) flattened in (C, H, W) order -> (N, O)."""
    xa = as_int64(x, "x")
    return like(np.ascontiguousarray(matmul(as_int64(weight, "weight"), xa.reshape(xa.shape[0], -1).T).T), x)


def _layer(layer: IntLayer, x: np.ndarray, check: bool) -> np.ndarray:
    if tuple(x.shape[1:]) != tuple(layer.in_shape):
        raise ValueError(f"layer {layer.name}: input shape {tuple(x.shape[1:])} != declared {tuple(layer.in_shape)}")
    w = as_int64(layer.weight, "weight")
    if check:
        check_operands(w.reshape(w.shape[0], -1), x, layer.mac_config())
    if layer.type == "conv2d":
        acc = _conv(x, w, layer.stride, layer.padding)
    elif layer.type == "linear":
        acc = matmul(w, x.reshape(x.shape[0], -1).T).T
    else:
        raise ValueError(f"layer {layer.name}: type={layer.type!r} is not one of {LAYER_TYPES}")
    acc = np.ascontiguousarray(acc)
    return acc if layer.bn is None else apply_folded(acc, layer.bn, channel_dim=1)


def run_layer(layer: IntLayer, x, *, check: bool = True):
    """One layer: MAC then (folded BN + requantizer) or raw accumulators (int64, array type of ``x``)."""
    return like(_layer(layer, as_int64(x, "x"), check), x)


def run_net(net: IntNet, x_int, *, check: bool = True, trace: bool = False):
    """Integer logits (N, classes) of integer images ``x_int`` (N, C, H, W).

    With ``trace`` also returns the list of every layer's output. Results have the array type of
    ``x_int`` (numpy, or torch for a tensor).
    """
    x = np.asarray(plain(x_int))
    if x.dtype.kind not in "iub":
        raise ValueError("run_net needs integer images (N, C, H, W); quantize floats with quantize_input first")
    x = x.astype(np.int64, copy=False)
    if tuple(x.shape[1:]) != tuple(net.in_shape):
        raise ValueError(f"input shape {tuple(x.shape[1:])} != network input {tuple(net.in_shape)}")
    outs = []
    for layer in net.layers:
        x = _layer(layer, x, check)
        if trace:
            outs.append(like(x, x_int))
    return (like(x, x_int), outs) if trace else like(x, x_int)


def random_int_net(seed: int = 0, *, w_bits: int = 4, a_bits: int = 4, in_bits: int = 4,
                   channels=(16, 32, 32), classes: int = 10, norm: str = "l1") -> IntNet:
    """A random network with the shape of the digits CNN (for tests and benches without training).

    1x8x8 -> conv3x3 (s1) -> conv3x3 s2 -> conv3x3 s2 -> linear; random BN statistics folded
    with :func:`l1bn.spec.reference.infer_bn.fold_bn`. ``seed`` seeds a numpy ``default_rng``.
    """
    rng = np.random.default_rng(seed)
    wlo, whi = int_range(w_bits)
    layers = []
    shape, a_exp, a_signed, abits = (1, 8, 8), in_bits, False, in_bits
    for i, (c, s) in enumerate(zip(channels, (1, 2, 2), strict=False)):
        w = rng.integers(wlo, whi + 1, (c, shape[0], 3, 3), dtype=np.int64)
        w_exp = w_bits
        lay = IntLayer(name=f"conv{i + 1}", type="conv2d", in_shape=shape,
                       out_shape=(c, (shape[1] - 1) // s + 1, (shape[2] - 1) // s + 1), weight=w,
                       w_bits=w_bits, w_exp=w_exp, a_bits=abits, a_exp=a_exp, a_signed=a_signed,
                       stride=s, padding=1, bn=None, out_exp=a_bits)
        acc_exp = w_exp + a_exp
        # statistics roughly those of the accumulator, so the outputs use the activation range
        std = float(np.sqrt((w.astype(np.float64) ** 2).sum((1, 2, 3)).mean())) * (1 << abits) / 4 * 2.0 ** -acc_exp
        mean = (rng.random(c) - 0.5) * std
        # the running statistic: about 0.8 std where sigma is a constant times it (the mean absolute
        # deviation of L1, range's C(n) * range), the variance where sigma is its square root (L2)
        disp = (0.5 + rng.random(c)) * std * (0.8 if norm_spec(norm).sigma_kind == "const" else std)
        gamma = 0.5 + rng.random(c)
        beta = rng.random(c) * 0.5
        bn = fold_bn(norm=norm, mean=mean, disp=disp, gamma=gamma, beta=beta, eps=1e-5, acc_exp=acc_exp,
                     out_exp=a_bits, acc_bits=lay.acc_bits, out_bits=a_bits, relu=True)
        layers.append(IntLayer(**{**lay.__dict__, "bn": bn}))
        shape, a_exp, abits = lay.out_shape, a_bits, a_bits
    k = shape[0] * shape[1] * shape[2]
    w = rng.integers(wlo, whi + 1, (classes, k), dtype=np.int64)
    layers.append(IntLayer(name="fc", type="linear", in_shape=shape, out_shape=(classes,), weight=w,
                           w_bits=w_bits, w_exp=w_bits, a_bits=abits, a_exp=a_exp, a_signed=False,
                           stride=1, padding=0, bn=None, out_exp=w_bits + a_exp))
    return IntNet(in_shape=(1, 8, 8), in_bits=in_bits, in_exp=in_bits, in_signed=False, layers=tuple(layers))
