"""``l1bn verilog l1bn-bwd`` / ``l2bn-bwd``: Verilog of the BN backward units.

``l1bn-bwd --sign-in`` builds ``L1BNBackwardUnit(cfg, sign_in=True)`` (input field ``neg``, x not
read in pass 2); ``l2bn-bwd`` has no such option (its pass 2 needs x).
"""

from pathlib import Path

import click
from l1bn.spec.config import BNBackwardConfig, BNConfig

__all__ = ["l1bn_bwd_cmd", "l2bn_bwd_cmd", "make_config"]


def make_config(norm, width, n, channels, frac, recip_bits, grad_width, inner_frac,
                grad_out_width, grad_out_frac) -> BNBackwardConfig:
    """The backward config from CLI options (ValueError names any bad value)."""
    bn = BNConfig(norm=norm, width=width, n=n, channels=channels, frac=frac, recip_bits=recip_bits)
    return BNBackwardConfig(bn=bn, grad_width=grad_width, inner_frac=inner_frac,
                            grad_out_width=grad_out_width, grad_out_frac=grad_out_frac)


def _sign_in_option(norm):
    """``--sign-in`` for the L1 command; the L2 command gets no option (sign_in stays False)."""
    if norm != "l1":
        return lambda f: f
    return click.option("--sign-in", is_flag=True, default=False,
                        help="Take sign(d_i) as a 1-bit input field 'neg' (from the forward) "
                             "instead of a comparator; x is then not read in pass 2.")


def _command(norm):
    unit = "L1BNBackwardUnit" if norm == "l1" else "L2BNBackwardUnit"

    @click.command(f"{norm}bn-bwd")
    @click.option("--width", default=8, show_default=True, help="Bits of x (signed).")
    @click.option("--n", "n", default=64, show_default=True, help="Elements per channel per batch.")
    @click.option("--channels", default=1, show_default=True)
    @click.option("--frac", default=4, show_default=True, help="Fractional bits of mu and d.")
    @click.option("--recip-bits", default=20, show_default=True, help="inv = floor(2**recip_bits / sigma).")
    @click.option("--grad-width", default=8, show_default=True, help="Bits of the upstream gradient dy.")
    @click.option("--inner-frac", default=4, show_default=True, help="Fractional bits of the bracket and dgamma.")
    @click.option("--grad-out-width", default=16, show_default=True, help="Bits of dx (saturated).")
    @click.option("--grad-out-frac", default=4, show_default=True, help="Fractional bits of dx.")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="Verilog file to write.")
    @_sign_in_option(norm)
    def cmd(width, n, channels, frac, recip_bits, grad_width, inner_frac, grad_out_width,
            grad_out_frac, output, sign_in=False):
        from l1bn.hw import bn_backward as hw
        from l1bn.sim.runner import to_verilog

        cfg = make_config(norm, width, n, channels, frac, recip_bits, grad_width, inner_frac,
                          grad_out_width, grad_out_frac)
        text = to_verilog(getattr(hw, unit)(cfg, sign_in=sign_in), f"{norm}bn_bwd")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        bits = hw.stored_state_bits(cfg)
        click.echo(f"wrote {output} ({len(text.splitlines())} lines): {unit}, width={width}, n={n}, "
                   f"channels={channels}, grad_width={grad_width}" + (", sign_in" if sign_in else ""))
        if sign_in:
            click.echo(f"input beat {width + grad_width + 1} bits (x[{width}], dy[{grad_width}], neg[1]): "
                       "x read in pass 1 only (don't care in pass 2), neg in both passes")
        click.echo(f"latency {hw.backward_latency_cycles(cfg)} cycles per batch (no stalls); "
                   f"stored state {bits[norm]} bits/element; pass 2 needs {bits[norm + '_pass2']} bit(s)/element")

    cmd.__doc__ = (f"{'L1' if norm == 'l1' else 'L2'}-BN backward unit ({unit}) as Verilog: "
                   "dx stream, dgamma and dbeta per channel.")
    return cmd


l1bn_bwd_cmd = _command("l1")
l2bn_bwd_cmd = _command("l2")
