"""Run-time width checks of the training reference: every value against its declared width.

The configs bound every intermediate statically (``IntTrainConfig.widths``); this module checks the
values actually computed against that table, so that a wrong bound or a wrapped int64 is caught
where it happens, with the intermediate's name, instead of silently corrupting a training run.
"""

from __future__ import annotations

import numpy as np

from .core import int_range

__all__ = ["WidthError", "WidthChecker"]


class WidthError(ValueError):
    """A computed value does not fit the width the contract declares for it."""


class WidthChecker:
    """``check(name, values)`` against ``widths[name]`` signed bits (a ``{name: bits}`` table)."""

    def __init__(self, widths: dict):
        self.widths = dict(widths)

    def check(self, name: str, values) -> np.ndarray:
        """Return ``values`` (int64 array) or raise :class:`WidthError` naming ``name``."""
        a = np.asarray(values)
        if a.dtype.kind not in "iub":
            raise WidthError(f"{name}: expected integers, got dtype {a.dtype}")
        if name not in self.widths:
            raise WidthError(f"{name}: no declared width (not in the contract's width table)")
        bits = self.widths[name]
        if a.size:
            lo, hi = int_range(bits)
            amin, amax = int(a.min()), int(a.max())
            if amin < lo or amax > hi:
                bad = amin if amin < lo else amax
                raise WidthError(f"{name}: value {bad} does not fit its declared {bits}-bit signed "
                                 f"width ({lo}..{hi}); docs/arith/training.md")
        return a
