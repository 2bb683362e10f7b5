"""The accelerator for an exported network: image loader, issue stage, MAC array, writeback.

It classifies images back to back. Every layer of the export (``conv2d`` or ``linear``) runs on
one shared :class:`~l1bn.hw.mac_array.MACArray` of ``rows`` output channels by ``cols`` output
positions; a ``linear`` layer is a convolution whose kernel covers its whole input. The generator
reads the network through :mod:`l1bn.spec.export` (the loaded integer network; no torch).

Four components, joined with ``wiring.connect``::

    i ─► ImageLoader ─► image memory (2 slots, per column) ─┐
                                                           ├─► Issuer ─► MACArray ─► Writeback ─► o
         activation memory (2 regions, per column) ◄───────┴──────────────────────────┘

- :class:`~l1bn.hw.accel_loader.ImageLoader`: pixels into an image slot; the next image loads
  while the current one is computed;
- :class:`~l1bn.hw.accel_issue.Issuer`: the loops over layers, tiles, groups, channels and kernel
  taps; im2col addressing by table; weight ROM; one K-step per cycle into the array;
- :class:`~l1bn.hw.accel_writeback.Writeback`: folded BN multiply/add, requantize, one activation
  word per result row; for the last layer, the logits, their argmax and the output beat.

Layout, schedule and the cycle formulas are in :mod:`l1bn.hw.accel_plan` and ``docs/accelerator.md``.
"""

from __future__ import annotations

from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_budget import Budget, budget_geometry, plan_resources, shortfall
from l1bn.hw.accel_issue import Issuer
from l1bn.hw.accel_layers import (
    AccelLayer,
    accelerator_interface,
    chw,
    layers_from_export,
    output_layout,
)
from l1bn.hw.accel_loader import ImageLoader
from l1bn.hw.accel_plan import DEFAULT_MACS, Plan, best_geometry
from l1bn.hw.accel_writeback import Writeback
from l1bn.hw.bram import BankedMemory
from l1bn.hw.mac_array import MACArray
from l1bn.hw.mac_tree import TreeArray
from l1bn.spec.config import MAX_MAC_ARRAY, check_int

__all__ = ["Accelerator", "AccelLayer", "accelerator_from_export", "accelerator_interface",
           "layers_from_export", "output_layout", "DEFAULT_MACS"]


