"""cocotb bench for the MAC array (:mod:`l1bn.hw.mac_array`), built from the bench kit.

Inputs (``run_bench(..., name="mac")``): data ``{"tiles": [{"w": M x K weights, "a": K x N
activations}, ...]}``; options ``gaps`` / ``out_gaps`` (percent of idle input / not-ready output
cycles), ``seed`` and ``out_rows`` (return every output row). Expected rows come from
:func:`l1bn.spec.reference.mac.mac_tile` only; weights go in as the reference's stored bit patterns
(:func:`l1bn.spec.reference.mac.encode_weights`). ``last`` must mark the last row of each tile and
the last beat of each tile's input. With no gaps and equal K the total cycle count must equal
:func:`l1bn.hw.mac_array.stream_cycles`.
"""

import cocotb
import numpy as np
from amaranth.hdl import Const
from cocotb.triggers import ClockCycles
from l1bn.hw.mac_array import stream_cycles, tile_period
from l1bn.spec.reference.mac import encode_activations, encode_weights, mac_tile

from .common import load_config, load_data, write_result
from .kit import InOrderChecker, StreamSink, StreamSource, Testbench


class MACTestbench(Testbench):
    """Tiles through the array: source ``i`` (one beat per reduction step), sink ``o`` (rows)."""

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg = load_config()
        tiles = load_data("mac")["tiles"]
        self.gaps, self.out_gaps = self.option("gaps", 0), self.option("out_gaps", 0)
        self.src = StreamSource(self, "i", pauses=self.pauses("i", self.gaps))
        self.sink = StreamSink(self, "o", backpressure=self.pauses("o", self.out_gaps), on_beat=self.row)
        # the weight field's own shape turns the stored bit pattern into the value it holds
        wshape = self.src.codec.layout["w"].shape.elem_shape
        R, C = cfg.rows, cfg.cols
        rows, lasts = [], []
        self.ks = []
        for t in tiles:
            w, a = np.asarray(t["w"], dtype=np.int64), np.asarray(t["a"], dtype=np.int64)
            k = w.shape[1]
            self.ks.append(k)
            rows += np.asarray(mac_tile(w, a, cfg)).tolist()
            lasts += [i == R - 1 for i in range(R)]
            wraw = np.asarray(encode_weights(w, cfg))
            a = np.asarray(encode_activations(a, cfg))       # bipolar: codes
            for s in range(k):
                self.src.send({"w": [Const(int(b), wshape).value for b in wraw[:, s]],
                               "a": a[s], "last": int(s == k - 1)})
        self.tiles = len(tiles)
        self.y = InOrderChecker([v for r in rows for v in r],
                                where=lambda i: {"tile": i // (R * C), "row": i // C % R, "col": i % C})
        self.last = InOrderChecker([int(v) for v in lasts], where=lambda i: {"row": i})
        self.got, self.tile_done = [], []

    def row(self, beat, cycle):
        if beat is None:
            for _ in range(self.cfg.cols):
                self.y(None)
            self.last(None)
            return
        self.got.append(beat["y"])
        for v in beat["y"]:
            self.y(v)
        self.last(beat["last"])
        if beat["last"]:
            self.tile_done.append(cycle)

    def result(self) -> dict:
        cfg, ks = self.cfg, self.ks
        r = {"mismatches": self.y.mismatches, "first": self.y.first,
             "last_mismatches": self.last.mismatches, "outputs": len(self.y.expected),
             "cycles": self.sink.cycles[-1] - self.src.cycles[0] + 1 if self.sink.cycles else None,
             "tile_done": self.tile_done, "input_stalls": self.src.stalls, "ks": ks,
             "violations": self.sink.violations}
        if self.option("out_rows", False):
            r["rows"] = self.got
        if len(set(ks)) == 1:
            r["formula_cycles"] = stream_cycles(cfg, ks[0], self.tiles)
            r["formula_period"] = tile_period(cfg, ks[0])
        return r


@cocotb.test()
async def mac_array_matches_reference(dut):
    tb = MACTestbench(dut)
    await tb.start()
    limit = 10 * (sum(tb.ks) + tb.cfg.rows * tb.tiles) + 100
    await tb.wait(tb.last.done, cycles=limit * (1 + max(tb.gaps, tb.out_gaps)))
    await ClockCycles(dut.clk, 4)   # an extra row would show now
    r = tb.result()
    write_result("mac", r)
    tb.y.log(dut._log, "y")
    tb.last.log(dut._log, "last")
    assert tb.last.count == len(tb.last.expected), f"{tb.last.count} of {len(tb.last.expected)} rows"
    assert not tb.y.mismatches, f"{tb.y.mismatches} mismatches of {r['outputs']} outputs"
    assert not tb.last.mismatches, f"{tb.last.mismatches} rows with a wrong last flag"
    assert not r["violations"], f"stream rules broken: {r['violations'][:5]}"
    if not tb.gaps and not tb.out_gaps and "formula_cycles" in r:
        dut._log.info("cycles %d (formula %d)", r["cycles"], r["formula_cycles"])
        assert r["cycles"] == r["formula_cycles"], (r["cycles"], r["formula_cycles"])
