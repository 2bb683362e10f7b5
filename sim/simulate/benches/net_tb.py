"""cocotb bench for the whole-network accelerator (:mod:`l1bn.hw.accelerator`), built from the kit.

Inputs (``run_bench(..., name="net")``, set by :func:`l1bn.sim.simulate.net.simulate_net`): data
``{"images": K, "pixels": K lists of pixels, "expected": K lists of logits, "labels": K labels or
None, "cycles_per_image", "latency", "progress": file}``. The K images stream in back to back
(``i.valid`` always high, ``o.ready`` always high: the condition of the accelerator's cycle
formulas): the first image's latency (it enters an idle accelerator) must equal ``latency`` and
every output-to-output period ``cycles_per_image``. The expected logits are the integer
reference's (:func:`l1bn.spec.reference.network.run_net`, computed by the driver from the loaded
export); the expected class is the first maximum (``argmax``). The bench rewrites the progress file
with ``done total`` every few images.

While the accelerator computes, the source sleeps until ``i.ready`` rises and the sink until
``o.valid`` rises: Python touches the design once per input beat and once per image, so Verilator
runs at full speed.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from .common import load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench


def _progress(path, done, total):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{done} {total}\n")
        os.replace(tmp, path)


class NetTestbench(Testbench):
    """Source ``i`` (one pixel per beat, images back to back), sink ``o`` (one beat per image)."""

    def __init__(self, dut):
        super().__init__(dut)
        d = self.data = load_data("net")
        self.n = int(d["images"])
        ref = np.asarray(d["expected"], dtype=np.int64)          # (n, classes)
        self.labels = d["labels"]
        self.ref_pred = np.argmax(ref, axis=1).tolist()         # first maximum
        self.check = InOrderChecker([{"logits": r, "argmax": p} for r, p in zip(ref.tolist(), self.ref_pred,
                                                                               strict=True)],
                                    where=lambda i: {"image": i}, keep=10)
        self.src = StreamSource(self, "i")
        self.sink = StreamSink(self, "o", on_beat=self.image)
        pixels = d["pixels"]                                    # (c, y, x) order
        self.pixels = len(pixels[0])
        for img in pixels:
            for p in img:
                self.src.send(p)
        self.preds = []

    def image(self, beat, cycle):
        self.check(beat)
        self.preds.append(None if beat is None else beat["argmax"])
        done = len(self.preds)
        if done % 8 == 0 or done == self.n:
            _progress(self.data.get("progress"), done, self.n)

    def result(self, wall: float) -> dict:
        starts = self.src.cycles[::self.pixels]
        ends = self.sink.cycles
        # later images load while earlier ones compute: only the first enters an idle accelerator
        latencies = [ends[0] - starts[0]] if starts and ends else []
        periods = [b - a for a, b in zip(ends, ends[1:], strict=False)]
        first = [{"image": m["image"], "got": None if m["got"] is None else m["got"]["logits"],
                  "expected": m["expected"]["logits"],
                  "argmax": None if m["got"] is None else m["got"]["argmax"],
                  "expected_argmax": m["expected"]["argmax"]} for m in self.check.first]
        labels = self.labels
        return {
            "images": self.n, "mismatches": self.check.mismatches, "first": first,
            "hw_predictions": self.preds,
            "hw_correct": None if labels is None else sum(int(p == y) for p, y in zip(self.preds, labels, strict=True)),
            "ref_correct": None if labels is None else sum(int(p == y) for p, y in zip(self.ref_pred, labels, strict=True)),
            "latency_cycles": sorted(set(latencies)), "period_cycles": sorted(set(periods)),
            "formula_cycles": self.data["cycles_per_image"], "formula_latency": self.data["latency"],
            "sim_wall_s": wall, "images_per_s": self.n / wall if wall > 0 else None,
            "violations": self.sink.violations,
        }


@cocotb.test()
async def net_matches_reference(dut):
    tb = NetTestbench(dut)
    t0 = time.perf_counter()
    await tb.start()
    await tb.wait(tb.check.done, cycles=(tb.n + 1) * tb.data["cycles_per_image"] * 2 + 1000)
    await ClockCycles(dut.clk, 4)   # an extra output beat would show now
    wall = time.perf_counter() - t0
    r = tb.result(wall)
    write_result("net", r)
    for b in r["first"]:
        dut._log.error("image %d: logits %s argmax %s, reference %s argmax %d", b["image"], b["got"],
                       b["argmax"], b["expected"], b["expected_argmax"])
    assert tb.check.count == tb.n, f"{tb.check.count} of {tb.n} images came out"
    assert not tb.check.mismatches, f"{tb.check.mismatches} of {tb.n} images differ from the integer reference"
    assert not r["violations"], f"stream rules broken: {r['violations'][:5]}"
    assert r["latency_cycles"] == [tb.data["latency"]], (r["latency_cycles"], tb.data["latency"])
    if tb.n > 1:
        assert r["period_cycles"] == [tb.data["cycles_per_image"]], (r["period_cycles"], tb.data["cycles_per_image"])
