"""cocotb bench of the kit itself: a stream design that passes its input stream ``i`` to its output
stream ``o`` unchanged (a register slice, a FIFO), under pauses and backpressure.

Inputs (``run_bench(..., name="loopback")``): data ``{"values": [...]}`` (payload values in the
layout of ``i``); options ``gaps``, ``out_gaps``, ``seed``. Checks: ``o`` carries the values in
order (the reference of a loopback is the identity) and keeps the stream rules.
"""

import cocotb
from cocotb.triggers import ClockCycles

from .common import load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench


class LoopbackTestbench(Testbench):
    def __init__(self, dut):
        super().__init__(dut)
        values = load_data("loopback")["values"]
        self.gaps, self.out_gaps = self.option("gaps", 0), self.option("out_gaps", 0)
        self.check = InOrderChecker(values)
        self.src = StreamSource(self, "i", pauses=self.pauses("i", self.gaps))
        self.sink = StreamSink(self, "o", backpressure=self.pauses("o", self.out_gaps), on_beat=self.check)
        for v in values:
            self.src.send(v)


@cocotb.test()
async def loopback_in_order(dut):
    tb = LoopbackTestbench(dut)
    await tb.start()
    await tb.wait(tb.check.done, cycles=(len(tb.check.expected) + 10) * 20)
    await ClockCycles(dut.clk, 4)
    write_result("loopback", {"count": tb.check.count, "mismatches": tb.check.mismatches,
                              "first": tb.check.first, "violations": tb.sink.violations,
                              "input_stalls": tb.src.stalls})
    tb.check.log(dut._log, "o")
    assert tb.check.count == len(tb.check.expected), f"{tb.check.count} of {len(tb.check.expected)} beats"
    assert not tb.check.mismatches, f"{tb.check.mismatches} mismatches"
    assert not tb.sink.violations, f"stream rules broken: {tb.sink.violations[:5]}"
