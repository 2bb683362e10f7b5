"""``l1bn verilog l1bn`` / ``l2bn``: Verilog of the training-mode BN forward units."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from l1bn.spec.config import BNConfig

__all__ = ["l1bn_cmd", "l2bn_cmd", "make_config", "config_options", "describe"]

# (option name, default, help); the option --foo-bar fills BNConfig(foo_bar=...)
_OPTIONS = [
    ("width", 8, "Bits of x (signed)."),
    ("out-width", 8, "Bits of y (signed, saturated)."),
    ("channels", 1, "Channels per batch."),
    ("n", 64, "Elements per channel per batch."),
    ("lanes", 1, "Elements per cycle (must divide n)."),
    ("frac", 4, "Fractional bits of mu, d and sigma."),
    ("xhat-frac", 8, "Fractional bits of xhat."),
    ("recip-bits", 20, "inv = floor(2**recip_bits / sigma)."),
    ("gamma-width", 8, "Bits of gamma (signed)."),
    ("gamma-frac", 6, "Fractional bits of gamma."),
    ("beta-width", 8, "Bits of beta (signed, output units)."),
    ("out-frac", 4, "Fractional bits of y."),
    ("eps", 1, "Added to sigma (units of 2**-frac)."),
    ("c-bits", 12, "L1: bits of the constant c = sqrt(pi/2)."),
]
CONFIG_KEYS = [name.replace("-", "_") for name, _, _ in _OPTIONS]


def make_config(norm: str, **opts) -> BNConfig:
    """The BN config from CLI options (ValueError names any bad value)."""
    return BNConfig(norm=norm, **{k: opts[k] for k in CONFIG_KEYS})


def config_options(f):
    """The options that build a :class:`BNConfig` (shared by ``verilog l1bn/l2bn`` and ``sim bn``)."""
    opts = [click.option(f"--{name}", name.replace("-", "_"), default=d, type=int, show_default=True, help=h)
            for name, d, h in _OPTIONS]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


def describe(cfg: BNConfig) -> list[str]:
    """Lines that summarize a unit: widths, per-channel cycles, latency, throughput."""
    from l1bn.hw.bn_unit import bn_latency_cycles, channel_overhead_cycles, recip_cycles

    full = cfg.beats >= channel_overhead_cycles(cfg)
    return [
        f"widths: mu {cfg.mean_bits}, dispersion sum {cfg.disp_sum_bits}, s {cfg.disp_bits}, "
        f"sigma {cfg.sigma_bits}, inv {cfg.inv_bits}, xhat {cfg.xhat_bits}, gamma*xhat {cfg.affine_bits} bits",
        f"per channel: {cfg.beats} beats per pass, reciprocal{'' if cfg.norm == 'l1' else '/sqrt'} "
        f"{recip_cycles(cfg)} cycles, overhead {channel_overhead_cycles(cfg)} cycles",
        f"latency {bn_latency_cycles(cfg)} cycles per batch of {cfg.channels} channel(s) (no stalls); "
        + (f"steady state {cfg.lanes} element(s)/cycle" if full else
           f"n/lanes < {channel_overhead_cycles(cfg)}: below {cfg.lanes} element(s)/cycle"),
    ]


def _command(norm):
    unit = "L1BNUnit" if norm == "l1" else "L2BNUnit"

    @click.command(f"{norm}bn")
    @config_options
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="Verilog file to write.")
    def cmd(output, **opts):
        from l1bn.hw import bn_unit as hw
        from l1bn.sim.runner import to_verilog

        cfg = make_config(norm, **opts)
        text = to_verilog(getattr(hw, unit)(cfg), f"{norm}bn")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        click.echo(f"wrote {output} ({len(text.splitlines())} lines): {unit}, width={cfg.width}, "
                   f"out_width={cfg.out_width}, channels={cfg.channels}, n={cfg.n}, lanes={cfg.lanes}")
        for line in describe(cfg):
            click.echo(line)

    cmd.__doc__ = (f"{'L1' if norm == 'l1' else 'L2'}-BN training-mode forward unit ({unit}) as Verilog: "
                   "x stream in, y stream and per-channel statistics out; gamma/beta ports.")
    return cmd


l1bn_cmd = _command("l1")
l2bn_cmd = _command("l2")
