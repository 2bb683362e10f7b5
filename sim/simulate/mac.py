"""Simulate the MAC array on random tiles with cocotb (library; the command is ``l1bn sim mac``).

:func:`simulate_mac` is the Python entry point the tests and ``bench/mac_array.py`` share.
"""

from __future__ import annotations

from l1bn.sim.build_root import default_build_root

from .runner import run_bench

__all__ = ["random_tiles", "simulate_mac"]


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
        if cfg.bipolar_a:
            a = torch.where(a == 0, 1, a)  # bipolar activations: -1 or +1
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

    if build_dir is None:
        build_dir = default_build_root() / f"mac-{cfg.digest()}-{simulator}"
    r, _ = run_bench(MACArray(cfg), name="mac", build_dir=build_dir, simulator=simulator, config=cfg,
                     seed=seed, raise_on_fail=raise_on_fail, data={"tiles": tiles},
                     options={"gaps": gaps, "out_gaps": out_gaps, "seed": seed, "out_rows": out_rows})
    done = r["tile_done"]
    if len(done) >= 2 and len(set(r["ks"])) == 1:
        r["period"] = (done[-1] - done[0]) / (len(done) - 1)
        r["utilization"] = r["ks"][0] / r["period"]
    return r

