"""The whole training step on the generated hardware, per norm: cycles (from the schedule's
formula, which the benches assert), the block breakdown, on-chip memory, and the ECP5 measurements
(synthesis counts, Fmax median of the nextpnr seeds, training images/s) when they are run.

Used by ``bench/train_accel.py`` (which runs the flows and prints the table) and by
``l1bn demo`` (which prints the table from the formula and from a measured ``train_report.json``
when one exists).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

__all__ = ["train_norms", "step_figures", "fpga_figures", "whole_step_table", "DEFAULT_SEEDS", "BLOCK_ORDER"]

DEFAULT_SEEDS = (1, 2, 3)
#: the breakdown's blocks, in print order
BLOCK_ORDER = ("MAC array", "BN forward", "BN backward", "quantizers", "update", "loss", "control")


def train_norms() -> list[str]:
    """The registered norms that have a backward unit (the ones the accelerator can train)."""
    from l1bn.spec.norms import backward_norms

    return list(backward_norms())


def _config(norm: str, batch: int):
    from l1bn.spec.training import IntTrainConfig

    return IntTrainConfig(batch=batch, norm=norm)


def step_figures(norm: str, *, batch: int = 8, rows: int = 8) -> dict:
    """Cycles per step, the array's busy fraction, cycles per block, memory bits, of the digits
    CNN's training accelerator (formulas, no tool runs)."""
    from l1bn.hw.train.plan import TrainPlan
    from l1bn.hw.train.schedule import array_busy, schedule, step_cycles

    plan = TrainPlan(_config(norm, batch), rows=rows)
    blocks = {b: 0 for b in BLOCK_ORDER}
    for e in schedule(plan):
        blocks[e["block"]] += e["cycles"]
    cyc = step_cycles(plan)
    return {"norm": norm, "batch": batch, "rows": rows, "cycles_per_step": cyc, "array_busy": array_busy(plan),
            "mac_beats": plan.mac_beats, "useful_macs": plan.useful_macs, "blocks": blocks,
            "memory_bits": plan.mem_bits}


#: ECP5 cells counted, as in l1bn.sim.fpga.synth (LUT4, flip-flops, carries, DSPs, block RAMs)
_CELLS = {"lut": ("LUT4",), "ff": ("TRELLIS_FF",), "ccu2": ("CCU2C",), "dsp": ("MULT18X18D", "ALU54B"),
          "mult18": ("MULT18X18D",), "alu54": ("ALU54B",), "bram": ("DP16KD",), "lutram": ("TRELLIS_DPR16X4",)}


def _synth(acc, workdir: Path) -> dict:
    """ECP5 synthesis of ``acc`` in the timing harness, the script of
    :func:`l1bn.sim.fpga.synth.synth_ecp5_text` on RTLIL instead of Verilog: the memories' initial
    contents are one parameter each there, where Yosys' Verilog frontend takes minutes per memory
    for the Verilog ``initial`` block of every word."""
    from amaranth.back import rtlil
    from l1bn.hw.arith import ecp5_dsp_primitives
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.yowasp import run_yosys

    with ecp5_dsp_primitives():
        text = rtlil.convert(TimingHarness(acc), name="top")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(text)
    t0 = time.perf_counter()
    run_yosys(workdir, "read_rtlil top.il; synth_ecp5 -top top -run begin:map_luts; abc -lut 4 -dress; clean; "
                       "synth_ecp5 -top top -run map_cells:; tee -q -o stat.json stat -json; write_json top.json")
    cells = json.loads((workdir / "stat.json").read_text())["design"]["num_cells_by_type"]
    res = {k: sum(int(cells.get(c, 0)) for c in names) for k, names in _CELLS.items()}
    res["synth_s"] = round(time.perf_counter() - t0, 1)
    return res


def fpga_figures(norm: str, workdir, *, batch: int = 8, rows: int = 8, seeds=DEFAULT_SEEDS, pnr: bool = True,
                 router: str = "router2") -> dict:
    """ECP5 synthesis (LUT4, FF, CCU2C, MULT18X18D/ALU54B, DP16KD) of the digits CNN's training
    accelerator in the timing harness, and with ``pnr`` nextpnr on the smallest ECP5 that holds it
    once per seed (Fmax: the median), with nextpnr's ``router`` (router2: router1 did not finish
    on this design). Results are kept in ``workdir/<norm>/result.json`` and reused when the design
    is unchanged (same Verilog hash)."""
    import hashlib

    from l1bn.hw.train.accel import TrainAccelerator
    from l1bn.sim.fpga.pnr import pnr_ecp5_json
    from l1bn.sim.rtl import to_verilog

    acc = TrainAccelerator(_config(norm, batch), rows=rows, seed=0)
    key = hashlib.sha256(to_verilog(acc, "train_accel").encode()).hexdigest()[:16]
    wd = Path(workdir) / norm
    cache = wd / "result.json"
    res = json.loads(cache.read_text()) if cache.exists() else {}
    if res.get("key") != key:
        res = {"key": key, **_synth(TrainAccelerator(_config(norm, batch), rows=rows, seed=0), wd / "synth")}
        cache.write_text(json.dumps(res, indent=1))
    if pnr:
        runs = res.setdefault("pnr", {})
        for s in seeds:
            if str(s) in runs and runs[str(s)].get("router") == router:
                continue
            sd = wd / f"pnr{s}"
            sd.mkdir(parents=True, exist_ok=True)
            shutil.copy(wd / "synth" / "top.json", sd / "top.json")
            t0 = time.perf_counter()
            r = pnr_ecp5_json(sd, lut=res["lut"], dsp=res["dsp"], bram=res["bram"], seed=s, router=router)
            r["pnr_s"] = round(time.perf_counter() - t0, 1)
            r["router"] = router
            runs[str(s)] = r
            cache.write_text(json.dumps(res, indent=1))
    # Fmax: the median of the seeds run (without ``pnr``, of those already in the cache)
    runs = res.get("pnr", {})
    got = [runs[str(s)]["fmax_mhz"] for s in seeds if str(s) in runs and runs[str(s)].get("router") == router]
    if got:
        res["fmax_mhz"] = statistics.median_low(sorted(got))
        res["device"] = runs[next(str(s) for s in seeds if str(s) in runs)]["device"]
    return res


