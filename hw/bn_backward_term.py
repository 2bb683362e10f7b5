"""What a norm adds to the backward BN unit: its per-channel constants and its pass-2 term (the
interface, and the arithmetic helpers both sides share).

The backward unit (:mod:`l1bn.hw.bn_backward`) is one skeleton: pass 1 reduces a channel to
sums, a sequence of per-channel steps (each a pipelined multiply the FSM waits for) turns them
into constants, pass 2 computes ``dx = rnd(u * gamma*inv)`` for every element. What differs per
norm is ``mh`` (the scaled ``mean(dy * xhat)``), the norm's own constants, anything it keeps in
pass 1 besides the shared sums and the term ``u`` of pass 2; a :class:`BackwardTerm` subclass in
the norm's own module (``bn_l1``, ``bn_l2``, ``bn_range``) builds them, named by the norm's unit
class (the class the registry's ``hw_backward`` names).
"""

from __future__ import annotations

from amaranth import signed, unsigned
from l1bn.spec.config import BNBackwardConfig

__all__ = ["BackwardTerm", "half", "shr", "backward_shapes", "div_const"]


def half(s: int) -> int:
    """The rounding constant of ``rnd(v, s)``: 2**(s-1) for s > 0, else 0."""
    return 1 << (s - 1) if s > 0 else 0


def shr(v, s: int):
    """The shift of ``rnd(v, s)`` after its constant was added: ``v >> s`` or ``v << -s``."""
    return v >> s if s > 0 else v.shift_left(-s) if s < 0 else v


def div_const(cfg: BNBackwardConfig) -> int:
    """``rc``: a division by n is ``rnd(v * rc, div_bits)`` (``div_const`` of the reference)."""
    return ((1 << (cfg.div_bits + 1)) // cfg.bn.n + 1) >> 1


def backward_shapes(cfg: BNBackwardConfig) -> dict:
    """Shapes of the unit's per-channel registers (from ``cfg.widths``)."""
    b, w = cfg.bn, cfg.widths
    return {
        "mu": signed(b.dev_bits), "inv": unsigned(b.recip_bits + 1), "gamma": signed(b.gamma_width),
        "sum_dy": signed(w["sum_dy"]), "sdyd": signed(w["sdyd"]), "h": signed(w["h"]),
        "mh": signed(w["hc"] - b.count_bits + 2), "u": signed(w["u"]),
        "gi": signed(w["gamma_inv"]),
    }


class BackwardTerm:
    """One norm's part of the backward unit for a ``BNBackwardConfig`` (a subclass per norm).

    Parameters
    ----------
    cfg : BNBackwardConfig

    Attributes
    ----------
    takes_sign : bool
        True when pass 2 needs only sign(d_i), so the unit can take it as an input bit
        (``sign_in=True``) instead of reading x.
    no_sign_reason : str
        Why not, when it cannot (the unit's error message).
    regs : dict of Signal
        The norm's own per-channel registers (made here, loaded by :meth:`latch_div` and
        :meth:`latch_const`); pass 2 takes a copy of each (``<name>2``) when it starts a channel.
    """

    takes_sign = False
    no_sign_reason = "its pass 2 reads x"

    def __init__(self, cfg: BNBackwardConfig):
        self.cfg = cfg
        self.regs = {}

    @classmethod
    def stored_bits(cls, cfg: BNBackwardConfig) -> dict:
        """Bits per element pass 2 needs from the forward: ``{"pass2": bits, ...}`` (alternatives
        under other keys)."""
        raise NotImplementedError

    def pass1(self, m, *, x, valid, first):
        """What the norm adds to pass 1 (default nothing), on the registered beat: ``x``, its
        ``valid`` and ``first`` (the channel's first beat). Its results must be complete by the
        end of the drain (``1 + mul_latency(grad_width, width)`` cycles after the last beat)."""

    def div_cycles(self) -> list:
        """Pipeline latencies of the norm's multiplies in the DIV step (the FSM waits for the
        longest of these and gamma*inv)."""
        raise NotImplementedError

    def const_cycles(self) -> int:
        """Pipeline latency of the CONST step (0: the norm has nothing to compute there)."""
        return 0

    def steps(self, m, pc, r):
        """Build the norm's per-channel pipelines on :class:`~l1bn.hw.arith.Pipe` ``pc`` from the
        unit's registers ``r`` (``h``, ``nneg``, ``mean_dy``, ``mh``); returns the next ``mh``
        (latched at the end of DIV)."""
        raise NotImplementedError

    def latch_div(self, m):
        """What the norm latches with ``mh`` at the end of the DIV step."""

    def latch_const(self, m):
        """What the norm latches at the end of the CONST step."""

    def pass2(self, p2, *, xs, ds, vs, neg, c, sign_in: bool):
        """The term ``u`` of pass 2 on :class:`~l1bn.hw.arith.Pipe` ``p2`` (advancing with the
        pass-2 pipeline) from the registered beat ``xs``, ``ds`` (dy), ``vs`` (valid) and ``neg``
        (the input sign bit, or None), and the pass-2 constants ``c`` (``mu``, ``inv``, ``mdy``,
        ``mh``, ``gi`` and the copies of :attr:`regs`). Returns ``(u, valid, stages)``: ``u``
        and its valid as registers, and the register stages added."""
        raise NotImplementedError
