"""cocotb bench for :class:`l1bn.hw.absdiff.AbsDiff`: random and corner operands, 1-cycle latency."""

import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from .common import env_int, signed_value, start_clock


def expected(a: int, b: int) -> int:
    return abs(a - b)


@cocotb.test()
async def absdiff_random_and_corners(dut):
    width = len(dut.a)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    rng = random.Random(env_int("L1BN_SEED", 1))
    cases = [(lo, hi), (hi, lo), (lo, lo), (hi, hi), (0, 0), (-1, 0), (0, -1)]
    cases += [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(env_int("L1BN_COUNT", 500))]
    await start_clock(dut)
    mismatches = 0
    for a, b in cases:
        await FallingEdge(dut.clk)
        dut.a.value = signed_value(a, width)
        dut.b.value = signed_value(b, width)
        await RisingEdge(dut.clk)
        await ReadOnly()
        got = int(dut.y.value)
        if got != expected(a, b):
            mismatches += 1
            dut._log.error("a=%d b=%d: y=%d, expected %d", a, b, got, expected(a, b))
    assert mismatches == 0, f"{mismatches} mismatches of {len(cases)}"
