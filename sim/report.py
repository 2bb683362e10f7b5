"""``l1bn report``: area, Fmax, latency and energy of every registered BN norm, forward and backward.

The norms come from the registry (:mod:`l1bn.spec.norms`: L1, L2 and range BN), each compared
with L2 (``<norm>_over_l2``). For each bit width every norm's forward unit (``hw_unit``, e.g.
:class:`~l1bn.hw.bn_unit.L1BNUnit`), its backward unit where it has one (``hw_backward``; range BN
has none, so the backward rows are L1 against L2) and the four forward stages alone
(:func:`~l1bn.hw.bn_unit.bn_stages`) go through :mod:`l1bn.sim.flow`:

- ECP5 synthesis + place and route in the timing harness (LUT4, FF, CCU2C, DSP, Fmax);
- generic gate synthesis (transistor estimate, per stage from the kept hierarchy);
- a gate-level Icarus simulation on real pre-BN activations (and, backward, real BN-output
  gradients) of the trained digits CNN (:mod:`l1bn.sw.capture`): cycles from the first accepted
  input to the last output beat, and fan-out-weighted toggle energy, per instance.

Latency in ns = measured cycles * 1000 / Fmax. Energy per element = energy / (channels * n).
An analytic cross-check counts the datapath's operations per element and prices them with
Horowitz's 45 nm energies (ISSCC 2014): add 0.03 pJ (8 bit) / 0.1 pJ (32 bit), linear in between
and beyond; multiply 0.2 pJ (8x8) / 3.1 pJ (32x32), scaled as (a*b/64)**0.989 (the power through
both points); an abs, compare or mux is priced as an add of its width.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from l1bn.spec.norms import norm_names, norm_spec, resolve

from .flow import FLOW_VERSION, Job, run_jobs, tool_versions
from .report_format import (
    finish_axis,
    md_header,
    nan_none,
    pyplot,
    save_figure,
    stage_rows,
    unit_ratio_lines,
    unit_rows,
)
from .report_format import fmt as _f

__all__ = ["PNR_SEEDS", "REPORT_WIDTHS", "compare_forward", "forward_config", "backward_config", "build_report",
           "write_report", "horowitz_add", "horowitz_mul", "analytic_energy", "NORMS", "BASELINE",
           "BACKWARD_NORMS", "norms_for", "ratio_key", "compared", "ratio_label"]

REPORT_WIDTHS = (4, 8, 16)
#: every registered norm, in report order (l1bn.spec.norms); the ratios are to BASELINE
NORMS = norm_names()
BASELINE = "l2"
#: the norms with a backward unit (registry ``hw_backward`` not empty)
BACKWARD_NORMS = tuple(nm for nm in NORMS if norm_spec(nm).hw_backward)
STAGES = ("stats", "disp", "recip", "normalize")
STAGE_TITLES = {"stats": "statistics", "disp": "dispersion", "recip": "reciprocal/sqrt",
                "normalize": "normalize", "top": "buffers + control"}




def norms_for(kind: str) -> tuple[str, ...]:
    """The norms that have a unit of ``kind`` ("forward" or "backward")."""
    return NORMS if kind == "forward" else BACKWARD_NORMS


def ratio_key(norm: str) -> str:
    """The report key of ``norm``'s ratios to the baseline: ``"l1_over_l2"``, ``"range_over_l2"``."""
    return f"{norm}_over_{BASELINE}"


def compared(norms) -> tuple[str, ...]:
    """The norms of ``norms`` that get a ratio row (all but the baseline)."""
    return tuple(nm for nm in norms if nm != BASELINE)


def ratio_label(norm: str) -> str:
    """The bold label of a ratio row in report.md: ``**L1/L2**``, ``**RANGE/L2**``."""
    return f"**{norm.upper()}/{BASELINE.upper()}**"


# ---------------------------------------------------------------------------------------------
# configurations

