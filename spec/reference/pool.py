"""Pooling and the residual add on integer activations (numpy int64, whole batches).

* :func:`maxpool_int`: the largest value of each ``kh x kw`` window (stride, symmetric padding);
  padded positions never win (ONNX ``MaxPool`` pads with -inf). Max commutes with every
  increasing map, so pooling the integers equals pooling the real values.
* :func:`avgpool_sum`: the *sum* of each window, zero padding counted (ONNX ``AveragePool`` with
  ``count_include_pad=1``; global average pooling is the window of the whole map). The division
  by ``kh * kw`` is not done here: it is a scale (the sum's real value is ``sum * s / (kh*kw)``),
  and a requantizer after the node (or the next MAC) folds it. The sum is exact.
* :func:`add_int`: ``a * ka + b * kb`` with small integer multipliers that put the two inputs on
  one grid (``ka = kb = 1`` when their scales are equal, as in Brevitas's residual blocks, whose
  two branches share one quantizer).

Shapes: ``(N, C, H, W)`` in and out; output size ``(H + 2p - k) // s + 1`` (ONNX ``ceil_mode=0``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .core import as_int64, like

__all__ = ["pool_out_size", "maxpool_int", "avgpool_sum", "add_int"]

# below every value an int64 activation or sum of the reference can take (they stay within 62 bits)
_NEG = -(1 << 62)


def pool_out_size(size: int, k: int, stride: int, padding: int) -> int:
    """Output length of a window of ``k`` with ``stride`` over ``size`` padded by ``padding`` on
    both sides (floor: ONNX ``ceil_mode=0``, PyTorch's default)."""
    return (size + 2 * padding - k) // stride + 1


def _windows(x: np.ndarray, kernel: tuple, stride: int, padding: int, fill: int) -> np.ndarray:
    kh, kw = kernel
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    ho = pool_out_size(x.shape[2] - 2 * padding, kh, stride, padding)
    wo = pool_out_size(x.shape[3] - 2 * padding, kw, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh}x{kw} window with padding {padding} does not fit a {x.shape[2] - 2 * padding}x"
                         f"{x.shape[3] - 2 * padding} map")
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]


def maxpool_int(x, kernel: tuple, stride: int, padding: int = 0):
    """Max over each window, (N, C, H, W) int64 -> (N, C, Ho, Wo); padding never wins."""
    xa = as_int64(x, "x")
    if padding and (padding >= kernel[0] or padding >= kernel[1]):
        raise ValueError(f"padding {padding} must be smaller than the kernel {list(kernel)} (a window of padding only)")
    return like(np.ascontiguousarray(_windows(xa, kernel, stride, padding, _NEG).max(axis=(4, 5))), x)


def avgpool_sum(x, kernel: tuple, stride: int, padding: int = 0):
    """Sum over each window, zero padding counted, (N, C, H, W) int64 -> (N, C, Ho, Wo)."""
    xa = as_int64(x, "x")
    return like(np.ascontiguousarray(_windows(xa, kernel, stride, padding, 0).sum(axis=(4, 5))), x)


def add_int(a, b, ka: int = 1, kb: int = 1):
    """``a * ka + b * kb`` elementwise (equal shapes), int64."""
    aa, bb = as_int64(a, "a"), as_int64(b, "b")
    if aa.shape != bb.shape:
        raise ValueError(f"add: input shapes {list(aa.shape)} and {list(bb.shape)} differ")
    return like(aa * int(ka) + bb * int(kb), a)
