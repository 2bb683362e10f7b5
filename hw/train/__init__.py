"""The training accelerator: one integer SGD step of a chain network on generated hardware
(docs/train_accel.md; the arithmetic is docs/arith/training.md).

Modules: ``plan`` (layout, program, cycle formulas; plain Python), ``bus`` (shared memories),
``engine`` (the command protocol), ``fixed`` (run-time shifts, max tracking), and one module per
engine.
"""
