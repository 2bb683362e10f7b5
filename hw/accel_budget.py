"""The accelerator's resources before synthesis, and the array shape chosen for a budget.

:func:`plan_resources` counts what a :class:`~l1bn.hw.accel_plan.Plan` needs on an ECP5:

- ``bram``: DP16KD block RAMs of the generator's memories (:func:`l1bn.hw.bram.bram_count` of
  the weight ROM; per column, the image memory (``img_lane_bits`` lanes), the activation memory
  (``act_lane_bits`` lanes: 2 bits for CNV, not the pixels' 9; a lane with its own write enable
  narrower than a 9-bit byte is a slice of its own) and the im2col table when it is deeper than
  :data:`~l1bn.hw.accel_issue.TABLE_LUT_DEPTH` (shallower ones are LUT ROMs, ``SplitRom``); the
  mult/bias ROM), an upper bound: pieces of at most :data:`LUTRAM_WORDS` words are left out, and
  Yosys puts some deeper ones in LUTs (digits CNN 8x4: 11 counted, 8 after synthesis: its
  80-word mult/bias ROM; reduced CNV-w1a1 at 8x4 and 16x4: 55 and 55);
- ``dsp``: MULT18X18D, exact: the requantizer's multiply in every column
  (:func:`l1bn.hw.arith.mul_terms` parts);
- ``lut_sites`` (LUT4 + 2 per CCU2C carry, what nextpnr places) and ``ff``: a linear model,
  ``per_mac * pe * rows * cols + per_col * cols + per_row * rows + per_layer * layers + fixed``
  (:data:`LUT_MODEL`, :data:`FF_MODEL`), fitted by non-negative least squares
  (``bench/accel_budget_fit.py``) on ``synth_ecp5`` of the 4-bit digits CNN at 4x4, 8x4, 8x8, 16x8
  and 4x16 and of CNV-w1a1's topology at reduced widths (9 layers, the XNOR switch, two max pools,
  block-RAM tables) at 8x4 and 16x4: within 10.4 % of the LUT sites and 5.0 % of the flip-flops
  on those seven (the model before, fitted on the digits CNN alone before ``SplitRom`` and the
  switch: 35.8 % and 24.9 %). ``pe`` (:func:`pe_size`) scales the per-MAC term by the PE's size,
  partial-product bits ``wbits * abits`` plus accumulator bits, against the calibration's.
  The tree PE (``plan.lanes > 1``) adds, per PE, :func:`tree_pe_extra`: a fixed part and a part
  per extra lane proportional to the lane's tree bits (:func:`tree_lane_bits`), fitted on
  ``synth_ecp5`` of the 4x4 tree array alone (``TreeArray``, register harness) against the MAC
  array with the same configuration, CNV-w1a1's and CNV-w2a2's (9-bit lane 0, 2-bit lanes 1..)
  at 4 and 8 lanes: 10.0 and 24.0 LUT sites per extra lane (4 and 10 lane bits), 12 and 17 per
  tree; 11.0 and 12.0 flip-flops per extra lane.

:func:`budget_geometry` picks, among every ``rows x cols`` (1..16 each) whose estimate fits a
:class:`Budget`, the one with the fewest cycles per image (ties: fewer LUT sites). When none fits
it raises :class:`DoesNotFit` (a ``ValueError``) of one line naming the resource that is short
and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import signed
from l1bn.hw.accel_issue import TABLE_LUT_DEPTH
from l1bn.hw.accel_plan import Plan
from l1bn.hw.arith import mul_terms
from l1bn.hw.bram import LUTRAM_DEPTH, bram_count, bram_geometry
from l1bn.spec.config import MAX_MAC_ARRAY

__all__ = ["Budget", "DoesNotFit", "plan_resources", "budget_geometry", "shortfall", "LUT_MODEL", "FF_MODEL",
           "LUTRAM_WORDS", "pe_size", "tree_lane_bits", "tree_pe_extra", "TREE_LUT", "TREE_FF"]

#: memory pieces this deep or less are distributed RAM (TRELLIS_DPR16X4), not block RAM
LUTRAM_WORDS = LUTRAM_DEPTH
#: (per MAC, per column, per row, fixed) LUT sites, and flip-flops, of the 4-bit digits CNN
#: (``synth_ecp5``, Yosys 0.70; see the module docstring)
LUT_MODEL = (80.7, 301.4, 0.0, 0.0, 852.3)
FF_MODEL = (51.2, 281.6, 34.5, 0.0, 600.7)
#: PE size of the calibration: 4-bit weights x 4-bit activations (16 partial-product bits) + a
#: 17-bit accumulator
CAL_PE_BITS = 4 * 4 + 17


#: the tree PE beyond a MAC PE, per PE: (fixed, per extra lane, per extra lane and lane bit) LUT
#: sites and flip-flops (``synth_ecp5`` of ``TreeArray`` 4x4 against ``MACArray`` 4x4: module
#: docstring). Measured per PE: w1a9 lanes 1/4/8: 80.2 / 122.2 / 162.2 LUT sites, 79.1 / 99.9 /
#: 144.0 FF; w2a9: 109.4 / 198.4 / 294.4 LUT sites, 93.1 / 142.5 / 190.5 FF (2-bit lanes 1..).
TREE_LUT = (14.5, 0.0, 2.45)
TREE_FF = (0.5, 10.33, 0.167)


def tree_lane_bits(cfg, narrow_bits: int) -> int:
    """One extra lane's bits in the tree: its terms (1 for 1-bit weights, else two halves) times
    the registered partial-product width of a ``narrow_bits`` activation."""
    import dataclasses

    nc = dataclasses.replace(cfg, abits=narrow_bits)
    return (1 if cfg.wbits == 1 else 2) * (nc.product_bits + 1)


def tree_pe_extra(cfg, lanes: int, narrow_bits: int) -> tuple[float, float]:
    """LUT sites and flip-flops of one tree PE of ``lanes`` lanes beyond a MAC PE of ``cfg``
    (:data:`TREE_LUT`, :data:`TREE_FF`)."""
    if lanes == 1:
        return 0.0, 0.0
    b = tree_lane_bits(cfg, narrow_bits)
    return tuple(f + (lanes - 1) * (per + per_bit * b) for f, per, per_bit in (TREE_LUT, TREE_FF))


def pe_size(cfg) -> float:
    """One PE's size against the calibration's: partial-product bits (``wbits * abits``: the
    shift-and-add product; 1-bit weights are a sign select of the activation) plus accumulator
    bits, over :data:`CAL_PE_BITS`."""
    return (cfg.wbits * cfg.abits + cfg.acc_bits) / CAL_PE_BITS


@dataclass(frozen=True)
class Budget:
    """Resources the accelerator may use (a device's, or a share of one)."""

    name: str
    lut_sites: int
    ff: int
    dsp: int
    bram: int


class DoesNotFit(ValueError):
    """No array shape fits the budget (one-line message); ``shape`` and ``resources``: the
    leanest shape's ``(rows, cols)`` and its :func:`plan_resources`."""

    def __init__(self, msg: str, shape: tuple[int, int], resources: dict):
        super().__init__(msg)
        self.shape, self.resources = shape, resources


def _pieces(width: int, depth: int, granularity: int | None = None) -> int:
    _, bank_depth, _ = bram_geometry(width, depth, granularity)
    if min(depth, bank_depth) <= LUTRAM_WORDS:
        return 0
    return bram_count(width, depth, granularity)


def plan_resources(plan: Plan) -> dict:
    """``{"bram", "dsp", "lut_sites", "ff"}`` of the accelerator for ``plan`` (module docstring:
    what is exact and what is estimated), and ``"bram_by"``: weights, image, activations, tables."""
    p = plan
    R, C = p.rows, p.cols
    w_words = sum(lp.t * lp.k for lp in p.layers)
    D = p.lanes       # the tree PE: lanes x the weights per word, lanes channel groups per activation word
    bw = _pieces(R * D * p.mac_cfg.wbits, w_words)
    bi = C * _pieces(C * p.img_lane_bits, 2 * p.img_words, p.img_lane_bits)
    gran = p.act_lane_bits if p.pooled and D == 1 else None     # the tree PE writes whole words
    ba = C * _pieces(D * C * p.act_lane_bits, p.act_depth, gran)
    # im2col tables: LUT ROMs up to TABLE_LUT_DEPTH entries (the generator's rule), else banked
    tdepth = len(p.tables[0])
    bt = 0 if tdepth <= TABLE_LUT_DEPTH else C * _pieces(1 + p.table_off_bits + p.lane_sel_bits, tdepth)
    # the mult/bias ROM (a plain memory: Yosys chooses; counted when deeper than LUT RAM)
    bm = _pieces(p.mult_bits + p.bias_bits, len(p.mb_words)) if len(p.layers) > 1 else 0
    dsp = C * mul_terms(signed(p.mac_cfg.acc_bits), signed(p.mult_bits)) if len(p.layers) > 1 else 0
    cfg = p.mac_cfg
    pe = pe_size(cfg)
    tree = tree_pe_extra(cfg, D, p.tree_narrow_bits) if D > 1 else (0.0, 0.0)

    def model(k, extra):
        per_mac, per_col, per_row, per_layer, fixed = k
        return round((per_mac * pe + extra) * R * C + per_col * C + per_row * R + per_layer * len(p.layers) + fixed)

    return {"bram": bw + bi + ba + bt + bm, "dsp": dsp, "lut_sites": model(LUT_MODEL, tree[0]),
            "ff": model(FF_MODEL, tree[1]),
            "bram_by": {"weights": bw, "image": bi, "activations": ba, "tables": bt, "mult/bias": bm}}


_WHAT = (("lut_sites", "LUT sites"), ("ff", "flip-flops"), ("dsp", "MULT18X18D"), ("bram", "DP16KD block RAMs"))


def shortfall(res: dict, budget: Budget) -> str | None:
    """One line naming the first resource ``res`` needs more of than ``budget`` has, or None."""
    for key, what in _WHAT:
        need, have = res[key], getattr(budget, key)
        if need > have:
            how = " (estimated)" if key in ("lut_sites", "ff") else ""
            return f"needs {need} {what}{how} of {have}: {need - have} short"
    return None


def budget_geometry(layers, *, in_chw, in_bits: int, budget: Budget, in_signed: bool = False,
                    max_side: int = MAX_MAC_ARRAY, lanes: int = 1) -> tuple[int, int]:
    """The ``(rows, cols)`` (1..``max_side`` each) whose :func:`plan_resources` fit ``budget``
    with the fewest cycles per image (ties: fewer LUT sites). :class:`DoesNotFit` (a ``ValueError``
    of one line) when no shape fits: the shortfall of the shape with the fewest block RAMs (then
    LUT sites)."""
    best, smallest = None, None
    for rows in range(1, max_side + 1):
        for cols in range(1, max_side + 1):
            try:
                p = Plan(layers, in_chw=in_chw, in_bits=in_bits, rows=rows, cols=cols, in_signed=in_signed,
                         lanes=lanes)
            except ValueError:      # a max pool wider than the columns, rows not a multiple of lanes
                continue
            res = plan_resources(p)
            if smallest is None or (res["bram"], res["lut_sites"]) < smallest[0]:
                smallest = ((res["bram"], res["lut_sites"]), res, (rows, cols))
            if shortfall(res, budget) is None:
                key = (p.cycles_per_image, res["lut_sites"])
                if best is None or key < best[0]:
                    best = (key, (rows, cols))
    if best is None:
        if smallest is None:
            raise ValueError("no array shape can run this network")
        _, res, (r, c) = smallest
        raise DoesNotFit(f"the network does not fit {budget.name}: its leanest array ({r}x{c}) "
                         f"{shortfall(res, budget)}", (r, c), res)
    return best[1]
