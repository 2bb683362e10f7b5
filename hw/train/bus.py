"""Shared on-chip memories of the training accelerator and the engine-side port signatures.

Every memory has one read port and one write port (a simple dual-port RAM: one block RAM on
ECP5, one SRAM macro on an ASIC). Several engines use each memory, in different phases of the
step (the sequencer runs one engine at a time), so a :class:`SharedMemory` gives each engine its
own client port and ORs the clients together: an idle client holds ``en`` low, and its address and
data are gated by its own ``en``, so the memory sees exactly the active engine. Engines and
memories are joined with ``wiring.connect``.

Read ports are synchronous: ``data`` is the word at the address of the last cycle with ``en``
high, and holds while ``en`` is low (engines use this to stall a pipeline without losing a word).
A memory whose plan entry has ``latency`` 2 registers the port's data once more (the register takes
it in the cycle after each read): ``data`` is then the word read two cycles before, and holds while
no read is in flight. On ECP5 that register is in the fabric after the block RAMs' cascade
multiplexer (Yosys maps DP16KD with ``REGMODE`` ``NOREG`` only).
"""

from __future__ import annotations

import functools
import operator

from amaranth import Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["read_bus", "write_bus", "SharedMemory", "mem_shape"]


def mem_shape(spec: dict):
    """The element shape of a memory from its plan entry (``TrainPlan.mem[name]``): a plain
    signed/unsigned shape, or an ``ArrayLayout`` of ``lanes`` elements."""
    el = signed(spec["bits"]) if spec["signed"] else unsigned(spec["bits"])
    return data.ArrayLayout(el, spec["lanes"]) if spec["lanes"] > 1 else el


def _addr_bits(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


@functools.cache
def read_bus(depth: int, shape) -> wiring.Signature:
    """An engine's read port (engine side): ``addr``, ``en`` out; ``data`` in, the memory's
    ``latency`` (1 or 2) cycles later."""
    return wiring.Signature({"addr": Out(_addr_bits(depth)), "en": Out(1), "data": In(shape)})


@functools.cache
def write_bus(depth: int, shape) -> wiring.Signature:
    """An engine's write port (engine side): ``addr``, ``data``, ``en`` out. For an R-wide memory
    ``en`` has one bit per lane (a lane-masked write)."""
    lanes = shape.length if isinstance(shape, data.ArrayLayout) else 1
    return wiring.Signature({"addr": Out(_addr_bits(depth)), "en": Out(lanes), "data": Out(shape)})


def _or(values):
    return functools.reduce(operator.or_, values)


class SharedMemory(wiring.Component):
    """One memory with a read client per name in ``readers`` and a write client per name in
    ``writers`` (members ``r_<name>`` and ``w_<name>``, the flipped :func:`read_bus` /
    :func:`write_bus`, so that an engine's port connects to them).

    Parameters
    ----------
    name : str
    spec : dict
        The plan's entry: ``depth``, ``bits``, ``signed``, ``lanes``, ``latency`` (read latency,
        1 or 2; 1 if absent).
    readers, writers : tuple of str
    init : list of int, optional
        Initial contents (element values; lists of lane values for an R-wide memory).
    transparent : bool
        Reads of the address being written in the same cycle return the new word (the LFSR bank
        with one lane reads the lane it writes).
    """

    def __init__(self, name: str, spec: dict, *, readers=(), writers=(), init=None, transparent=False):
        self.name, self.spec = name, spec
        self.shape = mem_shape(spec)
        self.depth = spec["depth"]
        self.latency = spec.get("latency", 1)
        if self.latency not in (1, 2):
            raise ValueError(f"memory {name}: latency={self.latency!r}; allowed 1, 2")
        self.readers, self.writers = tuple(readers), tuple(writers)
        lanes = spec["lanes"]
        if init is not None:
            init = [list(v) if lanes > 1 else int(v) for v in init]
        #: the memory itself (tests read and write it through ``memory.data``)
        self.memory = Memory(shape=self.shape, depth=self.depth, init=init or [])
        self.transparent = transparent
        members = {f"r_{r}": In(read_bus(self.depth, self.shape)) for r in self.readers}
        members.update({f"w_{w}": In(write_bus(self.depth, self.shape)) for w in self.writers})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        lanes = self.spec["lanes"]
        m.submodules.mem = mem = self.memory
        wp = mem.write_port(granularity=1 if lanes > 1 else None) if self.writers else None
        rp = mem.read_port(transparent_for=(wp,) if (self.transparent and wp is not None) else ())
        width = Shape.cast(self.shape).width
        if self.readers:
            rs = [getattr(self, f"r_{r}") for r in self.readers]
            m.d.comb += [rp.addr.eq(_or([Mux(c.en, c.addr, 0) for c in rs])), rp.en.eq(_or([c.en for c in rs]))]
            rdata = rp.data
            if self.latency == 2:
                # the read data registered once more, in the cycle after each read only, so that
                # it holds like the port's own data
                took = Signal(name="rd_took")
                rdata = Signal.like(rp.data, name="rd_data")
                m.d.sync += took.eq(rp.en)
                with m.If(took):
                    m.d.sync += rdata.eq(rp.data)
            for c in rs:
                m.d.comb += c.data.eq(rdata)
        else:
            m.d.comb += rp.en.eq(0)
        if wp is not None:
            ws = [getattr(self, f"w_{w}") for w in self.writers]
            m.d.comb += [
                wp.addr.eq(_or([Mux(c.en.any(), c.addr, 0) for c in ws])),
                wp.en.eq(_or([c.en for c in ws])),
                wp.data.eq(_or([Mux(c.en.any(), Value.cast(c.data), 0) for c in ws])[:width]),
            ]
        return m
