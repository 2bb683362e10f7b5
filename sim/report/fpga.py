"""``l1bn report``: area, Fmax, latency and energy of every registered BN norm, forward and backward.

The norms come from the registry (:mod:`l1bn.spec.norms`: L1, L2 and range BN), each compared
with L2 (``<norm>_over_l2``). For each bit width every norm's forward unit (``hw_unit``, e.g.
:class:`~l1bn.hw.bn_unit.L1BNUnit`), its backward unit where it has one (``hw_backward``) and the four forward stages alone
(:func:`~l1bn.hw.bn_unit.bn_stages`) go through the FPGA flow (:mod:`l1bn.sim.fpga.steps`):

- ECP5 synthesis + place and route in the timing harness (LUT4, FF, CCU2C, DSP, Fmax), or those
  of another family (``target``, :mod:`l1bn.sim.fpga.families`: iCE40, Nexus, Gowin, GateMate),
  in its own units plus the LUT4-equivalents ``le`` (the logic sites nextpnr placed);
- generic gate synthesis (transistor estimate, per stage from the kept hierarchy);
- a gate-level Icarus simulation on real pre-BN activations (and, backward, real BN-output
  gradients) of the trained digits CNN (:mod:`l1bn.sw.capture`): cycles from the first accepted
  input to the last output beat, and fan-out-weighted toggle energy, per instance.

Latency in ns = measured cycles * 1000 / Fmax. Energy per element = energy / (channels * n).
An analytic cross-check counts the datapath's operations per element and prices them with
Horowitz's 45 nm energies (:mod:`l1bn.sim.report.analytic`). The ASIC side is
:mod:`l1bn.sim.report.asic`; :func:`l1bn.sim.report.write.write_report` writes either.
"""

from __future__ import annotations

import time
from pathlib import Path

from l1bn.sim.fpga.steps import ECP5Job, EnergyJob, fpga_job
from l1bn.sim.jobs import FLOW_VERSION, run_jobs, tool_versions
from l1bn.spec.norms import FEATURED, norm_spec, resolve

from .analytic import analytic_energy
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

__all__ = ["PNR_SEEDS", "REPORT_WIDTHS", "build_report", "report_markdown", "plot_report", "compare_forward"]

REPORT_WIDTHS = (4, 8, 16)

PNR_SEEDS = (1, 2, 3)


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _with_seeds(plan, seeds):
    """Each place-and-route job (``ecp5``, ``fpga``) once per seed (key + ``("seed", s)``); other
    jobs as they are."""
    out = []
    for key, job in plan:
        if job.kind not in ("ecp5", "fpga") or not job.params.get("pnr", True):
            out.append((key, job))
            continue
        for sd in seeds:
            out.append(((*key, "seed", sd), type(job)(name=f"{job.name}-s{sd}", verilog=job.verilog,
                                                      **{**job.params, "seed": sd})))
    return out


#: the area keys of the ECP5 report (before the family layer: the default report keeps them alone)
ECP5_AREA = ("lut", "ff", "ccu2", "dsp", "bram", "lutram")


def area_keys(target) -> tuple[str, ...]:
    """The area keys of a unit in the report of ``target`` (None: the default ECP5 report): the
    family's own units, then the common ``lut``, ``ff``, ``dsp``, ``bram``, and ``le``."""
    if target is None:
        return ECP5_AREA
    own = ECP5_AREA if target.family.name == "ecp5" else tuple(k for k, _ in target.family.units)
    return (*dict.fromkeys((*own, "lut", "ff", "dsp", "bram")), "le")


def _area(s: dict, target) -> dict:
    """The area of a synthesis (+ place and route) result in the keys of :func:`area_keys`; ``le``
    from the utilization of the run (None without place and route)."""
    out = {k: s.get(k) for k in area_keys(target) if k != "le"}
    if target is not None:
        util = s.get("utilization")
        out["le"] = target.family.le(util) if util else None
    return out


