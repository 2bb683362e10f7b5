"""``l1bn prove DESIGN ...``: formal proofs of a generated design (:mod:`l1bn.sim.formal`).

The design options are those of ``l1bn verilog`` (same names, defaults and ranges); formal
checks want small configs (``--width 4 --n 4 --recip-bits 4``). Each property prints one line:
PASS (with k-induction: unbounded; with bmc: no violation in any trace of that depth from reset),
FAIL (with the VCD of the counterexample) or UNKNOWN (timeout, or an induction that did not
close), the depth and the time. The exit status is 1 when any property FAILs, else 3 when any is
UNKNOWN (not proven is not a pass), else 0.
"""

from __future__ import annotations

import math
import sys

import click
from l1bn.cli.options import config_options
from l1bn.cli.verilog import BWD_BN_FIELDS, bn_config, bwd_config, mac_config
from l1bn.spec.config import BNBackwardConfig, BNConfig, MACConfig
from l1bn.spec.norms import FEATURED, backward_norms, norm_names, norm_spec

__all__ = ["prove"]


@click.group("prove")
def prove():
    """Formal proofs: stream rules, no lost element, no overflow, equivalence."""


def _common(f):
    f = click.option("--depth", type=click.IntRange(1, 1000), default=None,
                     help="BMC depth (steps from reset) for every property; default: per property.")(f)
    f = click.option("--prover", type=click.Choice(["pdr", "reach", "induction"]), default="pdr",
                     show_default=True,
                     help="Unbounded engine: pdr/reach (native ABC on the AIGER model; a property it "
                          "does not close within half of --timeout falls back to smtbmc, bounded) or "
                          "induction (smtbmc BMC + k-induction only).")(f)
    f = click.option("--engine", type=click.Choice(["boolector", "z3"]), default="boolector",
                     show_default=True, help="SMT solver behind yosys-smtbmc.")(f)
    f = click.option("--props", "props", type=str, default="",
                     help="Comma-separated property names (or prefixes such as 'stream').")(f)
    f = click.option("--timeout", type=click.FloatRange(1, None), default=600.0, show_default=True,
                     help="Seconds per property (finite); past it the property is UNKNOWN.")(f)
    f = click.option("-o", "--out", "out", type=str, default="build/prove", show_default=True,
                     help="Folder for the models, logs and counterexample VCDs.")(f)
    return f


def _run(design, cfg, title, depth, engine, props, timeout, out, prover="induction"):

    from l1bn.sim.formal.check import check_all, format_result
    from l1bn.sim.formal.designs import design_props, select
    from l1bn.spec.outdir import check_output_dir, check_writable, claim_dir

    # before any proof runs: a prove folder (its marker) or a new one, writable
    if not math.isfinite(timeout):   # FloatRange lets nan (and inf) through: every property UNKNOWN
        raise ValueError(f"--timeout {timeout} is not a number of seconds; give a finite value >= 1")
    check_output_dir(out, command="prove", option="-o", must_be_new=False)
    check_writable(out, option="-o")
    chosen = select(design_props(design, cfg), [p for p in props.split(",") if p])
    work = claim_dir(out, "prove") / design
    from l1bn.sim.formal.abc import abc_path

    how = f"prover {prover}, smtbmc {engine}" if prover != "induction" else f"engine smtbmc {engine}"
    click.echo(f"{title}; {how}; models in {work}")
    if prover != "induction" and abc_path() is None:
        click.echo(f"note: no native ABC (berkeley-abc) installed: --prover {prover} falls back to "
                   "smtbmc (bounded, k-induction); see l1bn doctor")
    click.echo(f"{'property':<24} {'result':<7} {'method':<16} {'depth':>9}  {'time':>8}  notes")
    results = check_all(chosen, work, engine=engine, depth=depth, timeout=timeout, prover=prover,
                        echo=lambda r: click.echo(format_result(r)))
    bad = [r for r in results if r.status == "FAIL"]
    unk = [r for r in results if r.status == "UNKNOWN"]
    total = sum(r.seconds for r in results)
    click.echo(f"{len(results) - len(bad) - len(unk)} passed, {len(bad)} failed, {len(unk)} unknown "
               f"in {total:.1f} s")
    if bad:
        sys.exit(1)
    if unk:
        click.echo(f"error: {len(unk)} propert{'y' if len(unk) == 1 else 'ies'} not proven (UNKNOWN): "
                   f"{', '.join(r.name for r in unk)}", err=True)
        sys.exit(EXIT_UNKNOWN)


#: the exit status when no property failed but some are UNKNOWN
EXIT_UNKNOWN = 3


