"""Agreement of the integer reference with qonnx on the networks FINN and Brevitas users have.

Run:  .venv/bin/python bench/interop_models.py [--models tfc_1w1a cnv_2w2a ...] [--images N]
                                               [--steps S] [--keep DIR]

For each model of ``l1bn.sw.brevitas_zoo`` (the 12 ``brevitas_examples.bnn_pynq`` configurations,
a small residual network, a model with Brevitas's default float scales): random weights (seed 0),
a few Adam steps on the digits fitted to its input, Brevitas ``export_qonnx``, ``l1bn import``
(``import_qonnx``: the digits test split fitted to the input; qonnx ``execute_onnx`` on it), then
the integer reference on the stored export (``l1bn infer``'s ``infer_export``). Columns: images
checked, prediction agreement, max |logit difference| (qonnx's float logits against the reference's
``int * scale + offset``), whether every logit is equal, nodes by operator, and the seconds qonnx
and the reference took. The check is agreement, not accuracy (models train only a few steps); the
bench fails (exit 1) when a prediction differs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

#: name -> (training steps, batch, test images): the plan of tests/test_interop_models.py
DEFAULT_IMAGES = {"cnv_1w1a": 60, "cnv_1w2a": 60, "cnv_2w2a": 60, "resnet18_4w4a": 10}


def main(argv=None) -> int:
    import numpy as np
    from l1bn.cli.export import infer_export
    from l1bn.spec.export import load_export
    from l1bn.sw.brevitas_zoo import MODELS, build_model, export_model, model_input, train_on_digits
    from l1bn.sw.qonnx_import import import_qonnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--images", type=int, default=None, help="test images per model (default 360; CNV 60, ResNet 10)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps (default: 5; CNV 3, ResNet 2, residual 10, float_scales 40)")
    ap.add_argument("--keep", default=None, help="keep the .onnx files and exports in this folder")
    a = ap.parse_args(argv)

    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="interop-models-") as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in a.models:
            steps = a.steps or (3 if name.startswith("cnv") else 2 if name.startswith("resnet") else
                                40 if name == "float_scales" else 10 if name == "residual" else 5)
            batch = 16 if name.startswith("cnv") else 8 if name.startswith("resnet") else 32
            images = a.images or DEFAULT_IMAGES.get(name, 360)
            t0 = time.perf_counter()
            m = build_model(name, seed=0)
            train_on_digits(m, name, steps=steps, batch=batch, seed=0)
            path = export_model(m, name, root / f"{name}.onnx")
            r = import_qonnx(path, root / f"{name}-export", force=True, input_type=model_input(name)[1],
                             test_images=images)
            inf = infer_export(r.path, threads=1)
            e = load_export(r.path)
            ops: dict[str, int] = {}
            for n in e.graph.nodes:
                ops[n.op] = ops.get(n.op, 0) + 1
            from l1bn.spec.reference.graph import float_logits, run_graph

            equal = bool(np.array_equal(float_logits(e.graph, run_graph(e.graph, e.test_inputs)),
                                        e.qat_logits.astype(np.float64)))
            ok &= inf["disagreements"] == 0
            rows.append((name, steps, inf["images"], inf["agreement"], inf["disagreements"], inf["max_logit_diff"],
                         equal, ops, r.qonnx_s, inf["time_s"], time.perf_counter() - t0))
    print("integer reference (l1bn infer) against qonnx execute_onnx, Brevitas models exported with export_qonnx")
    print(f"{platform.machine()}, Python {platform.python_version()}, one BLAS thread for the reference; "
          "random init (seed 0), a few Adam steps on the digits fitted to each input\n")
    print("| model | steps | images | agreement | differ | max logit diff | logits equal | nodes | qonnx s "
          "| reference s |")
    print("| ----- | -----:| ------:| ---------:| ------:| --------------:| ------------ | ----- | -------:"
          "| -----------:|")
    for name, steps, images, agr, dis, diff, equal, ops, tq, tr, _ in rows:
        nodes = ", ".join(f"{k} {v}" for k, v in ops.items())
        print(f"| {name} | {steps} | {images} | {100 * agr:.2f} % | {dis} | {diff:.3g} | {'yes' if equal else 'no'} "
              f"| {nodes} | {tq:.1f} | {tr:.2f} |")
    print(f"\nall predictions equal: {'PASS' if ok else 'FAIL'} ({len(rows)} models, "
          f"{sum(r[-1] for r in rows):.0f} s in all)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
