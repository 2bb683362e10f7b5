"""Block RAMs read through their output registers: the banked memory generator (read latency,
banks, slices, lane enables, stalls, against a Python model in Amaranth's simulator) and the
netlist pass that turns the registers after DP16KD read ports into REGMODE=OUTREG (which
registers it moves and which it must leave alone)."""

import copy
import random

import pytest
from amaranth.sim import Simulator
from l1bn.hw.bram import BankedMemory, bram_count, bram_geometry
from l1bn.sim.fpga.bram_outreg import absorb_bram_outregs


def test_geometry_is_one_block_per_piece():
    # 16-bit words: one 1024 x 18 block per 1024 words
    assert bram_geometry(16, 384) == ([(0, 16)], 1024, 1)
    # 32-bit weights (8 rows x 4 bits) over 2002 words: 2 slices of 16 bits, 2 banks
    assert bram_geometry(32, 2002) == ([(0, 16), (16, 32)], 1024, 2)
    assert bram_count(32, 2002) == 4
    # narrow words go deeper: 4 bits -> 4096 x 4, 9 bits -> 2048 x 9
    assert bram_geometry(4, 5000)[1:] == (4096, 2)
    assert bram_geometry(9, 100)[1] == 2048
    # 4-bit lanes, LUT-RAM deep: slices of whole lanes, at most 18 bits (4 lanes)
    assert bram_geometry(40, 10, granularity=4)[0] == [(0, 16), (16, 32), (32, 40)]
    # block-RAM deep: the DP16KD's enables are 9-bit bytes, so a 2-bit lane with its own enable
    # is its own slice, 8192 deep (CNV's activations per column: 4 lanes x 3 banks, not 9 banks
    # that Yosys would split into 4 blocks each); 9-bit lanes share an 18-bit slice
    assert bram_geometry(8, 17536, granularity=2) == ([(0, 2), (2, 4), (4, 6), (6, 8)], 8192, 3)
    assert bram_count(8, 17536, 2) == 12
    assert bram_geometry(36, 1536, granularity=9) == ([(0, 18), (18, 36)], 1024, 2)
    with pytest.raises(ValueError, match="granularity"):
        bram_geometry(10, 4, granularity=4)


@pytest.mark.parametrize("width,depth,gran", [(16, 40, None), (40, 2500, 4), (6, 3000, 2), (4, 9000, 2)])
def test_banked_memory_reads_two_enabled_cycles_later(width, depth, gran):
    """Random writes, reads and stalls (``r_en`` low) against a model: ``r_data`` is the word at
    the address of two enabled cycles ago, as memory held it at the first of them."""
    rng = random.Random(width * depth)
    init = [rng.getrandbits(width) for _ in range(depth)]
    dut = BankedMemory(width=width, depth=depth, init=init, write=True, granularity=gran)
    lanes = width // gran if gran else 1
    lw = gran or width
    model = list(init)
    steps = 400

    async def bench(ctx):
        pipe = []                       # words read at enabled edges, oldest first
        for _ in range(steps):
            ra, en = rng.randrange(depth), rng.random() < 0.7
            wa, wen = rng.randrange(depth), rng.getrandbits(lanes) if rng.random() < 0.5 else 0
            if wa == ra:                # never read a word in the cycle it is written
                wen = 0
            wd = rng.getrandbits(width)
            ctx.set(dut.r_addr, ra)
            ctx.set(dut.r_en, en)
            ctx.set(dut.w_addr, wa)
            ctx.set(dut.w_data, wd)
            ctx.set(dut.w_en, wen)
            await ctx.tick()
            if en:
                pipe.append(model[ra])
                if len(pipe) >= 2:
                    assert ctx.get(dut.r_data) == pipe[-2]
            for k in range(lanes):
                if wen >> k & 1:
                    mask = ((1 << lw) - 1) << (k * lw)
                    model[wa] = (model[wa] & ~mask) | (wd & mask)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert dut.banks == -(-depth // dut.bank_depth)


# ------------------------------------------------------------------ the netlist pass

def _netlist(*, width_b=18, fanout=1, lsr="0", cemux="CE", ce2=None, clk2=None):
    """A DP16KD whose port A drives two flip-flops (DOA0, DOA1); knobs break one condition."""
    cells = {
        "ram": {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG",
                                                  "DATA_WIDTH_A": format(18, "032b"),
                                                  "DATA_WIDTH_B": format(width_b, "032b"),
                                                  "CLKAMUX": "CLKA"},
                "port_directions": {"CLKA": "input", "OCEA": "input", "RSTA": "input", "DOA0": "output",
                                    "DOA1": "output", "DOA2": "output"},
                "connections": {"CLKA": [2], "OCEA": ["1"], "RSTA": ["0"], "DOA0": [10], "DOA1": [11],
                                "DOA2": [12]}},
    }
    for i, (ce, clk) in enumerate([(7, 2), (ce2 or 7, clk2 or 2)]):
        cells[f"ff{i}"] = {"type": "TRELLIS_FF",
                           "parameters": {"CEMUX": cemux, "CLKMUX": "CLK", "GSR": "DISABLED",
                                          "LSRMUX": "LSR", "REGSET": "RESET"},
                           "port_directions": {"CLK": "input", "CE": "input", "LSR": "input", "DI": "input",
                                               "Q": "output"},
                           "connections": {"CLK": [clk], "CE": [ce], "LSR": [lsr if lsr == "0" else 5],
                                           "DI": [10 + i], "Q": [20 + i]}}
    if fanout > 1:
        cells["lut"] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
                        "connections": {"A": [10], "Z": [30]}}
    return {"modules": {"top": {"ports": {"q": {"direction": "output", "bits": [20, 21]}}, "cells": cells}}}


def test_outreg_absorbs_plain_registers():
    net = _netlist()
    assert absorb_bram_outregs(net) == {"ports": 1, "ffs": 2}
    ram = net["modules"]["top"]["cells"]["ram"]
    assert ram["parameters"]["REGMODE_A"] == "OUTREG"
    assert ram["connections"]["OCEA"] == [7]                   # the registers' clock enable
    assert ram["connections"]["DOA0"] == [20] and ram["connections"]["DOA1"] == [21]
    assert set(net["modules"]["top"]["cells"]) == {"ram"}
    # no clock enable: the output register always loads
    net = _netlist(cemux="1 ")
    assert absorb_bram_outregs(net)["ffs"] == 2
    assert net["modules"]["top"]["cells"]["ram"]["connections"]["OCEA"] == ["1"]


@pytest.mark.parametrize("knob", [{"width_b": 36}, {"fanout": 2}, {"lsr": "rst"}, {"cemux": "INV"},
                                  {"ce2": 8}, {"clk2": 3}])
def test_outreg_leaves_other_shapes_alone(knob):
    """36-bit mode, a data output with logic on it, a register with a reset, an inverted or a
    different clock enable, another clock: nothing changes."""
    net = _netlist(**knob)
    before = copy.deepcopy(net)
    assert absorb_bram_outregs(net) == {"ports": 0, "ffs": 0}
    assert net == before
