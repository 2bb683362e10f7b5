"""``l1bn verilog DESIGN ...``: write synthesizable Verilog for one design.

One forward command per registered norm (``<norm>bn``: ``l1bn``, ``l2bn``, ``rangebn``) and one
backward command per norm with a backward unit (``<norm>bn-bwd``), from the norm registry
(:mod:`l1bn.spec.norms`). The options of these and ``mac`` are generated from the
fields of ``BNConfig``, ``BNBackwardConfig`` and ``MACConfig`` (:mod:`l1bn.cli.options`): same
names, defaults and ranges. The Verilog itself comes from library functions in ``l1bn.sim``.
"""

from __future__ import annotations

import click
from l1bn.cli.options import config_from_options, config_options, pe_options
from l1bn.spec.config import BNBackwardConfig, BNConfig, MACConfig
from l1bn.spec.norms import norm_names, norm_spec

__all__ = ["verilog", "bn_config", "bwd_config", "mac_config", "check_mac_size", "MAX_MAC_ARRAY",
           "BWD_BN_FIELDS"]

# The largest MAC array: the contract's limit (MACConfig refuses larger arrays; see there).
from l1bn.spec.config import MAX_MAC_ARRAY  # noqa: E402

# the forward fields a backward unit uses (the rest of BNConfig does not change its hardware)
BWD_BN_FIELDS = ("width", "n", "channels", "frac", "recip_bits")


def _output_option(f):
    f = click.option("--force", is_flag=True,
                     help="Replace -o FILE even when it is not a Verilog file l1bn wrote.")(f)
    return click.option("-o", "--output", type=str, required=True, help="Verilog file to write.")(f)


def _write(output: str, text: str, kind: str):
    """Write the Verilog with the header line that marks it as ours (:data:`VERILOG_HEADER`)."""
    from importlib.metadata import version

    from l1bn.spec.outdir import VERILOG_HEADER, write_text_atomic

    return write_text_atomic(output, f"{VERILOG_HEADER} {kind} (l1bn {version('l1bn')}); a rerun of "
                                     f"l1bn verilog may replace this file\n{text}")


def _check_output(output: str, force: bool = False):
    """The output rule (:mod:`l1bn.spec.outdir`): a file l1bn verilog wrote, or --force."""
    from l1bn.spec.outdir import VERILOG_HEADER, check_output_file, check_writable

    o = check_output_file(output, header=VERILOG_HEADER, force=force)
    check_writable(o, option="-o")
    return o


def bn_config(norm: str | None, opts: dict) -> BNConfig:
    """The forward config from the generated options (``norm`` fixed, or from ``--norm``)."""
    fixed = {"norm": norm} if norm else {}
    return config_from_options(BNConfig, opts, exclude=tuple(fixed), **fixed)


def bwd_config(norm: str, opts: dict) -> BNBackwardConfig:
    """The backward config from the generated options."""
    bn = config_from_options(BNConfig, opts, include=BWD_BN_FIELDS, norm=norm)
    return config_from_options(BNBackwardConfig, opts, exclude=("bn",), bn=bn)


def check_mac_size(cfg: MACConfig) -> MACConfig:
    """Refuse arrays larger than :data:`MAX_MAC_ARRAY` (see there) and contradictory flags."""
    from l1bn.spec.config import check_int

    check_int("rows", cfg.rows, 1, MAX_MAC_ARRAY)
    check_int("cols", cfg.cols, 1, MAX_MAC_ARRAY)
    if not cfg.requant and (cfg.shift or cfg.relu):
        raise ValueError("--shift/--relu need --requant")
    return cfg


def mac_config(opts: dict) -> MACConfig:
    """The MAC config from the generated options (size limited to :data:`MAX_MAC_ARRAY`)."""
    return check_mac_size(config_from_options(MACConfig, opts))


@click.group("verilog")
def verilog():
    """Generate Verilog for a design."""


