"""``l1bn report --network``: an estimate of one training step of a whole network, built from
measured parts.

Nothing here is measured anew. The estimate multiplies the operation counts of one training step
(:func:`l1bn.spec.opcount.step_counts`) by the per-unit costs that the flows measured and wrote
into their JSON files:

- BN forward and backward units, per norm, at one width: ``report.json`` of ``l1bn report``
  (FPGA: fan-out-weighted toggle energy per element, nextpnr median Fmax) and of
  ``l1bn report --target asic`` (NanGate45 pJ per element, OpenSTA Fmax); ``--target both``
  writes both into one file;
- MACs: ``results.json`` of ``l1bn sweep --design mac`` (the same two flows on a
  :class:`~l1bn.hw.mac_array.MACArray`: energy per MAC and Fmax, per target).

Energy model, per target and norm::

    E = MACs * e_mac + BN elements * (e_fwd + e_bwd)

``e_fwd``, ``e_bwd`` are the units' measured energy per element at the report's ``n`` (their
per-channel work, mean, sigma, square root or constant multiply, reciprocal, the backward's
per-channel steps, is amortized over those ``n`` elements, as measured). The networks' channels
hold far more elements (``batch * H * W``), so a second figure drops the forward
sigma/reciprocal stage (``*_no_recip``: its energy per element from the report's stage table):
the truth at large ``n`` lies between the two.

Latency model (serial): one MAC array (the swept one; or ``mac_arrays`` copies sharing the MACs),
one BN forward unit and one BN backward unit (or ``bn_units`` of each, the channels of a layer split
evenly), each at its own measured Fmax, one operator class after the other: the batch statistics are a barrier between a layer's MACs and the next layer's (no
output of a channel can be normalized before its last accumulator is in), and the backward's pass 1
one before its pass 2. MAC cycles: the array's steady state, ``tile_period / (rows * cols * K)``
per MAC (the sweep's measured cycles equal ``stream_cycles``; checked). BN cycles: the units' own
latency formulas (``bn_latency_cycles``, ``backward_latency_cycles``, equal to the gate-level
cycles at the report's shape; checked) evaluated at each layer's channels and ``n``.

Not priced (counted, and printed per 1000 MACs): parameter updates, ReLU and activation quantizers,
pooling, residual adds, the loss gradient. A norm whose backward unit the report does not hold
(a norm without ``hw_backward``, or a report measured before its unit existed: range BN's before
``RangeBNBackwardUnit``) is given twice, with the featured norm's backward cost (``FEATURED``, L1:
``range``; the nearest measured datapath for range: the same pass 1, and in pass 2 a
compare-and-select of per-channel constants instead of L1's sign select) and with the baseline's
(``range_fwd_only``: only the measured forward difference counts). A report that holds the norm's
own backward unit gives one row, measured.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from l1bn.spec.netshape import network_shape
from l1bn.spec.norms import FEATURED
from l1bn.spec.opcount import step_counts

from .format import md_header, md_row
from .units import BASELINE, NORMS, backward_config, forward_config

__all__ = ["TARGETS", "load_costs", "report_widths", "estimate", "estimate_networks", "estimate_markdown",
           "write_estimate", "mac_point_name", "variant_label"]

TARGETS = ("fpga", "asic")

#: per target: the unit report's energy key, the sweep's energy key, the energy unit's name
_KEYS = {"fpga": ("energy_per_element", "energy_per_mac", "toggle units (relative)"),
         "asic": ("energy_pj_per_element", "energy_pj_per_mac", "pJ")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {p} is not JSON ({' '.join(str(e).split())})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what} {p} is not a JSON object")
    return d


def _unit_reports(paths) -> dict:
    """``{"fpga": (report, path, key), "asic": (...)}`` from report.json files of ``l1bn report``
    (FPGA, ``--target asic``, or ``--target both``, whose ASIC report is under the key "asic")."""
    out = {}
    for path in paths:
        d = _read_json(path, "report")
        if not isinstance(d.get("widths"), dict) or not isinstance(d.get("params"), dict):
            raise ValueError(f"report {path} is not a report.json of `l1bn report` (no widths or params)")
        found = [("asic", d, "")] if d.get("target") == "asic" else [("fpga", d, "")] + (
            [("asic", d["asic"], "asic")] if isinstance(d.get("asic"), dict) else [])
        for target, rep, key in found:
            if target in out:
                raise ValueError(f"two {target.upper()} reports given: {out[target][1]} and {path}")
            out[target] = (rep, Path(path), key)
    return out


def report_widths(paths) -> tuple[int, ...]:
    """The widths every report in ``paths`` holds (sorted)."""
    reps = _unit_reports(paths)
    common = None
    for rep, _, _ in reps.values():
        ws = {int(w) for w in rep["widths"]}
        common = ws if common is None else common & ws
    return tuple(sorted(common or ()))


def mac_point_name(p: dict) -> str:
    """A sweep point's short name: ``4x4w8a8``."""
    return f"{p['rows']}x{p['cols']}w{p['wbits']}a{p['abits']}"