#: (block, module-name prefixes under the accelerator) of the breakdown, first match wins
BLOCK_MODULES = (("MAC array", ("mac.array",)), ("MAC issue/write", ("mac",)), ("BN forward", ("bnf",)),
                 ("BN backward", ("bnb",)), ("memories", ("mem_",)),
                 ("update, prep, loss, quantizers, control", ("",)))


def _block_of(module: str) -> str | None:
    name = module.lstrip("\\")
    if not name.startswith("top.dut"):
        return None                          # the timing harness
    rest = name[len("top.dut"):].lstrip(".")
    for block, prefixes in BLOCK_MODULES:
        if any(rest.startswith(p) for p in prefixes):
            return block
    return None


def fpga_breakdown(norm: str, workdir, *, batch: int = 8, rows: int = 8) -> dict:
    """ECP5 cells per block: the same synthesis with the hierarchy kept (``synth_ecp5
    -noflatten``), each module's own cells summed by block (:data:`BLOCK_MODULES`). Without
    flattening, no logic is optimized across a module boundary, so the sum is a little above the
    flattened total. Kept in ``workdir/<norm>/breakdown.json`` and reused while the design is
    unchanged (same RTLIL hash)."""
    import hashlib

    from amaranth.back import rtlil
    from l1bn.hw.arith import ecp5_dsp_primitives
    from l1bn.hw.train.accel import TrainAccelerator
    from l1bn.sim.fpga.harness import TimingHarness
    from l1bn.sim.yowasp import run_yosys

    wd = Path(workdir) / norm / "hier"
    cache = Path(workdir) / norm / "breakdown.json"
    with ecp5_dsp_primitives():
        text = rtlil.convert(TimingHarness(TrainAccelerator(_config(norm, batch), rows=rows, seed=0)), name="top")
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    if cache.exists():
        old = json.loads(cache.read_text())
        if old.pop("key", None) == key:
            return old
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "top.il").write_text(text)
    run_yosys(wd, "read_rtlil top.il; synth_ecp5 -noflatten -top top -run begin:map_luts; abc -lut 4 -dress; "
                  "clean; synth_ecp5 -noflatten -top top -run map_cells:; tee -q -o stat.json stat -json")
    mods = json.loads((wd / "stat.json").read_text())["modules"]
    out = {}
    for name, st in mods.items():
        block = _block_of(name)
        if block is None:
            continue
        cells = st.get("num_cells_by_type", {})
        acc = out.setdefault(block, {k: 0 for k in _CELLS})
        for k, names in _CELLS.items():
            acc[k] += sum(int(cells.get(c, 0)) for c in names)
    cache.write_text(json.dumps({"key": key, **out}, indent=1))
    return out


def whole_step_table(rows_by_norm: dict) -> list[str]:
    """Text lines of the whole-step comparison: per norm the cycles, busy fraction, BN share, memory,
    and the measured ECP5 figures where present (``rows_by_norm[norm]`` = step_figures merged
    with fpga_figures)."""
    from l1bn.spec.norms import BASELINE

    ref = rows_by_norm.get(BASELINE)
    lines = [f"{'norm':5} {'cycles/step':>11} {'busy':>6} {'BN fwd':>7} {'BN bwd':>7} {'memory':>9} "
             f"{'LUT4':>7} {'FF':>7} {'MULT18':>6} {'DP16KD':>6} {'Fmax':>6} {'img/s':>7}"]
    for norm, r in rows_by_norm.items():
        b = r["blocks"]
        fm = r.get("fmax_mhz")
        ips = None if fm is None else fm * 1e6 / r["cycles_per_step"] * r["batch"]

        def v(k, r=r):
            return "-" if r.get(k) is None else str(r[k])
        lines.append(f"{norm:5} {r['cycles_per_step']:11d} {100 * r['array_busy']:5.1f}% "
                     f"{b['BN forward']:7d} {b['BN backward']:7d} {r['memory_bits'] / 8192:7.1f}KiB "
                     f"{v('lut'):>7} {v('ff'):>7} {v('mult18'):>6} {v('bram'):>6} "
                     f"{'-' if fm is None else f'{fm:.1f}':>6} {'-' if ips is None else f'{ips:.0f}':>7}")
    if ref is not None:
        for norm, r in rows_by_norm.items():
            if norm == BASELINE:
                continue
            parts = [f"cycles {r['cycles_per_step'] / ref['cycles_per_step']:.4f}"]
            for k in ("lut", "ff", "mult18", "bram", "fmax_mhz"):
                if r.get(k) and ref.get(k):
                    parts.append(f"{k} {r[k] / ref[k]:.3f}")
            lines.append(f"{norm}/{BASELINE}: " + ", ".join(parts))
    return lines
