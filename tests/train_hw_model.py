"""A numpy model of the training accelerator's MAC schedule (test helper).

It runs a :class:`~l1bn.hw.train.plan.MacOp` exactly as the hardware walks it (row tiles, the
tap lists, the word and element addresses, the output addresses) on flat numpy memories, so the
tests can check the plan's layouts and tap lists against the integer reference before any
hardware runs, and the hardware tests can preload memories in the plan's layouts.
"""

from __future__ import annotations

import numpy as np
from l1bn.hw.train.plan import MacOp, TrainPlan


def run_mac_op(op: MacOp, rows: int, wmem: np.ndarray, amem: np.ndarray, out: np.ndarray) -> list:
    """Execute ``op`` on ``wmem`` ((words, rows) int64), ``amem`` (elements) into ``out``
    (elements, modified in place). Returns the tile results in issue order (lists of ``rows``)."""
    tiles = []
    for r in range(op.nr):
        for a in range(op.na):
            for b in range(op.nb):
                acc = np.zeros(rows, dtype=np.int64)
                for c in range(op.nc):
                    for e1, e2, zero in op.lists[b]:
                        w = wmem[op.wb + r * op.swr + c * op.swc + e1]
                        x = 0 if zero else int(amem[op.ab + a * op.saa + c * op.sac + e2])
                        acc += w * x
                for i in range(rows):
                    if r * rows + i < op.rows:
                        out[op.ob + (r * rows + i) * op.sorow + a * op.soa + b] = acc[i]
                tiles.append(acc.tolist())
    return tiles


def fw_words(plan: TrainPlan, i: int, w: np.ndarray) -> np.ndarray:
    """The ``fw`` words of layer ``i`` (forward weights ``w`` of shape (O, C, kh, kw) or (O, K)):
    word (o-tile, c, tap), lane o % R."""
    g, R = plan.layers[i], plan.rows
    w = w.reshape(g.out, g.cin, g.taps)
    out = np.zeros((-(-g.out // R) * g.k, R), dtype=np.int64)
    for o in range(g.out):
        out[(o // R) * g.k:(o // R + 1) * g.k, o % R] = w[o].reshape(-1)
    return out


def fwt_words(plan: TrainPlan, i: int, w: np.ndarray) -> np.ndarray:
    """The ``fwt`` words of layer ``i``: word (c-tile, o, tap), lane c % R."""
    g, R = plan.layers[i], plan.rows
    w = w.reshape(g.out, g.cin, g.taps)
    out = np.zeros((-(-g.cin // R) * g.out * g.taps, R), dtype=np.int64)
    for c in range(g.cin):
        base = (c // R) * g.out * g.taps
        out[base:base + g.out * g.taps, c % R] = w[:, c, :].reshape(-1)
    return out


def daccw_words(plan: TrainPlan, i: int, dacc: np.ndarray) -> np.ndarray:
    """The ``daccw`` words of layer ``i`` from ``dacc`` (O, N*HWo): word (o-tile, p), lane o % R."""
    g, R = plan.layers[i], plan.rows
    p = dacc.shape[1]
    out = np.zeros((-(-g.out // R) * p, R), dtype=np.int64)
    for o in range(g.out):
        out[(o // R) * p:(o // R + 1) * p, o % R] = dacc[o]
    return out
