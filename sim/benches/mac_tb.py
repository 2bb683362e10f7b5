"""cocotb bench for the MAC array (:mod:`l1bn.hw.mac_array`).

The caller writes the tiles as JSON into the file named by ``L1BN_MAC_DATA``:
``{"tiles": [{"w": M x K weight values, "a": K x N activation values}, ...]}``. Expected outputs
come from :func:`l1bn.spec.reference.mac.mac_tile` only. ``L1BN_GAPS`` / ``L1BN_OUT_GAPS`` (0..100)
are the percent chance of an idle input cycle / a not-ready output cycle. The bench writes what it
measured (mismatches, cycles, per-tile completion cycles) as JSON to ``L1BN_MAC_RESULT``; with no
gaps and equal K it asserts the total cycle count equals ``stream_cycles``.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from l1bn.hw.mac_array import stream_cycles, tile_period
from l1bn.spec.reference.mac import encode_weights, mac_tile

from .common import env_int, load_config, load_data, reset, start_clock, write_result


def _pack(values, bits):
    word, mask = 0, (1 << bits) - 1
    for n, v in enumerate(values):
        word |= (int(v) & mask) << (n * bits)
    return word


def _unpack(word, bits, count, signed):
    out = []
    for n in range(count):
        v = (word >> (n * bits)) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


@cocotb.test()
async def mac_array_matches_reference(dut):
    cfg = load_config()
    tiles = load_data("mac")["tiles"]
    gaps, out_gaps = env_int("L1BN_GAPS", 0), env_int("L1BN_OUT_GAPS", 0)
    rng = random.Random(env_int("L1BN_SEED", 1))
    R, C = cfg.rows, cfg.cols
    rbits = cfg.result_bits
    out_signed = not (cfg.requant and cfg.relu)

    beats, expected = [], []
    for t in tiles:
        w = torch.tensor(t["w"], dtype=torch.int64)
        a = torch.tensor(t["a"], dtype=torch.int64)
        expected.append(mac_tile(w, a, cfg).tolist())
        wbits_raw = encode_weights(w, cfg)
        k = w.shape[1]
        for s in range(k):
            word = (_pack(wbits_raw[:, s].tolist(), cfg.wbits)
                    | (_pack(a[s].tolist(), cfg.abits) << (R * cfg.wbits))
                    | (int(s == k - 1) << (R * cfg.wbits + C * cfg.abits)))
            beats.append(word)

    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start_clock(dut)
    await reset(dut)

    got, tile_done = [], []
    cycle, sent, first_in, last_out, stalls = 0, 0, None, None, 0
    total_rows = R * len(tiles)
    limit = 10 * (len(beats) + total_rows) + 100
    while len(got) < total_rows:
        await FallingEdge(dut.clk)
        drive = sent < len(beats) and not (gaps and rng.randrange(100) < gaps)
        dut.i__valid.value = int(drive)
        if drive:
            dut.i__payload.value = beats[sent]
        dut.o__ready.value = 0 if (out_gaps and rng.randrange(100) < out_gaps) else 1
        await ReadOnly()
        if os.environ.get("L1BN_DEBUG"):
            dut._log.info("c%d iv=%s ir=%s ip=%s ov=%s op=%s", cycle, dut.i__valid.value,
                          dut.i__ready.value, dut.i__payload.value, dut.o__valid.value, dut.o__payload.value)
        if drive:
            if int(dut.i__ready.value):
                if first_in is None:
                    first_in = cycle
                sent += 1
            else:
                stalls += 1
        if int(dut.o__valid.value) and int(dut.o__ready.value):
            raw = dut.o__payload.value
            if not raw.is_resolvable:
                raise AssertionError(f"output row {len(got)} is not 0/1: {raw} (cycle {cycle})")
            word = int(raw)
            got.append(_unpack(word, rbits, C, out_signed))
            last = (word >> (C * rbits)) & 1
            if last != (len(got) % R == 0):
                raise AssertionError(f"last={last} on output row {len(got) - 1} (rows={R})")
            if last:
                tile_done.append(cycle)
            last_out = cycle
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > limit:
            raise AssertionError(f"timeout: {len(got)} of {total_rows} rows after {cycle} cycles")
    dut.i__valid.value = 0

    bad = []
    for t, exp in enumerate(expected):
        rows = got[t * R:(t + 1) * R]
        for i in range(R):
            for j in range(C):
                if rows[i][j] != exp[i][j]:
                    bad.append({"tile": t, "row": i, "col": j, "got": rows[i][j], "expected": exp[i][j]})
    for b in bad[:10]:
        dut._log.error("tile %(tile)d y[%(row)d][%(col)d] = %(got)d, expected %(expected)d", b)

    ks = [len(t["a"]) for t in tiles]
    total = last_out - first_in + 1
    result = {"mismatches": len(bad), "first": bad[:20], "outputs": R * C * len(tiles),
              "cycles": total, "tile_done": tile_done, "input_stalls": stalls, "ks": ks}
    if os.environ.get("L1BN_OUT_ROWS"):
        result["rows"] = got
    if len(set(ks)) == 1:
        result["formula_cycles"] = stream_cycles(cfg, ks[0], len(tiles))
        result["formula_period"] = tile_period(cfg, ks[0])
    write_result("mac", result)
    assert not bad, f"{len(bad)} mismatches of {R * C * len(tiles)} outputs"
    if not gaps and not out_gaps and len(set(ks)) == 1:
        dut._log.info("cycles %d (formula %d)", total, result["formula_cycles"])
        assert total == result["formula_cycles"], (total, result["formula_cycles"])
