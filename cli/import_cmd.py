"""``l1bn import MODEL.onnx --out EXPORT_DIR`` (QONNX -> l1bn export) and the QONNX branch of
``l1bn export RUN --format qonnx --out MODEL.onnx``. Both directions: docs/interop.md."""

from __future__ import annotations

from pathlib import Path

import click
from l1bn.cli.options import export_folder_options

__all__ = ["import_", "export_qonnx_cli"]


def _layer_table(net) -> None:
    click.echo(f"{'layer':8} {'type':7} {'in':>12} {'out':>12} {'K':>5} {'w':>2} {'w_exp':>5} {'a':>2} "
               f"{'acc':>4} {'shift':>5} {'mult':>16} {'out':>10}")
    for lay in net.layers:
        if lay.bn is not None:
            mult = f"{int(lay.bn.mult.min())}..{int(lay.bn.mult.max())}"
            outq = f"u{lay.bn.out_bits} 2**-{lay.out_exp}"
        else:
            mult, outq = "-", "logits"
        click.echo(f"{lay.name:8} {lay.type:7} {str(tuple(lay.in_shape)):>12} {str(tuple(lay.out_shape)):>12} "
                   f"{lay.k:>5} {lay.w_bits:>2} {lay.w_exp:>5} {lay.a_bits:>2} {lay.acc_bits:>4} "
                   f"{lay.bn.shift if lay.bn is not None else '-':>5} {mult:>16} {outq:>10}")


def export_qonnx_cli(run_dir: Path, out_path: Path, *, mult_bits: int, force: bool) -> None:
    """The ``--format qonnx`` branch of ``l1bn export``: write, then summarize the model."""
    import onnx
    from l1bn.sw.qonnx_export import export_run_qonnx

    path, net = export_run_qonnx(run_dir, out_path, mult_bits=mult_bits, force=force)
    m = onnx.load(str(path))
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    gi, go = m.graph.input[0], m.graph.output[0]
    dims = lambda vi: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)  # noqa: E731
    click.echo(f"exported {run_dir} -> {path}  (QONNX, {len(m.graph.node)} nodes: "
               + ", ".join(f"{k} {v}" for k, v in ops.items()) + ")")
    click.echo(f"input  {gi.name} {dims(gi)} float = pixel/16 -> Quant {net.in_bits}-bit unsigned, "
               f"scale 2**-{net.in_exp}")
    _layer_table(net)
    click.echo(f"output {go.name} {dims(go)} = integer logits * 2**-{net.layers[-1].out_exp}")
    click.echo("qonnx cleanup_model + InferShapes + InferDataTypes: ok (the written file is the cleaned model)")
    if tuple(net.in_shape) == (1, 8, 8):
        from l1bn.sw.data import test_split
        from l1bn.sw.qonnx_export import compare_with_reference

        x, y = test_split()
        r = compare_with_reference(path, net, x, y)
        click.echo(f"check on the {r['images']} digits test images: qonnx execute_onnx against the integer "
                   f"reference (l1bn infer)")
        click.echo(f"  accuracy    qonnx {100 * r['qonnx_accuracy']:.2f} %, integer {100 * r['accuracy']:.2f} %")
        click.echo(f"  agreement   {100 * r['agreement']:.2f} %  ({r['disagreements']} of {r['images']} predictions "
                   f"differ); logits x 2**{net.layers[-1].out_exp} equal on every image: {r['logits_equal']}")


@click.command("import")
@click.argument("model", type=click.Path(path_type=Path))
@export_folder_options("Export folder to create (manifest.json, .npy, .hex), as `l1bn export` writes it.")
@click.option("--no-check", is_flag=True,
              help="Skip running the QONNX model with qonnx's executor on the digits test split.")
def import_(model: Path, out_dir: Path, rows: int, mult_bits: int, no_check: bool, force: bool):
    """Import a QONNX model (Brevitas, FINN) as an l1bn export for the hardware flow.

    Supported: Quant (power-of-two scales, signed weights, unsigned activations, 2..8 bits), Conv,
    Gemm/MatMul, BatchNormalization or Mul/Add, Relu, Flatten/Reshape. Anything else stops with
    one error line naming the node; nothing is written.
    """
    from l1bn.spec.export import SCHEMA, SCHEMA_VERSION
    from l1bn.spec.outdir import check_output_dir, check_writable
    from l1bn.sw.qonnx_import import import_qonnx

    # before any work: an output folder that can be one, never the model it reads
    check_output_dir(out_dir, command="import", inputs=[model], force=force)
    check_writable(out_dir)
    r = import_qonnx(model, out_dir, mult_bits=mult_bits, rows=rows, force=force, check=not no_check)
    net = r.net
    click.echo(f"imported {model} -> {r.path}  ({len(net.layers)} layers, schema {SCHEMA} v{SCHEMA_VERSION})")
    click.echo(f"input  {tuple(net.in_shape)}  {net.in_bits}-bit unsigned, value = x * 2**-{net.in_exp}")
    _layer_table(net)
    if r.agreement is not None:
        click.echo(f"test images       {r.images} (digits test split, through the model's input Quant)")
        click.echo(f"qonnx accuracy    {100 * r.qonnx_accuracy:.2f} %  (qonnx execute_onnx)")
        click.echo(f"integer accuracy  {100 * r.accuracy:.2f} %  (l1bn integer reference)")
        click.echo(f"agreement         {100 * r.agreement:.2f} %  ({r.disagreements} of {r.images} predictions "
                   f"differ; max |logit difference| {r.max_logit_diff:.4g})")
    elif r.images:
        click.echo(f"test images       {r.images} (not run through qonnx: --no-check)")
    else:
        click.echo("test images       none (the model does not take 1x8x8 digits images)")
