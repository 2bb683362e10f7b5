"""Verilog of the training-mode BN forward units (library; the command is ``l1bn.cli.verilog``)."""

from __future__ import annotations

from l1bn.spec.config import BNConfig

__all__ = ["bn_verilog", "describe"]


def bn_verilog(cfg: BNConfig, name: str | None = None) -> str:
    """Verilog text of ``L1BNUnit(cfg)`` or ``L2BNUnit(cfg)`` (by ``cfg.norm``), top ``name``
    (default ``l1bn`` / ``l2bn``)."""
    from l1bn.hw import bn_unit as hw
    from l1bn.sim.runner import to_verilog

    unit = hw.L1BNUnit if cfg.norm == "l1" else hw.L2BNUnit
    return to_verilog(unit(cfg), name or f"{cfg.norm}bn")


def describe(cfg: BNConfig) -> list[str]:
    """Lines that summarize a unit: widths, per-channel cycles, latency, throughput."""
    from l1bn.hw.bn_unit import bn_latency_cycles, channel_overhead_cycles, recip_cycles

    full = cfg.beats >= channel_overhead_cycles(cfg)
    return [
        f"widths: mu {cfg.mean_bits}, dispersion sum {cfg.disp_sum_bits}, s {cfg.disp_bits}, "
        f"sigma {cfg.sigma_bits}, inv {cfg.inv_bits}, xhat {cfg.xhat_bits}, gamma*xhat {cfg.affine_bits} bits",
        f"per channel: {cfg.beats} beats per pass, reciprocal{'' if cfg.norm == 'l1' else '/sqrt'} "
        f"{recip_cycles(cfg)} cycles, overhead {channel_overhead_cycles(cfg)} cycles",
        f"latency {bn_latency_cycles(cfg)} cycles per batch of {cfg.channels} channel(s) (no stalls); "
        + (f"steady state {cfg.lanes} element(s)/cycle" if full else
           f"n/lanes < {channel_overhead_cycles(cfg)}: below {cfg.lanes} element(s)/cycle"),
    ]
