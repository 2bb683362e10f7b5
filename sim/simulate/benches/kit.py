"""The cocotb bench kit every stream bench is built from (cocotb 2.x idioms).

* :class:`Testbench` owns the clock, the reset, the cycle count, the bench's options and the
  ``lib.stream`` ports of the design (their payload layouts come from the generator itself, see
  :func:`l1bn.sim.simulate.runner.stream_ports`);
* :class:`StreamSource` drives an input stream, with pauses between beats from a generator;
* :class:`StreamSink` takes an output stream, with backpressure from a generator, and checks the
  stream rules (once ``valid`` is high, ``valid`` and ``payload`` hold until ``ready``);
* :class:`Codec` packs and unpacks payloads through the generator's own ``data.Layout``
  (``const()``, ``from_bits()``), so no bench computes a bit offset;
* :class:`InOrderChecker` compares every received item with the next value from the reference.

Timing convention: testbench writes happen just after a falling clock edge; handshakes are read in
the ReadOnly phase before the next rising edge, which transfers every beat with ``valid`` and
``ready`` high. The cycle of a beat (:meth:`Testbench.cycle`) is the cycle of that rising edge, so
``last_out - first_in + 1`` counts the cycles of a run, both ends included. A source waiting on
``ready`` and a sink without backpressure waiting on ``valid`` sleep on the signal's edge instead
of waking every cycle, so long compute phases cost no Python time.

``L1BN_DEBUG=o,stats`` (environment of the simulator run) logs what the sinks of those ports see
every cycle.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import cocotb
from amaranth.hdl import Const, Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import (
    ClockCycles,
    Event,
    FallingEdge,
    ReadOnly,
    RisingEdge,
    SimTimeoutError,
    with_timeout,
)
from cocotb.utils import get_sim_time

__all__ = ["Codec", "InOrderChecker", "StreamSink", "StreamSource", "Testbench", "load_ports",
           "random_pauses", "to_python"]


def to_python(value):
    """Plain ``int`` / ``list`` / ``dict`` of a value: numpy and torch arrays, numpy integers and
    ``data.Const`` payloads (struct -> dict, array -> list) included."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_python(v) for v in value]
        return {name: to_python(value[name]) for name, _ in layout}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    return int(value)


def _covers(given, got) -> bool:
    """``got`` (decoded) holds every value of ``given`` (fields left out of ``given`` are 0)."""
    if isinstance(given, dict):
        return all(_covers(v, got[k]) for k, v in given.items())
    if isinstance(given, list):
        return len(given) == len(got) and all(_covers(a, b) for a, b in zip(given, got, strict=True))
    return given == got


class Codec:
    """Payload values to raw bits and back, through the generator's own shape.

    ``shape`` is a ``data.Layout`` (values are dicts for structs, lists for arrays, nested as the
    layout is) or a plain ``signed(n)`` / ``unsigned(n)`` shape (values are ints). A value that
    does not fit its field raises ``ValueError``: ``Layout.const`` alone would truncate it.
    """

    def __init__(self, shape):
        self.layout = shape if isinstance(shape, data.Layout) else None
        self.shape = Shape.cast(shape)
        self.width = self.shape.width

    def encode(self, value) -> int:
        value = to_python(value)
        if self.layout is not None:
            raw = self.layout.const(value).as_bits()
        else:
            raw = value & ((1 << self.width) - 1)   # two's complement bits of the value
        if not _covers(value, self.decode(raw)):
            raise ValueError(f"payload {value!r} does not fit {self.layout or self.shape!r}")
        return raw

    def decode(self, raw: int):
        if self.layout is not None:
            return to_python(self.layout.from_bits(raw))
        return Const(raw, self.shape).value


def load_ports() -> dict:
    """The design's stream ports, as :func:`l1bn.sim.simulate.runner.stream_ports` pickled them:
    ``{name: {"flow": "in" | "out", "shape": payload shape, "always_valid": bool, "always_ready": bool}}``."""
    path = os.environ.get("L1BN_PORTS")
    if not path:
        raise RuntimeError("L1BN_PORTS is not set: run stream benches through l1bn.sim.simulate.runner.run_bench")
    with open(path, "rb") as f:
        return pickle.load(f)


def random_pauses(percent: int, rng: random.Random) -> Iterator[bool] | None:
    """``True`` (pause) on about ``percent`` % of cycles; ``None`` (never pause) for 0."""
    if not percent:
        return None

    def gen():
        while True:
            yield rng.randrange(100) < percent

    return gen()


