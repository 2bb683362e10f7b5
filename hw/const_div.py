"""Rounded division by a generation-time constant n, pipelined (``div_round(v, n)`` of
:mod:`l1bn.spec.intmath`): an offset add, a constant multiply split for MULT18X18D, a shift.

Shared by the forward BN unit's mean (``mu``) and by the norms whose ``s`` is ``D / n``
(L1, L2). There is no generic divider for constants: :func:`l1bn.spec.intmath.div_round_params`
gives the add, multiply and shift that are exact over the operand's range.
"""

from __future__ import annotations

from amaranth import Signal, unsigned
from l1bn.hw.arith import mul_latency
from l1bn.spec.config import BNConfig
from l1bn.spec.intmath import div_round_params

__all__ = ["mean_params", "s_params", "s_cycles", "div_round_cycles", "div_round_pipe"]


def mean_params(cfg: BNConfig):
    """Parameters of ``mu = div_round(S << frac, n)`` over the range of a channel sum S."""
    lo, hi = -(1 << (cfg.width - 1)) * cfg.n, ((1 << (cfg.width - 1)) - 1) * cfg.n
    return div_round_params(cfg.n, lo << cfg.frac, hi << cfg.frac)


def s_params(cfg: BNConfig):
    """Parameters of ``s = div_round(D, n)`` over the range of a dispersion sum D."""
    return div_round_params(cfg.n, 0, (1 << cfg.disp_sum_bits) - 1)


def _operand(v, p):
    """``(v << 1) + offset``, the operand of the constant multiply."""
    return v.shift_left(1) + p.offset


def div_round_cycles(v_shape, p) -> int:
    """Registers of :func:`div_round_pipe` for an operand of ``v_shape``: the offset add, then
    the constant multiply (:func:`l1bn.hw.arith.mul_latency`; none when the multiplier is 1)."""
    op = _operand(Signal(v_shape), p).shape()
    return 1 + (mul_latency(op, p.mult) if p.mult != 1 else 0)


def div_round_pipe(pipe, v, p):
    """``div_round(v, n)`` through the registers of :class:`l1bn.hw.arith.Pipe` ``pipe``
    (:func:`div_round_cycles` of them); the final shift and subtract are combinational (the
    caller registers them)."""
    z = pipe.reg(_operand(v, p), "dr_off")
    if p.mult != 1:
        z = pipe.mul(z, p.mult, "dr_mul")
    return (z >> p.shift) - p.sub if p.sub else z >> p.shift


def s_cycles(cfg: BNConfig) -> int:
    """Registers of ``s = div_round(D, n)`` for ``cfg``'s dispersion sum."""
    return div_round_cycles(unsigned(cfg.disp_sum_bits), s_params(cfg))
