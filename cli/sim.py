"""``l1bn sim DESIGN ...``: run a design's cocotb bench (``l1bn.sim.simulate``) and print the result.

The options that build a config are generated from its dataclass fields, as in ``l1bn verilog``
(:mod:`l1bn.cli.options`); every option is checked before anything is generated or simulated.
"""

from __future__ import annotations

import click
from l1bn.cli.options import config_options, lanes_from_options, pe_options
from l1bn.cli.verilog import bn_config, mac_config
from l1bn.spec.config import BNConfig, MACConfig
from l1bn.spec.norms import norm_names

__all__ = ["sim"]

_SIMULATORS = click.Choice(["icarus", "verilator"])


@click.group("sim")
def sim():
    """Simulate a design or an exported network with cocotb."""


@sim.command("bn", short_help="Check an L1-/L2-BN unit against the integer reference.")
@config_options(BNConfig)
@click.option("--source", type=click.Choice(["random", "real"]), default="random", show_default=True,
              help="Uniform random x, or real pre-BN activations of the trained digits CNN.")
@click.option("--gaps", default=0, show_default=True, help="Percent idle input / not-ready output cycles, 0..99.")
@click.option("--seed", default=0, show_default=True, help="Random seed, >= 0.")
@click.option("--simulator", type=_SIMULATORS, default="icarus", show_default=True)
def bn_cmd(source, gaps, seed, simulator, **opts):
    """Stream a batch through an L1-/L2-BN unit and compare y and the statistics with the reference."""
    from l1bn.sim.simulate.bn import random_batch, simulate_bn
    from l1bn.sim.verilog.bn import describe
    from l1bn.spec.config import check_int

    check_int("gaps", gaps, 0, 99)
    check_int("seed", seed, 0, 2**31 - 2)
    cfg = bn_config(None, opts)
    norm = cfg.norm
    from l1bn.sim.simulate.budget import check_memory

    # x and y, channels x n each: refused up front rather than dying of a MemoryError
    check_memory(2 * cfg.channels * cfg.n, what=f"sim bn: {cfg.channels} channels x n={cfg.n}",
                 hint="use fewer --channels or a smaller --n")
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


@sim.command("mac", short_help="Check a MAC array against the integer reference.")
@config_options(MACConfig)
@click.option("--tiles", default=8, show_default=True, help="Random tiles to stream, 1..1000.")
@click.option("--tile-k", type=int, default=None, help="Reduction length per tile, 1..k (default: --k).")
@click.option("--gaps", default=0, show_default=True, help="Percent idle input cycles, 0..99.")
@click.option("--out-gaps", default=0, show_default=True, help="Percent not-ready output cycles, 0..99.")
@click.option("--extremes", is_flag=True, help="Operands at the min/max of their ranges only.")
@click.option("--seed", default=0, show_default=True, help="Random seed, >= 0.")
@click.option("--simulator", type=_SIMULATORS, default="icarus", show_default=True)
def mac_cmd(tiles, tile_k, gaps, out_gaps, extremes, seed, simulator, **opts):
    """Stream random tiles through the MAC array and compare with the integer reference."""
    from l1bn.sim.simulate.mac import random_tiles, simulate_mac
    from l1bn.spec.config import check_int

    cfg = mac_config(opts)
    check_int("tiles", tiles, 1, 1000)
    kk = cfg.k if tile_k is None else check_int("tile_k", tile_k, 1, cfg.k)
    check_int("gaps", gaps, 0, 99)
    check_int("out_gaps", out_gaps, 0, 99)
    check_int("seed", seed, 0, 2**31 - 2)
    from l1bn.sim.simulate.budget import (
        LONG_S,
        check_memory,
        format_seconds,
        mac_cycles,
        mac_seconds,
    )

    # w and a per K-step, the outputs per tile: refused up front when they cannot fit in memory,
    # and a long run is announced with its estimated time before it starts
    check_memory(tiles * (kk * (cfg.rows + cfg.cols) + cfg.rows * cfg.cols),
                 what=f"sim mac: {tiles} tiles x K={kk} on {cfg.rows}x{cfg.cols}",
                 hint="use fewer --tiles or a smaller --tile-k")
    est = mac_seconds(cfg, tiles, kk, simulator)
    if est > LONG_S:
        click.echo(f"warning: about {format_seconds(est)} of simulation on {simulator} ({tiles} tiles x K={kk}: "
                   f"{mac_cycles(cfg, tiles, kk):,} cycles of a {cfg.rows}x{cfg.cols} array; estimate from "
                   f"l1bn.sim.simulate.budget); fewer --tiles or a smaller --tile-k are faster", err=True)
    data = random_tiles(cfg, tiles, kk, seed=seed, extremes=extremes)
    r = simulate_mac(cfg, data, simulator=simulator, gaps=gaps, out_gaps=out_gaps, seed=seed + 1,
                     raise_on_fail=False)
    click.echo(f"MAC array {cfg.rows}x{cfg.cols}, w{cfg.wbits}{'s' if cfg.signed_w else 'u'} "
               f"a{cfg.abits}{'b' if cfg.bipolar_a else 's' if cfg.signed_a else 'u'}"
               + (", XNOR-popcount" if cfg.xnor else "") + f", acc {cfg.acc_bits} bits"
               + (f", requant shift={cfg.shift} out_bits={cfg.out_bits} relu={cfg.relu}" if cfg.requant else "")
               + f", {simulator}")
    click.echo(f"tiles {tiles} x K={kk}: {r['outputs']} outputs, {r['mismatches']} mismatches")
    for b in r["first"][:10]:
        click.echo(f"  tile {b['tile']} y[{b['row']}][{b['col']}] = {b['got']}, expected {b['expected']}")
    click.echo(f"cycles {r['cycles']} (first input to last output), input stalls {r['input_stalls']}")
    if "formula_cycles" in r:
        same = "matches" if r["cycles"] == r["formula_cycles"] else "differs (gaps/backpressure)"
        click.echo(f"formula {r['formula_cycles']} cycles: {same}")
    if "period" in r:
        click.echo(f"cycles per tile: measured {r['period']:.2f}, formula max(K, rows+1) = "
                   f"{r['formula_period']}; utilization {100 * r['utilization']:.1f}%")
    if r["mismatches"] or not r["passed"]:
        raise click.ClickException(f"{r['mismatches']} mismatches")


