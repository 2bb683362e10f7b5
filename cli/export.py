"""``l1bn export RUN_DIR --out EXPORT_DIR`` and ``l1bn infer EXPORT_DIR [--json]``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from l1bn.cli.options import export_folder_options

__all__ = ["export", "infer", "infer_export", "DEFAULT_MIN_AGREEMENT"]

#: the percentage of test images below which ``export`` warns (``--min-agreement``)
DEFAULT_MIN_AGREEMENT = 99.0


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@export_folder_options("Export folder to create (manifest.json, .npy, .hex).")
@click.option("--format", "fmt", type=click.Choice(["l1bn", "qonnx"]), default="l1bn", show_default=True,
              help="l1bn: export folder for the hardware; qonnx: one QONNX .onnx file (docs/interop.md).")
@click.option("--bn-dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="--format qonnx: precision of the folded-BN Mul/Add. float64 (a Cast in front) is exact by "
                   "construction; float32 writes an all-float32 graph, as FINN's streamlining expects.")
@click.option("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, show_default=True,
              help="Warn when the integer network predicts the QAT model's class on fewer than this "
                   "percentage of the test images (0..100).")
def export(run_dir: Path, out_dir: Path, rows: int, mult_bits: int, force: bool, fmt: str = "l1bn",
           bn_dtype: str = "float64", min_agreement: float = 99.0):
    """Export a trained run to integer weights, folded BN constants and $readmemh memories."""
    given = {p for p in ("rows", "min_agreement")
             if click.get_current_context().get_parameter_source(p) is not click.core.ParameterSource.DEFAULT}
    if not 0 <= min_agreement <= 100:   # NaN fails too
        raise ValueError(f"--min-agreement {min_agreement} is out of range; allowed 0..100 (percent)")
    if fmt == "qonnx":  # the whole QONNX branch lives in cli/import_cmd.py
        from l1bn.cli.import_cmd import export_qonnx_cli
        from l1bn.sw.qonnx_export import check_qonnx_output

        if given:   # options of the export folder only: refused rather than ignored
            opt = "--" + sorted(given)[0].replace("_", "-")
            raise ValueError(f"{opt} applies to the export folder (--format l1bn); it does not apply to "
                             "--format qonnx")
        check_qonnx_output(out_dir, inputs=[run_dir], force=force)   # before any work
        return export_qonnx_cli(run_dir, out_dir, mult_bits=mult_bits, force=force, bn_dtype=bn_dtype)
    if bn_dtype != "float64":
        raise ValueError("--bn-dtype goes with --format qonnx")
    from l1bn.spec.config import check_int
    from l1bn.spec.export import load_export
    from l1bn.spec.outdir import check_output_dir
    from l1bn.sw.export import export_run

    check_int("rows", rows, 1, 64)
    check_int("mult_bits", mult_bits, 2, 32)
    # --force replaces the output, never the run it reads nor a folder that holds it
    check_output_dir(out_dir, command="export", inputs=[run_dir], force=force)
    path = export_run(run_dir, out_dir, rows=rows, mult_bits=mult_bits, force=force)
    e = load_export(path)  # what we wrote must load: validates the manifest end to end
    click.echo(f"exported {run_dir} -> {path}  ({len(e.manifest['tensors'])} tensors, schema "
               f"{e.manifest['schema']} v{e.manifest['schema_version']})")
    inp = e.manifest["input"]
    click.echo(f"input  {tuple(inp['shape'])}  {inp['bits']}-bit {'signed' if inp['signed'] else 'unsigned'}, "
               f"value = x * 2**-{inp['exp']}")
    click.echo(f"{'layer':8} {'type':7} {'in':>12} {'out':>12} {'K':>5} {'w':>2} {'a':>2} {'acc':>4} "
               f"{'shift':>5} {'mult':>16} {'relu':>5}")
    for layer, ld in zip(e.net.layers, e.manifest["nodes"], strict=False):
        mult = (f"{int(layer.bn.mult.min())}..{int(layer.bn.mult.max())}" if layer.bn is not None else "-")
        click.echo(f"{layer.name:8} {layer.type:7} {str(tuple(layer.in_shape)):>12} "
                   f"{str(tuple(layer.out_shape)):>12} {layer.k:>5} {layer.w_bits:>2} {layer.a_bits:>2} "
                   f"{ld['acc_bits']:>4} {layer.bn.shift if layer.bn else '-':>5} {mult:>16} "
                   f"{str(layer.relu):>5}")
    _agreement(path, mult_bits, min_agreement)


def _agreement(path, mult_bits: int, min_agreement: float) -> None:
    """Print how often the integer network predicts the QAT model's class on the test split; warn
    below ``min_agreement`` percent (a small ``--mult-bits`` rounds the folded BN scale coarsely)."""
    r = infer_export(path)
    if "agreement" not in r:
        return
    pct = 100 * r["agreement"]
    click.echo(f"agreement with the QAT model: {pct:.2f} % of the {r['images']} test images "
               f"({r['disagreements']} predictions differ; integer accuracy {100 * r['accuracy']:.2f} %, "
               f"QAT {100 * r['qat_accuracy']:.2f} %)")
    if pct < min_agreement:
        click.echo(f"warning: the integer network agrees with the QAT model on only {pct:.2f} % of the test "
                   f"images, below --min-agreement {min_agreement:g} %; a larger --mult-bits (now {mult_bits}) "
                   f"keeps more of the folded BN scale", err=True)


MAX_THREADS = 256  # a ceiling for a thread count option, whatever the machine


def infer_export(export_dir, *, threads: int | None = 1, images=None, labels=None) -> dict:
    """Run the integer reference on an export's test split (or on ``images``/``labels``: ``.npy``
    paths or arrays, :func:`l1bn.spec.images.load_images`); return the figures.

    ``threads``: BLAS threads for the timed run (the reference's exact float64 matrix products,
    :func:`l1bn.spec.reference.mac.matmul`), 1..256, or 0 / None for the BLAS default. Predictions
    are the argmax of the source model's logits (``int * output.scale + output.offset``).
    """
    import numpy as np
    from l1bn.spec.config import check_int
    from l1bn.spec.export import ExportError, load_export
    from l1bn.spec.images import load_images
    from l1bn.spec.reference.graph import float_logits, run_graph
    from threadpoolctl import threadpool_limits

    if threads is not None:
        check_int("threads", threads, 0, MAX_THREADS)
    if labels is not None and images is None:
        raise ValueError("--labels needs --images (the labels of your own images)")
    e = load_export(export_dir)
    qat = None
    if images is not None:
        x, labels, kind = load_images(e.graph, images, labels)
        source = f"{images} ({kind} images)"
    else:
        x, labels, qat = e.test_inputs, e.test_labels, e.qat_logits
        if x is None or labels is None:
            raise ExportError(f"{export_dir}: the export holds no test split (tensors test.inputs / test.labels); "
                              "pass --images X.npy --labels y.npy")
        source = "the export's test split"
    with threadpool_limits(limits=threads or None, user_api="blas") as pool:
        used = threads or max([i["num_threads"] for i in pool.info()] or [1])
        run_graph(e.graph, x[:2])  # warm up
        t0 = time.perf_counter()
        ints = run_graph(e.graph, x)
        dt = time.perf_counter() - t0
    logits = float_logits(e.graph, ints)
    pred = logits.argmax(1)
    res = {"export": str(e.path), "data": source, "images": int(x.shape[0]),
           "accuracy": None if labels is None else float(np.mean(pred == labels)),
           "time_s": dt, "threads": used, "images_per_s": x.shape[0] / dt if dt > 0 else None}
    if qat is not None:
        qpred = qat.argmax(1)
        res.update(qat_accuracy=float(np.mean(qpred == labels)),
                   agreement=float(np.mean(qpred == pred)),
                   disagreements=int((qpred != pred).sum()),
                   max_logit_diff=float(np.abs(logits - qat.astype(np.float64)).max()))
    return res


@click.command("infer")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--images", "images", type=str, default=None,
              help="Your own images, X.npy (N, *input shape): float images go through the export's input "
                   "quantizer, integer images are the input integers (default: the export's test split).")
@click.option("--labels", "labels", type=str, default=None, help="Their labels, y.npy (N,) integers.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--threads", default=1, show_default=True,
              help=f"BLAS threads for the timed run, 1..{MAX_THREADS} (0 = the BLAS default).")
def infer(export_dir: Path, as_json: bool, threads: int, images: str | None = None, labels: str | None = None):
    """Run the integer reference on the export's test split (or your images): accuracy, agreement
    with the source model, time."""
    r = infer_export(export_dir, threads=threads, images=images, labels=labels)
    if as_json:
        click.echo(json.dumps(r, sort_keys=True))
        return
    click.echo(f"export            {r['export']}")
    click.echo(f"test images       {r['images']}" + ("" if images is None else f"  ({r['data']})"))
    if r["accuracy"] is not None:
        click.echo(f"integer accuracy  {100 * r['accuracy']:.2f} %")
    if "agreement" in r:
        click.echo(f"QAT accuracy      {100 * r['qat_accuracy']:.2f} %  (float QAT model, same images)")
        click.echo(f"agreement         {100 * r['agreement']:.2f} %  ({r['disagreements']} of {r['images']} "
                   f"predictions differ; max |logit difference| {r['max_logit_diff']:.4g})")
    click.echo(f"reference time    {1e3 * r['time_s']:.1f} ms on {r['threads']} thread(s) "
               f"({r['images_per_s']:.0f} images/s)")
