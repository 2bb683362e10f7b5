"""The timing harness of the ECP5 flow: every port of a component behind shift registers.

Every input bit of the component comes from a serial-in shift register and every output bit is
loaded into a parallel-in/serial-out register, so all timed paths are register-to-register paths
inside the FPGA and any port count fits the 197 pins of the 25k.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from l1bn.sim.rtl import is_constant

__all__ = ["TimingHarness"]


class TimingHarness(wiring.Component):
    """``component`` with all its ports behind shift registers (serial in, serial out).

    Interface: ``din`` (1 bit) shifts into a register holding every input bit of the component
    plus one control bit; ``dout`` is bit 0 of a register that loads every output bit when the
    control bit is 1 and shifts right otherwise (so no output is optimized away). Latency is
    irrelevant: the harness exists so that place and route sees register-to-register paths only.
    """

    def __init__(self, component):
        self.dut = component
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            if not is_constant(value):       # always_ready: nothing to drive
                (ins if member.flow == In else outs).append(Value.cast(value))
        nin = sum(len(v) for v in ins) + 1
        nout = max(1, sum(len(v) for v in outs))
        sin = Signal(nin)
        sout = Signal(nout)
        m.d.sync += sin.eq(Cat(self.din, sin[:-1]))
        pos = 1
        for v in ins:
            m.d.comb += v.eq(sin[pos:pos + len(v)])
            pos += len(v)
        with m.If(sin[0]):
            m.d.sync += sout.eq(Cat(*outs) if outs else 0)
        with m.Else():
            m.d.sync += sout.eq(sout >> 1)
        m.d.comb += self.dout.eq(sout[0])
        return m
