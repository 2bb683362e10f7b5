"""ASIC realism (issue 28): clock gating through the library's integrated clock gate and large
buffers as SRAM macros (:mod:`l1bn.sim.asic.synth`, :mod:`l1bn.sim.asic.sram`): the clock gate's
gate-level model, a BN unit still bit-exact at gate level with both, the SRAM access counts
against the schedule, and the cache keys of the flow without the options unchanged."""

import subprocess

import numpy as np
import pytest
from l1bn.sim.asic import activity, liberty, sram, step, synth
from l1bn.sim.report import asic as report_asic
from l1bn.sim.report.units import forward_beats, forward_config


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "work"


def test_clock_gate_model_gates_only_when_enabled(tmp_path):
    """CLKGATE_X1 at gate level: GCK pulses exactly in the cycles whose enable was high before the
    rising clock edge; an enable that changes while the clock is high does not reach GCK (latch)."""
    cell = synth.CLOCK_GATE_CELL
    assert liberty.read_liberty()["cells"][cell]["icg"] == "latch_posedge"
    en = [1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    (tmp_path / "cells.v").write_text(activity.cell_models({cell}))
    (tmp_path / "tb.v").write_text(f"""`timescale 1ns/1ps
module tb;
  reg ck = 0, e = 0;
  wire g;
  integer k, pulses = 0;
  reg [{len(en) - 1}:0] pat = {len(en)}'b{''.join(map(str, reversed(en)))};
  {cell} u(.CK(ck), .E(e), .GCK(g));
  always @(posedge g) pulses = pulses + 1;
  initial begin
    for (k = 0; k < {len(en)}; k = k + 1) begin
      #2 e = pat[k];          // enable set while the clock is low
      #3 ck = 1;
      #1 $display("C %0d %0d", k, g);
      e = ~pat[k];            // a glitch on the enable while the clock is high: no effect
      #1 e = pat[k];
      #3 ck = 0;
    end
    $display("P %0d", pulses);
    $finish;
  end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", "cells.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "t.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    seen = [int(line.split()[2]) for line in out.splitlines() if line.startswith("C ")]
    assert seen == en
    assert f"P {sum(en)}" in out


def _odd_accumulator():
    """A stream component whose 12-bit sum loads only on odd inputs: an enable that is off in
    about half the cycles, a synchronous reset, and enough flip-flops for one clock gate."""
    from amaranth import Module, Signal
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    class OddAccumulator(wiring.Component):
        i: In(stream.Signature(8))
        o: Out(stream.Signature(12))

        def elaborate(self, platform):
            m = Module()
            acc, v = Signal(12), Signal()
            m.d.comb += [self.i.ready.eq(~self.o.valid | self.o.ready), self.o.payload.eq(acc), self.o.valid.eq(v)]
            with m.If(self.i.ready):
                m.d.sync += v.eq(self.i.valid)
                with m.If(self.i.valid & self.i.payload[0]):
                    m.d.sync += acc.eq(acc + self.i.payload)
            return m

    return OddAccumulator()


def test_small_design_bit_exact_with_clock_gating(build):
    """A gated register at gate level: the accumulator's flip-flops get one clock gate, lose
    their enable multiplexers, and the netlist's outputs are the running sums of the odd inputs
    (the gated clock pulses only in the cycles that load); less clock energy than ungated."""
    xs = [(37 * k + 11) % 256 for k in range(60)]
    want, acc = [], 0
    for x in xs:
        acc = (acc + x) % 4096 if x % 2 else acc
        want.append(acc)
    kw = dict(sim="stream", beats=[{"i__payload": x} for x in xs], expect_out=len(xs), keep_outputs=True)
    gated = step.asic_step(_odd_accumulator(), name="acc-g", workdir=build, clock_gating=True, **kw)
    plain = step.asic_step(_odd_accumulator(), name="acc-p", workdir=build, **kw)
    assert gated["outputs"] == plain["outputs"] == want
    assert gated["clock_gates"] == 1 and plain["dff"] == gated["dff"]
    assert gated["clock_fj"] < plain["clock_fj"]


def test_sram_energy_and_area_model():
    # Horowitz's point itself, then the scaling: linear in the word, sqrt in the capacity
    assert sram.access_pj(64, 1024) == pytest.approx(10.0)
    assert sram.access_pj(32, 2048) == pytest.approx(5.0)      # same capacity, half the word
    assert sram.access_pj(64, 4096) == pytest.approx(20.0)                       # 4x capacity: 2x
    cell = sram.macro_cell(sram.macro_type(32, 64, 1, 1))
    assert cell["area"] == pytest.approx(sram.FAKERAM_AREA_UM2)
    assert cell["leakage_nw"] == pytest.approx(sram.FAKERAM_LEAKAGE_NW)
    assert sram.parse_type("DFF_X1") is None


def _small_unit(norm="l1"):
    # 64 x 4 bits = 256 bits per buffer: the smallest buffer that becomes a macro
    cfg = forward_config(norm, 4, n=64, lanes=1, channels=3)
    assert cfg.width * cfg.beats >= sram.SRAM_MIN_BITS
    return cfg


def _expected(cfg, beats):
    """The reference's y of the report's stimulus (real activations; gamma and beta of each
    channel as its beats carry them), as the unit's output payloads (lanes = 1)."""
    import torch
    from l1bn.spec.reference.bn import bn_forward
    from l1bn.sw.capture import bn_inputs

    x = bn_inputs(width=cfg.width, n=cfg.n, channels=cfg.channels, seed=0)
    g = torch.tensor([beats[c * cfg.beats]["gamma"] for c in range(cfg.channels)], dtype=torch.int64)
    b = torch.tensor([beats[c * cfg.beats]["beta"] for c in range(cfg.channels)], dtype=torch.int64)
    y = np.asarray(bn_forward(x, g, b, cfg).y).reshape(-1)
    return [int(v) & ((1 << cfg.out_width) - 1) for v in y]


@pytest.mark.slow
def test_unit_bit_exact_with_clock_gating_and_sram(build):
    """One BN unit through the flow three ways (plain, clock gating, clock gating + SRAM): the
    mapped netlist computes the reference bit for bit every time; gating cuts the clock energy;
    the SRAM flow has exactly the buffers' flip-flops fewer, and its macros are written once per
    beat and read twice per beat (dispersion, normalize), charged at the model's energy."""
    from l1bn.hw.bn_unit import bn_unit_for

    cfg = _small_unit()
    beats, elems = forward_beats(cfg)
    want = _expected(cfg, beats)
    kw = dict(sim="stream", beats=beats, expect_out=elems, keep_outputs=True)
    plain = step.asic_step(bn_unit_for(cfg), name="plain", workdir=build, **kw)
    gated = step.asic_step(bn_unit_for(cfg), name="gated", workdir=build, clock_gating=True, **kw)
    both = step.asic_step(bn_unit_for(cfg), name="both", workdir=build, clock_gating=True, sram=True, **kw)
    assert plain["outputs"] == gated["outputs"] == both["outputs"] == want
    assert "clock_gates" not in plain and "srams" not in gated
    assert gated["clock_gates"] > 0
    assert sum(n for c, n in gated["cells_by_type"].items() if c.startswith("CLKGATE_X")) == gated["clock_gates"]
    assert gated["clock_fj"] < plain["clock_fj"]
    assert gated["dff"] == plain["dff"]               # gating moves no register
    # three buffers of n/lanes words, each with two registered read ports: all inside the macros
    buffer_bits = 3 * (cfg.beats + 2) * cfg.width * cfg.lanes
    assert [m["cell"] for m in both["srams"]] == ["sram_buf0", "sram_buf1", "sram_buf2"]
    assert both["dff"] == gated["dff"] - buffer_bits
    t = sram.macro_type(cfg.width * cfg.lanes, cfg.beats, 2, 1)      # two read ports, one write port
    assert {m["type"] for m in both["srams"]} == {t}
    assert both["sram_area_um2"] == pytest.approx(3 * sram.macro_cell(t)["area"])
    reads = sum(m["read_accesses"] for m in both["srams"])
    writes = sum(m["write_accesses"] for m in both["srams"])
    assert writes == cfg.channels * cfg.beats            # one write per input beat
    assert reads == 2 * cfg.channels * cfg.beats         # dispersion + normalize, one read per beat each
    per = sram.access_pj(cfg.width * cfg.lanes, cfg.beats)
    assert both["sram_fj"] == pytest.approx((reads + writes) * per * 1000, rel=1e-3)
    assert both["dynamic_fj"] == pytest.approx(both["switching_fj"] + both["internal_fj"] + both["clock_fj"]
                                               + both["sram_fj"], rel=1e-6)


def test_cache_keys_of_the_old_flow_are_unchanged():
    """The flow without the options keeps its parameters (so its cache keys) exactly; each option
    adds its own key."""
    old = step.asic_params()
    assert set(old) == {"asic_version", "lib_sha256", "sta", "abc_script", "wire_load", "slew"}
    assert step.asic_params(clock_gating=False, sram=False) == old
    cg, sr = step.asic_params(clock_gating=True), step.asic_params(sram=True)
    assert set(cg) - set(old) == {"clock_gating"} and set(sr) - set(old) == {"sram"}
    job = step.asic_job(verilog="module top; endmodule", name="x")
    assert job.key == step.asic_job(verilog="module top; endmodule", name="x", clock_gating=False,
                                      sram=False).key
    assert len({job.key, step.asic_job(verilog="module top; endmodule", name="x", clock_gating=True).key,
                step.asic_job(verilog="module top; endmodule", name="x", sram=True).key}) == 3
    assert report_asic.ASIC_OPTIONS == ("clock_gating", "sram")


def test_cli_options_refused_for_fpga_and_with_network(l1bn_cli, tmp_path):
    """The ASIC options only with an ASIC target: one error line, nothing written."""
    out_dir = tmp_path / "r"
    code, out = l1bn_cli(["report", "--target", "fpga", "--no-asic-sram", "--widths", "4", "--out", str(out_dir)])
    assert code == 2 and "error: --asic-clock-gating and --asic-sram apply to --target asic or both" in out
    assert not out_dir.exists()
    code, out = l1bn_cli(["report", "--network", "digits", "--asic-clock-gating", "--out", str(out_dir)])
    assert code == 2 and "--asic-clock-gating/--no-asic-clock-gating is an option of the flows" in out
    assert not out_dir.exists()
