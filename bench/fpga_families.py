"""Issue 30's tables: L1 against L2 (and range) BN units on every FPGA family, the MAC array and
the digits accelerator, as quoted in docs/results.md and docs/fpga_families.md.

Run:  .venv/bin/python bench/fpga_families.py build/families

Reads what the measurement runs left in the folder (nothing is synthesized or placed again):
``*/report.json`` of ``l1bn report --family F [--device D] [--no-dsp] --out DIR``, ``mac-*.json`` of
``bench/mac_array.py --family F --json FILE`` and ``acc-*.json`` of
``bench/accelerator.py --family F --json FILE``. Area is in LUT4-equivalents (LE: the logic sites
nextpnr placed, :mod:`l1bn.sim.fpga.families`); the DSP column is in the family's own unit. The
gate-level toggle energy comes from the same generic-gate netlist for every family, so its L1/L2
ratio is printed once.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from l1bn.sim.report.units import compared, norms_for, ratio_key
from l1bn.spec.norms import BASELINE, FEATURED, NORMS, norm_spec

ORDER = ("ecp5", "ice40", "nexus", "gowin", "gatemate")


def _f(v, nd=2):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


# where the packers' names of a cell begin: ECP5 _TRELLIS_FF_Q, iCE40 _SB_DFFESR_Q_D_SB_LUT4_O_LC,
# Nexus _FD1P3IX_Q, Gowin _DFFRE_Q / _ALU_SUM, GateMate _CC_...
_SUFFIX = re.compile(r"_(?:TRELLIS|SB_|DFFLC|FD1P3|DFF|LUT[1-4]|CCU2|ALU|CC_|MULT|WIDEFN|DPR16X4|OXIDE|CPE)")


def _cell(name: str | None) -> str:
    """A cell name without the tool's suffixes (``$...``, the packers' ``_TRELLIS...``, ``_SB_...``)."""
    if not name:
        return "?"
    return _SUFFIX.split(name.split("$")[0] or name)[0].rstrip(".")


def _renamed_paths(rep: dict, folder: Path) -> None:
    """Critical paths whose end cells have no design name (GateMate's ``$auto$ff.cc...`` flip-flops,
    recorded before :func:`l1bn.sim.fpga.pnr.critical_path` fell back to net names): parsed again
    from the median seed's nextpnr report in ``folder/flow`` where the run left it."""
    from l1bn.sim.fpga.pnr import critical_path

    fam = rep["fpga"]["family"]
    for w, wr in rep["widths"].items():
        for kind, pre in (("forward", "fwd"), ("backward", "bwd")):
            for n, u in (wr.get(kind) or {}).items():
                cp = u.get("critical_path") if isinstance(u, dict) else None
                if not cp or not str(cp.get("from", "")).startswith("$") or not u.get("fmax_seeds"):
                    continue
                seed = next(s for s, f in u["fmax_seeds"].items() if f == u["fmax_mhz"])
                found = sorted(folder.glob(f"flow/{pre}-{n}-w{w}-{fam}-s{seed}-fpga-*/pnr.json"))
                if found:
                    u["critical_path"] = critical_path(json.loads(found[-1].read_text()))


def load(folder: Path) -> dict:
    """``{"reports": [(name, report)], "mac": [(name, rows)], "acc": [(name, rows)]}``."""
    reports = []
    for p in sorted(folder.glob("*/report.json")):
        rep = json.loads(p.read_text())
        if "fpga" in rep:
            _renamed_paths(rep, p.parent)
            reports.append((p.parent.name, rep))
    reports.sort(key=lambda t: (ORDER.index(t[1]["fpga"]["family"]), t[0]))
    mac = [(p.stem.removeprefix("mac-"), json.loads(p.read_text())) for p in sorted(folder.glob("mac-*.json"))]
    acc = [(p.stem.removeprefix("acc-"), json.loads(p.read_text())) for p in sorted(folder.glob("acc-*.json"))]
    return {"reports": reports, "mac": mac, "acc": acc}


def _target(rep: dict) -> tuple[str, str]:
    fp = rep["fpga"]
    dev = fp["device"] or next(iter(rep["widths"].values()))["forward"][BASELINE]["device"]
    return f"{fp['family']} {dev}", (fp["dsp_cell"].split(" ")[0] if fp["dsp"] else "fabric")


def _label(norm: str) -> str:
    return norm_spec(norm).label


def _mult_key(rep: dict) -> str:
    """The result key of the family's multipliers: GateMate's CC_MULT are CPEs, not a DSP block."""
    return "mult" if rep["fpga"]["family"] == "gatemate" else "dsp"


