"""Verilog of the low-bit MAC array (library; the command is ``l1bn.cli.verilog``)."""

from __future__ import annotations

from l1bn.sim.rtl import to_verilog
from l1bn.spec.config import MACConfig

__all__ = ["mac_verilog"]


def mac_verilog(cfg: MACConfig, name: str = "mac_array") -> str:
    """Verilog text of ``MACArray(cfg)`` with top ``name``."""
    from l1bn.hw.mac_array import MACArray

    return to_verilog(MACArray(cfg), name)
