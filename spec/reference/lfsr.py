"""The xorshift LFSR bank that drives stochastic rounding and shuffling (docs/arith/training.md).

Each lane is a 32-bit xorshift register (Marsaglia, "Xorshift RNGs", J. Stat. Softw. 2003; the
triple (13, 17, 5)). It is a linear feedback shift register over GF(2) (Brent 2004) with period
``2**32 - 1`` on every non-zero state; one step is three shift-xor layers of wires::

    x ^= (x << 13) mod 2**32;  x ^= x >> 17;  x ^= (x << 5) mod 2**32

A bank of ``L`` lanes is seeded from one integer ``seed`` and a ``salt`` (which bank) by
:func:`lfsr_seed`. A consumer of ``E`` random words takes ``ceil(E / L)`` rows: for each row every
lane steps once and element ``row * L + lane`` receives that lane's new state (the unused lanes of
the last row step too). So the words a tensor receives depend only on the bank state and ``E``,
and numpy computes a row of ``L`` lanes at once (no loop over elements).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MASK32", "xorshift32", "xorshift32_int", "lfsr_seed", "lfsr_draw"]

MASK32 = (1 << 32) - 1
_GOLDEN = 0x9E3779B9          # floor(2**32 / phi): spreads the lane numbers over 32 bits
_SALT = 0x85EBCA6B            # separates the banks of one seed (murmur3's mixing constant)
_WARMUP = 16                  # steps after seeding, so neighbouring lanes decorrelate


def xorshift32_int(x: int) -> int:
    """One step of one lane, in plain Python integers (the naive model of :func:`xorshift32`)."""
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x


def xorshift32(state: np.ndarray) -> np.ndarray:
    """One step of every lane of a uint32 array (returns a new array)."""
    x = state.astype(np.uint32, copy=True)
    x ^= x << np.uint32(13)
    x ^= x >> np.uint32(17)
    x ^= x << np.uint32(5)
    return x


def lfsr_seed(seed: int, lanes: int, salt: int = 0) -> np.ndarray:
    """The initial bank: lane ``i`` starts at
    ``(seed + salt * 0x85EBCA6B + (i + 1) * 0x9E3779B9) mod 2**32`` (1 where that is 0) and steps
    16 times."""
    if lanes < 1:
        raise ValueError(f"lanes={lanes} must be >= 1")
    base = (int(seed) + int(salt) * _SALT) & MASK32
    # (i + 1) * golden mod 2**32 in uint64 (exact), then the base, mod 2**32
    i = np.arange(1, lanes + 1, dtype=np.uint64)
    x = ((i * np.uint64(_GOLDEN) + np.uint64(base)) & np.uint64(MASK32)).astype(np.uint32)
    x[x == 0] = 1
    for _ in range(_WARMUP):
        x = xorshift32(x)
    return x


def lfsr_draw(state: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` words (uint32, in element order) and the bank's new state.

    ``ceil(count / lanes)`` rows, one step of every lane per row (module docstring).
    """
    lanes = state.shape[0]
    rows = -(-count // lanes) if count > 0 else 0
    out = np.empty((rows, lanes), dtype=np.uint32)
    x = state
    for r in range(rows):   # one iteration per row of `lanes` words, not per element
        x = xorshift32(x)
        out[r] = x
    return out.reshape(-1)[:count], x
