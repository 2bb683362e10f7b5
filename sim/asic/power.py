"""The power model of the ASIC flow: energy of a netlist's transitions and its leakage, from the
library's tables (the ``energy`` part of the ASIC step, :mod:`l1bn.sim.asic.step`)."""

from __future__ import annotations

from .liberty import WIRE_LOAD, avg_internal_energy, lookup, read_liberty, wire_cap
from .sram import cells_with_macros

__all__ = ["NOMINAL_SLEW_NS", "first_instance", "power_model", "net_coefficients", "apply_coefficients"]

NOMINAL_SLEW_NS = 0.02


def first_instance(name: str) -> str:
    """First instance of a flattened name (``stats._12_`` -> ``stats``); top-level: ``top``."""
    name = name.lstrip("\\")
    return name.split(".", 1)[0] if "." in name and not name.startswith("$") else "top"


def _net_electrics(top: dict, clock_bits: set) -> tuple:
    """(cells, V^2, drivers, cap, slew) of the flat module ``top``: the library's cells (SRAM macros
    added), each net bit's driver (cell, pin), load capacitance (pins, output ports, wire load) and
    transition time (ns). Shared by :func:`power_model` and :func:`net_coefficients`."""
    lib = read_liberty()
    cells = cells_with_macros(lib["cells"], {c["type"] for c in top["cells"].values()})
    wl = lib["wire_load"][WIRE_LOAD]
    dcap = cells["DFF_X1"]["pins"]["D"]["cap"]
    drivers, loads = {}, {}
    for cname, c in top["cells"].items():
        lc = cells[c["type"]]
        for pin, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, str):
                    continue
                if lc["pins"][pin]["dir"] == "output":
                    drivers[b] = (cname, pin)
                else:
                    loads.setdefault(b, []).append((cname, pin))
    ext = {}
    for p in top["ports"].values():
        if p["direction"] == "output":
            for b in p["bits"]:
                if not isinstance(b, str):
                    ext[b] = ext.get(b, 0) + 1
    cap = {}
    for b in set(drivers) | set(loads) | set(ext):
        ld = loads.get(b, [])
        fo = len(ld) + ext.get(b, 0)
        cap[b] = (sum(cells[top["cells"][cn]["type"]]["pins"][p]["cap"] for cn, p in ld) + ext.get(b, 0) * dcap
                  + wire_cap(wl, fo))

    def out_slew(b):
        d = drivers.get(b)
        if d is None:
            return NOMINAL_SLEW_NS
        tr = cells[top["cells"][d[0]]["type"]]["pins"][d[1]]["transition"]
        if not tr:
            return NOMINAL_SLEW_NS
        vals = [lookup(t, NOMINAL_SLEW_NS, cap[b]) for arc in tr for t in arc.values()]
        return sum(vals) / len(vals)

    # the clock nets are ideal, the gated ones as the root (no clock tree is built): the nominal
    # transition time, not that of one gate driving hundreds of clock pins
    slew = {b: NOMINAL_SLEW_NS if b in clock_bits else out_slew(b) for b in cap}
    return cells, lib["voltage"] ** 2, drivers, cap, slew


