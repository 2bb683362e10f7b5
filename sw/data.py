"""The bundled UCI digits data (``sklearn.datasets.load_digits``: 1797 images, 8x8, 10 classes).

One fixed split for every experiment: ``train_test_split(test_size=0.2, stratify=y,
random_state=0)`` -> 1437 training and 360 test images, class-balanced. Images are float32
``(N, 1, 8, 8)`` scaled to [0, 1] (pixel / 16; the raw pixels are integers 0..16); labels int64.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["SPLIT_SEED", "TEST_FRACTION", "digits_split", "test_split", "train_split", "fit_images"]

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@functools.cache
def _split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    idx = torch.arange(len(y))
    tr, te = train_test_split(idx.numpy(), test_size=TEST_FRACTION, stratify=y.numpy(),
                              random_state=SPLIT_SEED)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return (x[tr], y[tr]), (x[te], y[te])


def digits_split() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (x, y), "test": (x, y)}`` (fresh tensors, safe to modify)."""
    (xtr, ytr), (xte, yte) = _split()
    return {"train": (xtr.clone(), ytr.clone()), "test": (xte.clone(), yte.clone())}


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1437 training images ``(N, 1, 8, 8)`` in [0, 1] and labels."""
    return digits_split()["train"]


def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The 360 test images ``(N, 1, 8, 8)`` in [0, 1] and labels."""
    return digits_split()["test"]


def fit_images(x, c: int, h: int, w: int):
    """8x8 images ``(N, 1, 8, 8)`` (numpy float32) fitted to a model input ``(c, h, w)``: upscaled
    by the largest integer factor that fits (nearest neighbour), zero-padded (centred), the gray
    channel repeated ``c`` times. Values are unchanged (a numpy array comes back)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    f = max(1, min(h // x.shape[2], w // x.shape[3]))
    up = x.repeat(f, axis=2).repeat(f, axis=3)[:, :, :h, :w]
    top, left = (h - up.shape[2]) // 2, (w - up.shape[3]) // 2
    out = np.zeros((x.shape[0], 1, h, w), np.float32)
    out[:, :, top:top + up.shape[2], left:left + up.shape[3]] = up
    return out.repeat(c, axis=1)
