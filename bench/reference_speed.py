"""Time the whole digits test split through the integer reference (numpy) on one BLAS thread.

    .venv/bin/python bench/reference_speed.py [EXPORT_DIR] [--repeats N]

With EXPORT_DIR (made by ``l1bn export``) it runs the export's stored test split. Without it, it
exports ``runs/cnn-l1-w4a4`` to a temporary folder when that run exists, and otherwise falls back to
a random network of the same shape on the digits images (the timing depends on shapes, not
weights). Prints the per-layer times and the total against the 1 s target.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from l1bn.spec.reference.network import quantize_input, random_int_net, run_layer, run_net
from threadpoolctl import threadpool_limits

TARGET_S = 1.0


def _digits_test_images(n_bits: int, exp: int) -> np.ndarray:
    try:
        from l1bn.sw.data import test_split  # the project's fixed split, when available

        x = test_split()[0].numpy()
    except Exception:
        from sklearn.datasets import load_digits

        x = load_digits().images.astype(np.float32)[-360:, None] / 16.0
    return quantize_input(x, bits=n_bits, exp=exp)


def _load(args):
    from l1bn.spec.export import load_export
    from l1bn.sw.export import export_run

    if args.export:
        e = load_export(args.export)
        return e.net, e.test_inputs, f"export {args.export}"
    run = Path("runs/cnn-l1-w4a4")
    if (run / "model.pt").exists():
        out = Path(tempfile.mkdtemp()) / "export"
        export_run(run, out)
        e = load_export(out)
        return e.net, e.test_inputs, f"{run} (exported to a temp folder)"
    net = random_int_net(0)
    return net, _digits_test_images(net.in_bits, net.in_exp), "random weights, digits CNN shape"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", nargs="?", help="export folder (default: see module docstring)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    with threadpool_limits(limits=1, user_api="blas"):
        return _timed(args)


def _timed(args):
    net, x, what = _load(args)
    run_net(net, x)  # warm-up

    totals, unchecked = [], []
    per_layer = {layer.name: [] for layer in net.layers}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run_net(net, x)
        totals.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_net(net, x, check=False)
        unchecked.append(time.perf_counter() - t0)
        h = x
        for layer in net.layers:
            t0 = time.perf_counter()
            h = run_layer(layer, h)
            per_layer[layer.name].append(time.perf_counter() - t0)

    print(f"integer reference speed: {what}")
    print(f"{x.shape[0]} test images, numpy {np.__version__}, 1 BLAS thread, {platform.processor() or platform.machine()}, "
          f"median of {args.repeats} runs")
    print()
    print(f"| {'layer':8} | {'type':7} | {'MACs/image':>10} | {'median ms':>9} |")
    print(f"| {'-' * 8} | {'-' * 7} | {'-' * 10}:| {'-' * 9}:|")
    for layer in net.layers:
        macs = layer.k * (layer.out_shape[0] * (layer.out_shape[1] * layer.out_shape[2] if len(layer.out_shape) == 3 else 1))
        print(f"| {layer.name:8} | {layer.type:7} | {macs:>10} | {1e3 * statistics.median(per_layer[layer.name]):>9.2f} |")
    med = statistics.median(totals)
    print()
    print(f"| {'measure':34} | {'value':>12} |")
    print(f"| {'-' * 34} | {'-' * 12}:|")
    print(f"| {'whole test split, median':34} | {1e3 * med:>9.1f} ms |")
    print(f"| {'whole test split, best':34} | {1e3 * min(totals):>9.1f} ms |")
    print(f"| {'without operand range checks':34} | {1e3 * statistics.median(unchecked):>9.1f} ms |")
    print(f"| {'images per second':34} | {x.shape[0] / med:>12.0f} |")
    print(f"| {'target':34} | {'< 1000 ms':>12} |")
    print(f"| {'result':34} | {'PASS' if med < TARGET_S else 'FAIL':>12} |")
    return 0 if med < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
