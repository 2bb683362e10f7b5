"""QAT training epoch of the digits CNN: L1BN vs L2BN (nn.BatchNorm2d), side by side.

One epoch = the training loop of ``l1bn train`` (Adam, batch 64, cross-entropy, 23 steps over the
1437 training images), with W/A quantization (--bits, default 4). Three models built from the same
seed train in turn, one epoch each per round: L2BN, L1BN with the default path (the C++ kernels
on CPU) and L1BN with the eager PyTorch math (the fallback). A cell is the median epoch time over
--rounds rounds after one warm-up round; a ratio is the median over rounds of the per-round ratio
to the L2BN epoch.

    .venv/bin/python bench/qat_epoch.py [--rounds 9] [--bits 4] [--threads 2] [--model cnn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _epoch(model, opt, x, y, perm):
    model.train()
    for idx in perm.split(64):
        if len(idx) < 2:
            continue
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main():
    from l1bn.sw import bn_fast
    from l1bn.sw.data import train_split
    from l1bn.sw.layers import L1BatchNorm
    from l1bn.sw.models import build_model
    from l1bn.sw.quant import QuantConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    a = ap.parse_args()
    if a.rounds < 1 or a.threads < 1:
        ap.exit(2, "error: --rounds and --threads must be >= 1\n")
    torch.set_num_threads(a.threads)
    q = QuantConfig(wbits=a.bits, abits=a.bits)
    x, y = train_split()
    runs = {}
    for name, norm, impl in (("L2BN", "l2", None), ("L1BN", "l1", "auto"), ("L1BN eager", "l1", "eager")):
        torch.manual_seed(0)
        m = build_model(a.model, norm, q)
        for mod in m.modules():
            if isinstance(mod, L1BatchNorm):
                mod.impl = impl
        runs[name] = (m, torch.optim.Adam(m.parameters(), lr=3e-3))
    g = torch.Generator().manual_seed(0)
    times = {k: [] for k in runs}
    for r in range(a.rounds + 1):
        perm = torch.randperm(len(y), generator=g)
        for k in (list(runs) if r % 2 else list(runs)[::-1]):
            t = time.perf_counter()
            _epoch(*runs[k], x, y, perm)
            if r:  # round 0 warms up
                times[k].append(1e3 * (time.perf_counter() - t))
    print(f"{a.model} w{a.bits}a{a.bits} QAT, one epoch (1437 images, batch 64), {a.threads} threads, "
          f"median of {a.rounds} side-by-side rounds; {bn_fast.status()}\n")
    print("| model | epoch ms | ratio to L2BN |")
    print("| --- | --- | --- |")
    for k, v in times.items():
        ratio = statistics.median(t / b for t, b in zip(v, times["L2BN"], strict=True))
        print(f"| {k} | {statistics.median(v):.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
