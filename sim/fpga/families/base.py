"""What every FPGA family of the flow provides (:class:`Family`), its devices (:class:`Device`) and
the checks shared by all of them: device fit before place and route, the nextpnr report parser.

A family module (``ecp5.py``, ``ice40.py``, ...) holds one :class:`Family` subclass instance
``FAMILY``: its Yosys synthesis script, its devices with their resources, its nextpnr tool and
command line, the pin constraints of the timing harness (:mod:`l1bn.sim.fpga.harness`), and the
names of its resources (the report's columns in the family's own units). Every family reports the
same common keys besides its own: ``lut`` (its LUT cells), ``ff``, ``dsp``, ``bram`` from
synthesis, and after place and route ``le``: the LUT4-equivalents, the logic sites nextpnr placed
(each holds one 4-input LUT or one carry/adder bit; the bel types per family are
``Family.site_bels``), plus ``fmax_mhz``, ``device``, ``utilization`` and ``critical_path``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from l1bn.sim.yowasp import in_workdir, run_yosys

__all__ = ["Device", "Family", "DeviceFitError", "lone_flip_flops", "nextpnr_result", "packing_overflow"]

#: the ports of the timing harness, in the order the constraint files list them
HARNESS_PORTS = ("clk", "rst", "din", "dout")


class DeviceFitError(ValueError):
    """The design does not fit the device (found after synthesis, before place and route)."""


@dataclasses.dataclass(frozen=True)
class Device:
    """One device of a family, with the resources nextpnr reports as available.

    Parameters
    ----------
    name : str
        As the user types it (``--device``), e.g. ``iCE40UP5K-SG48``.
    pnr_args : tuple of str
        The nextpnr arguments that select it.
    lut : int
        LUT4-sized logic sites (nextpnr's ``available`` count of ``Family.site_bels``).
    ff : int
        Flip-flops.
    dsp : int
        Hard multiplier blocks in the family's DSP unit (0: none).
    bram : int
        Block RAMs in the family's unit.
    pins : dict or None
        Harness port -> package pin for the constraint file; None lets nextpnr place them.
    synth_args : str
        Extra options of the family's synthesis command for this device (a timing model).
    board : str
        A board that carries it (for the docs).
    """

    name: str
    pnr_args: tuple
    lut: int
    ff: int
    dsp: int
    bram: int
    pins: dict | None = None
    synth_args: str = ""
    board: str = ""


class Family:
    """An FPGA family: set the class attributes and implement :meth:`synth_script`,
    :meth:`counts` and (where pins must be constrained) :meth:`constraints`."""

    #: short name (``--family``)
    name: str = ""
    #: what the docs call it
    title: str = ""
    #: the PyPI distribution of its nextpnr, its module and entry function
    pnr_dist: str = ""
    pnr_module: str = ""
    pnr_function: str = ""
    #: the devices, default first
    devices: tuple = ()
    #: the hard multiplier (or multiplier mode) a ``dsp`` synthesis uses, as the docs name it
    dsp_cell: str = ""
    #: nextpnr bel types whose used count is the LUT4-equivalent area ``le``
    site_bels: tuple = ()
    #: LUT4 sites per placed cell of a ``site_bels`` type, where not one
    site_weights: dict = {}
    #: the largest fraction of a device's LUT sites the family's placer is known to fill (the fit
    #: check refuses more)
    max_fill: float = 1.0
    #: (result key, column label) in the family's own units, for the report tables
    units: tuple = ()
    #: the extra Python distributions of this family's tools (doctor, make install)
    extra_dists: tuple = ()
    #: raised when the synthesis script changes what it builds (in the flow step's cache key;
    #: "" keeps the keys of the scripts that never changed)
    synth_revision: str = ""

    def require(self) -> None:
        """:class:`~l1bn.sim.tools.ToolError` with the install command when this family's nextpnr
        wheel is missing."""
        import importlib.util

        from l1bn.sim.tools import ToolError

        if importlib.util.find_spec(self.pnr_module) is None:
            raise ToolError(f"{self.pnr_dist} not found ({self.title} place and route): run  "
                            f".venv/bin/pip install {self.pnr_dist}  (or make install)")

    def le(self, utilization: dict) -> int:
        """The LUT4-equivalents of nextpnr's placed counts (bel type -> used)."""
        return sum(utilization.get(b, 0) * self.site_weights.get(b, 1) for b in self.site_bels)

    # ---- devices

    def device(self, name: str | None) -> Device:
        """The device called ``name`` (case-insensitive); the default (first) for None."""
        if name is None:
            return self.devices[0]
        for d in self.devices:
            if d.name.lower() == str(name).lower():
                return d
        raise ValueError(f"unknown device {name!r} for family {self.name}; choose one of "
                         f"{', '.join(d.name for d in self.devices)}")

    def default_dsp(self, device: Device) -> bool:
        """Whether synthesis maps multiplies to ``dsp_cell`` unless told otherwise."""
        return device.dsp > 0

    def check_dsp(self, device: Device, dsp: bool) -> None:
        """``ValueError`` when ``dsp`` asks for multipliers the device does not have."""
        if dsp and device.dsp == 0:
            raise ValueError(f"device {device.name} has no {self.dsp_cell or 'DSP'} blocks; use --no-dsp "
                             f"or a device with them ({', '.join(d.name for d in self.devices if d.dsp)})")

    # ---- synthesis

    def synth_script(self, device: Device, dsp: bool) -> str:
        """The Yosys commands after ``read_verilog top.v`` (top module ``top``)."""
        raise NotImplementedError

    def counts(self, cells: dict) -> dict:
        """Resource counts from Yosys' ``num_cells_by_type``: the family's own keys plus the
        common ``lut``, ``ff``, ``dsp``, ``bram`` and ``lut_sites`` (a lower bound of the LUT
        sites the design needs, for the fit check before place and route; where a cell takes
        more than one site, or a site no LUT cell, ``lut_site_parts`` says what they are)."""
        raise NotImplementedError

    def netlist_sites(self, netlist: dict) -> dict:
        """LUT sites that the cell counts miss, by cause (``{label: count}``), from the Yosys JSON
        netlist of synthesis (e.g. the pass-through LUTs of flip-flops whose input no LUT of
        their own site can drive): added to ``lut_sites``. None here."""
        return {}

    def synthesize(self, verilog: str, workdir: Path, *, device: Device, dsp: bool) -> dict:
        """Synthesize Verilog text (top ``top``, already in the harness) in ``workdir``: the
        counts of :meth:`counts` (with :meth:`netlist_sites` in ``lut_sites``) plus ``cells``
        (every cell type); ``top.json`` for nextpnr."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "top.v").write_text(verilog)
        run_yosys(workdir, f"read_verilog top.v; {self.synth_script(device, dsp)}; "
                           "tee -q -o stat.json stat -json; write_json top.json")
        cells = {k: int(v) for k, v in
                 json.loads((workdir / "stat.json").read_text())["design"]["num_cells_by_type"].items()}
        res = {**self.counts(cells), "cells": cells}
        if type(self).netlist_sites is not Family.netlist_sites:   # the netlist is read only where it counts
            extra = self.netlist_sites(json.loads((workdir / "top.json").read_text()))
            res["lut_sites"] += sum(extra.values())
            res["lut_site_parts"] = {**res.get("lut_site_parts", {}), **extra}
        return res

    # ---- fit, place and route

    def check_fit(self, counts: dict, device: Device) -> None:
        """:class:`DeviceFitError` (one line) naming the first resource the design needs more of
        than ``device`` has (synthesis counts against nextpnr's available sites), the shortfall,
        what the LUT sites are made of (``lut_site_parts``) and the larger devices of the family."""
        def room(d: Device, key: str) -> int:
            return int(d.lut * self.max_fill) if key == "lut_sites" else getattr(d, key)

        for key, what in (("lut_sites", "LUT sites"), ("ff", "flip-flops"),
                          ("dsp", self.dsp_cell or "DSP blocks"), ("bram", "block RAMs")):
            need, have = counts.get(key, 0), room(device, key)
            if need > have:
                bigger = [d.name for d in self.devices if room(d, key) >= need]
                hint = f"; try --device {' or '.join(bigger)}" if bigger else "; no device of this family has as many"
                if key == "dsp":
                    hint += " or --no-dsp" if bigger else "; use --no-dsp"
                parts = counts.get("lut_site_parts") if key == "lut_sites" else None
                made = f" ({' + '.join(f'{n} {label}' for label, n in parts.items() if n)})" if parts else ""
                has = (f"{device.lut}, of which {have} ({self.max_fill:.0%}, what {self.pnr_dist}'s placer is "
                       f"known to fill):"
                       if key == "lut_sites" and self.max_fill < 1 else f"{have},")
                raise DeviceFitError(f"the design needs {need} {what}{made} after synthesis but {device.name} has "
                                     f"{has} {need - have} short{hint}")

    def constraints(self, device: Device) -> tuple[str, str, list[str]] | None:
        """``(file name, text, nextpnr arguments)`` of the pin constraints, or None."""
        return None

    def pnr_args(self, device: Device, *, seed: int, freq_mhz: float) -> list[str]:
        """The nextpnr command line (without the program name)."""
        args = [*device.pnr_args, "--json", "top.json", "--freq", str(freq_mhz), "--timing-allow-fail",
                "--seed", str(seed), "--report", "pnr.json", "--log", "nextpnr.log", "-q"]
        return args

    def place_and_route(self, workdir: Path, device: Device, *, seed: int = 1, freq_mhz: float = 100,
                        counts: dict | None = None) -> dict:
        """nextpnr on ``workdir/top.json``: ``fmax_mhz`` of the harness clock, ``device``,
        ``le``, ``utilization`` (used, per bel type) and ``critical_path``. (``counts``, the
        synthesis counts, choose the device where it is None: ECP5 only.)"""
        import importlib

        run = getattr(importlib.import_module(self.pnr_module), self.pnr_function)
        args = self.pnr_args(device, seed=seed, freq_mhz=freq_mhz)
        cons = self.constraints(device)
        if cons is not None:
            fname, text, extra = cons
            (workdir / fname).write_text(text)
            args += extra
        (workdir / "pnr.json").unlink(missing_ok=True)
        rc = in_workdir(workdir, lambda: run(args))
        if rc == 130:   # Ctrl-C inside the WebAssembly runtime
            raise KeyboardInterrupt
        rep = workdir / "pnr.json"
        if rc != 0 or not rep.exists():
            self.check_packing(workdir / "nextpnr.log", device)
            raise RuntimeError(f"{self.pnr_dist} failed on {device.name} (rc={rc}); see {workdir / 'nextpnr.log'}")
        return {**nextpnr_result(json.loads(rep.read_text()), self.site_bels, self.site_weights),
                "device": device.name}


    def check_packing(self, log: Path, device: Device) -> None:
        """:class:`DeviceFitError` when nextpnr stopped because its packed design uses more of a
        bel type than the device has (its "Device utilisation" table, printed before placement):
        the synthesis estimate of :meth:`check_fit` is a lower bound and can pass such a design."""
        over = packing_overflow(log)
        if over:
            bel, used, avail = over
            bigger = [d.name for d in self.devices if bel in self.site_bels and d.lut >= used]
            hint = f"; try --device {' or '.join(bigger)}" if bigger else ""
            raise DeviceFitError(f"the design needs {used} {bel} after packing but {device.name} has {avail}{hint}")


def lone_flip_flops(netlist: dict, *, ff_prefix: str, feeders: dict, d_port: str = "D") -> int:
    """The flip-flops of a Yosys JSON netlist (module ``top``) that need a LUT site of their own
    on a fabric whose flip-flop takes its input only from the LUT (or carry, or mux) of its site:
    those whose ``d_port`` no feeder drives (a register after a register, a memory or a port, a
    constant), and all but one of those that share a feeder. ``ff_prefix``: the flip-flop cell
    types' prefix; ``feeders``: cell type prefix -> output port."""
    cells = netlist["modules"]["top"]["cells"]
    driver = {}
    for name, c in cells.items():
        port = next((p for t, p in feeders.items() if c["type"].startswith(t)), None)
        for bit in c["connections"].get(port, ()) if port else ():
            driver[bit] = name
    taken, lone = set(), 0
    for c in cells.values():
        if c["type"].startswith(ff_prefix):
            src = driver.get(c["connections"][d_port][0])
            if src is None or src in taken:
                lone += 1
            else:
                taken.add(src)
    return lone


def packing_overflow(log: Path) -> tuple[str, int, int] | None:
    """``(bel type, used, available)`` of the first bel type that a nextpnr log's "Device
    utilisation" table (printed after packing) overflows; None when none does (or no log)."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return None
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        bel, used, avail = m.group(1), int(m.group(2)), int(m.group(3))
        if used > avail:
            return bel, used, avail
    return None


def nextpnr_result(report: dict, site_bels, site_weights=None) -> dict:
    """Fmax, LUT4-equivalents, utilization and critical path from a nextpnr ``--report`` JSON.

    Fmax is the slowest clock's; nextpnr also lists constant nets that it promoted to a global
    buffer (``$PACKER_GND_NET``, iCE40) as clocks, and those are not the harness clock.
    """
    from l1bn.sim.fpga.pnr import critical_path

    fmax = [v["achieved"] for k, v in report.get("fmax", {}).items() if not k.startswith("$PACKER_")]
    if not fmax:
        raise RuntimeError("nextpnr reported no clock (the harness has one: clk)")
    util = {k: v["used"] for k, v in report.get("utilization", {}).items() if v.get("used")}
    weights = site_weights or {}
    return {"fmax_mhz": round(min(fmax), 2), "le": sum(util.get(b, 0) * weights.get(b, 1) for b in site_bels),
            "utilization": util, "critical_path": critical_path(report)}
