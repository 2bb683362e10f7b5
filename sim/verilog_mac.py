"""``l1bn verilog mac``: Verilog of the low-bit MAC array."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from l1bn.spec.config import MACConfig

__all__ = ["mac_cmd", "make_config", "config_options"]


def make_config(rows, cols, wbits, abits, unsigned_w, unsigned_a, k, requant, shift, out_bits, relu) -> MACConfig:
    """The MAC config from CLI options (ValueError names any bad value)."""
    if not requant and (shift or relu):
        raise ValueError("--shift/--relu need --requant")
    return MACConfig(rows=rows, cols=cols, wbits=wbits, abits=abits, signed_w=not unsigned_w,
                     signed_a=not unsigned_a, k=k, requant=requant, shift=shift, out_bits=out_bits,
                     relu=relu)


def config_options(f):
    """The options that build a :class:`MACConfig` (shared by ``verilog mac`` and ``sim mac``)."""
    opts = [
        click.option("--rows", default=4, show_default=True, help="Output rows M per tile."),
        click.option("--cols", default=4, show_default=True, help="Output columns N per tile."),
        click.option("--wbits", default=4, show_default=True, help="Weight bits (1 signed = binary +-1)."),
        click.option("--abits", default=4, show_default=True, help="Activation bits."),
        click.option("--unsigned-w", is_flag=True, help="Unsigned weights."),
        click.option("--unsigned-a", is_flag=True, help="Unsigned activations."),
        click.option("--k", "k", default=64, show_default=True, help="Longest reduction (sizes the accumulator)."),
        click.option("--requant", is_flag=True, help="Add the output requantizer."),
        click.option("--shift", default=0, show_default=True, help="Requantizer right shift (round half up)."),
        click.option("--out-bits", default=8, show_default=True, help="Requantized output bits."),
        click.option("--relu", is_flag=True, help="ReLU in the requantizer (unsigned output)."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


@click.command("mac")
@config_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Verilog file to write.")
def mac_cmd(rows, cols, wbits, abits, unsigned_w, unsigned_a, k, requant, shift, out_bits, relu, output):
    """Low-bit MAC array (broadcast outer-product, streamed K-steps) as Verilog."""
    from l1bn.hw.mac_array import PIPELINE_CYCLES, MACArray, in_layout, out_layout
    from l1bn.sim.runner import to_verilog

    cfg = make_config(rows, cols, wbits, abits, unsigned_w, unsigned_a, k, requant, shift, out_bits, relu)
    text = to_verilog(MACArray(cfg), "mac_array")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    click.echo(f"wrote {output} ({len(text.splitlines())} lines): MACArray {rows}x{cols}, "
               f"wbits={wbits} abits={abits}, product {cfg.product_bits} bits, accumulator {cfg.acc_bits} bits"
               + (f", requant shift={shift} out_bits={out_bits} relu={relu}" if requant else ""))
    click.echo(f"in beat {in_layout(cfg).size} bits (w[{rows}], a[{cols}], last); out beat "
               f"{out_layout(cfg).size} bits (y[{cols}] x {cfg.result_bits} bits, last)")
    click.echo(f"cycles per tile max(K, {rows + 1}); first result row {PIPELINE_CYCLES} cycles after the last K-step")
