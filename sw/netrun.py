"""Compatibility name: the integer network executor is :mod:`l1bn.spec.reference.network` (numpy)."""

from l1bn.spec.reference.network import (  # noqa: F401
    LAYER_TYPES,
    IntLayer,
    IntNet,
    conv2d_int,
    im2col,
    linear_int,
    quantize_input,
    random_int_net,
    run_layer,
    run_net,
)

__all__ = ["IntLayer", "IntNet", "im2col", "conv2d_int", "linear_int", "run_layer", "run_net",
           "quantize_input", "random_int_net"]
