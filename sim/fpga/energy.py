"""Gate-level energy of a generic-gate netlist (the ``energy`` step of the FPGA flow).

The gate netlist is simulated on Icarus (zero delay) with a stimulus of real data, a VCD of every
net is dumped, and each 0<->1 transition of a net costs ``1 + fanout`` units, fanout being the
number of gate (and flip-flop) inputs the net drives: the switched capacitance of a net is roughly
its driver's output and wire capacitance plus one input pin per load, all taken equal. The clock
net is counted the same way (two transitions per cycle times the flip-flop count). Limits: no
glitches (zero-delay simulation), no wire-length or gate-size differences, no leakage, no memory
macros (RAM is flip-flops here), a generic gate library rather than FPGA LUTs. The numbers are
relative units, comparable between designs of this flow only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from l1bn.sim.gatesim import run_tb, stream_tb_verilog, vcd_toggles, write_stim
from l1bn.sim.tools import require_iverilog

__all__ = ["gate_energy_run"]


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
    (workdir / "tb.v").write_text(stream_tb_verilog(port_list, main, len(beats), stim_width, layout, expect_out,
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
    toggles = vcd_toggles(workdir / "dump.vcd")
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
