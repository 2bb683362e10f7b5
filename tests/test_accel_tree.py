"""The accelerator's tree PE (``lanes > 1``, ``--pe tree``): each accumulator adds a dot product
of ``lanes`` input channels per beat. Logits bit-exact against the graph reference on a mixed
conv + max pool + linear network with random stalls, the measured period and latency equal to
the plan's formulas, those formulas against the layer shapes, every activation word written
inside its tensor and equal to the reference's values, the weight ROM against the export's
weights, and the refusals."""

import re

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data
from amaranth.sim import Simulator
from l1bn.hw.accel_layers import cdiv, layers_from_export
from l1bn.hw.accel_plan import ISSUE_STAGES, Plan, tree_weight_word_layout
from l1bn.hw.accelerator import accelerator_from_export
from l1bn.hw.mac_tree import tree_array_stages
from l1bn.spec.reference.graph import run_graph
from l1bn.spec.reference.graph_random import random_cnv_graph, random_int_graph
from test_accel_graph import _images, _mixed_graph, _pool_graph
from test_accelerator import _run_amaranth


def _formula(plan, layers, lanes):
    """Cycles per image and latency from the layer shapes: layer ``L > 0`` takes
    ``ceil(C/lanes) * kh * kw`` beats per tile (layer 0 reads the image, one channel per beat),
    the array's pipeline is ``4 + tree_array_stages``."""
    rows, cols = plan.rows, plan.cols
    pipeline = 4 + tree_array_stages(plan.mac_cfg, lanes)
    drain = ISSUE_STAGES + pipeline - 1 + plan.wb_stages + 2
    period, gaps = 0, 0
    for i, lay in enumerate(layers):
        beats = cdiv(lay.in_chw[0], 1 if i == 0 else lanes) * lay.kernel[0] * lay.kernel[1]
        tiles = cdiv(lay.channels, rows) * (lay.positions if lay.pool else cdiv(lay.positions, cols))
        per_tile = max(beats, rows + 1)
        issue = (tiles - 1) * per_tile + beats
        last = i == len(layers) - 1
        period += (issue if last else issue + rows + drain) + (per_tile - beats if i == 0 else 0)
        gaps += 0 if last else issue + rows + drain
        last_issue = issue
    latency = plan.pixels + 2 + gaps + last_issue + rows + ISSUE_STAGES + pipeline + plan.argmax_stages
    return period, latency


@pytest.mark.parametrize("net,lanes,stages", [("mixed", 2, 1), ("pool", 4, 2)])
def test_tree_pe_bit_exact_with_stalls_and_cycles_equal_the_formula(net, lanes, stages):
    """``mixed``: signed 4-bit pixels into a padded binary conv1 (one channel per beat from the
    image), a binary conv with a 2x2 max pool merged into it (6 channels: whole groups of 2) and
    two linear layers (5 and 9 channels: the last group partly empty), every logit exact with
    random stalls; ``pool``: 4-bit weights, two max pools, a two-stage adder tree. Without
    stalls, every logit exact and the period and latency measured equal the formula derived from
    the shapes."""
    g = _mixed_graph(4) if net == "mixed" else _pool_graph(3, 2)
    x = _images(g, 3, seed=6)          # image 0: every pixel at the most negative value
    ref = np.asarray(run_graph(g, x))
    acc = accelerator_from_export(g, rows=4, cols=4, lanes=lanes)
    p = acc.plan
    assert p.lanes == lanes and not p.xnor and not p.switch
    assert tree_array_stages(p.mac_cfg, lanes) == stages
    mac = Plan(acc.layers, in_chw=p.in_chw, in_bits=p.in_bits, in_signed=p.in_signed, rows=4, cols=4)
    assert [lp.k for lp in p.layers] == [mac.layers[0].k] + [cdiv(lay.in_chw[0], lanes) * lp.khkw
                                                             for lay, lp in zip(acc.layers[1:], mac.layers[1:], strict=True)]
    assert p.mac_bound == cdiv(p.macs, 4 * 4 * lanes) and p.macs == mac.macs
    assert (p.cycles_per_image, p.latency) == _formula(p, acc.layers, lanes)
    assert p.cycles_per_image < mac.cycles_per_image
    px = (x.reshape(len(x), -1) & ((1 << p.in_bits) - 1)).tolist()
    if net == "mixed":      # random gaps on i, random back-pressure on o
        outs, _ = _run_amaranth(acc, px[:2], seed=5)
        assert [o[1] for o in outs] == ref[:2].tolist()
        acc = accelerator_from_export(g, rows=4, cols=4, lanes=lanes)
    outs, starts = _run_amaranth(acc, px[1:])
    assert [o[1] for o in outs] == ref[1:].tolist()
    assert [o[2] for o in outs] == np.argmax(ref[1:], axis=1).tolist()
    assert outs[0][0] - starts[0] == p.latency
    assert outs[1][0] - outs[0][0] == p.cycles_per_image


