"""Deliberately broken variants of the designs: each property class must catch one (the
mutation check of ``tests/test_formal.py``). Each wraps a real design and keeps its ports."""

from __future__ import annotations

import dataclasses

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from l1bn.spec.config import MACConfig

__all__ = ["PayloadGlitch", "DropBeat", "narrow_mac_config", "narrow_bn_config"]


class _Wrap(wiring.Component):
    """Pass every member of ``inner`` through, except the output stream ``port``."""

    def __init__(self, inner, port):
        self.inner, self.port = inner, port
        self.cfg = getattr(inner, "cfg", None)
        super().__init__(inner.signature)

    def passthrough(self, m):
        m.submodules.inner = inner = self.inner
        for name, member in self.signature.members.items():
            if name == self.port:
                continue
            outer, inn = getattr(self, name), getattr(inner, name)
            if member.is_port:
                if member.flow == In:
                    m.d.comb += inn.eq(outer)
                else:
                    m.d.comb += outer.eq(inn)
            elif member.flow == In:
                wiring.connect(m, wiring.flipped(outer), inn)
            else:
                wiring.connect(m, inn, wiring.flipped(outer))
        return getattr(self, self.port), getattr(inner, self.port)


class PayloadGlitch(_Wrap):
    """The payload of ``port`` changes (its low bit flips) in the second cycle of a stall."""

    def elaborate(self, platform):
        m = Module()
        outer, inn = self.passthrough(m)
        stalled = Signal()
        m.d.sync += stalled.eq(inn.valid & ~outer.ready)
        p = inn.payload.as_value()
        m.d.comb += [outer.valid.eq(inn.valid), inn.ready.eq(outer.ready),
                     outer.payload.eq(p ^ (stalled & inn.valid))]
        return m


class DropBeat(_Wrap):
    """Beat number ``index`` of ``port`` is consumed inside and never shown (a lost element)."""

    def __init__(self, inner, port, index=0):
        self.index = index
        super().__init__(inner, port)

    def elaborate(self, platform):
        m = Module()
        outer, inn = self.passthrough(m)
        seen = Signal(range(self.index + 2))
        drop = seen == self.index
        with m.If(inn.valid & (drop | outer.ready) & (seen <= self.index)):
            m.d.sync += seen.eq(seen + 1)
        m.d.comb += [outer.valid.eq(inn.valid & ~drop), outer.payload.eq(inn.payload),
                     inn.ready.eq(Mux(drop, 1, outer.ready))]
        return m


def narrow_mac_config(cfg: MACConfig) -> MACConfig:
    """``cfg`` whose accumulator (and result) is one bit narrower than the contract needs."""

    class NarrowMACConfig(type(cfg)):
        @property
        def acc_bits(self):
            return MACConfig.acc_bits.fget(self) - 1

    return NarrowMACConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


def requantize_wrong_rounding(v, *, shift: int, out_bits: int, relu: bool):
    """The requantizer with its rounding constant one too small (``2**(shift-1) - 1``: ties
    round down): :func:`l1bn.hw.arith.requantize` of ``v - 1``."""
    from l1bn.hw.arith import requantize

    return requantize(v - 1, shift=shift, out_bits=out_bits, relu=relu)


def narrow_bn_config(cfg, width: str):
    """``cfg`` (a ``BNConfig``) with the derived width ``width`` (``"sum_bits"``: the stats
    stage's running sum; ``"disp_sum_bits"``: the dispersion statistic) one bit narrower: the
    stage built from it has a one-bit-too-narrow accumulator."""
    base = type(cfg)
    narrow = type(f"Narrow{base.__name__}", (base,),
                  {width: property(lambda self: getattr(base, width).fget(self) - 1)})
    return narrow(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