def _num(v, where: str, *, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{where} is {v!r}; a measured {'positive ' if positive else ''}number is needed")
    return float(v)


def _malformed(what: str, path, fn, *args):
    """``fn(*args)``, with a file whose structure is not the expected one (a missing key, a list
    for a dict, ...) reported as one ``ValueError`` naming it."""
    try:
        return fn(*args)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{what} {path} is malformed ({type(e).__name__}: {e})") from None


def _bn_unit(rep: dict, path: Path, target: str, width: int, kind: str, norm: str) -> dict:
    return _malformed("report", path, _bn_unit_of, rep, path, target, width, kind, norm)


def _bn_unit_of(rep: dict, path: Path, target: str, width: int, kind: str, norm: str) -> dict:
    wr = rep["widths"].get(str(width))
    if wr is None:
        have = ", ".join(rep["widths"])
        raise ValueError(f"report {path} has no width {width} (it has {have})")
    unit = wr.get(kind, {}).get(norm)
    if not isinstance(unit, dict):
        extra = " (run `l1bn report` without --no-backward)" if kind == "backward" and kind not in wr else ""
        raise ValueError(f"report {path} has no {kind} {norm} unit at width {width}{extra}")
    where = f"report {path}: widths.{width}.{kind}.{norm}"
    fmax = unit.get("fmax_mhz")
    if fmax is None:
        raise ValueError(f"{where} has no Fmax (a --no-pnr report); the latency needs it")
    out = {"energy": _num(unit.get(_KEYS[target][0]), f"{where}.{_KEYS[target][0]}"),
           "fmax_mhz": _num(fmax, f"{where}.fmax_mhz"),
           "cycles": int(_num(unit.get("latency_cycles"), f"{where}.latency_cycles")),
           "cycles_formula": unit.get("latency_cycles_formula"),
           "elements": int(_num(unit.get("elements"), f"{where}.elements")), "source": f"widths.{width}.{kind}.{norm}"}
    if kind == "forward":
        st = wr.get("stages", {}).get("recip", {}).get(norm)
        e = st.get(_KEYS[target][0]) if isinstance(st, dict) else None
        out["recip_energy"] = _num(e, f"{where} recip stage", positive=False) if e is not None else None
    return out


def _mac_costs(path, target: str, point: str | None) -> dict:
    return _malformed("MAC sweep", path, _mac_costs_of, path, target, point)


def _mac_costs_of(path, target: str, point: str | None) -> dict:
    from l1bn.hw.mac_array import stream_cycles, tile_period
    from l1bn.sim.sweep.grid import MAC_TILES
    from l1bn.spec.config import MACConfig

    d = _read_json(path, "MAC sweep")
    if d.get("design") != "mac" or not isinstance(d.get("points"), list):
        raise ValueError(f"MAC sweep {path} is not a results.json of `l1bn sweep --design mac`")
    pts = [p for p in d["points"] if isinstance(p, dict) and p.get("target") == target and p.get("status") == "ok"]
    if point is not None:
        pts = [p for p in pts if mac_point_name(p) == point]
    names = sorted({mac_point_name(p) for p in pts})
    if len(pts) != 1:
        if not pts:
            raise ValueError(f"MAC sweep {path} has no measured {target} point"
                             + (f" named {point}" if point else ""))
        raise ValueError(f"MAC sweep {path} has {len(pts)} {target} points ({', '.join(names)}); "
                         "choose one with --mac-point")
    p = pts[0]
    where = f"MAC sweep {path}: {mac_point_name(p)} {target}"
    k = int(_num(d.get("mac_k"), f"MAC sweep {path}: mac_k"))
    cfg = MACConfig(rows=p["rows"], cols=p["cols"], wbits=p["wbits"], abits=p["abits"], k=k)
    cycles = int(_num(p.get("cycles"), f"{where}.cycles"))
    return {"energy": _num(p.get(_KEYS[target][1]), f"{where}.{_KEYS[target][1]}"),
            "fmax_mhz": _num(p.get("fmax_mhz"), f"{where}.fmax_mhz"),
            "point": mac_point_name(p), "pes": cfg.rows * cfg.cols,
            "cycles_per_mac": tile_period(cfg, k) / (cfg.rows * cfg.cols * k),
            "cycles_measured": cycles, "cycles_formula": stream_cycles(cfg, k, MAC_TILES),
            "flow_version": d.get("flow_version")}


def load_costs(reports, mac_json, *, width: int, mac_point: str | None = None) -> dict:
    """The per-unit costs of every target that both the unit reports and the MAC sweep measured.

    Returns ``{target: {"mac": {...}, "forward": {norm: {...}}, "backward": {norm: {...}},
    "sources": {...}}}``. Raises ``ValueError`` (one line, naming the file) for a missing unit,
    width, Fmax or energy, or files of different flow versions."""
    reps = _unit_reports(reports)
    if not reps:
        raise ValueError("give at least one report.json (--from-json)")
    mac_path = Path(mac_json)
    out = {}
    for target in TARGETS:
        if target not in reps:
            continue
        rep, path, key = reps[target]
        mac = _mac_costs(mac_path, target, mac_point)
        if mac["flow_version"] != rep.get("flow_version"):
            raise ValueError(f"report {path} (flow version {rep.get('flow_version')}) and MAC sweep {mac_path} "
                             f"(flow version {mac['flow_version']}) were measured by different flows; rerun one")
        fwd = {nm: _bn_unit(rep, path, target, width, "forward", nm) for nm in NORMS}
        # the baseline and the featured norm's units are needed (ratios, stand-ins); another norm's
        # is taken where the report holds it, and assumed (_variants) where not
        have = rep["widths"].get(str(width), {}).get("backward", {})
        bwd = {nm: _bn_unit(rep, path, target, width, "backward", nm)
               for nm in NORMS if nm in (BASELINE, FEATURED) or nm in have}
        out[target] = {"mac": mac, "forward": fwd, "backward": bwd, "params": rep["params"],
                       "sources": {"report": str(path), "report_sha256": _sha256(path),
                                   "report_key": key, "mac_sweep": str(mac_path),
                                   "mac_sweep_sha256": _sha256(mac_path),
                                   "flow_version": rep.get("flow_version")}}
    return out


def _bn_cycles(kind: str, norm: str, width: int, *, n: int, channels: int, lanes: int, cache: dict) -> int:
    """The unit's latency formula at a layer's shape (one unit, its channels one after another)."""
    key = (kind, norm, width, n, channels, lanes)
    if key not in cache:
        if kind == "forward":
            from l1bn.hw.bn_unit import bn_latency_cycles

            if n % lanes:
                raise ValueError(f"lanes={lanes} of the report does not divide a layer's n={n}")
            cache[key] = bn_latency_cycles(forward_config(norm, width, n=n, lanes=lanes, channels=channels))
        else:
            from l1bn.hw.bn_backward import backward_latency_cycles

            cache[key] = backward_latency_cycles(backward_config(norm, width, n=n, channels=channels))
    return cache[key]


def _variants(costs: dict) -> dict:
    """Norm -> (forward unit, backward unit, what is assumed): every norm whose backward unit is
    measured, and a norm whose is not (no ``hw_backward``, or a report from before its unit) twice:
    with the featured norm's backward and with the baseline's."""
    out = {}
    for nm in NORMS:
        if nm in costs["backward"]:
            out[nm] = (nm, nm, None)
        else:
            why = f"no {nm} backward unit measured"
            out[nm] = (nm, FEATURED, f"{why}: the {FEATURED.upper()} backward unit's cost is assumed")
            out[f"{nm}_fwd_only"] = (nm, BASELINE, f"{why}: {BASELINE.upper()}'s backward cost "
                                                   "(only the measured forward difference counts)")
    return out


def estimate(counts, costs: dict, *, width: int, bn_units: int = 1, mac_arrays: int = 1) -> dict:
    """One target's estimate of one network's step: per norm variant the energy and latency of the
    MACs, BN forward and BN backward, BN's share, and the ratios to L2.

    ``counts``: :class:`~l1bn.spec.opcount.StepCounts`; ``costs``: one target of :func:`load_costs`;
    ``bn_units`` BN forward and backward units share each layer's channels, ``mac_arrays`` copies of
    the swept MAC array share its MACs (energy unchanged). Energy in the target's unit (FPGA
    toggles, ASIC pJ); latency in microseconds.
    """
    mac = costs["mac"]
    lanes = int(costs["params"].get("lanes", 1))
    bn_layers = [la for la in counts.layers if la.bn_channels]
    macs = counts.total("macs")
    bn_elems = counts.total("bn_elements")
    cache: dict = {}
    e_mac = macs * mac["energy"]
    t_mac = macs * mac["cycles_per_mac"] / mac["fmax_mhz"] / mac_arrays
    res = {}
    for var, (fn, bn_, assumed) in _variants(costs).items():
        f, b = costs["forward"][fn], costs["backward"][bn_]
        fwd_cyc = bwd_cyc = 0
        for la in bn_layers:
            n, ch = counts.batch * la.positions, math.ceil(la.bn_channels / bn_units)
            try:
                fwd_cyc += _bn_cycles("forward", fn, width, n=n, channels=ch, lanes=lanes, cache=cache)
                bwd_cyc += _bn_cycles("backward", bn_, width, n=n, channels=ch, lanes=lanes, cache=cache)
            except ValueError as e:
                raise ValueError(f"{counts.network} {la.name} (n={n}, {ch} channels per unit): {e}") from None
        energy = {"mac": e_mac, "bn_forward": bn_elems * f["energy"], "bn_backward": bn_elems * b["energy"]}
        latency = {"mac": t_mac, "bn_forward": fwd_cyc / f["fmax_mhz"], "bn_backward": bwd_cyc / b["fmax_mhz"]}
        no_recip = None
        if f.get("recip_energy") is not None:
            no_recip = energy["mac"] + bn_elems * (f["energy"] - f["recip_energy"]) + energy["bn_backward"]
        et, lt = sum(energy.values()), sum(latency.values())
        res[var] = {"forward_unit": fn, "backward_unit": bn_, "assumed": assumed,
                    "energy": energy, "energy_total": et,
                    "bn_energy_share": (energy["bn_forward"] + energy["bn_backward"]) / et,
                    "energy_total_no_recip": no_recip,
                    "latency_us": latency, "latency_total_us": lt,
                    "bn_latency_share": (latency["bn_forward"] + latency["bn_backward"]) / lt,
                    "bn_cycles": {"forward": fwd_cyc, "backward": bwd_cyc}}
    base = res[BASELINE]
    for r in res.values():
        r["energy_over_l2"] = r["energy_total"] / base["energy_total"]
        r["latency_over_l2"] = r["latency_total_us"] / base["latency_total_us"]
        bn_e = r["energy"]["bn_forward"] + r["energy"]["bn_backward"]
        r["bn_energy_over_l2"] = bn_e / (base["energy"]["bn_forward"] + base["energy"]["bn_backward"])
        bn_t = r["latency_us"]["bn_forward"] + r["latency_us"]["bn_backward"]
        r["bn_latency_over_l2"] = bn_t / (base["latency_us"]["bn_forward"] + base["latency_us"]["bn_backward"])
        r["energy_over_l2_no_recip"] = (r["energy_total_no_recip"] / base["energy_total_no_recip"]
                                        if r["energy_total_no_recip"] and base["energy_total_no_recip"] else None)
    return res


def _checks(costs: dict) -> list[str]:
    """The latency formulas against the measured cycles the estimate relies on."""
    lines = []
    m = costs["mac"]
    if m["cycles_measured"] != m["cycles_formula"]:
        lines.append(f"MAC array {m['point']}: measured {m['cycles_measured']} cycles, formula {m['cycles_formula']}")
    for kind in ("forward", "backward"):
        for nm, u in costs[kind].items():
            if u["cycles_formula"] is not None and u["cycles"] != u["cycles_formula"]:
                lines.append(f"{kind} {nm}: measured {u['cycles']} cycles, formula {u['cycles_formula']}")
    return lines


def estimate_networks(networks, costs_by_target: dict, *, width: int, batch: int = 64, bn_units: int = 1,
                      mac_arrays: int = 1) -> dict:
    """The whole estimate: per network its counts and, per target, :func:`estimate`."""
    from l1bn.spec.config import check_int

    check_int("batch", batch, 1, 65536)
    check_int("bn_units", bn_units, 1, 4096)
    check_int("mac_arrays", mac_arrays, 1, 4096)
    out = {"kind": "network_estimate", "label": "estimate built from measured parts (not a measured step)",
           "width": width, "batch": batch, "bn_units": bn_units, "mac_arrays": mac_arrays,
           "latency_model": "serial: mac_arrays MAC arrays (the swept one), bn_units BN forward and bn_units "
                            "BN backward units, each at its own measured Fmax, one operator class after "
                            "the other",
           "targets": {}, "networks": {}}
    for target, c in costs_by_target.items():
        bad = _checks(c)
        if bad:
            raise ValueError("a latency formula differs from the measurement: " + "; ".join(bad))
        out["targets"][target] = {
            "energy_unit": _KEYS[target][2], "sources": c["sources"],
            "mac": {k: c["mac"][k] for k in ("point", "pes", "energy", "fmax_mhz", "cycles_per_mac",
                                             "cycles_measured", "cycles_formula")},
            "report_n": c["params"].get("n"), "report_lanes": c["params"].get("lanes", 1),
            "units": {kind: {nm: {k: u[k] for k in ("energy", "fmax_mhz", "cycles", "elements", "source")}
                             | ({"recip_energy": u["recip_energy"]} if kind == "forward" else {})
                             for nm, u in c[kind].items()} for kind in ("forward", "backward")}}
    for name in networks:
        counts = step_counts(network_shape(name), batch=batch)
        t = counts.totals
        unpriced = {"updates": t["updates"], "act_elements": t["act_elements"], **counts.other}
        out["networks"][name] = {
            "counts": counts.to_dict(),
            "unpriced_per_1000_macs": {k: round(1000 * v / t["macs"], 4) for k, v in unpriced.items()},
            "targets": {target: estimate(counts, c, width=width, bn_units=bn_units, mac_arrays=mac_arrays)
                        for target, c in costs_by_target.items()}}
    return out


def _eng(v: float) -> str:
    """A compact number: 3 significant digits, engineering exponent above 1e4."""
    if v is None:
        return "-"
    if abs(v) >= 1e4:
        e = int(math.floor(math.log10(abs(v)) / 3) * 3)
        return f"{v / 10 ** e:.3g}e{e}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _r(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def variant_label(v: dict) -> str:
    """A norm variant's row label: ``L1``, ``L2``, or ``RANGE (bwd: L1's)`` where the backward
    unit is another norm's."""
    fn, bn_ = v["forward_unit"], v["backward_unit"]
    return fn.upper() if fn == bn_ else f"{fn.upper()} (bwd: {bn_.upper()}'s)"


def _summary_columns(est: dict) -> list[tuple[str, str, str]]:
    """(header, variant, key) of the summary's ratio columns: every variant but the baseline, in
    the order met, its energy and latency ratios (a forward-only variant's energy only)."""
    base, cols, seen = BASELINE.upper(), [], set()
    for nw in est["networks"].values():
        for r in nw["targets"].values():
            for var, v in r.items():
                if var == BASELINE or var in seen:
                    continue
                seen.add(var)
                fn, bn_ = v["forward_unit"], v["backward_unit"]
                if fn == bn_:
                    head, keys = f"{fn.upper()}/{base}", ("energy", "latency")
                else:
                    head = f"{fn}/{base}"
                    keys = ("energy",) if bn_ == BASELINE else ("energy", "latency")
                tail = "" if fn == bn_ else f" (bwd: {bn_.upper()}'s)"
                cols += [(f"{head} {k}{tail}", var, f"{k}_over_l2") for k in keys]
    return cols


def estimate_markdown(est: dict) -> str:
    """The estimate's tables: a summary (network x target) and, per network, every norm variant."""
    lines = [f"# Training step estimate, built from measured parts (not a measured step): width {est['width']}, "
             f"batch {est['batch']}", "",
             f"Latency model: {est['latency_model']} (mac_arrays = {est['mac_arrays']}, "
             f"bn_units = {est['bn_units']}).", ""]
    for target, t in est["targets"].items():
        m = t["mac"]
        lines.append(f"- {target.upper()}: BN units from {t['sources']['report']} (n = {t['report_n']}), "
                     f"MACs from {t['sources']['mac_sweep']} ({m['point']}: {_eng(m['energy'])} "
                     f"{t['energy_unit']}/MAC, {m['fmax_mhz']:.1f} MHz, {m['pes']} MACs/cycle); energy in "
                     f"{t['energy_unit']}.")
    cols = _summary_columns(est)
    base = BASELINE.upper()
    lines += ["", f"## Summary (ratios of the whole step to {base})", "",
              *md_header(["network", "target", "MACs/step", "BN elements/step", f"BN share of energy ({base})",
                          f"BN share of latency ({base})", *(h for h, _, _ in cols),
                          f"{FEATURED.upper()}/{base} energy, no recip"])]
    for name, nw in est["networks"].items():
        tot = nw["counts"]["totals"]
        for target, r in nw["targets"].items():
            lines.append(md_row([name, target.upper(), _eng(tot["macs"]), _eng(tot["bn_elements"]),
                                 _pct(r[BASELINE]["bn_energy_share"]), _pct(r[BASELINE]["bn_latency_share"]),
                                 *(_r(r.get(var, {}).get(key)) for _, var, key in cols),
                                 _r(r[FEATURED]["energy_over_l2_no_recip"])]))
    for name, nw in est["networks"].items():
        tot = nw["counts"]["totals"]
        lines += ["", f"## {name}: {len(nw['counts']['layers'])} MAC layers, {_eng(tot['macs'])} MACs "
                      f"({_eng(tot['fwd_macs'])} forward, {_eng(tot['igrad_macs'])} input-gradient, "
                      f"{_eng(tot['wgrad_macs'])} weight-gradient), {_eng(tot['bn_elements'])} BN elements in "
                      f"{tot['bn_channels']} channels, {_eng(tot['updates'])} parameter updates", "",
                  *md_header(["target", "norm", "energy", "MAC", "BN fwd", "BN bwd", "BN share", "latency us",
                              "MAC us", "BN fwd us", "BN bwd us", "BN share", "energy/L2", "latency/L2",
                              "BN energy/L2", "BN latency/L2"])]
        for target, r in nw["targets"].items():
            for v in r.values():
                e, lt = v["energy"], v["latency_us"]
                lines.append(md_row([target.upper(), variant_label(v), _eng(v["energy_total"]),
                                     _eng(e["mac"]), _eng(e["bn_forward"]), _eng(e["bn_backward"]),
                                     _pct(v["bn_energy_share"]), _eng(v["latency_total_us"]), _eng(lt["mac"]),
                                     _eng(lt["bn_forward"]), _eng(lt["bn_backward"]), _pct(v["bn_latency_share"]),
                                     _r(v["energy_over_l2"]), _r(v["latency_over_l2"]),
                                     _r(v["bn_energy_over_l2"]), _r(v["bn_latency_over_l2"])]))
        un = nw["unpriced_per_1000_macs"]
        lines += ["", "Not priced, per 1000 MACs: " + ", ".join(f"{k} {v:.3g}" for k, v in un.items() if v) + "."]
    notes = {variant_label(v): v["assumed"] for nw in est["networks"].values() for r in nw["targets"].values()
             for v in r.values() if v["assumed"]}
    if notes:
        lines += ["", "Assumed: " + "; ".join(f"{k}: {a}" for k, a in notes.items()) + "."]
    lines += ["", "Energy per element: as measured at the report's n (per-channel work amortized over it); "
              "'no recip': the forward sigma/reciprocal stage left out (the networks' channels hold "
              "batch x H x W elements, so the truth lies between the two)."]
    return "\n".join(lines) + "\n"


def write_estimate(est: dict, out) -> dict:
    """``estimate.json`` and ``estimate.md`` into ``out``, each written whole and renamed into place
    (a temporary name with the writer's pid, :func:`l1bn.spec.outdir.write_text_atomic`)."""
    from l1bn.spec.outdir import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in (("estimate.json", json.dumps(est, indent=1) + "\n"), ("estimate.md", estimate_markdown(est))):
        paths[name.split(".")[1]] = write_text_atomic(out / name, text)
    return paths