def _bn_command(norm: str):
    rule = norm_spec(norm)
    unit = rule.hw_unit.rpartition(":")[2]

    @verilog.command(f"{norm}bn")
    @config_options(BNConfig, exclude=("norm",))
    @_output_option
    def cmd(output, force, **opts):
        from l1bn.sim.verilog.bn import bn_verilog, describe

        cfg = bn_config(norm, opts)
        _check_output(output, force)
        text = bn_verilog(cfg)
        path = _write(output, text, f"{norm}bn")
        click.echo(f"wrote {path} ({len(text.splitlines())} lines): {unit}, width={cfg.width}, "
                   f"out_width={cfg.out_width}, channels={cfg.channels}, n={cfg.n}, lanes={cfg.lanes}")
        for line in describe(cfg):
            click.echo(line)

    cmd.__doc__ = (f"{rule.title} training-mode BN forward unit ({unit}) as Verilog: "
                   "x stream in, y stream and per-channel statistics out; gamma/beta ports.")
    cmd.short_help = f"Training-mode BN unit, {rule.title}."
    return cmd


def _bwd_command(norm: str):
    rule = norm_spec(norm)
    unit = rule.hw_backward.rpartition(":")[2]

    def sign_in_option(f):   # only a unit whose pass 2 needs just the sign (registry backward_sign_in)
        if not rule.backward_sign_in:
            return f
        return click.option("--sign-in", is_flag=True, default=False,
                            help="Take sign(d_i) as a 1-bit input field 'neg' (from the forward) "
                                 "instead of a comparator; x is then not read in pass 2.")(f)

    @verilog.command(f"{norm}bn-bwd")
    @config_options(BNConfig, include=BWD_BN_FIELDS)
    @config_options(BNBackwardConfig, exclude=("bn",))
    @_output_option
    @sign_in_option
    def cmd(output, force, sign_in=False, **opts):
        from l1bn.hw.bn_backward import backward_latency_cycles, stored_state_bits
        from l1bn.sim.verilog.bwd import bwd_verilog

        cfg = bwd_config(norm, opts)
        _check_output(output, force)
        text = bwd_verilog(cfg, sign_in=sign_in)
        path = _write(output, text, f"{norm}bn-bwd")
        b = cfg.bn
        bits = stored_state_bits(cfg)
        click.echo(f"wrote {path} ({len(text.splitlines())} lines): {unit}, width={b.width}, n={b.n}, "
                   f"channels={b.channels}, grad_width={cfg.grad_width}" + (", sign_in" if sign_in else ""))
        if sign_in:
            click.echo(f"input beat {b.width + cfg.grad_width + 1} bits (x[{b.width}], dy[{cfg.grad_width}], "
                       "neg[1]): x read in pass 1 only (don't care in pass 2), neg in both passes")
        click.echo(f"latency {backward_latency_cycles(cfg)} cycles per batch (no stalls); "
                   f"stored state {bits[norm]} bits/element; pass 2 needs {bits[norm + '_pass2']} bit(s)/element")

    cmd.__doc__ = (f"{rule.label}-BN backward unit ({unit}) as Verilog: "
                   "dx stream, dgamma and dbeta per channel.")
    cmd.short_help = rule.backward_help
    return cmd


for _norm in norm_names():            # one forward unit per registered norm
    _bn_command(_norm)
    if norm_spec(_norm).hw_backward:    # and a backward unit where the registry names one
        _bwd_command(_norm)


@verilog.command("mac", short_help="Low-bit fixed-point MAC array.")
@config_options(MACConfig)
@_output_option
def mac_cmd(output, force, **opts):
    """Low-bit MAC array (broadcast outer-product, streamed K-steps) as Verilog.

    rows and cols are limited to 16 here (MAX_MAC_ARRAY): larger arrays cannot be checked by
    simulation in minutes."""
    from l1bn.hw.mac_array import PIPELINE_CYCLES, in_layout, out_layout
    from l1bn.sim.verilog.mac import mac_verilog

    cfg = mac_config(opts)
    _check_output(output, force)
    text = mac_verilog(cfg)
    path = _write(output, text, "mac")
    click.echo(f"wrote {path} ({len(text.splitlines())} lines): MACArray {cfg.rows}x{cfg.cols}, "
               f"wbits={cfg.wbits} abits={cfg.abits}" + (" bipolar" if cfg.bipolar_a else "")
               + (", XNOR-popcount counters" if cfg.xnor else f", product {cfg.product_bits} bits")
               + f", accumulator {cfg.acc_bits} bits"
               + (f", requant shift={cfg.shift} out_bits={cfg.out_bits} relu={cfg.relu}" if cfg.requant else ""))
    click.echo(f"in beat {in_layout(cfg).size} bits (w[{cfg.rows}], a[{cfg.cols}], last); out beat "
               f"{out_layout(cfg).size} bits (y[{cfg.cols}] x {cfg.result_bits} bits, last)")
    click.echo(f"cycles per tile max(K, {cfg.rows + 1}); first result row {PIPELINE_CYCLES} cycles after the "
               "last K-step")


