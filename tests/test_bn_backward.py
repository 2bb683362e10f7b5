"""The BN backward units against the integer reference on Icarus and Verilator."""

import hashlib
import inspect
import json

import pytest
import torch
from l1bn.hw.bn_backward import (
    L1BNBackwardUnit,
    L2BNBackwardUnit,
    backward_latency_cycles,
    stored_state_bits,
)
from l1bn.sim.runner import SimulationError, run_cocotb, to_verilog
from l1bn.spec.config import BNBackwardConfig, BNConfig
from test_bn_backward_reference import forward_stats, real_grads

BENCH = "l1bn.sim.benches.bn_bwd_tb"
UNITS = {"l1": L1BNBackwardUnit, "l2": L2BNBackwardUnit}


def batch(cfg, seed, real):
    b = cfg.bn
    if real:
        x, dy = real_grads(b.width, b.n, b.channels, seed, cfg.grad_width)
    else:
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(-(1 << (b.width - 1)), 1 << (b.width - 1), (b.channels, b.n), generator=g)
        dy = torch.randint(-(1 << (cfg.grad_width - 1)), 1 << (cfg.grad_width - 1), (b.channels, b.n),
                           generator=g)
        x[0, 0], dy[0, 0] = -(1 << (b.width - 1)), -(1 << (cfg.grad_width - 1))  # min ints
    mu, inv = forward_stats(x, b)
    gamma = torch.tensor([(-1) ** c * (40 + 23 * c) for c in range(b.channels)], dtype=torch.int64)
    return {"x": x.tolist(), "dy": dy.tolist(), "gamma": gamma.tolist(), "mu": mu.tolist(), "inv": inv.tolist()}


def run(cfg, data, simulator, tmp_path, gaps, unit=None, sign_in=False):
    path = tmp_path / "bwd_data.json"
    path.write_text(json.dumps(data))
    dut = (unit or UNITS[cfg.bn.norm])(cfg, sign_in=sign_in)
    return run_cocotb(dut, toplevel="bn_bwd", test_module=BENCH, simulator=simulator,
                      build_dir=tmp_path / "build", config=cfg,
                      extra_env={"L1BN_BWD_DATA": str(path), "L1BN_GAPS": str(gaps),
                                 "L1BN_SIGN_IN": str(int(sign_in))})


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
    res = run(cfg, batch(cfg, seed=width + n, real=real), simulator, tmp_path, gaps)
    assert res.passed and [t.name for t in res.tests] == ["bn_backward_matches_reference"]


SIGN_IN_CASES = [  # (simulator, width, n, gaps): both widths on Icarus, one on Verilator (~20 s each)
    ("icarus", 8, 16, 30),
    ("icarus", 16, 5, 0),
    ("verilator", 16, 5, 0),
]


@pytest.mark.parametrize("simulator,width,n,gaps", SIGN_IN_CASES)
def test_l1_sign_in_bit_exact(simulator, width, n, gaps, tmp_path):
    """neg from the reference's sign in both passes, garbage x in pass 2 (see the bench)."""
    cfg = config("l1", width, n)
    res = run(cfg, batch(cfg, seed=7 * width + n, real=False), simulator, tmp_path, gaps, sign_in=True)
    assert res.passed and [t.name for t in res.tests] == ["bn_backward_matches_reference"]


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
    """Silence Amaranth's UnusedElaboratable for a unit only asked for its interface."""
    unit._MustUse__silence = True
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
    with pytest.raises(ValueError, match="sign_in=1 must be a bool"):
        L1BNBackwardUnit(cfg, sign_in=1)
    sig = inspect.signature(L1BNBackwardUnit.__init__).parameters["sign_in"]
    assert sig.kind is inspect.Parameter.KEYWORD_ONLY and sig.default is False


# sha256 of the default (sign_in=False) Verilog, taken before sign_in existed: the report flow
# measures the default, so any change to it must be deliberate (then update these hashes).
DEFAULT_VERILOG_SHA256 = {
    "l1": "2d539187df285ab9a4e5b080ef2f5eedec808ba7f710eaef0b246622159bc0bb",
    "l2": "3cc648681fbeade2273540dd2d32187f893bd8c95029ad9731592a6982306ea5",
}


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_default_verilog_unchanged(norm):
    cfg = config(norm, 8, 16)
    text = to_verilog(UNITS[norm](cfg), f"{norm}bn_bwd")
    assert text == to_verilog(UNITS[norm](cfg, sign_in=False), f"{norm}bn_bwd")
    assert hashlib.sha256(text.encode()).hexdigest() == DEFAULT_VERILOG_SHA256[norm]


class BrokenL1(L1BNBackwardUnit):
    """Test-only mutant: uses 2c instead of c = sqrt(pi/2) in the sign term."""

    def elaborate(self, platform):
        import l1bn.hw.bn_backward as mod
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


def test_api_and_errors():
    cfg = config("l1", 8, 16)
    assert backward_latency_cycles(cfg) == 2 * (2 * 16 + 5) + 1
    s = stored_state_bits(cfg)
    assert s["l1"] == s["l2"] == 8 and s["l1_pass2"] == 1 and s["l2_pass2"] == 8
    with pytest.raises(ValueError, match="does not match L2BNBackwardUnit"):
        L2BNBackwardUnit(cfg)
    with pytest.raises(ValueError, match="lanes=2 is not supported"):
        L1BNBackwardUnit(BNBackwardConfig(bn=BNConfig(n=16, lanes=2)))
    with pytest.raises(ValueError, match="must be a BNBackwardConfig"):
        L1BNBackwardUnit(BNConfig())


def test_verilog_cli(tmp_path, capsys):
    from l1bn.cli.main import main

    out = tmp_path / "l1bn_bwd.v"
    main(["verilog", "l1bn-bwd", "--width", "8", "--n", "16", "-o", str(out)])
    assert "module l1bn_bwd" in out.read_text()
    assert "latency 38 cycles" in capsys.readouterr().out
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
