"""Integer conv2d and linear layers, forward and backward, as exact matrix products (training).

Activations are kept channel-major, ``(C, N, H, W)``, so a layer's accumulators ``W @ cols`` come
out as ``(O, N*Ho*Wo)``: one row per channel, the ``(channels, n)`` layout of the BN reference.

* conv2d: ``cols = im2col(a)`` has rows in ``(c, ky, kx)`` order (``weight.reshape(O, -1)``) and
  columns in ``(n, y, x)`` order; a linear layer's ``cols`` is its input flattened per image in
  ``(c, y, x)`` order, one column per image.
* forward ``acc = W @ cols``; weight gradient ``dW = dacc @ cols.T``; input gradient
  ``col2im(W.T @ dacc)`` (the overlapping taps of a convolution add).

Every product is exact. numpy has no BLAS for int64, so :func:`exact_matmul` multiplies in float64
when the declared worst-case width of the result (a bound on every partial sum) is at most
``FLOAT64_EXACT_BITS`` = 54 signed bits (magnitudes below 2**53, where float64 holds every integer),
and in int64 otherwise (at most 62 bits).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..config import MAX_INTERMEDIATE_BITS
from ..training import FLOAT64_EXACT_BITS

__all__ = ["exact_matmul", "im2col", "col2im", "layer_cols", "input_grad"]


def exact_matmul(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """``a @ b`` (int64 in, int64 out), exact when every partial sum fits ``bits`` signed bits.

    float64 BLAS when ``bits <= 54``, else int64 (``bits`` must be <= 62).
    """
    if bits > MAX_INTERMEDIATE_BITS:
        raise ValueError(f"a {bits}-bit matrix product exceeds the {MAX_INTERMEDIATE_BITS}-bit reference")
    if bits <= FLOAT64_EXACT_BITS:
        return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def im2col(a: np.ndarray, k: int, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """(C, N, H, W) -> columns (C*k*k, N*Ho*Wo), rows (c, ky, kx), columns (n, y, x); and Ho, Wo."""
    c, n, h, w = a.shape
    ap = np.pad(a, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else a
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    win = sliding_window_view(ap, (k, k), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
    return win.transpose(0, 4, 5, 1, 2, 3).reshape(c * k * k, n * ho * wo), ho, wo


def col2im(dcols: np.ndarray, shape: tuple, k: int, stride: int, padding: int) -> np.ndarray:
    """The adjoint of :func:`im2col`: (C*k*k, N*Ho*Wo) -> (C, N, H, W), overlapping taps added."""
    c, n, h, w = shape
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    d = dcols.reshape(c, k, k, n, ho, wo)
    out = np.zeros((c, n, h + 2 * padding, w + 2 * padding), dtype=np.int64)
    for ky in range(k):           # k*k taps; each add is vectorized over channels, images, pixels
        for kx in range(k):
            out[:, :, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride] += d[:, ky, kx]
    return out[:, :, padding:padding + h, padding:padding + w]


def layer_cols(kind: str, a: np.ndarray, k: int, stride: int, padding: int) -> tuple[np.ndarray, tuple]:
    """The columns a layer multiplies and its output (C-less) shape ``(N, Ho, Wo)``."""
    if kind == "conv2d":
        cols, ho, wo = im2col(a, k, stride, padding)
        return cols, (a.shape[1], ho, wo)
    c, n, h, w = a.shape
    return a.transpose(0, 2, 3, 1).reshape(c * h * w, n), (n, 1, 1)


def input_grad(kind: str, dcols: np.ndarray, in_shape: tuple, k: int, stride: int,
               padding: int) -> np.ndarray:
    """``W.T @ dacc`` (rows of the columns) back to the (C, N, H, W) input layout."""
    if kind == "conv2d":
        return col2im(dcols, in_shape, k, stride, padding)
    c, n, h, w = in_shape
    return dcols.reshape(c, h, w, n).transpose(0, 3, 1, 2)
