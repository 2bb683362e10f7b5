"""``l1bn sim bn``: run a BN forward unit's cocotb bench and print mismatches, cycles, throughput.

:func:`simulate_bn` is the Python entry point the tests share.
"""

from __future__ import annotations

import click
from l1bn.sim.verilog_bn import config_options, describe, make_config

__all__ = ["bn_cmd", "random_batch", "simulate_bn"]


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
                build_dir=None, raise_on_fail: bool = True, unit=None) -> dict:
    """Stream one batch ``x`` (channels, n) through the BN unit for ``cfg`` on ``simulator``.

    Returns the bench's measurements: ``mismatches`` (y elements that differ from the reference),
    ``first`` (up to 20 of them), ``outputs``, ``stats_seen``, ``stats_mismatches``, ``cycles``
    (first input beat to last output beat), ``formula`` (:func:`bn_latency_cycles`), ``in_rate`` and
    ``out_rate`` (elements per cycle over the input and the output span), plus ``passed``,
    ``build_s`` and ``run_s``. ``unit`` overrides the design class (tests use it for mutants).
    """
    from l1bn.hw.bn_unit import bn_unit_for
    from l1bn.sim.runner import default_build_root, run_bench, to_verilog
    from l1bn.spec.reference.bn import check_forward_inputs

    check_forward_inputs(x, gamma, beta, cfg)
    verilog = to_verilog(unit(cfg) if unit else bn_unit_for(cfg), "bn_unit")
    if build_dir is None:
        build_dir = default_build_root() / f"bn-{cfg.digest()}-{simulator}"
    r, _ = run_bench(verilog, name="bn", toplevel="bn_unit", test_module="l1bn.sim.benches.bn_tb",
                     build_dir=build_dir, simulator=simulator, config=cfg, seed=seed,
                     raise_on_fail=raise_on_fail,
                     data={"x": x.tolist(), "gamma": gamma.tolist(), "beta": beta.tolist()},
                     extra_env={"L1BN_GAPS": str(gaps), "L1BN_SEED": str(seed)})
    return r


@click.command("bn")
@click.option("--norm", type=click.Choice(["l1", "l2"]), default="l1", show_default=True)
@config_options
@click.option("--source", type=click.Choice(["random", "real"]), default="random", show_default=True,
              help="Uniform random x, or real pre-BN activations of the trained digits CNN.")
@click.option("--gaps", default=0, show_default=True, help="Percent idle input / not-ready output cycles.")
@click.option("--seed", default=0, show_default=True)
@click.option("--simulator", type=click.Choice(["icarus", "verilator"]), default="icarus", show_default=True)
def bn_cmd(norm, source, gaps, seed, simulator, **opts):
    """Stream a batch through an L1-/L2-BN unit and compare y and the statistics with the reference."""
    from l1bn.spec.config import check_int

    check_int("gaps", gaps, 0, 99)
    cfg = make_config(norm, **opts)
    x, gamma, beta = random_batch(cfg, seed=seed, source=source)
    r = simulate_bn(cfg, x, gamma, beta, simulator=simulator, gaps=gaps, seed=seed + 1, raise_on_fail=False)
    click.echo(f"{norm.upper()}-BN unit, width={cfg.width} out_width={cfg.out_width}, {cfg.channels} channel(s) "
               f"x n={cfg.n}, lanes={cfg.lanes}, {source} x, gaps {gaps}%, {simulator}")
    for line in describe(cfg):
        click.echo(line)
    click.echo(f"y: {r['outputs']} of {r['expected_outputs']} outputs, {r['mismatches']} mismatches; "
               f"stats: {r['stats_seen']} channel(s) seen, {r['stats_mismatches']} mismatches")
    for b in r["first"][:10]:
        click.echo(f"  {b}")
    same = "matches" if r["cycles"] == r["formula"] else ("differs (gaps/backpressure)" if gaps else "DIFFERS")
    click.echo(f"cycles {r['cycles']} (first input beat to last output beat); formula {r['formula']}: {same}")
    click.echo(f"throughput: input {r['in_rate']:.3f}, output {r['out_rate']:.3f} elements/cycle "
               f"(peak {cfg.lanes})")
    if r["mismatches"] or r["stats_mismatches"] or not r["passed"]:
        raise click.ClickException(f"{r['mismatches']} y mismatches, {r['stats_mismatches']} stats mismatches")
