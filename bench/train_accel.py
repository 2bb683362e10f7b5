"""The whole training step on the generated hardware, L1 against L2 (every norm with a backward
unit): the digits CNN's training accelerator (batch 8, an 8 x 1 MAC array), cycles per step and the
array's busy fraction from the schedule's formula (asserted by the cocotb benches), the block
breakdown, and the ECP5 measurements: synthesis (LUT4, FF, MULT18X18D, DP16KD) and nextpnr Fmax
(median of the seeds) on the smallest ECP5 that holds it, training images/s = Fmax / cycles * batch.
With ``--target asic`` (or ``both``) the NanGate45 figures of the whole accelerator: area, critical
path and gate-level energy per training step on a batch of real digits, by block
(:mod:`l1bn.sim.report.train_asic`: clock gating, SRAM macros, windows per program entry scaled by
the schedule's cycles).

    .venv/bin/python bench/train_accel.py [--target fpga|asic|both] [--no-pnr] [--no-breakdown]
        [--seeds 1,2,3] [--router router2] [--window 128] [--no-energy] [--norms l1,l2]
        [--out build/train-report]

``--no-pnr`` runs no place and route but still reports the Fmax of the seeds already kept in OUT
for the same design.

Results are kept in OUT/<norm>/result.json and OUT/<norm>/asic.json (reused while the design is
unchanged) and OUT/train_report.json; ``l1bn demo`` prints the table from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from l1bn.sim.report.train import (
    BLOCK_MODULES,
    BLOCK_ORDER,
    fpga_breakdown,
    fpga_figures,
    step_figures,
    train_norms,
    whole_step_table,
)
from l1bn.sim.report.train_asic import WINDOW, asic_figures, asic_tables


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-pnr", action="store_true", help="synthesis only (no Fmax)")
    ap.add_argument("--no-fpga", action="store_true", help="the formula figures only")
    ap.add_argument("--no-breakdown", action="store_true", help="no per-block synthesis (synth_ecp5 -noflatten)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--router", default="router2", choices=("router1", "router2"),
                    help="nextpnr's router (router1 did not finish on this design in 48 minutes)")
    ap.add_argument("--norms", default=None, help="comma-separated norms (default: every norm with a backward unit)")
    ap.add_argument("--out", default="build/train-report")
    ap.add_argument("--target", default="fpga", choices=("fpga", "asic", "both"),
                    help="ECP5 (synthesis, nextpnr), NanGate45 (area, timing, gate-level energy) or both")
    ap.add_argument("--window", type=int, default=WINDOW,
                    help="cycles per gate-level window (two per long program entry)")
    ap.add_argument("--no-energy", action="store_true",
                    help="NanGate45 synthesis and timing only (no gate-level simulation of a step)")
    a = ap.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    old = out / "train_report.json"
    prev = json.loads(old.read_text()) if old.exists() else {}
    rows = {}
    norms = a.norms.split(",") if a.norms else train_norms()
    unknown = sorted(set(norms) - set(train_norms()))
    if unknown:
        ap.error(f"--norms {','.join(unknown)}: not a norm with a backward unit ({', '.join(train_norms())})")
    for norm in norms:
        r = step_figures(norm)
        if a.target in ("fpga", "both") and not a.no_fpga:
            r.update(fpga_figures(norm, out, seeds=seeds, pnr=not a.no_pnr, router=a.router))
            if not a.no_breakdown:
                r["fpga_blocks"] = fpga_breakdown(norm, out)
        elif prev.get(norm, {}).get("cycles_per_step") == r["cycles_per_step"]:
            r.update({k: v for k, v in prev[norm].items() if k not in r and k != "asic"})
        if a.target in ("asic", "both"):
            r["asic"] = asic_figures(norm, out, window=a.window, energy=not a.no_energy)
            was = prev.get(norm, {}).get("asic", {})
            if a.no_energy and "energy" in was and was.get("synth") == r["asic"]["synth"]:
                r["asic"]["energy"] = was["energy"]   # measured before on this netlist: kept
        elif "asic" in prev.get(norm, {}):
            r["asic"] = prev[norm]["asic"]
        rows[norm] = r
    # the norms not run this time keep their rows (in registry order)
    rows = {n: rows.get(n, prev.get(n)) for n in train_norms() if n in rows or n in prev}
    old.write_text(json.dumps(rows, indent=1) + "\n")
    if a.target == "asic":
        for line in asic_tables(rows):
            print(line)
        return
    print("training accelerator, digits CNN, batch 8, MAC array 8x1 (formula cycles; ECP5 measured)")
    for line in whole_step_table(rows):
        print(line)
    print()
    print(f"{'block (cycles)':14} " + " ".join(f"{n:>9}" for n in rows))
    for b in BLOCK_ORDER:
        print(f"{b:14} " + " ".join(f"{rows[n]['blocks'][b]:9d}" for n in rows))
    blocks = [b for b, _ in BLOCK_MODULES]
    for n, r in rows.items():
        if "fpga_blocks" not in r:
            continue
        print()
        print(f"ECP5 cells by block, {n} (synth_ecp5 -noflatten: the sum is a little above the flat total)")
        print(f"{'block':42} {'LUT4':>7} {'FF':>7} {'CCU2C':>6} {'MULT18':>6} {'DP16KD':>6}")
        for b in blocks:
            c = r["fpga_blocks"].get(b)
            if c:
                print(f"{b:42} {c['lut']:7d} {c['ff']:7d} {c['ccu2']:6d} {c['mult18']:6d} {c['bram']:6d}")
    for n, r in rows.items():
        if "pnr" in r:
            for s, p in sorted(r["pnr"].items()):
                cp = p.get("critical_path") or {}
                print(f"{n} seed {s}: {p['fmax_mhz']} MHz on {p['device']} ({p.get('router', '-')}), critical path "
                      f"{cp.get('stage', '-')}: {cp.get('from', '-')} -> {cp.get('to', '-')}, "
                      f"{cp.get('delay_ns', '-')} ns, {cp.get('levels', '-')} levels")
    if a.target == "both":
        print()
        for line in asic_tables(rows):
            print(line)


if __name__ == "__main__":
    main()
