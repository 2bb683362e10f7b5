"""Verilog of the BN backward units (library; the command is ``l1bn.cli.verilog``).

``sign_in=True`` (L1 only) builds ``L1BNBackwardUnit(cfg, sign_in=True)``: input field ``neg``,
x not read in pass 2.
"""

from __future__ import annotations

from l1bn.sim.rtl import to_verilog
from l1bn.spec.config import BNBackwardConfig

__all__ = ["bwd_verilog"]


def bwd_verilog(cfg: BNBackwardConfig, *, sign_in: bool = False, name: str | None = None) -> str:
    """Verilog text of the backward unit for ``cfg`` (top ``name``, default ``l1bn_bwd``/``l2bn_bwd``)."""
    from l1bn.hw import bn_backward as hw

    norm = cfg.bn.norm
    unit = hw.L1BNBackwardUnit if norm == "l1" else hw.L2BNBackwardUnit
    return to_verilog(unit(cfg, sign_in=sign_in), name or f"{norm}bn_bwd")
