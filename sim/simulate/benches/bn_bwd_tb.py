"""cocotb bench for the BN backward units (:mod:`l1bn.hw.bn_backward`), built from the bench kit.

Inputs (``run_bench(..., name="bwd")``): data ``{"x", "dy": channels x n, "gamma", "mu", "inv":
[channels]}``; options ``gaps`` (percent of idle input cycles and of not-ready cycles on each
output) and ``seed``. Expected dx, dgamma and dbeta come from
:func:`l1bn.spec.reference.bn_backward.bn_backward` only. Each channel's n elements go in twice
(pass 1, pass 2) with the channel's ``mu``, ``inv`` and ``gamma``. With no gaps the cycle count
(first input beat to last dx) must equal :func:`l1bn.hw.bn_backward.backward_latency_cycles`.

A unit built with ``sign_in=True`` has a ``neg`` field in its input layout: the bench then drives
``neg`` from the reference's ``BNBackwardResult.sign`` in both passes and random garbage as x in
pass 2, so a unit that still read x in pass 2 fails.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from l1bn.hw.bn_backward import backward_latency_cycles
from l1bn.spec.reference.bn_backward import bn_backward

from .common import load_config, load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench


class BNBackwardTestbench(Testbench):
    """Source ``i`` (x, dy[, neg] with mu, inv, gamma), sinks ``o`` (dx) and ``g`` (dgamma, dbeta)."""

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg = load_config()
        d = {k: np.asarray(v, dtype=np.int64) for k, v in load_data("bwd").items()}
        ref = bn_backward(d["x"], d["dy"], d["gamma"], d["mu"], d["inv"], cfg)
        self.gaps = self.option("gaps", 0)
        b = cfg.bn
        self.src = StreamSource(self, "i", pauses=self.pauses("i", self.gaps))
        self.sign_in = "neg" in dict(self.src.codec.layout.members)
        self.dx = InOrderChecker(np.asarray(ref.dx).reshape(-1).tolist(),
                                 where=lambda i: {"channel": i // b.n, "element": i % b.n})
        self.g = InOrderChecker([{"dgamma": int(g), "dbeta": int(e)}
                                 for g, e in zip(ref.dgamma, ref.dbeta, strict=True)],
                                where=lambda c: {"channel": c})
        self.o = StreamSink(self, "o", backpressure=self.pauses("o", self.gaps), on_beat=self.dx)
        self.gs = StreamSink(self, "g", backpressure=self.pauses("g", self.gaps), on_beat=self.g)
        lo, hi = -(1 << (b.width - 1)), (1 << (b.width - 1)) - 1
        sign = np.asarray(ref.sign) if self.sign_in else None
        for c in range(b.channels):
            side = {"mu": d["mu"][c], "inv": d["inv"][c], "gamma": d["gamma"][c]}
            for pass_no in range(2):
                for j in range(b.n):
                    beat = {"x": d["x"][c, j], "dy": d["dy"][c, j]}
                    if self.sign_in:
                        beat["neg"] = int(sign[c, j])
                        if pass_no == 1:   # x is don't care in pass 2: prove it
                            beat["x"] = self.rng.randint(lo, hi)
                    self.src.send(beat, **side)

    def result(self) -> dict:
        src, o = self.src.cycles, self.o.cycles
        return {"mismatches": self.dx.mismatches, "first": self.dx.first, "outputs": self.dx.count,
                "g_mismatches": self.g.mismatches, "g_first": self.g.first, "g_seen": self.g.count,
                "cycles": o[-1] - src[0] + 1 if src and o else None,
                "formula": backward_latency_cycles(self.cfg), "gaps": self.gaps, "sign_in": self.sign_in,
                "violations": self.o.violations + self.gs.violations}


@cocotb.test()
async def bn_backward_matches_reference(dut):
    tb = BNBackwardTestbench(dut)
    await tb.start()
    formula = backward_latency_cycles(tb.cfg)
    await tb.wait(tb.dx.done, tb.g.done, cycles=formula * (1 + tb.gaps) * 4 + 1000)
    await ClockCycles(dut.clk, 4)   # an extra beat would show now
    r = tb.result()
    write_result("bwd", r)
    tb.dx.log(dut._log, "dx")
    tb.g.log(dut._log, "(dgamma, dbeta)")
    assert tb.dx.count == len(tb.dx.expected), f"{tb.dx.count} of {len(tb.dx.expected)} dx"
    assert tb.g.count == len(tb.g.expected), f"{tb.g.count} of {len(tb.g.expected)} (dgamma, dbeta)"
    assert not tb.g.mismatches, f"(dgamma, dbeta) mismatches: {tb.g.first}"
    assert not tb.dx.mismatches, f"{tb.dx.mismatches} dx mismatches of {len(tb.dx.expected)}"
    assert not r["violations"], f"stream rules broken: {r['violations'][:5]}"
    if tb.gaps == 0:
        dut._log.info("latency: %d cycles (formula %d)", r["cycles"], formula)
        assert r["cycles"] == formula, (r["cycles"], formula)
