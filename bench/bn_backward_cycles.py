"""Cycles of the BN backward units, measured in simulation against the latency formula, one row
per norm with a backward unit in the registry (``backward_norms()``).

Run:  .venv/bin/python bench/bn_backward_cycles.py [--width 8] [--n 64] [--channels 1 4]
      [--simulator icarus|verilator] [--source random|real]

Each row streams one stall-free batch (``l1bn.sim.simulate.bwd.simulate_bn_backward``) and prints
the per-channel steps ``P`` (``per_channel_cycles``), the pass-2 pipeline ``D``
(``pass2_cycles``), the cycles from the first input beat to the last dx, the formula
``backward_latency_cycles(cfg) = channels*(2n + P) + (channels-1)*max(0, D+2-n-P) + D`` and the dx
and dgamma/dbeta elements that differ from the integer reference (0 = bit-exact).
"""

from __future__ import annotations

import argparse
import tempfile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--grad-width", type=int, default=8)
    ap.add_argument("--simulator", choices=["icarus", "verilator"], default="icarus")
    ap.add_argument("--source", choices=["random", "real"], default="random")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from l1bn.hw.bn_backward import backward_latency_cycles, pass2_cycles, per_channel_cycles
    from l1bn.sim.simulate.bwd import random_bwd_batch, simulate_bn_backward
    from l1bn.spec.config import BNBackwardConfig, BNConfig
    from l1bn.spec.norms import backward_norms

    print(f"width {a.width}, n {a.n}, grad_width {a.grad_width}, {a.simulator}, {a.source} data, no stalls")
    print("| norm | channels | P | D | cycles measured | formula | dx differing | dgamma/dbeta differing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for norm in backward_norms():
        for ch in a.channels:
            cfg = BNBackwardConfig(bn=BNConfig(norm=norm, width=a.width, n=a.n, channels=ch),
                                   grad_width=a.grad_width)
            x, dy = random_bwd_batch(cfg, seed=a.seed, source=a.source)
            gamma = [64 - 37 * c % 191 for c in range(ch)]     # mixed signs, |gamma| <= 127
            with tempfile.TemporaryDirectory() as d:
                r = simulate_bn_backward(cfg, x, dy, gamma, simulator=a.simulator, build_dir=d,
                                         raise_on_fail=False)
            print(f"| {norm} | {ch} | {per_channel_cycles(cfg)} | {pass2_cycles(cfg)} | {r['cycles']} | "
                  f"{backward_latency_cycles(cfg)} | {r['mismatches']} | {r['g_mismatches']} |", flush=True)


if __name__ == "__main__":
    main()
