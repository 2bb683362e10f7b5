"""cocotb bench for the whole-network accelerator (:mod:`l1bn.hw.accelerator`).

Environment (set by :func:`l1bn.sim.sim_net.simulate_net`):

``L1BN_EXPORT``   the export folder (loaded and validated with ``load_export``)
``L1BN_IMAGES``   how many test images to classify (the first K of the test split)
``L1BN_NET_IFACE`` JSON: ``logit_bits``, ``classes``, ``argmax_bits`` of the output beat and the
                  formula's ``cycles_per_image`` and ``latency``
``L1BN_PROGRESS`` a file the bench rewrites with ``done total`` every few images
``L1BN_NET_RESULT`` where the bench writes its measurements as JSON

Expected logits come only from :func:`l1bn.sw.netrun.run_net` (the integer reference); the
predicted class of the reference is ``torch.argmax`` (first maximum). Python touches the design
once per input beat and once per image (it awaits ``o.valid``), never on every clock of the
compute phase, so Verilator runs at full speed.
"""

import json
import os
import time

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from .common import env_int, reset, start_clock, write_result

PERIOD_NS = 10


def _unpack(word: int, bits: int, count: int) -> list[int]:
    out = []
    for n in range(count):
        v = (word >> (n * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def _progress(path, done, total):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{done} {total}\n")
        os.replace(tmp, path)


@cocotb.test()
async def net_matches_reference(dut):
    import torch
    from l1bn.sw.export import load_export
    from l1bn.sw.netrun import run_net

    e = load_export(os.environ["L1BN_EXPORT"])
    iface = json.loads(os.environ["L1BN_NET_IFACE"])
    x = e.test_inputs
    n = min(env_int("L1BN_IMAGES", x.shape[0]), x.shape[0])
    x = x[:n]
    ref = run_net(e.net, x)                   # (n, classes) int64
    ref_pred = torch.argmax(ref, dim=1)
    labels = e.test_labels[:n].tolist() if e.test_labels is not None else None
    pixels = x.reshape(n, -1).tolist()        # (c, y, x) order
    lb, classes = iface["logit_bits"], iface["classes"]
    progress = os.environ.get("L1BN_PROGRESS")

    dut.i__valid.value = 0
    dut.o__ready.value = 1
    await start_clock(dut, PERIOD_NS)
    await reset(dut)

    got, preds, starts, latencies, bad = [], [], [], [], []
    t0 = time.perf_counter()
    for img in range(n):
        beats = pixels[img]
        sent = 0
        await FallingEdge(dut.clk)
        while sent < len(beats):
            # i.ready depends on registers only: its value now holds at the coming rising edge
            if int(dut.i__ready.value):
                if sent == 0:
                    first_edge = get_sim_time(unit="ns") + PERIOD_NS // 2
                    starts.append(first_edge)
                dut.i__valid.value = 1
                dut.i__payload.value = int(beats[sent])
                sent += 1
            else:
                dut.i__valid.value = 0
            await FallingEdge(dut.clk)
        dut.i__valid.value = 0
        if not int(dut.o__valid.value):
            await RisingEdge(dut.o__valid)
        await ReadOnly()
        raw = dut.o__payload.value
        if not raw.is_resolvable:
            raise AssertionError(f"image {img}: output beat is not 0/1: {raw}")
        word = int(raw)
        await RisingEdge(dut.clk)             # the output handshake (o.ready is high)
        latencies.append(int(get_sim_time(unit="ns") - first_edge) // PERIOD_NS)
        logits = _unpack(word, lb, classes)
        amax = (word >> (lb * classes)) & ((1 << iface["argmax_bits"]) - 1)
        got.append(logits)
        preds.append(amax)
        exp = ref[img].tolist()
        if logits != exp or amax != int(ref_pred[img]):
            bad.append({"image": img, "got": logits, "expected": exp, "argmax": amax,
                        "expected_argmax": int(ref_pred[img])})
            dut._log.error("image %d: logits %s argmax %d, reference %s argmax %d", img, logits, amax,
                           exp, int(ref_pred[img]))
        if img % 8 == 7 or img == n - 1:
            _progress(progress, img + 1, n)
    wall = time.perf_counter() - t0

    periods = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    period_cycles = sorted({int(p) // PERIOD_NS for p in periods})
    result = {
        "images": n, "mismatches": len(bad), "first": bad[:10],
        "hw_predictions": preds,
        "hw_correct": None if labels is None else sum(int(p == y) for p, y in zip(preds, labels, strict=True)),
        "ref_correct": None if labels is None else sum(int(p == y) for p, y in zip(ref_pred.tolist(), labels, strict=True)),
        "latency_cycles": sorted(set(latencies)), "period_cycles": period_cycles,
        "formula_cycles": iface["cycles_per_image"], "formula_latency": iface["latency"],
        "sim_wall_s": wall, "images_per_s": n / wall if wall > 0 else None,
    }
    write_result("net", result)
    assert not bad, f"{len(bad)} of {n} images differ from the integer reference"
    assert set(latencies) == {iface["latency"]}, (sorted(set(latencies)), iface["latency"])
    if periods:
        assert period_cycles == [iface["cycles_per_image"]], (period_cycles, iface["cycles_per_image"])