def _run_recording_writes(acc, images):
    """Stream ``images`` through ``acc`` (no stalls) and record the writeback's activation-memory
    writes. Returns the logits per image and, per image, per layer before the last, the
    ``{address: word}`` it wrote (the layer of a write: the one after the last ``done`` pulse)."""
    # elaborated here and simulated as that fragment, so its writeback's port is visible
    frag = Fragment.get(acc, None)
    wb = next(f.origins[0] for f, name, _ in frag.subfragments if name == "writeback")
    nl = len(acc.layers)
    seq = [v for img in images for v in img]
    outs, writes = [], []

    async def bench(ctx):
        k, layer = 0, 0
        ctx.set(acc.o.ready, 1)
        while len(outs) < len(images):
            ctx.set(acc.i.valid, k < len(seq))
            if k < len(seq):
                ctx.set(acc.i.payload, seq[k])
            if ctx.get(acc.o.valid):
                outs.append([int(v) for v in ctx.get(acc.o.payload.logits)])
            if ctx.get(wb.wr.en):
                if layer == 0 and (not writes or len(writes[-1]) == nl - 1):
                    writes.append([])
                if len(writes[-1]) == layer:
                    writes[-1].append({})
                writes[-1][layer][ctx.get(wb.wr.addr)] = ctx.get(wb.wr.data)
            # the last layer writes logits, not words: the next write after the layer before it
            # is the next image's layer 0 (which may start before the last layer is done)
            if ctx.get(wb.done) and ctx.get(wb.done_layer) < nl - 1:
                layer = (ctx.get(wb.done_layer) + 1) % (nl - 1)
            if k < len(seq) and ctx.get(acc.i.ready):
                k += 1
            await ctx.tick()

    sim = Simulator(frag)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs, writes


