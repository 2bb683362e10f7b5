"""Verilog size and generation time of the forward BN units against lanes (issue 32: the range
unit's lane max/min used to double its expression with every lane).

Run:  .venv/bin/python bench/verilog_lanes.py [--lanes 1 4 16 64] [--n 64] [--channels 2]

Prints one row per (norm, lanes): the lines of ``l1bn verilog <norm>bn`` and the seconds to
elaborate and write them (one process, so the imports are paid once, before the first row).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    a = ap.parse_args(argv)
    from l1bn.sim.verilog.bn import bn_verilog
    from l1bn.spec.config import BNConfig
    from l1bn.spec.norms import norm_names

    print(f"width {a.width}, n {a.n}, {a.channels} channels")
    print("| norm | lanes | lines | lines per lane added | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for norm in norm_names():
        prev = None
        for lanes in a.lanes:
            cfg = BNConfig(norm=norm, width=a.width, n=a.n, lanes=lanes, channels=a.channels)
            t0 = time.perf_counter()
            lines = len(bn_verilog(cfg).splitlines())
            dt = time.perf_counter() - t0
            step = "" if prev is None else f"{(lines - prev[1]) / (lanes - prev[0]):.0f}"
            print(f"| {norm} | {lanes} | {lines} | {step} | {dt:.1f} |", flush=True)
            prev = (lanes, lines)


if __name__ == "__main__":
    main()