def accelerator_from_export(exported_net, *, rows: int | None = None, cols: int | None = None,
                            macs: int = DEFAULT_MACS, budget: Budget | None = None,
                            xnor: bool | None = None, lanes: int = 1) -> Accelerator:
    """The :class:`Accelerator` for a loaded export (the ``ExportedNet`` that ``load_export`` returns).

    ``rows`` x ``cols`` is the MAC array. With neither given, the shape with ``macs`` MACs and the
    fewest cycles per image (:func:`~l1bn.hw.accel_plan.best_geometry`), or with a ``budget``
    (:class:`~l1bn.hw.accel_budget.Budget`) the shape of any size that fits it with the fewest
    cycles (:func:`~l1bn.hw.accel_budget.budget_geometry`); with one given, the other is
    ``macs // given``. With a ``budget``, a shape whose estimated resources exceed it is a
    ``ValueError`` of one line naming the resource that is short, before anything is built.
    ``xnor``: the XNOR-popcount array (see :class:`~l1bn.hw.accel_plan.Plan`; None: when every
    layer is binary x bipolar without padding or pooling). ``lanes``: 1 (default) the MAC array,
    one accumulator per MAC; more, the tree PE (:class:`~l1bn.hw.mac_tree.TreeArray`: ``lanes``
    input channels per beat into each accumulator; see :class:`~l1bn.hw.accel_plan.Plan`).
    """
    check_int("macs", macs, 1, MAX_MAC_ARRAY ** 2)
    if cols is not None:
        check_int("cols", cols, 1, MAX_MAC_ARRAY)
    if rows is not None:
        check_int("rows", rows, 1, MAX_MAC_ARRAY)
    layers, inp = layers_from_export(exported_net)
    if rows is None and cols is None and budget is not None:
        rows, cols = budget_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], budget=budget,
                                     in_signed=inp["signed"], lanes=lanes)
    elif rows is None and cols is None:
        rows, cols = best_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], macs=macs,
                                   in_signed=inp["signed"], lanes=lanes)
    elif rows is None:
        rows = max(1, min(MAX_MAC_ARRAY, macs // cols))
    elif cols is None:
        cols = max(1, min(MAX_MAC_ARRAY, macs // rows))
    if budget is not None:
        plan = Plan(layers, in_chw=inp["shape"], in_bits=inp["bits"], rows=rows, cols=cols, in_signed=inp["signed"],
                    xnor=xnor, lanes=lanes)
        short = shortfall(plan_resources(plan), budget)
        if short is not None:
            raise ValueError(f"the {rows}x{cols} array does not fit {budget.name}: it {short}")
    return Accelerator(layers, in_shape=inp["shape"], in_bits=inp["bits"], rows=rows, cols=cols,
                       in_signed=inp["signed"], xnor=xnor, lanes=lanes)


class Accelerator(wiring.Component):
    """Whole-network inference: images in, logits and argmax out, images back to back.

    Parameters
    ----------
    layers : list of AccelLayer
        From :func:`layers_from_export`; every layer but the last has a requantizer.
    in_shape : (C, H, W)
    in_bits : int, 1..16
        Pixel bits.
    in_signed : bool
        Two's complement pixels (signed images; bipolar images as -1/+1 in 2 bits).
    rows, cols : int, 1..MAX_MAC_ARRAY (16)
        MAC array shape: output channels per tile by output positions in parallel.
    xnor : bool or None
        The XNOR-popcount array (None: when every layer allows it; :class:`~l1bn.hw.accel_plan.Plan`).
    lanes : int
        1: the MAC array (one accumulator per MAC); more: the tree PE, ``lanes`` input channels
        per beat into each accumulator (:class:`~l1bn.hw.mac_tree.TreeArray`).

    Attributes
    ----------
    i : In(stream.Signature(unsigned(in_bits)))
        One pixel per beat (its two's complement bits when ``in_signed``) in (c, y, x) order, ``pixels`` beats per image. Ready while one of the
        two image slots is free: the next image loads while the current one is computed.
    o : Out(stream.Signature(output_layout(classes, logit_bits)))
        One beat per image: the last layer's accumulators (``logit_bits`` signed bits each) and the
        index of the first maximum (the rule of ``torch.argmax``). Held until ``ready``.
    plan : Plan
        Layout, memory maps and cycle formulas (:mod:`l1bn.hw.accel_plan`).

    Timing
    ------
    ``cycles_per_image``: output handshake to output handshake with ``i.valid`` and ``o.ready``
    always high; ``latency``: an image's first pixel handshake to its output handshake when it
    enters an idle accelerator. Both are asserted by the cocotb bench on every image.
    """

    def __init__(self, layers, *, in_shape, in_bits: int, rows: int, cols: int, in_signed: bool = False,
                 xnor: bool | None = None, lanes: int = 1):
        check_int("cols", cols, 1, MAX_MAC_ARRAY)
        check_int("rows", rows, 1, MAX_MAC_ARRAY)
        check_int("in_bits", in_bits, 1, 16)
        layers = list(layers)
        if not layers:
            raise ValueError("layers: the network has no layers")
        self.layers, self.rows, self.cols = layers, rows, cols
        self.in_chw, self.in_bits = chw(in_shape), in_bits
        try:
            self.plan = Plan(layers, in_chw=self.in_chw, in_bits=in_bits, rows=rows, cols=cols, in_signed=in_signed,
                             xnor=xnor, lanes=lanes)
        except ValueError:
            self._MustUse__silence = True     # refused: never elaborated, no "unused" warning
            raise
        self.pixels = self.plan.pixels
        self.classes = self.plan.classes
        self.logit_bits = self.plan.logit_bits
        self.mac_cfg = self.plan.mac_cfg
        self.lane_bits = self.plan.lane_bits
        super().__init__({
            "i": In(stream.Signature(unsigned(in_bits))),
            "o": Out(stream.Signature(output_layout(self.classes, self.logit_bits))),
        })

    def schedule(self) -> list[dict]:
        """Per layer: ``name``, ``K``, ``T`` (channel tiles), ``G`` (position groups), ``tiles``,
        ``macs``, ``issue`` and ``cycles`` (its share of ``cycles_per_image``)."""
        return self.plan.schedule()

    @property
    def cycles_per_image(self) -> int:
        """Image period with no stalls (see :class:`~l1bn.hw.accel_plan.Plan`)."""
        return self.plan.cycles_per_image

    @property
    def latency(self) -> int:
        """Cycles from the first pixel's handshake to the output handshake (idle accelerator)."""
        return self.plan.latency

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        C, LB, ALB = p.cols, p.img_lane_bits, p.act_lane_bits
        m.submodules.loader = ld = ImageLoader(in_chw=p.in_chw, in_bits=p.in_bits, cols=C, lane_bits=LB, in_signed=p.in_signed,
                                               img_words=p.img_words, bipolar_code=p.xnor)
        m.submodules.issue = iss = Issuer(p)
        if p.lanes > 1:      # the tree PE: a lanes-wide dot product into each accumulator
            # (lanes 1.. carry stored activations only: act_lane_bits wide, not the pixels' width)
            m.submodules.mac = mac = TreeArray(p.mac_cfg, lanes=p.lanes, narrow_bits=p.tree_narrow_bits)
        else:
            m.submodules.mac = mac = MACArray(p.mac_cfg, switch=p.switch)
        m.submodules.writeback = wb = Writeback(p, addr_bits=iss.addr_bits)
        wiring.connect(m, wiring.flipped(self.i), ld.i)
        wiring.connect(m, iss.o, mac.i)
        wiring.connect(m, mac.o, wb.i)
        wiring.connect(m, wb.o, wiring.flipped(self.o))
        m.d.comb += [
            iss.slot_full.eq(ld.full), ld.release.eq(iss.release),
            iss.done.eq(wb.done), iss.done_layer.eq(wb.done_layer),
            iss.out_taken.eq(self.o.valid & self.o.ready),
        ]
        # per column: an image memory (2 slots) and an activation memory (2 regions), each with
        # one write and one read port, cut into block RAMs read through their output registers;
        # every column reads its own address every cycle
        for j in range(C):
            img = BankedMemory(width=C * LB, depth=2 * p.img_words, write=True, granularity=LB)
            # per-lane write enables only where a layer max-pools (one lane per pooled value)
            # (the tree PE: ``lanes`` channel groups of C lanes per word, written whole)
            gran = ALB if p.pooled and p.lanes == 1 else None
            act = BankedMemory(width=p.lanes * C * ALB, depth=p.act_depth, write=True, granularity=gran)
            m.submodules[f"img{j}"], m.submodules[f"act{j}"] = img, act
            m.d.comb += [
                img.w_addr.eq(ld.wr.addr), img.w_data.eq(ld.wr.data), img.w_en.eq(ld.wr.en),
                act.w_addr.eq(wb.wr.addr), act.w_data.eq(wb.wr.data), act.w_en.eq(wb.wr.en),
                img.r_addr.eq(iss.rd.addr[j]), img.r_en.eq(iss.rd.en), iss.rd.img[j].eq(img.r_data),
                act.r_addr.eq(iss.rd.addr[j]), act.r_en.eq(iss.rd.en), iss.rd.act[j].eq(act.r_data),
            ]
        return m
