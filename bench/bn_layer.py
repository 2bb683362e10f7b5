"""Forward + backward time of one BN layer: L1BatchNorm2d vs nn.BatchNorm2d vs plain-op L1/L2.

Shapes from /work/shared/reference/gpu-anchor.md. On CUDA: the anchor's shapes, CUDA-event timing,
fp32 and bf16, L1BatchNorm2d with its torch.compile'd (fused) kernels. On CPU: the batch is divided
by --cpu-div (default 8, so it fits 2 cores in seconds), eager kernels, wall-clock timing.
Median of --reps runs after warm-up. Ratios are relative to nn.BatchNorm2d.

    .venv/bin/python bench/bn_layer.py [--device cpu|cuda] [--reps 10] [--cpu-div 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

SHAPES = [(256, 64, 32, 32), (128, 256, 16, 16), (64, 128, 56, 56)]


def _timer(dev):
    if dev.type == "cuda":
        def t(fn, reps):
            out = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                out.append(a.elapsed_time(b))
            return statistics.median(out)
    else:
        def t(fn, reps):
            out = []
            for _ in range(reps):
                s = time.perf_counter()
                fn()
                out.append(1e3 * (time.perf_counter() - s))
            return statistics.median(out)
    return t


def main():
    from l1bn.sw.layers import L1BatchNorm2d, l1bn_forward_plain, l2bn_forward_plain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--cpu-div", type=int, default=8)
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA GPU is available; use --device cpu")
    dev = torch.device(a.device)
    timeit = _timer(dev)
    dtypes = [torch.float32, torch.bfloat16]
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, median of {a.reps} forward+backward runs, ms\n")
    print("| shape (N,C,H,W) | dtype | nn.BatchNorm2d | L1BatchNorm2d | plain-op L1BN | plain-op L2BN | "
          "L1BatchNorm2d / nn.BN | plain L1 / nn.BN | plain L2 / nn.BN |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in SHAPES:
        if dev.type == "cpu":
            shape = (max(2, shape[0] // a.cpu_div), *shape[1:])
        for dt in dtypes:
            torch.manual_seed(0)
            x = torch.randn(shape, device=dev, dtype=dt, requires_grad=True)
            dy = torch.randn(shape, device=dev, dtype=dt)
            c = shape[1]
            bn = nn.BatchNorm2d(c, device=dev, dtype=dt)
            l1 = L1BatchNorm2d(c, device=dev, dtype=dt)
            w = torch.ones(c, device=dev, dtype=dt, requires_grad=True)
            b = torch.zeros(c, device=dev, dtype=dt, requires_grad=True)
            fns = {"bn": lambda: bn(x).backward(dy), "l1": lambda: l1(x).backward(dy),  # noqa: B023 (used in this iteration only)
                   "p1": lambda: l1bn_forward_plain(x, w, b).backward(dy),  # noqa: B023 (used in this iteration only)
                   "p2": lambda: l2bn_forward_plain(x, w, b).backward(dy)}  # noqa: B023 (used in this iteration only)
            ms = {}
            for k, fn in fns.items():
                timeit(fn, 2)  # warm-up (and compile on CUDA)
                ms[k] = timeit(fn, a.reps)
            print(f"| {','.join(map(str, shape))} | {str(dt).split('.')[1]} | {ms['bn']:.2f} | {ms['l1']:.2f} | "
                  f"{ms['p1']:.2f} | {ms['p2']:.2f} | {ms['l1'] / ms['bn']:.2f} | {ms['p1'] / ms['bn']:.2f} | "
                  f"{ms['p2'] / ms['bn']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
