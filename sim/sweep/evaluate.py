"""One sweep point: its stimulus (on the client) and its evaluation (in a worker).

fpga: ECP5 synthesis in the flow's timing harness (LUT4, FF, CCU2C, DSP, DP16KD); nextpnr on the
same netlist with seeds 1..``seeds`` (``fmax_mhz`` = their median; each seed in ``fmax_seeds``);
the flow's ``energy`` step (generic gates, Icarus on the gate netlist): transistors, measured
``cycles`` from the first input beat to the last output beat, and fan-out-weighted toggle energy
per element (BN, one batch of real activations of the digits CNN) or per MAC (MAC: two tiles
of K = 64 random operands). ``latency_ns`` = cycles x 1000 / fmax_mhz. Without ``energy`` the
cycles are the latency formula's (``bn_latency_cycles`` / ``stream_cycles``), which the gate-level
runs equal.

Every tool runs in a scratch folder on the worker, and the figures travel back to the client:
no shared file system. The stimulus is computed on the client and sent with the task.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from pathlib import Path

import numpy as np
from l1bn.sim.asic.step import asic_job
from l1bn.sim.fpga.families import resolve_target
from l1bn.sim.fpga.pnr import pnr_ecp5_json
from l1bn.sim.fpga.steps import ECP5Job, EnergyJob, fpga_job
from l1bn.sim.fpga.synth import synth_ecp5_text
from l1bn.sim.report.units import forward_beats
from l1bn.sim.simulate.mac import random_tiles
from l1bn.spec.reference.mac import encode_weights
from l1bn.spec.words import pack

from .grid import MAC_K, MAC_TILES, point_config, point_id
from .keys import source_digest

__all__ = ["stimulus", "evaluate"]


def stimulus(p: dict) -> dict:
    """The input beats of a point's gate-level run: ``{"beats", "expect_out", "items"}``; items =
    elements (BN) or MACs (MAC) the run computes."""
    cfg = point_config(p)
    if p["design"] == "bn":
        beats, elems = forward_beats(cfg)
        return {"beats": beats, "expect_out": elems // cfg.lanes, "items": elems}
    # one beat = hw.mac_array.in_layout: rows weights (binary: 0 -> +1, 1 -> -1), cols
    # activations, then last
    widths = [cfg.wbits] * cfg.rows + [cfg.abits] * cfg.cols + [1]
    beats = []
    for t in random_tiles(cfg, MAC_TILES, MAC_K, seed=0):
        w = np.asarray(encode_weights(np.array(t["w"]), cfg)).T             # (K, rows)
        last = (np.arange(MAC_K) == MAC_K - 1)[:, None]
        fields = np.concatenate([w, np.array(t["a"]), last], axis=1)      # (K, rows + cols + 1)
        beats += [{"i__payload": v} for v in pack(fields, widths)]
    return {"beats": beats, "expect_out": cfg.rows * MAC_TILES, "items": cfg.rows * cfg.cols * MAC_K * MAC_TILES}


def _component(p: dict):
    cfg = point_config(p)
    if p["design"] == "bn":
        from l1bn.hw.bn_unit import bn_unit_for

        return bn_unit_for(cfg)
    from l1bn.hw.mac_array import MACArray

    return MACArray(cfg)


def _formula_cycles(p: dict) -> int:
    cfg = point_config(p)
    if p["design"] == "bn":
        from l1bn.hw.bn_unit import bn_latency_cycles

        return bn_latency_cycles(cfg)
    from l1bn.hw.mac_array import stream_cycles

    return stream_cycles(cfg, MAC_K, MAC_TILES)


def _per(p: dict) -> str:
    return "element" if p["design"] == "bn" else "mac"


def _eval_family(p: dict, options: dict, wd: Path) -> dict:
    """Synthesis once, fit check and nextpnr per seed on the family of ``options["fpga"]``, with
    the Verilog and recipe of the report's step (:func:`~l1bn.sim.fpga.steps.fpga_job`)."""
    fo = options["fpga"]
    target = resolve_target(fo["family"], fo["device"], fo["dsp"])
    fam, dev = target.family, target.device
    name = point_id(p)
    s = fam.synthesize(fpga_job(_component(p), name=name, target=target, pnr=False).verilog, wd / "fpga",
                       device=dev if dev is not None else fam.devices[0], dsp=target.dsp)
    fig = {"lut": s["lut"], "carry": s.get("carry", s.get("ccu2")), "ff": s["ff"], "dsp": s["dsp"],
           "bram": s["bram"], "le": None, "fmax_mhz": None, "fmax_seeds": None, "device": None}
    if options["pnr"]:
        if dev is not None:
            fam.check_fit(s, dev)
        fmax = []
        for seed in range(1, options["seeds"] + 1):
            r = fam.place_and_route(wd / "fpga", dev, seed=seed, counts=s)
            fmax.append(r["fmax_mhz"])
            fig.update(device=r["device"], le=r["le"])   # the packing, so the sites, are the seeds' same
        fig["fmax_mhz"] = round(statistics.median(fmax), 2)
        fig["fmax_seeds"] = " ".join(f"{f:g}" for f in fmax)
    return fig