def _xnor_layers(s) -> str:
    """The layers a product array runs on its XNOR path (per-tile XNOR), for the summary line."""
    names = [lay["name"] for lay in s["layers"] if lay.get("xnor")]
    if s["mac"].get("xnor") or not names:
        return ""
    return f", XNOR-popcount path on {len(names)} of {len(s['layers'])} layers ({', '.join(names)})"


@verilog.command("net", short_help="The accelerator for an exported network, with memory files.")
@click.argument("export_dir", type=str)
@click.option("-o", "--output", "out_dir", type=str, required=True,
              help="Folder for the Verilog, the .hex memory images and schedule.json.")
@click.option("--rows", type=int, default=None,
              help="MAC array rows (output channels in parallel, 1..16); default: see --cols.")
@click.option("--cols", type=int, default=None,
              help="MAC array columns (output positions in parallel, 1..16). Default: the 32-MAC shape with "
                   "the fewest cycles per image; with only one of --rows/--cols, the other is 32 // it.")
@click.option("--device", type=str, default=None,
              help="ECP5 device whose resources bound the design (LFE5U-25F, LFE5U-45F, LFE5U-85F): without "
                   "--rows/--cols, the array shape of any size that fits it with the fewest cycles; a design "
                   "that does not fit is refused before anything is written.")
@click.option("--budget-lut", type=int, default=None,
              help="At most this many LUT sites (estimated) for the design (with --device, or on the LFE5U-25F).")
@pe_options
def net_cmd(export_dir, out_dir, rows, cols, device, budget_lut, pe="mac", lanes=None):
    """The accelerator for an exported network as Verilog, with its memory files."""
    import json
    from pathlib import Path

    from l1bn.cli.options import budget_from_options, lanes_from_options
    from l1bn.sim.verilog.net import write_net_verilog

    budget = budget_from_options(device, budget_lut)
    nl = lanes_from_options(pe, lanes)
    files = write_net_verilog(export_dir, out_dir, rows=rows, cols=cols, budget=budget, lanes=nl)
    s = json.loads((Path(out_dir) / "schedule.json").read_text())
    v = files[0]
    click.echo(f"wrote {v} ({len(v.read_text().splitlines())} lines) and {len(files) - 2} .hex files, "
               f"schedule.json in {out_dir}")
    i = s["interface"]
    tree = f" x {nl} lanes (tree PE: K in beats of {nl} input channels)" if nl > 1 else ""
    click.echo(f"MAC array {s['rows']}x{s['cols']}{tree} (w{s['mac']['wbits']} a{s['mac']['abits']} "
               f"{'signed' if s['mac']['signed_a'] else 'unsigned'}"
               f"{', bipolar codes, XNOR-popcount' if s['mac'].get('xnor') else ''}{_xnor_layers(s)}, "
               f"accumulator {s['mac_acc_bits']} bits); "
               f"in: {i['pixels']} pixels x {i['in_bits']} bits{' signed' if i.get('in_signed') else ''}; "
               f"out: {i['classes']} logits x {i['logit_bits']} bits + argmax")
    click.echo(f"{'layer':8} {'K':>5} {'T':>3} {'G':>3} {'tiles':>5} {'MACs':>7} {'issue':>6} {'cycles':>7}")
    for lay in s["layers"]:
        click.echo(f"{lay['name']:8} {lay['K']:5d} {lay['T']:3d} {lay['G']:3d} {lay['tiles']:5d} "
                   f"{lay['macs']:7d} {lay['issue']:6d} {lay['cycles']:7d}")
    click.echo(f"cycles per image {s['cycles_per_image']} (images back to back; MAC bound "
               f"{s['macs']} / {s['rows'] * s['cols'] * nl} = {s['mac_bound_cycles']}); latency {s['latency']}")
    r = s["resources"]
    click.echo(f"ECP5 resources before synthesis: {r['bram']} DP16KD (weights {r['bram_by']['weights']}, "
               f"activations {r['bram_by']['activations']}, image {r['bram_by']['image']}, im2col tables "
               f"{r['bram_by']['tables']}, mult/bias {r['bram_by']['mult/bias']}), {r['dsp']} MULT18X18D; "
               f"estimated {r['lut_sites']} LUT sites, {r['ff']} FF"
               + (f"; fits {budget.name}" if budget is not None else ""))


