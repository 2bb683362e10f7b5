"""The training accelerator: one integer SGD step of a chain network on generated hardware
(docs/train_accel.md; the arithmetic is docs/arith/training.md)."""
