"""``l1bn train``: quantization-aware training of a digits model; writes a run folder."""

from __future__ import annotations

import json

import click
from l1bn.spec.norms import norm_names

__all__ = ["train"]


@click.command("train")
@click.option("--model", "model", type=click.Choice(["mlp", "cnn"]), default="cnn", show_default=True)
@click.option("--norm", type=click.Choice([*norm_names(), "none"]), default="l1", show_default=True)
@click.option("--wbits", type=int, default=8, show_default=True, help="Signed weight bits, 2..8.")
@click.option("--abits", type=int, default=8, show_default=True, help="Unsigned activation bits, 2..8.")
@click.option("--float", "use_float", is_flag=True, help="Train without quantization (ignores --wbits/--abits).")
@click.option("--quantize-bn", is_flag=True, help="Also fake-quantize the BN output (signed abits+1).")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--out", "out", type=str, required=True, help="Run folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@click.pass_context
def train(ctx, model, norm, wbits, abits, use_float, quantize_bn, epochs, seed, lr, batch_size, device, out,
          force):
    """Train MODEL with NORM on the digits data; write OUT/model.pt and OUT/metrics.json."""
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
