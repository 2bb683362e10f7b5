"""Amaranth forms of the project-wide arithmetic rules (docs/arith/core.md).

The same rules as :mod:`l1bn.spec.intmath` and :mod:`l1bn.spec.reference.core`, written on Amaranth
values so every generator rounds and saturates the same way.
"""

from __future__ import annotations

from amaranth import Mux

__all__ = ["rnd", "sat", "pick"]


def rnd(v, s: int):
    """Round half up shift: ``(v + 2**(s-1)) >> s`` for s > 0 (a constant add and an arithmetic
    shift, the same logic for both signs), ``v << -s`` for s < 0, ``v`` for s = 0."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    if s < 0:
        return v << (-s)
    return v


def sat(v, bits: int):
    """Clamp ``v`` into a signed ``bits``-wide range (two comparators and a mux)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def pick(sel, items):
    """``items[sel]`` as a chain of Muxes.

    A chain of Muxes becomes continuous assigns in Verilog, which Icarus evaluates from time 0; an
    indexed ``Array`` becomes an ``always @*`` case that never runs while its inputs keep their
    initial values, leaving X on the output.
    """
    items = list(items)
    out = items[-1]
    for k in range(len(items) - 2, -1, -1):
        out = Mux(sel == k, items[k], out)
    return out