@sim.command("net", short_help="Classify test images on the simulated accelerator.")
@click.argument("export_dir", type=str)
@click.option("--simulator", type=click.Choice(["verilator", "icarus"]), default="verilator", show_default=True)
@click.option("--images", type=str, default=None,
              help="K: classify only the first K test images (default: all); or X.npy: your own images "
                   "(N, *input shape; float images go through the export's input quantizer, integer images "
                   "are the input integers).")
@click.option("--labels", type=str, default=None, help="With --images X.npy: their labels, y.npy (N,) integers.")
@click.option("--rows", type=int, default=None,
              help="MAC array rows (output channels in parallel, 1..16); default: see --cols.")
@click.option("--cols", type=int, default=None,
              help="MAC array columns (output positions in parallel, 1..16). Default: the 32-MAC shape with "
                   "the fewest cycles per image; with only one of --rows/--cols, the other is 32 // it.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as one JSON object.")
@pe_options
def net_cmd(export_dir, simulator, images, rows, cols, as_json, labels=None, pe="mac", lanes=None):
    """Classify the export's test images on the simulated accelerator; compare every logit with
    the integer reference."""
    import json
    import time

    from l1bn.sim.simulate.net import simulate_net
    from l1bn.spec.config import check_int
    from l1bn.spec.export import load_export

    e = load_export(export_dir)   # loaded once; every argument is checked before the accelerator is generated
    count, data = _images_option(e, images, labels)
    from l1bn.spec.config import MAX_MAC_ARRAY

    for name, v in (("rows", rows), ("cols", cols)):
        if v is not None:
            check_int(name, v, 1, MAX_MAC_ARRAY)
    nl = lanes_from_options(pe, lanes)
    t0 = time.perf_counter()
    r = simulate_net(e, simulator=simulator, images=count, progress=not as_json, rows=rows, cols=cols, lanes=nl,
                     inputs=None if data is None else data[0], labels=None if data is None else data[1])
    r["wall_s"] = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({k: v for k, v in r.items() if k != "first"}, sort_keys=True))
    else:
        acc = "-" if r["hw_accuracy"] is None else f"{100 * r['hw_accuracy']:.2f} %"
        ref = "-" if r["ref_accuracy"] is None else f"{100 * r['ref_accuracy']:.2f} %"
        click.echo(f"export              {export_dir}")
        tree = f" x {nl} lanes, tree PE" if nl > 1 else ""
        click.echo(f"simulator           {simulator} ({r['rows']}x{r['cols']}{tree} MAC array)")
        click.echo(f"images              {r['images']}")
        click.echo(f"hardware accuracy   {acc}  (integer reference {ref})")
        click.echo(f"logit mismatches    {r['mismatches']} of {r['images']} images")
        per = "-" if r["cycles_per_image"] is None else r["cycles_per_image"]
        click.echo(f"cycles per image    {per}  (formula {r['formula_cycles']}, images back to back; "
                   f"latency {r['latency_cycles'][0] if len(r['latency_cycles']) == 1 else r['latency_cycles']})")
        click.echo(f"simulation speed    {r['images_per_s']:.1f} images/s  "
                   f"({r['sim_s']:.1f} s simulating, {r['build_s']:.1f} s building)")
        for b in r["first"][:5]:
            click.echo(f"  image {b['image']}: logits {b['got']} argmax {b['argmax']}, "
                       f"reference {b['expected']} argmax {b['expected_argmax']}")
    if r["mismatches"] or not r["passed"]:
        raise click.ClickException(f"{r['mismatches']} of {r['images']} images differ from the integer reference"
                                   if r["mismatches"] else "the cycle count differs from the formula")


