"""Accelerator simulation speed: the whole digits test split on Verilator, a few images on Icarus.

Run:  .venv/bin/python bench/net_sim.py [EXPORT_DIR] [--icarus-images 3] [--cols 8 ...]

EXPORT_DIR defaults to ``runs/cnn-l1-w4a4/export`` (``l1bn train ... && l1bn export ...``, see
docs/export.md). Every image's 10 logits are compared with the integer reference (``run_net``);
the bench fails (exit 1) on any mismatch or when the measured cycles differ from the formula.
Columns: wall seconds to build the simulator, seconds simulating (the cocotb test), images per
second and simulated clock cycles per second; the target is the whole split in < 10 minutes.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from l1bn.sim.simulate.net import simulate_net

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", nargs="?", default="runs/cnn-l1-w4a4/export")
    ap.add_argument("--icarus-images", type=int, default=3)
    ap.add_argument("--cols", type=int, nargs="+", default=[None],
                    help="array widths to measure (default: the 32-MAC shape with the fewest cycles)")
    a = ap.parse_args(argv)

    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="net-sim-") as tmp:
        for cols in a.cols:
            for sim, images in (("verilator", None), ("icarus", a.icarus_images)):
                t0 = time.perf_counter()
                r = simulate_net(a.export, simulator=sim, images=images, cols=cols,
                                 build_dir=Path(tmp) / f"{sim}-{cols}")
                r["total_s"] = time.perf_counter() - t0
                ok &= r["mismatches"] == 0 and r["passed"] and r["cycles_per_image"] == r["formula_cycles"]
                rows.append(r)
    print(f"accelerator simulation speed: export {a.export}")
    print(f"{platform.machine()}, Python {platform.python_version()}, cocotb through l1bn.sim.simulate.runner; "
          f"'total s' includes the build and start-up, 'images/s' only the simulating\n")
    print("| simulator | array | images | mismatches | hw accuracy | cycles/image | build s | simulate s "
          "| total s | images/s | cycles/s |")
    print("| --------- | ----- | ------:| ----------:| -----------:| ------------:| -------:| ----------:"
          "| -------:| --------:| --------:|")
    for r in rows:
        acc = "-" if r["hw_accuracy"] is None else f"{100 * r['hw_accuracy']:.2f} %"
        print(f"| {r['simulator']:9} | {r['rows']}x{r['cols']:<3} | {r['images']:6d} | {r['mismatches']:10d} "
              f"| {acc:>11} | {r['cycles_per_image']:12d} | {r['build_s']:7.1f} | {r['sim_s']:10.1f} "
              f"| {r['total_s']:7.1f} | {r['images_per_s']:8.2f} | {r['images_per_s'] * r['cycles_per_image']:8.0f} |")
    whole = [r for r in rows if r["simulator"] == "verilator"]
    for r in whole:
        verdict = "PASS" if r["total_s"] < 600 and r["mismatches"] == 0 else "FAIL"
        print(f"\nwhole test split on Verilator ({r['rows']}x{r['cols']}): {r['images']} images in "
              f"{r['total_s']:.1f} s including the build (target < 600 s): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
