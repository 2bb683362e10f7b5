"""NanGate45 figures of the whole training accelerator (issue 28): area, critical path and
gate-level energy per training step on real digits data, each by block, with the realism of the
unit report (clock gating through the library's clock gate, memories as SRAM macros with the
per-access model of :mod:`l1bn.sim.asic.sram`).

Method (docs/results.md, "NanGate45: the whole training accelerator"):

synthesis and timing
    the accelerator (RTLIL, so that the memories' initial contents are one parameter each) through
    :func:`~l1bn.sim.asic.synth.synth_liberty` with clock gating and SRAM macros; the training
    accelerator's memories also have initial contents (master weights, gamma, beta, the LFSR
    bank), lane-masked writes (the R-wide weight copies) and one transparent read port (the LFSR
    bank), so the macros here take those too (a preloaded, bit-masked macro; a masked write is
    charged one access). OpenSTA as in the unit flow (ports are register boundaries).
energy of one step, by windows
    A step is ``step_cycles`` (~384k) cycles; the gate-level simulation (Icarus, zero delay) runs
    the whole first step of a batch of real digits, but transitions are dumped only in windows: for
    every entry of the sequencer's program (:func:`l1bn.hw.train.schedule.schedule`: one engine
    run, ``cycles`` each) of at most ``2 * window`` cycles the whole entry, else two windows of
    ``window`` cycles, one at the entry's start and one in its middle. An entry's energy is the
    mean of its windows' energy per cycle times its cycles; its error bound is half the difference
    of its two windows times its cycles (0 for an entry simulated whole), and the step's bound is
    the sum of the entries'. SRAM accesses are counted per window the same way. Leakage: every
    cell's and macro's, over the step's cycles at the design's own minimum clock period.
    The step's logits at gate level are compared with the integer reference (``logits_equal``).

Blocks (:data:`ASIC_BLOCKS`, by instance path): MAC array (``mac.array``), MAC issue/write (the
rest of ``mac``), BN forward (``bnf*``), BN backward (``bnb*``), memories (``mem_*``: the shared
SRAM macros and their port multiplexers), update/prep/loss/quantizers/control (the rest), and the
root clock net with the input ports (nets without a driver cell).

Results are kept in ``<out>/<norm>/asic.json`` (keys: the design's RTLIL, the flow's parameters,
the stimulus and the window), so a rerun is a file read.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import shutil
import time
from pathlib import Path

__all__ = ["ASIC_BLOCKS", "TRAIN_ASIC_VERSION", "WINDOW", "asic_block_of", "train_windows", "window_toggles",
           "asic_synth_figures", "asic_energy_figures", "train_asic_figures"]

TRAIN_ASIC_VERSION = "1"
#: the gate-level simulation's version (in the energy figures' key): 2 = flip-flops start at their
#: initial values (before, at 0: the step's logits differed)
TRAIN_ASIC_ENERGY_VERSION = "2"

#: cycles per window (two per long program entry)
WINDOW = 128

#: (block, instance-path prefixes), first match wins
ASIC_BLOCKS = (("MAC array", ("mac.array.",)), ("MAC issue/write", ("mac.",)), ("BN forward", ("bnf",)),
               ("BN backward", ("bnb",)), ("memories", ("mem_",)),
               ("update, prep, loss, quantizers, control", ("",)))
CLOCK_ROOT = "clock root net, input ports"
BLOCK_NAMES = tuple(b for b, _ in ASIC_BLOCKS) + (CLOCK_ROOT,)

SRAM_OPTIONS = {"init": True, "transparent": True, "masked": True}

#: the flow's steps whose wall-clock seconds the figures record: (column, (figures, key))
FLOW_TIMES = (("synthesis", ("synth", "synth_s")), ("verilate", ("energy", "verilate_s")),
              ("compile", ("energy", "compile_s")), ("gate sim", ("energy", "sim_s")),
              ("VCD", ("energy", "vcd_s")), ("power", ("energy", "power_s")))


def asic_block_of(name: str) -> str:
    """The block of a flattened cell name (``mac.array._12_`` -> MAC array); ``""`` (a net
    without a driver cell: the root clock, the input ports) -> :data:`CLOCK_ROOT`."""
    if name == "":
        return CLOCK_ROOT
    n = name.lstrip("\\")
    for block, prefixes in ASIC_BLOCKS:
        if any(n.startswith(p) for p in prefixes):
            return block
    return ASIC_BLOCKS[-1][0]


def train_windows(sched: list[dict], *, window: int = WINDOW) -> list[dict]:
    """The simulation windows of a step's program ``sched`` (:func:`~l1bn.hw.train.schedule.schedule`):
    per entry ``entry`` (index), ``start``, ``end`` (cycles from the step's start, end exclusive).
    An entry of at most ``2 * window`` cycles is one window (the whole entry), a longer one two:
    its first ``window`` cycles and ``window`` cycles from its middle (after the first)."""
    out, t = [], 0
    for k, e in enumerate(sched):
        c = e["cycles"]
        if c <= 2 * window:
            out.append({"entry": k, "start": t, "end": t + c})
        else:
            mid = t + max(window, (c - window) // 2)
            out += [{"entry": k, "start": t, "end": t + window}, {"entry": k, "start": mid, "end": mid + window}]
        t += c
    return out


def window_toggles(path: Path, baselines=None) -> tuple[dict, list[dict]]:
    """``(ids, windows)`` of a VCD dumped in windows: ``ids`` = {code: [(scope, name, width)]},
    one dict per window {(code, bit): 0<->1 transitions}. A window is ``$dumpon`` .. ``$dumpoff``
    (the values these write are not transitions), or with ``baselines`` (a set of times) the
    dumps after a baseline time up to the next one: the values dumped at a baseline time are the
    state before the window, not transitions (a simulator that dumps only at the times it is
    asked writes there what changed since its previous dump)."""
    from l1bn.sim.gatesim import flipped_bits, vcd_changes, vcd_header

    ids, wins, cur = {}, [], None
    base = set(baselines or ())
    order = sorted(base)
    if base:
        wins = [{} for _ in order]
    with open(path) as f:
        for code, sc, name, width in vcd_header(f):
            ids.setdefault(code, []).append((sc, name, width))
        for code, old, new in vcd_changes(f):
            if code is not None:
                if cur is not None:
                    for i in flipped_bits(old, new, max(len(old), len(new))):
                        cur[(code, i)] = cur.get((code, i), 0) + 1
                continue
            line = old           # a time or a $ line
            if line[0] == "#":
                if base:
                    # window k: the times after baseline k up to baseline k + 1 (a dump without
                    # changes writes no time, so windows are found by time, not by the lines)
                    tm = int(line[1:])
                    cur = None if tm in base else wins[bisect.bisect_right(order, tm) - 1]
            elif line.startswith("$dumpon"):
                cur = {}
                wins.append(cur)
            elif line.startswith("$dumpoff"):
                cur = None
    return ids, wins


def _bit_map(ids: dict, top: dict, scope: str = "tb.dut") -> dict:
    """{(code, i): netlist bit} for the netlist's nets (``n<bit>``) and port bits in a VCD whose
    netlist instance is the scope ``scope``."""
    out = {}
    for code, vars_ in ids.items():
        for sc, name, width in vars_:
            if sc != scope:
                continue
            name = name.lstrip("\\").strip()
            if name.startswith("n") and name[1:].isdigit():
                out[(code, 0)] = int(name[1:])
            elif name in top["ports"]:
                for i, bit in enumerate(top["ports"][name]["bits"][:width]):
                    if not isinstance(bit, str):
                        out.setdefault((code, i), bit)
    return out


def _rtlil(acc) -> str:
    from amaranth.back import rtlil

    return rtlil.convert(acc, name="top")


def _key(*parts) -> str:
    return hashlib.sha256("\0".join(json.dumps(p, sort_keys=True, default=str) if not isinstance(p, str) else p
                                    for p in parts).encode()).hexdigest()[:20]


def _by_block(per: dict, keys) -> dict:
    out = {b: dict.fromkeys(keys, 0.0) for b in BLOCK_NAMES}
    for sc, v in per.items():
        for k in keys:
            out[sc][k] += v.get(k, 0.0)
    return out


def asic_synth_figures(text: str, wd: Path, *, synth: dict | None = None) -> dict:
    """NanGate45 synthesis (clock gating, SRAM macros) and OpenSTA of the RTLIL ``text`` in
    ``wd``: area (um^2: total, cells, macros, clock gates, per block), cells, flip-flops, the
    critical path (ns, start and end point and their blocks), the macros (type, width, depth)
    with their initial words written to ``wd/init/<n>.hex``."""
    from l1bn.sim.asic.liberty import read_liberty
    from l1bn.sim.asic.power import power_model
    from l1bn.sim.asic.sram import cells_with_macros, parse_type
    from l1bn.sim.asic.sta import sta_timing
    from l1bn.sim.asic.synth import synth_liberty

    t0 = time.perf_counter()
    if synth is None:   # (``synth``: the result of this synthesis, already run in ``wd``)
        synth = synth_liberty(text, wd, clock_gating=True, sram=True, rtlil=True, sram_options=SRAM_OPTIONS)
        synth["synth_s"] = round(time.perf_counter() - t0, 1)
    res = synth
    (wd / "top.il").unlink(missing_ok=True)
    netlist = json.loads((wd / "netlist.json").read_text())
    top = netlist["modules"]["top"]
    macros = sorted({c["type"] for c in top["cells"].values() if parse_type(c["type"])})
    res.update(sta_timing(wd, has_clock=True, macros=set(macros)))
    res["path_from_block"] = asic_block_of(res["path_from"].split("/")[0])
    res["path_to_block"] = asic_block_of(res["path_to"].split("/")[0])
    per = power_model(netlist, {}, scope=asic_block_of)
    res["blocks"] = {b: {"area_um2": round(v["area_um2"], 1), "leakage_nw": round(v["leakage_nw"], 1),
                         "cells": int(v["cells"])} for b, v in _by_block(per, ("area_um2", "leakage_nw", "cells")).items()}
    res["leakage_nw"] = round(sum(v["leakage_nw"] for v in per.values()), 1)
    lib = cells_with_macros(read_liberty()["cells"], set(macros))
    ff = {c["type"] for c in top["cells"].values() if lib[c["type"]]["ff"]}
    res["seq_area_um2"] = round(sum(lib[c["type"]]["area"] for c in top["cells"].values() if c["type"] in ff), 1)
    # the macros by instance path, their initial words as $readmemh files for the simulation
    init = wd / "init"
    init.mkdir(exist_ok=True)
    by_cell = {}
    for s in res.pop("srams", []):
        words = s.pop("init", None)
        by_cell.setdefault(s["cell"], []).append((s, words))
    inst = []
    for cname, c in sorted(top["cells"].items()):
        if not parse_type(c["type"]):
            continue
        w, d, _r, _w = parse_type(c["type"])
        path = cname.lstrip("\\")
        leaf = path.rsplit(".", 1)[-1]
        module = path.rsplit(".", 1)[0] if "." in path else "top"
        # several modules hold a memory of the same name: the module of instance path a.b is top.a.b
        want = "top" if module == "top" else f"top.{module}"
        match = next((x for x in by_cell.get(leaf, []) if x[0]["module"].lstrip("\\") == want), None)
        row = {"cell": path, "type": c["type"], "width": w, "depth": d, "block": asic_block_of(path)}
        if match is not None and match[1]:
            f = init / f"m{len(inst)}.hex"
            f.write_text("".join(f"{v:x}\n" for v in match[1]))
            row["init_file"] = f.name
        inst.append(row)
    res["macros"] = inst
    return res


_MAIN_CPP = r"""// one training step of the netlist, transitions dumped in windows (generated by l1bn)
#include "Vsim_top.h"
#include "verilated.h"
#include "verilated_vcd_c.h"
#include <cstdio>
#include <cstdint>
#include <vector>
int main(int argc, char** argv) {
  Verilated::commandArgs(argc, argv);
  Verilated::traceEverOn(true);
  Vsim_top* top = new Vsim_top;
  VerilatedVcdC* tfp = new VerilatedVcdC;
  top->trace(tfp, 2);
  std::vector<unsigned long long> stim, ws, we;
  unsigned long long v, a, b;
  FILE* f = fopen("stim.txt", "r");
  while (fscanf(f, "%llu", &v) == 1) stim.push_back(v);
  fclose(f);
  f = fopen("win.txt", "r");
  while (fscanf(f, "%llu %llu", &a, &b) == 2) { ws.push_back(a); we.push_back(b); }
  fclose(f);
  const long n = (long)stim.size(), maxc = MAX_CYCLES;
  FILE* fz = fopen("z.txt", "w");
  FILE* fb = fopen("base.txt", "w");
  top->clk = 0; top->rst = 1; top->i_valid = 0; top->i_payload = 0;
  top->eval();
  for (int k = 0; k < 3; k++) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
  top->rst = 0;
  long p = 0, cyc = 0, o_at = -1;
  size_t wi = 0;
  uint64_t t = 100;
  bool on = false;
  tfp->open("dump.vcd");
  while (true) {
    top->i_valid = p < n;
    top->i_payload = stim[p < n ? p : n - 1];
    top->eval();
    if (on && (unsigned long long)cyc == we[wi]) { on = false; wi++; }
    if (!on && wi < ws.size() && (unsigned long long)cyc == ws[wi]) {
      on = true; t += 10; tfp->dump(t); fprintf(fb, "%llu\n", t);   // the state before the window
    }
    bool take = top->i_valid && top->i_ready, zv = top->z_valid, ov = top->o_valid;
    unsigned long long zp = top->z_payload;
    top->clk = 1; top->eval(); t += 5; if (on) tfp->dump(t);
    top->clk = 0; top->eval(); t += 5; if (on) tfp->dump(t);
    if (take) p++;
    if (zv) fprintf(fz, "%llx\n", zp);
    if (ov && o_at < 0) o_at = cyc;
    cyc++;
    if ((o_at >= 0 && wi >= ws.size()) || cyc > maxc) break;
  }
  tfp->close();
  fclose(fz); fclose(fb);
  top->final();
  printf("RESULT cycles=%ld nin=%ld windows=%zu\n", o_at, p, wi);
  delete top;
  return 0;
}
"""


def _wrapper(top: dict) -> str:
    """``sim_top``: the netlist ``top`` with the C++ harness's port names (Verilator mangles
    double underscores): clk, rst, the input stream i, z and o out (always ready), rd idle."""
    conns = []
    for name, p in top["ports"].items():
        w = len(p["bits"])
        if name in ("clk", "rst"):
            conns.append(f".{name}({name})")
        elif name in ("i__valid", "i__payload", "i__ready", "z__valid", "z__payload", "o__valid"):
            conns.append(f".{name}({name.replace('__', '_')})")
        elif p["direction"] == "input":
            conns.append(f".{name}({w}'d{1 if name.endswith('__ready') else 0})")
        else:
            conns.append(f".{name}()")
    pw = {n: len(p["bits"]) for n, p in top["ports"].items()}
    return f"""module sim_top(input clk, input rst, input i_valid, input [{pw['i__payload'] - 1}:0] i_payload,
  output i_ready, output z_valid, output [{pw['z__payload'] - 1}:0] z_payload, output o_valid);
  top dut({", ".join(conns)});
