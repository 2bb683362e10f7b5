"""``l1bn train``: quantization-aware training of a digits model, or integer-only training with the
spec reference (``--integer``, docs/integer_training.md); writes a run folder."""

from __future__ import annotations

import json

import click
from l1bn.spec.norms import norm_names

__all__ = ["train"]


@click.command("train")
@click.option("--model", "model", type=click.Choice(["mlp", "cnn"]), default="cnn", show_default=True)
@click.option("--norm", type=click.Choice([*norm_names(), "none"]), default="l1", show_default=True)
@click.option("--wbits", type=int, default=8, show_default=True,
              help="Signed weight bits, 2..8 (--integer: 4 unless given).")
@click.option("--abits", type=int, default=8, show_default=True,
              help="Unsigned activation bits, 2..8 (--integer: 4 unless given).")
@click.option("--float", "use_float", is_flag=True, help="Train without quantization (ignores --wbits/--abits).")
@click.option("--quantize-bn", is_flag=True, help="Also fake-quantize the BN output (signed abits+1).")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--out", "out", type=str, required=True, help="Run folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@click.option("--integer", "integer", is_flag=True,
              help="Integer-only training with the spec reference (docs/arith/training.md); writes "
                   "OUT/metrics.json and the export OUT/export.")
@click.option("--gbits", type=int, default=8, show_default=True, help="--integer: gradient bits, 2..24.")
@click.option("--grad-rounding", type=click.Choice(["stochastic", "nearest"]), default="stochastic",
              show_default=True, help="--integer: rounding of the weight gradients (LFSR-driven or half up).")
@click.option("--master-bits", type=int, default=16, show_default=True, help="--integer: master weight bits.")
@click.option("--lr-shift", type=int, default=6, show_default=True,
              help="--integer: weight learning rate 2**-SHIFT.")
@click.option("--bn-lr-shift", type=int, default=5, show_default=True,
              help="--integer: gamma/beta learning rate 2**-SHIFT.")
@click.option("--lr-decay", type=str, default="8,12,16", show_default=True,
              help="--integer: epochs at which the learning rates halve (comma-separated, or 'none').")
