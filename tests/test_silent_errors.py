"""Nothing silently wrong (issue 32): each case of the issue's "silent or unclear" list, rerun.
Refused up front with one line naming the right option, or reported; a full disk is one line and
leaves nothing half-written."""

from __future__ import annotations

import errno
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _one_error(code, err, *words):
    """Exit 2, one ``error:`` line, the last (a progress bar may come before it), no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], err


# ---------------------------------------------------------------------------------- import


def _plain_net():
    """A random net whose first layer's folded BN is the identity: power-of-two scale, zero bias."""
    import dataclasses

    from l1bn.spec.reference.infer_bn import fold_affine
    from l1bn.spec.reference.network import random_int_net

    net = random_int_net(seed=0)
    c1 = net.layers[0]
    ident = fold_affine(torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64),
                        acc_exp=c1.w_exp + c1.a_exp, out_exp=c1.out_exp, acc_bits=c1.acc_bits, out_bits=4)
    return dataclasses.replace(net, layers=(dataclasses.replace(c1, bn=ident),) + net.layers[1:])


def _with_bias_and_round(net, bias: np.ndarray):
    """The QONNX model of ``net`` with conv1's Add constant set to ``bias`` and its activation
    quantizer rounding ROUND (ties to even)."""
    import onnx
    from l1bn.sw.qonnx_export import intnet_to_qonnx
    from onnx import numpy_helper

    m = intnet_to_qonnx(net)
    for i, t in enumerate(m.graph.initializer):
        if t.name == "conv1.bn_add":
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(bias.reshape(16, 1, 1).astype(np.float64),
                                                                     t.name))
    for n in m.graph.node:
        if n.name == "conv1.out_quant":
            for a in n.attribute:
                if a.name == "rounding_mode":
                    n.attribute.remove(a)
                    break
            n.attribute.append(onnx.helper.make_attribute("rounding_mode", "ROUND"))
    return m


def test_import_rounds_ties_per_channel_like_qonnx(tmp_path, monkeypatch):
    """A bias that is exactly 0 on a few channels and not a short binary fraction elsewhere: those
    channels land on rounding ties, where ROUND rounds to even. The layer-wide rule (exact only when
    every channel is) rounded them half up: the logits differed from qonnx's. Per channel, the
    requantizer rounds half to even and the import's logits equal qonnx's on all 360 images."""
    import onnx
    from l1bn.sw import qonnx_graph
    from l1bn.sw.qonnx_import import import_qonnx, load_qonnx, qonnx_to_graph

    bias = np.full(16, 0.1)
    bias[[3, 11]] = 0.0
    m = _with_bias_and_round(_plain_net(), bias)
    onnx.save(m, str(tmp_path / "m.onnx"))
    g, _ = qonnx_to_graph(load_qonnx(m), mult_bits=24)
    assert g.nodes[0].requant.rounding == "half_even"
    r = import_qonnx(tmp_path / "m.onnx", tmp_path / "e")
    assert r.images == 360 and r.max_logit_diff == 0.0 and r.disagreements == 0
    # the layer-wide rule, for contrast: the two channels on ties round differently from qonnx
    monkeypatch.setattr(qonnx_graph, "_exact_channels", lambda rq, a, b: np.zeros(np.shape(rq.mult), bool))
    r = import_qonnx(tmp_path / "m.onnx", tmp_path / "e2")
    assert r.max_logit_diff > 0


@pytest.mark.parametrize("damage", ["single_float", "unknown_opset"])
def test_import_onnxruntime_failure_is_one_error_line(tmp_path, cli_streams, damage):
    """onnxruntime cannot run the model in import's check step: one line, nothing written."""
    import onnx
    from l1bn.spec.reference.network import random_int_net
    from l1bn.sw.qonnx_export import write_qonnx

    src = write_qonnx(random_int_net(seed=0), tmp_path / "m.onnx")
    bad = tmp_path / "bad.onnx"
    if damage == "single_float":
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.double_to_single_float import DoubleToSingleFloat

        ModelWrapper(str(src)).transform(DoubleToSingleFloat()).save(str(bad))
    else:
        p = onnx.load(str(src))
        for o in p.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 99
        onnx.save(p, str(bad))
    code, _, err = cli_streams(["import", str(bad), "--out", str(tmp_path / "e")])
    _one_error(code, err)
    assert "cannot run the model" in err or "failed" in err, err
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------------------------- export


def test_qonnx_export_refuses_nan_weights(tiny_run, tmp_path, cli_streams):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ck = torch.load(run / "model.pt", weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if k.endswith("weight") and v.dim() == 2)
    ck["state_dict"][name][0, 0] = float("nan")
    torch.save(ck, run / "model.pt")
    for argv in (["export", str(run), "--format", "qonnx", "--out", str(tmp_path / "m.onnx")],
                 ["export", str(run), "--out", str(tmp_path / "e")]):
        code, _, err = cli_streams(argv)
        _one_error(code, err, "NaN or infinite")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "e").exists()


