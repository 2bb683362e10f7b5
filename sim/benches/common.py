"""Helpers shared by the cocotb benches (cocotb 2.x idioms)."""

from __future__ import annotations

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.types import LogicArray
from l1bn.sw.config import config_from_json

__all__ = ["load_config", "start_clock", "reset", "env_int", "signed_value"]


def load_config():
    """The design's config object, sent by :func:`l1bn.sim.runner.run_cocotb`."""
    text = os.environ.get("L1BN_CONFIG")
    if not text:
        raise RuntimeError("L1BN_CONFIG is not set: run benches through l1bn.sim.runner.run_cocotb")
    return config_from_json(text)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def start_clock(dut, period_ns: int = 10):
    """Start ``dut.clk`` (Amaranth's default domain names it ``clk``)."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    await RisingEdge(dut.clk)


async def reset(dut, cycles: int = 2):
    """Pulse ``dut.rst`` (synchronous, active high)."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def signed_value(value: int, width: int) -> LogicArray:
    """A signed int as a ``width``-bit two's complement value to assign to a port."""
    return LogicArray.from_signed(value, width)
