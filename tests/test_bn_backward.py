"""The BN backward units against the integer reference on Icarus and Verilator."""

import inspect
import re

import numpy as np
import pytest
from amaranth.hdl import Fragment
from l1bn.hw.bn_backward import (
    L1BNBackwardUnit,
    L2BNBackwardUnit,
    RangeBNBackwardUnit,
    backward_latency_cycles,
    pass2_cycles,
    per_channel_cycles,
    stored_state_bits,
)
from l1bn.sim.rtl import to_verilog
from l1bn.sim.simulate.bwd import random_bwd_batch, simulate_bn_backward
from l1bn.sim.simulate.runner import SimulationError, stream_ports
from l1bn.spec.config import BNBackwardConfig, BNConfig

UNITS = {"l1": L1BNBackwardUnit, "l2": L2BNBackwardUnit, "range": RangeBNBackwardUnit}


def batch(cfg, seed, real):
    """(x, dy, gamma): random or real digits-CNN gradients, gamma of both signs."""
    x, dy = random_bwd_batch(cfg, seed=seed, source="real" if real else "random")
    gamma = np.array([(-1) ** c * (40 + 23 * c) for c in range(cfg.bn.channels)], dtype=np.int64)
    return x, dy, gamma


def run(cfg, data, simulator, tmp_path, gaps, unit=None, sign_in=False):
    x, dy, gamma = data
    return simulate_bn_backward(cfg, x, dy, gamma, simulator=simulator, gaps=gaps, build_dir=tmp_path,
                                sign_in=sign_in, unit=unit)


def config(norm, width, n, channels=2):
    if width == 16:
        b = BNConfig(norm=norm, width=16, n=n, channels=channels, frac=0, recip_bits=32)
        return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=24, grad_out_frac=18)
    b = BNConfig(norm=norm, width=width, n=n, channels=channels)
    return BNBackwardConfig(bn=b, grad_width=8, inner_frac=6, grad_out_width=20, grad_out_frac=10)


CASES = [  # (simulator, norm, width, n, gaps, real digits gradients)
    ("icarus", "l1", 8, 2, 0, False),
    ("icarus", "l1", 16, 24, 30, False),
    ("icarus", "l2", 8, 64, 30, True),
    ("icarus", "l2", 16, 5, 0, False),
    ("verilator", "l1", 16, 64, 0, True),
    ("verilator", "l2", 8, 16, 30, False),
]


@pytest.mark.parametrize("simulator,norm,width,n,gaps,real", CASES)
def test_unit_bit_exact(simulator, norm, width, n, gaps, real, tmp_path):
    cfg = config(norm, width, n)
    r = run(cfg, batch(cfg, seed=width + n, real=real), simulator, tmp_path, gaps)
    assert r["passed"] and r["mismatches"] == r["g_mismatches"] == 0
    assert r["outputs"] == cfg.bn.channels * cfg.bn.n and r["g_seen"] == cfg.bn.channels
    if gaps == 0:
        assert r["cycles"] == r["formula"] == backward_latency_cycles(cfg)


SIGN_IN_CASES = [  # (simulator, width, n, gaps): both widths on Icarus, one on Verilator (~20 s each)
    ("icarus", 8, 16, 30),
    ("icarus", 16, 5, 0),
    ("verilator", 16, 5, 0),
]


@pytest.mark.parametrize("simulator,width,n,gaps", SIGN_IN_CASES)
def test_l1_sign_in_bit_exact(simulator, width, n, gaps, tmp_path):
    """neg from the reference's sign in both passes, garbage x in pass 2 (see the bench)."""
    cfg = config("l1", width, n)
    r = run(cfg, batch(cfg, seed=7 * width + n, real=False), simulator, tmp_path, gaps, sign_in=True)
    assert r["passed"] and r["sign_in"] and r["mismatches"] == r["g_mismatches"] == 0


class XInPass2(L1BNBackwardUnit):
    """Test-only mutant: the sign_in interface, but the sign comes from the comparator on x."""

    def elaborate(self, platform):
        self.sign_in = False   # builds the comparator datapath; the port layout stays sign_in's
        try:
            return super().elaborate(platform)
        finally:
            self.sign_in = True


def test_sign_in_mutant_reading_x_is_caught(tmp_path):
    """Pass-2 x is garbage in the bench, so a unit that still reads it must fail."""
    cfg = config("l1", 8, 16)
    with pytest.raises(SimulationError) as e:
        run(cfg, batch(cfg, seed=72, real=False), "icarus", tmp_path, 0, unit=XInPass2, sign_in=True)
    assert e.value.failed == ["bn_backward_matches_reference"]


def _built_only(unit):
    """Elaborate a unit only asked for its interface (so it is not an unused design)."""
    Fragment.get(unit, None)
    return unit


def test_sign_in_interface_and_refusals():
    cfg = config("l1", 8, 16)
    assert "neg" not in _built_only(L1BNBackwardUnit(cfg)).in_layout.members
    u = _built_only(L1BNBackwardUnit(cfg, sign_in=True))
    assert u.sign_in and dict(u.in_layout.members)["neg"].width == 1
    assert u.in_layout.size == 8 + cfg.grad_width + 1
    with pytest.raises(ValueError, match="sign_in=True is not supported by L2BNBackwardUnit: its pass 2 "
                                         "rebuilds xhat_i from x"):
        L2BNBackwardUnit(config("l2", 8, 16), sign_in=True)
    with pytest.raises(TypeError, match="sign_in=1 must be a bool"):
        L1BNBackwardUnit(cfg, sign_in=1)
    sig = inspect.signature(L1BNBackwardUnit.__init__).parameters["sign_in"]
    assert sig.kind is inspect.Parameter.KEYWORD_ONLY and sig.default is False


