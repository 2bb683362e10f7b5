"""How a network is laid out on the accelerator: array shape, memory maps, schedule and cycles.

Plain Python (no hardware is built here): the generator (:mod:`l1bn.hw.accelerator`) builds its ROMs and counter
limits from a :class:`Plan`, and the benches, the CLI and the docs quote its cycle formulas.

Mapping
-------
Every layer runs on one ``rows x cols`` MAC array (:mod:`l1bn.hw.mac_array`): ``rows`` output
channels (weights broadcast along a row) by ``cols`` output positions (activations broadcast down a
column). A layer with ``O`` channels, ``P = Ho*Wo`` positions and reduction ``K = C*kh*kw`` takes
``T = ceil(O / rows)`` channel tiles by ``G = ceil(P / cols)`` position groups, ``K`` beats each.
The array shape is a generator parameter: :func:`best_geometry` picks, for a MAC budget, the shape
with the fewest cycles per image (for the digits CNN and 32 MACs, 8 x 4: conv3's 4 positions
fill all 4 columns, where 4 x 8 left half of them idle).

Binary x bipolar layers (:func:`xnor_layer`) run on the XNOR-popcount datapath: the whole array
is the XNOR-popcount one when every layer is such a layer (unpooled), otherwise the product array
switches to its XNOR path on those layers' tiles (:attr:`Plan.switch`); the cycles are the same.

Memories
--------
- weight ROM: word ``woff_L + t*K + k`` holds the ``rows`` weights of tile ``t``, step ``k``
  (:func:`weight_word_layout`; packed for this array's ``rows``, whatever the export's ``hex_rows``);
- mult/bias ROM: one word per (padded) output channel, layers one after another;
- im2col table, one per column: ``(valid, word offset, lane)`` per ``(layer, g, ky, kx)``;
- image memory, one per column: two image slots (``2 * img_words`` words), so the next image loads
  while the current one is computed;
- activation memory, one per column: a chain uses two regions, layer ``L`` writes region
  ``L % 2`` and layer ``L + 1`` reads it; a graph (residual adds) places each tensor where it
  overlaps no tensor live at the same time, an add's two inputs one after the other
  (:func:`place_tensors`). Channel ``c``, position ``q`` of a stored tensor is word
  ``base + c*G + q // cols``, lane ``q % cols``.

Cycles
------
With input valid every cycle and output always ready (see :meth:`Plan.cycles_per_image`)::

    issue(L)  = (T*G - 1) * max(K, rows + 1) + K        beats of layer L into the array
    gap(L)    = issue(L) + rows + layer_drain           layer L start -> layer L+1 start
    period    = sum_{L < last} gap(L) + issue(last) + max(0, rows + 1 - K_0)
    latency   = pixels + START + sum_{L < last} gap(L) + issue(last) + rows + TAIL + argmax_stages

The last layer of an image drains while layer 0 of the next image streams in: consecutive images
have no idle array cycles between them (the ``max(0, rows + 1 - K_0)`` is the array's own stall
when layer 0's first tile is shorter than the previous tile's drain).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from amaranth import signed, unsigned
from amaranth.lib import data
from l1bn.hw.accel_layers import AccelLayer, bits_for, cdiv
from l1bn.hw.arith import mul_latency
from l1bn.hw.mac_array import PIPELINE_CYCLES, tile_period
from l1bn.hw.mac_tree import tree_array_pipeline
from l1bn.spec.config import MAX_MAC_ARRAY, MACConfig, signed_bits

__all__ = ["Plan", "LayerPlan", "best_geometry", "xnor_layer", "weight_word_layout", "tree_weight_word_layout", "mb_word_layout", "table_entry_layout",
           "ISSUE_STAGES", "START", "TAIL", "DEFAULT_MACS"]

#: MAC budget of the default array shape (4 x 8 before issue 14, 8 x 4 now for the digits CNN).
DEFAULT_MACS = 32
#: issue pipeline: counters -> im2col table -> entry register -> address -> memory -> word register
#: -> lane select
ISSUE_STAGES = 6
#: image load (``pixels`` cycles) -> first beat of layer 0: the registered write, the slot-full
#: flag, then the start
START = 2
#: last beat of the last layer -> output handshake, beyond the array's ``rows``: issue stages,
#: the array's pipeline, the logits register, the output register
TAIL = ISSUE_STAGES + PIPELINE_CYCLES


def tree_weight_word_layout(rows: int, lanes: int, w_bits: int) -> data.ArrayLayout:
    """One weight ROM word of the tree PE: ``rows`` x ``lanes`` signed ``w_bits``-bit weights,
    element ``[r][d]`` (row-major: the tree array's ``w`` field)."""
    return data.ArrayLayout(data.ArrayLayout(signed(w_bits), lanes), rows)


def weight_word_layout(rows: int, w_bits: int) -> data.ArrayLayout:
    """One weight ROM word: the ``rows`` signed ``w_bits``-bit weights of one reduction step of a
    channel tile, row ``r`` in bits ``[r*w_bits, (r+1)*w_bits)``."""
    return data.ArrayLayout(signed(w_bits), rows)


def mb_word_layout(mult_bits: int, bias_bits: int) -> data.StructLayout:
    """One mult/bias ROM word: the folded-BN multiplier (low bits) and bias of one channel."""
    return data.StructLayout({"mult": signed(mult_bits), "bias": signed(bias_bits)})


def table_entry_layout(off_bits: int, lane_bits: int) -> data.StructLayout:
    """One im2col table entry: ``valid`` (0: padding or past the tensor, the operand is 0), the
    word offset of the pixel in its tensor, and the column (lane) that holds it."""
    return data.StructLayout({"valid": unsigned(1), "off": unsigned(off_bits), "lane": unsigned(lane_bits)})


def _word(layout, value) -> int:
    """The bits of a layout constant as an unsigned integer (a memory's init word)."""
    return layout.const(value).as_bits()


@dataclass(frozen=True)
class LayerPlan:
    """One layer's place on the array and in the memories (all plain integers)."""

    name: str
    k: int              #: reduction length C*kh*kw (beats per tile)
    khkw: int
    cin: int
    channels: int       #: O
    t: int              #: channel tiles ceil(O / rows)
    g: int              #: output position groups ceil(Ho*Wo / cols)
    g_in: int           #: position groups of the input tensor
    g_out: int          #: position groups of the stored output (``g``, or the pooled tensor's)
    pool_cols: int      #: max pool: the columns of one window (kh*kw); 0: no pooling
    woff: int           #: first weight word
    toff: int           #: first im2col table entry
    moff: int           #: first mult/bias word
    in_base: int        #: activation-memory word of the input (-1: the image memory)
    out_base: int       #: activation-memory word of the output (-1: the logits)
    period: int         #: array cycles per tile, max(K, rows + 1)
    shift: int | None
    out_bits: int | None
    macs: int           #: useful multiply-accumulates
    xnor: bool = False  #: runs on the XNOR-popcount path (:attr:`Plan.xnor_layers`)
    lanes: int = 1      #: input channels per beat (the tree PE's width; 1: the MAC array)
    last_lanes: int = 1  #: input channels in the last channel group (``cin`` counts groups)

    @property
    def tiles(self) -> int:
        return self.t * self.g

    @property
    def issue(self) -> int:
        """Cycles from the layer's first beat into the array to its last (no input gaps)."""
        return (self.tiles - 1) * self.period + self.k


def _groups(chw, cols: int) -> int:
    return cdiv(chw[1] * chw[2], cols)


class Plan:
    """The accelerator's layout of ``layers`` on a ``rows x cols`` array.

    Parameters
    ----------
    layers : list of AccelLayer
    in_chw : (C, H, W) of the image; in_bits : pixel bits
    in_signed : the pixels are two's complement (signed or bipolar images)
    rows, cols : the MAC array shape (1..MAX_MAC_ARRAY each)
    lanes : the processing element: 1 (default) the MAC array's, one product per PE per cycle;
    ``lanes > 1`` the tree PE (:class:`~l1bn.hw.mac_tree.TreeArray`), a dot product of
    ``lanes`` input channels per PE per cycle into one accumulator. Every layer but the first
    (which reads the image memory, one channel per word) then takes ``lanes`` channels per beat:
    its ``K`` is ``ceil(C / lanes) * kh * kw`` beats; a stored tensor keeps ``lanes`` channels
    side by side in one word (``lanes x cols`` lanes: channel ``c``, position ``q`` in word
    ``base + (c // lanes)*G + q // cols``, lane ``(c % lanes)*cols + q % cols``). Needs ``rows``
    a multiple of ``lanes``, a chain network, and runs every layer on the product path.
    xnor : the XNOR-popcount path: None (default) on every layer that allows it
    (:func:`xnor_layer`): the XNOR-popcount array when every layer does (:attr:`xnor`), else the
    product array with per-tile XNOR for those layers (:attr:`switch`); False never (the product
    array); True: the XNOR-popcount array, required (``ValueError`` when a layer does not allow it)

    Attributes
    ----------
    mac_cfg : MACConfig of the array (widest weights/activations, longest K)
    xnor : the array is the XNOR-popcount one (every layer binary x bipolar, unpadded, unpooled)
    switch : the product array switches to its XNOR path per layer
    (``MACArray(mac_cfg, switch=True)``), on the layers of :attr:`xnor_layers`
    xnor_layers : per layer, whether it runs on the XNOR path (all, with :attr:`xnor`)
    img_lane_bits, act_lane_bits : bits of one stored pixel (image memory), of one stored
    requantized output (activation memory: as narrow as the widest output, so a binary or 2-bit
    network's activations take 2 bits, not the 8-bit pixels' width)
    lane_bits : the wider of the two
    img_words, act_depth : image slot size, activation memory depth
    bases : activation-memory word of each stored tensor (:func:`place_tensors`)
    weight_words : weight ROM words (ints, :func:`weight_word_layout`)
    mb_words : ``(mult, bias)`` per padded channel; ``mb_rom`` those words packed
    (:func:`mb_word_layout`)
    tables : per column, list of entries ``None`` (zero: padding or past the tensor) or
    ``(word offset, lane)``; ``table_rom(j)`` column ``j``'s entries packed
    (:func:`table_entry_layout`)
    layers : list of LayerPlan
    """

    def __init__(self, layers, *, in_chw, in_bits: int, rows: int, cols: int, in_signed: bool = False,
                 xnor: bool | None = None, lanes: int = 1):
        layers = list(layers)
        if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= MAX_MAC_ARRAY:
            raise ValueError(f"lanes={lanes!r} must be an int in 1..{MAX_MAC_ARRAY}")
        #: input channels per beat (1: the MAC array; more: the tree PE)
        self.lanes = lanes
        if lanes > 1:
            if rows % lanes:
                raise ValueError(f"the tree PE with {lanes} lanes needs rows a multiple of {lanes}; rows={rows}")
            if xnor:
                raise ValueError("xnor=True: the tree PE runs every layer on the product path")
            xnor = False
            if not all(_reads(layers, i) == (_writes(layers, i - 1),) for i in range(1, len(layers))):
                raise ValueError("the tree PE takes chain networks only (each layer reads the previous "
                                 "one's output): residual adds are not supported with pe='tree' yet")
        self.rows, self.cols, self.in_chw, self.in_bits = rows, cols, tuple(in_chw), in_bits
        self.in_signed = bool(in_signed)
        self.pixels = math.prod(self.in_chw)
        self.classes = layers[-1].channels
        self.logit_bits = layers[-1].logit_bits or layers[-1].acc_bits
        #: two's complement activations somewhere (signed, narrow or bipolar): every stored value is
        #: then two's complement ``lane_bits`` wide and the array's activations are signed
        self.signed_acts = self.in_signed or any(lay.a_signed for lay in layers)
        sb = int(self.signed_acts)
        #: some requantizer is not the chain rule (half up, ReLU, full unsigned range): the
        #: writeback then applies each layer's (shift, lo, hi, rounding, bipolar) rule
        self.general_rules = self.signed_acts or any(lay.mult is not None and lay.out_lo is not None
                                                     for lay in layers)
        wbits = max(lay.w_bits for lay in layers)
        abits = max(lay.a_bits + (sb and not lay.a_signed) for lay in layers)
        #: every layer multiplies binary weights by bipolar activations (no padding, no pooling:
        #: the XNOR datapath has no zero operand): the array is the XNOR-popcount one
        #: (``MACConfig(xnor=True)``) and every stored value, pixels included, is the 1-bit
        #: bipolar code (1 = -1)
        ok = [xnor_layer(lay) for lay in layers]
        can_xnor = all(o and lay.w_bits == 1 and lay.pool is None for o, lay in zip(ok, layers, strict=True))
        if xnor not in (None, True, False):
            raise ValueError(f"xnor={xnor!r} must be None (on every layer that allows it), True or False")
        if xnor and not can_xnor:
            raise ValueError("xnor=True: the XNOR-popcount array needs every layer binary x bipolar, "
                             "without padding or pooling")
        self.xnor = can_xnor if xnor is None else xnor
        #: some layers only are binary x bipolar (or pooled ones): the product array keeps the
        #: stored values as two's complement and runs those layers' tiles on its XNOR path
        self.switch = xnor is None and not self.xnor and any(ok)
        self.xnor_layers = tuple(self.xnor or (self.switch and o) for o in ok)
        if self.xnor:
            self.mac_cfg = MACConfig(rows=rows, cols=cols, wbits=1, abits=1, signed_w=True, signed_a=True,
                                     bipolar_a=True, xnor=True, k=max(lay.k for lay in layers))
            self.img_lane_bits = self.act_lane_bits = 1
        else:
            self.mac_cfg = MACConfig(rows=rows, cols=cols, wbits=wbits, abits=abits, signed_w=True,
                                     signed_a=self.signed_acts, k=max(lay.k for lay in layers))
            outs = [signed_bits(*lay.out_range) if self.signed_acts else lay.out_bits for lay in layers[:-1]]
            self.img_lane_bits = in_bits + (sb and not self.in_signed)
            self.act_lane_bits = max(outs, default=1)
        self.lane_bits = max(self.img_lane_bits, self.act_lane_bits)
        self.img_words = self.in_chw[0] * _groups(self.in_chw, cols)

        #: activation-memory word of each stored tensor (layer outputs; :func:`place_tensors`)
        self.bases, self.act_depth = place_tensors(layers, cols, lanes=lanes)

        for lay in layers:
            if lay.pool is not None and lay.pool[0] * lay.pool[1] > cols:
                raise ValueError(f"layer {lay.name}: its {lay.pool[0]}x{lay.pool[1]} max pool needs cols >= "
                                 f"{lay.pool[0] * lay.pool[1]} (one window per output group); cols={cols}")
        #: some layer max-pools on the fly: the activation memories get one write enable per lane
        self.pooled = any(lay.pool is not None for lay in layers)
        self.mb_words, plans, nwords = [], [], 0
        self._wlayers, self._wbits = layers, wbits
        self.tables = [[] for _ in range(cols)]
        for i, lay in enumerate(layers):
            last = i == len(layers) - 1
            woff, toff, moff = nwords, len(self.tables[0]), len(self.mb_words)
            ln = 1 if i == 0 else lanes        # layer 0 reads the image memory: one channel per word
            groups = cdiv(lay.in_chw[0], ln)
            beats = groups * lay.kernel[0] * lay.kernel[1] if lanes > 1 else lay.k
            nwords += cdiv(lay.channels, rows) * beats
            self._add_table(lay)
            nt = cdiv(lay.channels, rows)
            pad = nt * rows - lay.channels
            if not last:
                self.mb_words += list(zip(lay.mult, lay.bias, strict=True)) + [(0, 0)] * pad
            elif lay.logit_bias is not None:     # the classifier bias: (unused mult, bias) words
                self.mb_words += [(0, b) for b in lay.logit_bias] + [(0, 0)] * pad
            plans.append(LayerPlan(
                name=lay.name, k=beats, khkw=lay.kernel[0] * lay.kernel[1], cin=groups,
                channels=lay.channels, t=nt, g=lay.positions if lay.pool else _groups(lay.out_chw, cols),
                g_in=_groups(lay.in_chw, cols), g_out=_groups(lay.out_chw, cols),
                pool_cols=lay.pool[0] * lay.pool[1] if lay.pool else 0,
                woff=woff, toff=toff, moff=moff,
                in_base=-1 if i == 0 else self.bases[_reads(layers, i)[0]],
                out_base=-1 if last else self.bases[_writes(layers, i)],
                period=tile_period(self.mac_cfg, beats), shift=lay.shift, out_bits=lay.out_bits,
                macs=lay.channels * (math.prod(lay.conv_chw[1:]) if lay.pool else lay.positions) * lay.k,
                xnor=self.xnor_layers[i], lanes=ln, last_lanes=lay.in_chw[0] - (groups - 1) * ln))
        self.layers = plans
        #: the AccelLayers themselves (the writeback's requantizer rules)
        self.layer_specs = layers
        self.mult_bits = max([lay.mult_bits for lay in layers[:-1]], default=2)
        self.bias_bits = max([lay.bias_bits for lay in layers[:-1]], default=2)
        self.logit_bias = layers[-1].logit_bias is not None
        if self.logit_bias:
            self.bias_bits = max(self.bias_bits, signed_bits(min(min(layers[-1].logit_bias), 0),
                                                             max(max(layers[-1].logit_bias), 0)))
        #: cycles of the requantizer's multiply (registered MULT18X18D-sized parts and their sum)
        self.mul_stages = mul_latency(signed(self.mac_cfg.acc_bits), signed(self.mult_bits))
        #: row handshake -> memory write: accumulator register, product, + bias, rounding shift,
        #: clamp
        self.wb_stages = 4 + self.mul_stages
        #: the tree PE: activation bits of lanes 1.. (they carry stored activations only; layer 0
        #: reads the image in lane 0)
        self.tree_narrow_bits = min(self.act_lane_bits, self.mac_cfg.abits) if lanes > 1 else None
        #: the array's cycles from a tile's last beat to its first result row
        self.pipeline = PIPELINE_CYCLES if lanes == 1 else tree_array_pipeline(self.mac_cfg, lanes)

    @functools.cached_property
    def weight_words(self) -> list[int]:
        """The weight ROM, layers one after another: word ``woff + t*K + k`` of a layer holds
        ``W[t*rows + r][k]`` in element ``r`` of :func:`weight_word_layout` (0 past ``O``).
        Built on first use (the shape search of :func:`best_geometry` needs only the counts)."""
        if self.lanes > 1:
            return self._tree_weight_words()
        layout, rows, words = weight_word_layout(self.rows, self._wbits), self.rows, []
        for lay in self._wlayers:
            w = lay.weights
            for t in range(cdiv(lay.channels, rows)):
                tile = [w[o] for o in range(t * rows, min((t + 1) * rows, lay.channels))]
                if self._wbits == 1:    # binary weights only: the code (0 -> +1, 1 -> -1) as signed(1)
                    tile = [[-1 if v < 0 else 0 for v in row] for row in tile]
                pad = [0] * (rows - len(tile))
                words += [_word(layout, [row[k] for row in tile] + pad) for k in range(lay.k)]
        return words

    def _tree_weight_words(self) -> list[int]:
        """The tree PE's weight ROM: word ``woff + t*K + b`` (beat ``b = cg*kh*kw + tap``) holds
        ``W[t*rows + r][(cg*lanes + d)*kh*kw + tap]`` in element ``[r][d]`` of
        :func:`tree_weight_word_layout` (0 past ``O`` or the input channels; binary weights:
        their code, lanes past the channels are masked by the issuer instead)."""
        layout = tree_weight_word_layout(self.rows, self.lanes, self._wbits)
        rows, words = self.rows, []
        for lay, lp in zip(self._wlayers, self.layers, strict=True):
            w, khkw, cin = lay.weights, lp.khkw, lay.in_chw[0]
            for t in range(lp.t):
                for b in range(lp.k):
                    cg, tap = divmod(b, khkw)
                    word = []
                    for r in range(rows):
                        o = t * rows + r
                        lane = []
                        for d in range(self.lanes):
                            c = cg * lp.lanes + d
                            v = w[o][c * khkw + tap] if o < lay.channels and d < lp.lanes and c < cin else 0
                            lane.append((-1 if v < 0 else 0) if self._wbits == 1 else v)
                        word.append(lane)
                    words.append(_word(layout, word))
        return words

    @property
    def mb_rom(self) -> list[int]:
        """The mult/bias ROM words (at least one): ``mb_words`` packed by :func:`mb_word_layout`."""
        layout = mb_word_layout(self.mult_bits, self.bias_bits)
        return [_word(layout, {"mult": m, "bias": b}) for m, b in self.mb_words] or [0]

    def table_rom(self, j: int) -> list[int]:
        """Column ``j``'s im2col table words: ``tables[j]`` packed by :func:`table_entry_layout`."""
        layout = table_entry_layout(self.table_off_bits, self.lane_sel_bits)
        return [0 if e is None else _word(layout, {"valid": 1, "off": e[0], "lane": e[1]})
                for e in self.tables[j]]

    def _add_table(self, lay: AccelLayer) -> None:
        cols = self.cols
        _, hi, wi = lay.in_chw
        _, ho, wo = lay.out_chw
        kh, kw = lay.kernel
        if lay.pool is not None:
            self._add_pool_table(lay)
            return
        for g in range(_groups(lay.out_chw, cols)):
            for ky in range(kh):
                for kx in range(kw):
                    for j in range(cols):
                        q = g * cols + j
                        entry = None
                        if q < ho * wo:
                            oy, ox = divmod(q, wo)
                            iy = oy * lay.stride + ky - lay.padding
                            ix = ox * lay.stride + kx - lay.padding
                            if 0 <= iy < hi and 0 <= ix < wi:
                                entry = divmod(iy * wi + ix, cols)
                        self.tables[j].append(entry)

    def _add_pool_table(self, lay: AccelLayer) -> None:
        """A convolution followed by a max pool: group ``g`` is pooled position ``g``; column
        ``dy*pw + dx`` computes the convolution at window offset (dy, dx); columns past the window
        read zeros (their results are not used)."""
        _, hi, wi = lay.in_chw
        _, _, pwo = lay.out_chw
        kh, kw = lay.kernel
        ph, pw, ps = lay.pool
        _, ch, cw = lay.conv_chw
        pp = lay.pool_pad
        for g in range(lay.positions):
            py, px = divmod(g, pwo)
            for ky in range(kh):
                for kx in range(kw):
                    for j in range(self.cols):
                        entry = None
                        if j < ph * pw:
                            # a padded window position computes the nearest one inside the map
                            # (also in the window): a repeated value never changes the maximum
                            oy = min(max(py * ps - pp + j // pw, 0), ch - 1)
                            ox = min(max(px * ps - pp + j % pw, 0), cw - 1)
                            iy = oy * lay.stride + ky - lay.padding
                            ix = ox * lay.stride + kx - lay.padding
                            if 0 <= iy < hi and 0 <= ix < wi:
                                entry = divmod(iy * wi + ix, self.cols)
                        self.tables[j].append(entry)

    # ------------------------------------------------------------------ cycles

    @property
    def layer_drain(self) -> int:
        """Last beat of a layer -> first beat of the next, beyond the array's ``rows``: issue
        stages, the array's pipeline (:attr:`pipeline`), the writeback stages, the done pulse and
        the restart (the next layer reads what this one wrote, so it waits for the last write)."""
        return ISSUE_STAGES + self.pipeline - 1 + self.wb_stages + 2

    def gap(self, lp: LayerPlan) -> int:
        """Cycles from a layer's first beat to the next layer's first beat (same image)."""
        return lp.issue + self.rows + self.layer_drain

    @property
    def cycles_per_image(self) -> int:
        """Image period with input valid every cycle and output always ready: output handshake
        to output handshake, the sum of :meth:`schedule`'s ``cycles``. Layer 0 of the next image
        starts as the last layer's final beat goes in, so the last layer's drain is hidden."""
        return sum(s["cycles"] for s in self.schedule())

    @property
    def latency(self) -> int:
        """Cycles from an image's first pixel handshake to its output handshake, when it enters an
        idle accelerator."""
        return (self.pixels + START + sum(self.gap(lp) for lp in self.layers[:-1])
                + self.layers[-1].issue + self.rows + ISSUE_STAGES + self.pipeline + self.argmax_stages)

    @property
    def argmax_stages(self) -> int:
        """Cycles of the writeback's argmax tree after the last logit: 2 per level (compare,
        select), ``2 * ceil(log2(classes))``."""
        return 2 * (self.classes - 1).bit_length()

    @property
    def macs(self) -> int:
        return sum(lp.macs for lp in self.layers)

    @property
    def mac_bound(self) -> int:
        """Cycles per image if every MAC of the array did useful work every cycle (the tree PE:
        ``rows x cols x lanes`` MACs)."""
        return cdiv(self.macs, self.rows * self.cols * self.lanes)

    def schedule(self) -> list[dict]:
        """Per layer: ``name``, ``K``, ``T``, ``G``, ``tiles``, ``macs``, ``issue`` (beats into the
        array), ``xnor`` (on the XNOR-popcount path) and ``cycles`` (its share of the image period: ``gap`` for all but the last layer,
        ``issue`` for the last)."""
        out = []
        for i, lp in enumerate(self.layers):
            last = i == len(self.layers) - 1
            cyc = lp.issue if last else self.gap(lp)
            if i == 0:
                cyc += lp.period - lp.k
            out.append({"name": lp.name, "K": lp.k, "T": lp.t, "G": lp.g, "tiles": lp.tiles,
                        "issue": lp.issue, "cycles": cyc, "macs": lp.macs, "xnor": lp.xnor})
        return out

    # ------------------------------------------------------------------ widths

    @property
    def table_off_bits(self) -> int:
        return bits_for(1 + max([e[0] for t in self.tables for e in t if e is not None], default=0))

    @property
    def lane_sel_bits(self) -> int:
        return bits_for(self.cols)


def xnor_layer(lay: AccelLayer) -> bool:
    """Whether a layer can run on the XNOR-popcount path: every weight is -1 or +1, its input is
    bipolar, and it has no padding (a padded operand is 0, which has no code). The product of
    two -1/+1 values is +1 exactly when their sign bits agree."""
    return (lay.a_bipolar and lay.padding == 0
            and all(v in (-1, 1) for row in lay.weights for v in row))


def _reads(layers, i: int) -> tuple:
    """The tensors layer ``i`` reads (a chain's layer: the previous layer's output)."""
    return layers[i].inputs or (_writes(layers, i - 1),)


def _writes(layers, i: int) -> str:
    return layers[i].output or f"#{i}"


def place_tensors(layers, cols: int, *, lanes: int = 1) -> tuple[dict, int]:
    """Activation-memory words of the tensors the layers write: ``({tensor: base word}, depth)``.

    A tensor of ``C`` channels, ``H x W`` positions takes ``C * ceil(H*W / cols)`` words; it is
    live from the start of the layer that writes it to the end of its last reader. A chain (each
    layer reads the previous one's output) uses two regions, layer ``L`` writing region ``L % 2``,
    each sized for its largest tensor. Otherwise every tensor gets the lowest base where it
    overlaps no tensor live at the same time (first fit, in the order they are written), and the
    two inputs of a two-input layer (an add) are placed as one block, the first then the second,
    so that the layer reads them as one tensor of ``2C`` channels. With ``lanes`` channels per
    word (the tree PE) a tensor takes ``ceil(C / lanes) * ceil(H*W / cols)`` words.
    """
    n = len(layers)
    size = {_writes(layers, i): cdiv(layers[i].channels, lanes) * _groups(layers[i].out_chw, cols)
            for i in range(n - 1)}
    chain = all(_reads(layers, i) == (_writes(layers, i - 1),) for i in range(1, n))
    if chain:
        depth = [0, 0]
        for i in range(n - 1):
            depth[i % 2] = max(depth[i % 2], size[_writes(layers, i)])
        return {_writes(layers, i): (0, depth[0])[i % 2] for i in range(n - 1)}, max(1, depth[0] + depth[1])
    made = {_writes(layers, i): i for i in range(n - 1)}
    end = dict(made)
    for i in range(n):
        for t in _reads(layers, i):
            if t in end:
                end[t] = max(end[t], i)
    # blocks: the inputs of a two-input layer together, every other tensor alone
    block_of = {t: (t,) for t in made}
    for i in range(n):
        ins = _reads(layers, i)
        if len(ins) == 2:
            for t in ins:
                if t not in made:
                    raise ValueError(f"layer {layers[i].name}: input {t} is not an activation tensor")
            block_of[ins[0]] = block_of[ins[1]] = ins
    blocks = sorted(set(block_of.values()), key=lambda b: min(made[t] for t in b))
    placed = []          # (base, words, first layer, last layer)
    bases = {}
    for b in blocks:
        words = sum(size[t] for t in b)
        lo, hi = min(made[t] for t in b), max(end[t] for t in b)
        live = [(a, a + w) for a, w, f, e in placed if f <= hi and lo <= e]
        base = min(a for a in [0] + [e for _, e in live]
                   if all(a + words <= s or a >= e for s, e in live))
        placed.append((base, words, lo, hi))
        off = base
        for t in b:
            bases[t] = off
            off += size[t]
    return bases, max([1] + [a + w for a, w, _, _ in placed])


def best_geometry(layers, *, in_chw, in_bits: int, macs: int = DEFAULT_MACS,
                  in_signed: bool = False, lanes: int = 1) -> tuple[int, int]:
    """The ``(rows, cols)`` with ``rows * cols == macs`` and the fewest cycles per image (ties:
    fewer columns, i.e. fewer replicated activation memories)."""
    best = None
    for rows in range(1, macs + 1):
        if macs % rows or rows > MAX_MAC_ARRAY or macs // rows > MAX_MAC_ARRAY:
            continue
        cols = macs // rows
        try:
            p = Plan(layers, in_chw=in_chw, in_bits=in_bits, rows=rows, cols=cols, in_signed=in_signed,
                     lanes=lanes)
        except ValueError:      # a max pool wider than the columns, rows not a multiple of lanes
            continue
        key = (p.cycles_per_image, cols)
        if best is None or key < best[0]:
            best = (key, (rows, cols))
    if best is None:
        raise ValueError(f"macs={macs}: no array shape rows x cols = {macs} with both in 1..{MAX_MAC_ARRAY}"
                         + (f", rows a multiple of lanes={lanes}" if lanes > 1 else "")
                         + " that can run this network")
    return best[1]
