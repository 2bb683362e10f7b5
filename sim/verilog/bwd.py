"""Verilog of the BN backward units (library; the command is ``l1bn.cli.verilog``).

The unit is the one the norm registry names (``hw_backward``). ``sign_in=True`` (only a norm
whose pass 2 needs only the sign, L1) builds it with its 1-bit input field ``neg``: x is not read
in pass 2.
"""

from __future__ import annotations

from l1bn.sim.rtl import to_verilog
from l1bn.spec.config import BNBackwardConfig

__all__ = ["bwd_verilog"]


def bwd_verilog(cfg: BNBackwardConfig, *, sign_in: bool = False, name: str | None = None) -> str:
    """Verilog text of the backward unit for ``cfg`` (top ``name``, default ``<norm>bn_bwd``)."""
    from l1bn.hw.bn_backward import backward_unit_for

    return to_verilog(backward_unit_for(cfg, sign_in=sign_in), name or f"{cfg.bn.norm}bn_bwd")