def _bn_command(norm):
    @prove.command(f"{norm}bn")
    @config_options(BNConfig, exclude=("norm",))
    @_common
    def cmd(depth, prover, engine, props, timeout, out, **opts):
        cfg = bn_config(norm, opts)
        title = (f"{norm.upper()}-BN forward unit, width={cfg.width}, n={cfg.n}, lanes={cfg.lanes}, "
                 f"channels={cfg.channels}, recip_bits={cfg.recip_bits}")
        _run(f"{norm}bn", cfg, title, depth, engine, props, timeout, out, prover)

    # the equivalence property is proven where sigma is a constant multiply (sim.formal.designs)
    cmd.__doc__ = f"{norm.upper()}-BN forward unit: stream rules, counts, overflow" + (
        ", equivalence with the reference formulas." if norm_spec(norm).sigma_kind == "const" else ".")
    return cmd


def _bwd_command(norm):
    @prove.command(f"{norm}bn-bwd")
    @config_options(BNConfig, include=BWD_BN_FIELDS)
    @config_options(BNBackwardConfig, exclude=("bn",))
    @_common
    def cmd(depth, prover, engine, props, timeout, out, **opts):
        cfg = bwd_config(norm, opts)
        b = cfg.bn
        title = (f"{norm.upper()}-BN backward unit, width={b.width}, n={b.n}, channels={b.channels}, "
                 f"grad_width={cfg.grad_width}, recip_bits={b.recip_bits}")
        _run(f"{norm}bn-bwd", cfg, title, depth, engine, props, timeout, out, prover)

    cmd.__doc__ = f"{norm.upper()}-BN backward unit: stream rules, counts, overflow of dgamma/dbeta."
    return cmd


for _norm in norm_names():            # one forward unit per registered norm
    _bn_command(_norm)
    if norm_spec(_norm).hw_backward:    # and a backward unit where the registry names one
        _bwd_command(_norm)


@prove.command("mac")
@config_options(MACConfig)
@_common
def mac_cmd(depth, prover, engine, props, timeout, out, **opts):
    """MAC array (also the accelerator's): stream rule, tile/row counts, accumulator overflow."""
    cfg = mac_config(opts)
    title = (f"MAC array {cfg.rows}x{cfg.cols}, wbits={cfg.wbits} abits={cfg.abits}, k={cfg.k}, "
             f"accumulator {cfg.acc_bits} bits")
    _run("mac", cfg, title, depth, engine, props, timeout, out, prover)


@prove.command("requant")
@config_options(MACConfig)
@_common
def requant_cmd(depth, prover, engine, props, timeout, out, **opts):
    """The output requantizer (MAC array, accelerator) for every accumulator value of the array's
    acc_bits (from --rows/--wbits/--abits/--k): rounding, ReLU, saturation (--requant implied)."""
    cfg = mac_config({**opts, "requant": True})
    title = (f"requantizer, acc_bits={cfg.acc_bits} (MAC {cfg.rows}x{cfg.cols} w{cfg.wbits}a{cfg.abits} "
             f"k={cfg.k}), shift={cfg.shift}, out_bits={cfg.out_bits}, relu={cfg.relu}")
    _run("requant", cfg, title, depth, engine, props, timeout, out, prover)


@prove.command("accel")
@click.option("--cols", type=click.IntRange(1, 4), default=2, show_default=True,
              help="MAC array columns of the accelerator.")
@_common
def accel_cmd(cols, depth, prover, engine, props, timeout, out):
    """The whole accelerator on a tiny synthetic network (2x2 image, 1x1 conv to 2 channels with
    folded BN and ReLU, linear to 2 logits): stream rule on o, one output per image, latency."""
    title = f"accelerator, tiny network (4 pixels, conv 1x1 -> 2 ch, linear -> 2 logits), 2x{cols} MAC array"
    _run("accel", cols, title, depth, engine, props, timeout, out, prover)


@prove.command("train")
@click.option("--norm", type=click.Choice(backward_norms()), default=FEATURED, show_default=True,
              help="BN norm of the minimal network's training accelerator (a norm with a backward unit).")
@_common
def train_cmd(norm, depth, prover, engine, props, timeout, out):
    """The training accelerator on a minimal network (1x1x2 input, 1x1 conv to 1 channel with BN,
    linear to 2 classes, batch 2, a 1-row array): stream rules on o, z and st; a result only after
    its whole batch, one per batch; the result at the formula's cycle."""
    from l1bn.sim.formal.train import minimal_step_cycles

    title = (f"training accelerator, minimal network ({norm} BN, batch 2, 1x1 MAC array), "
             f"{minimal_step_cycles(norm)} cycles per step")
    _run("train", norm, title, depth, engine, props, timeout, out, prover)
