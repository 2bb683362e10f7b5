"""Write a CNV-w2a2 export of random integer weights, with random 8-bit test images and labels,
for ``l1bn sim net`` (docs/accelerator.md, issue 29).

Usage: ``.venv/bin/python bench/cnv_w2a2_export.py OUT N [WIDTHS]``: OUT the export folder
(replaced), N the number of test images, WIDTHS the eight layer widths, comma-separated (default:
CNV's full widths 64,64,128,128,256,256,512,512). Weights come from
``random_cnv_graph(0, wbits=2, abits=2)``; images and labels from ``numpy`` seed 1.
"""
import sys

import numpy as np
from l1bn.spec.export import write_export
from l1bn.spec.reference.graph_random import random_cnv_graph

FULL = (64, 64, 128, 128, 256, 256, 512, 512)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    out, n = argv[0], int(argv[1])
    widths = tuple(int(w) for w in argv[2].split(",")) if len(argv) > 2 else FULL
    g = random_cnv_graph(0, wbits=2, abits=2, widths=widths)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 3, 32, 32))
    y = rng.integers(0, 10, n)
    p = write_export(g, out, rows=4, force=True, extra={"test.inputs": (x, 8, False, "test_input"),
                                                        "test.labels": (y, 8, False, "test_label")})
    print(p, widths)


if __name__ == "__main__":
    main(sys.argv[1:])
