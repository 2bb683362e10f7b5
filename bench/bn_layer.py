"""Forward + backward time of one BN layer: L1BatchNorm2d, RangeBatchNorm2d vs nn.BatchNorm2d, side by side.

Shapes: those of the GPU anchor in docs/bn_layer_bench.md ((256,64,32,32), (128,256,16,16),
(64,128,56,56)). On CPU the batch is divided by --cpu-div (default 8) so a run fits 2 cores in
seconds, --threads torch threads (default 2), wall-clock timing. On CUDA the anchor's shapes, CUDA
events; nn.BatchNorm2d is cuDNN's kernel and L1BatchNorm2d / RangeBatchNorm2d run their torch.compile'd
paths. RangeBatchNorm2d runs its fast path (C++ kernels on CPU) and its eager path (plain ops +
autograd, what the layer ran before the kernels).

Every round runs each variant once in turn (so machine load hits all of them alike); a cell is
the median over --reps rounds after 2 warm-up rounds, and a ratio is the median over rounds of
(variant time / nn.BatchNorm2d time in the same round); "best / best" is the ratio of the fastest
rounds (the estimate least touched by other jobs on a shared machine). x.grad is cleared before each backward
(as for an activation in a network: dx is handed over, not added to an old gradient).

    .venv/bin/python bench/bn_layer.py [--device cpu|cuda] [--reps 15] [--cpu-div 8] [--threads 2]
                                       [--channels-last] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

SHAPES = [(256, 64, 32, 32), (128, 256, 16, 16), (64, 128, 56, 56)]


def _timer(dev):
    """fn -> milliseconds of one call (CUDA events on a GPU, wall clock on CPU)."""
    if dev.type == "cuda":
        def t(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b)
    else:
        def t(fn):
            s = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - s)
    return t


def side_by_side(fns: dict, reps: int, timeit, warmup: int = 2) -> tuple[dict, dict, dict]:
    """Round-robin timing: ({name: median ms}, {name: median per-round ratio to the first name},
    {name: fastest round / the first name's fastest round})."""
    for _ in range(warmup):
        for fn in fns.values():
            timeit(fn)
    ms = {k: [] for k in fns}
    for r in range(reps):
        names = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate the order as well
        for k in names:
            ms[k].append(timeit(fns[k]))
    base = next(iter(fns))
    ratios = {k: statistics.median(a / b for a, b in zip(v, ms[base], strict=True)) for k, v in ms.items()}
    best = {k: min(v) / min(ms[base]) for k, v in ms.items()}
    return {k: statistics.median(v) for k, v in ms.items()}, ratios, best


def main():
    from l1bn.sw import bn_fast
    from l1bn.sw.layers import L1BatchNorm2d, l1bn_forward_plain, l2bn_forward_plain
    from l1bn.sw.range_bn import RangeBatchNorm2d

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cpu-div", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"],
                    default=["float32", "bfloat16"])
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.exit(2, f"error: --device cuda but this PyTorch ({torch.__version__}, CUDA build: "
                   f"{torch.version.cuda}) sees no CUDA GPU; use --device cpu\n")
    if a.reps < 1 or a.cpu_div < 1 or a.threads < 1:
        ap.exit(2, "error: --reps, --cpu-div and --threads must be >= 1\n")
    dev = torch.device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(a.threads)
    timeit = _timer(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    where = (torch.cuda.get_device_name() if dev.type == "cuda"
             else f"{torch.get_num_threads()} threads; {bn_fast.status()}")
    l1impl = "compile" if dev.type == "cuda" else "ext"
    print(f"device {dev} ({where})\ntorch {torch.__version__}, {'channels_last' if a.channels_last else 'contiguous'}, "
          f"forward+backward, median of {a.reps} side-by-side rounds, ms; ratios to nn.BatchNorm2d\n")
    print(f"| shape (N,C,H,W) | dtype | nn.BatchNorm2d | L1BatchNorm2d ({l1impl}) | L1BatchNorm2d (eager) | "
          f"plain-op L1BN | plain-op L2BN | RangeBatchNorm2d ({l1impl}) | RangeBatchNorm2d (eager) | "
          "L1BatchNorm2d / nn.BN | (best / best) | eager / nn.BN | plain L1 / nn.BN | plain L2 / nn.BN | "
          "RangeBatchNorm2d / nn.BN | range eager / nn.BN |")
    print("| --- " * 16 + "|")
    for shape in SHAPES:
        if dev.type == "cpu":
            shape = (max(2, shape[0] // a.cpu_div), *shape[1:])
        for name in a.dtypes:
            dt = getattr(torch, name)
            torch.manual_seed(0)
            x = torch.randn(shape, device=dev, dtype=dt).to(memory_format=fmt).requires_grad_()
            dy = torch.randn(shape, device=dev, dtype=dt).to(memory_format=fmt)
            c = shape[1]
            bn = nn.BatchNorm2d(c, device=dev, dtype=dt)
            l1 = L1BatchNorm2d(c, device=dev, dtype=dt, impl=l1impl)
            l1e = L1BatchNorm2d(c, device=dev, dtype=dt, impl="eager")
            rg = RangeBatchNorm2d(c, device=dev, dtype=dt, impl=l1impl)
            rge = RangeBatchNorm2d(c, device=dev, dtype=dt, impl="eager")
            w = torch.ones(c, device=dev, dtype=dt, requires_grad=True)
            b = torch.zeros(c, device=dev, dtype=dt, requires_grad=True)
            def step(f, x=x, dy=dy):
                x.grad = None
                f(x).backward(dy)

            fns = {"bn": lambda: step(bn), "l1bn": lambda: step(l1),  # noqa: B023 (used in this iteration only)
                   "l1e": lambda: step(l1e),  # noqa: B023
                   "p1": lambda: step(lambda t: l1bn_forward_plain(t, w, b)),  # noqa: B023
                   "p2": lambda: step(lambda t: l2bn_forward_plain(t, w, b)),  # noqa: B023
                   "rg": lambda: step(rg), "rge": lambda: step(rge)}  # noqa: B023
            ms, r, best = side_by_side(fns, a.reps, timeit)
            print(f"| {','.join(map(str, shape))} | {name} | {ms['bn']:.2f} | {ms['l1bn']:.2f} | {ms['l1e']:.2f} | "
                  f"{ms['p1']:.2f} | {ms['p2']:.2f} | {ms['rg']:.2f} | {ms['rge']:.2f} | **{r['l1bn']:.2f}** | "
                  f"{best['l1bn']:.2f} | {r['l1e']:.2f} | {r['p1']:.2f} | {r['p2']:.2f} | **{r['rg']:.2f}** | "
                  f"{r['rge']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
