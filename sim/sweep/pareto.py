"""The figure columns of a sweep's results, its Pareto fronts and their plots."""

from __future__ import annotations

import itertools
from pathlib import Path

from l1bn.spec.norms import norm_names, norm_spec

from .grid import Sweep

__all__ = ["figure_columns", "metrics", "pareto_front", "mark_pareto", "plot_pareto"]


def figure_columns(design: str, tgts, family: bool = False) -> list[str]:
    """The figure columns of ``results.csv`` for ``design`` and the targets present; ``family``:
    the sweep names an FPGA family (``--family``): the family's LUT cells, carries and the
    LUT4-equivalents ``le`` instead of ECP5's CCU2C."""
    per = "element" if design == "bn" else "mac"
    cols = []
    if "fpga" in tgts and family:
        cols += ["lut", "carry", "ff", "dsp", "bram", "le", "fmax_mhz", "fmax_seeds", "device", "transistors"]
    elif "fpga" in tgts:
        cols += ["lut", "ff", "ccu2", "dsp", "bram", "fmax_mhz", "fmax_seeds", "device", "transistors"]
    if "asic" in tgts:
        cols += ["area_um2", "delay_ns"] + (["fmax_mhz"] if "fpga" not in tgts else [])
    cols += ["cycles", "latency_ns"]
    if "fpga" in tgts:
        cols.append(f"energy_per_{per}")
    if "asic" in tgts:
        cols.append(f"energy_pj_per_{per}")
    return cols


def metrics(row: dict, design: str) -> dict:
    """(area, latency, energy) of a result row for the Pareto fronts, with their axis labels;
    a value is None when the sweep did not measure it."""
    per = "element" if design == "bn" else "mac"
    if row["target"] == "asic":
        return {"area": row.get("area_um2"), "area_label": "area (um^2, NanGate45)",
                "latency": row.get("latency_ns"), "latency_label": "latency (ns, one batch)"
                if design == "bn" else "latency (ns, two tiles)",
                "energy": row.get(f"energy_pj_per_{per}"), "energy_label": f"energy per {per} (pJ)"}
    lat, lab = row.get("latency_ns"), "latency (ns"
    if lat is None:
        lat, lab = row.get("cycles"), "latency (cycles"
    area, area_label = row.get("lut"), "area (ECP5 LUT4)"
    if "le" in row:   # a --family sweep: LUT4-equivalents (synthesis LUT cells without place and route)
        area, area_label = (row["le"], "area (LUT4-eq.)") if row["le"] is not None else (area, "area (LUT cells)")
    return {"area": area, "area_label": area_label, "latency": lat,
            "latency_label": lab + (", one batch)" if design == "bn" else ", two tiles)"),
            "energy": row.get(f"energy_per_{per}"),
            "energy_label": f"energy per {per} (fan-out-weighted toggles)"}


def pareto_front(xy: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats in both coordinates (both minimized; a
    point equal to a front point is on the front too), in increasing x."""
    order = sorted(range(len(xy)), key=lambda i: (xy[i][0], xy[i][1]))
    front, best = [], None
    for i in order:
        y = xy[i][1]
        if best is None or y < best or (front and xy[front[-1]] == xy[i]):
            front.append(i)
            best = y if best is None else min(best, y)
    return front


def mark_pareto(rows: list[dict], design: str) -> None:
    """Set each row's ``pareto_area`` and ``pareto_energy`` (1 on the front of its target, 0 off it,
    None when not measured)."""
    for kind in ("area", "energy"):
        col = f"pareto_{kind}"
        for r in rows:
            r[col] = None
        for t in sorted({r["target"] for r in rows}):
            pts = [(r, metrics(r, design)) for r in rows if r["target"] == t and r["status"] == "ok"]
            pts = [(r, m) for r, m in pts if m["latency"] is not None and m[kind] is not None]
            front = set(pareto_front([(m["latency"], m[kind]) for _, m in pts]))
            for i, (r, _) in enumerate(pts):
                r[col] = 1 if i in front else 0


def _label(r: dict) -> str:
    if "norm" in r:
        return f"w{r['width']} n{r['n']} x{r['lanes']} c{r['channels']}"
    return f"{r['rows']}x{r['cols']} w{r['wbits']}a{r['abits']}"


def plot_pareto(sweep: Sweep, rows: list[dict], out: Path) -> list[Path]:
    """``pareto_area_latency.png`` and ``pareto_energy_latency.png`` (one panel per target):
    every measured point, the front joined by a line, L1 and L2 (and any other norm) marked
    apart; a plot whose figures the sweep did not measure is not written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tgts = [t for t in sweep.grid["target"]]
    # one marker and colour per registered norm, in registry order (L1 o blue, L2 s orange, ...)
    marks = itertools.cycle([("o", "tab:blue"), ("s", "tab:orange"), ("^", "tab:green"), ("D", "tab:purple"),
                             ("v", "tab:brown")])
    styles = {nm: (*next(marks), norm_spec(nm).title) for nm in norm_names()}
    others = marks
    for kind, fname in (("area", "pareto_area_latency.png"), ("energy", "pareto_energy_latency.png")):
        panels = []
        for t in tgts:
            pts = [(r, metrics(r, sweep.design)) for r in rows if r["target"] == t and r["status"] == "ok"]
            pts = [(r, m) for r, m in pts if m["latency"] is not None and m[kind] is not None]
            if pts:
                panels.append((t, pts))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
        for ax, (t, pts) in zip(axes[0], panels, strict=True):
            if sweep.design == "bn":
                groups = {}
                for r, m in pts:
                    groups.setdefault(r["norm"], []).append((r, m))
                for norm, g in sorted(groups.items()):
                    if norm not in styles:
                        mk, col = next(others)
                        styles[norm] = (mk, col, norm.upper())
                    mk, col, lab = styles[norm]
                    ax.scatter([m["latency"] for _, m in g], [m[kind] for _, m in g], marker=mk, color=col,
                               label=lab, s=36, alpha=0.85, zorder=3)
            else:
                for wb in sorted({r["wbits"] for r, _ in pts}):
                    g = [(r, m) for r, m in pts if r["wbits"] == wb]
                    ax.scatter([m["latency"] for _, m in g], [m[kind] for _, m in g], s=36, alpha=0.85,
                               label=f"{wb}-bit weights", zorder=3)
            front = [pts[i] for i in pareto_front([(m["latency"], m[kind]) for _, m in pts])]
            ax.step([m["latency"] for _, m in front], [m[kind] for _, m in front], where="post",
                    color="black", lw=1, zorder=2, label="Pareto front")
            ax.scatter([m["latency"] for _, m in front], [m[kind] for _, m in front], s=90,
                       facecolors="none", edgecolors="black", zorder=4)
            for r, m in front:
                tag = (r["norm"].upper() + " " if sweep.design == "bn" else "") + _label(r)
                ax.annotate(tag, (m["latency"], m[kind]), textcoords="offset points", xytext=(5, 4), fontsize=7)
            m0 = pts[0][1]
            ax.set_xlabel(m0["latency_label"])
            ax.set_ylabel(m0[f"{kind}_label"])
            for axis, vals in (("x", [m["latency"] for _, m in pts]), ("y", [m[kind] for _, m in pts])):
                if min(vals) > 0 and max(vals) / min(vals) > 20:   # log only where it spreads
                    getattr(ax, f"set_{axis}scale")("log")
            ax.set_title(f"{sweep.design.upper()} sweep, {t}: {kind} against latency")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
