"""Verilator's C++ optimization levels, side by side: the cocotb runner's ``VERILATOR_MAKE_OPT``
against Verilator's default (``-Os`` everywhere), on the digits training accelerator (3 steps of
batch 8, the suite's ``test_digits_cnn_on_verilator``).

Both variants run at once, one process each, so that they share the machine's load; each builds in
its own folder and must stay bit-exact. The table gives the build (C++ compile) and simulation
seconds and their sum; the suite's Verilator tests are mostly build, which is why the runner
compiles the model at -O1 and the rest at -O0.

Usage::

    .venv/bin/python bench/verilator_opt.py [--norm l1] [--out build/verilator-opt]
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"runner (VERILATOR_MAKE_OPT)": None, "Verilator default (-Os)": ()}


def one(norm: str, make_opt, out: Path) -> dict:
    """Build and run the digits training accelerator with ``make_opt`` (None: the runner's)."""
    import l1bn.sim.simulate.runner as runner
    from l1bn.sim.simulate.train import simulate_train
    from l1bn.spec.reference.train import quantize_images
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.data import digits_split

    if make_opt is not None:
        runner.VERILATOR_MAKE_OPT = tuple(make_opt)
    cfg = IntTrainConfig(batch=8, norm=norm)
    split = digits_split()["train"]
    x = quantize_images(split[0][:24].numpy(), cfg)
    y = split[1][:24].numpy().astype(np.int64)
    r = simulate_train(cfg, x, y, steps=3, rows=8, seed=0, simulator="verilator", build_dir=out)
    return {"passed": bool(r["passed"]), "build_s": r["build_s"], "run_s": r["run_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norm", default="l1", choices=["l1", "l2", "range"])
    ap.add_argument("--out", type=Path, default=Path("build/verilator-opt"))
    ap.add_argument("--one", help=argparse.SUPPRESS)   # a child: the variant's name
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.norm, VARIANTS[args.one], args.out / str(list(VARIANTS).index(args.one)))))
        return 0
    shutil.rmtree(args.out, ignore_errors=True)   # cold builds: a reused one would time nothing
    procs = {name: subprocess.Popen([sys.executable, __file__, "--norm", args.norm, "--out", str(args.out),
                                     "--one", name], stdout=subprocess.PIPE, text=True)
             for name in VARIANTS}
    rows = {name: json.loads(p.communicate()[0].strip().splitlines()[-1]) for name, p in procs.items()}
    print(f"digits training accelerator, {args.norm}, 3 steps of batch 8 on Verilator; both variants at once")
    print(f"{'variant':30} {'build s':>8} {'sim s':>7} {'total s':>8}  bit-exact")
    for name, r in rows.items():
        print(f"{name:30} {r['build_s']:8.1f} {r['run_s']:7.1f} {r['build_s'] + r['run_s']:8.1f}  "
              f"{'yes' if r['passed'] else 'NO'}")
    return 0 if all(r["passed"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
