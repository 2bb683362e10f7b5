"""A rig for one training-accelerator engine in Amaranth's simulator (test helper): every memory
port of the engine (``rd_<mem>``, ``wr_<mem>``) is joined with ``wiring.connect`` to a
:class:`~l1bn.hw.train.bus.SharedMemory` of the plan's shape, optionally preloaded; the test drives
``cmd``, waits for ``done`` and reads the memories back."""

from __future__ import annotations

import numpy as np
from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from l1bn.hw.train.bus import SharedMemory


class Rig(Elaboratable):
    def __init__(self, engine, plan, init: dict | None = None, extra=None):
        self.engine, self.plan = engine, plan
        init = init or {}
        names = {}
        for name in engine.signature.members:
            if name.startswith(("rd_", "wr_")):
                names.setdefault(name[3:], []).append(name)
        self.mems = {}
        for mem, ports in names.items():
            self.mems[mem] = SharedMemory(
                mem, plan.mem[mem], readers=("e",) if f"rd_{mem}" in ports else (),
                writers=("e",) if f"wr_{mem}" in ports else (), init=init.get(mem),
                transparent=mem == "lfsr")
        self.extra = extra or []

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        for name, sm in self.mems.items():
            m.submodules[f"mem_{name}"] = sm
            if sm.readers:
                wiring.connect(m, getattr(self.engine, f"rd_{name}"), sm.r_e)
            if sm.writers:
                wiring.connect(m, getattr(self.engine, f"wr_{name}"), sm.w_e)
        for i, sub in enumerate(self.extra):
            m.submodules[f"extra{i}"] = sub
        return m


async def run_cmd(ctx, engine, timeout=200000, watch=None, **fields):
    """Send one command, wait for ``done``; returns (cycles from the handshake to done valid,
    the done payload). ``watch(ctx)`` (optional) runs every cycle before the clock edge."""
    for k, v in fields.items():
        ctx.set(getattr(engine.cmd.payload, k), v)
    ctx.set(engine.cmd.valid, 1)
    while not ctx.get(engine.cmd.ready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(engine.cmd.valid, 0)
    ctx.set(engine.done.ready, 1)
    cycles = 1
    while not ctx.get(engine.done.valid):
        if watch is not None:
            watch(ctx)
        await ctx.tick()
        cycles += 1
        assert cycles < timeout, "engine never finished"
    payload = ctx.get(engine.done.payload)
    await ctx.tick()
    ctx.set(engine.done.ready, 0)
    return cycles, payload


def read_mem(ctx, sm: SharedMemory, n: int | None = None) -> np.ndarray:
    n = sm.depth if n is None else n
    vals = [ctx.get(sm.memory.data[i]) for i in range(n)]
    if sm.spec["lanes"] > 1:
        return np.array([[int(x) for x in v] for v in vals], dtype=np.int64)
    return np.array([int(v) for v in vals], dtype=np.int64)


def simulate(rig, bench):
    sim = Simulator(rig)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