@click.pass_context
def train(ctx, model, norm, wbits, abits, use_float, quantize_bn, epochs, seed, lr, batch_size, device, out,
          force, integer, gbits, grad_rounding, master_bits, lr_shift, bn_lr_shift, lr_decay):
    """Train MODEL with NORM on the digits data; write OUT/model.pt and OUT/metrics.json
    (with --integer: OUT/metrics.json and the export OUT/export)."""
    int_opts = ("gbits", "grad_rounding", "master_bits", "lr_shift", "bn_lr_shift", "lr_decay")
    given_all = {p for p in ("wbits", "abits", "quantize_bn", "lr", "device", *int_opts)
                 if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT}
    if integer:
        # the integer trainer's defaults are w4a4: at 8 bits the L2 statistics of conv1 (n = 4096)
        # need more than 62 bits with the default BN widths
        wbits = wbits if "wbits" in given_all else 4
        abits = abits if "abits" in given_all else 4
        _train_integer(model=model, norm=norm, wbits=wbits, abits=abits, use_float=use_float,
                       quantize_bn=quantize_bn, epochs=epochs, seed=seed, batch_size=batch_size,
                       device=device, out=out, force=force, gbits=gbits, grad_rounding=grad_rounding,
                       master_bits=master_bits, lr_shift=lr_shift, bn_lr_shift=bn_lr_shift,
                       lr_decay=lr_decay, given=given_all)
        return
    stray = sorted(p for p in given_all if p in int_opts)
    if stray:
        raise ValueError(f"{', '.join('--' + p.replace('_', '-') for p in stray)} belong to integer "
                         "training; add --integer")
    from l1bn.spec.outdir import check_output_dir, check_writable
    from l1bn.sw.quant import QuantConfig
    from l1bn.sw.train import check_device, run_config, train_run
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # every argument is checked before training starts
    given = {p for p in ("wbits", "abits", "quantize_bn")
             if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT}
    if use_float and given:
        raise ValueError(f"--float trains without quantization; it contradicts "
                         f"{', '.join('--' + p.replace('_', '-') for p in sorted(given))}")
    if norm == "none" and quantize_bn:
        raise ValueError("--quantize-bn needs a BN layer; it contradicts --norm none")
    out = check_output_dir(out, command="train", force=force)
    check_writable(out)
    qcfg = None if use_float else QuantConfig(wbits=wbits, abits=abits, quantize_bn=quantize_bn)
    config = run_config(model=model, norm=norm, qcfg=qcfg, epochs=epochs, seed=seed, lr=lr,
                        batch_size=batch_size, device=device)
    check_device(device)  # before the progress bar starts
    console = Console(stderr=True)
    desc = f"{model} {norm} " + ("float" if qcfg is None else f"w{wbits}a{abits}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(desc, total=None, loss=float("nan"))

        def progress(step, total, loss):
            bar.update(task, completed=step, total=total, loss=loss)

        _, metrics = train_run(config, out, progress=progress, force=force)
    summary = {k: metrics[k] for k in ("test_accuracy", "train_accuracy", "test_loss", "time_s")}
    summary["final_train_loss"] = metrics["train_loss"][-1]
    click.echo(f"wrote {out}/model.pt and {out}/metrics.json")
    click.echo(json.dumps(summary, indent=2))


def _parse_decay(text: str) -> tuple:
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--lr-decay={text!r} must be comma-separated epochs, e.g. 8,12,16, or 'none'") from None


def _train_integer(*, model, norm, wbits, abits, use_float, quantize_bn, epochs, seed, batch_size, device,
                   out, force, gbits, grad_rounding, master_bits, lr_shift, bn_lr_shift, lr_decay, given):
    """``l1bn train --integer``: every argument checked, then train, then write the run folder."""
    from l1bn.spec.config import check_int
    from l1bn.spec.outdir import check_output_dir, check_writable
    from l1bn.spec.training import IntTrainConfig
    from l1bn.sw.int_train import layers_of, save_integer_run, train_integer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if use_float:
        raise ValueError("--integer trains with integers only; it contradicts --float")
    if quantize_bn:
        raise ValueError("--integer always quantizes the BN output (signed abits + extra bits); "
                         "drop --quantize-bn")
    if "lr" in given:
        raise ValueError("--lr is the float trainer's Adam rate; --integer takes --lr-shift and --bn-lr-shift")
    if device != "cpu":
        raise ValueError("--integer runs the numpy reference on the CPU; drop --device cuda")
    if norm == "none":
        raise ValueError("--integer trains the BN layers; choose --norm l1, l2 or range")
    check_int("epochs", epochs, 1, 10000)
    check_int("seed", seed, 0, 2**32 - 1)
    cfg = IntTrainConfig(layers=layers_of(model), norm=norm, wbits=wbits, abits=abits, gbits=gbits,
                         grad_rounding=grad_rounding, master_bits=master_bits, lr_shift=lr_shift,
                         bn_lr_shift=bn_lr_shift, lr_decay=_parse_decay(lr_decay), batch=batch_size)
    out = check_output_dir(out, command="train", force=force)   # the one output rule, before training
    check_writable(out)
    console = Console(stderr=True)
    desc = f"{model} {norm} w{wbits}a{abits}g{gbits} integer"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(desc, total=None, loss=float("nan"))

        def progress(step, total, loss):
            bar.update(task, completed=step, total=total, loss=loss)

        state, metrics, data = train_integer(cfg, model=model, epochs=epochs, seed=seed, progress=progress)
    out, metrics = save_integer_run(state, cfg, metrics, data, out, force=force)
    summary = {k: metrics[k] for k in ("test_accuracy", "train_accuracy", "test_loss", "train_mode_accuracy",
                                       "train_mode_agreement", "export_logits_equal", "time_s",
                                       "mean_epoch_time_s")}
    summary["final_train_loss"] = metrics["train_loss"][-1]
    click.echo(f"wrote {out}/metrics.json and the export {out}/export")
    click.echo(json.dumps(summary, indent=2))
