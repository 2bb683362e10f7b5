"""Issue 14's timing-closure table from an ``l1bn report`` run: Fmax per seed and median, target,
critical path, area and latency of every BN unit, as quoted in docs/results.md.

Run:  .venv/bin/python bench/timing_closure.py build/report-final/report.json

Reads only the ``report.json`` that ``l1bn report --out DIR`` writes (nothing is placed and routed
again). Targets: forward L1/L2 >= 150 MHz at widths 4 and 8 and >= 125 at 16; backward L1/L2
>= 125 at widths 8 and 16; range BN has none. Exit status 1 when a median misses its target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from l1bn.spec.norms import BASELINE, FEATURED

TARGETS = {("forward", 4): 150, ("forward", 8): 150, ("forward", 16): 125,
           ("backward", 8): 125, ("backward", 16): 125}

#: the norms issue 14 set these targets for: the toolkit's norm and the baseline (L1, L2)
TARGETED = (FEATURED, BASELINE)


def _cell(name: str) -> str:
    return name.split("_TRELLIS")[0]


def rows(report: dict) -> list[dict]:
    """One row per (direction, width, norm) that has a place-and-route result."""
    out = []
    for kind in ("forward", "backward"):
        for w in sorted(report["widths"], key=int):
            units = report["widths"][w].get(kind) or {}
            for norm, u in units.items():
                if "_over_" in norm or "fmax_seeds" not in u:
                    continue
                target = TARGETS.get((kind, int(w))) if norm in TARGETED else None
                out.append({"unit": f"{kind} {norm}", "width": int(w), "seeds": u["fmax_seeds"],
                            "median": u["fmax_mhz"], "target": target,
                            "met": None if target is None else u["fmax_mhz"] >= target,
                            "critical_path": u.get("critical_path") or {}, "lut": u["lut"], "ff": u["ff"],
                            "dsp": u["dsp"], "latency_cycles": u.get("latency_cycles")})
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    report = json.loads(Path(argv[0]).read_text())
    p = report["params"]
    print(f"{argv[0]}: n = {p['n']}, lanes = {p['lanes']}, channels = {p['channels']}, seeds {p['seeds']}")
    print("| design | width | seeds | median | target | critical path (stage) | LUT4 / FF / MULT18 | latency cycles |")
    print("| --- | ---: | --- | ---: | ---: | --- | --- | ---: |")
    ok = True
    for r in rows(report):
        seeds = " / ".join(f"{r['seeds'][k]:.1f}" for k in sorted(r["seeds"], key=int))
        cp = r["critical_path"]
        path = f"`{_cell(cp.get('from', ''))}` -> `{_cell(cp.get('to', ''))}` ({cp.get('stage')})"
        tgt = "-" if r["target"] is None else f"{r['target']}{'' if r['met'] else ' (missed)'}"
        ok &= r["met"] is not False
        print(f"| {r['unit']} | {r['width']} | {seeds} | **{r['median']:.1f}** | {tgt} | {path} | "
              f"{r['lut']} / {r['ff']} / {r['dsp']} | {r['latency_cycles']} |")
    print(f"every target met by the median: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
