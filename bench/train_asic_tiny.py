"""The tiny training net through the whole NanGate45 flow, end to end (several minutes).

Runs ``sim/report/train_asic.py`` on the tiny net of ``tests/test_train_asic.py`` (two convolutions, a linear layer, batch 3) and
prints what the flow must hold: the step's logits at gate level equal the integer reference, the
simulated cycles equal the schedule's formula, every block has area, the energy by block sums to
the step's, and a rerun reads the cache. Exit status 1 when one of them does not hold.

Usage::

    .venv/bin/python bench/train_asic_tiny.py [--out build/train-asic-tiny]

It was a slow test until 2026-12-07; it lives here, outside the suite's time budget (the
Verilator build of the netlist takes minutes). Its logits differed (all 0 at gate level) while the
flow started every flip-flop at 0: gamma and the LFSR seeds of this net are memories under 256
bits, so flip-flops with initial values; the gate-level netlist now gives them those values
(``flop_inits``, docs/asic.md), and the cheap check of that is
``tests/test_train_asic.py::test_flip_flops_start_at_their_initial_values_at_gate_level``.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from l1bn.hw.train.accel import TrainAccelerator
from l1bn.sim.report import train_asic
from l1bn.spec.training import IntTrainConfig, TrainLayer

TINY = IntTrainConfig(in_shape=(2, 4, 4), layers=(TrainLayer(kind="conv2d", out=3, kernel=3, stride=2, padding=1),
                                                  TrainLayer(kind="conv2d", out=5, kernel=3, stride=1, padding=1),
                                                  TrainLayer(kind="linear", out=4, kernel=1, stride=1, padding=0)),
                      batch=3, lfsr_lanes=4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/train-asic-tiny"))
    a = ap.parse_args(argv)
    acc = TrainAccelerator(TINY, rows=4, seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1 << TINY.abits, size=(TINY.batch, *TINY.in_shape))
    y = rng.integers(0, TINY.layers[-1].out, size=TINY.batch)
    res = train_asic.train_asic_figures(acc, x, y, a.out, window=16)
    s, e = res["synth"], res["energy"]
    t0 = time.perf_counter()
    again = train_asic.train_asic_figures(acc, x, y, a.out, window=16)
    rerun_s = time.perf_counter() - t0
    checks = [
        ("gate-level logits == integer reference", e["logits_equal"]
         and e["logits_checked"] == TINY.batch * TINY.layers[-1].out),
        ("cycles per step == formula", e["cycles_per_step"] == acc.cycles_per_step),
        ("simulated cycles within 2 of the formula", abs(e["cycles_simulated"] - acc.cycles_per_step) <= 2),
        ("every block has area", all(s["blocks"][b]["area_um2"] > 0 for b, _ in train_asic.ASIC_BLOCKS)),
        ("energy by block sums to the step's",
         abs(sum(b["energy_pj"] for b in e["blocks"].values()) - e["energy_pj"]) <= 0.1),
        ("rerun from the cache, equal", again == res and rerun_s < 30),
    ]
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
