"""The accelerator sized for a resource budget (issue 29): block RAMs and multipliers counted from
the plan, the array shape with the fewest cycles that fits, and a network too large for the device
refused before anything is built or written, with one line naming the short resource."""

import pytest
from click.testing import CliRunner
from l1bn.cli.main import cli
from l1bn.hw.accel_budget import Budget, budget_geometry, plan_resources, shortfall
from l1bn.hw.accel_layers import layers_from_export
from l1bn.hw.accel_plan import Plan
from l1bn.hw.bram import bram_count
from l1bn.spec.config import MAX_MAC_ARRAY
from l1bn.spec.reference.graph_random import random_cnv_graph
from test_accelerator import odd_export  # noqa: F401  (fixture)

BIG = Budget(name="big", lut_sites=10 ** 9, ff=10 ** 9, dsp=10 ** 6, bram=10 ** 6)


def _plan(layers, inp, r, c):
    return Plan(layers, in_chw=inp["shape"], in_bits=inp["bits"], rows=r, cols=c, in_signed=inp["signed"])


def test_block_rams_follow_the_memories():
    """CNV-w2a2 on 16x16: the weight ROM is 16 rows x 2 bits per word, one word per (tile, k);
    every column holds a copy of the activations and the image (pieces deeper than LUT RAM)."""
    layers, inp = layers_from_export(random_cnv_graph(0, wbits=2, abits=2))
    p = _plan(layers, inp, 16, 16)
    res = plan_resources(p)
    words = sum(lp.t * lp.k for lp in p.layers)
    assert res["bram_by"]["weights"] == bram_count(32, words)
    # 1,542,848 2-bit weights in blocks of 1024 x 18 used 16 bits wide (16 kbit each), padded
    # to whole tiles: a few blocks over 3,085,696 / 16384
    assert 3_085_696 // 16384 < res["bram_by"]["weights"] <= 3_085_696 // 16384 + 3
    # activation lanes as wide as the stored values (2-bit signed), not the 9-bit pixels'
    assert (p.img_lane_bits, p.act_lane_bits) == (9, 2)
    assert res["bram_by"]["activations"] == 16 * bram_count(16 * 2, p.act_depth, 2)
    assert res["bram_by"]["image"] == 16 * bram_count(16 * 9, 2 * p.img_words, 9)
    assert res["bram"] == sum(res["bram_by"].values())
    # one requantizer multiply per column
    assert res["dsp"] % 16 == 0 and res["dsp"] > 0


def test_budget_picks_the_fastest_shape_that_fits(odd_export):  # noqa: F811
    from l1bn.spec.export import load_export

    layers, inp = layers_from_export(load_export(odd_export))
    # unbounded: the largest array that still shortens the image
    r, c = budget_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], budget=BIG)
    best = _plan(layers, inp, r, c).cycles_per_image
    assert best == min(_plan(layers, inp, rr, cc).cycles_per_image
                       for rr in range(1, MAX_MAC_ARRAY + 1) for cc in range(1, MAX_MAC_ARRAY + 1))
    # a LUT budget between the smallest and that shape's estimate: a smaller, slower array that fits
    need = plan_resources(_plan(layers, inp, r, c))["lut_sites"]
    tight = Budget(name="tight", lut_sites=need - 1, ff=BIG.ff, dsp=BIG.dsp, bram=BIG.bram)
    r2, c2 = budget_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], budget=tight)
    p2 = _plan(layers, inp, r2, c2)
    assert plan_resources(p2)["lut_sites"] <= need - 1 and shortfall(plan_resources(p2), tight) is None
    assert p2.cycles_per_image >= best


LFE5U_85F = Budget(name="LFE5U-85F", lut_sites=83640, ff=83640, dsp=156, bram=208)


def test_cnv_w1a1_fits_the_85f():
    """Full-width CNV-w1a1 on 16x4: weights, 2-bit activation lanes, image and tables within the
    LFE5U-85F's 208 DP16KD (275 with the activations stored at the pixels' 9 bits)."""
    layers, inp = layers_from_export(random_cnv_graph(0, wbits=1, abits=1))
    p = _plan(layers, inp, 16, 4)
    res = plan_resources(p)
    assert shortfall(res, LFE5U_85F) is None and res["bram"] <= 208
    wide = 4 * bram_count(4 * p.img_lane_bits, p.act_depth, p.img_lane_bits)
    assert res["bram"] - res["bram_by"]["activations"] + wide > 208


def test_too_large_is_one_line_naming_the_resource():
    layers, inp = layers_from_export(random_cnv_graph(0, wbits=2, abits=2))
    dev = LFE5U_85F
    with pytest.raises(ValueError) as e:
        budget_geometry(layers, in_chw=inp["shape"], in_bits=inp["bits"], budget=dev)
    msg = str(e.value)
    assert "\n" not in msg and "DP16KD" in msg and "fit LFE5U-85F" in msg and "of 208:" in msg
    need = int(msg.split("needs ")[1].split()[0])
    assert msg.endswith(f"{need - 208} short")


def test_verilog_net_refuses_before_writing(odd_export, tmp_path, l1bn_cli):  # noqa: F811
    out = tmp_path / "v"
    code, text = l1bn_cli(["verilog", "net", str(odd_export), "-o", str(out), "--budget-lut", "50"])
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "LUT sites" in lines[0], text
    assert "short" in lines[0] and not out.exists()
    code, text = l1bn_cli(["verilog", "net", str(odd_export), "-o", str(out), "--device", "LFE5U-12F"])
    assert code == 2 and "unknown device" in text and not out.exists()
    r = CliRunner().invoke(cli, ["verilog", "net", str(odd_export), "-o", str(out), "--device", "LFE5U-25F",
                                 "--rows", "2", "--cols", "2"])
    assert r.exit_code == 0 and "fits LFE5U-25F" in r.output and "DP16KD" in r.output, r.output
