"""Adder-tree MAC: a wide dot product over input channels per cycle, one accumulator per output.

Dataflow and why
----------------
:class:`~l1bn.hw.mac_array.MACArray` gives every PE ``(i, j)`` its own accumulator: ``rows x
cols`` accumulators of ``acc_bits`` each, one product added per PE per cycle. Where the outputs of
a layer are few and its reduction is long (CNV's deep convolutions and its linear layers), the
same products are cheaper summed first: each beat carries ``lanes`` input channels, output ``i``
multiplies them with its ``lanes`` weights, an adder tree sums the products (registered every two
adder levels), and one accumulator per output adds the tree's sum. ``rows x lanes`` products per
cycle like a ``rows x lanes`` MACArray, but ``rows`` accumulators instead of ``rows x lanes``, and
the tree's inner adders are narrower than an accumulator.

Binary weights with bipolar activations (``cfg.xnor``) use XNOR and a popcount: the tree adds
1-bit matches, the accumulator counts them, and the output is ``2*count - n`` (``n``: products in
the tile), the same exact sum.

Parameters come in a :class:`~l1bn.spec.config.MACConfig`: ``rows`` outputs, ``cols`` lanes (the
dot product's width per beat), ``k`` the longest reduction in products (sizes the accumulator),
operand widths, signedness and the optional requantizer as for the array.
"""

from __future__ import annotations

import dataclasses

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent, requantize
from l1bn.hw.mac_array import (
    PIPELINE_CYCLES,
    MACArray,
    act_shape,
    out_layout,
    product_halves,
    result_shape,
    weight_shape,
)
from l1bn.spec.config import MACConfig

__all__ = ["MACTree", "tree_in_layout", "tree_out_layout", "tree_levels", "tree_latency", "TreeArray",
           "tree_array_in_layout", "tree_array_stages", "tree_array_pipeline"]


def tree_in_layout(cfg: MACConfig) -> data.StructLayout:
    """Input beat: ``w`` (``rows`` x ``lanes`` weights: ``w[i][l]``), ``a`` (``lanes``
    activations), ``last``."""
    return data.StructLayout({
        "w": data.ArrayLayout(data.ArrayLayout(weight_shape(cfg), cfg.cols), cfg.rows),
        "a": data.ArrayLayout(act_shape(cfg), cfg.cols),
        "last": 1,
    })


def tree_out_layout(cfg: MACConfig) -> data.StructLayout:
    """Output beat: ``y`` (one result per output, ``rows`` of them), ``last`` (always 1: one beat
    per tile)."""
    return data.StructLayout({"y": data.ArrayLayout(result_shape(cfg), cfg.rows), "last": 1})


def tree_levels(cfg: MACConfig) -> int:
    """Register stages of the adder tree: one per two adder levels over the beat's terms (per
    output, ``lanes`` products as two halves each, or one term per lane for 1-bit weights)."""
    terms = cfg.cols * (1 if cfg.wbits == 1 else 2)
    return ((terms - 1).bit_length() + 1) // 2


def tree_latency(cfg: MACConfig) -> int:
    """Cycles from the handshake of a tile's last beat to its output beat being valid: input
    register, products (two registered halves, or the XNOR match), ``tree_levels`` tree stages,
    accumulator and result bank, output register."""
    return 2 + tree_levels(cfg) + 2


