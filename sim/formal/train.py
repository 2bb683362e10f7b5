"""Formal harnesses of the training accelerator (:mod:`l1bn.hw.train.accel`) on a minimal network,
on its public ports: batches of pixels and labels in (``i``), read-back requests (``rd``), any
back-pressure on ``o``, ``z`` and ``st``.

The minimal network: a 1x1x2 input, a 1x1 convolution to one channel with BN, a linear layer to
two classes, batches of two, a 1-row array, narrow fixed-point formats (:func:`minimal_config`).
One step takes :func:`minimal_step_cycles` cycles.
"""

from __future__ import annotations

from amaranth import Signal
from amaranth.hdl import Assert

from .props import Harness, drive_stream, offer_all, stream_rule

__all__ = ["minimal_config", "minimal_accelerator", "minimal_step_cycles", "TrainStreamHarness",
           "TrainCountHarness", "TrainDrainHarness"]


def minimal_config(norm: str = "l1"):
    """The smallest network the trainer accepts that has a BN layer, with narrow formats."""
    from l1bn.spec.training import IntTrainConfig, TrainLayer

    return IntTrainConfig(in_shape=(1, 1, 2), layers=(TrainLayer(kind="conv2d", out=1, kernel=1, stride=1, padding=0),
                                                      TrainLayer(kind="linear", out=2, kernel=1, stride=1, padding=0)),
                          batch=2, norm=norm, wbits=2, abits=2, a_range_log2=1, gbits=3, master_bits=12,
                          lr_shift=3, bn_lr_shift=3, recip_bits=8, xhat_frac=4, c_bits=6, gamma_width=6,
                          gamma_frac=3, beta_width=6, bn_extra_frac=1, inner_frac=2, div_bits=8,
                          exp_frac=2, prob_bits=8, log2e_bits=8, lfsr_lanes=1)


def minimal_accelerator(norm: str = "l1"):
    from l1bn.hw.train.accel import TrainAccelerator

    return TrainAccelerator(minimal_config(norm), rows=1, seed=0)


def minimal_step_cycles(norm: str = "l1") -> int:
    from l1bn.hw.train.plan import TrainPlan
    from l1bn.hw.train.schedule import step_cycles

    return step_cycles(TrainPlan(minimal_config(norm), rows=1))


def _batch_beats(cfg) -> int:
    c, h, w = cfg.in_shape
    return cfg.batch * c * h * w


class _Train(Harness):
    def __init__(self, norm: str = "l1"):
        super().__init__()
        self.norm = norm


class TrainStreamHarness(_Train):
    """The stream rule on ``o``, ``z`` and ``st`` (inputs under the rule, any gaps, any ready)."""

    def build(self, m):
        m.submodules.dut = dut = minimal_accelerator(self.norm)
        drive_stream(m, self, dut.i, "i")
        drive_stream(m, self, dut.rd, "rd")
        for name in ("o", "z", "st"):
            port = getattr(dut, name)
            m.d.comb += port.ready.eq(self.free(1, f"{name}_ready"))
            stream_rule(m, port, name)


class TrainCountHarness(_Train):
    """Any gaps and back-pressure: a result only after its whole batch is in, one per batch, and
    no logit before its batch is in."""

    def build(self, m):
        m.submodules.dut = dut = minimal_accelerator(self.norm)
        cfg = dut.cfg
        _, _, take = drive_stream(m, self, dut.i, "i")
        drive_stream(m, self, dut.rd, "rd")
        for name in ("o", "z", "st"):
            m.d.comb += getattr(dut, name).ready.eq(self.free(1, f"{name}_ready"))
        per = _batch_beats(cfg)
        beats = Signal(range(per), name="beats")
        batches = Signal(8, name="batches")
        results = Signal(8, name="results")
        logits = Signal(10, name="logits")
        with m.If(take):
            m.d.sync += beats.eq(0 if per == 1 else beats + 1)
            with m.If(beats == per - 1):
                m.d.sync += [beats.eq(0), batches.eq(batches + 1)]
        with m.If(dut.o.valid & dut.o.ready):
            m.d.sync += results.eq(results + 1)
        with m.If(dut.z.valid & dut.z.ready):
            m.d.sync += logits.eq(logits + 1)
        m.d.comb += [Assert(results <= batches),
                     Assert(logits <= batches * (cfg.batch * cfg.classes))]


class TrainDrainHarness(_Train):
    """No stalls: one batch in, every output ready: its result comes at ``cycles_per_step - 3``
    cycles after the first input beat, as the formula says."""

    def build(self, m):
        m.submodules.dut = dut = minimal_accelerator(self.norm)
        per = _batch_beats(dut.cfg)
        take, _ = offer_all(m, dut.i, per, "i")
        m.d.comb += [dut.rd.valid.eq(0), dut.o.ready.eq(1), dut.z.ready.eq(1), dut.st.ready.eq(1)]
        first = Signal(name="started")
        cyc = Signal(range(dut.cycles_per_step + 2), name="since_first")
        with m.If(take & ~first):
            m.d.sync += first.eq(1)
        with m.If((first | take) & (cyc <= dut.cycles_per_step)):
            m.d.sync += cyc.eq(cyc + 1)
        out = dut.o.valid & dut.o.ready
        # the result exactly at cycle cycles_per_step - 3 after the first beat (cycle 0)
        m.d.comb += Assert(~out | (cyc == dut.cycles_per_step - 3))
        m.d.comb += Assert((cyc < dut.cycles_per_step - 2) | (dut.o.valid == 0) | out)