def _own(unit: dict, rep: dict) -> str:
    """A unit's non-zero synthesis counts in the family's own units, multipliers left to the DSP
    column (``743 LUT4, 156 CCU2C, 1214 FF``)."""
    mk = _mult_key(rep)
    return ", ".join(f"{unit[k]} {label}" for k, label in rep["fpga"]["units"]
                     if k not in ("dsp", mk) and unit.get(k))


def _ratio(a: dict | None, b: dict, key: str) -> str | None:
    return _f(a[key] / b[key]) if a and a.get(key) and b.get(key) else None


def unit_header(kind: str) -> list[str]:
    """The Markdown header of :func:`unit_rows`: the baseline's LE and Fmax, every other norm's
    ratios to it (the registry's norms with a unit of ``kind``), the featured norm's latency."""
    base, others = _label(BASELINE), [_label(n) for n in compared(norms_for(kind))]
    cols = (["family, device", "multiplies", "width", f"{base} own units", f"{base} LE"]
            + [c for o in others for c in (f"{o}/{base} LUT", f"{o}/{base} LE")]
            + [f"{base} Fmax MHz"] + [f"{o}/{base} Fmax" for o in others]
            + [f"{_label(FEATURED)}/{base} latency ns", "DSP", "critical path"])
    align = ["---", "---", "---:", "---"] + ["---:"] * (len(cols) - 6) + ["---", "---"]
    return ["| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]


def unit_rows(reports, kind: str) -> list[str]:
    """One Markdown row per (report, width) of the ``kind`` units (columns of :func:`unit_header`;
    ``-`` where a report has no unit of that norm). A target and width that two reports share (a
    forward-only report and a narrower one with backward units, from the same cache entries) is
    printed once; a report run with one seed says so beside its Fmax."""
    out, seen = [], set()
    names, others = norms_for(kind), compared(norms_for(kind))
    for _, rep in reports:
        tgt, mult = _target(rep)
        for w, wr in rep["widths"].items():
            units = wr.get(kind)
            if not units or (tgt, mult, w) in seen:
                continue
            seen.add((tgt, mult, w))
            base = units[BASELINE]
            ratios = [units.get(ratio_key(n)) or {} for n in others]
            mk = _mult_key(rep)
            dsp = "/".join(_f(units[n].get(mk)) for n in names if n in units)
            one = " (1 seed)" if len(base.get("fmax_seeds") or {}) == 1 else ""
            cp = "; ".join(f"{n.upper()} {(units[n].get('critical_path') or {}).get('stage', '?')}"
                           for n in names if n in units)
            row = ([tgt, mult, w, _own(base, rep), _f(base["le"])]
                   + [c for n, r in zip(others, ratios, strict=True) for c in (_ratio(units.get(n), base, "lut"), _f(r.get("le")))]
                   + [_f(base["fmax_mhz"], 1) + one]
                   + [_f(r.get("fmax_mhz")) for r in ratios]
                   + [_f((units.get(ratio_key(FEATURED)) or {}).get("latency_ns")), dsp, cp])
            out.append("| " + " | ".join("-" if c is None else str(c) for c in row) + " |")
    return out


def path_lines(reports) -> list[str]:
    """Per report, width and unit: the median run's worst path (start -> end cell, its stage,
    logic levels, logic and routing delay)."""
    out, seen = [], set()
    for _, rep in reports:
        tgt, mult = _target(rep)
        for w, wr in rep["widths"].items():
            for kind in ("forward", "backward"):
                for n in norms_for(kind):
                    u = (wr.get(kind) or {}).get(n)
                    if not u or not u.get("critical_path") or (tgt, mult, w, kind, n) in seen:
                        continue
                    seen.add((tgt, mult, w, kind, n))
                    cp = u["critical_path"]
                    out.append(f"| {tgt} | {mult} | {w} | {kind} {n.upper()} | {cp['stage']} | `{_cell(cp['from'])}` -> "
                               f"`{_cell(cp['to'])}` | {cp['levels']} | {cp['logic_ns']:.2f} + {cp['routing_ns']:.2f} |")
    return out


def energy_header() -> list[str]:
    base, others = _label(BASELINE), [_label(n) for n in compared(NORMS)]
    cols = ["unit", "width", f"{base} energy/elem"] + [f"{o}/{base}" for o in others]
    return ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]


def energy_lines(reports) -> list[str]:
    """The family-independent energy ratios (from the first report that has each width), every
    compared norm of the registry (``-`` where the report has no unit of that norm)."""
    seen = {}
    for _, rep in reports:
        for w, wr in rep["widths"].items():
            for kind in ("forward", "backward"):
                if kind in wr and (w, kind) not in seen:
                    u = wr[kind]
                    seen[(w, kind)] = [u[BASELINE]["energy_per_element"]] + [
                        (u.get(ratio_key(n)) or {}).get("energy_per_element") for n in compared(NORMS)]
    return [f"| {kind} | {w} | {_f(e[0], 0)} | " + " | ".join(_f(v) for v in e[1:]) + " |"
            for (w, kind), e in sorted(seen.items())]


