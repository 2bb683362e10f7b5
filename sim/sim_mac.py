"""``l1bn sim mac``: run the MAC array's cocotb bench and print mismatches, cycles, utilization.

:func:`simulate_mac` is the Python entry point the tests and ``bench/mac_array.py`` share.
"""

from __future__ import annotations

import click
from l1bn.sim.verilog_mac import config_options, make_config

__all__ = ["mac_cmd", "random_tiles", "simulate_mac"]


def random_tiles(cfg, tiles: int, k: int, *, seed: int = 0, extremes: bool = False) -> list[dict]:
    """``tiles`` random (rows x k) by (k x cols) operand pairs in the config's ranges.

    With ``extremes`` every operand is the min or max of its range (worst-case sums).
    """
    import torch
    from l1bn.spec.config import check_int

    check_int("tiles", tiles, 1, 100000)
    check_int("k", k, 1, cfg.k)
    g = torch.Generator().manual_seed(seed)
    (wlo, whi), (alo, ahi) = cfg.weight_range, cfg.act_range
    out = []
    for _ in range(tiles):
        if extremes:
            w = torch.where(torch.randint(0, 2, (cfg.rows, k), generator=g) == 1, whi, wlo)
            a = torch.where(torch.randint(0, 2, (k, cfg.cols), generator=g) == 1, ahi, alo)
        else:
            w = torch.randint(wlo, whi + 1, (cfg.rows, k), generator=g)
            a = torch.randint(alo, ahi + 1, (k, cfg.cols), generator=g)
        if cfg.wbits == 1 and cfg.signed_w:
            w = torch.where(w == 0, 1, w)  # binary weights: -1 or +1
        out.append({"w": w.tolist(), "a": a.tolist()})
    return out


def simulate_mac(cfg, tiles: list[dict], *, simulator: str = "icarus", gaps: int = 0,
                 out_gaps: int = 0, seed: int = 1, build_dir=None, raise_on_fail: bool = True,
                 out_rows: bool = False) -> dict:
    """Run ``tiles`` through the MAC array on ``simulator``; return the bench's measurements.

    Keys: ``mismatches``, ``first`` (up to 20 mismatches), ``outputs``, ``cycles`` (first input
    to last output handshake), ``tile_done`` (cycle of each tile's last row), ``input_stalls``,
    ``ks``; with equal K also ``formula_cycles`` and ``formula_period``; plus ``period``
    (measured steady-state cycles per tile, from the tile completion cycles) and ``utilization``
    (K / period) when there are >= 2 tiles, and ``build_s``/``run_s``. With ``out_rows`` also
    ``rows``: every output row the hardware sent, in order.
    """
    from l1bn.hw.mac_array import MACArray
    from l1bn.sim.runner import default_build_root, run_bench, to_verilog

    verilog = to_verilog(MACArray(cfg), "mac_array")
    if build_dir is None:
        build_dir = default_build_root() / f"mac-{cfg.digest()}-{simulator}"
    r, _ = run_bench(verilog, name="mac", toplevel="mac_array", test_module="l1bn.sim.benches.mac_tb",
                     build_dir=build_dir, simulator=simulator, config=cfg, seed=seed,
                     raise_on_fail=raise_on_fail, data={"tiles": tiles},
                     extra_env={"L1BN_GAPS": str(gaps), "L1BN_OUT_GAPS": str(out_gaps),
                                "L1BN_SEED": str(seed), "L1BN_OUT_ROWS": "1" if out_rows else ""})
    done = r["tile_done"]
    if len(done) >= 2 and len(set(r["ks"])) == 1:
        r["period"] = (done[-1] - done[0]) / (len(done) - 1)
        r["utilization"] = r["ks"][0] / r["period"]
    return r


@click.command("mac")
@config_options
@click.option("--tiles", default=8, show_default=True, help="Random tiles to stream.")
@click.option("--tile-k", type=int, default=None, help="Reduction length per tile (default: --k).")
@click.option("--gaps", default=0, show_default=True, help="Percent idle input cycles.")
@click.option("--out-gaps", default=0, show_default=True, help="Percent not-ready output cycles.")
@click.option("--extremes", is_flag=True, help="Operands at the min/max of their ranges only.")
@click.option("--seed", default=0, show_default=True)
@click.option("--simulator", type=click.Choice(["icarus", "verilator"]), default="icarus", show_default=True)
def mac_cmd(rows, cols, wbits, abits, unsigned_w, unsigned_a, k, requant, shift, out_bits, relu,
            tiles, tile_k, gaps, out_gaps, extremes, seed, simulator):
    """Stream random tiles through the MAC array and compare with the integer reference."""
    cfg = make_config(rows, cols, wbits, abits, unsigned_w, unsigned_a, k, requant, shift, out_bits, relu)
    kk = cfg.k if tile_k is None else tile_k
    data = random_tiles(cfg, tiles, kk, seed=seed, extremes=extremes)
    r = simulate_mac(cfg, data, simulator=simulator, gaps=gaps, out_gaps=out_gaps, seed=seed + 1,
                     raise_on_fail=False)
    click.echo(f"MAC array {rows}x{cols}, w{wbits}{'u' if unsigned_w else 's'} "
               f"a{abits}{'u' if unsigned_a else 's'}, acc {cfg.acc_bits} bits"
               + (f", requant shift={shift} out_bits={out_bits} relu={relu}" if requant else "")
               + f", {simulator}")
    click.echo(f"tiles {tiles} x K={kk}: {r['outputs']} outputs, {r['mismatches']} mismatches")
    for b in r["first"][:10]:
        click.echo(f"  tile {b['tile']} y[{b['row']}][{b['col']}] = {b['got']}, expected {b['expected']}")
    click.echo(f"cycles {r['cycles']} (first input to last output), input stalls {r['input_stalls']}")
    if "formula_cycles" in r:
        same = "matches" if r["cycles"] == r["formula_cycles"] else "differs (gaps/backpressure)"
        click.echo(f"formula {r['formula_cycles']} cycles: {same}")
    if "period" in r:
        click.echo(f"cycles per tile: measured {r['period']:.2f}, formula max(K, rows+1) = "
                   f"{r['formula_period']}; utilization {100 * r['utilization']:.1f}%")
    if r["mismatches"] or not r["passed"]:
        raise click.ClickException(f"{r['mismatches']} mismatches")
