"""Integer-only training of the digits CNN beside float QAT: test accuracy per norm over seeds.

Integer: ``l1bn.spec.reference.train`` (``l1bn train --integer``) at w4a4 with 8-bit gradients and
the IntTrainConfig defaults; float QAT: ``l1bn.sw.train`` (``l1bn train``, Adam, cosine decay) at
w4a4; same epochs, seeds, data split. The integer test accuracy is the folded network's (what the
export computes); the table also gives the training-mode forward's agreement with it.

    .venv/bin/python bench/int_train_convergence.py [--epochs 20] [--seeds 0 1 2] [--gbits 8] [--no-float]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def cell(v):
    return f"{statistics.mean(v):.2f} ({min(v):.2f}..{max(v):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--gbits", type=int, default=8)
    ap.add_argument("--norms", nargs="+", default=["l1", "l2", "range"])
    ap.add_argument("--no-float", action="store_true", help="skip the float QAT runs")
    a = ap.parse_args()
    import torch
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.int_train import train_integer
    from l1bn.sw.quant import QuantConfig
    from l1bn.sw.train import run_config, train_model

    t0 = time.perf_counter()
    res = {}
    for norm in a.norms:
        for seed in a.seeds:
            cfg = IntTrainConfig(norm=norm, gbits=a.gbits)
            _, m, _ = train_integer(cfg, model="cnn", epochs=a.epochs, seed=seed)
            res["int", norm, seed] = m
            print(f"  integer {norm} seed {seed}: test {100 * m['test_accuracy']:.2f} %  "
                  f"({m['time_s']:.1f} s)", flush=True)
            if not a.no_float:
                _, f = train_model(run_config(model="cnn", norm=norm, qcfg=QuantConfig(wbits=4, abits=4),
                                              epochs=a.epochs, seed=seed))
                res["float", norm, seed] = f
                print(f"  float   {norm} seed {seed}: test {100 * f['test_accuracy']:.2f} %  "
                      f"({f['time_s']:.1f} s)", flush=True)
    load = os.getloadavg()[0]
    print(f"\nDigits CNN w4a4, {a.epochs} epochs, seeds {a.seeds}, 360 test images; integer: "
          f"{a.gbits}-bit gradients ({IntTrainConfig(gbits=a.gbits).grad_rounding} rounding), "
          f"float QAT: torch {torch.get_num_threads()} threads; {time.perf_counter() - t0:.0f} s total, "
          f"load average {load:.1f} (shared machine)\n")
    cols = ["norm", "integer test % mean (min..max)", "per seed", "train-mode agreement % (mean)",
            "integer s/run (mean)"]
    if not a.no_float:
        cols += ["float QAT test % mean (min..max)", "per seed", "float s/run (mean)"]
    print("| " + " | ".join(cols) + " |")
    print("| --- " * len(cols) + "|")
    for norm in a.norms:
        it = [100 * res["int", norm, s]["test_accuracy"] for s in a.seeds]
        ag = [100 * res["int", norm, s]["train_mode_agreement"] for s in a.seeds]
        row = [norm, cell(it), " ".join(f"{v:.2f}" for v in it), f"{statistics.mean(ag):.1f}",
               f"{statistics.mean(res['int', norm, s]['time_s'] for s in a.seeds):.1f}"]
        if not a.no_float:
            ft = [100 * res["float", norm, s]["test_accuracy"] for s in a.seeds]
            row += [cell(ft), " ".join(f"{v:.2f}" for v in ft),
                    f"{statistics.mean(res['float', norm, s]['time_s'] for s in a.seeds):.1f}"]
        print("| " + " | ".join(row) + " |")
    worst = min(100 * res["int", n, s]["test_accuracy"] for n in a.norms for s in a.seeds)
    print(f"\nlowest integer run: {worst:.2f} % (target >= 95 %)")


if __name__ == "__main__":
    main()