def power_model(netlist: dict, toggles: dict, *, clock_bits=(), scope=first_instance) -> dict:
    """Energy (fJ) of the transitions ``toggles`` ({bit: count}) of the flat ``netlist``, and
    leakage (nW), per first-level instance (or per ``scope(cell name)``: a net's energy goes to
    its driver's scope, a net without a driver, an input port's, to ``scope("")``). See the module
    docstring for the model."""
    top = netlist["modules"]["top"]
    clock_bits = set(clock_bits)
    cells, v2, drivers, cap, slew = _net_electrics(top, clock_bits)
    per = {}

    def add(scope, key, val):
        s = per.setdefault(scope, {"switching_fj": 0.0, "internal_fj": 0.0, "clock_fj": 0.0, "leakage_nw": 0.0,
                                   "area_um2": 0.0, "cells": 0})
        s[key] += val

    for cname, c in top["cells"].items():
        lc = cells[c["type"]]
        sc = scope(cname)
        add(sc, "leakage_nw", lc["leakage_nw"])
        add(sc, "area_um2", lc["area"])
        add(sc, "cells", 1)
        in_bits = [b for p, bits in c["connections"].items() if lc["pins"][p]["dir"] == "input"
                   for b in bits if not isinstance(b, str)]
        in_slew = sum(slew.get(b, NOMINAL_SLEW_NS) for b in in_bits) / len(in_bits) if in_bits else NOMINAL_SLEW_NS
        for pin, bits in c["connections"].items():
            pl = lc["pins"][pin]
            for b in bits:
                if isinstance(b, str):
                    continue
                n = toggles.get(b, 0)
                if not n or not pl["power"]:
                    continue
                if pl["dir"] == "output":
                    e = n * avg_internal_energy(pl["power"], in_slew, cap[b])
                else:
                    e = n * avg_internal_energy(pl["power"], slew.get(b, NOMINAL_SLEW_NS), 0.0)
                add(sc, "clock_fj" if b in clock_bits else "internal_fj", e)
    for b, c in cap.items():
        n = toggles.get(b, 0)
        if not n:
            continue
        d = drivers.get(b)
        sc = scope(d[0] if d else "")
        add(sc, "clock_fj" if b in clock_bits else "switching_fj", n * 0.5 * c * v2)
    return per


def net_coefficients(netlist: dict, *, clock_bits=(), scope=first_instance) -> dict:
    """The energy of one 0<->1 transition of each net of the flat ``netlist``, split as
    :func:`power_model` splits it: {bit: [(scope, key, fJ), ...]} with key ``switching_fj``,
    ``internal_fj`` or ``clock_fj``. The model is linear in the transition counts, so
    :func:`apply_coefficients` of these on any counts equals :func:`power_model` on them, and many
    sets of counts (windows of a long simulation) cost one pass over the netlist."""
    every = {}
    top = netlist["modules"]["top"]
    for c in top["cells"].values():
        for bits in c["connections"].values():
            for b in bits:
                if not isinstance(b, str):
                    every[b] = 1
    for p in top["ports"].values():
        for b in p["bits"]:
            if not isinstance(b, str):
                every[b] = 1
    out = {}
    for b in every:
        out[b] = []
    # one transition on every net, scope by scope and net by net: power_model with a scope that
    # names the net as well (its per-net terms are independent of the other nets' counts)
    clock_bits = set(clock_bits)
    cells, v2, drivers, cap, slew = _net_electrics(top, clock_bits)
    for cname, c in top["cells"].items():
        lc = cells[c["type"]]
        sc = scope(cname)
        in_bits = [b for p, bits in c["connections"].items() if lc["pins"][p]["dir"] == "input"
                   for b in bits if not isinstance(b, str)]
        in_slew = sum(slew.get(b, NOMINAL_SLEW_NS) for b in in_bits) / len(in_bits) if in_bits else NOMINAL_SLEW_NS
        for pin, bits in c["connections"].items():
            pl = lc["pins"][pin]
            if not pl["power"]:
                continue
            for b in bits:
                if isinstance(b, str):
                    continue
                if pl["dir"] == "output":
                    e = avg_internal_energy(pl["power"], in_slew, cap[b])
                else:
                    e = avg_internal_energy(pl["power"], slew.get(b, NOMINAL_SLEW_NS), 0.0)
                out.setdefault(b, []).append((sc, "clock_fj" if b in clock_bits else "internal_fj", e))
    for b, cb in cap.items():
        d = drivers.get(b)
        sc = scope(d[0] if d else "")
        out.setdefault(b, []).append((sc, "clock_fj" if b in clock_bits else "switching_fj", 0.5 * cb * v2))
    return out


def apply_coefficients(coef: dict, toggles: dict) -> dict:
    """{scope: {switching_fj, internal_fj, clock_fj}} of the transition counts ``toggles``
    ({bit: count}, counts may be fractional or negative) with :func:`net_coefficients`."""
    per = {}
    for b, n in toggles.items():
        if not n:
            continue
        for sc, key, e in coef.get(b, ()):
            s = per.setdefault(sc, {"switching_fj": 0.0, "internal_fj": 0.0, "clock_fj": 0.0})
            s[key] += n * e
    return per