class MACTree(CheckedComponent):
    """``rows`` dot products of ``lanes`` (``cfg.cols``) channels per beat, accumulated per tile.

    Attributes
    ----------
    i : In(stream.Signature(tree_in_layout(cfg)))
        One beat per ``lanes`` products of every output: ``w[i][l]`` (raw weights as in
        :func:`~l1bn.hw.mac_array.in_layout`), ``a[l]`` (activations; bipolar codes for
        ``bipolar_a``); ``last`` on a tile's final beat. A tile's reduction is ``lanes`` x its
        beats; a shorter one is padded with zero weights (binary weights have no zero: an XNOR
        tile is a whole number of beats). At most ``cfg.k`` products per tile.
    o : Out(stream.Signature(tree_out_layout(cfg)))
        One beat per tile: ``y[i] = sum_k w[i][k] * a[k]`` (``cfg.acc_bits`` signed), or
        requantized (``out_bits``) with ``cfg.requant``. Held until ``ready``.

    Timing
    ------
    One beat per cycle; the output beat is valid ``tree_latency(cfg)`` cycles after the
    handshake of the tile's last beat. The result bank frees when its beat is taken, so tiles
    of two or more beats stream without stalls while ``o.ready`` is high (``i.ready`` = 0 only
    when a tile ends while the previous result is still held).

    Bit widths
    ----------
    Products ``cfg.product_bits``; the tree grows one bit per level; the accumulator
    ``cfg.acc_bits`` (``k`` products cannot overflow it); XNOR counts ``k.bit_length()`` bits.
    """

    @classmethod
    def _check_args(cls, cfg, *args, **kwargs):
        if not isinstance(cfg, MACConfig):
            raise TypeError(f"cfg={cfg!r} must be a MACConfig")

    def __init__(self, cfg: MACConfig):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(tree_in_layout(cfg))),
            "o": Out(stream.Signature(tree_out_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        R, L = cfg.rows, cfg.cols
        m = Module()
        full, take = Signal(), Signal()
        en = Signal()
        m.d.comb += self.i.ready.eq(en)

        # stage 1: input register
        s1 = Signal(tree_in_layout(cfg))
        v, last = Signal(name="v1"), Signal(name="l1")
        with m.If(en):
            m.d.sync += [v.eq(self.i.valid), last.eq(self.i.payload.last)]
            with m.If(self.i.valid):
                m.d.sync += s1.eq(self.i.payload)

        def stage(name, values, shape_of):
            """Registers ``values`` (with the valid/last bits) as the next stage."""
            nonlocal v, last
            regs = [[Signal(shape_of(x), name=f"{name}_{i}_{n}") for n, x in enumerate(row)]
                    for i, row in enumerate(values)]
            nv, nl = Signal(name=f"v_{name}"), Signal(name=f"l_{name}")
            with m.If(en):
                m.d.sync += [nv.eq(v), nl.eq(last)]
                for rr, row in zip(regs, values, strict=True):
                    m.d.sync += [r.eq(x) for r, x in zip(rr, row, strict=True)]
            v, last = nv, nl
            return regs

        # stage 2: the products (two registered halves each), or the XNOR matches
        if cfg.xnor:
            terms = stage("x", [[~(s1.w[i][n][0] ^ s1.a[n][0]) for n in range(L)] for i in range(R)],
                          lambda x: unsigned(1))
        else:
            halves = [[h for n in range(L) for h in product_halves(cfg, s1.w[i][n], s1.a[n])] for i in range(R)]
            terms = stage("h", halves, lambda x: signed(cfg.product_bits + 1))
        # the adder tree: two levels per register stage
        assert len(terms[0]) == self.cfg.cols * (1 if cfg.wbits == 1 else 2)
        for level in range(tree_levels(cfg)):
            nxt = []
            for row in terms:
                for _ in range(2):
                    row = [row[n] + row[n + 1] if n + 1 < len(row) else row[n] for n in range(0, len(row), 2)]
                nxt.append(row)
            terms = stage(f"t{level}", nxt, lambda x: x.shape())
        sums = [row[0] if len(row) == 1 else sum(row[1:], row[0]) for row in terms]

        # accumulate (one accumulator per output); on the last beat into the result bank
        if cfg.xnor:
            cb = cfg.k.bit_length()
            width = unsigned(cb)
        else:
            width = signed(cfg.acc_bits)
        stall = Signal()
        m.d.comb += [stall.eq(v & last & full & ~take), en.eq(~stall)]
        first = Signal(init=1)
        acc = [Signal(width, name=f"acc{i}") for i in range(R)]
        bank = [Signal(width, name=f"bank{i}") for i in range(R)]
        n, n_bank = Signal(range(cfg.k + L + 1), name="n"), Signal(range(cfg.k + L + 1), name="n_bank")
        with m.If(take):
            m.d.sync += full.eq(0)
        with m.If(en & v):
            m.d.sync += first.eq(last)
            n_nxt = Signal.like(n, name="n_nxt")     # products in the tile so far (XNOR)
            m.d.comb += n_nxt.eq(Mux(first, L, n + L))
            m.d.sync += n.eq(n_nxt)
            for i in range(R):
                nx = Signal(width, name=f"nxt{i}")
                # select after the add: ``first`` reaches each flip-flop through one mux
                m.d.comb += nx.eq(Mux(first, sums[i], acc[i] + sums[i]))
                m.d.sync += acc[i].eq(nx)
                with m.If(last):
                    m.d.sync += bank[i].eq(nx)
            with m.If(last):
                m.d.sync += [full.eq(1), n_bank.eq(n_nxt)]

        # output register: the bank (XNOR: 2*count - n), requantized on the way out
        m.d.comb += take.eq(full & (~self.o.valid | self.o.ready))
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.last.eq(1)]
            for i in range(R):
                y = (Cat(Const(0, 1), bank[i]) - n_bank) if cfg.xnor else bank[i]
                if cfg.requant:
                    y = requantize(y.as_signed() if cfg.xnor else y, shift=cfg.shift, out_bits=cfg.out_bits,
                                   relu=cfg.relu)
                m.d.sync += self.o.payload.y[i].eq(y)
        return m



def tree_array_in_layout(cfg: MACConfig, lanes: int) -> data.StructLayout:
    """:class:`TreeArray`'s input beat: ``w`` (``rows`` x ``lanes`` weights: ``w[i][d]``), ``a``
    (``cols`` x ``lanes`` activations: ``a[j][d]``), ``last``."""
    return data.StructLayout({
        "w": data.ArrayLayout(data.ArrayLayout(weight_shape(cfg), lanes), cfg.rows),
        "a": data.ArrayLayout(data.ArrayLayout(act_shape(cfg), lanes), cfg.cols),
        "last": 1,
    })


def tree_array_stages(cfg: MACConfig, lanes: int) -> int:
    """Register stages from the registered partial products to the registered dot product: one
    per two adder levels over ``lanes`` products' terms (two halves each, one for 1-bit weights),
    at least one (the MAC array's product register)."""
    terms = lanes * (1 if cfg.wbits == 1 else 2)
    return max(1, ((terms - 1).bit_length() + 1) // 2)


def tree_array_pipeline(cfg: MACConfig, lanes: int) -> int:
    """:class:`TreeArray`'s cycles from a tile's last input handshake to its first result row:
    input register, partial products, :func:`tree_array_stages`, accumulator and result bank,
    output register (``PIPELINE_CYCLES - 1 + stages``: 5 for one lane, the MAC array's)."""
    return PIPELINE_CYCLES - 1 + tree_array_stages(cfg, lanes)


class TreeArray(MACArray):
    """A ``rows x cols`` array whose PE ``(i, j)`` adds a ``lanes``-wide dot product per beat
    (an adder tree) into its one accumulator: ``rows x cols x lanes`` products per cycle with
    ``rows x cols`` accumulators.

    Parameters
    ----------
    cfg : MACConfig
        As :class:`~l1bn.hw.mac_array.MACArray` (product path only: not ``xnor``); ``k`` is the
        longest reduction in products (it sizes the accumulator).
    lanes : int, >= 1
        Products per PE per beat (the tree's width).
    narrow_bits : int or None
        Activation bits of lanes ``1 .. lanes-1`` (``None``: ``cfg.abits``, every lane as wide as
        lane 0). The accelerator's first layer reads the wide pixels in lane 0 only; the other
        lanes carry stored activations, often much narrower (2 bits for CNV against 9): their
        products, partial-sum registers and adders are sized for ``narrow_bits`` (the value in a
        beat's ``a[j][d]`` must then be the sign- or zero-extension of its low ``narrow_bits``).

    Attributes
    ----------
    i : In(stream.Signature(tree_array_in_layout(cfg, lanes)))
        One beat per ``lanes`` reduction steps: PE ``(i, j)`` adds
        ``sum_d w[i][d] * a[j][d]``; ``last`` on a tile's final beat.
    o : Out(stream.Signature(out_layout(cfg)))
        As :class:`~l1bn.hw.mac_array.MACArray`: one result row per beat, ``rows`` per tile.

    Timing
    ------
    As the MAC array with :func:`tree_array_pipeline` in place of ``PIPELINE_CYCLES``: a tile of
    ``B`` beats takes ``max(B, rows + 1)`` cycles in a stream. Bit widths: the tree grows one
    bit per adder level from ``product_bits + 1``; the accumulator is ``cfg.acc_bits``.
    """

    @classmethod
    def _check_args(cls, cfg, *args, lanes: int = 1, narrow_bits: int | None = None, **kwargs):
        if not isinstance(cfg, MACConfig):
            raise TypeError(f"cfg={cfg!r} must be a MACConfig")
        if cfg.xnor:
            raise ValueError("TreeArray: the product path only (cfg.xnor must be False)")
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"lanes={lanes!r} must be an int >= 1")
        if narrow_bits is not None and (not isinstance(narrow_bits, int) or isinstance(narrow_bits, bool)
                                        or not 1 <= narrow_bits <= cfg.abits or cfg.bipolar_a):
            raise ValueError(f"narrow_bits={narrow_bits!r} must be an int in 1..abits={cfg.abits} "
                             "(not with bipolar codes)")

    def __init__(self, cfg: MACConfig, *, lanes: int, narrow_bits: int | None = None):
        self.cfg, self.switch, self.lanes = cfg, False, lanes
        #: the configuration of lanes 1.. (narrower activations)
        self.narrow_cfg = cfg if narrow_bits in (None, cfg.abits) else dataclasses.replace(cfg, abits=narrow_bits)
        wiring.Component.__init__(self, {
            "i": In(stream.Signature(tree_array_in_layout(cfg, lanes))),
            "o": Out(stream.Signature(out_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg, D = self.cfg, self.lanes
        R, C = cfg.rows, cfg.cols
        m = Module()
        full = Signal()
        stalls = [Signal(name=f"stall{i}", attrs={"keep": 1}) for i in range(R + 1)]
        en = Signal()
        m.d.comb += [en.eq(~stalls[R]), self.i.ready.eq(en)]
        self._en, self._en_rows = en, [~s for s in stalls[:R]]
        self.probes = {}

        # stage 1: input register
        s1 = Signal(tree_array_in_layout(cfg, D))
        v, last = Signal(name="v1"), Signal(name="l1")
        with m.If(en):
            m.d.sync += [v.eq(self.i.valid), last.eq(self.i.payload.last)]
            with m.If(self.i.valid):
                m.d.sync += s1.eq(self.i.payload)

        def valid_stage(name):
            nonlocal v, last
            nv, nl = Signal(name=f"v_{name}"), Signal(name=f"l_{name}")
            with m.If(en):
                m.d.sync += [nv.eq(v), nl.eq(last)]
            v, last = nv, nl

        # stage 2: every lane's partial products (two registered halves, or the sign select);
        # lanes 1.. at their narrower width
        nc = self.narrow_cfg
        terms = [[None] * C for _ in range(R)]
        for i in range(R):
            for j in range(C):
                hs = [(product_halves(cfg, s1.w[i][d], s1.a[j][d]) if d == 0 else
                       product_halves(nc, s1.w[i][d], s1.a[j][d][:nc.abits])) for d in range(D)]
                widths = [(cfg if d == 0 else nc).product_bits + 1 for d in range(D) for _ in hs[d]]
                hs = [h for hd in hs for h in hd]
                regs = [Signal(signed(b), name=f"h{i}_{j}_{n}") for n, b in enumerate(widths)]
                with m.If(self._en_rows[i]):
                    m.d.sync += [r.eq(h) for r, h in zip(regs, hs, strict=True)]
                terms[i][j] = regs
        valid_stage("h")
        # the adder tree: two levels per register stage, the last stage's register is the product
        for st in range(tree_array_stages(cfg, D)):
            for i in range(R):
                for j in range(C):
                    row = terms[i][j]
                    for _ in range(2):
                        row = [row[n] + row[n + 1] if n + 1 < len(row) else row[n] for n in range(0, len(row), 2)]
                    regs = [Signal(x.shape(), name=f"t{st}_{i}_{j}_{n}") for n, x in enumerate(row)]
                    with m.If(self._en_rows[i]):
                        m.d.sync += [r.eq(x) for r, x in zip(regs, row, strict=True)]
                    terms[i][j] = regs
            pre_v, pre_l = v, last      # the stage before the product (the stall's next value)
            valid_stage(f"t{st}")
        assert all(len(terms[i][j]) == 1 for i in range(R) for j in range(C))
        v2, l2 = v, last
        load_bank = Signal(name="load_bank")
        m.d.comb += load_bank.eq(en & v2 & l2)

        # accumulate; on the last beat move the sums to the result bank
        _, _, bank = self._accumulate(m, [[terms[i][j][0] for j in range(C)] for i in range(R)], en, v2, l2)
        freed = self._drain(m, bank, None, full, load_bank)
        self._stall_next(m, stalls, en, (pre_v, pre_l, v2, l2), full, load_bank, freed)
        return m
