"""Gate-level simulation of the mapped NanGate45 netlist on Icarus, with cell models generated from
the library, and its per-net transition counts (the ``activity`` part of the ASIC step,
:mod:`l1bn.sim.asic.step`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from l1bn.sim.gatesim import run_tb, stream_tb_verilog, tb_connections, vcd_toggles, write_stim
from l1bn.sim.tools import require_iverilog

from .liberty import read_liberty
from .sram import parse_type, read_counts, sram_models

__all__ = ["cell_models", "flop_inits", "simulate"]


def _vexpr(f: str) -> str:
    return f.replace("!", "~")


def cell_models(names) -> str:
    """Verilog models (zero delay) of the library cells ``names``, from their Liberty functions.
    A flip-flop's state starts at its parameter ``INIT`` (default 0; :func:`flop_inits`)."""
    lib = read_liberty()["cells"]
    out = []
    macros = [n for n in names if parse_type(n)]
    for n in sorted(set(names) - set(macros)):
        c = lib[n]
        if c.get("icg"):
            out.append(_icg_model(n, c))
            continue
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
            lines += ["  parameter INIT = 1'b0;", f"  reg {q} = INIT;", f"  wire {qn} = ~{q};",
                      f"  always @({' or '.join(sens)}) {' '.join(body)} {q} <= {_vexpr(ff['next_state'])};"]
        for p in outs:
            fn = c["pins"][p]["function"]
            if fn is None:
                raise ValueError(f"cell {n} pin {p} has no function: not simulated")
            fn = {"0": "1'b0", "1": "1'b1"}.get(fn, fn)
            lines.append(f"  assign {p} = {_vexpr(fn)};")
        lines.append("endmodule")
        out.append("\n".join(lines))
    if macros:
        out.append(sram_models(macros))
    return "\n\n".join(out) + "\n"


def flop_inits(top: dict) -> dict:
    """``{cell name: 1}`` for the flip-flops of the flat netlist ``top`` whose state starts at 1:
    the ``init`` attributes that Yosys keeps on the nets of their outputs (an Amaranth register
    that is never reset, a small memory with initial contents mapped to flip-flops). A library
    flip-flop has no initial value, so a gate-level simulation gives it this one through the
    models' ``INIT`` parameter (:func:`cell_models`), as the SRAM macros get their initial words."""
    init = {}
    for n in top.get("netnames", {}).values():
        v = n.get("attributes", {}).get("init")
        if v is None:
            continue
        for b, x in zip(n["bits"], reversed(v.rjust(len(n["bits"]), "x") if isinstance(v, str) else
                                            format(int(v), "b").rjust(len(n["bits"]), "0")), strict=False):
            if not isinstance(b, str) and x in "01":
                init[b] = int(x)
    lib = read_liberty()["cells"]
    out = {}
    for cname, c in top["cells"].items():
        ff = lib.get(c["type"], {}).get("ff")
        if not ff:
            continue
        pins = lib[c["type"]]["pins"]
        for p, bs in c["connections"].items():
            fn = pins[p]["function"] if pins[p]["dir"] == "output" else None
            if fn in (ff["q"], ff["qn"]) and not isinstance(bs[0], str) and bs[0] in init:
                if init[bs[0]] ^ (fn == ff["qn"]):
                    out[cname] = 1
                break
    return out


def _icg_model(name: str, c: dict) -> str:
    """Zero-delay model of an integrated clock gate of kind ``latch_posedge`` (the Liberty gives
    it as a statetable, no ``function``): a latch, transparent while the clock is low, holds the
    enable (or the test enable); ``GCK = CK & latch``. A flip-flop on GCK sees a rising edge only
    in the cycles whose enable was high before the clock rose, and in the same time step as the
    flip-flops on the clock (before any of them updates), so the gated ones sample the same data."""
    if c["icg"] != "latch_posedge":
        raise ValueError(f"cell {name}: clock gate kind {c['icg']!r} is not modelled")
    role = {v.get("gate_role"): p for p, v in c["pins"].items()}
    ck, gck = role["clock"], role["out"]
    en = " | ".join(p for p, v in c["pins"].items() if v.get("gate_role") in ("enable", "test"))
    ins = [p for p, v in c["pins"].items() if v["dir"] == "input"]
    return "\n".join([f"module {name}({', '.join(ins + [gck])});", *(f"  input {p};" for p in ins),
                      f"  output {gck};", "  reg IQ = 1'b0;", f"  always @* if (!{ck}) IQ = {en};",
                      f"  assign {gck} = {ck} & IQ;", "endmodule"])


