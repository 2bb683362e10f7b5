"""L1 vs L2 vs range batch norm on the digits CNN: test accuracy at float / 8 / 4 / 2 bits, 3 seeds.

Prints a markdown table (mean and spread = min..max over seeds per norm, |L1 - L2| and
|range - L2| per seed pair) and saves the convergence plot (training loss per epoch, every norm,
mean over seeds) to docs/img/. The norms are the registry's (``l1bn.spec.norms``).

    .venv/bin/python bench/accuracy.py [--epochs 20] [--seeds 0 1 2] [--plot docs/img/l1_vs_l2_loss.png]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bits", nargs="+", default=["float", "8", "4", "2"])
    ap.add_argument("--plot", default="docs/img/l1_vs_l2_loss.png")
    ap.add_argument("--norms", nargs="+", default=None, help="default: every registered norm")
    a = ap.parse_args()
    from l1bn.spec.norms import BASELINE, norm_names

    norms = a.norms or list(norm_names())
    from l1bn.sw.quant import QuantConfig
    from l1bn.sw.train import run_config, train_model

    res, t0 = {}, time.perf_counter()
    for bits in a.bits:
        q = None if bits == "float" else QuantConfig(wbits=int(bits), abits=int(bits))
        for norm in norms:
            for seed in a.seeds:
                cfg = run_config(model="cnn", norm=norm, qcfg=q, epochs=a.epochs, seed=seed)
                _, m = train_model(cfg)
                res[bits, norm, seed] = m
                print(f"  {bits:>5} {norm} seed {seed}: test {100 * m['test_accuracy']:.2f} %", flush=True)
    print(f"\nCNN on digits (360 test images), {a.epochs} epochs, seeds {a.seeds}, "
          f"{torch.get_num_threads()} threads, {time.perf_counter() - t0:.0f} s total\n")
    others = [n for n in norms if n != BASELINE] if BASELINE in norms else []
    print("| W/A bits | " + " | ".join(f"{n} mean (min..max) %" for n in norms) + " | "
          + " | ".join(f"mean abs({n} - {BASELINE}) points" for n in others) + " |")
    print("| --- " * (1 + len(norms) + len(others)) + "|")
    for bits in a.bits:
        acc = {n: [100 * res[bits, n, s]["test_accuracy"] for s in a.seeds] for n in norms}
        cell = lambda v: f"{statistics.mean(v):.2f} ({min(v):.2f}..{max(v):.2f})"  # noqa: E731
        diffs = [statistics.mean(abs(x - y) for x, y in zip(acc[n], acc[BASELINE], strict=True)) for n in others]
        print(f"| {bits} | " + " | ".join(cell(acc[n]) for n in norms) + " | "
              + " | ".join(f"{d:.2f}" for d in diffs) + " |")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(a.bits), figsize=(4 * len(a.bits), 3.2), sharey=True)
        for ax, bits in zip(axes, a.bits, strict=True):
            for norm, style in zip(norms, ("-", "--", ":", "-."), strict=False):
                curves = torch.tensor([res[bits, norm, s]["train_loss"] for s in a.seeds])
                ax.plot(range(1, a.epochs + 1), curves.mean(0), style, label=f"{norm} BN")
            ax.set_yscale("log")
            ax.set_title(f"{bits}" + ("" if bits == "float" else "-bit W/A"))
            ax.set_xlabel("epoch")
        axes[0].set_ylabel("train loss (mean over seeds)")
        axes[0].legend()
        fig.tight_layout()
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=100)
        print(f"\nplot: {a.plot}")


if __name__ == "__main__":
    main()
