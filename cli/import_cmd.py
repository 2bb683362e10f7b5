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


def export_qonnx_cli(run_dir: Path, out_path: Path, *, mult_bits: int, force: bool, bn_dtype: str = "float64") -> None:
    """The ``--format qonnx`` branch of ``l1bn export``: write, then summarize the model."""
    import onnx
    from l1bn.sw.qonnx_export import FINN_PREFIX, export_run_qonnx, finn_prefix

    path, net = export_run_qonnx(run_dir, out_path, mult_bits=mult_bits, force=force, bn_dtype=bn_dtype)
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
    finn_prefix(path)
    click.echo(f"FINN's ConvertQONNXtoFINN first steps ({', '.join(FINN_PREFIX)}): ok")
    if tuple(net.in_shape) == (1, 8, 8):
        from l1bn.sw.data import test_split
        from l1bn.sw.qonnx_export import compare_with_reference

        x, y = test_split()
        r = compare_with_reference(path, net, x, y)
        click.echo(f"check on the {r['images']} digits test images: qonnx execute_onnx against the integer "
                   f"reference (l1bn infer); folded BN in {bn_dtype}")
        click.echo(f"  accuracy    qonnx {100 * r['qonnx_accuracy']:.2f} %, integer {100 * r['accuracy']:.2f} %")
        click.echo(f"  agreement   {100 * r['agreement']:.2f} %  ({r['disagreements']} of {r['images']} predictions "
                   f"differ); logits x 2**{net.layers[-1].out_exp} equal on every image: {r['logits_equal']}")


def _node_table(graph) -> None:
    """One line per node of an imported graph: operator, shapes, formats, the requantizer."""
    info = graph.tensors()
    click.echo(f"{'node':9} {'op':8} {'in':>14} {'out':>14} {'K':>5} {'weights':>9} {'sum':>5} {'shift':>5} "
               f"{'round':>9} {'out fmt':>10}")
    for n in graph.nodes:
        t = info[n.output]
        ins = str(tuple(info[n.inputs[0]].shape))
        if n.op == "add":
            ins = "2x" + ins.replace(" ", "")
        k = str(n.k) if n.weight is not None else (str(n.kernel[0] * n.kernel[1]) if n.kernel else "-")
        wf = n.w_fmt.describe().replace(" {-1,+1}", "") if n.w_fmt is not None else "-"
        rq = n.requant
        click.echo(f"{n.name:9} {n.op:8} {ins[:14]:>14} {str(tuple(t.shape)):>14} {k:>5} {wf:>9} "
                   f"{t.sum_fmt.describe() if t.sum_fmt is not None and n.op != 'requant' else '-':>5} "
                   f"{rq.shift if rq is not None else '-':>5} "
                   f"{('sign' if rq.out.kind == 'bipolar' else rq.rounding) if rq is not None else '-':>9} "
                   f"{t.fmt.describe().replace(' {-1,+1}', ''):>10}")


@click.command("import")
@click.argument("model", type=click.Path(path_type=Path))
@export_folder_options("Export folder to create (manifest.json, .npy, .hex), as `l1bn export` writes it.",
                       mult_bits=24)
@click.option("--no-check", is_flag=True,
              help="Skip running the QONNX model with qonnx's executor on the test images.")
@click.option("--test-images", type=int, default=None,
              help="Store (and check) only the first N of the 360 digits test images, 1..360 (qonnx's "
                   "executor is slow on large models).")
@click.option("--input-type", type=click.Choice(["UINT8", "INT8", "UINT4", "INT4", "UINT2", "BIPOLAR", "BINARY"]),
              default=None, help="The integer type of the images of a model without an input quantizer "
                                 "(FINN's DataType names; e.g. UINT8 for 8-bit pixels).")
def import_(model: Path, out_dir: Path, rows: int, mult_bits: int, no_check: bool, force: bool,
            test_images: int | None = None, input_type: str | None = None):
    """Import a QONNX model (Brevitas, FINN) as an l1bn export for the hardware flow.

    Supported (docs/interop.md): Quant / BipolarQuant / Trunc (1..16 bits, power-of-two or float
    scales, per-tensor or per-channel weights), Conv, Gemm/MatMul (with a float or quantized bias),
    MaxPool, AveragePool/GlobalAveragePool, residual Add/Sub, BatchNormalization and Mul/Div/Add/Sub
    by constants, Relu, the shape-only nodes, input preprocessing before the input quantizer.
    Anything else stops with one error line naming the node; nothing is written.
    """
    from l1bn.spec.export import SCHEMA, SCHEMA_VERSION
    from l1bn.spec.outdir import check_output_dir, check_writable
    from l1bn.sw.qonnx_import import import_qonnx

    # before any work: an output folder that can be one, never the model it reads
    check_output_dir(out_dir, command="import", inputs=[model], force=force)
    check_writable(out_dir)
    r = import_qonnx(model, out_dir, mult_bits=mult_bits, rows=rows, force=force, check=not no_check,
                     input_type=input_type, test_images=test_images)
    g = r.graph
    inp = g.input
    click.echo(f"imported {model} -> {r.path}  ({len(g.nodes)} nodes, schema {SCHEMA} v{SCHEMA_VERSION})")
    steps = [f"{op} {v[0] if len(v) == 1 else list(v)}" for op, v in inp.preprocess] + [inp.rounding]
    click.echo(f"input  {tuple(inp.shape)}  {inp.fmt.describe()}, value = x * {inp.scale:.6g}"
               f"  (quantizer: {', '.join(steps)})")
    _node_table(g)
    o = g.output
    same = o.argmax_on_integers
    click.echo(f"output {tuple(g.out_shape)}  logits = int * scale + offset  (scale {float(o.scale.min()):.6g}"
               f"{'' if float(o.scale.min()) == float(o.scale.max()) else f'..{float(o.scale.max()):.6g}'}, "
               f"offset {float(o.offset.min()):.6g}{'' if same else '..' + format(float(o.offset.max()), '.6g')}; "
               f"argmax on the integers: {'same' if same else 'differs, use the float logits'})")
    if r.agreement is not None:
        click.echo(f"test images       {r.images} (digits test split fitted to the input, through the model's "
                   f"input quantizer)")
        click.echo(f"qonnx accuracy    {100 * r.qonnx_accuracy:.2f} %  (qonnx execute_onnx, {r.qonnx_s:.1f} s)")
        click.echo(f"integer accuracy  {100 * r.accuracy:.2f} %  (l1bn integer reference, {r.reference_s:.1f} s)")
        click.echo(f"agreement         {100 * r.agreement:.2f} %  ({r.disagreements} of {r.images} predictions "
                   f"differ; max |logit difference| {r.max_logit_diff:.4g})")
    elif r.images:
        click.echo(f"test images       {r.images} (not run through qonnx: --no-check)")
    else:
        click.echo(f"test images       none (an input of shape {list(inp.shape)} is not an image)")
