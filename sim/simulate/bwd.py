"""Simulate a BN backward unit on one batch with cocotb (library).

:func:`simulate_bn_backward` is the Python entry point the tests share; :func:`random_bwd_batch`
makes its inputs.
"""

from __future__ import annotations

from l1bn.sim.build_root import default_build_root

from .runner import run_bench

__all__ = ["forward_stats", "random_bwd_batch", "simulate_bn_backward"]


def random_bwd_batch(cfg, *, seed: int = 0, source: str = "random"):
    """``(x, dy)`` int64 tensors (channels, n) for the ``BNBackwardConfig`` ``cfg``.

    ``source``: ``"random"`` (x and dy uniform over their full signed ranges, x[0, 0] and
    dy[0, 0] at the minimum), ``"real"`` (x and dy = dL/dy of one BN layer in a training step of
    the digits CNN, :func:`l1bn.sw.capture.bn_grads`, dy clamped to ``grad_width`` bits).
    """
    import torch
    from l1bn.spec.config import check_choice

    check_choice("source", source, ("random", "real"))
    b = cfg.bn
    if source == "real":
        from l1bn.sw.capture import bn_grads

        x, dy = bn_grads(width=b.width, n=b.n, channels=b.channels, seed=seed)
        lim = 1 << (cfg.grad_width - 1)
        return x.to(torch.int64), dy.to(torch.int64).clamp(-lim, lim - 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-(1 << (b.width - 1)), 1 << (b.width - 1), (b.channels, b.n), generator=g)
    dy = torch.randint(-(1 << (cfg.grad_width - 1)), 1 << (cfg.grad_width - 1), (b.channels, b.n),
                       generator=g)
    x[0, 0], dy[0, 0] = -(1 << (b.width - 1)), -(1 << (cfg.grad_width - 1))
    return x, dy


def forward_stats(x, bcfg):
    """``(mu, inv)`` of the integer forward (:func:`l1bn.spec.reference.bn.bn_forward`) on ``x``:
    the statistics the backward unit is given (they do not depend on gamma and beta)."""
    import numpy as np
    from l1bn.spec.reference.bn import bn_forward

    zeros = np.zeros(bcfg.channels, dtype=np.int64)
    r = bn_forward(np.asarray(x, dtype=np.int64), zeros, zeros, bcfg)
    return r.mu, r.inv


def simulate_bn_backward(cfg, x, dy, gamma, *, simulator: str = "icarus", gaps: int = 0, seed: int = 1,
                         build_dir=None, raise_on_fail: bool = True, sign_in: bool = False,
                         unit=None) -> dict:
    """Stream one batch through the BN backward unit for ``cfg`` (a ``BNBackwardConfig``).

    ``x``, ``dy`` (channels, n) and ``gamma`` (channels,) are int64 arrays or tensors; the
    unit's ``mu`` and ``inv`` inputs are the reference forward's (:func:`forward_stats`).
    ``gaps`` is the percent of idle input cycles and of not-ready cycles on each output.
    ``sign_in`` builds the unit with its 1-bit sign input; ``unit`` overrides the design class
    (tests use it for mutants).

    Returns the bench's measurements: ``mismatches`` (dx elements that differ from the reference),
    ``first`` (up to 20 of them), ``outputs``, ``g_mismatches``, ``g_first``, ``g_seen``,
    ``cycles`` (first input beat to last dx), ``formula`` (:func:`backward_latency_cycles`),
    ``violations`` (broken stream rules), plus ``passed``, ``build_s`` and ``run_s``.
    """
    import numpy as np
    from l1bn.hw.bn_backward import backward_unit_class
    from l1bn.spec.reference.bn_backward import check_inputs

    mu, inv = forward_stats(x, cfg.bn)
    arrays = check_inputs(np.asarray(x), np.asarray(dy), np.asarray(gamma), mu, inv, cfg)
    cls = unit or backward_unit_class(cfg.bn.norm)
    dut = cls(cfg, sign_in=sign_in) if sign_in else cls(cfg)
    if build_dir is None:
        build_dir = default_build_root() / f"bwd-{cfg.digest()}-{int(sign_in)}-{simulator}"
    r, _ = run_bench(dut, name="bwd", build_dir=build_dir, simulator=simulator, config=cfg, seed=seed,
                     raise_on_fail=raise_on_fail,
                     data={k: v.tolist() for k, v in arrays.items()},
                     options={"gaps": gaps, "seed": seed})
    return r
