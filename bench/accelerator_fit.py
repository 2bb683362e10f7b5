"""Does an export's accelerator fit a device of a family? Its synthesis for the family (no place
and route) and the flow's fit check: the LUT sites the check counts, what they are made of, the
device's room, and the check's one-line refusal where it does not fit.

Run:  .venv/bin/python bench/accelerator_fit.py runs/cnn-l1-w4a4/export --family gowin --workdir build/fit-gowin

The synthesis is the place-and-route flow's (:class:`l1bn.sim.fpga.steps.FPGAJob`: the harness,
the family's script) and is redone unless ``--workdir`` holds one of the same Verilog (its
``top.v``, ``stat.json`` and ``top.json``). Exit status 0 when it fits, 2 when it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l1bn.cli.options import target_from_options
from l1bn.hw.accelerator import accelerator_from_export
from l1bn.sim.fpga.families import DeviceFitError, resolve_target
from l1bn.sim.fpga.steps import FPGAJob
from l1bn.spec.export import load_export


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export")
    ap.add_argument("--family", required=True, help="ice40, nexus, gowin or gatemate")
    ap.add_argument("--device", default=None, help="device of the family (default: its first)")
    ap.add_argument("--dsp", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--workdir", required=True, help="where the synthesis is (or goes)")
    a = ap.parse_args(argv)
    try:
        t = target_from_options(a.family, a.device, a.dsp) or resolve_target()
        if t.family.name == "ecp5":
            raise ValueError("ECP5 has its own synthesis: bench/accelerator.py --synth-only")
        e = load_export(a.export)
    except ValueError as err:
        ap.error(str(err))
    fam, dev, wd = t.family, t.device, Path(a.workdir)
    verilog = FPGAJob(accelerator_from_export(e), name="fit").verilog
    done = all((wd / f).exists() for f in ("top.v", "stat.json", "top.json")) and (wd / "top.v").read_text() == verilog
    if done:
        cells = {k: int(v) for k, v in json.loads((wd / "stat.json").read_text())["design"]["num_cells_by_type"].items()}
        res = fam.counts(cells)
        extra = fam.netlist_sites(json.loads((wd / "top.json").read_text()))
        res["lut_sites"] += sum(extra.values())
        res["lut_site_parts"] = {**res.get("lut_site_parts", {}), **extra}
    else:
        res = fam.synthesize(verilog, wd, device=dev, dsp=t.dsp)
    parts = " + ".join(f"{n} {k}" for k, n in res.get("lut_site_parts", {}).items() if n)
    print(f"{fam.name} {dev.name}{'' if t.dsp else ' (no DSP)'}: {res['lut_sites']} LUT sites ({parts}) of "
          f"{dev.lut} ({100 * res['lut_sites'] / dev.lut:.1f} %); {res['ff']} FF of {dev.ff}; {res['dsp']} "
          f"{fam.dsp_cell or 'DSP'} of {dev.dsp}; {res['bram']} block RAM of {dev.bram}"
          f"{'' if not done else ' (synthesis from ' + str(wd) + ')'}")
    try:
        fam.check_fit(res, dev)
    except DeviceFitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("fits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
