"""Design-space sweeps (``l1bn sweep``): a grid of BN units or MAC arrays through the flow, on
local worker processes or a Dask cluster, with a cache, a CSV/JSON table and Pareto plots.

Grid
----
A :class:`Sweep` holds, per parameter, a tuple of values; the design points are their product,
in the order of :data:`DESIGNS` (then ``target``):

- ``design="bn"``: ``norm`` (from ``BNConfig.NORMS``) x ``width`` x ``n`` x ``lanes`` x
  ``channels``; each point is the forward unit of :func:`l1bn.sim.report.forward_config` (the
  configuration ``l1bn report`` measures);
- ``design="mac"``: ``rows`` x ``cols`` x ``wbits`` x ``abits`` (signed operands, accumulator
  for K = :data:`MAC_K`);
- ``target``: ``fpga`` (ECP5 area, nextpnr Fmax, generic-gate energy) and, where
  :mod:`l1bn.sim.asic` is installed, ``asic`` (NanGate45 area, OpenSTA delay, library energy).

A single value that is out of range is an error for the whole sweep (``ValueError`` naming it);
a combination that no configuration allows (``lanes`` not dividing ``n``, ...) is a point with
status ``invalid`` and its error, and the rest of the sweep runs.

What one point costs (in a worker; :func:`evaluate`)
------------------------------------------------------
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

Cache
-----
The client keeps each successful point as ``<build>/flow-cache/sweep-<key>.json``; the key hashes
the point, the options that change its figures (pnr, seeds, energy, max_cycles), the flow and
step versions, the tool versions and a digest of the l1bn sources that make the design, the flow
and the stimulus (:func:`source_digest`). A rerun reads those and runs only the rest; a failed
point is never cached, so a rerun tries it again.

Outputs (:func:`write_outputs`)
-------------------------------
``results.csv`` (one row per point, sorted by parameters, design figures only: two runs of the
same sweep, local or distributed, write identical files), ``results.json`` (the same rows plus
the grid and options), ``run.json`` (run facts: time, executor, hosts, per-point seconds, cache
hits, resubmissions), ``pareto_area_latency.png`` and ``pareto_energy_latency.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import importlib.util
import io
import itertools
import json
import os
import socket
import statistics
import sys
import time
import tomllib
from pathlib import Path

__all__ = ["DESIGNS", "MAC_K", "MAC_TILES", "Sweep", "sweep_from_options", "targets", "norms",
           "parse_list", "point_id", "point_config", "source_digest", "point_key", "evaluate",
           "run_sweep", "pareto_front", "write_outputs", "SWEEP_VERSION"]

SWEEP_VERSION = "2"   # 2: the ECP5 Verilog through flow.Job (DSP primitives, as the report)

#: per design: its grid parameters (in grid and sort order) and their defaults
DESIGNS = {
    "bn": {"norm": None, "width": (8,), "n": (64,), "lanes": (1,), "channels": (4,)},
    "mac": {"rows": (4,), "cols": (4,), "wbits": (4,), "abits": (4,)},
}
#: MAC points: accumulator sized for K = MAC_K; energy on MAC_TILES tiles of K = MAC_K
MAC_K = 64
MAC_TILES = 2


def norms() -> tuple[str, ...]:
    """The norms a BN unit may have: ``BNConfig.NORMS`` (the spec's registry), never a copy."""
    from l1bn.spec.config import BNConfig

    return tuple(BNConfig.NORMS)


def targets() -> tuple[str, ...]:
    """``("fpga",)``, plus ``"asic"`` where :mod:`l1bn.sim.asic` is present."""
    return ("fpga", "asic") if importlib.util.find_spec("l1bn.sim.asic") else ("fpga",)


# ---------------------------------------------------------------------------------------------
# the grid

def parse_list(name: str, value, kind: type) -> tuple:
    """``"4,8,16"`` (or a list, or one value) -> ``(4, 8, 16)`` of ``kind``; no empties, no repeats."""
    if isinstance(value, str):
        items = [t.strip() for t in value.split(",")]
        if any(not t for t in items):
            raise ValueError(f"{name}={value!r} has an empty item; give e.g. {name} 4,8")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    out = []
    for t in items:
        if kind is int:
            if isinstance(t, bool):
                raise ValueError(f"{name}={t!r} must be an integer")
            try:
                t = int(t)
            except (TypeError, ValueError):
                raise ValueError(f"{name}={value!r} must be comma-separated integers, e.g. 4,8") from None
        elif not isinstance(t, str):
            raise ValueError(f"{name}={t!r} must be a name")
        out.append(t)
    if not out:
        raise ValueError(f"{name}={value!r} is empty")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={value!r} repeats a value")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A design-space sweep: the grid and the options that change the figures.

    Parameters
    ----------
    design : {"bn", "mac"}
    grid : dict
        Every parameter of ``DESIGNS[design]`` and ``target`` -> tuple of values.
    pnr : bool
        Place and route (Fmax, latency in ns); without it only cycles.
    seeds : int, 1..15
        nextpnr seeds 1..seeds; Fmax is their median.
    energy : bool
        Gate-level simulation (transistors, measured cycles, energy).
    max_cycles : int or None
        Give up a gate-level simulation after this many cycles (the point fails); default
        10 x beats + 10000.
    """

    design: str
    grid: dict
    pnr: bool = True
    seeds: int = 3
    energy: bool = True
    max_cycles: int | None = None

    @property
    def params(self) -> tuple[str, ...]:
        """Grid parameters in order, ``target`` last."""
        return (*DESIGNS[self.design], "target")

    def points(self) -> list[dict]:
        """Every design point of the grid: ``{"design": ..., param: value, ..., "target": ...}``."""
        names = self.params
        return [{"design": self.design, **dict(zip(names, vals, strict=True))}
                for vals in itertools.product(*(self.grid[k] for k in names))]

    def options(self) -> dict:
        """The options that change a point's figures (they are part of its cache key)."""
        o = {"pnr": self.pnr, "energy": self.energy}
        if self.pnr:
            o["seeds"] = self.seeds
        if self.energy:
            o["max_cycles"] = self.max_cycles
        return o


def _check_values(design: str, grid: dict) -> None:
    """Each value alone (others at their defaults) must make a valid configuration."""
    from l1bn.spec.config import check_choice

    check_choice("design", design, tuple(DESIGNS))
    for t in grid["target"]:
        check_choice("target", t, targets())
    base = {"design": design, "target": "fpga", **{k: (v[0] if v else None) for k, v in DESIGNS[design].items()}}
    if design == "bn":
        base["norm"] = norms()[0]
        for v in grid["norm"]:
            check_choice("norm", v, norms())
    for name in DESIGNS[design]:
        if name == "norm":
            continue
        for v in grid[name]:
            point = {**base, name: v}
            if name == "lanes":   # whether lanes divides n is a combination question
                point["n"] = 64 * v
            point_config(point)


def sweep_from_options(*, design: str | None = None, spec: str | Path | None = None, **given) -> Sweep:
    """A :class:`Sweep` from ``--spec FILE.toml`` values overridden by the options ``given``
    (comma lists or lists; ``None`` = not given). Raises ``ValueError`` naming a bad value.

    The TOML file holds the same names as the command line: ``design = "bn"``,
    ``norm = ["l1", "l2"]`` (or ``"l1,l2"``), ``width = [4, 8]``, ``target = "fpga"``,
    ``pnr = false``, ``seeds = 3``, ``energy = true``, ``max_cycles = 20000``.
    """
    from l1bn.spec.config import check_int

    data: dict = {}
    if spec is not None:
        try:
            data = tomllib.loads(Path(spec).read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"spec {spec}: {e}") from None
        except OSError as e:
            raise ValueError(f"spec {spec}: cannot read it ({e.strerror})") from None
    design = design or data.pop("design", "bn")
    data.pop("design", None)
    if design not in DESIGNS:
        raise ValueError(f"design={design!r} is not allowed; choose one of {', '.join(DESIGNS)}")
    options = {"pnr": True, "seeds": 3, "energy": True, "max_cycles": None}
    allowed = set(DESIGNS[design]) | {"target"} | set(options)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"spec {spec}: unknown key(s) {', '.join(unknown)} for design {design!r}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    values = {**data, **{k: v for k, v in given.items() if v is not None}}
    bad = sorted(set(values) - allowed)
    if bad:
        raise ValueError(f"{', '.join(bad)} do not apply to design {design!r}")
    grid = {}
    for name, default in DESIGNS[design].items():
        kind = str if name == "norm" else int
        if default is None:
            default = norms()
        grid[name] = parse_list(name, values.get(name, default), kind)
    grid["target"] = parse_list("target", values.get("target", "fpga"), str)
    for k in options:
        if k in values:
            options[k] = values[k]
    for k in ("pnr", "energy"):
        if not isinstance(options[k], bool):
            raise ValueError(f"{k}={options[k]!r} must be true or false")
    check_int("seeds", options["seeds"], 1, 15)
    if options["max_cycles"] is not None:
        check_int("max_cycles", options["max_cycles"], 1, 10**8)
    _check_values(design, grid)
    return Sweep(design=design, grid=grid, **options)


def point_id(p: dict) -> str:
    """A short unique name: ``bn-l1-w8-n64-x1-c4-fpga``, ``mac-4x4-w4a4-fpga``."""
    if p["design"] == "bn":
        return f"bn-{p['norm']}-w{p['width']}-n{p['n']}-x{p['lanes']}-c{p['channels']}-{p['target']}"
    return f"mac-{p['rows']}x{p['cols']}-w{p['wbits']}a{p['abits']}-{p['target']}"


def point_config(p: dict):
    """The ``BNConfig`` / ``MACConfig`` of a point (``ValueError`` when no configuration allows it)."""
    if p["design"] == "bn":
        from .report import forward_config

        return forward_config(p["norm"], p["width"], n=p["n"], lanes=p["lanes"], channels=p["channels"])
    from l1bn.spec.config import MACConfig

    return MACConfig(rows=p["rows"], cols=p["cols"], wbits=p["wbits"], abits=p["abits"], k=MAC_K)


def _cost(p: dict) -> int:
    """A rough relative cost, to start the big points first (less idle time at the end)."""
    if p["design"] == "bn":
        return p["channels"] * p["n"] * p["width"] * (2 if p["norm"] != "l1" else 1)
    return p["rows"] * p["cols"] * p["wbits"] * p["abits"]


# ---------------------------------------------------------------------------------------------
# cache keys

# the generators and their configs, the flow steps, and the stimulus: the trained capture model
# itself is cached on disk by its own name (l1bn.sw.capture), so its training code is not hashed
_SOURCE_PARTS = (("l1bn.spec", None), ("l1bn.hw", None), ("l1bn.sw", ("capture.py",)),
                 ("l1bn.sim", ("flow.py", "runner.py", "report.py", "sweep.py", "asic.py", "sim_mac.py")))


@functools.cache
def source_digest() -> str:
    """sha256 (16 hex digits) of the l1bn sources that make a point's design, flow and stimulus
    (``spec``, ``hw``, ``sw/capture.py`` and the flow modules of ``sim``), as installed here.
    Computed once per process, from the files as they are at the first call."""
    h = hashlib.sha256()
    for pkg, only in _SOURCE_PARTS:
        spec = importlib.util.find_spec(pkg)
        root = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(root.rglob("*.py")) if only is None else [root / f for f in only if (root / f).exists()]
        for f in files:
            h.update(f"{pkg}/{f.relative_to(root).as_posix()}\0".encode())
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:16]