def _vectors_tb(port_list, layout, stim_width: int, nvec: int, period: int = 10) -> str:
    """Testbench of "vectors" mode: vector k on the inputs from k*period; the outputs it settled
    to are written to ``out.txt`` (one line per vector, output ports in port order, hex)."""
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
    require_iverilog()
    sim = wd / "sim"
    sim.mkdir(parents=True, exist_ok=True)
    top = netlist["modules"]["top"]
    port_list = [(k, "in" if p["direction"] == "input" else "out", len(p["bits"])) for k, p in top["ports"].items()]
    widths = {n: b for n, _d, b in port_list}
    layout, sw = write_stim(sim, beats, widths)
    if mode == "stream":
        tb = stream_tb_verilog(port_list, main, len(beats), sw, layout, expect_out, out,
                         max_cycles or 10 * len(beats) + 10000)
        # only the netlist's own nets: the cell models' ports would repeat every net
        tb2 = tb.replace("$dumpvars(0, dut);", "$dumpvars(1, dut);")
        if tb2 == tb:
            raise RuntimeError("gatesim.stream_tb_verilog changed: no '$dumpvars(0, dut);' to restrict")
        tb = tb2
        # every output beat's payload, in order (the test of bit-exactness at gate level)
        hook = f"if ({out}__valid) begin nout <= nout + 1;"
        if hook not in tb or f"{out}__payload" not in widths:
            raise RuntimeError("gatesim.stream_tb_verilog changed: no output beat to record")
        tb = tb.replace("integer p = 0,", 'integer fo = 0, p = 0,').replace(
            "$readmemh(\"stim.hex\", stim);", "$readmemh(\"stim.hex\", stim);\n    fo = $fopen(\"out.txt\", \"w\");").replace(
            hook, f'if ({out}__valid) begin $fdisplay(fo, "%h", {out}__payload); nout <= nout + 1;').replace(
            "$finish;", "$fclose(fo); $finish;")
    else:
        tb = _vectors_tb(port_list, layout, sw, len(beats))
    (sim / "tb.v").write_text(tb)
    shutil.copy(wd / "netlist.v", sim / "netlist.v")
    types = {c["type"] for c in top["cells"].values()}
    (sim / "cells.v").write_text(cell_models(types))
    (sim / "sram.txt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    first, last, nin, nout, cycles = run_tb(sim, ["tb.v", "netlist.v", "cells.v"])
    if mode == "stream" and nout != expect_out:
        raise RuntimeError(f"gate-level simulation: {nout} of {expect_out} output beats in {cycles} cycles ({sim})")
    t1 = time.perf_counter()
    counts = vcd_toggles(sim / "dump.vcd")
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
    if mode == "stream":    # the output beats' payloads
        outputs = [int(x, 16) if set(x) <= set("0123456789abcdef") else None
                   for x in (sim / "out.txt").read_text().split()]
    if mode == "vectors":   # the values the mapped netlist computed, one list per vector
        outputs = [[int(x, 16) if set(x) <= set("0123456789abcdef") else None for x in line.split()]
                   for line in (sim / "out.txt").read_text().splitlines()]
    srams = read_counts(sim / "sram.txt") if (sim / "sram.txt").exists() else {}
    return {"toggles": toggles, "outputs": outputs, "sram_accesses": srams, "cycles_total": cycles, "cycles": last - first + 1, "first_in_cycle": first,
            "last_out_cycle": last, "beats_in": nin, "beats_out": nout, "sim_s": round(t1 - t0, 2),
            "vcd_s": round(time.perf_counter() - t1, 2)}
