"""cocotb bench for the training accelerator (:mod:`l1bn.hw.train.accel`), built from the kit.

Inputs (``run_bench(..., name="train")``, set by :func:`l1bn.sim.simulate.train.simulate_train`):
data ``{"steps": K, "beats": [[pixel, label], ...] (all K batches, back to back), "logits": the
reference's logits of every step (flattened, (step, image, class) order), "results": per step
{step, correct, perr, saturated}, "state": the reference's state after K steps in read-back order,
"cycles_per_step", "first_to_result"}``.

The K batches stream in back to back (``i.valid`` high whenever a beat is queued) and every output
is always ready: the condition of the cycle formula. The bench checks every logit on ``z``, every
result on ``o``, then requests a read-back on ``rd`` and checks every state value on ``st``; and
that the result-to-result period equals ``cycles_per_step`` and the batch's first input beat to
its result ``first_to_result``. The sinks sleep until ``valid`` rises: Python touches the design
once per input beat and once per output beat.
"""

import time

import cocotb
from cocotb.triggers import ClockCycles

from .common import load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench


class TrainTestbench(Testbench):
    def __init__(self, dut):
        super().__init__(dut)
        d = self.data = load_data("train")
        self.k = int(d["steps"])
        self.beats_per_step = len(d["beats"]) // self.k
        self.src = StreamSource(self, "i")
        for pixel, label in d["beats"]:
            self.src.send({"pixel": pixel, "label": label})
        per_step = len(d["logits"]) // self.k
        self.z = InOrderChecker(d["logits"], where=lambda i: {"step": i // per_step, "index": i % per_step})
        self.o = InOrderChecker(d["results"], where=lambda i: {"step": i})
        self.st = InOrderChecker(d["state"], where=lambda i: {"index": i})
        self.zsink = StreamSink(self, "z", on_beat=self.z)
        self.osink = StreamSink(self, "o", on_beat=self.result)
        self.stsink = StreamSink(self, "st", on_beat=self.st)
        self.rd = StreamSource(self, "rd")

    def result(self, beat, cycle):
        self.o(beat)
        if self.o.complete:
            self.rd.send(0)

    def summary(self, wall):
        ends = self.osink.cycles
        starts = self.src.cycles[::self.beats_per_step]
        return {
            "steps": self.k, "logit_mismatches": self.z.mismatches, "result_mismatches": self.o.mismatches,
            "state_mismatches": self.st.mismatches, "logits_seen": self.z.count, "results_seen": self.o.count,
            "state_seen": self.st.count,
            "first": {"logits": self.z.first[:5], "results": self.o.first[:5], "state": self.st.first[:5]},
            "period_cycles": [b - a for a, b in zip(ends, ends[1:], strict=False)],
            "first_to_result": [e - s for s, e in zip(starts, ends, strict=False)],
            "formula_cycles": self.data["cycles_per_step"], "formula_first_to_result": self.data["first_to_result"],
            "violations": self.zsink.violations + self.osink.violations + self.stsink.violations,
            "sim_wall_s": wall, "cycles": self.cycle(),
        }


@cocotb.test()
async def train_matches_reference(dut):
    tb = TrainTestbench(dut)
    t0 = time.perf_counter()
    await tb.start()
    budget = (tb.k + 1) * tb.data["cycles_per_step"] + 4 * len(tb.data["state"]) + 10_000
    await tb.wait(tb.o.done, tb.z.done, tb.st.done, cycles=budget)
    await ClockCycles(dut.clk, 4)      # an extra beat would show now
    r = tb.summary(time.perf_counter() - t0)
    write_result("train", r)
    for what, items in r["first"].items():
        for b in items:
            dut._log.error("%s mismatch %s", what, b)
    assert tb.o.count == tb.k, f"{tb.o.count} of {tb.k} steps finished"
    assert tb.st.count == len(tb.data["state"]), f"{tb.st.count} of {len(tb.data['state'])} state values read back"
    assert not (tb.z.mismatches or tb.o.mismatches or tb.st.mismatches), \
        f"mismatches: logits {tb.z.mismatches}, results {tb.o.mismatches}, state {tb.st.mismatches}"
    assert not r["violations"], f"stream rules broken: {r['violations'][:5]}"
    assert r["first_to_result"] == [tb.data["first_to_result"]] * tb.k, r["first_to_result"]
    assert r["period_cycles"] == [tb.data["cycles_per_step"]] * (tb.k - 1), r["period_cycles"]
