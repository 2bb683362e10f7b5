"""Formal harnesses of the whole accelerator (:mod:`l1bn.hw.accelerator`) on a tiny synthetic
network, on its public ports: one image of ``pixels`` beats in, one logits beat out."""

from __future__ import annotations

from amaranth import Signal
from amaranth.hdl import Assert
from l1bn.hw.accelerator import Accelerator, AccelLayer

from .props import Harness, drain_check, drive_stream, offer_all, pending, stream_rule, watchdog

__all__ = ["tiny_accelerator", "AccelStreamHarness", "AccelCountHarness", "AccelDrainHarness"]


def tiny_accelerator(*, cols: int = 2) -> Accelerator:
    """A 2x2 single-channel image (2-bit pixels) -> 1x1 conv to 2 channels with folded BN and
    ReLU (2-bit activations) -> linear to 2 logits, on a 2-row array with ``cols`` columns."""
    conv = AccelLayer(name="conv", type="conv2d", in_chw=(1, 2, 2), out_chw=(2, 2, 2), kernel=(1, 1),
                      stride=1, padding=0, w_bits=2, a_bits=2, acc_bits=6, weights=((1,), (-1,)),
                      mult=(1, -1), bias=(1, 0), shift=0, out_bits=2, mult_bits=2, bias_bits=2)
    fc = AccelLayer(name="fc", type="linear", in_chw=(2, 2, 2), out_chw=(2, 1, 1), kernel=(2, 2),
                    stride=1, padding=0, w_bits=2, a_bits=2, acc_bits=8,
                    weights=((-1, 1, -2, -2, 1, -1, 1, 0), (1, -2, 1, -1, 1, -2, 0, -1)),
                    mult=None, bias=None, shift=None, out_bits=None, mult_bits=None, bias_bits=None)
    return Accelerator([conv, fc], in_shape=(1, 2, 2), in_bits=2, rows=2, cols=cols)


class _AccelHarness(Harness):
    def __init__(self, accel_factory=tiny_accelerator):
        super().__init__()
        self.factory = accel_factory


class AccelStreamHarness(_AccelHarness):
    """The stream rule on ``o`` (input: the rule assumed, any gaps)."""

    def build(self, m):
        m.submodules.dut = dut = self.factory()
        drive_stream(m, self, dut.i, "i")
        m.d.comb += dut.o.ready.eq(self.free(1, "o_ready"))
        stream_rule(m, dut.o, "o")


class AccelCountHarness(_AccelHarness):
    """Any stalls: one output per image of ``pixels`` beats, never before the image is in; with
    ``o.ready`` high, a due output comes within twice ``cycles_per_image``."""

    def build(self, m):
        m.submodules.dut = dut = self.factory()
        _, _, take = drive_stream(m, self, dut.i, "i")
        m.d.comb += dut.o.ready.eq(self.free(1, "o_ready"))
        px = Signal(range(dut.pixels), name="pixel")
        with m.If(take):
            m.d.sync += px.eq(0 if dut.pixels == 1 else px + 1)
            with m.If(px == dut.pixels - 1):
                m.d.sync += px.eq(0)
        out = dut.o.valid & dut.o.ready
        due = pending(m, take & (px == dut.pixels - 1), out, 4, "images")
        watchdog(m, 2 * dut.cycles_per_image, due > 0, out, dut.o.ready, "o")


class AccelDrainHarness(_AccelHarness):
    """No stalls: one image in, ``o.ready`` high: exactly one output, at the handshake cycle the
    accelerator's ``latency`` states."""

    def build(self, m):
        m.submodules.dut = dut = self.factory()
        offer_all(m, dut.i, dut.pixels, "i")
        m.d.comb += [dut.i.payload.eq(self.free(len(dut.i.payload), "i_payload")), dut.o.ready.eq(1)]
        outs = Signal(range(3), name="outputs")
        with m.If(dut.o.valid):
            m.d.sync += outs.eq(outs + 1)
        m.d.comb += Assert(outs <= 1)
        drain_check(m, dut.latency + 1, outs == 1)