def test_export_reports_the_agreement_and_warns_below_the_threshold(tiny_run, tmp_path, cli_streams):
    code, out, err = cli_streams(["export", str(tiny_run), "--out", str(tmp_path / "a"), "--mult-bits", "2",
                          "--min-agreement", "100"])
    assert code == 0 and "agreement with the QAT model:" in out, out + err
    pct = float(out.split("agreement with the QAT model:")[1].split("%")[0])
    assert pct < 100 and "warning: the integer network agrees with the QAT model on only" in err
    assert "--mult-bits (now 2)" in err
    code, out, err = cli_streams(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--mult-bits", "2",
                          "--min-agreement", str(math.floor(pct) - 1)])
    assert code == 0 and "warning" not in err and f"{pct:.2f} %" in out
    for v in ("nan", "101", "-1"):
        code, _, err = cli_streams(["export", str(tiny_run), "--out", str(tmp_path / "c"), "--min-agreement", v])
        _one_error(code, err, "--min-agreement")
    assert not (tmp_path / "c").exists()


# -------------------------------------------------------------- outputs writable before any work


@pytest.mark.parametrize("command", ["train", "report", "sweep"])
def test_read_only_output_is_refused_before_any_work(tmp_path, cli_streams, monkeypatch, command):
    """A read-only output was found only after the work (train trained to the end, sweep ran 26 s
    then left an empty folder). The work itself is made to fail the test if it starts."""
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:   # root writes anywhere: a read-only mount is what refuses it
        real = tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if dir is not None and Path(dir).resolve() == ro.resolve():
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        ro.chmod(0o555)

    def no_work(*a, **k):
        raise AssertionError("the work started")

    import l1bn.sim.report.fpga as fpga
    import l1bn.sim.sweep.run as sweep_run
    import l1bn.sw.train as train

    monkeypatch.setattr(train, "train_model", no_work)
    monkeypatch.setattr(fpga, "build_report", no_work)
    monkeypatch.setattr(sweep_run, "run_sweep", no_work)
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    argv = {"train": ["train", "--model", "mlp", "--epochs", "1", "--out", str(ro / "run")],
            "report": ["report", "--widths", "4", "--no-pnr", "--out", str(ro / "rep")],
            "sweep": ["sweep", "--no-pnr", "--out", str(ro / "sw")]}[command]
    code, _, err = cli_streams(argv)
    _one_error(code, err, "not writable")
    ro.chmod(0o755)
    assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------- sweep, prove options


@pytest.mark.parametrize("argv, first", [
    (["--lanes", "0"], "error: lanes=0 is out of range"),
    (["--width", "29"], "error: width=29 is not allowed"),
])
def test_sweep_errors_name_the_option_given(tmp_path, cli_streams, argv, first):
    code, _, err = cli_streams(["sweep", *argv, "--out", str(tmp_path / "s")])
    _one_error(code, err)
    assert err.startswith(first), err
    assert not (tmp_path / "s").exists()


def test_sweep_spec_refuses_a_fractional_width(tmp_path, cli_streams):
    spec = tmp_path / "s.toml"
    spec.write_text("width = [4.5]\n")
    code, _, err = cli_streams(["sweep", "--spec", str(spec), "--out", str(tmp_path / "s")])
    _one_error(code, err, "width=4.5 must be an integer")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_prove_timeout_must_be_finite(tmp_path, cli_streams, value):
    code, _, err = cli_streams(["prove", "mac", "--timeout", value, "-o", str(tmp_path / "p")])
    _one_error(code, err, "--timeout")
    assert not (tmp_path / "p").exists()


def test_prove_unknown_is_not_exit_0(tmp_path, cli_streams, monkeypatch):
    """Every property UNKNOWN (here: the checker's results replaced) exits 3, not 0."""
    import l1bn.sim.formal.check as check

    def unknown(props, workdir, *, echo=None, **kw):
        rs = [check.Result(p.name, "UNKNOWN", "bmc", 0, 0.1, detail="timeout") for p in props]
        for r in rs:
            echo(r)
        return rs

    monkeypatch.setattr(check, "check_all", unknown)
    code, out, err = cli_streams(["prove", "mac", "--rows", "2", "--cols", "2", "-o", str(tmp_path / "p")])
    assert code == 3 and "UNKNOWN" in out and "0 failed" in out, out + err
    assert err.startswith("error: ") and "not proven" in err


