"""NanGate45 figures of the whole training accelerator (issue 28, :mod:`l1bn.sim.report.train_asic`):
the windows of a step's program, the windowed transition counts of a VCD, the SRAM macros that
the training accelerator needs (initial contents, lane-masked writes, a transparent read) at gate
level, and the whole flow on a tiny net: synthesis, the step's logits at gate level equal to the
integer reference, energy by block and phase, and a rerun from the cache."""

import subprocess

import numpy as np
import pytest
from l1bn.hw.train.plan import TrainPlan
from l1bn.hw.train.schedule import schedule, step_cycles
from l1bn.sim.asic import sram
from l1bn.sim.report import train_asic
from l1bn.spec.training import IntTrainConfig, TrainLayer

TINY = IntTrainConfig(in_shape=(2, 4, 4), layers=(TrainLayer(kind="conv2d", out=3, kernel=3, stride=2, padding=1),
                                                 TrainLayer(kind="conv2d", out=5, kernel=3, stride=1, padding=1),
                                                 TrainLayer(kind="linear", out=4, kernel=1, stride=1, padding=0)),
                      batch=3, lfsr_lanes=4)


@pytest.mark.parametrize("window", [4, 16, 128])
def test_windows_cover_every_entry_of_the_program(window):
    """One window per short entry (the whole entry), two of ``window`` cycles per long one (its
    start and its middle), inside the entry, disjoint and in order."""
    sched = schedule(TrainPlan(TINY, rows=4))
    wins = train_asic.train_windows(sched, window=window)
    t = 0
    for k, e in enumerate(sched):
        mine = [w for w in wins if w["entry"] == k]
        if e["cycles"] <= 2 * window:
            assert mine == [{"entry": k, "start": t, "end": t + e["cycles"]}]
        else:
            assert len(mine) == 2 and all(w["end"] - w["start"] == window for w in mine)
            assert mine[0]["start"] == t and t + window <= mine[1]["start"] and mine[1]["end"] <= t + e["cycles"]
        t += e["cycles"]
    assert t + 1 == step_cycles(TrainPlan(TINY, rows=4))
    assert all(a["end"] <= b["start"] for a, b in zip(wins, wins[1:], strict=False))


def test_window_toggles_count_only_inside_windows(tmp_path):
    """Transitions between $dumpon and $dumpoff, per window; the x values that $dumpoff writes and
    the values $dumpon writes are not transitions; vectors per bit."""
    (tmp_path / "d.vcd").write_text("""$scope module tb $end
$scope module dut $end
$var wire 1 ! n5 $end
$var wire 2 " p $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b00 "
$end
$dumpoff
x!
bxx "
$end
#10
$dumpon
1!
b01 "
$end
#20
0!
b10 "
#30
1!
$dumpoff
x!
bxx "
$end
#40
$dumpon
0!
b10 "
$end
#50
1!
b11 "
$dumpoff
x!
bxx "
$end
""")
    ids, wins = train_asic.window_toggles(tmp_path / "d.vcd")
    assert wins == [{("!", 0): 2, ('"', 0): 1, ('"', 1): 1}, {("!", 0): 1, ('"', 0): 1}]
    top = {"ports": {"p": {"direction": "output", "bits": [7, 8]}}}
    assert train_asic._bit_map(ids, top) == {("!", 0): 5, ('"', 0): 7, ('"', 1): 8}


def test_block_of_instance_paths():
    assert train_asic.asic_block_of("mac.array._12_") == "MAC array"
    assert train_asic.asic_block_of("mac._3_") == "MAC issue/write"
    assert train_asic.asic_block_of("bnf1.unit.disp._4_") == "BN forward"
    assert train_asic.asic_block_of("bnb0._9_") == "BN backward"
    assert train_asic.asic_block_of("mem_master.sram_mem") == "memories"
    assert train_asic.asic_block_of("update.$fobuf$1") == train_asic.ASIC_BLOCKS[-1][0]
    assert train_asic.asic_block_of("") == train_asic.CLOCK_ROOT


