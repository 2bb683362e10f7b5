"""The steps of the FPGA flow, as cached jobs (:mod:`l1bn.sim.jobs`), and single-design conveniences.

``ecp5`` (:class:`ECP5Job`)
    ECP5 synthesis of the component in a :class:`~l1bn.sim.fpga.harness.TimingHarness`
    (:func:`~l1bn.sim.fpga.synth.synth_ecp5_text`) and, unless ``pnr=False``, nextpnr place and
    route (:func:`~l1bn.sim.fpga.pnr.pnr_ecp5_json`): counts plus ``fmax_mhz``, ``device``.
``fpga`` (:class:`FPGAJob`)
    the same on another family of :mod:`l1bn.sim.fpga.families` (iCE40, Nexus, Gowin, GateMate):
    the family's synthesis, a device-fit check, its nextpnr; counts in the family's own units plus
    ``le`` (LUT4-equivalents), ``fmax_mhz``, ``device``.
``cmos`` (:class:`CMOSJob`)
    generic gate synthesis of the bare component (:func:`~l1bn.sim.fpga.synth.synth_cmos_text`).
``energy`` (:class:`EnergyJob`)
    gate synthesis, then gate-level simulation of ``params["beats"]`` and toggle energy
    (:mod:`l1bn.sim.fpga.energy`).

:func:`implement` is synthesis + place and route (the keys ``lut``, ``ff``, ``ccu2``, ``dsp``,
``bram``, ``fmax_mhz``); many designs at once go through :func:`l1bn.sim.jobs.run_jobs`.
"""

from __future__ import annotations

import time
from pathlib import Path

from l1bn.hw.arith import ecp5_dsp_primitives
from l1bn.sim.jobs import Job, run_jobs
from l1bn.sim.rtl import to_verilog

from .energy import gate_energy_run
from .families import get_family
from .harness import TimingHarness
from .pnr import pnr_ecp5_json
from .synth import synth_cmos_text, synth_ecp5_text

__all__ = ["ECP5Job", "FPGAJob", "CMOSJob", "EnergyJob", "fpga_job", "synth_ecp5", "synth_cmos", "pnr_ecp5",
           "implement", "gate_energy"]


class ECP5Job(Job):
    """``ecp5``: harnessed ECP5 synthesis, + place and route unless ``pnr=False`` (params
    ``pnr``, ``freq_mhz`` (100), ``seed`` (1); only when given, so that the default's cache keys
    stay: ``device`` (a name of :mod:`~l1bn.sim.fpga.families.ecp5`, else the smallest that fits)
    and ``dsp`` (False: no MULT18X18D, ``synth_ecp5 -nodsp``))."""

    kind = "ecp5"
    version = "5"      # 4: block-RAM output registers; 5: registers with ``keep`` stay apart

    def design_verilog(self, component) -> str:
        # registered multiplies as MULT18X18D with the DSP's own output register
        with ecp5_dsp_primitives(self.params.get("dsp", True)):
            return to_verilog(TimingHarness(component), "top")

    @staticmethod
    def run(verilog: str, params: dict, workdir: Path) -> dict:
        res = synth_ecp5_text(verilog, workdir, nodsp=not params.get("dsp", True))
        if params.get("pnr", True):
            flag = None
            if params.get("device") is not None:
                fam = get_family("ecp5")
                dev = fam.device(params["device"])
                fam.check_fit({**res, "lut_sites": res["lut"] + 2 * res["ccu2"]}, dev)
                flag = dev.pnr_args[0][2:]
            res.update(pnr_ecp5_json(workdir, lut=res["lut"], dsp=res["dsp"], bram=res["bram"],
                                     freq_mhz=params.get("freq_mhz", 100), seed=params.get("seed", 1),
                                     device=flag))
        return res


class FPGAJob(Job):
    """``fpga``: harnessed synthesis on the family ``params["family"]`` for ``params["device"]``
    (with its DSPs when ``params["dsp"]``), the fit check, and place and route unless
    ``pnr=False`` (``freq_mhz`` (100), ``seed`` (1)). ``params["pnr_tool"]`` (the nextpnr
    wheel's version) is in the cache key; :func:`fpga_job` fills the parameters in."""

    kind = "fpga"
    version = "1"

    def design_verilog(self, component) -> str:
        # plain multiplies: each family's synthesis maps them to its DSPs (or not)
        return to_verilog(TimingHarness(component), "top")

    @staticmethod
    def run(verilog: str, params: dict, workdir: Path) -> dict:
        fam = get_family(params["family"])
        dev = fam.device(params["device"])
        res = fam.synthesize(verilog, workdir, device=dev, dsp=params["dsp"])
        if params.get("pnr", True):
            fam.check_fit(res, dev)
            res.update(fam.place_and_route(workdir, dev, seed=params.get("seed", 1),
                                           freq_mhz=params.get("freq_mhz", 100)))
        return res


