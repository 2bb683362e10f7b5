"""Integer training of the digits CNN (w4a4) against the gradient bits: test accuracy per norm.

Each row trains L1, L2 and range for every seed with ``gbits`` bits for every error and weight
gradient. Rows above 8 bits change what the widths require (docs/arith/training.md, "Widths"):
the master weights get ``gbits + 8`` bits so the learning rate does not round the gradient away,
and at 12 and 16 bits the BN backward's ``inner_frac`` (and at 16 bits ``recip_bits`` and gamma)
shrink so that range BN's ``u * gamma * inv`` fits 62 bits; the same settings for every norm.

    .venv/bin/python bench/int_train_gbits.py [--gbits 4 6 8 12 16] [--epochs 20] [--seeds 0 1 2]
                                              [--rounding stochastic nearest]
    .venv/bin/python bench/int_train_gbits.py --sparsity [--gbits 4 8]

``--sparsity`` instead prints, per norm and BN layer, what survives the error quantizer: after one
epoch (seed 0), one step on the first 64 training images, the share of nonzero entries of the
quantized accumulator gradient ``dacc`` and the ratio of the tensor's largest ``|u * gamma * inv|``
to the median over channels of each channel's 99th percentile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

#: per-row config changes (beyond gbits), identical for every norm
ROWS = {
    12: dict(inner_frac=5, master_bits=20),
    16: dict(inner_frac=5, master_bits=24, recip_bits=18, gamma_width=8, gamma_frac=6),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gbits", type=int, nargs="+", default=[4, 6, 8, 12, 16])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--norms", nargs="+", default=["l1", "l2", "range"])
    ap.add_argument("--rounding", nargs="+", default=["stochastic"], choices=["stochastic", "nearest"])
    ap.add_argument("--sparsity", action="store_true", help="print what survives the error quantizer")
    a = ap.parse_args()
    if a.sparsity:
        return sparsity(a)
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.int_train import train_integer

    t0, res = time.perf_counter(), {}
    for rounding in a.rounding:
        for g in a.gbits:
            for norm in a.norms:
                for seed in a.seeds:
                    cfg = IntTrainConfig(norm=norm, gbits=g, grad_rounding=rounding, **ROWS.get(g, {}))
                    _, m, _ = train_integer(cfg, model="cnn", epochs=a.epochs, seed=seed)
                    res[rounding, g, norm, seed] = 100 * m["test_accuracy"]
                    print(f"  {rounding} g{g} {norm} seed {seed}: {res[rounding, g, norm, seed]:.2f} %", flush=True)
    print(f"\nDigits CNN w4a4, integer training, {a.epochs} epochs, seeds {a.seeds}; test accuracy % "
          f"mean (min..max); {time.perf_counter() - t0:.0f} s total, load average "
          f"{os.getloadavg()[0]:.1f} (shared machine)\n")
    print("| gradient bits | rounding | changed settings | " + " | ".join(a.norms) + " |")
    print("| --- " * (3 + len(a.norms)) + "|")
    for rounding in a.rounding:
        for g in a.gbits:
            cells = []
            for norm in a.norms:
                v = [res[rounding, g, norm, s] for s in a.seeds]
                cells.append(f"{statistics.mean(v):.2f} ({min(v):.2f}..{max(v):.2f})")
            extra = ", ".join(f"{k}={v}" for k, v in ROWS.get(g, {}).items()) or "-"
            print(f"| {g} | {rounding} | {extra} | " + " | ".join(cells) + " |")


def sparsity(a):
    import numpy as np
    from l1bn.spec.reference import train as T
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.data import digits_split

    xtr, ytr = digits_split()["train"]
    print("| gradient bits | norm | layer | nonzero dacc % | tensor max / median channel p99 |")
    print("| --- | --- | --- | --- | --- |")
    for g in a.gbits:
        for norm in a.norms:
            cfg = IntTrainConfig(norm=norm, gbits=g, **ROWS.get(g, {}))
            x, y = T.quantize_images(xtr.numpy(), cfg), ytr.numpy().astype(np.int64)
            st, _ = T.train_epoch(T.init_state(cfg, 0), x, y, cfg, epoch=0)
            _, r = T.train_step(st, x[:64], y[:64], cfg, trace=True)
            for p in cfg.names[:-1]:
                d = np.abs(r.trace[p]["dxw"]).astype(np.float64)
                p99 = np.percentile(d, 99, axis=1)
                ratio = d.max() / np.median(p99[p99 > 0])
                print(f"| {g} | {norm} | {p} | {100 * (r.trace[p]['dacc'] != 0).mean():.1f} | {ratio:.0f} |")


if __name__ == "__main__":
    main()