def point_key(p: dict, options: dict) -> str:
    """The cache key of a point's figures (see the module docstring)."""
    from .flow import _STEP_VERSION, FLOW_VERSION, tool_versions

    extra = {}
    if p["target"] == "asic":
        from .asic import asic_params

        extra = asic_params()
    blob = json.dumps({"v": SWEEP_VERSION, "point": p, "options": options, "flow": FLOW_VERSION,
                       "steps": _STEP_VERSION, "tools": tool_versions(), "source": source_digest(),
                       "asic": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# stimulus (client) and evaluation (worker)

def stimulus(p: dict) -> dict:
    """The input beats of a point's gate-level run: ``{"beats", "expect_out", "items"}``; items =
    elements (BN) or MACs (MAC) the run computes."""
    cfg = point_config(p)
    if p["design"] == "bn":
        from .report import forward_beats

        beats, elems = forward_beats(cfg)
        return {"beats": beats, "expect_out": elems // cfg.lanes, "items": elems}
    import numpy as np
    from l1bn.spec.reference.mac import encode_weights
    from l1bn.spec.words import pack

    from .sim_mac import random_tiles

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


def _eval_fpga(p: dict, options: dict, stim: dict | None, wd: Path) -> dict:
    """The flow's ``ecp5`` step (synthesis once, nextpnr per seed) and ``energy`` step; the
    Verilog comes from :class:`l1bn.sim.flow.Job`, so the recipe is exactly ``l1bn report``'s."""
    from .flow import Job, _run_job, pnr_ecp5_json, synth_ecp5_text

    name = point_id(p)
    s = synth_ecp5_text(Job("ecp5", _component(p), name=name, pnr=False).verilog, wd / "ecp5")
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
    fig.update(transistors=None, cycles=_formula_cycles(p), latency_ns=None, **{f"energy_per_{_per(p)}": None})
    if options["energy"]:
        extra = {"max_cycles": options["max_cycles"]} if options.get("max_cycles") else {}
        job = Job("energy", _component(p), name=name, beats=stim["beats"], expect_out=stim["expect_out"], **extra)
        e = _run_job("energy", job.verilog, job.params, str(wd / "energy"))
        fig.update(transistors=e["transistors"], cycles=e["cycles"])
        fig[f"energy_per_{_per(p)}"] = round(e["energy"] / stim["items"], 3)
    if fig["fmax_mhz"]:
        fig["latency_ns"] = round(fig["cycles"] * 1000 / fig["fmax_mhz"], 1)
    return fig


def _eval_asic(p: dict, options: dict, stim: dict | None, wd: Path) -> dict:
    """NanGate45 synthesis, OpenSTA delay and, with ``energy``, the library power model on the
    gate-level run: the flow's ``asic`` step (:func:`l1bn.sim.asic.asic_job`), as
    ``l1bn report --target asic``."""
    from .asic import asic_job
    from .flow import _run_job

    kw = dict(sim="stream", beats=stim["beats"], expect_out=stim["expect_out"]) if options["energy"] else {}
    job = asic_job(_component(p), name=point_id(p), **kw)
    r = _run_job("asic", job.verilog, job.params, str(wd / "asic"))
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


# ---------------------------------------------------------------------------------------------
# columns, Pareto fronts

def figure_columns(design: str, tgts) -> list[str]:
    """The figure columns of ``results.csv`` for ``design`` and the targets present."""
    per = "element" if design == "bn" else "mac"
    cols = []
    if "fpga" in tgts:
        cols += ["lut", "ff", "ccu2", "dsp", "bram", "fmax_mhz", "fmax_seeds", "device", "transistors"]
    if "asic" in tgts:
        cols += ["area_um2", "delay_ns"] + (["fmax_mhz"] if "fpga" not in tgts else [])
    cols += ["cycles", "latency_ns"]
    if "fpga" in tgts:
        cols.append(f"energy_per_{per}")
    if "asic" in tgts:
        cols.append(f"energy_pj_per_{per}")
    return cols


def metrics(row: dict, design: str) -> dict:
    """(area, latency, energy) of a result row for the Pareto fronts, with their axis labels;
    a value is None when the sweep did not measure it."""
    per = "element" if design == "bn" else "mac"
    if row["target"] == "asic":
        return {"area": row.get("area_um2"), "area_label": "area (um^2, NanGate45)",
                "latency": row.get("latency_ns"), "latency_label": "latency (ns, one batch)"
                if design == "bn" else "latency (ns, two tiles)",
                "energy": row.get(f"energy_pj_per_{per}"), "energy_label": f"energy per {per} (pJ)"}
    lat, lab = row.get("latency_ns"), "latency (ns"
    if lat is None:
        lat, lab = row.get("cycles"), "latency (cycles"
    return {"area": row.get("lut"), "area_label": "area (ECP5 LUT4)", "latency": lat,
            "latency_label": lab + (", one batch)" if design == "bn" else ", two tiles)"),
            "energy": row.get(f"energy_per_{per}"),
            "energy_label": f"energy per {per} (fan-out-weighted toggles)"}


def pareto_front(xy: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats in both coordinates (both minimized; a
    point equal to a front point is on the front too), in increasing x."""
    order = sorted(range(len(xy)), key=lambda i: (xy[i][0], xy[i][1]))
    front, best = [], None
    for i in order:
        y = xy[i][1]
        if best is None or y < best or (front and xy[front[-1]] == xy[i]):
            front.append(i)
            best = y if best is None else min(best, y)
    return front


def _mark_pareto(rows: list[dict], design: str) -> None:
    for kind in ("area", "energy"):
        col = f"pareto_{kind}"
        for r in rows:
            r[col] = None
        for t in sorted({r["target"] for r in rows}):
            pts = [(r, metrics(r, design)) for r in rows if r["target"] == t and r["status"] == "ok"]
            pts = [(r, m) for r, m in pts if m["latency"] is not None and m[kind] is not None]
            front = set(pareto_front([(m["latency"], m[kind]) for _, m in pts]))
            for i, (r, _) in enumerate(pts):
                r[col] = 1 if i in front else 0


# ---------------------------------------------------------------------------------------------
# the driver

def _cache_path(key: str, cache: Path | None) -> Path:
    from .flow import cache_dir

    return (cache or cache_dir()) / f"sweep-{key[:24]}.json"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_sweep(sweep: Sweep, out, *, executor=None, workers: int | None = None, scheduler: str | None = None,
              console=None, use_cache: bool = True, cache=None, on_result=None, command=None) -> dict:
    """Run ``sweep``; write its outputs into ``out``; return ``{"rows", "run", "paths"}``.

    Parameters
    ----------
    executor : l1bn.sim.executors.Executor, optional
        Where points run; default ``make_executor(workers, scheduler)`` (closed afterwards).
    console : rich.console.Console or False
        Progress bar (done / failed / running); False: none.
    use_cache : bool
        Read cached points (fresh results are always written).
    cache : path, optional
        Cache folder (default ``<build>/flow-cache``).
    on_result : callable, optional
        ``on_result(point_id, row, counts)`` after each computed point, in the client.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors import call_in_scratch, make_executor, run_tasks

    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache is not None else None
    options = sweep.options()
    points = sweep.points()
    params = sweep.params
    rows: dict[str, dict] = {}
    facts: dict[str, dict] = {}
    todo: dict[str, dict] = {}
    keys: dict[str, str] = {}
    fig_cols = figure_columns(sweep.design, sweep.grid["target"])

    def row_of(p, status, figures=None, error=None):
        r = {k: p[k] for k in params}
        r["status"] = status
        for c in fig_cols:
            r[c] = (figures or {}).get(c)
        r["error"] = error
        return r

    for p in points:
        pid = point_id(p)
        try:
            point_config(p)
        except ValueError as e:
            rows[pid] = row_of(p, "invalid", error=str(e))
            continue
        keys[pid] = point_key(p, options)
        hit = None
        if use_cache:
            try:
                hit = json.loads(_cache_path(keys[pid], cache).read_text())
            except (OSError, ValueError):
                hit = None
        if hit is not None:
            rows[pid] = row_of(p, "ok", hit["figures"])
            facts[pid] = {"cached": True}
        else:
            todo[pid] = p
    counts = {"done": sum(1 for r in rows.values() if r["status"] == "ok"), "failed": 0, "running": 0,
              "cached": len(facts), "invalid": sum(1 for r in rows.values() if r["status"] == "invalid")}
    mismatch = set()
    own = executor is None
    # connect first: a bad --scheduler is an error before any work
    ex = (executor if not own else make_executor(workers, scheduler)) if todo else None
    resubmitted = 0
    with Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  "
                             "running {task.fields[running]}"), TimeElapsedColumn(),
                  console=console, transient=False, disable=console is False) as prog:
        bar = prog.add_task("sweep", total=len(points), completed=counts["done"] + counts["invalid"],
                            done=counts["done"], failed=counts["invalid"], running=0)

        def show(running=None):
            if running is not None:
                counts["running"] = running
            prog.update(bar, completed=counts["done"] + counts["failed"] + counts["invalid"],
                        done=counts["done"], failed=counts["failed"] + counts["invalid"],
                        running=counts["running"])

        def finished(pid, res):
            p = todo[pid]
            facts[pid] = {"cached": False, "seconds": res["seconds"], "host": res["host"], "pid": res["pid"]}
            if res.get("digest") and res["digest"] != source_digest():
                mismatch.add(f"{res['host']}:{res['pid']} runs l1bn sources {res['digest']}, "
                             f"the client {source_digest()}")
            if res["status"] == "ok":
                # through JSON, so that a fresh row equals a cached one
                figures = json.loads(json.dumps(res["figures"]))
                _write_atomic(_cache_path(keys[pid], cache),
                              json.dumps({"point": p, "figures": figures}, indent=1, sort_keys=True))
                rows[pid] = row_of(p, "ok", figures)
                counts["done"] += 1
            else:
                rows[pid] = row_of(p, "failed", error=res["error"])
                counts["failed"] += 1
            show()
            if on_result is not None:
                on_result(pid, rows[pid], dict(counts))

        def lost(pid, exc):   # the executor could not run it (worker lost too often, ...)
            finished(pid, {"status": "failed", "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:600],
                           "seconds": None, "host": None, "pid": None})

        if todo:
            try:
                stims = {}
                for pid, p in list(todo.items()):
                    try:
                        stims[pid] = stimulus(p) if sweep.energy else None
                    except Exception as e:  # noqa: BLE001 - this point fails, the sweep goes on
                        finished(pid, {"status": "failed", "error": f"stimulus: {type(e).__name__}: {e}",
                                       "seconds": None, "host": None, "pid": None})
                order = sorted(stims, key=lambda k: -_cost(todo[k]))
                tasks = {pid: (call_in_scratch, (evaluate, todo[pid], options, stims[pid])) for pid in order}
                resubmitted = run_tasks(ex, tasks, on_done=finished, on_error=lost, on_tick=show)["resubmitted"]
            except BaseException:
                if own:
                    ex.shutdown(wait=False, cancel_futures=True)
                raise
    info = ex.info() if ex is not None else {"kind": "none"}
    if own and ex is not None:
        ex.shutdown()
    ordered = [rows[point_id(p)] for p in points]
    ordered.sort(key=lambda r: tuple(r[k] for k in params))
    _mark_pareto(ordered, sweep.design)
    run = {"command": command, "started_utc": started, "seconds": round(time.perf_counter() - t0, 1),
           "executor": info, "points": len(points), "computed": len(todo), "cached": counts["cached"],
           "ok": counts["done"], "failed": counts["failed"], "invalid": counts["invalid"],
           "resubmitted": resubmitted, "source_digest": source_digest(), "warnings": sorted(mismatch),
           "python": sys.version.split()[0], "per_point": {k: facts[k] for k in sorted(facts)}}
    paths = write_outputs(sweep, ordered, run, out)
    return {"rows": ordered, "run": run, "paths": paths}


# ---------------------------------------------------------------------------------------------
# outputs

def _cell(v) -> str:
    if v is None:
        return ""
    return str(v)


def results_csv(sweep: Sweep, rows: list[dict]) -> str:
    """The text of ``results.csv``: parameters, status, figures, Pareto flags, error."""
    cols = [*sweep.params, "status", *figure_columns(sweep.design, sweep.grid["target"]),
            "pareto_area", "pareto_energy", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in cols])
    return buf.getvalue()


def write_outputs(sweep: Sweep, rows: list[dict], run: dict, out: Path) -> dict:
    """``results.csv``, ``results.json``, ``run.json`` and the Pareto PNGs in ``out``."""
    from .flow import FLOW_VERSION, tool_versions

    out = Path(out)
    paths = {"csv": out / "results.csv", "json": out / "results.json", "run": out / "run.json"}
    _write_atomic(paths["csv"], results_csv(sweep, rows))
    res = {"design": sweep.design, "grid": {k: list(v) for k, v in sweep.grid.items()},
           "options": sweep.options(), "flow_version": FLOW_VERSION, "tools": tool_versions(),
           "mac_k": MAC_K if sweep.design == "mac" else None, "points": rows}
    _write_atomic(paths["json"], json.dumps(res, indent=1) + "\n")
    _write_atomic(paths["run"], json.dumps(run, indent=1) + "\n")
    paths["png"] = plot_pareto(sweep, rows, out)
    return paths


def _label(r: dict) -> str:
    if "norm" in r:
        return f"w{r['width']} n{r['n']} x{r['lanes']} c{r['channels']}"
    return f"{r['rows']}x{r['cols']} w{r['wbits']}a{r['abits']}"


def plot_pareto(sweep: Sweep, rows: list[dict], out: Path) -> list[Path]:
    """``pareto_area_latency.png`` and ``pareto_energy_latency.png`` (one panel per target):
    every measured point, the front joined by a line, L1 and L2 (and any other norm) marked
    apart; a plot whose figures the sweep did not measure is not written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tgts = [t for t in sweep.grid["target"]]
    styles = {"l1": ("o", "tab:blue", "L1 (sign/abs)"), "l2": ("s", "tab:orange", "L2 (square/sqrt)")}
    others = itertools.cycle([("^", "tab:green"), ("D", "tab:purple"), ("v", "tab:brown")])
    for kind, fname in (("area", "pareto_area_latency.png"), ("energy", "pareto_energy_latency.png")):
        panels = []
        for t in tgts:
            pts = [(r, metrics(r, sweep.design)) for r in rows if r["target"] == t and r["status"] == "ok"]
            pts = [(r, m) for r, m in pts if m["latency"] is not None and m[kind] is not None]
            if pts:
                panels.append((t, pts))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
        for ax, (t, pts) in zip(axes[0], panels, strict=True):
            if sweep.design == "bn":
                groups = {}
                for r, m in pts:
                    groups.setdefault(r["norm"], []).append((r, m))
                for norm, g in sorted(groups.items()):
                    if norm not in styles:
                        mk, col = next(others)
                        styles[norm] = (mk, col, norm.upper())
                    mk, col, lab = styles[norm]
                    ax.scatter([m["latency"] for _, m in g], [m[kind] for _, m in g], marker=mk, color=col,
                               label=lab, s=36, alpha=0.85, zorder=3)
            else:
                for wb in sorted({r["wbits"] for r, _ in pts}):
                    g = [(r, m) for r, m in pts if r["wbits"] == wb]
                    ax.scatter([m["latency"] for _, m in g], [m[kind] for _, m in g], s=36, alpha=0.85,
                               label=f"{wb}-bit weights", zorder=3)
            front = [pts[i] for i in pareto_front([(m["latency"], m[kind]) for _, m in pts])]
            ax.step([m["latency"] for _, m in front], [m[kind] for _, m in front], where="post",
                    color="black", lw=1, zorder=2, label="Pareto front")
            ax.scatter([m["latency"] for _, m in front], [m[kind] for _, m in front], s=90,
                       facecolors="none", edgecolors="black", zorder=4)
            for r, m in front:
                tag = (r["norm"].upper() + " " if sweep.design == "bn" else "") + _label(r)
                ax.annotate(tag, (m["latency"], m[kind]), textcoords="offset points", xytext=(5, 4), fontsize=7)
            m0 = pts[0][1]
            ax.set_xlabel(m0["latency_label"])
            ax.set_ylabel(m0[f"{kind}_label"])
            for axis, vals in (("x", [m["latency"] for _, m in pts]), ("y", [m[kind] for _, m in pts])):
                if min(vals) > 0 and max(vals) / min(vals) > 20:   # log only where it spreads
                    getattr(ax, f"set_{axis}scale")("log")
            ax.set_title(f"{sweep.design.upper()} sweep, {t}: {kind} against latency")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