class Testbench:
    """Clock, reset, cycle count, options and stream ports of one design under test.

    Subclasses build their sources, sinks and checkers in ``__init__`` and call :meth:`start`
    (clock, reset, then every source and sink starts) from the cocotb test.
    """

    period_ns = 10

    def __init__(self, dut, *, ports: dict | None = None):
        self.dut = dut
        self.ports = load_ports() if ports is None else ports
        self.options = json.loads(os.environ.get("L1BN_OPTIONS") or "{}")
        self.seed = int(self.options.get("seed", 1))
        self.rng = random.Random(self.seed)
        self._parts: list = []
        self._t0 = None

    def option(self, name: str, default):
        return self.options.get(name, default)

    def pauses(self, port: str, percent: int) -> Iterator[bool] | None:
        """Random pauses (or backpressure) for ``port``: a generator of its own, so the pattern
        of one port does not depend on when the others draw."""
        return random_pauses(percent, random.Random(f"{self.seed}:{port}"))

    async def start(self, reset_cycles: int = 2):
        """Start the clock ``clk``, pulse ``rst`` (synchronous, active high), start the streams."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, self.period_ns, unit="ns").start())
        await RisingEdge(dut.clk)
        self._t0 = get_sim_time(unit="ns")
        dut.rst.value = 1
        await ClockCycles(dut.clk, reset_cycles)
        dut.rst.value = 0
        for part in self._parts:
            cocotb.start_soon(part.run())

    def cycle(self) -> int:
        """The clock cycle now: 0 is the first cycle of the clock; a beat read in the ReadOnly
        phase of cycle k is transferred by the rising edge that ends it."""
        return int((get_sim_time(unit="ns") - self._t0) // self.period_ns)

    async def drive_phase(self):
        """Wait until the next falling edge unless the clock is low now (write-safe phase)."""
        if int(self.dut.clk.value):
            await FallingEdge(self.dut.clk)

    async def wait(self, *events: Event, cycles: int) -> bool:
        """Wait until every event is set, at most ``cycles`` clock cycles; False on timeout."""
        for e in events:
            if e.is_set():
                continue
            try:
                await with_timeout(e.wait(), cycles * self.period_ns, "ns")
            except SimTimeoutError:
                return False
        return True


class _Port:
    def __init__(self, tb: Testbench, name: str, flow: str):
        port = tb.ports.get(name)
        if port is None:
            raise KeyError(f"{name!r} is not a stream port of the design (ports: {', '.join(tb.ports)})")
        if port["flow"] != flow:
            raise ValueError(f"stream {name!r} is an {port['flow']}put, not an {flow}put")
        self.tb, self.name = tb, name
        self.codec = Codec(port["shape"])
        dut = tb.dut
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = None if port["always_valid"] else getattr(dut, f"{name}__valid")
        self.ready = None if port["always_ready"] else getattr(dut, f"{name}__ready")
        tb._parts.append(self)


class StreamSource(_Port):
    """Drives the input stream ``name``; :meth:`send` queues a beat.

    ``pauses`` yields one bool per beat offered: True keeps ``valid`` low for a cycle first (and
    is asked again). A beat once offered is held until it is taken (the stream rules). ``side``
    signals given to :meth:`send` (e.g. a channel's ``gamma``) are written with the beat.

    Attributes: ``cycles`` (handshake cycle of every beat, in order) and ``stalls`` (cycles a
    beat waited for ``ready``); ``idle`` is set whenever the queue has been sent.
    """

    def __init__(self, tb: Testbench, name: str, *, pauses: Iterable[bool] | None = None):
        super().__init__(tb, name, "in")
        self.pauses = None if pauses is None else iter(pauses)
        self.queue: deque = deque()
        self.cycles: list[int] = []
        self.stalls = 0
        self.idle = Event()
        self._wake = Event()
        if self.valid is not None:
            self.valid.value = 0

    def send(self, value, **side):
        self.queue.append((self.codec.encode(value), side))
        self.idle.clear()
        self._wake.set()

    async def run(self):
        dut = self.tb.dut
        await FallingEdge(dut.clk)
        while True:
            if not self.queue:
                if self.valid is not None:
                    self.valid.value = 0
                self.idle.set()
                self._wake.clear()
                await self._wake.wait()
                await FallingEdge(dut.clk)   # send() may come from a sink's ReadOnly callback
                continue
            if self.pauses is not None and next(self.pauses):
                if self.valid is not None:
                    self.valid.value = 0
                await FallingEdge(dut.clk)
                continue
            raw, side = self.queue.popleft()
            for sig, v in side.items():
                getattr(dut, sig).value = int(v)
            self.payload.value = raw
            if self.valid is not None:
                self.valid.value = 1
            await ReadOnly()
            offered = self.tb.cycle()
            while self.ready is not None and not int(self.ready.value):
                # sleep until ready rises, then read it again in a settled low clock phase
                await RisingEdge(self.ready)
                await self.tb.drive_phase()
                await ReadOnly()
            now = self.tb.cycle()
            self.stalls += now - offered
            self.cycles.append(now)
            await FallingEdge(dut.clk)


class StreamSink(_Port):
    """Takes the output stream ``name``.

    ``backpressure`` yields one bool per cycle: True holds ``ready`` low that cycle. Without it
    ``ready`` stays high and the sink sleeps until ``valid`` rises. Every beat taken is decoded
    through the port's layout and passed with its cycle to ``on_beat(value, cycle)`` (``value`` is
    None when the payload held X or Z). Attributes: ``cycles`` (handshake cycles), ``count``,
    ``violations`` (broken stream rules: valid dropped or payload changed before ``ready``).
    """

    def __init__(self, tb: Testbench, name: str, *, backpressure: Iterable[bool] | None = None,
                 on_beat: Callable | None = None):
        super().__init__(tb, name, "out")
        self.backpressure = None if backpressure is None else iter(backpressure)
        self.on_beat = on_beat
        self.cycles: list[int] = []
        self.count = 0
        self.violations: list[str] = []
        # L1BN_DEBUG=o,stats logs every cycle the sinks of those ports see
        self.debug = name in os.environ.get("L1BN_DEBUG", "").split(",")
        if self.ready is not None:
            self.ready.value = 0 if self.backpressure is not None else 1

    async def run(self):
        dut = self.tb.dut
        held = None   # raw payload offered but not taken last cycle
        await FallingEdge(dut.clk)
        while True:
            stall = self.backpressure is not None and next(self.backpressure)
            if self.ready is not None and self.backpressure is not None:
                self.ready.value = int(not stall)
            await ReadOnly()
            valid = self.valid is None or bool(int(self.valid.value))
            raw = self.payload.value if valid else None
            raw = raw.to_unsigned() if raw is not None and raw.is_resolvable else (None if raw is None else "x")
            if self.debug:
                self.tb.dut._log.info("%s c%d valid=%d ready=%d payload=%s", self.name, self.tb.cycle(),
                                      valid, not stall, raw)
            if held is not None and (not valid or raw != held):
                what = "valid fell" if not valid else "payload changed"
                self.violations.append(f"{self.name}: {what} before ready (cycle {self.tb.cycle()})")
            if valid and not stall:
                self.cycles.append(self.tb.cycle())
                self.count += 1
                if self.on_beat is not None:
                    self.on_beat(None if raw == "x" else self.codec.decode(raw), self.cycles[-1])
            held = raw if valid and stall else None
            if not valid and self.backpressure is None and self.valid is not None:
                await RisingEdge(self.valid)
                await self.tb.drive_phase()
            else:
                await FallingEdge(dut.clk)


class InOrderChecker:
    """Compares each item received with the next expected one (values from the reference).

    ``where(i)`` returns a dict that locates item ``i`` in a mismatch record (e.g. channel and
    element). ``done`` is set when every expected item has arrived. ``first`` keeps the first
    ``keep`` mismatches: ``{**where(i), "got", "expected"}``.
    """

    def __init__(self, expected, *, where: Callable[[int], dict] | None = None, keep: int = 20):
        self.expected = list(expected)
        self.where = where or (lambda i: {"index": i})
        self.keep = keep
        self.count = 0
        self.mismatches = 0
        self.first: list[dict] = []
        self.done = Event()
        if not self.expected:
            self.done.set()

    def __call__(self, got, cycle=None):
        i = self.count
        exp = self.expected[i] if i < len(self.expected) else None
        if got is None or got != exp:
            self.mismatches += 1
            if len(self.first) < self.keep:
                self.first.append({**self.where(i), "got": got, "expected": exp})
        self.count += 1
        if self.count == len(self.expected):
            self.done.set()

    @property
    def complete(self) -> bool:
        return self.count == len(self.expected)

    def log(self, log, what: str, limit: int = 10):
        for bad in self.first[:limit]:
            log.error("%s mismatch %s", what, bad)