endmodule
"""


def with_parameters(text: str, params: dict) -> str:
    """The netlist ``text`` (:func:`~l1bn.sim.asic.synth.write_netlist`) with instance parameters:
    ``params`` = {(cell type, cell name): "#(...)"}, one pass over the lines; ``RuntimeError``
    when a cell is not in the netlist."""
    from l1bn.sim.asic.synth import verilog_name

    heads = {f"  {t} {verilog_name(c)} (": p for (t, c), p in params.items()}
    out, found = [], 0
    for line in text.splitlines(keepends=True):
        i = line.find(" (")
        p = heads.get(line[:i + 2]) if i > 0 else None
        if p is not None:
            t, rest = line[2:].split(" ", 1)
            line = f"  {t} {p} {rest}"
            found += 1
        out.append(line)
    if found != len(heads):
        missing = sorted(c for (t, c) in params if f"  {t} {verilog_name(c)} (" not in text)
        raise RuntimeError(f"cells not found in the netlist: {missing[:5]}")
    return "".join(out)


_SOURCES = ("wrapper.v", "netlist.v", "cells.v", "main.cpp")


def _build_verilator(sim: Path, max_cycles: int, times: dict | None = None) -> Path:
    """Compile ``sim_top`` (``wrapper.v``, ``netlist.v``, ``cells.v``) with the C++ harness; the
    executable; ``times`` (a dict) gets the seconds of ``verilate_s`` and ``compile_s`` (a step
    reused keeps its entry). Gate level with Verilator: Icarus runs this netlist (130k cells) at
    tens of cycles per second on a loaded machine, a step is ~384k cycles."""
    import os
    import subprocess

    from l1bn.sim.executors import run_guarded
    from l1bn.sim.tools import setup_verilator

    root = setup_verilator()
    (sim / "main.cpp").write_text(_MAIN_CPP.replace("MAX_CYCLES", str(max_cycles)))
    stamp = hashlib.sha256(b"".join((sim / f).read_bytes() for f in _SOURCES)).hexdigest()
    vstamp = hashlib.sha256(b"".join((sim / f).read_bytes() for f in _SOURCES[:-1])).hexdigest()
    exe = sim / "obj_dir" / "Vsim"
    if exe.exists() and (sim / "build.stamp").exists() and (sim / "build.stamp").read_text() == stamp:
        return exe           # the same sources: the build is reused
    (sim / "build.stamp").unlink(missing_ok=True)
    # verilate (minutes for ~130k cells), unless the Verilog is the one verilated last; then compile
    steps = []
    if not ((sim / "verilated.stamp").exists() and (sim / "verilated.stamp").read_text() == vstamp
            and (sim / "obj_dir" / "Vsim_top.mk").exists()):
        (sim / "verilated.stamp").unlink(missing_ok=True)
        steps.append([str(root / "bin" / "verilator"), "--cc", "--exe", "--trace", "--trace-depth", "2",
                      "--top-module", "sim_top", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-LATCH",
                      "-Wno-MULTIDRIVEN", "--no-timing", "--output-split", "20000", "-o", "Vsim",
                      *_SOURCES])
    # the model's evaluation (OPT_FAST) at -O1: at -O0 the L2 netlist ran ~5x
    # slower; the rest (trace declarations, constructors: most of the ~130-190 MB of C++ of
    # these netlists, run once) at -O0, which compiles several times faster than -Os
    steps.append(["make", "-C", "obj_dir", "-f", "Vsim_top.mk", "-j", "2", "OPT_FAST=-O1", "OPT_SLOW=-O0",
                  "OPT_GLOBAL=-O0", "USER_CFLAGS=", "Vsim"])
    for o in (sim / "obj_dir").glob("*.o"):
        if o.stat().st_size == 0:     # a compile that was interrupted: make would take it as done
            o.unlink()
    for cmd in steps:
        t0 = time.perf_counter()
        try:
            run_guarded(cmd, cwd=sim, check=True, capture_output=True, text=True, env=dict(os.environ))
        except subprocess.CalledProcessError as e:
            (sim / "verilator.log").write_text((e.stdout or "") + (e.stderr or ""))
            raise RuntimeError(f"Verilator failed on the gate-level netlist (see {sim / 'verilator.log'})") from e
        if times is not None:
            times["compile_s" if cmd[0] == "make" else "verilate_s"] = round(time.perf_counter() - t0, 1)
        if cmd[0] != "make":
            (sim / "verilated.stamp").write_text(vstamp)
    (sim / "build.stamp").write_text(stamp)
    return exe


def asic_energy_figures(synth: dict, wd: Path, sched: list[dict], beats: list[dict], expect_logits,
                        *, window: int = WINDOW) -> dict:
    """Gate-level energy of one step of the netlist in ``wd`` (:func:`asic_synth_figures`) on
    ``beats`` (one batch on ``i``), by windows of the program ``sched`` (module docstring). Per
    block and per phase (the schedule's blocks): switching, internal, clock, SRAM and leakage
    energy (pJ per step), with the windows' error bound; ``logits_equal``: the step's logits at gate
    level against ``expect_logits`` (the integer reference's, (image, class) order)."""
    import numpy as np
    from l1bn.sim.asic.activity import cell_models, flop_inits
    from l1bn.sim.asic.liberty import read_liberty
    from l1bn.sim.asic.power import apply_coefficients, net_coefficients
    from l1bn.sim.asic.sram import access_pj, cells_with_macros, sram_models
    from l1bn.sim.asic.synth import clock_network
    from l1bn.sim.executors import run_guarded
    netlist = json.loads((wd / "netlist.json").read_text())
    netlist["modules"] = {k.lstrip("\\"): v for k, v in netlist["modules"].items()}
    top = netlist["modules"]["top"]
    sim = wd / "sim"
    sim.mkdir(parents=True, exist_ok=True)
    for f in ("dump.vcd", "sram.txt", "z.txt", "base.txt"):
        (sim / f).unlink(missing_ok=True)
    wins = train_windows(sched, window=window)
    (sim / "win.txt").write_text("".join(f"{w['start']} {w['end']}\n" for w in wins))
    widths = {n: len(p["bits"]) for n, p in top["ports"].items()}
    (sim / "stim.txt").write_text("".join(f"{b['i__payload']}\n" for b in beats))
    macros = synth["macros"]
    total = sum(e["cycles"] for e in sched) + 1
    # the netlist with the initial state as instance parameters: each preloaded macro's INIT_FILE
    # (its initial words), each flip-flop's INIT where it starts at 1 (registers never reset, the
    # small memories mapped to flip-flops: gamma, the LFSR seeds; the RTL's initial values)
    params = {(m["type"], m["cell"]): f'#(.INIT_FILE("../init/{m["init_file"]}"))' for m in macros if m.get("init_file")}
    params.update({(top["cells"][c]["type"], c): "#(.INIT(1'b1))" for c in flop_inits(top)})
    (sim / "netlist.v").write_text(with_parameters((wd / "netlist.v").read_text(), params))
    (sim / "wrapper.v").write_text(_wrapper(top))
    types = {c["type"] for c in top["cells"].values()}
    lib_types = {t for t in types if not t.startswith("L1BN_SRAM_")}
    (sim / "cells.v").write_text(cell_models(lib_types) + sram_models({t for t in types if t.startswith("L1BN_SRAM_")},
                                                                      init_param=True))
    t0 = time.perf_counter()
    build_times = {"verilate_s": 0.0, "compile_s": 0.0}
    exe = _build_verilator(sim, total + 1000, build_times)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = run_guarded([str(exe.resolve())], cwd=sim, check=True, capture_output=True, text=True)
    sim_s = time.perf_counter() - t0
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"gate-level simulation of the training step printed no result in {sim}: {r.stdout[-500:]}")
    cycles = int(line.split("cycles=")[1].split()[0])
    if cycles < 0:
        raise RuntimeError(f"gate-level simulation: no result beat in {total + 1000} cycles ({sim})")
    t1 = time.perf_counter()
    base = {int(x) for x in (sim / "base.txt").read_text().split()}
    ids, wt = window_toggles(sim / "dump.vcd", baselines=base)
    vcd_s = time.perf_counter() - t1
    if len(wt) != len(wins):
        raise RuntimeError(f"{len(wt)} dumped windows, {len(wins)} expected ({sim})")
    scope = next((sc for vs in ids.values() for sc, _n, _w in vs if sc.endswith("sim_top.dut")), "sim_top.dut")
    bits = _bit_map(ids, top, scope)
    if not bits or not any(wt):
        raise RuntimeError(f"no transitions of the netlist's nets in the windows of {sim / 'dump.vcd'}")
    (sim / "dump.vcd").unlink()
    # SRAM accesses of the whole step (exact: the models count every one)
    counts = {}
    for ln in ((sim / "sram.txt").read_text().splitlines() if (sim / "sram.txt").exists() else []):
        name, rd, wr = ln.rsplit(None, 2)
        name = name.replace("__DOT__", ".").replace("\\", "").replace(" ", "")
        counts[name.split("dut.", 1)[-1]] = (int(rd), int(wr))
    lib = cells_with_macros(read_liberty()["cells"], types)
    clock_bits = clock_network(top, lib, top["ports"]["clk"]["bits"])
    keys = ("switching_fj", "internal_fj", "clock_fj")
    t1 = time.perf_counter()
    coef = net_coefficients(netlist, clock_bits=clock_bits, scope=asic_block_of)   # linear: one pass
    per_win = []
    for k in range(len(wins)):
        tog = {}
        for ck, n in wt[k].items():
            b = bits.get(ck)
            if b is not None:
                tog[b] = tog.get(b, 0) + n
        per_win.append(_by_block(apply_coefficients(coef, tog), keys))
    # per entry: the mean energy per cycle of its windows times its cycles; bound: half the difference
    blocks = {b: dict.fromkeys(keys, 0.0) for b in BLOCK_NAMES}
    phases, bound = {}, 0.0
    for k, e in enumerate(sched):
        ws = [(i, w) for i, w in enumerate(wins) if w["entry"] == k]
        rates = [{b: {x: per_win[i][b][x] / (w["end"] - w["start"]) for x in keys} for b in BLOCK_NAMES}
                 for i, w in ws]
        tot = [sum(v for b in r.values() for v in b.values()) for r in rates]
        for b in BLOCK_NAMES:
            for x in keys:
                blocks[b][x] += e["cycles"] * sum(r[b][x] for r in rates) / len(rates)
        ph = phases.setdefault(e["block"], {"cycles": 0, "dynamic_fj": 0.0, "bound_fj": 0.0})
        ph["cycles"] += e["cycles"]
        ph["dynamic_fj"] += e["cycles"] * sum(tot) / len(tot)
        if len(tot) == 2:
            ph["bound_fj"] += e["cycles"] * abs(tot[0] - tot[1]) / 2
            bound += e["cycles"] * abs(tot[0] - tot[1]) / 2
    # the SRAM accesses of the whole step, exact (every access counted), per macro's block
    sram_rows = []
    for m in macros:
        rd, wr = counts.get(m["cell"], (0, 0))
        pj = access_pj(m["width"], m["depth"])
        blocks[m["block"]]["sram_fj"] = blocks[m["block"]].get("sram_fj", 0.0) + (rd + wr) * pj * 1000
        sram_rows.append({"cell": m["cell"], "reads": rd, "writes": wr, "pj_per_access": round(pj, 4)})
    if macros and not counts:
        raise RuntimeError(f"the SRAM models wrote no access counts ({sim})")
    period = synth["delay_ns"]
    power_s = time.perf_counter() - t1
    out_blocks = {}
    for b in BLOCK_NAMES:
        v = {**blocks[b], "sram_fj": blocks[b].get("sram_fj", 0.0)}
        leak = synth["blocks"].get(b, {}).get("leakage_nw", 0.0) * total * period * 1e-6   # pJ
        dyn = sum(v.values()) / 1000
        out_blocks[b] = {"switching_pj": round(v["switching_fj"] / 1000, 2), "internal_pj": round(v["internal_fj"] / 1000, 2),
                         "clock_pj": round(v["clock_fj"] / 1000, 2), "sram_pj": round(v["sram_fj"] / 1000, 2),
                         "dynamic_pj": round(dyn, 2), "leakage_pj": round(leak, 2), "energy_pj": round(dyn + leak, 2)}
    z = [int(x, 16) if set(x) <= set("0123456789abcdef") else None for x in (sim / "z.txt").read_text().split()]
    zb = widths["z__payload"]
    got = [None if v is None else (v - (1 << zb) if v >> (zb - 1) else v) for v in z]
    want = np.asarray(expect_logits).reshape(-1).tolist()
    dyn = sum(v["dynamic_pj"] for v in out_blocks.values())
    leak = sum(v["leakage_pj"] for v in out_blocks.values())
    return {"window": window, "windows": len(wins), "window_cycles": sum(w["end"] - w["start"] for w in wins),
            "cycles_simulated": cycles, "cycles_per_step": total, "logits_equal": got == want,
            "logits_checked": len(got), "blocks": out_blocks,
            "phases": {p: {"cycles": v["cycles"], "dynamic_pj": round(v["dynamic_fj"] / 1000, 2),
                           "bound_pj": round(v["bound_fj"] / 1000, 2)} for p, v in phases.items()},
            "dynamic_pj": round(dyn, 2), "leakage_pj": round(leak, 2), "energy_pj": round(dyn + leak, 2),
            "bound_pj": round(bound / 1000, 2), "srams": sram_rows, "build_s": round(build_s, 1),
            **build_times, "sim_s": round(sim_s, 1), "vcd_s": round(vcd_s, 1), "power_s": round(power_s, 1)}


def train_asic_figures(acc, x, y, workdir, *, window: int = WINDOW, energy: bool = True) -> dict:
    """NanGate45 figures of the training accelerator ``acc`` (a
    :class:`~l1bn.hw.train.accel.TrainAccelerator`) with its first step on images ``x`` (one batch,
    unsigned ``abits``, (N, C, H, W)) and labels ``y``: :func:`asic_synth_figures` under ``synth``,
    and with ``energy`` :func:`asic_energy_figures` under ``energy``. Kept in
    ``workdir/asic.json`` and reused while the design, the flow, the images and the window are
    the same."""
    import numpy as np
    from l1bn.hw.train.io import input_layout
    from l1bn.sim.asic.step import asic_params
    from l1bn.sim.simulate.train import reference_steps

    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    cache = wd / "asic.json"
    res = json.loads(cache.read_text()) if cache.exists() else {}
    text = _rtlil(acc)
    skey = _key(text, asic_params(clock_gating=True, sram=True), SRAM_OPTIONS, TRAIN_ASIC_VERSION)
    if res.get("synth_key") != skey or not (wd / "asic" / "netlist.json").exists():
        shutil.rmtree(wd / "asic", ignore_errors=True)
        res = {"synth_key": skey, "synth": asic_synth_figures(text, wd / "asic")}
        cache.write_text(json.dumps(res, indent=1))
    if energy:
        x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        lay = input_layout(acc.plan)
        po, lo = lay["pixel"].offset, lay["label"].offset
        beats = [{"i__payload": (int(p) << po) | (int(lab) << lo)} for img, lab in zip(x, y, strict=True)
                 for p in img.reshape(-1)]
        ekey = _key(skey, x.tolist(), y.tolist(), window, TRAIN_ASIC_ENERGY_VERSION)
        if res.get("energy_key") != ekey:
            _, logits, _ = reference_steps(acc.cfg, acc.seed, [(x, y)])
            res["energy"] = asic_energy_figures(res["synth"], wd / "asic", acc.schedule, beats, logits[0],
                                                window=window)
            res["energy_key"] = ekey
            cache.write_text(json.dumps(res, indent=1))
    return res


def digits_batch(cfg):
    """The batch the figures are measured on: the first ``cfg.batch`` images and labels of the
    digits training split, quantized as the integer trainer does (those of the Verilator test)."""
    import numpy as np
    from l1bn.spec.reference.train import quantize_images
    from l1bn.sw.data import digits_split

    x, y = digits_split()["train"]
    return quantize_images(x[:cfg.batch].numpy(), cfg), y[:cfg.batch].numpy().astype(np.int64)


def asic_figures(norm: str, workdir, *, batch: int = 8, rows: int = 8, window: int = WINDOW,
                 energy: bool = True) -> dict:
    """:func:`train_asic_figures` of the digits CNN's training accelerator of ``norm`` (batch
    ``batch``, a ``rows`` x 1 array, seed 0) on :func:`digits_batch`, in ``workdir/<norm>``:
    the synthesis figures, with ``energy`` the step's energy under ``energy``."""
    from l1bn.hw.train.accel import TrainAccelerator
    from l1bn.spec.training import IntTrainConfig

    acc = TrainAccelerator(IntTrainConfig(batch=batch, norm=norm), rows=rows, seed=0)
    x, y = digits_batch(acc.cfg)
    res = train_asic_figures(acc, x, y, Path(workdir) / norm, window=window, energy=energy)
    return {k: v for k, v in res.items() if k in ("synth", "energy")}


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def asic_tables(rows_by_norm: dict) -> list[str]:
    """Text lines of the NanGate45 whole-accelerator tables from ``rows_by_norm[norm]["asic"]``
    (:func:`asic_figures`): the summary per norm with ratios to the baseline, area and energy
    by block, energy by phase of the step."""
    from l1bn.spec.norms import BASELINE

    rs = {n: r["asic"] for n, r in rows_by_norm.items() if r.get("asic")}
    if not rs:
        return ["NanGate45: not measured (bench/train_accel.py --target asic)"]
    any_e = next((r["energy"] for r in rs.values() if r.get("energy")), None)
    win = any_e["window"] if any_e else WINDOW
    out = ["NanGate45 (typical, 1.1 V), the whole training accelerator: digits CNN, batch 8, MAC array 8x1; "
           "clock gating, memories as SRAM macros; energy of one step on 8 real digits at the design's Fmax, "
           f"gate-level windows of {win} cycles (two per long program entry) scaled by the schedule's cycles",
           f"{'norm':5} {'area um2':>9} {'SRAM um2':>9} {'cells':>7} {'FF':>6} {'ICG':>4} {'delay ns':>8} "
           f"{'Fmax MHz':>8} {'cycles/step':>11} {'nJ/step':>8} {'+-nJ':>6} {'dynamic':>8} {'clock':>7} "
           f"{'SRAM':>7} {'leakage':>8} {'logits':>6}  critical path"]
    for n, r in rs.items():
        s, e = r["synth"], r.get("energy") or {}
        b = e.get("blocks", {})
        clock = sum(v["clock_pj"] for v in b.values()) / 1000 if b else None
        srame = sum(v["sram_pj"] for v in b.values()) / 1000 if b else None
        ok = "-" if not e else ("equal" if e["logits_equal"] else "DIFFER")
        out.append(f"{n:5} {s['area_um2']:9.0f} {s['sram_area_um2']:9.0f} {s['cells']:7d} {s['dff']:6d} "
                   f"{s.get('clock_gates', 0):4d} {s['delay_ns']:8.3f} {s['fmax_mhz']:8.1f} "
                   f"{_f(e.get('cycles_per_step'), 'd'):>11} {_f(e.get('energy_pj', 0) / 1000 if e else None, '.1f'):>8} "
                   f"{_f(e.get('bound_pj', 0) / 1000 if e else None, '.1f'):>6} "
                   f"{_f(e.get('dynamic_pj', 0) / 1000 if e else None, '.1f'):>8} {_f(clock, '.1f'):>7} "
                   f"{_f(srame, '.1f'):>7} {_f(e.get('leakage_pj', 0) / 1000 if e else None, '.1f'):>8} {ok:>6}  "
                   f"{s['path_from_block']} -> {s['path_to_block']} ({s['path_from']} -> {s['path_to']})")
    ref = rs.get(BASELINE)
    if ref is not None:
        for n, r in rs.items():
            if n == BASELINE:
                continue
            parts = [f"area {r['synth']['area_um2'] / ref['synth']['area_um2']:.3f}",
                     f"delay {r['synth']['delay_ns'] / ref['synth']['delay_ns']:.3f}"]
            if r.get("energy") and ref.get("energy"):
                parts.append(f"energy {r['energy']['energy_pj'] / ref['energy']['energy_pj']:.3f}")
                parts.append(f"energy at one clock {r['energy']['dynamic_pj'] / ref['energy']['dynamic_pj']:.3f} (dynamic)")
            out.append(f"{n}/{BASELINE}: " + ", ".join(parts))
    names = list(rs)
    out += ["", "by block: area; energy per step (nJ: all, dynamic, of which clock; the rest is leakage)",
            f"{'block':40} " + " ".join(f"{'um2 ' + n:>10}" for n in names) + " "
            + " ".join(f"{'nJ ' + n:>8} {'dyn':>7} {'clock':>7}" for n in names)]
    for blk in BLOCK_NAMES:
        area = [rs[n]["synth"]["blocks"].get(blk, {}).get("area_um2", 0.0) for n in names]
        en = [(rs[n].get("energy") or {}).get("blocks", {}).get(blk) for n in names]
        out.append(f"{blk:40} " + " ".join(f"{a:10.0f}" for a in area) + " " + " ".join(
            f"{_f(None if v is None else v['energy_pj'] / 1000, '.1f'):>8} "
            f"{_f(None if v is None else v['dynamic_pj'] / 1000, '.1f'):>7} "
            f"{_f(None if v is None else v['clock_pj'] / 1000, '.1f'):>7}" for v in en))
    if any_e:
        phases = list(any_e["phases"])
        out += ["", f"{'phase (program entries)':24} {'cycles':>8} " + " ".join(f"{'nJ ' + n:>9} {'+-':>5}" for n in names)]
        for ph in phases:
            cells = []
            for n in names:
                p = (rs[n].get("energy") or {}).get("phases", {}).get(ph)
                cells.append(f"{_f(None if p is None else p['dynamic_pj'] / 1000, '.2f'):>9} "
                             f"{_f(None if p is None else p['bound_pj'] / 1000, '.2f'):>5}")
            out.append(f"{ph:24} {any_e['phases'][ph]['cycles']:8d} " + " ".join(cells))
        out.append("(phases: dynamic energy only, the windows' per-cycle energy times the phase's cycles; "
                   "+-: half the difference of the two windows of each long entry, summed)")
    out += ["", "flow time (s, wall clock; - : not recorded, or reused from an earlier run)",
            f"{'norm':5} " + " ".join(f"{h:>9}" for h, _ in FLOW_TIMES)]
    for n, r in rs.items():
        parts = [r["synth"].get(k) if w == "synth" else (r.get("energy") or {}).get(k) for _, (w, k) in FLOW_TIMES]
        out.append(f"{n:5} " + " ".join(f"{_f(v, '.0f'):>9}" for v in parts))
    return out