# ------------------------------------------------------------------------------- full disk


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")   # sim mac stops before elaborating
@pytest.mark.parametrize("command", ["train", "export", "verilog net", "sim mac", "prove", "report"])
def test_full_disk_is_one_error_line_and_leaves_nothing(tiny_run, tmp_path, cli_streams, monkeypatch, command):
    """ENOSPC in the middle of the command's own writes: one line, no partial output."""
    from l1bn.spec.export import load_export  # noqa: F401 - imported before the patch

    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    out = tmp_path / "out"
    real_wt, real_wb = Path.write_text, Path.write_bytes

    def fail_on(parts):
        def wt(self, *a, **k):
            if any(x in self.name for x in parts):
                _enospc()
            return real_wt(self, *a, **k)

        def wb(self, *a, **k):
            if any(x in self.name for x in parts):
                _enospc()
            return real_wb(self, *a, **k)
        monkeypatch.setattr(Path, "write_text", wt)
        monkeypatch.setattr(Path, "write_bytes", wb)

    if command == "train":
        fail_on(("model.pt",))
        argv = ["train", "--model", "mlp", "--epochs", "1", "--out", str(out)]
    elif command == "export":
        import l1bn.spec.export as E

        real_add = E._Writer.add
        calls = []

        def add(self, *a, **k):
            calls.append(1)
            if len(calls) == 3:
                _enospc()
            return real_add(self, *a, **k)
        monkeypatch.setattr(E._Writer, "add", add)
        argv = ["export", str(tiny_run), "--out", str(out)]
    elif command == "verilog net":
        from l1bn.spec.export import write_export
        from l1bn.spec.reference.network import random_int_net

        e = write_export(random_int_net(seed=1), tmp_path / "e")
        fail_on(("conv3.mult.hex",))
        argv = ["verilog", "net", str(e), "-o", str(out)]
    elif command == "sim mac":
        fail_on(("mac_data.json",))
        argv = ["sim", "mac", "--rows", "2", "--cols", "2", "--tiles", "1"]
        out = tmp_path / "build"
    elif command == "prove":
        fail_on((".smt2", ".ys"))
        argv = ["prove", "mac", "--rows", "2", "--cols", "2", "--wbits", "2", "--abits", "2", "--k", "2",
                "--props", "drain", "-o", str(out)]
    else:
        import l1bn.sim.report.fpga as fpga
        import l1bn.sim.report.write as write

        def build_report(*a, workdir, **k):
            (Path(workdir) / "half").mkdir(parents=True)    # some work done in the output folder
            return {"target": "fpga"}, {"seconds": 0.0, "cached": 0, "steps": 0}
        monkeypatch.setattr(fpga, "build_report", build_report)
        monkeypatch.setattr(write, "write_report", _enospc)
        argv = ["report", "--widths", "4", "--no-pnr", "--out", str(out)]
    code, _, err = cli_streams(argv)
    _one_error(code, err, "no space left on the device")
    if command == "sim mac":   # the simulator's new build folder is gone (the build root stays)
        assert not out.exists() or list(out.iterdir()) == []
    else:
        assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# ------------------------------------------------------------------------ big simulations


def test_sim_bn_largest_config_is_refused_up_front(cli_streams, monkeypatch, tmp_path):
    """width 32, n 65536, 4096 channels, 64 lanes died with a MemoryError: now refused from the
    memory estimate before anything is generated."""
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    code, _, err = cli_streams(["sim", "bn", "--width", "32", "--n", "65536", "--channels", "4096", "--lanes", "64"])
    _one_error(code, err, "memory")
    assert not (tmp_path / "build").exists()


def test_sim_mac_long_run_is_estimated_up_front(cli_streams, monkeypatch, tmp_path):
    """16x16 with --k 65536 ran for more than 10 minutes without a word: a run that cannot fit in
    memory is refused, a long one announced with its estimated time before it starts."""
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    code, _, err = cli_streams(["sim", "mac", "--rows", "16", "--cols", "16", "--k", "65536", "--tiles", "1000"])
    _one_error(code, err, "memory")
    import l1bn.sim.simulate.mac as mac

    ran = []
    monkeypatch.setattr(mac, "random_tiles", lambda *a, **k: [])
    monkeypatch.setattr(mac, "simulate_mac", lambda *a, **k: ran.append(1) or {
        "outputs": 0, "mismatches": 0, "first": [], "cycles": 0, "input_stalls": 0, "passed": True})
    code, _, err = cli_streams(["sim", "mac", "--rows", "16", "--cols", "16", "--k", "65536"])
    assert code == 0 and ran == [1]
    assert err.startswith("warning: about 1 h") and "524,308 cycles of a 16x16 array" in err, err
    code, _, err = cli_streams(["sim", "mac", "--rows", "2", "--cols", "2"])    # a short run: no word
    assert code == 0 and err == ""


# ------------------------------------------------------------------------------- signals


def test_program_ignores_a_late_signal_after_success(tmp_path):
    """After the command finished, Ctrl-C or SIGTERM during interpreter shutdown no longer kills the
    process (exit -2 instead of 130 before): the handlers are SIG_IGN, the exit status 0."""
    code = ("import os, signal, sys, atexit\n"
            "from l1bn.cli.main import main\n"
            "def late():\n"
            "    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN\n"
            "    os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
            "atexit.register(late)\n"
            f"sys.argv = ['l1bn', 'verilog', 'mac', '--rows', '2', '--cols', '2', '-o', {str(tmp_path / 'm.v')!r}]\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert (tmp_path / "m.v").is_file()
