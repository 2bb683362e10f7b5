"""A user's own images and labels (``.npy`` files) for a loaded export: read, check, quantize.

``l1bn infer EXPORT --images X.npy --labels y.npy`` and ``l1bn sim net`` read their data through
:func:`load_images`. ``X.npy`` holds ``N`` images of the export's input shape, ``(N, *shape)``:

* floating point: the source model's float images; they go through the export's input quantizer
  (:func:`l1bn.spec.reference.graph.quantize_images`: its preprocessing, scale, clamp and
  rounding, in float32 as the source model computes them);
* integers (or booleans): the input integers themselves, checked against the input format (for a
  bipolar input: -1 and +1).

``y.npy`` holds ``N`` integer labels in ``0 .. classes - 1``. Every problem is one ``ValueError``
line naming the file (``allow_pickle=False``: a pickled or object array is refused).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .reference.formats import check_values
from .reference.graph import IntGraph, quantize_images

__all__ = ["read_npy", "load_images"]


def read_npy(path, what: str) -> np.ndarray:
    """A numeric ``.npy`` array (no pickles), or a one-line ``ValueError`` naming ``what``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {p}: no such file")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError, UnpicklingError on bad files
        msg = " ".join(str(e).split())
        raise ValueError(f"{what} {p}: not a numeric .npy array ({type(e).__name__}: {msg})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise ValueError(f"{what} {p}: dtype {getattr(a, 'dtype', type(a).__name__)} is not numeric")
    return a


def load_images(graph: IntGraph, images, labels=None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(x_int, labels or None, kind)`` for the network ``graph`` from ``images`` (a path or an
    array) and ``labels`` (a path, an array or None); ``kind`` is ``"float"`` (quantized here) or
    ``"integer"`` (taken as the input integers)."""
    shape = tuple(graph.input.shape)
    x = read_npy(images, "--images") if isinstance(images, (str, Path)) else np.asarray(images)
    src = f"--images {images}" if isinstance(images, (str, Path)) else "images"
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{src}: shape {list(x.shape)}; the network takes (N, {', '.join(map(str, shape))}) images")
    if x.shape[0] == 0:
        raise ValueError(f"{src}: holds no images")
    if x.dtype.kind == "f":
        try:
            xi, kind = quantize_images(graph.input, x), "float"
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from None
    else:
        try:
            xi, kind = check_values(x.astype(np.int64), graph.input.fmt, f"{src} (integer images)"), "integer"
        except ValueError as e:
            raise ValueError(f"{e}; integer images are the input integers themselves (pass float images to "
                             f"quantize them)") from None
    if labels is None:
        return xi, None, kind
    y = read_npy(labels, "--labels") if isinstance(labels, (str, Path)) else np.asarray(labels)
    lsrc = f"--labels {labels}" if isinstance(labels, (str, Path)) else "labels"
    classes = int(graph.out_shape[0])
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{lsrc}: shape {list(y.shape)}; expected ({x.shape[0]},), one label per image")
    if y.dtype.kind not in "iub" and not np.array_equal(y, np.round(y)):
        raise ValueError(f"{lsrc}: labels must be integers; got dtype {y.dtype}")
    yi = y.astype(np.int64)
    if yi.size and (int(yi.min()) < 0 or int(yi.max()) >= classes):
        raise ValueError(f"{lsrc}: labels {int(yi.min())}..{int(yi.max())} are outside 0..{classes - 1}")
    return xi, yi, kind
