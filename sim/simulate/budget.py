"""What a simulation will cost, estimated before it starts: memory (``sim bn``, ``sim mac``) and
time (``sim mac``).

The stimulus and the expected values travel as Python lists, then as JSON text to the bench,
which holds them again as lists inside the simulator process, next to its results. Measured with
``l1bn sim bn`` (Icarus, width 8; peak resident memory of the client and of ``vvp``, summed):
262,144 elements cost 33 MB more than a batch of 8, 1,048,576 elements 154 MB more, so about
150 bytes per value (:data:`BYTES_PER_VALUE`) over a base of about 370 MB (:data:`BASE_BYTES`).
The largest configuration ``BNConfig`` accepts (4096 channels x n 65536: x and y, 2 x 268M values)
would need about 75 GB:
it is refused up front instead of dying with a ``MemoryError``.

Time of ``sim mac`` on Icarus: a 16 x 16 array (8-bit) took 12.2 ms per simulated cycle (2 tiles,
K = 256 and K = 4096: 29.5 s and 123.1 s wall, builds included, on the shared 2-core machine),
about 48 us per MAC per cycle (:data:`ICARUS_S_PER_MAC_CYCLE`). Verilator simulates the
accelerator 31.5 times as many cycles per second as Icarus (docs/accelerator.md: 208,868 against
6,628), which :data:`VERILATOR_SPEEDUP` applies. These are estimates to warn with, not promises.
"""

from __future__ import annotations

import os

__all__ = ["BYTES_PER_VALUE", "BASE_BYTES", "ICARUS_S_PER_MAC_CYCLE", "VERILATOR_SPEEDUP", "LONG_S",
           "available_memory", "check_memory", "mac_cycles", "mac_seconds", "format_seconds"]

BYTES_PER_VALUE = 150
BASE_BYTES = 370 * 2**20
ICARUS_S_PER_MAC_CYCLE = 48e-6
VERILATOR_SPEEDUP = 31.5
#: a simulation estimated longer than this (seconds) is announced before it starts
LONG_S = 60.0


def available_memory() -> int:
    """Bytes of memory available to a new process (``MemAvailable`` of /proc/meminfo)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(values: int, *, what: str, hint: str) -> int:
    """Refuse (``ValueError``, one line) a simulation whose ``values`` would need more memory than
    is available; return the estimate in bytes."""
    need = BASE_BYTES + values * BYTES_PER_VALUE
    have = available_memory()
    if need > have:
        raise ValueError(f"{what}: {values:,} values need about {need / 2**30:.1f} GB of memory to simulate "
                         f"({have / 2**30:.1f} GB available); {hint}")
    return need


def mac_cycles(cfg, tiles: int, k: int) -> int:
    """Cycles of ``tiles`` tiles of ``k`` K-steps streamed back to back (docs/mac_array.md):
    ``(tiles - 1) * max(k, rows + 1) + k + rows + 4``."""
    return (tiles - 1) * max(k, cfg.rows + 1) + k + cfg.rows + 4


def mac_seconds(cfg, tiles: int, k: int, simulator: str) -> float:
    """Estimated seconds to simulate them (see the module docstring)."""
    s = mac_cycles(cfg, tiles, k) * cfg.rows * cfg.cols * ICARUS_S_PER_MAC_CYCLE
    return s / VERILATOR_SPEEDUP if simulator == "verilator" else s


def format_seconds(s: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"1 h 48 min"``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