def test_masked_transparent_preloaded_macro_at_gate_level(tmp_path):
    """The macro model of a preloaded (INIT_FILE), lane-masked (2 lanes), transparent memory:
    reads return the initial words, a masked write changes only its lanes, a read of the address
    written in the same edge returns the new word; the counters count the accesses."""
    t = sram.macro_type(8, 32, 1, 1, mask=2, transparent=True)
    assert sram.parse_type(t) == (8, 32, 1, 1) and sram.type_options(t) == (2, True)
    init = [(17 * k + 3) % 256 for k in range(32)]
    (tmp_path / "init.hex").write_text("".join(f"{v:x}\n" for v in init))
    (tmp_path / "m.v").write_text(sram.sram_models({t}, init_param=True))
    pins = ", ".join([f".R0A{k}(ra[{k}])" for k in range(5)] + [f".W0A{k}(wa[{k}])" for k in range(5)]
                     + [f".W0D{k}(wd[{k}])" for k in range(8)] + [f".R0Q{k}(q[{k}])" for k in range(8)])
    # (re, ra, we0, we1, wa, wd) per cycle
    ops = [(1, 5, 0, 0, 0, 0), (1, 6, 1, 0, 6, 0xAB), (1, 6, 0, 0, 0, 0), (1, 7, 0, 1, 9, 0xCD), (1, 9, 0, 0, 0, 0),
           (0, 1, 0, 0, 0, 0)]
    stim = "\n".join(f"    re = {o[0]}; ra = {o[1]}; we0 = {o[2]}; we1 = {o[3]}; wa = {o[4]}; wd = {o[5]}; "
                     f"#5 clk = 1; #1 $display(\"Q %0d\", q); #4 clk = 0;" for o in ops)
    (tmp_path / "tb.v").write_text(f"""`timescale 1ns/1ps
module tb;
  reg clk = 0, re = 0, we0 = 0, we1 = 0;
  reg [4:0] ra = 0, wa = 0;
  reg [7:0] wd = 0;
  wire [7:0] q;
  {t} #(.INIT_FILE("init.hex")) u(.CLK(clk), .R0E(re), .W0E0(we0), .W0E1(we1), {pins});
  initial begin
{stim}
    $display("N %0d %0d", u.reads, u.writes);
    $finish;
  end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", "s.vvp", "tb.v", "m.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "s.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    q = [int(x.split()[1]) for x in out.splitlines() if x.startswith("Q ")]
    mem = list(init)
    want, held = [], 0
    for re, ra, we0, we1, wa, wd in ops:
        new = mem[wa]
        if we0:
            new = (new & 0xF0) | (wd & 0x0F)
        if we1:
            new = (new & 0x0F) | (wd & 0xF0)
        if re:
            held = new if (we0 or we1) and wa == ra else mem[ra]
        if we0 or we1:
            mem[wa] = new
        want.append(held)
    assert q == want
    assert q[1] == (init[6] & 0xF0) | 0x0B and q[3] == init[7] and q[4] == (init[9] & 0x0F) | 0xC0
    n = next(x for x in out.splitlines() if x.startswith("N "))
    assert n == "N 5 2"


def test_extract_takes_the_training_memories_only_when_asked(tmp_path):
    """A preloaded, lane-masked memory with a transparent read port: a macro with ``_m<lanes>``
    and ``_t`` and its initial words when the training accelerator's options are on; flip-flops
    (left as a memory) for the unit flow's defaults."""
    import json

    from amaranth import Module
    from amaranth.back import rtlil
    from amaranth.lib import data, wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out
    from l1bn.sim.yowasp import run_yosys

    class M(wiring.Component):
        def __init__(self):
            super().__init__({"ra": In(6), "wa": In(6), "we": In(4), "wd": In(16), "q": Out(16)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=data.ArrayLayout(4, 4), depth=64,
                                            init=[[k % 16, 1, 2, 3] for k in range(64)])
            wp = mem.write_port(granularity=1)
            rp = mem.read_port(transparent_for=(wp,))
            m.d.comb += [wp.addr.eq(self.wa), wp.en.eq(self.we), wp.data.eq(self.wd), rp.addr.eq(self.ra),
                         self.q.eq(rp.data)]
            return m

    (tmp_path / "top.il").write_text(rtlil.convert(M(), name="top"))
    run_yosys(tmp_path, "read_rtlil top.il; synth -top top -run :fine; write_json c.json")
    design = json.loads((tmp_path / "c.json").read_text())
    assert sram.extract_srams(json.loads(json.dumps(design))) == []
    got = sram.extract_srams(design, init=True, transparent=True, masked=True)
    assert [g["type"] for g in got] == ["L1BN_SRAM_16x64_1r1w_m4_t"]
    assert got[0]["init"] == [(k % 16) | 1 << 4 | 2 << 8 | 3 << 12 for k in range(64)]


def _fake(area, delay, dyn, leak):
    blocks = {b: {"area_um2": area / len(train_asic.BLOCK_NAMES), "leakage_nw": 1.0, "cells": 1}
              for b in train_asic.BLOCK_NAMES}
    eb = {b: {"switching_pj": 0.0, "internal_pj": 0.0, "clock_pj": 1.0, "sram_pj": 2.0, "dynamic_pj": dyn / 7,
              "leakage_pj": leak / 7, "energy_pj": (dyn + leak) / 7} for b in train_asic.BLOCK_NAMES}
    return {"synth": {"area_um2": area, "sram_area_um2": area / 2, "cells": 10, "dff": 2, "clock_gates": 1,
                      "delay_ns": delay, "fmax_mhz": 1000 / delay, "path_from": "a", "path_to": "b",
                      "path_from_block": "BN forward", "path_to_block": "memories", "blocks": blocks},
            "energy": {"window": 16, "cycles_per_step": 100, "energy_pj": dyn + leak, "dynamic_pj": dyn,
                       "leakage_pj": leak, "bound_pj": 1.0, "logits_equal": True, "blocks": eb,
                       "phases": {"MAC array": {"cycles": 60, "dynamic_pj": 5.0, "bound_pj": 0.5}}}}


def test_asic_tables_print_every_norm_and_the_ratios_to_the_baseline():
    rows = {"l2": {"asic": _fake(2000.0, 2.0, 700.0, 300.0)}, "l1": {"asic": _fake(1000.0, 1.0, 350.0, 150.0)},
            "range": {}}
    lines = train_asic.asic_tables(rows)
    assert any(x.startswith("l1 ") for x in lines) and any(x.startswith("l2 ") for x in lines)
    assert "l1/l2: area 0.500, delay 0.500, energy 0.500, energy at one clock 0.500 (dynamic)" in lines
    assert not any(x.startswith("range") for x in lines)          # not measured: no row
    # the flow's time per step: recorded ones printed, missing ones "-"
    rows["l1"]["asic"]["synth"]["synth_s"] = 540.4
    rows["l1"]["asic"]["energy"].update(verilate_s=276.0, compile_s=919.2, sim_s=126.7, vcd_s=52.6, power_s=9.4)
    times = train_asic.asic_tables(rows)
    times = times[times.index("flow time (s, wall clock; - : not recorded, or reused from an earlier run)") + 2:]
    assert [t.split() for t in times] == [["l2", "-", "-", "-", "-", "-", "-"], ["l1", "540", "276", "919", "127", "53", "9"]]
    assert train_asic.asic_tables({"l1": {}}) == ["NanGate45: not measured (bench/train_accel.py --target asic)"]


def test_net_coefficients_equal_the_power_model(tmp_path):
    """The per-net energy of one transition, applied to any counts, equals the power model on
    them (the window energies of a step are computed this way, in one pass over the netlist)."""
    import json

    from l1bn.sim.asic import operators, power, synth
    from l1bn.sim.rtl import to_verilog

    synth.synth_liberty(to_verilog(operators.operator("add", 8), "top"), tmp_path)
    net = json.loads((tmp_path / "netlist.json").read_text())
    net["modules"] = {k.lstrip("\\"): v for k, v in net["modules"].items()}
    bits = sorted(power.net_coefficients(net))
    rng = np.random.default_rng(1)
    tog = {b: int(rng.integers(0, 5)) for b in bits}
    scope = (lambda n: "a" if n[:1] < "_" else "b")   # noqa: E731 - two made-up scopes
    want = power.power_model(net, tog, clock_bits=bits[:2], scope=scope)
    got = power.apply_coefficients(power.net_coefficients(net, clock_bits=bits[:2], scope=scope), tog)
    assert set(got) <= set(want)
    for sc, v in want.items():
        for k in ("switching_fj", "internal_fj", "clock_fj"):
            assert got.get(sc, {}).get(k, 0.0) == pytest.approx(v[k], rel=1e-9, abs=1e-9)
    assert sum(v["switching_fj"] for v in want.values()) > 0


def test_window_toggles_by_baseline_times(tmp_path):
    """Verilator's dumps: the values at a baseline time are the state before its window (not
    transitions); a window is the times up to the next baseline, also when a baseline dump wrote
    nothing (no change since the previous window: no time line at all); its header is indented."""
    (tmp_path / "d.vcd").write_text("""$scope module sim_top $end
 $scope module dut $end
  $var wire 1 ! n5 $end
 $upscope $end
$upscope $end
$enddefinitions $end
#110
0!
#115
1!
#120
0!
#135
1!
#140
0!
#150
1!
""")
    # baselines 110, 130 (nothing dumped: the state of 120 held), 145 (nothing dumped either)
    ids, wins = train_asic.window_toggles(tmp_path / "d.vcd", baselines={110, 130, 145})
    assert wins == [{("!", 0): 2}, {("!", 0): 2}, {("!", 0): 1}]
    assert train_asic._bit_map(ids, {"ports": {}}, "sim_top.dut") == {("!", 0): 5}


def test_flip_flops_start_at_their_initial_values_at_gate_level(tmp_path):
    """A register that is never reset and a small memory mapped to flip-flops (the training
    accelerator's gamma and LFSR seeds) start at their initial values at gate level: a library
    flip-flop has none, so the netlist gets them as the models' INIT parameters (flop_inits,
    with_parameters). Without them they start at 0: the tiny net's logits were all 0."""
    from amaranth import Module, Signal
    from amaranth.back import rtlil
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out
    from l1bn.sim.asic.activity import cell_models, flop_inits
    from l1bn.sim.asic.synth import synth_liberty

    init = [0x5A, 0x81, 0x3C, 0xF0]

    class M(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(2), "we": In(1), "d": In(8), "q": Out(8), "r": Out(5)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=8, depth=4, init=init)   # 32 bits: flip-flops
            wp, rp = mem.write_port(), mem.read_port(domain="comb")
            r = Signal(5, init=0b10110, reset_less=True)
            m.d.sync += r.eq(r.rotate_left(1))
            m.d.comb += [wp.addr.eq(self.a), wp.en.eq(self.we), wp.data.eq(self.d), rp.addr.eq(self.a),
                         self.q.eq(rp.data), self.r.eq(r)]
            return m

    import json

    synth_liberty(rtlil.convert(M(), name="top"), tmp_path, clock_gating=True, rtlil=True)
    top = json.loads((tmp_path / "netlist.json").read_text())["modules"]["top"]
    ones = flop_inits(top)
    assert len(ones) == sum(bin(v).count("1") for v in init) + 3
    params = {(top["cells"][c]["type"], c): "#(.INIT(1'b1))" for c in ones}
    (tmp_path / "n1.v").write_text(train_asic.with_parameters((tmp_path / "netlist.v").read_text(), params))
    (tmp_path / "n0.v").write_text((tmp_path / "netlist.v").read_text())
    (tmp_path / "cells.v").write_text(cell_models({c["type"] for c in top["cells"].values()}))
    (tmp_path / "tb.v").write_text("""`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 0, we = 0; reg [1:0] a = 0; reg [7:0] d = 0; wire [7:0] q; wire [4:0] r;
  top dut(.clk(clk), .rst(rst), .a(a), .we(we), .d(d), .q(q), .r(r));
  integer k;
  initial begin
    for (k = 0; k < 4; k = k + 1) begin a = k; #1 $display("Q %0d", q); end
    $display("R %0d", r);
    for (k = 0; k < 3; k = k + 1) begin #1 clk = 1; #1 clk = 0; #1 $display("R %0d", r); end
    $finish;
  end
endmodule
""")
    rot = [0b10110]
    for _ in range(3):
        rot.append(((rot[-1] << 1) | (rot[-1] >> 4)) & 31)
    want = [f"Q {v}" for v in init] + [f"R {v}" for v in rot]
    outs = []
    for n in ("n1.v", "n0.v"):
        subprocess.run(["iverilog", "-g2012", "-o", "s.vvp", "tb.v", n, "cells.v"], cwd=tmp_path, check=True)
        outs.append(subprocess.run(["vvp", "-n", "s.vvp"], cwd=tmp_path, check=True, capture_output=True,
                                   text=True).stdout.split("\n")[:8])
    assert outs[0] == want
    assert outs[1] == ["Q 0"] * 4 + ["R 0"] * 4     # the flow before: every flip-flop at 0
    with pytest.raises(RuntimeError, match="not found"):
        train_asic.with_parameters("  DFF_X1 x (.D(n1));\n", {("DFF_X1", "y"): "#(.INIT(1'b1))"})