def test_tree_pe_writes_no_word_past_the_tensor():
    """The tree PE writes whole words of ``lanes`` channels, and the last tile of a layer whose
    channels do not fill it (6, 5 and 9 channels, 4 rows, 2 lanes: 8, 8, 12 rows) has rows whose
    word holds no channel at all: the writeback must not write those words (they lie past the
    tensor, in the next tensor's region or past the memory). Every word each layer writes lies in
    its output tensor, every word of it is written, and what the last write left there is the
    reference's tensor (channel ``cg*lanes + d``, position ``q`` in lane ``d*cols + q % cols`` of
    word ``base + cg*G + q // cols``; the merged max pool's output included), then the logits
    exact."""
    g = _mixed_graph(4)
    x = _images(g, 2, seed=6)
    ref, trace = run_graph(g, x, trace=True)
    lanes, cols = 2, 4
    acc = accelerator_from_export(g, rows=4, cols=cols, lanes=lanes)
    p = acc.plan
    lb = p.act_lane_bits
    # every layer before the last has rows past its channels whose word is empty
    assert all(lp.t * p.rows // lanes > cdiv(lp.channels, lanes) for lp in p.layers[:-1])
    px = (x.reshape(len(x), -1) & ((1 << p.in_bits) - 1)).tolist()
    outs, writes = _run_recording_writes(acc, px)
    assert outs == np.asarray(ref).tolist()
    assert len(writes) == len(x)
    for n, per_layer in enumerate(writes):
        assert len(per_layer) == len(p.layers) - 1
        for lay, lp, wr in zip(acc.layers, p.layers, per_layer, strict=False):
            words = cdiv(lp.channels, lanes) * lp.g_out
            assert sorted(wr) == list(range(lp.out_base, lp.out_base + words)), (n, lay.name)
            want = np.asarray(trace[lay.output][n]).reshape(lp.channels, -1)
            for c in range(lp.channels):
                cg, d = divmod(c, lanes)
                for q in range(want.shape[1]):
                    word = wr[lp.out_base + cg * lp.g_out + q // cols]
                    v = (word >> ((d * cols + q % cols) * lb)) & ((1 << lb) - 1)
                    assert v - ((v >> (lb - 1)) << lb) == want[c, q], (n, lay.name, c, q)


def test_tree_weight_rom_holds_the_weights_by_channel_lane():
    """Word ``woff + t*K + cg*kh*kw + tap``, element ``[r][d]`` = weight of output ``t*rows + r``,
    input channel ``cg*lanes + d``, tap ``tap``; 0 past the channels (3 lanes over 5 channels)."""
    g = _mixed_graph(4)
    layers, inp = layers_from_export(g)
    p = Plan(layers, in_chw=inp["shape"], in_bits=inp["bits"], in_signed=True, rows=6, cols=4, lanes=3)
    lay, lp = layers[1], p.layers[1]
    layout = tree_weight_word_layout(6, 3, p.mac_cfg.wbits)
    khkw, cin = lp.khkw, lay.in_chw[0]
    assert (lp.cin, lp.last_lanes) == (cdiv(cin, 3), cin - 3 * (cdiv(cin, 3) - 1))
    for t in range(lp.t):
        for b in range(lp.k):
            word = data.Const(layout, p.weight_words[lp.woff + t * lp.k + b])
            cg, tap = divmod(b, khkw)
            for r in range(6):
                for d in range(3):
                    o, c = t * 6 + r, cg * 3 + d
                    want = lay.weights[o][c * khkw + tap] if o < lay.channels and c < cin else 0
                    assert word[r][d] == (-1 if want < 0 else 0), (t, b, r, d)   # binary: the code


def test_tree_pe_refusals():
    g = _mixed_graph(4)
    layers, inp = layers_from_export(g)
    kw = {"in_chw": inp["shape"], "in_bits": inp["bits"], "in_signed": True, "cols": 4}
    with pytest.raises(ValueError, match="lanes needs rows a multiple of 4; rows=6"):
        Plan(layers, rows=6, lanes=4, **kw)
    with pytest.raises(ValueError, match="the tree PE runs every layer on the product path"):
        Plan(layers, rows=4, lanes=4, xnor=True, **kw)
    with pytest.raises(ValueError, match=r"lanes=0 must be an int in 1\.\.16"):
        Plan(layers, rows=4, lanes=0, **kw)
    res, rinp = layers_from_export(random_int_graph(0))
    with pytest.raises(ValueError, match="residual adds are not supported with pe='tree' yet"):
        Plan(res, in_chw=rinp["shape"], in_bits=rinp["bits"], in_signed=rinp["signed"], rows=4, cols=9, lanes=2)


@pytest.mark.parametrize("args,message", [
    (["--lanes", "4"], r"--lanes goes with --pe tree \(the MAC PE has one product per cycle\)"),
    (["--pe", "tree", "--lanes", "1"], r"--lanes=1 must be an int in 2\.\.16"),
    (["--pe", "tree", "--lanes", "4", "--rows", "6", "--cols", "4"],
     r"the tree PE with 4 lanes needs rows a multiple of 4; rows=6"),
])
def test_verilog_net_pe_options_refused_in_one_line(args, message, tmp_path, cli):
    from l1bn.spec.export import write_export

    path = write_export(_mixed_graph(4), tmp_path / "e", rows=4)
    code, out = cli(["verilog", "net", str(path), "-o", str(tmp_path / "v"), *args])
    assert code == 2 and re.fullmatch(rf"error: {message}", out.strip())
    assert not (tmp_path / "v").exists()


def test_tree_resources_and_budget_shape():
    """The tree PE's estimate: a MAC PE plus tree_pe_extra per PE (0 for one lane, growing with
    the lanes and the lane width), the weight ROM ``rows * lanes`` weights wide; the budget's
    shape search keeps rows a multiple of the lanes and finds fewer cycles than the MAC PE."""
    from l1bn.hw.accel_budget import Budget, budget_geometry, plan_resources, tree_pe_extra
    from l1bn.hw.bram import LUTRAM_DEPTH, bram_count

    g = _mixed_graph(4)
    layers, inp = layers_from_export(g)
    kw = {"in_chw": inp["shape"], "in_bits": inp["bits"], "in_signed": True}
    mac, tree = Plan(layers, rows=8, cols=4, **kw), Plan(layers, rows=8, cols=4, lanes=4, **kw)
    cfg = tree.mac_cfg
    assert tree_pe_extra(cfg, 1, 2) == (0.0, 0.0)
    assert tree_pe_extra(cfg, 4, 2) < tree_pe_extra(cfg, 8, 2) < tree_pe_extra(cfg, 8, 4)
    rm, rt = plan_resources(mac), plan_resources(tree)
    extra = tree_pe_extra(cfg, 4, tree.tree_narrow_bits)
    assert abs(rt["lut_sites"] - rm["lut_sites"] - 32 * extra[0]) <= 1
    assert abs(rt["ff"] - rm["ff"] - 32 * extra[1]) <= 1
    assert sum(lp.t * lp.k for lp in tree.layers) == len(tree.weight_words)
    # CNV-w1a1 at reduced widths, 8x4, 8 lanes: the weight ROM is 8 x 8 one-bit weights wide
    cl, ci = layers_from_export(random_cnv_graph(0, widths=(16, 16, 32, 32, 64, 64, 64, 64)))
    cnv = Plan(cl, in_chw=ci["shape"], in_bits=ci["bits"], in_signed=ci["signed"], rows=8, cols=4, lanes=8)
    words = sum(lp.t * lp.k for lp in cnv.layers)
    assert words > LUTRAM_DEPTH and cnv.mac_cfg.wbits == 1
    assert plan_resources(cnv)["bram_by"]["weights"] == bram_count(64, words) > 0
    budget = Budget(name="test", lut_sites=60000, ff=60000, dsp=64, bram=64)
    rows, cols = budget_geometry(layers, budget=budget, lanes=4, **kw)
    assert rows % 4 == 0
    best_mac = Plan(layers, **kw, rows=16, cols=16).cycles_per_image
    assert Plan(layers, rows=rows, cols=cols, lanes=4, **kw).cycles_per_image < best_mac
