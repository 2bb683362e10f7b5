"""Static timing with OpenSTA on the mapped netlist (the ``static timing`` part of the ASIC step,
:mod:`l1bn.sim.asic.step`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from l1bn.sim.tools import ToolError

from .liberty import WIRE_LOAD, copy_liberty, read_liberty
from .sram import sram_liberty

__all__ = ["STA_PERIOD_NS", "sta_path", "sta_version", "sta_timing"]

STA_PERIOD_NS = 20.0


def sta_path() -> str:
    """Path of OpenSTA's ``sta``; :class:`~l1bn.sim.tools.ToolError` with the fix when absent."""
    exe = shutil.which("sta")
    if exe is None:
        raise ToolError("OpenSTA not found: run  sudo apt-get install -y opensta  (or make install)")
    return exe


def sta_version() -> str:
    """``sta -version`` (``missing`` without OpenSTA; part of every ASIC step's cache key)."""
    try:
        r = subprocess.run([sta_path(), "-version"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() or "?"
    except Exception:  # noqa: BLE001 - a missing tool is reported by sta_path when it matters
        return "missing"


_PATH_RE = re.compile(r"Startpoint: (\S+).*?Endpoint: (\S+).*?([-\d.]+)\s+data arrival time.*?"
                      r"([-\d.]+)\s+slack", re.S)


def sta_timing(wd: Path, *, has_clock: bool, macros=()) -> dict:
    """Critical path of ``wd/netlist.v`` (see the module docstring for the constraints); the
    SRAM macro types ``macros`` are read from a generated library
    (:func:`~l1bn.sim.asic.sram.sram_liberty`)."""
    lib = read_liberty()["cells"]
    dload = lib["DFF_X1"]["pins"]["D"]["cap"]
    clk = "create_clock -name clk -period {p} [get_ports clk]" if has_clock else \
        "create_clock -name clk -period {p}"
    ins = "[delete_from_list [all_inputs] [get_ports clk]]" if has_clock else "[all_inputs]"
    if macros:
        (wd / "sram.lib").write_text(sram_liberty(macros))
    script = f"""read_liberty cells.lib
{"read_liberty sram.lib" if macros else ""}
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
    copy_liberty(wd)
    try:
        from l1bn.sim.executors import run_guarded  # killed with the command, never orphaned

        r = run_guarded([sta_path(), "-no_splash", "-exit", "sta.tcl"], cwd=wd, capture_output=True,
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