def fpga_job(component=None, *, name: str, target=None, verilog: str | None = None, **params) -> Job:
    """The FPGA step of ``target`` (a :class:`~l1bn.sim.fpga.families.Target`; None: the default
    ECP5): an :class:`ECP5Job` for ECP5 (with ``device`` / ``dsp`` only when not the default), an
    :class:`FPGAJob` for the other families."""
    from .families import resolve_target

    target = target if target is not None else resolve_target()
    cls = ECP5Job if target.family.name == "ecp5" else FPGAJob
    return cls(component, name=name, verilog=verilog, **params, **target.job_params())


class CMOSJob(Job):
    """``cmos``: generic gate synthesis (counts, transistors, the gate netlist)."""

    kind = "cmos"
    version = "3"

    @staticmethod
    def run(verilog: str, params: dict, workdir: Path) -> dict:
        return synth_cmos_text(verilog, workdir)


class EnergyJob(Job):
    """``energy``: gate synthesis + gate-level simulation of ``params["beats"]`` on stream
    ``main`` (default ``i``) until ``expect_out`` beats on ``out`` (default ``o``); give up after
    ``max_cycles`` (default 10 x beats + 10000)."""

    kind = "energy"
    version = "3"

    @staticmethod
    def run(verilog: str, params: dict, workdir: Path) -> dict:
        t0 = time.perf_counter()
        res = synth_cmos_text(verilog, workdir / "gates")
        res["synth_s"] = round(time.perf_counter() - t0, 2)
        res.update(gate_energy_run(workdir / "gates", workdir / "sim", port_list=params["port_list"],
                                   main=params.get("main", "i"), out=params.get("out", "o"),
                                   beats=params["beats"], expect_out=params["expect_out"],
                                   max_cycles=params.get("max_cycles", 10 * len(params["beats"]) + 10000)))
        return res


def synth_ecp5(component, name: str, workdir, *, use_cache: bool = True) -> dict:
    """ECP5 cell counts of ``component`` in a :class:`TimingHarness` (no place and route).

    Returns ``lut`` (LUT4), ``ff``, ``ccu2`` (CCU2C), ``dsp`` (MULT18X18D + ALU54B), ``bram``
    (DP16KD), ``lutram`` (TRELLIS_DPR16X4). Harness flip-flops are included in ``ff``.
    """
    return run_jobs([ECP5Job(component, name=name, pnr=False)], workdir=workdir, max_workers=1,
                    console=False, use_cache=use_cache)[0]


def synth_cmos(component, name: str, workdir, *, use_cache: bool = True) -> dict:
    """Generic CMOS gates of ``component``: ``gates``, ``dff``, ``transistors`` (Yosys estimate),
    ``cells_by_type`` and per-module ``modules``."""
    return run_jobs([CMOSJob(component, name=name)], workdir=workdir, max_workers=1, console=False,
                    use_cache=use_cache)[0]


def pnr_ecp5(component, name: str, workdir, *, use_cache: bool = True, freq_mhz: float = 100) -> dict:
    """Synthesis + place and route in the timing harness: counts plus ``fmax_mhz`` and ``device``."""
    return run_jobs([ECP5Job(component, name=name, pnr=True, freq_mhz=freq_mhz)], workdir=workdir,
                    max_workers=1, console=False, use_cache=use_cache)[0]


def implement(component, *, name: str, workdir, console=None, use_cache: bool = True) -> dict:
    """ECP5 synthesis + place and route of ``component`` (keys ``lut``, ``ff``, ``ccu2``, ``dsp``,
    ``bram``, ``fmax_mhz``, ``device``, ...), with a progress line on ``console``."""
    return run_jobs([ECP5Job(component, name=name, pnr=True)], workdir=workdir, max_workers=1,
                    console=console if console is not None else False, use_cache=use_cache,
                    description=f"ECP5 {name}")[0]


def gate_energy(component, beats: list[dict], *, name: str, workdir, expect_out: int, main: str = "i",
                out: str = "o", use_cache: bool = True) -> dict:
    """Gate-level toggle energy of ``component`` on a stimulus (:mod:`l1bn.sim.fpga.energy`).

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
    return run_jobs([EnergyJob(component, name=name, beats=beats, expect_out=expect_out, main=main,
                         out=out)], workdir=workdir, max_workers=1, console=False, use_cache=use_cache)[0]