def _eval_fpga(p: dict, options: dict, stim: dict | None, wd: Path) -> dict:
    """The flow's ``ecp5`` step (synthesis once, nextpnr per seed) and ``energy`` step; the
    Verilog comes from :class:`~l1bn.sim.fpga.steps.ECP5Job`, so the recipe is exactly ``l1bn report``'s.
    With ``options["fpga"]`` (``--family``) the first part is :func:`_eval_family`; the energy
    step is the same for every family."""
    name = point_id(p)
    if options.get("fpga") is not None:
        fig = _eval_family(p, options, wd)
        return _energy_and_latency(p, options, stim, wd, fig)
    s = synth_ecp5_text(ECP5Job(_component(p), name=name, pnr=False).verilog, wd / "ecp5")
    fig = {k: s[k] for k in ("lut", "ff", "ccu2", "dsp", "bram")}
    fig.update(fmax_mhz=None, fmax_seeds=None, device=None)
    if options["pnr"]:
        fmax = []
        for seed in range(1, options["seeds"] + 1):
            r = pnr_ecp5_json(wd / "ecp5", lut=s["lut"], dsp=s["dsp"], bram=s["bram"], seed=seed)
            fmax.append(r["fmax_mhz"])
            fig["device"] = r["device"]
        fig["fmax_mhz"] = round(statistics.median(fmax), 2)
        fig["fmax_seeds"] = " ".join(f"{f:g}" for f in fmax)
    return _energy_and_latency(p, options, stim, wd, fig)


def _energy_and_latency(p: dict, options: dict, stim: dict | None, wd: Path, fig: dict) -> dict:
    """Add the ``energy`` step's transistors, measured cycles and energy, and the latency in ns."""
    name = point_id(p)
    fig.update(transistors=None, cycles=_formula_cycles(p), latency_ns=None, **{f"energy_per_{_per(p)}": None})
    if options["energy"]:
        extra = {"max_cycles": options["max_cycles"]} if options.get("max_cycles") else {}
        job = EnergyJob(_component(p), name=name, beats=stim["beats"], expect_out=stim["expect_out"], **extra)
        e = job.execute(wd / "energy")
        fig.update(transistors=e["transistors"], cycles=e["cycles"])
        fig[f"energy_per_{_per(p)}"] = round(e["energy"] / stim["items"], 3)
    if fig["fmax_mhz"]:
        fig["latency_ns"] = round(fig["cycles"] * 1000 / fig["fmax_mhz"], 1)
    return fig


def _eval_asic(p: dict, options: dict, stim: dict | None, wd: Path) -> dict:
    """NanGate45 synthesis, OpenSTA delay and, with ``energy``, the library power model on the
    gate-level run: the flow's ``asic`` step (:func:`l1bn.sim.asic.step.asic_job`), as
    ``l1bn report --target asic``."""
    kw = dict(sim="stream", beats=stim["beats"], expect_out=stim["expect_out"]) if options["energy"] else {}
    job = asic_job(_component(p), name=point_id(p), **kw)
    r = job.execute(wd / "asic")
    fig = {"area_um2": round(r["area_um2"], 1), "delay_ns": r["delay_ns"], "fmax_mhz": r["fmax_mhz"],
           "cycles": _formula_cycles(p), f"energy_pj_per_{_per(p)}": None}
    if options["energy"]:
        fig["cycles"] = r["cycles"]
        # dynamic energy of the run + leakage over the simulated cycles at the design's own Fmax
        leak_pj = r["leakage_nw"] * r["cycles_total"] * r["delay_ns"] * 1e-6   # nW x ns = 1e-6 pJ
        fig[f"energy_pj_per_{_per(p)}"] = round((r["dynamic_fj"] / 1000 + leak_pj) / stim["items"], 5)
    fig["latency_ns"] = round(fig["cycles"] * r["delay_ns"], 1)
    return fig


_EVALUATORS = {"fpga": _eval_fpga, "asic": _eval_asic}


def _error_text(e: BaseException, workdir: str) -> str:
    """One line, without the worker's scratch path (so that the text is the same everywhere)."""
    msg = f"{type(e).__name__}: {e}"
    for attr in ("stderr", "stdout"):
        extra = getattr(e, attr, None)
        if extra:
            tail = str(extra).strip().splitlines()[-3:]
            msg += " | " + " | ".join(tail)
    msg = msg.replace(os.path.realpath(workdir), "<work>").replace(workdir, "<work>")
    return " ".join(msg.split())[:600]


def evaluate(p: dict, options: dict, stim: dict | None, *, workdir) -> dict:
    """Run one design point in ``workdir`` (a worker's scratch folder): its figures, or its error.

    Never raises for a tool's failure: returns ``{"status": "failed", "error": ...}`` so that the
    sweep records it and goes on. Also returns the worker's host, process id, seconds and
    :func:`source_digest` (the client warns when it differs from its own).
    """
    t0 = time.perf_counter()
    out = {"id": point_id(p), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        out["digest"] = source_digest()
        out["figures"] = _EVALUATORS[p["target"]](p, options, stim, Path(workdir))
        out["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - a point's failure is data, recorded with its error
        out["status"] = "failed"
        out["error"] = _error_text(e, str(workdir))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
