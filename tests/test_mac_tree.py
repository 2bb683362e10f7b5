"""The adder-tree MAC (hw/mac_tree.py) against the reference dot product, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from l1bn.hw.mac_tree import MACTree, tree_latency
from l1bn.spec.config import MACConfig
from l1bn.spec.reference.mac import encode_activations, encode_weights, mac_tile


def _tiles(cfg, beats, seed):
    """Random tiles (w: rows x K, a: K) with ``beats`` beats each; non-binary configs also get a
    tile whose K is padded up to whole beats with zero weights."""
    rng = np.random.default_rng(seed)
    (wlo, whi), (alo, ahi) = cfg.weight_range, cfg.act_range
    out = []
    for t, nb in enumerate(beats):
        k = nb * cfg.cols
        if cfg.wbits == 1 and cfg.signed_w:
            w = rng.choice([-1, 1], size=(cfg.rows, k))
        else:
            w = rng.integers(wlo, whi + 1, size=(cfg.rows, k))
            if t == 0:                      # extremes: the widest sums
                w[:] = wlo
        if cfg.bipolar_a:
            a = rng.choice([-1, 1], size=k)
        else:
            a = rng.integers(alo, ahi + 1, size=k)
            if t == 0:
                a[:] = alo if wlo * alo >= whi * ahi else ahi
        if t == 1 and not (cfg.wbits == 1 and cfg.signed_w) and cfg.cols > 1:
            w[:, k - 1] = 0                 # a reduction one short of whole beats, padded
        out.append((w, a))
    return out


def _run(cfg, tiles, seed):
    """Stream the tiles (``i.valid`` and ``o.ready`` dropping at random with ``seed``); returns
    the output beats and, without stalls, each output's cycle after its tile's last handshake."""
    dut = MACTree(cfg)
    rng = np.random.default_rng(seed)
    beats = []
    for w, a in tiles:
        we, ae = encode_weights(w, cfg), encode_activations(a, cfg)
        nb = w.shape[1] // cfg.cols
        for b in range(nb):
            sl = slice(b * cfg.cols, (b + 1) * cfg.cols)
            beats.append({"w": [[int(x) for x in row] for row in we[:, sl]], "a": [int(x) for x in ae[sl]],
                          "last": int(b == nb - 1)})
    outs, lasts, delays = [], [], []

    async def bench(ctx):
        k, cyc = 0, 0
        while len(outs) < len(tiles):
            valid = k < len(beats) and (seed is None or rng.random() < 0.7)
            ctx.set(dut.i.valid, valid)
            if valid:
                ctx.set(dut.i.payload, beats[k])
            ready = seed is None or rng.random() < 0.4
            ctx.set(dut.o.ready, ready)
            if ctx.get(dut.o.valid) and ready:
                outs.append([int(y) for y in ctx.get(dut.o.payload.y)])
                delays.append(cyc - lasts[len(outs) - 1])
            if valid and ctx.get(dut.i.ready):
                if beats[k]["last"]:
                    lasts.append(cyc)
                k += 1
            await ctx.tick()
            cyc += 1
            assert cyc < 50 * len(beats) + 100, "the tree stopped"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs, delays


CFGS = [
    MACConfig(rows=3, cols=5, wbits=4, abits=4, k=64),
    MACConfig(rows=2, cols=8, wbits=2, abits=4, signed_a=False, k=40, requant=True, shift=3, out_bits=4, relu=True),
    MACConfig(rows=4, cols=8, wbits=1, abits=1, k=64, bipolar_a=True, xnor=True),
    MACConfig(rows=2, cols=1, wbits=8, abits=8, k=16),
]


@pytest.mark.parametrize("cfg", CFGS, ids=["w4a4", "w2a4u-rq", "xnor", "lanes1"])
@pytest.mark.parametrize("seed", [None, 3])
def test_tree_matches_reference(cfg, seed):
    nb = cfg.k // cfg.cols
    tiles = _tiles(cfg, [nb, max(1, nb - 1), 2, 1, 3], seed=7)
    outs, delays = _run(cfg, tiles, seed)
    for (w, a), got in zip(tiles, outs, strict=True):
        want = mac_tile(w, a.reshape(-1, 1), cfg)[:, 0]
        assert got == [int(x) for x in want]
    if seed is None:        # no stalls: the output follows the tile's last beat after the latency
        assert delays == [tree_latency(cfg)] * len(tiles)


def test_bad_config_is_refused():
    with pytest.raises(TypeError):
        MACTree("8x8")
