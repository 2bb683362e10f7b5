"""Simulate a BN forward unit on one batch with cocotb (library; the command is ``l1bn sim bn``).

:func:`simulate_bn` is the Python entry point the tests share.
"""

from __future__ import annotations

from l1bn.sim.build_root import default_build_root

from .runner import run_bench

__all__ = ["random_batch", "simulate_bn"]


def random_batch(cfg, *, seed: int = 0, source: str = "random"):
    """``(x, gamma, beta)`` int64 tensors for ``cfg``.

    ``source``: ``"random"`` (uniform x over the full signed range, one element of channel 0 at
    the minimum and one at the maximum), ``"real"`` (pre-BN activations of the trained digits
    CNN, :func:`l1bn.sw.capture.bn_inputs`). gamma and beta are uniform over their full ranges.
    """
    import torch
    from l1bn.spec.config import check_choice

    check_choice("source", source, ("random", "real"))
    g = torch.Generator().manual_seed(seed)

    def uniform(bits, shape):
        return torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), shape, generator=g)

    if source == "real":
        from l1bn.sw.capture import bn_inputs

        x = bn_inputs(width=cfg.width, n=cfg.n, channels=cfg.channels, seed=seed)
    else:
        x = uniform(cfg.width, (cfg.channels, cfg.n))
        x[0, 0], x[0, -1] = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    return x, uniform(cfg.gamma_width, (cfg.channels,)), uniform(cfg.beta_width, (cfg.channels,))


def simulate_bn(cfg, x, gamma, beta, *, simulator: str = "icarus", gaps: int = 0, seed: int = 1,
                build_dir=None, raise_on_fail: bool = True, unit=None, out_gaps: int | None = None) -> dict:
    """Stream one batch ``x`` (channels, n) through the BN unit for ``cfg`` on ``simulator``.

    Returns the bench's measurements: ``mismatches`` (y elements that differ from the reference),
    ``first`` (up to 20 of them), ``outputs``, ``stats_seen``, ``stats_mismatches``, ``cycles``
    (first input beat to last output beat), ``formula`` (:func:`bn_latency_cycles`), ``in_rate`` and
    ``out_rate`` (elements per cycle over the input and the output span), plus ``passed``,
    ``build_s`` and ``run_s``. ``unit`` overrides the design class (tests use it for mutants).
    ``gaps`` is the percent of idle input cycles and, unless ``out_gaps`` is given, of not-ready
    cycles on each output (``o`` and ``stats``).
    """
    from l1bn.hw.bn_unit import bn_unit_for
    from l1bn.spec.reference.bn import check_forward_inputs

    check_forward_inputs(x, gamma, beta, cfg)
    if build_dir is None:
        build_dir = default_build_root() / f"bn-{cfg.digest()}-{simulator}"
    r, _ = run_bench(unit(cfg) if unit else bn_unit_for(cfg), name="bn", build_dir=build_dir,
                     simulator=simulator, config=cfg, seed=seed, raise_on_fail=raise_on_fail,
                     data={"x": x.tolist(), "gamma": gamma.tolist(), "beta": beta.tolist()},
                     options={"gaps": gaps, "out_gaps": gaps if out_gaps is None else out_gaps,
                              "seed": seed})
    return r

