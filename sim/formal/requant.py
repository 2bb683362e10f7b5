"""Formal harness of the output requantizer (:func:`l1bn.hw.arith.requantize`, the MAC array's
and the accelerator's): for every accumulator value of ``acc_bits`` signed bits, the hardware
result equals the rule of docs/arith/mac.md written independently here (round half up by
``(v + 2**(shift-1)) >> shift`` in exact arithmetic, then compare-and-clamp; the hardware
saturates by inspecting the dropped high bits instead).

Combinational (no state): a proof at any depth is a proof for every input, and ABC's ``pdr``
closes it at its first frame.
"""

from __future__ import annotations

from amaranth import Mux
from amaranth.hdl import Assert
from l1bn.hw.arith import requantize

from .props import Harness

__all__ = ["RequantHarness", "requant_rule"]


def requant_rule(v, *, shift: int, out_bits: int, relu: bool):
    """The requantizer's rule in exact (widening) Amaranth arithmetic, by comparisons."""
    y = (v + (1 << (shift - 1))) >> shift if shift else v
    if relu:
        hi = (1 << out_bits) - 1
        return Mux(y < 0, 0, Mux(y > hi, hi, y))
    lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
    return Mux(y < lo, lo, Mux(y > hi, hi, y))


class RequantHarness(Harness):
    """``requant(acc) == requant_rule(acc)`` for every signed ``acc_bits`` accumulator ``acc``
    (``cfg``: a ``MACConfig``; its ``acc_bits``, ``shift``, ``out_bits``, ``relu``).
    ``requant`` is the function under test (default :func:`~l1bn.hw.arith.requantize`)."""

    def __init__(self, cfg, requant=None):
        super().__init__()
        self.cfg, self.requant = cfg, requant or requantize

    def build(self, m):
        cfg = self.cfg
        acc = self.free(cfg.acc_bits, "acc").as_signed()
        kw = dict(shift=cfg.shift, out_bits=cfg.out_bits, relu=cfg.relu)
        m.d.comb += Assert(self.requant(acc, **kw) == requant_rule(acc, **kw))
