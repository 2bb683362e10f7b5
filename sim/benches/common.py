"""Helpers shared by the cocotb benches (cocotb 2.x idioms)."""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.types import LogicArray
from l1bn.spec.config import config_from_json

__all__ = ["load_config", "load_data", "write_result", "start_clock", "reset", "env_int", "signed_value"]


def load_config():
    """The design's config object, sent by :func:`l1bn.sim.runner.run_cocotb`."""
    text = os.environ.get("L1BN_CONFIG")
    if not text:
        raise RuntimeError("L1BN_CONFIG is not set: run benches through l1bn.sim.runner.run_cocotb")
    return config_from_json(text)


def load_data(name: str):
    """The inputs :func:`l1bn.sim.runner.run_bench` wrote for this bench (``L1BN_<NAME>_DATA``)."""
    with open(os.environ[f"L1BN_{name.upper()}_DATA"]) as f:
        return json.load(f)


def write_result(name: str, result: dict) -> None:
    """Hand the bench's measurements back to :func:`l1bn.sim.runner.run_bench`, when it asked."""
    path = os.environ.get(f"L1BN_{name.upper()}_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f)


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
