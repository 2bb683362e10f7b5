"""The grid of a design-space sweep (``l1bn sweep``): its parameters, values and design points.

A :class:`Sweep` holds, per parameter, a tuple of values; the design points are their product,
in the order of :data:`DESIGNS` (then ``target``):

- ``design="bn"``: ``norm`` (from ``BNConfig.NORMS``) x ``width`` x ``n`` x ``lanes`` x
  ``channels``; each point is the forward unit of :func:`l1bn.sim.report.units.forward_config` (the
  configuration ``l1bn report`` measures);
- ``design="mac"``: ``rows`` x ``cols`` x ``wbits`` x ``abits`` (signed operands, accumulator
  for K = :data:`MAC_K`);
- ``target``: ``fpga`` (ECP5 area, nextpnr Fmax, generic-gate energy) and, where
  :mod:`l1bn.sim.asic` is installed, ``asic`` (NanGate45 area, OpenSTA delay, library energy).

A single value that is out of range is an error for the whole sweep (``ValueError`` naming it);
a combination that no configuration allows (``lanes`` not dividing ``n``, ...) is a point with
status ``invalid`` and its error, and the rest of the sweep runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import tomllib
from pathlib import Path

from l1bn.sim.report.units import forward_config
from l1bn.spec.norms import norm_spec

__all__ = ["DESIGNS", "MAC_K", "MAC_TILES", "Sweep", "sweep_from_options", "targets", "norms", "parse_list",
           "point_id", "point_config", "point_cost"]

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
            if isinstance(t, bool | float):   # a TOML 4.5 would be truncated to 4 without a word
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
    family, device, dsp : optional
        The FPGA of the ``fpga`` points (:func:`l1bn.sim.fpga.families.resolve_target`); all None:
        ECP5 as before the family layer. ``family`` is set whenever one of them is given.
    """

    design: str
    grid: dict
    pnr: bool = True
    seeds: int = 3
    energy: bool = True
    max_cycles: int | None = None
    family: str | None = None
    device: str | None = None
    dsp: bool | None = None

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
        if self.family is not None:   # (absent for the default ECP5: its points keep their keys)
            from l1bn.sim.fpga.families import tool_version

            t = self.fpga_target()
            o["fpga"] = {"family": t.family.name, "device": t.device.name if t.device else None, "dsp": t.dsp,
                         "pnr_tool": tool_version(t.family)}
        return o

    def fpga_target(self):
        """The :class:`~l1bn.sim.fpga.families.Target` of the ``fpga`` points (None: default ECP5)."""
        if self.family is None:
            return None
        from l1bn.sim.fpga.families import resolve_target

        return resolve_target(self.family, self.device, self.dsp)


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
                point["n"] = 64 * max(v, 1)   # (lanes 0 is refused as lanes, not as n=0)
            try:
                point_config(point)
            except ValueError as e:   # the error names the option the user gave, then the cause
                if str(e).startswith(f"{name}="):
                    raise
                how = " (a BN point has recip_bits = width + 12)" if name == "width" and design == "bn" else ""
                raise ValueError(f"{name}={v} is not allowed: its design point is invalid ({e}){how}") from None


def sweep_from_options(*, design: str | None = None, spec: str | Path | None = None, **given) -> Sweep:
    """A :class:`Sweep` from ``--spec FILE.toml`` values overridden by the options ``given``
    (comma lists or lists; ``None`` = not given). Raises ``ValueError`` naming a bad value.

    The TOML file holds the same names as the command line: ``design = "bn"``,
    ``norm = ["l1", "l2"]`` (or ``"l1,l2"``), ``width = [4, 8]``, ``target = "fpga"``,
    ``pnr = false``, ``seeds = 3``, ``energy = true``, ``max_cycles = 20000``,
    ``family = "ice40"``, ``device = "iCE40HX8K-CT256"``, ``dsp = false``.
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
    options = {"pnr": True, "seeds": 3, "energy": True, "max_cycles": None, "family": None, "device": None,
               "dsp": None}
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
    if options["dsp"] is not None and not isinstance(options["dsp"], bool):
        raise ValueError(f"dsp={options['dsp']!r} must be true or false")
    if any(options[k] is not None for k in ("family", "device", "dsp")):
        from l1bn.sim.fpga.families import resolve_target

        t = resolve_target(options["family"], options["device"], options["dsp"])   # ValueError naming it
        t.family.require()
        options["family"] = t.family.name
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
        return forward_config(p["norm"], p["width"], n=p["n"], lanes=p["lanes"], channels=p["channels"])
    from l1bn.spec.config import MACConfig

    return MACConfig(rows=p["rows"], cols=p["cols"], wbits=p["wbits"], abits=p["abits"], k=MAC_K)


def point_cost(p: dict) -> int:
    """A rough relative cost, to start the big points first (less idle time at the end)."""
    if p["design"] == "bn":
        # a norm with multipliers in its dispersion (L2) builds larger designs
        muls = any(op[1] == "mul" for op in norm_spec(p["norm"]).ops)
        return p["channels"] * p["n"] * p["width"] * (2 if muls else 1)
    return p["rows"] * p["cols"] * p["wbits"] * p["abits"]