def verilog_ports(text: str, module: str) -> dict:
    """``{port: (direction, width)}`` from the port declarations of ``module`` in Verilog text."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    decl = re.findall(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?([\w$\\.]+)\s*;",
                      body, re.M)
    return {name: (d, int(msb) + 1 if msb else 1) for d, msb, name in decl}


@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
def test_default_ports_and_widths(norm):
    """The report flow measures the default unit: its stream layouts and every Verilog port's
    direction and width follow from the config (the stored sign input adds only ``neg``)."""
    cfg = config(norm, 8, 16)
    b, w = cfg.bn, cfg.widths
    unit = UNITS[norm](cfg)
    ports = stream_ports(unit)
    assert {k: v["flow"] for k, v in ports.items()} == {"i": "in", "o": "out", "g": "out"}
    fields = {k: {f: (fl.shape.width, fl.shape.signed) for f, fl in ports[k]["shape"]} for k in ("i", "g")}
    assert fields == {"i": {"x": (b.width, True), "dy": (cfg.grad_width, True)},
                      "g": {"dgamma": (w["h"], True), "dbeta": (w["sum_dy"], True)}}
    o = ports["o"]["shape"]
    assert (o.width, o.signed) == (cfg.grad_out_width, True)
    assert verilog_ports(to_verilog(unit, "bn_bwd"), "bn_bwd") == {
        "clk": ("input", 1), "rst": ("input", 1),
        "i__payload": ("input", b.width + cfg.grad_width), "i__valid": ("input", 1), "i__ready": ("output", 1),
        "mu": ("input", b.dev_bits), "inv": ("input", b.recip_bits + 1), "gamma": ("input", b.gamma_width),
        "o__payload": ("output", cfg.grad_out_width), "o__valid": ("output", 1), "o__ready": ("input", 1),
        "g__payload": ("output", w["h"] + w["sum_dy"]), "g__valid": ("output", 1), "g__ready": ("input", 1),
    }


class BrokenL1(L1BNBackwardUnit):
    """Test-only mutant: uses 2c instead of c = sqrt(pi/2) in the sign term."""

    def elaborate(self, platform):
        import l1bn.hw.bn_l1 as mod
        orig = mod.c_const
        mod.c_const = lambda cb: 2 * orig(cb)
        try:
            return super().elaborate(platform)
        finally:
            mod.c_const = orig


def test_mutant_is_caught(tmp_path):
    cfg = config("l1", 8, 16)
    with pytest.raises(SimulationError) as e:
        run(cfg, batch(cfg, seed=3, real=False), "icarus", tmp_path, 0, unit=BrokenL1)
    assert e.value.failed == ["bn_backward_matches_reference"]


def test_api_and_errors(monkeypatch):
    import dataclasses

    from l1bn.spec import norms

    cfg = config("l1", 8, 16)
    # n = 16 covers the pass-2 pipeline, so pass 2 never waits for the previous channel's dx
    assert backward_latency_cycles(cfg) == 2 * (2 * 16 + per_channel_cycles(cfg)) + pass2_cycles(cfg)
    s = stored_state_bits(cfg)
    assert s["l1"] == s["l2"] == s["range"] == 8 and s["l1_pass2"] == 1 and s["l2_pass2"] == s["range_pass2"] == 8
    assert set(s) == {"l1", "l1_pass2", "l2", "l2_pass2", "l2_pass2_if_xhat_stored", "range", "range_pass2"}
    # a norm registered without a backward unit is refused by every function that needs one
    monkeypatch.setitem(norms.NORMS, "range", dataclasses.replace(norms.RANGE, hw_backward=""))
    with pytest.raises(ValueError, match="norm='range' has no backward unit; the norms with one are 'l1', 'l2'"):
        pass2_cycles(BNBackwardConfig(bn=BNConfig(norm="range", n=16)))
    assert "range" not in stored_state_bits(cfg)
    with pytest.raises(ValueError, match="does not match L2BNBackwardUnit"):
        L2BNBackwardUnit(cfg)
    with pytest.raises(ValueError, match="lanes=2 is not supported"):
        L1BNBackwardUnit(BNBackwardConfig(bn=BNConfig(n=16, lanes=2)))
    with pytest.raises(TypeError, match="must be a BNBackwardConfig"):
        L1BNBackwardUnit(BNConfig())


def test_verilog_cli(tmp_path, capsys):
    from l1bn.cli.main import main

    out = tmp_path / "l1bn_bwd.v"
    main(["verilog", "l1bn-bwd", "--width", "8", "--n", "16", "-o", str(out)])
    assert "module l1bn_bwd" in out.read_text()
    cfg = BNBackwardConfig(bn=BNConfig(norm="l1", width=8, n=16, channels=1), grad_width=8)
    assert f"latency {backward_latency_cycles(cfg)} cycles" in capsys.readouterr().out
    main(["verilog", "l1bn-bwd", "--width", "8", "--n", "16", "--sign-in", "-o", str(out)])
    assert "input [16:0] i__payload;" in out.read_text()   # x[8], dy[8], neg[1]
    assert "neg[1]): x read in pass 1 only" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["verilog", "l2bn-bwd", "--sign-in", "-o", str(out)])
    assert e.value.code == 2 and "No such option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["verilog", "l2bn-bwd", "--grad-width", "1", "-o", str(out)])
    assert e.value.code == 2
    assert "error: grad_width=1 is out of range; allowed 2..24" in capsys.readouterr().err