def _train_options(f):
    """The options ``l1bn verilog train`` and ``l1bn sim train`` share."""
    f = click.option("--seed", type=int, default=0, show_default=True,
                     help="The initial state is the integer trainer's init_state(config, SEED).")(f)
    f = click.option("--norm", type=click.Choice(norm_names()), default=None,
                     help="BN norm (default: the run's; l1 for an export without one). It needs a backward unit.")(f)
    f = click.option("--batch", type=int, default=None,
                     help="Images per step, 2..4096 (default 8): every BN unit and buffer is sized for it.")(f)
    f = click.option("--rows", type=int, default=None, help="MAC array rows, 1..16 (default 8; the array is rows x 1).")(f)
    return f


def train_config(source: str, *, rows, batch, norm, seed):
    """``(cfg, rows, x, y)`` for ``l1bn verilog/sim train``: every argument checked, and the
    config checked against what the accelerator can build (``TrainPlan``), before anything is
    generated."""
    from l1bn.hw.train.plan import TrainPlan
    from l1bn.sim.simulate.train import DEFAULT_ROWS, train_source
    from l1bn.spec.config import check_int

    if batch is not None:
        check_int("batch", batch, 2, 4096)
    if rows is not None:
        check_int("rows", rows, 1, MAX_MAC_ARRAY)
    check_int("seed", seed, 0, 2**32 - 1)
    cfg, x, y = train_source(source, batch=batch, norm=norm)
    rows = DEFAULT_ROWS if rows is None else rows
    TrainPlan(cfg, rows=rows)
    return cfg, rows, x, y


@verilog.command("train", short_help="The training accelerator for a run's (or an export's) network.")
@click.argument("source", metavar="RUN_OR_EXPORT", type=str)
@click.option("-o", "--output", "out_dir", type=str, required=True, help="Folder for the Verilog and schedule.json.")
@_train_options
def train_cmd(source, out_dir, rows, batch, norm, seed):
    """The training accelerator (one integer SGD step per batch, docs/train_accel.md) for the
    network of an integer-training run or an export, as Verilog with its schedule."""
    from l1bn.hw.train.accel import TrainAccelerator
    from l1bn.sim.verilog.train import check_train_output, train_summary, write_train_verilog

    check_train_output(out_dir, [source])
    cfg, rows, _, _ = train_config(source, rows=rows, batch=batch, norm=norm, seed=seed)
    acc = TrainAccelerator(cfg, rows=rows, seed=seed)
    files = write_train_verilog(acc, out_dir, inputs=[source])
    s = train_summary(acc)
    click.echo(f"wrote {files[0]} ({len(files[0].read_text().splitlines())} lines) and {files[1]}")
    i = s["interface"]
    click.echo(f"{cfg.norm} BN, batch {s['batch']}, MAC array {acc.rows}x1 (w{s['mac']['wbits']} a{s['mac']['abits']} "
               f"signed, accumulator {s['mac_acc_bits']} bits), {len(acc.plan.layers)} layers, "
               f"{s['memory_bits'] / 8192:.1f} KiB of on-chip memory")
    click.echo(f"in: {i['beats_per_step']} beats per step ({i['pixels_per_image']} pixels x {i['pixel_bits']} bits "
               f"+ label); out: {i['logits_per_step']} logits x {i['logit_bits']} bits and one result per step; "
               f"read-back: {i['state_values']} values")
    blocks: dict = {}
    for e in s["program"]:
        blocks[e["block"]] = blocks.get(e["block"], 0) + e["cycles"]
    click.echo(f"{'block':12} {'cycles':>9} {'share':>7}")
    for b, c in sorted(blocks.items(), key=lambda kv: -kv[1]):
        click.echo(f"{b:12} {c:9d} {100 * c / s['cycles_per_step']:6.1f}%")
    click.echo(f"cycles per step {s['cycles_per_step']}; the array takes a beat in {100 * s['array_busy']:.1f}% of them "
               f"({s['mac_beats']} beats of {acc.rows} MACs; useful MAC utilization {100 * s['mac_utilization']:.1f}%)")