def _stage_area(r: dict, target) -> dict:
    """A forward stage's area: LUT4, FF, CCU2C, DSP (default ECP5 report), or the family's LUT
    cells, FF, DSP and ``le``."""
    if target is None:
        return {k: r.get(k) for k in ("lut", "ff", "ccu2", "dsp")}
    a = _area(r, target)
    return {k: a.get(k) for k in ("lut", "ff", "dsp", "le")}


def fpga_section(target) -> dict:
    """What ``report.json["fpga"]`` says about the family of a ``--family`` report."""
    from l1bn.sim.fpga.families import tool_version

    fam = target.family
    return {"family": fam.name, "title": fam.title,
            "device": target.device.name if target.device is not None else None, "dsp": target.dsp,
            "dsp_cell": fam.dsp_cell, "units": [list(u) for u in fam.units], "le_sites": list(fam.site_bels),
            "pnr_tool": tool_version(fam)}


def _median_over_seeds(got):
    """Merge the per-seed results: synthesis counts (identical), median Fmax, every seed's Fmax,
    and the critical path of the median run."""
    runs = {}
    for key, r in got.items():
        if len(key) > 2 and key[-2] == "seed":
            runs.setdefault(key[:-2], []).append((key[-1], r))
    out = {k: r for k, r in got.items() if not (len(k) > 2 and k[-2] == "seed")}
    for key, rs in runs.items():
        rs.sort(key=lambda t: (t[1].get("fmax_mhz") or 0.0, t[0]))
        seed, med = rs[(len(rs) - 1) // 2]           # the lower median: a real run, not an average
        out[key] = {**med, "fmax_seeds": {str(sd): r.get("fmax_mhz") for sd, r in sorted(rs)},
                    "median_seed": seed}
    return out


def _round_ratio(a, b):
    r = _ratio(a, b)
    return round(r, 4) if r is not None else None


def _stage_ratios(row):
    """Add each compared norm's ``<norm>_over_l2`` to a stage row ``{norm: {...}}``."""
    keys = ("lut", "dsp", "transistors", "fmax_mhz", "energy_per_element") + (("le",) if "le" in row[BASELINE] else ())
    for nm in compared(list(row)):
        row[ratio_key(nm)] = {k: _round_ratio(row[nm][k], row[BASELINE][k]) for k in keys}


def _power(units):
    """Energy per unit of time: at each unit's own Fmax and at the slower unit's Fmax (the common
    clock). The toggle energy per element does not depend on the clock in this zero-delay model,
    so the common clock changes power and latency, not energy per element."""
    fm = [u["fmax_mhz"] for u in units.values() if u.get("fmax_mhz")]
    common = min(fm) if fm else None
    for u in units.values():
        per_cycle = u["energy_per_element"] * u["elements"] / u["latency_cycles"]
        u["common_clock_mhz"] = common
        u["energy_per_element_common_clock"] = u["energy_per_element"]
        u["power_own_fmax"] = round(per_cycle * u["fmax_mhz"], 1) if u.get("fmax_mhz") else None
        u["power_common_clock"] = round(per_cycle * common, 1) if common else None
        u["latency_ns_common_clock"] = round(u["latency_cycles"] * 1000 / common, 1) if common else None


def build_report(*, widths=REPORT_WIDTHS, n: int = 64, lanes: int = 1, channels: int = 4, pnr: bool = True,
                 jobs: int | None = None, workdir, console=None, backward: bool = True,
                 stages: bool = True, seeds=PNR_SEEDS, target=None) -> tuple[dict, dict]:
    """Measure every unit and stage; return ``(report, run)``: the report dict (what report.json
    holds) and the run's facts (``seconds``, ``cached`` steps out of ``steps``).

    Place and route runs once per seed in ``seeds``; Fmax is the median, and the critical path is
    that of the median run. Every norm of the registry gets a forward unit and its stages; the
    norms with a backward unit (``BACKWARD_NORMS``) a backward unit.

    ``target`` (:func:`l1bn.sim.fpga.families.resolve_target`): the FPGA family, device and DSP
    switch. None is the ECP5 report as it was before the family layer (same keys, same cache
    entries); a target (ECP5 included) adds ``report["fpga"]`` and each unit's ``le``. The
    gate-level energy does not depend on the family (the same generic-gate netlist of the same
    Verilog), so its steps are shared by every family's report."""
    from l1bn.hw.bn_backward import backward_latency_cycles, stored_state_bits
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_stages, bn_unit_for

    t0 = time.perf_counter()
    workdir = Path(workdir)
    suffix = "" if target is None or target.family.name == "ecp5" else f"-{target.family.name}"

    def fpga(comp, name):
        return fpga_job(comp, name=name + suffix, target=target, pnr=pnr)

    plan = []   # (key tuple, Job)
    meta = {}
    for w in widths:
        for norm in NORMS:
            fc = forward_config(norm, w, n=n, lanes=lanes, channels=channels)
            beats, elems = forward_beats(fc)
            name = f"fwd-{norm}-w{w}"
            plan.append(((w, "forward", norm, "fpga"), fpga(bn_unit_for(fc), name)))
            plan.append(((w, "forward", norm, "energy"), EnergyJob(bn_unit_for(fc), name=name, beats=beats,
                                                                   expect_out=elems // lanes)))
            meta[(w, "forward", norm)] = {"config": fc.to_dict(), "elements": elems,
                                          "formula_cycles": bn_latency_cycles(fc),
                                          "analytic": analytic_energy("forward", fc)}
            if stages:
                for s, comp in bn_stages(fc).items():
                    plan.append(((w, "stage", norm, s), fpga(comp, f"{name}-{s}")))
            if backward and norm in BACKWARD_NORMS:
                bc = backward_config(norm, w, n=n, channels=channels)
                unit = resolve(norm_spec(norm).hw_backward)
                beats, elems = backward_beats(bc)
                name = f"bwd-{norm}-w{w}"
                plan.append(((w, "backward", norm, "fpga"), fpga(unit(bc), name)))
                plan.append(((w, "backward", norm, "energy"), EnergyJob(unit(bc), name=name, beats=beats,
                                                                        expect_out=elems)))
                meta[(w, "backward", norm)] = {"config": bc.to_dict(), "elements": elems,
                                               "formula_cycles": backward_latency_cycles(bc),
                                               "analytic": analytic_energy("backward", bc),
                                               "stored_bits": stored_state_bits(bc)}
    plan = _with_seeds(plan, seeds if pnr else (1,))
    res = run_jobs([j for _, j in plan], workdir=workdir, max_workers=jobs, console=console,
                   description="synthesis, P&R, gate-level energy")
    got = _median_over_seeds({k: r for (k, _), r in zip(plan, res, strict=True)})

    report = {"flow_version": FLOW_VERSION, "tools": tool_versions(),
              "params": {"widths": list(widths), "n": n, "lanes": lanes, "channels": channels, "pnr": pnr,
                         "seeds": list(seeds) if pnr else []},
              "energy_unit": "fan-out-weighted net transitions (relative); analytic in pJ (Horowitz 45 nm)",
              "widths": {}}
    if target is not None:
        report["fpga"] = fpga_section(target)
    for w in widths:
        wrep = {}
        for kind in ("forward", "backward") if backward else ("forward",):
            units = {}
            for norm in norms_for(kind):
                e, s, mt = got[(w, kind, norm, "energy")], got[(w, kind, norm, "fpga")], meta[(w, kind, norm)]
                fmax = s.get("fmax_mhz")
                cyc = e["cycles"]
                u = {**_area(s, target), "transistors": e["transistors"], "gates": e["gates"], "dff": e["dff"],
                     "fmax_mhz": fmax, "fmax_seeds": s.get("fmax_seeds"), "critical_path": s.get("critical_path"),
                     "device": s.get("device"), "latency_cycles": cyc,
                     "latency_cycles_formula": mt["formula_cycles"],
                     "latency_ns": round(cyc * 1000 / fmax, 1) if fmax else None,
                     "elements": mt["elements"],
                     "energy_per_element": round(e["energy"] / mt["elements"], 2),
                     "data_energy_per_element": round(e["data_energy"] / mt["elements"], 2),
                     "clock_energy_per_element": round(e["clock_energy"] / mt["elements"], 2),
                     "analytic_pj_per_element": round(mt["analytic"]["pj"], 4),
                     "analytic_ops": mt["analytic"]["ops"]}
                if kind == "backward":
                    sb = mt["stored_bits"]
                    u["stored_bits_per_element"] = sb[f"{norm}_pass2"]
                    u["stored_bits_detail"] = sb
                units[norm] = u
            _power(units)
            keys = ("lut", "ff", "dsp", "transistors", "fmax_mhz", "latency_cycles", "latency_ns",
                    "energy_per_element", "data_energy_per_element", "analytic_pj_per_element",
                    "power_own_fmax", "power_common_clock") + (("stored_bits_per_element",)
                                                               if kind == "backward" else ()) \
                + (("le",) if target is not None else ())
            wrep[kind] = dict(units)
            for nm in compared(units):
                wrep[kind][ratio_key(nm)] = {k: _round_ratio(units[nm][k], units[BASELINE][k]) for k in keys}
        if stages:
            st = {}
            for s in STAGES:
                row = {}
                for norm in NORMS:
                    r = got[(w, "stage", norm, s)]
                    e = got[(w, "forward", norm, "energy")]
                    mods = e["modules"]
                    tr = next((v["transistors"] for k, v in mods.items() if k.split(".")[-1] == s), None)
                    en = next((v for k, v in e["per_scope"].items() if k.split(".")[-1] == s), None)
                    row[norm] = {**_stage_area(r, target), "fmax_mhz": r.get("fmax_mhz"),
                                 "fmax_seeds": r.get("fmax_seeds"),
                                 "critical_path": r.get("critical_path"), "transistors": tr,
                                 "energy_per_element": round(en / meta[(w, "forward", norm)]["elements"], 2)
                                 if en is not None else None}
                _stage_ratios(row)
                st[s] = row
            # what is not in a stage: the three x buffers (flip-flops in the gate netlist), the
            # per-channel slot registers and the schedule; no stand-alone synthesis exists for it
            row = {}
            for norm in NORMS:
                e = got[(w, "forward", norm, "energy")]
                row[norm] = {**dict.fromkeys(_stage_area({}, target)), "fmax_mhz": None,
                             "transistors": e["modules"].get("top", {}).get("local_transistors"),
                             "energy_per_element": round(e["per_scope"].get("tb.dut", 0.0)
                                                         / meta[(w, "forward", norm)]["elements"], 2)}
            _stage_ratios(row)
            st["top"] = row
            wrep["stages"] = st
        report["widths"][str(w)] = wrep
    # run facts stay out of report.json, so that a rerun from cache writes identical files
    run = {"seconds": round(time.perf_counter() - t0, 1), "cached": sum(1 for r in res if r.get("cached")),
           "steps": len(res)}
    return report, run


def _columns(rep: dict) -> list[tuple[str, str]]:
    """(key, header) of a unit's area columns: ECP5's four for the default report, else the
    family's own units and the LUT4-equivalents."""
    fp = rep.get("fpga")
    if fp is None:
        return [("lut", "LUT4"), ("ff", "FF"), ("ccu2", "CCU2C"), ("dsp", "DSP")]
    return [tuple(u) for u in fp["units"]] + [("le", "LE (LUT4-eq.)")]


def report_markdown(rep: dict) -> str:
    p = rep["params"]
    cols = _columns(rep)
    lines = [f"# BN units, {', '.join(nm.upper() for nm in NORMS)} (ratios to {BASELINE.upper()}): "
             f"n = {p['n']}, lanes = {p['lanes']}, channels = {p['channels']}", ""]
    if "fpga" in rep:
        fp = rep["fpga"]
        lines += [f"FPGA: {fp['title']} {fp['device'] or '(smallest ECP5 that holds each design)'}, "
                  f"multiplies {'in ' + fp['dsp_cell'] if fp['dsp'] else 'in the fabric (no DSP)'}; "
                  f"{fp['pnr_tool']}. LE = LUT4-equivalents: the {' + '.join(fp['le_sites'])} sites nextpnr "
                  "placed.", ""]
    for kind in ("forward", "backward"):
        if kind not in next(iter(rep["widths"].values())):
            continue
        bwd = kind == "backward"   # backward rows end with the stored bits per element

        def unit(w, norm, u, bwd=bwd):
            seeds = "/".join(_f(v, 1) for v in (u.get("fmax_seeds") or {}).values()) or "-"
            cp = u.get("critical_path") or {}
            area = [u[k] if "fpga" not in rep else _f(u.get(k)) for k, _ in cols]
            return [w, norm.upper(), *area, u["transistors"],
                    _f(u["fmax_mhz"], 1), seeds, cp.get("stage", "-"), u["latency_cycles"], _f(u["latency_ns"], 1),
                    _f(u["energy_per_element"], 0), _f(u.get("power_own_fmax"), 0),
                    _f(u.get("power_common_clock"), 0), _f(u["analytic_pj_per_element"], 3)
                    ] + ([u["stored_bits_per_element"]] if bwd else [])

        def ratio(w, nm, r, bwd=bwd):
            return [w, ratio_label(nm), *(_f(r[k]) if k in r else "" for k, _ in cols), _f(r["transistors"]),
                    _f(r["fmax_mhz"]), "", "", _f(r["latency_cycles"]), _f(r["latency_ns"]),
                    _f(r["energy_per_element"]), _f(r.get("power_own_fmax")), _f(r.get("power_common_clock")),
                    _f(r["analytic_pj_per_element"])] + ([_f(r["stored_bits_per_element"], 3)] if bwd else [])

        lines += [f"## {kind} units", "",
                  *md_header(["width", "unit", *(h for _, h in cols), "transistors", "Fmax MHz (median)",
                              "Fmax per seed", "critical path stage", "cycles", "latency ns", "energy/elem",
                              "power @Fmax", "power @common clock", "analytic pJ/elem"]
                             + (["stored bits/elem"] if bwd else [])),
                  *unit_rows(rep, kind, unit, ratio), ""]
    if "stages" in next(iter(rep["widths"].values())):
        ak, ah = ("le", "LE") if "fpga" in rep else ("lut", "LUT4")
        lines += ["## forward stages", "",
                  f"{ah}, DSP and Fmax: each stage synthesized and placed alone (in the timing harness). "
                  "Transistors and energy: the stage's instance in the whole unit's gate netlist "
                  "(hierarchy kept); 'buffers + control' is the rest of the unit. The ratio columns are to "
                  f"{BASELINE.upper()}'s same stage.", "",
                  *md_header(["width", "stage", "norm", ah, "DSP", "transistors", "Fmax MHz", "energy/elem",
                              *(f"{m}/{BASELINE.upper()}" for m in (ah, "transistors", "Fmax", "energy"))]),
                  *stage_rows(rep, lambda w, s, nm, a, q: [
                      w, STAGE_TITLES[s], nm.upper(), _f(a[ak]), _f(a["dsp"]), _f(a["transistors"]),
                      _f(a["fmax_mhz"], 1), _f(a["energy_per_element"], 0), _f(q.get(ak)),
                      _f(q.get("transistors")), _f(q.get("fmax_mhz")), _f(q.get("energy_per_element"))]), ""]
    lines.append(f"Energy: {rep['energy_unit']}. Power: energy per cycle (elements per cycle measured) "
                 "times the clock in MHz, at each unit's own median Fmax and at the slower unit's (common clock); "
                 "energy per element does not depend on the clock in this zero-delay model. "
                 f"Fmax: median of nextpnr seeds {p.get('seeds')}.")
    return "\n".join(lines) + "\n"


def plot_report(rep: dict, out: Path) -> list[Path]:
    """``report_ratios.png`` (units) and ``report_stages.png`` (forward stages)."""
    plt = pyplot()
    widths = [int(w) for w in rep["widths"]]
    paths = []
    area = ("le", "area (LUT4-eq.)") if "fpga" in rep else ("lut", "area (LUT4)")
    metrics = [area, ("fmax_mhz", "Fmax"), ("latency_ns", "latency (ns)"),
               ("energy_per_element", "energy / element")]
    colors = {nm: f"C{i}" for i, nm in enumerate(NORMS)}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for ax, (k, title) in zip(axes, metrics, strict=True):
        unit_ratio_lines(ax, rep, k, colors)
        finish_axis(ax, f"ratio to {BASELINE.upper()}: {title}", widths)
    axes[0].legend()
    paths.append(save_figure(plt, fig, out / "report_ratios.png"))
    if "stages" in rep["widths"][str(widths[0])]:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        for ax, (k, title) in zip(axes, [area, ("fmax_mhz", "Fmax"),
                                          ("energy_per_element", "energy / element")], strict=True):
            for i, s in enumerate((*STAGES, "top")):
                for nm, style in zip(compared(NORMS), ("o-", "^--", "s:", "v-."), strict=False):
                    ys = [rep["widths"][str(w)]["stages"][s][ratio_key(nm)].get(k) for w in widths]
                    ax.plot(widths, nan_none(ys), style, color=f"C{i}", label=f"{nm.upper()}: {STAGE_TITLES[s]}")
            finish_axis(ax, f"stage / {BASELINE.upper()}: {title}", widths, log=True)
        axes[0].legend(fontsize=6)
        paths.append(save_figure(plt, fig, out / "report_stages.png"))
    return paths


def compare_forward(width: int, *, workdir, console=None, seeds=PNR_SEEDS, n: int = 64, channels: int = 4,
                    energy: str = "cached", norm: str = FEATURED) -> dict:
    """``norm``'s forward unit (default the registry's FEATURED, L1) against the BASELINE's (L2)
    at one ``width`` (the report's config): ECP5 area, median Fmax over ``seeds`` and its
    critical-path stage, latency (cycles and ns), and the gate-level energy per element when
    ``energy`` is ``"run"``, or ``"cached"`` and a report already measured it (else None).
    Returns ``{norm: {...}, BASELINE: {...}, ratio_key(norm): {...}}`` (``"l1"``, ``"l2"``,
    ``"l1_over_l2"``)."""
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for

    if energy not in ("cached", "run", "no"):
        raise ValueError(f"energy={energy!r} is not allowed; choose cached, run or no")
    pair = (norm_spec(norm).name, BASELINE)
    plan, meta = [], {}
    for norm in pair:
        fc = forward_config(norm, width, n=n, lanes=1, channels=channels)
        plan.append(((norm, "ecp5"), ECP5Job(bn_unit_for(fc), name=f"fwd-{norm}-w{width}", pnr=True)))
        meta[norm] = (fc, bn_latency_cycles(fc))
        if energy != "no":
            beats, elems = forward_beats(fc)
            job = EnergyJob(bn_unit_for(fc), name=f"fwd-{norm}-w{width}", beats=beats, expect_out=elems)
            if energy == "run" or job.cache_path.exists():
                plan.append(((norm, "energy"), job))
    plan = _with_seeds(plan, seeds)
    res = run_jobs([j for _, j in plan], workdir=workdir, console=console,
                   description=f"L1 vs L2 BN units, width {width}")
    got = _median_over_seeds({k: r for (k, _), r in zip(plan, res, strict=True)})
    out = {}
    for norm in pair:
        s, (fc, cyc) = got[(norm, "ecp5")], meta[norm]
        e = got.get((norm, "energy"))
        out[norm] = {"lut": s["lut"], "ff": s["ff"], "dsp": s["dsp"], "fmax_mhz": s["fmax_mhz"],
                     "fmax_seeds": s["fmax_seeds"], "critical_path": s.get("critical_path"),
                     "latency_cycles": cyc, "latency_ns": round(cyc * 1000 / s["fmax_mhz"], 1),
                     "energy_per_element": round(e["energy"] / (fc.n * fc.channels), 1) if e else None}
    a, b = out[pair[0]], out[pair[1]]
    out[ratio_key(pair[0])] = {k: (round(_ratio(a[k], b[k]), 3) if _ratio(a[k], b[k]) is not None else None)
                               for k in ("lut", "ff", "dsp", "fmax_mhz", "latency_cycles", "latency_ns",
                                         "energy_per_element")}
    return out
