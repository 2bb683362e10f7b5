"""Command-line options generated from the fields of a config dataclass (:mod:`l1bn.spec.config`).

Each field of ``BNConfig``, ``MACConfig`` or ``BNBackwardConfig`` becomes one option: the name is
the field's with ``-`` for ``_``, the default is the field's default, the help text is the field's
entry in the class docstring (numpy ``Parameters`` section, its range included). So a default or
a range lives in one place, the dataclass, and a new field appears on the command line by itself.

* ``int`` fields: ``--name N``;
* ``bool`` fields: a flag pair; a field named ``signed_x`` is spelled ``--signed-x/--unsigned-x``,
  any other ``--name/--no-name``;
* ``str`` fields with a ``<NAME>S`` class attribute (``BNConfig.NORMS``): a choice.

Option groups that several commands share: :func:`export_folder_options`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re

import click

__all__ = ["field_help", "config_options", "config_from_options", "options_of", "export_folder_options",
           "family_options", "target_from_options"]


def field_help(cls) -> dict[str, str]:
    """``{field: "description [range]"}`` from the ``Parameters`` section of ``cls.__doc__``."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    m = re.search(r"^Parameters\n-+\n(.*?)(?:\n\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    out: dict[str, str] = {}
    if not m:
        return out
    names, spec, desc = [], "", []

    def flush():
        rng = spec.split(",", 1)[1].strip() if "," in spec and not spec.startswith("{") else ""
        text = " ".join(desc).replace("``", "")
        for n in names:
            out[n] = f"{text} [{rng}]" if rng else text

    for line in m.group(1).splitlines():
        if line and not line[0].isspace() and " : " in line:
            if names:
                flush()
            head, spec = line.split(" : ", 1)
            names, desc = [n.strip() for n in head.split(",")], []
        elif line.strip():
            desc.append(line.strip())
    if names:
        flush()
    return out


def options_of(cls, *, include=None, exclude=()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that become options (``include`` keeps that order)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(include) if include is not None else [n for n in fields if n not in exclude]
    return [fields[n] for n in names]


def _option(cls, f: dataclasses.Field, helps: dict, prefix: str):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    help_ = helps.get(f.name, "")
    dest = prefix + f.name
    flag = f.name.replace("_", "-")
    if isinstance(default, bool):
        if f.name.startswith("signed_"):
            decl = f"--{flag}/--un{flag}"
        else:
            decl = f"--{flag}/--no-{flag}"
        return click.option(decl, dest, default=default, show_default=True, help=help_)
    if isinstance(default, int):
        return click.option(f"--{flag}", dest, type=int, default=default, show_default=True, help=help_)
    choices = getattr(cls, f.name.upper() + "S", None)
    if isinstance(default, str) and choices:
        return click.option(f"--{flag}", dest, type=click.Choice(list(choices)), default=default,
                            show_default=True, help=help_)
    raise TypeError(f"{cls.__name__}.{f.name}: no command-line option for a {type(default).__name__} field")


def config_options(cls, *, include=None, exclude=(), prefix: str = ""):
    """Decorator adding one click option per field of ``cls`` (see the module docstring).

    ``prefix`` is put before each parameter name the command receives (not before the option
    name), so two configs' fields can share a command without clashing.
    """
    helps = field_help(cls)
    opts = [_option(cls, f, helps, prefix) for f in options_of(cls, include=include, exclude=exclude)]
    return lambda fn: functools.reduce(lambda g, o: o(g), reversed(opts), fn)


def config_from_options(cls, opts: dict, *, include=None, exclude=(), prefix: str = "", **fixed):
    """Build ``cls`` from the options :func:`config_options` added (plus ``fixed`` fields).

    The used keys are removed from ``opts``. Raises ``ValueError`` naming any bad value.
    """
    kw = {f.name: opts.pop(prefix + f.name) for f in options_of(cls, include=include, exclude=exclude)}
    return cls(**kw, **fixed)


def export_folder_options(out_help: str, *, mult_bits: int = 16):
    """Decorator: the options of the commands that write an export folder (``l1bn export``,
    ``l1bn import``): ``--out`` (described by ``out_help``), ``--rows``, ``--mult-bits``, ``--force``."""
    opts = [
        click.option("--out", "out_dir", required=True, type=str, help=out_help),
        click.option("--rows", default=4, show_default=True,
                     help="Height of the MAC array the weight .hex words are packed for (1..64)."),
        click.option("--mult-bits", default=mult_bits, show_default=True,
                     help="Signed width of the folded-BN per-channel multipliers (2..32)."),
        click.option("--force", is_flag=True, help="Replace an existing export folder."),
    ]

    def deco(f):
        for opt in reversed(opts):   # click lists the options in decorator order, top first
            f = opt(f)
        return f
    return deco


def family_options(f):
    """Decorator: ``--family``, ``--device`` and ``--dsp/--no-dsp`` (the FPGA target of the flow,
    :mod:`l1bn.sim.fpga.families`); the command receives ``family``, ``device``, ``dsp`` (None when
    not given) and resolves them with :func:`target_from_options`."""
    opts = [
        click.option("--family", default=None,
                     help="FPGA family: ecp5 (default), ice40, nexus, gowin or gatemate."),
        click.option("--device", default=None,
                     help="Device of the family (default: the family's first; ECP5: the smallest that holds "
                          "the design), e.g. iCE40UP5K-SG48, iCE40HX8K-CT256, LIFCL-40-9BG400C, "
                          "GW1NR-LV9QN88PC6/I5, CCGM1A1, LFE5U-25F."),
        click.option("--dsp/--no-dsp", "dsp", default=None,
                     help="Map multiplies to the family's DSP blocks (default: where the device has them) or "
                          "keep them in the fabric."),
    ]

    for opt in reversed(opts):
        f = opt(f)
    return f


def target_from_options(family, device, dsp):
    """The :class:`~l1bn.sim.fpga.families.Target` of the options, its nextpnr checked; None when
    none was given (the default ECP5 flow, as before the family layer). ``ValueError`` or
    ``ToolError`` naming what is wrong."""
    from l1bn.sim.fpga.families import resolve_target

    if family is None and device is None and dsp is None:
        return None
    target = resolve_target(family, device, dsp)
    target.family.require()
    return target


def budget_from_options(device, budget_lut):
    """The :class:`~l1bn.hw.accel_budget.Budget` of ``--device`` (an ECP5 device name; default
    LFE5U-25F when only ``--budget-lut`` is given) with its LUT sites capped at ``--budget-lut``;
    None when neither was given. ``ValueError`` naming a bad value."""
    from l1bn.hw.accel_budget import Budget
    from l1bn.sim.fpga.families import get_family

    if device is None and budget_lut is None:
        return None
    dev = get_family("ecp5").device(device)
    lut = dev.lut
    if budget_lut is not None:
        if isinstance(budget_lut, bool) or not isinstance(budget_lut, int) or budget_lut < 1:
            raise ValueError(f"--budget-lut={budget_lut!r} must be a positive number of LUT sites")
        lut = min(lut, budget_lut)
    name = dev.name if lut == dev.lut else f"{dev.name} with {lut} LUT sites"
    return Budget(name=name, lut_sites=lut, ff=dev.ff, dsp=dev.dsp, bram=dev.bram)


#: the tree PE's default width (input channels per beat), ``--pe tree`` without ``--lanes``
TREE_LANES = 8


def pe_options(f):
    """``--pe mac|tree`` and ``--lanes N``: the accelerator's processing element."""
    f = click.option("--lanes", type=int, default=None,
                     help=f"With --pe tree: input channels per beat, the adder tree's width (default {TREE_LANES}; "
                          "rows must be a multiple of it).")(f)
    f = click.option("--pe", type=click.Choice(["mac", "tree"]), default="mac", show_default=True,
                     help="Processing element: mac (one accumulator per MAC) or tree (an adder tree over LANES "
                          "input channels into one accumulator per output).")(f)
    return f


def lanes_from_options(pe: str, lanes: int | None) -> int:
    """The ``lanes`` of :class:`~l1bn.hw.accel_plan.Plan` for ``--pe`` / ``--lanes``: 1 for
    ``mac``; ``lanes`` (default :data:`TREE_LANES`, 2..16) for ``tree``. ``ValueError`` naming a
    bad value."""
    from l1bn.spec.config import MAX_MAC_ARRAY

    if pe not in ("mac", "tree"):
        raise ValueError(f"--pe={pe!r} must be mac or tree")
    if pe == "mac":
        if lanes is not None:
            raise ValueError("--lanes goes with --pe tree (the MAC PE has one product per cycle)")
        return 1
    if lanes is None:
        return TREE_LANES
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 2 <= lanes <= MAX_MAC_ARRAY:
        raise ValueError(f"--lanes={lanes!r} must be an int in 2..{MAX_MAC_ARRAY}")
    return lanes
