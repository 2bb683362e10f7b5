"""The FPGA families of the flow, one module each: ECP5 (the default), iCE40, Nexus
(CrossLink-NX), Gowin and GateMate.

Each module holds a :class:`~l1bn.sim.fpga.families.base.Family`: the Yosys synthesis script, the
devices and their resources, the nextpnr tool (a YoWASP wheel) and its command line, the pin
constraints of the timing harness, and the family's resource names (the report columns). The
registry here resolves ``--family`` / ``--device`` / ``--dsp`` into a :class:`Target` before any
tool runs, so a bad name is one error line.
"""

from __future__ import annotations

import contextlib
import dataclasses

from . import ecp5, gatemate, gowin, ice40, nexus
from .base import Device, DeviceFitError, Family

__all__ = ["FAMILIES", "DEFAULT_FAMILY", "Target", "get_family", "resolve_target", "Device", "Family",
           "DeviceFitError", "tool_version", "fit_errors"]

#: name -> family, in the order the docs list them
FAMILIES: dict[str, Family] = {f.name: f for f in (ecp5.FAMILY, ice40.FAMILY, nexus.FAMILY, gowin.FAMILY,
                                                   gatemate.FAMILY)}

DEFAULT_FAMILY = "ecp5"


def get_family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the families otherwise."""
    fam = FAMILIES.get(str(name).lower())
    if fam is None:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return fam


@dataclasses.dataclass(frozen=True)
class Target:
    """A resolved ``(family, device, dsp)``. ``device`` is None only for ECP5 without
    ``--device`` (the smallest of the 25k / 45k / 85k that holds the design)."""

    family: Family
    device: Device | None
    dsp: bool

    @property
    def label(self) -> str:
        """``ice40 iCE40UP5K-SG48 (SB_MAC16)``, ``gowin GW1NR-LV9QN88PC6/I5 (no DSP)``."""
        dev = self.device.name if self.device is not None else "smallest fitting device"
        return f"{self.family.name} {dev} ({self.family.dsp_cell.split(' ')[0] if self.dsp else 'no DSP'})"

    def job_params(self) -> dict:
        """The parameters of this target in a flow step's cache key (nothing for the default ECP5)."""
        p = {}
        if self.family.name != DEFAULT_FAMILY:
            p["family"] = self.family.name
            p["device"] = self.device.name
            p["dsp"] = self.dsp
            p["pnr_tool"] = tool_version(self.family)
            if self.family.synth_revision:
                p["synth"] = self.family.synth_revision
            return p
        if self.device is not None:
            p["device"] = self.device.name
        if not self.dsp:
            p["dsp"] = False
        return p


def resolve_target(family: str | None = None, device: str | None = None, dsp: bool | None = None) -> Target:
    """Validate ``family`` (default ECP5), ``device`` (default: the family's first; ECP5: the
    smallest that fits) and ``dsp`` (default: the family's, on where the device has DSPs).
    ``ValueError`` naming the bad value."""
    fam = get_family(family if family is not None else DEFAULT_FAMILY)
    dev = fam.device(device) if (device is not None or fam.name != DEFAULT_FAMILY) else None
    if dsp is None:
        dsp = fam.default_dsp(dev) if dev is not None else True
    elif dev is not None:
        fam.check_dsp(dev, dsp)
    return Target(fam, dev, bool(dsp))


def tool_version(fam: Family) -> str:
    """``"<dist> <version>"`` of the family's nextpnr (``"<dist> missing"`` when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{fam.pnr_dist} {version(fam.pnr_dist)}"
    except PackageNotFoundError:
        return f"{fam.pnr_dist} missing"


@contextlib.contextmanager
def fit_errors():
    """Inside: a flow step's :class:`DeviceFitError` (which :func:`l1bn.sim.jobs.run_jobs` wraps in
    a ``RuntimeError`` naming the step) comes out as a :class:`DeviceFitError` (a ``ValueError``:
    one ``error:`` line on the command line) with the step's name."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e.__cause__, DeviceFitError):
            name = str(e).split(":", 1)[0].rsplit(" ", 1)[0]   # "<step name> <kind>: ..."
            raise DeviceFitError(f"{name}: {e.__cause__}") from None
        raise
