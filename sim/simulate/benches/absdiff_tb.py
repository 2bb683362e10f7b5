"""cocotb bench for :class:`l1bn.hw.absdiff.AbsDiff`: random and corner operands, 1-cycle latency.

Options (``L1BN_OPTIONS``, all optional): ``seed``, ``count`` (random operand pairs, default 500).
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.types import LogicArray

from .kit import Testbench


@cocotb.test()
async def absdiff_random_and_corners(dut):
    tb = Testbench(dut, ports={})   # a plain registered unit: no streams
    width = len(dut.a)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    cases = [(lo, hi), (hi, lo), (lo, lo), (hi, hi), (0, 0), (-1, 0), (0, -1)]
    cases += [(tb.rng.randint(lo, hi), tb.rng.randint(lo, hi)) for _ in range(tb.option("count", 500))]
    await tb.start()
    mismatches = 0
    for a, b in cases:
        await FallingEdge(dut.clk)
        dut.a.value = LogicArray.from_signed(a, width)
        dut.b.value = LogicArray.from_signed(b, width)
        await RisingEdge(dut.clk)
        await ReadOnly()
        got = dut.y.value.to_unsigned()
        if got != abs(a - b):   # the unit's whole specification
            mismatches += 1
            dut._log.error("a=%d b=%d: y=%d, expected %d", a, b, got, abs(a - b))
    assert mismatches == 0, f"{mismatches} mismatches of {len(cases)}"
