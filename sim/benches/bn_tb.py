"""cocotb bench for the BN forward units (:mod:`l1bn.hw.bn_unit`).

The caller writes the batch as JSON into the file named by ``L1BN_BN_DATA``:
``{"x": channels x n values, "gamma": [channels], "beta": [channels]}``. Expected y and statistics
come from :func:`l1bn.spec.reference.bn.bn_forward` only. ``L1BN_GAPS`` (0..100) is the percent
chance of an idle input cycle and, independently, of a not-ready cycle on ``o`` and on ``stats``.
The bench writes what it measured to ``L1BN_BN_RESULT`` (JSON: mismatches, cycles, formula,
input and output rates) and asserts zero mismatches; with no gaps it also asserts that the cycle
count equals :func:`l1bn.hw.bn_unit.bn_latency_cycles` and that every channel's statistics came out.
``L1BN_DEBUG=1`` logs the handshake signals every cycle (``L1BN_DEBUG=1,sig1,sig2`` adds internal
signals by name).

One coroutine drives and samples every port each cycle: inputs change on the falling edge,
handshakes are read in the ReadOnly phase before the next rising edge.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import FallingEdge, ReadOnly
from l1bn.hw.bn_unit import bn_latency_cycles, stats_layout
from l1bn.spec.reference.bn import bn_forward

from .common import env_int, load_config, load_data, reset, start_clock, write_result

STATS_FIELDS = ("channel", "mu", "s", "sigma", "inv")


def _pack(values, bits):
    word, mask = 0, (1 << bits) - 1
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * bits)
    return word


def _field(word, offset, bits, signed):
    v = (word >> offset) & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


class Checker:
    """Compares every y beat and every stats record with the reference as they arrive."""

    def __init__(self, cfg, ref):
        self.cfg = cfg
        self.y = ref.y.flatten().tolist()
        self.stats = {name: getattr(ref, name).tolist() for name in STATS_FIELDS[1:]}
        self.outputs = 0
        self.mismatches = []
        self.stats_seen = []
        self.stats_bad = []
        lay = stats_layout(cfg)
        self.stat_fields = [(name, lay[name].offset, lay[name].shape.width, lay[name].shape.signed)
                            for name in STATS_FIELDS]

    def beat(self, word):
        w = self.cfg.out_width
        for k in range(self.cfg.lanes):
            got = _field(word, k * w, w, True)
            i = self.outputs
            if i >= len(self.y):
                self.mismatches.append({"index": i, "got": got, "expected": None})
            elif got != self.y[i]:
                self.mismatches.append({"channel": i // self.cfg.n, "element": i % self.cfg.n,
                                        "got": got, "expected": self.y[i]})
            self.outputs += 1

    def stat(self, word):
        rec = {name: _field(word, off, bits, sgn) for name, off, bits, sgn in self.stat_fields}
        c = rec["channel"]
        self.stats_seen.append(c)
        exp = {name: self.stats[name][c] for name in STATS_FIELDS[1:]} if c < self.cfg.channels else None
        if exp is None or any(rec[k] != exp[k] for k in STATS_FIELDS[1:]):
            self.stats_bad.append({"got": rec, "expected": exp})


@cocotb.test()
async def bn_matches_reference(dut):
    cfg = load_config()
    batch = load_data("bn")
    gaps = env_int("L1BN_GAPS", 0)
    rng = random.Random(env_int("L1BN_SEED", 1))
    t = {k: torch.tensor(v, dtype=torch.int64) for k, v in batch.items()}
    ref = bn_forward(t["x"], t["gamma"], t["beta"], cfg)
    chk = Checker(cfg, ref)

    flat = t["x"].flatten().tolist()
    beats = [_pack(flat[b * cfg.lanes:(b + 1) * cfg.lanes], cfg.width) for b in range(len(flat) // cfg.lanes)]
    gmask, bmask = (1 << cfg.gamma_width) - 1, (1 << cfg.beta_width) - 1
    gammas = [int(g) & gmask for g in batch["gamma"]]
    betas = [int(b) & bmask for b in batch["beta"]]
    total = len(flat)
    formula = bn_latency_cycles(cfg)
    limit = formula * (1 + gaps) * 4 + 1000

    def gap():
        return gaps > 0 and rng.randrange(100) < gaps

    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.stats__ready.value = 0
    await start_clock(dut)
    await reset(dut)
    await FallingEdge(dut.clk)

    debug = bool(os.environ.get("L1BN_DEBUG"))
    cycle, nxt = 0, 0
    in_cycles, out_first, out_last = [], None, None
    while chk.outputs < total and cycle < limit:
        valid = nxt < len(beats) and not gap()
        if valid:
            ch = nxt // cfg.beats
            dut.i__payload.value = beats[nxt]
            dut.gamma.value = gammas[ch]
            dut.beta.value = betas[ch]
        dut.i__valid.value = int(valid)
        o_ready, s_ready = not gap(), not gap()
        dut.o__ready.value = int(o_ready)
        dut.stats__ready.value = int(s_ready)
        await ReadOnly()
        if debug:
            dut._log.info("c%d %s iv=%s ir=%s ov=%s or=%s sv=%s", cycle, [(h, getattr(dut, h).value) for h in os.environ["L1BN_DEBUG"].split(",") if h != "1"], dut.i__valid.value,
                          dut.i__ready.value, dut.o__valid.value, dut.o__ready.value,
                          dut.stats__valid.value)
        if valid and int(dut.i__ready.value):
            in_cycles.append(cycle)
            nxt += 1
        if o_ready and int(dut.o__valid.value):
            chk.beat(dut.o__payload.value.to_unsigned())
            out_first = cycle if out_first is None else out_first
            out_last = cycle
        if s_ready and int(dut.stats__valid.value):
            chk.stat(dut.stats__payload.value.to_unsigned())
        await FallingEdge(dut.clk)
        cycle += 1
    # stats of the last channel come out before its first y, so all have been seen by now

    measured = out_last - in_cycles[0] + 1 if in_cycles and out_last is not None else None
    result = {
        "outputs": chk.outputs, "expected_outputs": total,
        "mismatches": len(chk.mismatches), "first": chk.mismatches[:20],
        "stats_seen": len(chk.stats_seen), "stats_mismatches": len(chk.stats_bad),
        "stats_first": chk.stats_bad[:5],
        "cycles": measured, "formula": formula,
        "in_span": in_cycles[-1] - in_cycles[0] + 1 if in_cycles else None,
        "in_rate": total / (in_cycles[-1] - in_cycles[0] + 1) if in_cycles else None,
        "out_rate": total / (out_last - out_first + 1) if out_last is not None else None,
        "gaps": gaps,
    }
    write_result("bn", result)
    for bad in chk.mismatches[:10]:
        dut._log.error("mismatch %s", bad)
    for bad in chk.stats_bad[:5]:
        dut._log.error("stats mismatch %s", bad)
    dut._log.info("cycles %s (formula %d), in rate %.3f, out rate %.3f elements/cycle",
                  measured, formula, result["in_rate"] or 0, result["out_rate"] or 0)
    assert chk.outputs == total, f"{chk.outputs} of {total} outputs after {cycle} cycles"
    assert not chk.mismatches, f"{len(chk.mismatches)} y mismatches of {total}"
    assert not chk.stats_bad, f"{len(chk.stats_bad)} stats mismatches"
    if gaps == 0:
        assert sorted(chk.stats_seen) == list(range(cfg.channels)), f"stats seen for {chk.stats_seen}"
        assert measured == formula, f"measured {measured} cycles, formula {formula}"
