"""Epoch time of integer-only training (the numpy reference) on the digits training split.

One epoch = 1437 images in batches of 64 (23 steps: forward with batch statistics, softmax
gradient, backward, updates), ``l1bn.spec.reference.train.train_epoch``; median and min over
``--repeats`` epochs after one warm-up epoch, per norm. Numpy's BLAS runs on one thread (the
reference limits it); the machine has 2 cores and is shared, so the load average is printed too.

    .venv/bin/python bench/int_train_speed.py [--repeats 5] [--gbits 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gbits", type=int, default=8)
    ap.add_argument("--norms", nargs="+", default=["l1", "l2", "range"])
    a = ap.parse_args()
    import numpy as np
    from l1bn.spec.reference import train as T
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.data import digits_split

    xtr, ytr = digits_split()["train"]
    rows = []
    for norm in a.norms:
        cfg = IntTrainConfig(norm=norm, gbits=a.gbits)
        x, y = T.quantize_images(xtr.numpy(), cfg), ytr.numpy().astype(np.int64)
        st = T.init_state(cfg, 0)
        st, _ = T.train_epoch(st, x, y, cfg, epoch=0)           # warm-up
        times = []
        for e in range(1, a.repeats + 1):
            st, r = T.train_epoch(st, x, y, cfg, epoch=e)
            times.append(r.time_s)
        rows.append((norm, statistics.median(times), min(times), r.steps))
    print(f"integer training epoch, digits CNN w4a4 g{a.gbits}, {len(ytr)} images, batch 64; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
          f"{os.getloadavg()[0]:.1f} (shared machine); median and min of {a.repeats} epochs\n")
    print("| norm | epoch s (median) | epoch s (min) | steps | images/s (median) | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for norm, med, lo, steps in rows:
        print(f"| {norm} | {med:.3f} | {lo:.3f} | {steps} | {len(ytr) / med:.0f} | <= 10 s |")


if __name__ == "__main__":
    main()