def _mac_entries(macs) -> list[tuple[dict, dict]]:
    """``(bench JSON, row)`` of every MAC-array file, measured rows and ``unfit`` ones alike, one
    target's rows together and the smaller array first (a target's arrays may come from several
    files, e.g. the 4x4 and the 8x8 measured apart)."""
    def size(cfg: str) -> int:
        r, c = cfg.split()[0].split("x")
        return int(r) * int(c)

    entries = [(m, r) for _, m in macs for r in [*m["rows"], *m.get("unfit", [])]]
    return sorted(entries, key=lambda e: (e[0]["target"], size(e[1]["config"])))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    d = load(Path(argv[0]))
    reps = d["reports"]
    if reps:
        seeds = sorted({tuple(r["params"]["seeds"]) for _, r in reps})
        print(f"{len(reps)} reports; nextpnr seeds {', '.join(map(str, seeds))} (Fmax = median)\n")
        print("Forward units: L2 in the family's own units (synthesis counts, multipliers in the DSP column); "
              "LE = LUT4-equivalents placed; LUT = the family's LUT cells (LUT4; LUT trees on GateMate); "
              "ratios to L2; DSP = one per norm in the family's multiplier unit (CC_MULT on GateMate); "
              "critical path = the stage holding the median run's worst path.\n")
        print("\n".join(unit_header("forward") + unit_rows(reps, "forward")))
        print(f"\nBackward units (the registry's norms with one: {', '.join(map(_label, norms_for('backward')))}; "
              "- where a report predates a unit):\n")
        print("\n".join(unit_header("backward") + unit_rows(reps, "backward")))
        print("\nCritical paths (the median seed's run): stage, start -> end cell, logic levels, "
              "logic + routing ns:\n")
        print("| family, device | multiplies | width | unit | stage | path | levels | ns |")
        print("|---|---|---:|---|---|---|---:|---|")
        print("\n".join(path_lines(reps)))
        print("\nGate-level toggle energy per element (generic-gate netlist of the same Verilog: the same for every "
              "family):\n")
        print("\n".join(energy_header() + energy_lines(reps)))
    if d["mac"]:
        print("\nMAC arrays (K = 64 per tile), Fmax = median of the seeds:\n")
        print("| family target | array | LE | DSP | Fmax MHz | per seed | GOPS | GOPS per kLE | critical path |")
        print("|---|---|---:|---:|---:|---|---:|---:|---|")
        for m, r in _mac_entries(d["mac"]):
            if "error" in r:   # too large for the device: the fit check's line
                print(f"| {m['target']} | {r['config']} | {r['error'].split(': ', 1)[-1].replace('|', '/')} "
                      f"| - | - | - | - | - | - |")
                continue
            per = "/".join(f"{v:.1f}" for v in r["fmax_seeds"].values())
            where = m["target"].replace("smallest fitting device", r.get("device") or "smallest fitting device")
            cp = r.get("critical_path") or {}
            mult = r.get("dsp", r.get("mult"))     # the family's multiplier column (CC_MULT on GateMate)
            print(f"| {where} | {r['config']} | {r.get('le') or r.get('lut4')} | {mult} | "
                  f"{r['fmax_mhz']:.1f} | {per} | {r['gops']:.2f} | {r['gops_per_klut']:.2f} | "
                  f"`{_cell(cp.get('from'))}` -> `{_cell(cp.get('to'))}` |")
    if d["acc"]:
        print("\nDigits accelerator (the same Verilog on every family; bit-exactness is the simulation's, "
              "not the family's):\n")
        print("| family target | array | LE | DSP | BRAM | Fmax MHz | per seed | cycles/image | images/s | "
              "critical path |")
        print("|---|---|---:|---:|---:|---:|---|---:|---:|---|")
        for _, a in d["acc"]:
            for r in a["rows"]:
                per = "/".join(f"{v:.1f}" for v in r["fmax_seeds"].values())
                cp = r.get("critical_path") or {}
                where = a["target"].replace("smallest fitting device", r.get("device") or "smallest fitting device")
                mult = r.get("area", {}).get("mult", r["mult18"])   # CC_MULT on GateMate (no DSP blocks)
                print(f"| {where} | {r['array']} | {r['le']} | {mult} | {r['dp16kd']} | "
                      f"{r['fmax_mhz']:.1f} | {per} | {r['cycles_per_image']} | {r['images_per_s']:.0f} | "
                      f"`{_cell(cp.get('from'))}` -> `{_cell(cp.get('to'))}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