def forward_config(norm: str, width: int, *, n: int, lanes: int, channels: int):
    """The forward ``BNConfig`` measured at ``width``: out_width = width (at least 4), the
    defaults of ``BNConfig`` (frac = 4, xhat_frac = 8, 8-bit gamma and beta), and
    recip_bits = width + 12, so that inv = 2**recip_bits / sigma keeps the same relative precision
    at every width (20 at width 8, the default; 28 at width 16)."""
    from l1bn.spec.config import BNConfig

    return BNConfig(norm=norm, width=width, out_width=max(width, 4), n=n, lanes=lanes, channels=channels,
                    recip_bits=width + 12)


def backward_config(norm: str, width: int, *, n: int, channels: int):
    """The backward config at ``width`` (lanes = 1; 8-bit gradients, as the tests)."""
    from l1bn.spec.config import BNBackwardConfig

    b = forward_config(norm, width, n=n, lanes=1, channels=channels)
    if width > 12:
        return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=24, grad_out_frac=18)
    return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=20, grad_out_frac=10)


# ---------------------------------------------------------------------------------------------
# stimuli from real data

def _gamma_beta(cfg):
    import torch

    # gamma = 1.0 and 0.75 alternately, beta small: the trained network's scale of values
    g = [(1 << cfg.gamma_frac) if c % 2 == 0 else (3 << cfg.gamma_frac) // 4 for c in range(cfg.channels)]
    b = [(-1) ** c * min(3, (1 << (cfg.beta_width - 1)) - 1) for c in range(cfg.channels)]
    return torch.tensor(g, dtype=torch.int64), torch.tensor(b, dtype=torch.int64)


def forward_beats(cfg, seed: int = 0):
    """Input beats of one batch of real activations (:func:`l1bn.sw.capture.bn_inputs`)."""
    import numpy as np
    from l1bn.spec.words import pack
    from l1bn.sw.capture import bn_inputs

    x = bn_inputs(width=cfg.width, n=cfg.n, channels=cfg.channels, seed=seed)
    gamma, beta = _gamma_beta(cfg)
    # one beat = lanes consecutive elements of a channel (the unit's ArrayLayout(signed(width), lanes))
    payloads = pack(np.asarray(x).reshape(cfg.channels * cfg.beats, cfg.lanes), cfg.width)
    beats = [{"i__payload": payloads[c * cfg.beats + j], "gamma": int(gamma[c]), "beta": int(beta[c])}
             for c in range(cfg.channels) for j in range(cfg.beats)]
    return beats, cfg.channels * cfg.beats


def backward_beats(cfg, seed: int = 0):
    """Beats (pass 1 then pass 2 per channel) of real (x, dy) from one training step; mu and inv
    from the integer forward reference."""
    import numpy as np
    from l1bn.spec.reference.bn import bn_forward
    from l1bn.spec.words import pack
    from l1bn.sw.capture import bn_grads

    b = cfg.bn
    x, _ = bn_grads(width=b.width, n=b.n, channels=b.channels, seed=seed)
    _, dy = bn_grads(width=cfg.grad_width, n=b.n, channels=b.channels, seed=seed)
    gamma, beta = _gamma_beta(b)
    f = bn_forward(x, gamma, beta, b)
    # one beat = StructLayout({"x": signed(width), "dy": signed(grad_width)}) (x in the low bits)
    payloads = pack(np.stack([np.asarray(x).reshape(-1), np.asarray(dy).reshape(-1)], axis=1),
                    [b.width, cfg.grad_width])
    beats = [{"i__payload": payloads[c * b.n + j], "mu": int(f.mu[c]), "inv": int(f.inv[c]),
              "gamma": int(gamma[c])}
             for c in range(b.channels) for _pass in range(2) for j in range(b.n)]
    return beats, b.channels * b.n


# ---------------------------------------------------------------------------------------------
# analytic cross-check (Horowitz, ISSCC 2014, 45 nm)

def horowitz_add(bits: int) -> float:
    """pJ of a ``bits``-bit integer add: 0.03 pJ at 8 bits, 0.1 pJ at 32, linear."""
    return max(0.005, 0.03 + (bits - 8) * (0.1 - 0.03) / 24)


def horowitz_mul(a: int, b: int) -> float:
    """pJ of an ``a`` x ``b``-bit integer multiply: 0.2 pJ at 8x8, 3.1 pJ at 32x32,
    proportional to (a*b)**0.989 (the power law through both points)."""
    p = math.log(3.1 / 0.2) / math.log(16)
    return 0.2 * (a * b / 64) ** p


def _op_pj(kind: str, bits: int) -> float:
    """Horowitz pJ of one registry operation (``NormSpec.ops``): a compare is priced as an add."""
    if kind == "mul":
        return horowitz_mul(bits, bits)
    if kind in ("add", "cmp"):
        return horowitz_add(bits)
    raise ValueError(f"op kind={kind!r} is unknown; allowed add, mul, cmp")


def analytic_energy(kind: str, cfg) -> dict:
    """Operations per element of the datapath and their Horowitz energy (pJ per element).

    The forward unit's norm-specific operations are the registry's ``ops`` (``l1bn.spec.norms``).
    Per-channel work (mean, reciprocal, square root, divider, the backward's per-channel steps)
    is divided by n. Returns ``{"pj": total, "ops": [(name, pJ per element), ...]}``.
    """
    ops = []
    if kind == "forward":
        b = cfg
        n = b.n
        ops.append(("sum x", horowitz_add(b.sum_bits)))
        ops.append(("d = x - mu", horowitz_add(b.dev_bits)))
        spec = norm_spec(b.norm)
        ops += [(name, _op_pj(k, bits(b))) for name, k, bits in spec.ops]
        ops.append(("d = x - mu (pass 2)", horowitz_add(b.dev_bits)))
        ops.append(("d*inv", horowitz_mul(b.dev_bits, b.inv_bits)))
        ops.append(("round xhat", horowitz_add(b.xhat_bits)))
        ops.append(("gamma*xhat", horowitz_mul(b.gamma_width, b.xhat_bits)))
        ops.append(("round, +beta, saturate", 3 * horowitz_add(b.out_width + b.affine_shift)))
        per_ch = horowitz_mul(b.sum_bits + b.frac, 24)                      # mean = sum / n
        if spec.disp_sum_bits(b) != spec.disp_bits(b):                       # s = D / n (range: s = D)
            per_ch += horowitz_mul(b.disp_sum_bits, 24)
        if spec.sigma_kind == "sqrt":       # the registry's sigma rule, as RecipStage builds it
            per_ch += ((b.disp_bits + 1) // 2) * 2 * horowitz_add(b.disp_bits)   # restoring sqrt
        else:
            per_ch += horowitz_mul(b.disp_bits, b.c_bits) + horowitz_add(b.sigma_bits)   # s * C, + eps
        per_ch += (b.recip_bits + 1) * 2 * horowitz_add(b.sigma_bits + 1)          # restoring divider
        ops.append(("per channel (/n): mean, s, sigma, inv", per_ch / n))
    else:
        b = cfg.bn
        n, g = b.n, cfg.grad_width
        w = cfg.widths
        ops.append(("sum dy", horowitz_add(w["sum_dy"])))
        ops.append(("dy*x", horowitz_mul(g, b.width)))
        ops.append(("sum dy*x", horowitz_add(w["sum_dyx"])))
        ops.append(("d = x - mu (sign)", 2 * horowitz_add(b.dev_bits)))   # pass 1 and pass 2
        ops.append(("count d<0", horowitz_add(b.count_bits)))
        if b.norm == "l1":
            ops.append(("mux k+/k-", horowitz_add(w["u"])))
        else:
            ops.append(("xhat = d*inv", horowitz_mul(b.dev_bits, b.inv_bits)))
            ops.append(("xhat*mean(dy*xhat)", horowitz_mul(b.xhat_bits, w["hc"] - b.count_bits + 2)))
            ops.append(("- mean(dy)", horowitz_add(w["u"])))
        ops.append(("u = dy - ...", horowitz_add(w["u"])))
        ops.append(("u*gamma*inv", horowitz_mul(w["u"], w["gamma_inv"])))
        ops.append(("round, saturate", 2 * horowitz_add(cfg.grad_out_width)))
        per_ch = (horowitz_mul(w["sum_dy"], b.dev_bits) + horowitz_mul(w["h"], b.inv_bits)
                  + 3 * horowitz_mul(w["h"], cfg.div_bits) + horowitz_mul(b.gamma_width, b.inv_bits))
        if b.norm == "l1":
            per_ch += 2 * horowitz_mul(w["h"], cfg.inner_frac + 3)
        ops.append(("per channel (/n)", per_ch / n))
    return {"pj": sum(e for _, e in ops), "ops": [(k, round(v, 5)) for k, v in ops]}


# ---------------------------------------------------------------------------------------------
# the report

def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


PNR_SEEDS = (1, 2, 3)


def _with_seeds(plan, seeds):
    """Each ECP5 place-and-route job once per seed (key + ``("seed", s)``); other jobs as they are."""
    out = []
    for key, job in plan:
        if job.kind != "ecp5" or not job.params.get("pnr", True):
            out.append((key, job))
            continue
        for sd in seeds:
            out.append(((*key, "seed", sd), Job("ecp5", name=f"{job.name}-s{sd}", verilog=job.verilog,
                                                 **{**job.params, "seed": sd})))
    return out


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
    for nm in compared(list(row)):
        row[ratio_key(nm)] = {k: _round_ratio(row[nm][k], row[BASELINE][k])
                              for k in ("lut", "dsp", "transistors", "fmax_mhz", "energy_per_element")}


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
                 stages: bool = True, seeds=PNR_SEEDS) -> tuple[dict, dict]:
    """Measure every unit and stage; return ``(report, run)``: the report dict (what report.json
    holds) and the run's facts (``seconds``, ``cached`` steps out of ``steps``).

    Place and route runs once per seed in ``seeds``; Fmax is the median, and the critical path is
    that of the median run. Every norm of the registry gets a forward unit and its stages; the
    norms with a backward unit (``BACKWARD_NORMS``) a backward unit."""
    from l1bn.hw.bn_backward import backward_latency_cycles, stored_state_bits
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_stages, bn_unit_for

    t0 = time.perf_counter()
    workdir = Path(workdir)
    plan = []   # (key tuple, Job)
    meta = {}
    for w in widths:
        for norm in NORMS:
            fc = forward_config(norm, w, n=n, lanes=lanes, channels=channels)
            beats, elems = forward_beats(fc)
            name = f"fwd-{norm}-w{w}"
            plan.append(((w, "forward", norm, "ecp5"), Job("ecp5", bn_unit_for(fc), name=name, pnr=pnr)))
            plan.append(((w, "forward", norm, "energy"), Job("energy", bn_unit_for(fc), name=name, beats=beats,
                                                            expect_out=elems // lanes)))
            meta[(w, "forward", norm)] = {"config": fc.to_dict(), "elements": elems,
                                          "formula_cycles": bn_latency_cycles(fc),
                                          "analytic": analytic_energy("forward", fc)}
            if stages:
                for s, comp in bn_stages(fc).items():
                    plan.append(((w, "stage", norm, s), Job("ecp5", comp, name=f"{name}-{s}", pnr=pnr)))
            if backward and norm in BACKWARD_NORMS:
                bc = backward_config(norm, w, n=n, channels=channels)
                unit = resolve(norm_spec(norm).hw_backward)
                beats, elems = backward_beats(bc)
                name = f"bwd-{norm}-w{w}"
                plan.append(((w, "backward", norm, "ecp5"), Job("ecp5", unit(bc), name=name, pnr=pnr)))
                plan.append(((w, "backward", norm, "energy"), Job("energy", unit(bc), name=name, beats=beats,
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
    for w in widths:
        wrep = {}
        for kind in ("forward", "backward") if backward else ("forward",):
            units = {}
            for norm in norms_for(kind):
                e, s, mt = got[(w, kind, norm, "energy")], got[(w, kind, norm, "ecp5")], meta[(w, kind, norm)]
                fmax = s.get("fmax_mhz")
                cyc = e["cycles"]
                u = {"lut": s["lut"], "ff": s["ff"], "ccu2": s["ccu2"], "dsp": s["dsp"], "bram": s["bram"],
                     "lutram": s["lutram"], "transistors": e["transistors"], "gates": e["gates"], "dff": e["dff"],
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
                                                               if kind == "backward" else ())
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
                    row[norm] = {"lut": r["lut"], "ff": r["ff"], "ccu2": r["ccu2"], "dsp": r["dsp"],
                                 "fmax_mhz": r.get("fmax_mhz"), "fmax_seeds": r.get("fmax_seeds"),
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
                row[norm] = {"lut": None, "ff": None, "ccu2": None, "dsp": None, "fmax_mhz": None,
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


# ---------------------------------------------------------------------------------------------
# outputs

def report_markdown(rep: dict) -> str:
    p = rep["params"]
    lines = [f"# BN units, {', '.join(nm.upper() for nm in NORMS)} (ratios to {BASELINE.upper()}): "
             f"n = {p['n']}, lanes = {p['lanes']}, channels = {p['channels']}", ""]
    for kind in ("forward", "backward"):
        if kind not in next(iter(rep["widths"].values())):
            continue
        bwd = kind == "backward"   # backward rows end with the stored bits per element

        def unit(w, norm, u, bwd=bwd):
            seeds = "/".join(_f(v, 1) for v in (u.get("fmax_seeds") or {}).values()) or "-"
            cp = u.get("critical_path") or {}
            return [w, norm.upper(), u["lut"], u["ff"], u["ccu2"], u["dsp"], u["transistors"],
                    _f(u["fmax_mhz"], 1), seeds, cp.get("stage", "-"), u["latency_cycles"], _f(u["latency_ns"], 1),
                    _f(u["energy_per_element"], 0), _f(u.get("power_own_fmax"), 0),
                    _f(u.get("power_common_clock"), 0), _f(u["analytic_pj_per_element"], 3)
                    ] + ([u["stored_bits_per_element"]] if bwd else [])

        def ratio(w, nm, r, bwd=bwd):
            return [w, ratio_label(nm), _f(r["lut"]), _f(r["ff"]), "", _f(r["dsp"]), _f(r["transistors"]),
                    _f(r["fmax_mhz"]), "", "", _f(r["latency_cycles"]), _f(r["latency_ns"]),
                    _f(r["energy_per_element"]), _f(r.get("power_own_fmax")), _f(r.get("power_common_clock")),
                    _f(r["analytic_pj_per_element"])] + ([_f(r["stored_bits_per_element"], 3)] if bwd else [])

        lines += [f"## {kind} units", "",
                  *md_header(["width", "unit", "LUT4", "FF", "CCU2C", "DSP", "transistors", "Fmax MHz (median)",
                              "Fmax per seed", "critical path stage", "cycles", "latency ns", "energy/elem",
                              "power @Fmax", "power @common clock", "analytic pJ/elem"]
                             + (["stored bits/elem"] if bwd else [])),
                  *unit_rows(rep, kind, unit, ratio), ""]
    if "stages" in next(iter(rep["widths"].values())):
        lines += ["## forward stages", "",
                  "LUT4, DSP and Fmax: each stage synthesized and placed alone (in the timing harness). "
                  "Transistors and energy: the stage's instance in the whole unit's gate netlist "
                  "(hierarchy kept); 'buffers + control' is the rest of the unit. The ratio columns are to "
                  f"{BASELINE.upper()}'s same stage.", "",
                  *md_header(["width", "stage", "norm", "LUT4", "DSP", "transistors", "Fmax MHz", "energy/elem",
                              *(f"{m}/{BASELINE.upper()}" for m in ("LUT4", "transistors", "Fmax", "energy"))]),
                  *stage_rows(rep, lambda w, s, nm, a, q: [
                      w, STAGE_TITLES[s], nm.upper(), _f(a["lut"]), _f(a["dsp"]), _f(a["transistors"]),
                      _f(a["fmax_mhz"], 1), _f(a["energy_per_element"], 0), _f(q.get("lut")),
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
    metrics = [("lut", "area (LUT4)"), ("fmax_mhz", "Fmax"), ("latency_ns", "latency (ns)"),
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
        for ax, (k, title) in zip(axes, [("lut", "area (LUT4)"), ("fmax_mhz", "Fmax"),
                                          ("energy_per_element", "energy / element")], strict=True):
            for i, s in enumerate((*STAGES, "top")):
                for nm, style in zip(compared(NORMS), ("o-", "^--", "s:", "v-."), strict=False):
                    ys = [rep["widths"][str(w)]["stages"][s][ratio_key(nm)].get(k) for w in widths]
                    ax.plot(widths, nan_none(ys), style, color=f"C{i}", label=f"{nm.upper()}: {STAGE_TITLES[s]}")
            finish_axis(ax, f"stage / {BASELINE.upper()}: {title}", widths, log=True)
        axes[0].legend(fontsize=6)
        paths.append(save_figure(plt, fig, out / "report_stages.png"))
    return paths


def write_report(rep: dict, out) -> dict:
    """Write ``report.json``, ``report.md`` and the PNGs into ``out``; return their paths."""
    import os
    import shutil
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # everything is written into a private folder first and each file renamed into place: a
    # reader (or a second report writing the same folder) never sees a half-written file
    tmp = Path(tempfile.mkdtemp(prefix=".report.tmp-", dir=out))
    try:
        (tmp / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
        if rep.get("target") == "asic":    # l1bn report --target asic (l1bn.sim.asic)
            from .asic import asic_markdown, plot_asic

            md, plots = asic_markdown(rep), plot_asic(rep, tmp)
        else:
            md, plots = report_markdown(rep), plot_report(rep, tmp)
            if "asic" in rep:              # --target both: the ASIC tables after the FPGA ones
                from .asic import asic_markdown, plot_asic

                md, plots = md + "\n" + asic_markdown(rep["asic"]), plots + plot_asic(rep["asic"], tmp)
        (tmp / "report.md").write_text(md)
        names = ["report.json", "report.md"] + [p.name for p in plots]
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"json": out / "report.json", "md": out / "report.md", "png": [out / n for n in names[2:]]}


def compare_forward(width: int, *, workdir, console=None, seeds=PNR_SEEDS, n: int = 64, channels: int = 4,
                    energy: str = "cached") -> dict:
    """L1 against L2 forward unit at one ``width`` (the report's config): ECP5 area, median Fmax
    over ``seeds`` and its critical-path stage, latency (cycles and ns), and the gate-level
    energy per element when ``energy`` is ``"run"``, or ``"cached"`` and a report already measured
    it (else None). Returns ``{"l1": {...}, "l2": {...}, "l1_over_l2": {...}}``."""
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_unit_for

    if energy not in ("cached", "run", "no"):
        raise ValueError(f"energy={energy!r} is not allowed; choose cached, run or no")
    plan, meta = [], {}
    for norm in ("l1", "l2"):
        fc = forward_config(norm, width, n=n, lanes=1, channels=channels)
        plan.append(((norm, "ecp5"), Job("ecp5", bn_unit_for(fc), name=f"fwd-{norm}-w{width}", pnr=True)))
        meta[norm] = (fc, bn_latency_cycles(fc))
        if energy != "no":
            beats, elems = forward_beats(fc)
            job = Job("energy", bn_unit_for(fc), name=f"fwd-{norm}-w{width}", beats=beats, expect_out=elems)
            if energy == "run" or job.cache_path.exists():
                plan.append(((norm, "energy"), job))
    plan = _with_seeds(plan, seeds)
    res = run_jobs([j for _, j in plan], workdir=workdir, console=console,
                   description=f"L1 vs L2 BN units, width {width}")
    got = _median_over_seeds({k: r for (k, _), r in zip(plan, res, strict=True)})
    out = {}
    for norm in ("l1", "l2"):
        s, (fc, cyc) = got[(norm, "ecp5")], meta[norm]
        e = got.get((norm, "energy"))
        out[norm] = {"lut": s["lut"], "ff": s["ff"], "dsp": s["dsp"], "fmax_mhz": s["fmax_mhz"],
                     "fmax_seeds": s["fmax_seeds"], "critical_path": s.get("critical_path"),
                     "latency_cycles": cyc, "latency_ns": round(cyc * 1000 / s["fmax_mhz"], 1),
                     "energy_per_element": round(e["energy"] / (fc.n * fc.channels), 1) if e else None}
    out["l1_over_l2"] = {k: (round(_ratio(out["l1"][k], out["l2"][k]), 3)
                             if _ratio(out["l1"][k], out["l2"][k]) is not None else None)
                         for k in ("lut", "ff", "dsp", "fmax_mhz", "latency_cycles", "latency_ns",
                                   "energy_per_element")}
    return out
