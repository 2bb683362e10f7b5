"""cocotb bench for the BN forward units (:mod:`l1bn.hw.bn_unit`), built from the bench kit.

Inputs (``run_bench(..., name="bn")``): data ``{"x": channels x n, "gamma": [channels],
"beta": [channels]}``; options ``gaps`` (percent of idle input cycles), ``out_gaps`` (percent of
not-ready cycles on ``o``, default ``gaps``), ``stats_gaps`` (the same on ``stats``, default
``out_gaps``) and ``seed``. Expected y and
statistics come from :func:`l1bn.spec.reference.bn.bn_forward` only.

Checks: every y in order; every channel's statistics record once, in channel order, equal to the
reference (the unit holds a record until it is taken, so none is lost under backpressure); the
stream rules on both outputs. Without pauses or backpressure also: the cycle count (first input
beat to last output beat) equals :func:`l1bn.hw.bn_unit.bn_latency_cycles`. The measurements go
to the result JSON.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Event
from l1bn.hw.bn_unit import bn_latency_cycles
from l1bn.spec.reference.bn import bn_forward

from .common import load_config, load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench

STATS_FIELDS = ("mu", "s", "sigma", "inv")


class BNTestbench(Testbench):
    """One batch through a BN unit: source ``i`` (with gamma/beta), sinks ``o`` and ``stats``."""

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg = load_config()
        batch = {k: np.asarray(v, dtype=np.int64) for k, v in load_data("bn").items()}
        ref = bn_forward(batch["x"], batch["gamma"], batch["beta"], cfg)
        self.gaps = self.option("gaps", 0)
        self.out_gaps = self.option("out_gaps", self.gaps)
        self.stats_gaps = self.option("stats_gaps", self.out_gaps)
        n = cfg.n
        self.y = InOrderChecker(np.asarray(ref.y).reshape(-1).tolist(),
                                where=lambda i: {"channel": i // n, "element": i % n})
        self.stats_expected = [{"channel": c, **{f: int(getattr(ref, f)[c]) for f in STATS_FIELDS}}
                               for c in range(cfg.channels)]
        self.stats_seen, self.stats_bad = [], []
        self.stats_done = Event()
        self.src = StreamSource(self, "i", pauses=self.pauses("i", self.gaps))
        self.o = StreamSink(self, "o", backpressure=self.pauses("o", self.out_gaps), on_beat=self.y_beat)
        self.stats = StreamSink(self, "stats", backpressure=self.pauses("stats", self.stats_gaps),
                                on_beat=self.stats_beat)
        x = batch["x"]
        for c in range(cfg.channels):
            for b in range(cfg.beats):
                self.src.send(x[c, b * cfg.lanes:(b + 1) * cfg.lanes],
                              gamma=batch["gamma"][c], beta=batch["beta"][c])

    def y_beat(self, lanes, cycle):
        for v in lanes if lanes is not None else [None] * self.cfg.lanes:
            self.y(v)

    def stats_beat(self, rec, cycle):
        c = None if rec is None else rec["channel"]
        later = not self.stats_seen or (c is not None and c > self.stats_seen[-1])
        self.stats_seen.append(c)
        if len(self.stats_seen) == self.cfg.channels:
            self.stats_done.set()
        if c is None or c >= self.cfg.channels or not later or rec != self.stats_expected[c]:
            self.stats_bad.append({"got": rec, "expected": self.stats_expected[c]
                                   if c is not None and c < self.cfg.channels else None})

    def result(self) -> dict:
        total, src, o = len(self.y.expected), self.src.cycles, self.o.cycles
        in_span = src[-1] - src[0] + 1 if src else None
        return {
            "outputs": self.y.count, "expected_outputs": total,
            "mismatches": self.y.mismatches, "first": self.y.first,
            "stats_seen": len(self.stats_seen), "stats_mismatches": len(self.stats_bad),
            "stats_first": self.stats_bad[:5],
            "cycles": o[-1] - src[0] + 1 if src and o else None, "formula": bn_latency_cycles(self.cfg),
            "in_span": in_span, "in_rate": total / in_span if in_span else None,
            "out_rate": total / (o[-1] - o[0] + 1) if o else None,
            "gaps": self.gaps, "out_gaps": self.out_gaps, "stats_gaps": self.stats_gaps,
            "violations": self.o.violations + self.stats.violations
        }


@cocotb.test()
async def bn_matches_reference(dut):
    tb = BNTestbench(dut)
    cfg = tb.cfg
    await tb.start()
    formula = bn_latency_cycles(cfg)
    await tb.wait(tb.y.done, cycles=formula * (1 + max(tb.gaps, tb.out_gaps, tb.stats_gaps)) * 4 + 1000)
    # the last record waits for ready when stats are stalled: give it time to be taken
    await tb.wait(tb.stats_done, cycles=100 * (1 + tb.stats_gaps))
    await ClockCycles(dut.clk, 8)   # an extra record or an extra y would show now
    r = tb.result()
    write_result("bn", r)
    tb.y.log(dut._log, "y")
    for bad in tb.stats_bad[:5]:
        dut._log.error("stats mismatch %s", bad)
    dut._log.info("cycles %s (formula %d), in rate %.3f, out rate %.3f elements/cycle",
                  r["cycles"], formula, r["in_rate"] or 0, r["out_rate"] or 0)
    assert tb.y.count == len(tb.y.expected), f"{tb.y.count} of {len(tb.y.expected)} outputs"
    assert not tb.y.mismatches, f"{tb.y.mismatches} y mismatches of {len(tb.y.expected)}"
    assert not tb.stats_bad, f"{len(tb.stats_bad)} stats mismatches"
    assert not r["violations"], f"stream rules broken: {r['violations'][:5]}"
    assert tb.stats_seen == list(range(cfg.channels)), f"stats seen for channels {tb.stats_seen}"
    if tb.gaps == tb.out_gaps == tb.stats_gaps == 0:
        assert r["cycles"] == formula, f"measured {r['cycles']} cycles, formula {formula}"
