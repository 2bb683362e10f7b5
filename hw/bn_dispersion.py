"""What a norm adds to the forward BN unit: its dispersion datapath (the interface).

The forward unit (:mod:`l1bn.hw.bn_unit`) is one skeleton for every norm; the registry
(:mod:`l1bn.spec.norms`) names each norm's unit class (``hw_unit``), and that class names its
:class:`Dispersion` subclass, which lives in the norm's own module (``bn_l1``, ``bn_l2``,
``bn_range``). The dispersion stage and the reciprocal stage build only what it gives them:

- the per-lane operator on ``d = (x << frac) - mu`` (:meth:`Dispersion.lane_term`, registered,
  :attr:`Dispersion.op_cycles` cycles);
- the reduction over the lanes and the channel's beats (:meth:`Dispersion.reduce`; the default
  is a registered adder tree and an accumulator: ``D = sum f(d)``);
- ``s`` from ``D`` (:meth:`Dispersion.s_value`; the default is ``div_round(D, n)``);
- the constant K of ``sigma = rnd(s * K, c_bits) + eps`` for a norm whose registry
  ``sigma_kind`` is ``"const"`` (:meth:`Dispersion.sigma_const`; the sigma datapath itself is
  chosen by ``sigma_kind``, :mod:`l1bn.hw.bn_sigma`).
"""

from __future__ import annotations

from amaranth import Mux, Signal, unsigned
from l1bn.hw.arith import sum_levels
from l1bn.hw.const_div import div_round_pipe, s_cycles, s_params
from l1bn.spec.config import BNConfig

__all__ = ["Dispersion"]


class Dispersion:
    """One norm's dispersion datapath for a :class:`BNConfig` (a subclass per norm).

    Parameters
    ----------
    cfg : BNConfig

    Attributes
    ----------
    op_cycles : int
        Registers of :meth:`lane_term` after ``d`` (the stage latency is
        ``1 + op_cycles + lane_tree + 1``).
    s_cycles : int
        Registers of :meth:`s_value` (``div_round`` by default).
    """

    def __init__(self, cfg: BNConfig):
        self.cfg = cfg

    @property
    def op_cycles(self) -> int:
        return 1

    def lane_term(self, m, pipe, d, k: int):
        """The per-lane term ``f(d)`` of lane ``k`` (``d``: ``signed(dev_bits)``, a register),
        through ``op_cycles`` registers of module ``m`` (``pipe``: the stage's
        :class:`~l1bn.hw.arith.Pipe`)."""
        raise NotImplementedError

    def reduce(self, m, pipe, terms, valid, first, last, done):
        """The channel's statistic ``D`` (``unsigned(disp_sum_bits)``) from the lanes' terms.

        ``valid``/``first``/``last`` travel with the terms; ``done`` (a ``Signal``) must be set
        (registered) in the cycle ``D`` is complete, ``lane_tree + 1`` cycles after the terms'
        ``last``; the returned value is held until the next ``done``. Default: a registered adder
        tree over the lanes and an accumulator, ``D = sum f(d)``.
        """
        cfg = self.cfg
        tree = pipe.add_tree(terms, "lanes")
        valid, first, last = (pipe.delay(v, sum_levels(cfg.lanes), "t") for v in (valid, first, last))
        acc = Signal(unsigned(cfg.disp_sum_bits))
        m.d.sync += done.eq(valid & last)
        with m.If(valid):
            m.d.sync += acc.eq(Mux(first, 0, acc) + tree)
        self.probes = {"acc": acc}       # the running sum (formal invariants)
        return acc

    @property
    def s_cycles(self) -> int:
        return s_cycles(self.cfg)

    def s_value(self, pipe, dsum):
        """``s`` from the registered dispersion sum ``dsum``, ``s_cycles`` registers later
        (combinational after the last one; the caller latches it). Default: ``div_round(D, n)``."""
        return div_round_pipe(pipe, dsum, s_params(self.cfg))

    def sigma_const(self) -> int:
        """K of ``sigma = rnd(s * K, c_bits) + eps`` (only for ``sigma_kind == "const"``)."""
        raise NotImplementedError(f"norm {self.cfg.norm!r} has no constant sigma multiplier")

    # The reference rule as plain Amaranth expressions (exact: any width, no registers), for the
    # formal harnesses that check the unit against it (l1bn.sim.formal.bn_data).

    def exact_dispersion(self, ds):
        """``D`` of the deviations ``ds`` (a list of values): default ``sum f(d)`` with ``f``
        from :meth:`exact_term`."""
        terms = [self.exact_term(d) for d in ds]
        return sum(terms[1:], terms[0])

    def exact_term(self, d):
        """``f(d)`` of one deviation, as an expression."""
        raise NotImplementedError

    def exact_s_holds(self, dsum, s):
        """The condition that ``s`` is the norm's ``s`` of ``dsum``: default ``s = div_round(D, n)``,
        as ``2n*s <= 2D + n < 2n*(s + 1)``."""
        n = self.cfg.n
        sd = 2 * dsum + n
        return (2 * n * s <= sd) & (sd < 2 * n * (s + 1))
