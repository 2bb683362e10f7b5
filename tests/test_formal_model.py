"""The generated model (the reference program on the Amaranth backend, sim/formal/model.py)
agrees with the numpy reference: same program text, two backends."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator
from l1bn.sim.formal.model import AmaranthOps, Lanes, forward_model
from l1bn.spec.config import BNConfig
from l1bn.spec.reference.bn import bn_forward


def _model_circuit(cfg):
    """Inputs (one channel's x, gamma, beta and the reported record) and the model's outputs."""
    xs = [Signal(signed(cfg.width), name=f"x{j}") for j in range(cfg.n)]
    gamma, beta = Signal(signed(cfg.gamma_width)), Signal(signed(cfg.beta_width))
    rep = {"mu": Signal(signed(cfg.mean_bits + 2)), "s": Signal(unsigned(cfg.disp_bits + 2)),
           "sigma": Signal(unsigned(cfg.sigma_bits + 2)), "inv": Signal(unsigned(cfg.inv_bits + 2))}
    values, checks = forward_model(cfg, xs, gamma, beta, rep)
    m = Module()
    ys = [Signal(signed(cfg.out_width + 2), name=f"y{j}") for j in range(cfg.n)]
    oks = [Signal(name=f"ok_{name}_{k}") for k, (name, _) in enumerate(checks)]
    m.d.comb += [y.eq(v) for y, v in zip(ys, values["y"].items, strict=True)]
    m.d.comb += [ok.eq(c) for ok, (_, c) in zip(oks, checks, strict=True)]
    return m, xs, gamma, beta, rep, ys, oks, [name for name, _ in checks]


def _simulate(cfg, cases):
    """Each case: (x row, gamma, beta, reported dict) -> (ys, {check name: bit})."""
    m, xs, gamma, beta, rep, ys, oks, names = _model_circuit(cfg)
    sim = Simulator(m)
    got = []

    async def tb(ctx):
        for x, g, b, r in cases:
            for sig, v in zip(xs, x, strict=True):
                ctx.set(sig, int(v))
            ctx.set(gamma, int(g))
            ctx.set(beta, int(b))
            for k, sig in rep.items():
                ctx.set(sig, int(r[k]))
            got.append(([ctx.get(y) for y in ys], {n: ctx.get(o) for n, o in zip(names, oks, strict=True)}))

    sim.add_testbench(tb)
    sim.run()
    return got, names


@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
@pytest.mark.parametrize("width", [4, 8])
def test_generated_model_equals_numpy_reference(norm, width):
    cfg = BNConfig(norm=norm, width=width, n=8, channels=24, recip_bits=8)
    rng = np.random.default_rng(31 + width)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    x = rng.integers(lo, hi + 1, size=(cfg.channels, cfg.n), dtype=np.int64)
    x[0] = lo                                   # corners: constant channels, the range ends
    x[1] = hi
    x[2, ::2], x[2, 1::2] = lo, hi
    gamma = rng.integers(-(1 << (cfg.gamma_width - 1)), 1 << (cfg.gamma_width - 1), size=cfg.channels, dtype=np.int64)
    beta = rng.integers(-(1 << (cfg.beta_width - 1)), 1 << (cfg.beta_width - 1), size=cfg.channels, dtype=np.int64)
    ref = bn_forward(x, gamma, beta, cfg)
    cases = [(x[c], gamma[c], beta[c], {k: getattr(ref, k)[c] for k in ("mu", "s", "sigma", "inv")})
             for c in range(cfg.channels)]
    got, names = _simulate(cfg, cases)
    assert {"mu", "inv", "sigma"} <= set(names) and ("s" in names)
    for c, (ys, oks) in enumerate(got):
        assert ys == [int(v) for v in ref.y[c]], c
        assert all(oks.values()), (c, oks)
    # a reported value one off fails its own relation (the checks are not vacuous)
    for key in ("mu", "s", "inv"):
        bad = [(xr, g, b, dict(r, **{key: r[key] + 1})) for xr, g, b, r in cases[:4]]
        res, _ = _simulate(cfg, bad)
        assert all(not all(oks.values()) for _, oks in res), key


def test_lanes_broadcast_and_errors():
    a = Lanes([1, 2, 3])
    assert (a + Lanes([10])).items == [11, 12, 13] and (2 * a).items == [2, 4, 6]
    with pytest.raises(ValueError, match="broadcast"):
        a + Lanes([1, 2])
    with pytest.raises(ValueError, match="reports as 'mu'"):
        AmaranthOps().div_round(Lanes([5]), 2, name="mu")
