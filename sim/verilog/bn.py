"""Verilog of the training-mode BN forward units (library; the command is ``l1bn.cli.verilog``)."""

from __future__ import annotations

from l1bn.sim.rtl import to_verilog
from l1bn.spec.config import BNConfig

__all__ = ["bn_verilog", "describe"]


def bn_verilog(cfg: BNConfig, name: str | None = None) -> str:
    """Verilog text of the forward unit the norm registry names for ``cfg.norm``
    (``L1BNUnit``, ``L2BNUnit``, ``RangeBNUnit``), top ``name`` (default ``<norm>bn``)."""
    from l1bn.hw.bn_unit import bn_unit_for

    return to_verilog(bn_unit_for(cfg), name or f"{cfg.norm}bn")


def describe(cfg: BNConfig) -> list[str]:
    """Lines that summarize a unit: widths, per-channel cycles, latency, throughput."""
    from l1bn.hw.bn_unit import bn_latency_cycles, channel_overhead_cycles, recip_cycles

    full = cfg.beats >= channel_overhead_cycles(cfg)
    return [
        f"widths: mu {cfg.mean_bits}, dispersion sum {cfg.disp_sum_bits}, s {cfg.disp_bits}, "
        f"sigma {cfg.sigma_bits}, inv {cfg.inv_bits}, xhat {cfg.xhat_bits}, gamma*xhat {cfg.affine_bits} bits",
        f"per channel: {cfg.beats} beats per pass, reciprocal{'/sqrt' if cfg.norm_spec.sigma_kind == 'sqrt' else ''} "
        f"{recip_cycles(cfg)} cycles, overhead {channel_overhead_cycles(cfg)} cycles",
        f"latency {bn_latency_cycles(cfg)} cycles per batch of {cfg.channels} channel(s) (no stalls); "
        + (f"steady state {cfg.lanes} element(s)/cycle" if full else
           f"n/lanes < {channel_overhead_cycles(cfg)}: below {cfg.lanes} element(s)/cycle"),
    ]
