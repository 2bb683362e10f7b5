"""The sigma datapaths of the reciprocal stage, one per registry ``sigma_kind``
(:data:`l1bn.spec.norms.SIGMA_KINDS`).

``"const"`` (:class:`ConstSigma`, L1 and range BN): ``sigma = rnd(s * K, c_bits) + eps``, a
pipelined constant multiply (K from the norm's :meth:`~l1bn.hw.bn_dispersion.Dispersion.sigma_const`).
``"sqrt"`` (:class:`SqrtSigma`, L2): ``sigma = isqrt(s) + eps`` by a restoring square root, one
result bit per cycle, ``+ eps`` in a cycle of its own.

Both plug into the reciprocal stage's FSM (:class:`l1bn.hw.bn_unit.RecipStage`): :meth:`build`
makes the datapath (it runs freely from the ``s`` register), :meth:`begin` is what the FSM does
when ``s`` is latched, and :meth:`states` adds the states that end by loading ``sigma`` and
starting the divider (state ``"DIV"``).
"""

from __future__ import annotations

from amaranth import Mux, Signal, signed, unsigned
from l1bn.hw.arith import mul_latency
from l1bn.spec.config import BNConfig

__all__ = ["ConstSigma", "SqrtSigma", "SIGMA_DATAPATHS", "sigma_datapath"]


class ConstSigma:
    """``sigma = rnd(s * K, c_bits) + eps``: a pipelined constant multiply that the FSM waits
    for (state ``SIGMA``, :attr:`cycles` cycles), then one cycle that latches sigma.

    Parameters
    ----------
    cfg : BNConfig
    disp : Dispersion
        The norm's dispersion datapath; its :meth:`~l1bn.hw.bn_dispersion.Dispersion.sigma_const`
        is K (``c_bits`` fractional bits).
    """

    def __init__(self, cfg: BNConfig, disp):
        self.cfg, self.const = cfg, disp.sigma_const()
        self.round = 1 << (cfg.c_bits - 1)

    @property
    def cycles(self) -> int:
        """Registers of the constant multiply (and its rounding term)."""
        return mul_latency(unsigned(self.cfg.disp_bits), self.const, add=self.round)

    @property
    def mid_cycles(self) -> int:
        """Cycles from ``s`` latched to sigma latched."""
        return 1 + self.cycles

    @property
    def count(self) -> int:
        """Largest value the FSM's step counter needs (none here)."""
        return 0

    #: the FSM states this datapath adds
    state_names = ("SIGMA",)

    def counted(self, wait, cnt):
        """``(state, counter, largest value)`` of the states this datapath adds (formal
        invariants): SIGMA counts ``wait`` down from :attr:`cycles`."""
        return [("SIGMA", wait, self.cycles)]

    def build(self, m, pipe, s):
        self._prod = pipe.mul(s, self.const, "sig", add=self.round)

    def begin(self, m, wait, cnt):
        m.d.sync += wait.eq(self.cycles)
        m.next = "SIGMA"

    def states(self, m, sigma, div_first, cnt, wait):
        with m.State("SIGMA"):
            m.d.sync += wait.eq(wait - 1)
            with m.If(wait == 0):
                m.d.sync += [sigma.eq((self._prod >> self.cfg.c_bits) + self.cfg.eps), div_first.eq(1),
                             cnt.eq(0)]
                m.next = "DIV"


class SqrtSigma:
    """``sigma = isqrt(s) + eps``: a restoring square root, ``ceil(disp_bits / 2)`` cycles (state
    ``SQRT``, one result bit each; every step is one subtract whose borrow is the comparison,
    running every cycle outside the FSM), then ``+ eps`` in its own cycle (``SIGMA2``).

    Parameters
    ----------
    cfg : BNConfig
    disp : Dispersion
        The norm's dispersion datapath (not used: the square root has no constant).
    """

    def __init__(self, cfg: BNConfig, disp):
        self.cfg = cfg
        self.steps = (cfg.disp_bits + 1) // 2

    @property
    def cycles(self) -> int:
        return 0

    @property
    def mid_cycles(self) -> int:
        return self.steps + 1

    @property
    def count(self) -> int:
        return self.steps

    #: the FSM states this datapath adds
    state_names = ("SQRT", "SIGMA2")

    def counted(self, wait, cnt):
        """``(state, counter, largest value)`` of the states this datapath adds (formal
        invariants): SQRT counts ``cnt`` down from ``steps - 1``."""
        return [("SQRT", cnt, self.steps - 1)]

    def build(self, m, pipe, s):
        k = self.steps
        v = Signal(unsigned(2 * k))                 # radicand, consumed two bits per step
        root = Signal(unsigned(k))
        srem = Signal(unsigned(k + 2))              # remainder <= 2*root
        # the step runs every cycle (read in SQRT only); sq_load starts it: radicand s, root 0,
        # remainder 0. s is registered the cycle sq_load is set.
        sq_load = Signal()
        m.d.sync += sq_load.eq(0)
        vv = Mux(sq_load, s, v)
        rt = Mux(sq_load, 0, root)
        cur = Signal(unsigned(k + 2))
        diff = Signal(signed(k + 3))
        m.d.comb += [cur.eq((Mux(sq_load, 0, srem) << 2) | vv[2 * k - 2:]),
                     diff.eq(cur - ((rt << 2) | 1))]
        ge = ~diff[-1]
        m.d.sync += [srem.eq(Mux(ge, diff[:k + 2], cur)), root.eq(Mux(ge, (rt << 1) | 1, rt << 1)),
                     v.eq(vv << 2)]
        self._root, self._load = root, sq_load

    def begin(self, m, wait, cnt):
        m.d.sync += [self._load.eq(1), cnt.eq(self.steps - 1)]
        m.next = "SQRT"

    def states(self, m, sigma, div_first, cnt, wait):
        with m.State("SQRT"):
            m.d.sync += cnt.eq(cnt - 1)
            with m.If(cnt == 0):
                m.next = "SIGMA2"
        with m.State("SIGMA2"):         # + eps in its own cycle, after the last root bit
            m.d.sync += [sigma.eq(self._root + self.cfg.eps), div_first.eq(1), cnt.eq(0)]
            m.next = "DIV"


#: The sigma datapath of each registry ``sigma_kind``.
SIGMA_DATAPATHS = {"const": ConstSigma, "sqrt": SqrtSigma}


def sigma_datapath(cfg: BNConfig, disp):
    """The sigma datapath for ``cfg`` (chosen by its norm's ``sigma_kind``; ``disp``: the norm's
    :class:`~l1bn.hw.bn_dispersion.Dispersion`, which gives K for ``"const"``)."""
    return SIGMA_DATAPATHS[cfg.norm_spec.sigma_kind](cfg, disp)
