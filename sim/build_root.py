"""Where builds, simulator folders and the flow cache go."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_build_root"]


def default_build_root() -> Path:
    """``$L1BN_BUILD_DIR`` or ``./build``."""
    return Path(os.environ.get("L1BN_BUILD_DIR", "build")).resolve()