def _images_option(e, images: str | None, labels: str | None):
    """``--images K`` (a count of the export's test images) or ``--images X.npy [--labels y.npy]``
    (:func:`l1bn.spec.images.load_images`): ``(count or None, (x_int, labels) or None)``."""
    from l1bn.spec.config import check_int
    from l1bn.spec.images import load_images

    if images is not None and images.strip().lstrip("+-").isdigit():
        if labels is not None:
            raise ValueError("--labels goes with --images X.npy (your own images), not with a count")
        if e.test_inputs is None:
            raise ValueError(f"{e.path}: the export holds no test images (test.inputs); pass --images X.npy")
        return check_int("images", int(images), 1, int(e.test_inputs.shape[0])), None
    if images is None:
        if labels is not None:
            raise ValueError("--labels needs --images X.npy (the labels of your own images)")
        if e.test_inputs is None:
            raise ValueError(f"{e.path}: the export holds no test images (test.inputs); pass --images X.npy")
        return None, None
    x, y, _ = load_images(e.graph, images, labels)
    return None, (x, y)


def check_build_root() -> None:
    """The simulator build folders' root (``$L1BN_BUILD_DIR``, default ``build``), checked before
    any work: a folder (or a path one can be made at) that is writable; one ``error:`` line
    otherwise."""
    from l1bn.sim.build_root import default_build_root
    from l1bn.spec.outdir import check_path_is_creatable, check_writable

    root = default_build_root()
    check_path_is_creatable(root, option="build folder ($L1BN_BUILD_DIR)")
    check_writable(root, option="build folder ($L1BN_BUILD_DIR)")


@sim.command("train", short_help="Train K steps on the simulated training accelerator.")
@click.argument("source", metavar="RUN_OR_EXPORT", type=str)
@click.option("--steps", type=int, default=3, show_default=True, help="Training steps (batches), 1..100.")
@click.option("--simulator", type=click.Choice(["verilator", "icarus"]), default="verilator", show_default=True)
@click.option("--rows", type=int, default=None, help="MAC array rows, 1..16 (default 8; the array is rows x 1).")
@click.option("--batch", type=int, default=None,
              help="Images per step, 2..4096 (default 8): every BN unit and buffer is sized for it.")
@click.option("--norm", type=click.Choice(norm_names()), default=None, help="BN norm (default: the run's; l1 for an export without one).")
@click.option("--seed", type=int, default=0, show_default=True, help="The initial state: init_state(config, SEED).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as one JSON object.")
def train_cmd(source, steps, simulator, rows, batch, norm, seed, as_json):
    """Train K steps on the export's images on the simulated training accelerator; compare every
    logit, every per-step result and the whole state after K steps with the integer reference."""
    import json

    from l1bn.cli.verilog import train_config
    from l1bn.sim.simulate.train import simulate_train
    from l1bn.spec.config import check_int

    check_int("steps", steps, 1, 100)
    check_build_root()
    cfg, rows, x, y = train_config(source, rows=rows, batch=batch, norm=norm, seed=seed)
    if len(x) < steps * cfg.batch:
        raise ValueError(f"--steps {steps} of batch {cfg.batch} need {steps * cfg.batch} images; the export holds {len(x)}")
    r = simulate_train(cfg, x, y, steps=steps, rows=rows, seed=seed, simulator=simulator)
    if as_json:
        click.echo(json.dumps({k: v for k, v in r.items() if k != "first"}, sort_keys=True))
    else:
        click.echo(f"{cfg.norm} BN, batch {cfg.batch}, MAC array {rows}x1, {steps} steps on {simulator}")
        click.echo(f"{'step':>4} {'correct':>8} {'perr':>10} {'ref loss':>9}")
        for res in r["results"]:
            click.echo(f"{res['step']:4d} {res['correct']:5d}/{cfg.batch:<2d} {res['perr']:10d} {res['loss']:9.4f}")
        click.echo(f"logits: {r['logits']} compared, {r['logit_mismatches']} mismatches; results: "
                   f"{r['result_mismatches']} mismatches; state after {steps} steps: {r['state_values']} values, "
                   f"{r['state_mismatches']} mismatches")
        per = r["cycles_per_step"]
        same = "matches" if per is None or per == [r["formula_cycles"]] else "DIFFERS"
        click.echo(f"cycles per step {per[0] if per else '-'} (measured), formula {r['formula_cycles']}: {same}; "
                   f"array busy {100 * r['array_busy']:.1f}%")
        click.echo(f"simulation {r['sim_s']:.1f} s, build {r['build_s']:.1f} s")
    if not r["passed"]:
        raise click.ClickException("the training accelerator differs from the integer reference (or its formula)")
