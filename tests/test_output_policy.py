"""The output rule (issue 32): a command replaces its own earlier output (its marker file, or the
header line of a Verilog file it wrote) and nothing else. Each case of the issue's "inputs
overwritten without --force" list is rerun here: refused with one line and nothing changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from l1bn.spec.export import write_export
from l1bn.spec.outdir import (
    MARKER,
    VERILOG_HEADER,
    abandon_claims,
    claim_dir,
    claimed_dir,
    keep_claims,
    output_owner,
    remove_stale_temps,
)
from l1bn.spec.reference.network import random_int_net


def _snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` (the folder itself included) with its content hash."""
    out = {".": "dir"}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _one_error(code, text, *words):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    for w in words:
        assert w in lines[0], text


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Export A (conv1..conv3, fc) and export B (conv1, fc): B's accelerator has fewer memory files."""
    root = tmp_path_factory.mktemp("exports")
    x = torch.randint(0, 16, (4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    extra = {"test.inputs": (x, 4, False, "test_input")}
    a = write_export(random_int_net(seed=1), root / "A", extra=extra)
    b = write_export(random_int_net(seed=2, channels=(8,)), root / "B", extra=extra)
    return a, b


@pytest.fixture(scope="module")
def fresh_verilog(two_exports, tmp_path_factory):
    """What ``verilog net`` writes for A and for B into new folders (their snapshots)."""
    from l1bn.sim.verilog.net import write_net_verilog

    root = tmp_path_factory.mktemp("fresh")
    return {k: _snapshot(Path(write_net_verilog(e, root / k)[0]).parent) for k, e in zip("AB", two_exports, strict=True)}


# ------------------------------------------------------------------- the cases of the issue

def test_verilog_o_refuses_the_trained_model(tiny_run, tmp_path, cli):
    """``l1bn verilog mac -o RUN/model.pt`` replaced the trained model (exit 0)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _snapshot(run)
    code, text = cli(["verilog", "mac", "--rows", "2", "--cols", "2", "-o", str(run / "model.pt")])
    _one_error(code, text, "model.pt", "not a file l1bn wrote", "--force")
    assert _snapshot(run) == before


def test_verilog_o_refuses_an_export_manifest(two_exports, tmp_path, cli):
    """``l1bn verilog l1bn -o EXPORT/manifest.json`` replaced the export's manifest."""
    e = tmp_path / "e"
    shutil.copytree(two_exports[0], e)
    before = _snapshot(e)
    code, text = cli(["verilog", "l1bn", "--n", "8", "-o", str(e / "manifest.json")])
    _one_error(code, text, "manifest.json", "not a file l1bn wrote")
    assert _snapshot(e) == before


def test_verilog_o_replaces_its_own_file_and_with_force_any_file(tmp_path, cli):
    v = tmp_path / "mac.v"
    code, _ = cli(["verilog", "mac", "--rows", "2", "--cols", "2", "-o", str(v)])
    assert code == 0 and v.read_text().startswith(VERILOG_HEADER)
    first = v.read_text()
    code, _ = cli(["verilog", "mac", "--rows", "3", "--cols", "2", "-o", str(v)])   # its own: no --force
    assert code == 0 and v.read_text() != first and v.read_text().startswith(VERILOG_HEADER)
    notes = tmp_path / "notes.v"
    notes.write_text("// my own hand-written module\n")
    code, text = cli(["verilog", "mac", "--rows", "2", "--cols", "2", "-o", str(notes)])
    _one_error(code, text, "pass --force")
    assert notes.read_text() == "// my own hand-written module\n"
    code, _ = cli(["verilog", "mac", "--rows", "2", "--cols", "2", "--force", "-o", str(notes)])
    assert code == 0 and notes.read_text() == first


def test_verilog_net_refuses_another_export(two_exports, tmp_path, cli):
    """``l1bn verilog net EXPORT -o OTHER_EXPORT`` wrote its memory files over the other export's."""
    a, b = two_exports
    other = tmp_path / "other"
    shutil.copytree(b, other)
    before = _snapshot(other)
    code, text = cli(["verilog", "net", str(a), "-o", str(other)])
    _one_error(code, text, "holds the output of `l1bn export`")
    assert _snapshot(other) == before


def test_verilog_net_over_its_own_output_leaves_no_stale_memory_file(two_exports, fresh_verilog, tmp_path,
                                                                      cli):
    """A design with fewer layers written over an earlier output: exactly the new design's files."""
    a, b = two_exports
    out = tmp_path / "v"
    for e in (a, b):
        code, text = cli(["verilog", "net", str(e), "-o", str(out)])
        assert code == 0, text
    assert _snapshot(out) == fresh_verilog["B"]
    assert set(fresh_verilog["A"]) - set(fresh_verilog["B"]) >= {"conv2.weight.hex", "conv3.mult.hex"}
    assert output_owner(out) == "verilog net"
    assert [p.name for p in tmp_path.iterdir()] == ["v"]     # no staged folder left beside it


def test_two_verilog_net_at_once_leave_one_whole_design(two_exports, fresh_verilog, tmp_path):
    """Two ``verilog net`` into one folder at once: the folder holds one design, whole."""
    out = tmp_path / "v"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-m", "l1bn.cli.main", "verilog", "net", str(e), "-o", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for e in two_exports]
    res = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], res
    assert _snapshot(out) in (fresh_verilog["A"], fresh_verilog["B"])
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_demo_refuses_a_folder_holding_the_users_run_and_export(tiny_run, two_exports, tmp_path, cli):
    """``l1bn demo --out DIR`` rewrote the user's metrics.json, manifest.json and weights."""
    d = tmp_path / "mine"
    shutil.copytree(tiny_run, d / "qat")
    shutil.copytree(two_exports[0], d / "export")
    before = _snapshot(d)
    code, text = cli(["demo", "--out", str(d)])
    _one_error(code, text, "did not write")
    assert _snapshot(d) == before


def test_build_refuses_a_report_folder(two_exports, tmp_path, cli, monkeypatch):
    """``l1bn build --out DIR`` where DIR holds a report replaced report.json."""
    rep = tmp_path / "rep"
    claim_dir(rep, "report")
    (rep / "report.json").write_text('{"widths": [4]}\n')
    before = _snapshot(rep)
    code, text = cli(["build", str(two_exports[0]), "--board", "ulx3s-85f", "--out", str(rep)])
    _one_error(code, text, "holds the output of `l1bn report`")
    assert _snapshot(rep) == before
    legacy = tmp_path / "old-report"       # a report folder without a marker: unknown files
    legacy.mkdir()
    (legacy / "report.json").write_text("{}\n")
    code, text = cli(["build", str(two_exports[0]), "--board", "ulx3s-85f", "--out", str(legacy)])
    _one_error(code, text, "did not write")
    assert (legacy / "report.json").read_text() == "{}\n"


def test_export_force_refuses_a_folder_of_unknown_files(tiny_run, tmp_path, cli):
    """``l1bn export RUN --out DIR --force`` deleted the files of an unrelated folder (thesis.tex)."""
    d = tmp_path / "thesis"
    d.mkdir()
    (d / "thesis.tex").write_text("\\documentclass{book}\n")
    before = _snapshot(d)
    code, text = cli(["export", str(tiny_run), "--out", str(d), "--force"])
    _one_error(code, text, "did not write", "--force replaces only an earlier output")
    assert _snapshot(d) == before


def test_export_force_replaces_its_own_export_and_train_refuses_it(tiny_run, tmp_path, cli):
    e = tmp_path / "e"
    for rows in ("4", "8"):
        code, text = cli(["export", str(tiny_run), "--out", str(e), "--rows", rows, "--force"])
        assert code == 0, text
    assert '"hex_rows": 8' in (e / "manifest.json").read_text() and output_owner(e) == "export"
    before = _snapshot(e)
    code, text = cli(["train", "--model", "mlp", "--epochs", "1", "--out", str(e), "--force"])
    _one_error(code, text, "holds the output of `l1bn export`")
    assert _snapshot(e) == before


def test_qonnx_export_refuses_a_model_it_did_not_write_and_rows(tiny_run, tmp_path, cli):
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"\x08\x07someone else's model")
    code, text = cli(["export", str(tiny_run), "--format", "qonnx", "--out", str(theirs), "--force"])
    _one_error(code, text, "not a QONNX file l1bn wrote")
    assert theirs.read_bytes() == b"\x08\x07someone else's model"
    for rows in ("0", "65", "4"):   # not applicable, whatever the value
        code, text = cli(["export", str(tiny_run), "--format", "qonnx", "--rows", rows,
                               "--out", str(tmp_path / "m.onnx")])
        _one_error(code, text, "--rows", "does not apply to --format qonnx")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------- the helpers themselves

def test_claimed_folder_is_removed_when_the_command_fails_before_writing(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    claim_dir(old, "sweep")
    keep_claims()                    # an earlier command's folder, which succeeded
    with pytest.raises(RuntimeError), claimed_dir(new, "sweep"):
        assert (new / MARKER).is_file()
        raise RuntimeError("the work failed")
    assert not new.exists() and (old / MARKER).is_file()
    with pytest.raises(KeyboardInterrupt), claimed_dir(new, "sweep"):   # an interrupt: whole
        (new / "half.csv").write_text("a,b\n")
        raise KeyboardInterrupt
    assert not new.exists()
    claim_dir(new, "report")         # the CLI's path: abandon_claims after a failure
    (tmp_path / "kept").mkdir()
    abandon_claims()
    assert not new.exists() and (old / MARKER).is_file()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    names = [f".out.tmp-{dead}-abc", f".report.json.tmp-{dead}-x1", f".out.old-{dead}",
             f".keep.tmp-{os.getpid()}-mine", ".out.tmp-notapid-x", "out"]
    for n in names:
        (tmp_path / n).mkdir()
    gone = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in gone) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


# ------------------------------------------------- commands added since (FPGA families, boards)


@pytest.mark.parametrize("family", ["ice40", "gowin"])
def test_report_family_refuses_a_folder_it_did_not_write(family, two_exports, tmp_path, cli, monkeypatch):
    """``report --family F --out DIR``: the user's files or an export are refused with one line
    before any flow runs (the flow itself fails the test if it starts)."""
    import l1bn.sim.report.fpga as fpga

    def no_work(*a, **k):
        raise AssertionError("the flow started")

    monkeypatch.setattr(fpga, "build_report", no_work)
    monkeypatch.setenv("L1BN_BUILD_DIR", str(tmp_path / "build"))
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    for out, words in ((mine, "did not write"), (two_exports[0], "holds the output of `l1bn export`")):
        before = _snapshot(out)
        code, text = cli(["report", "--family", family, "--widths", "4", "--no-pnr", "--out", str(out)])
        _one_error(code, text, words)
        assert _snapshot(out) == before
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("board", ["icebreaker", "tang-nano-9k"])
def test_build_on_ice40_and_gowin_boards_refuses_a_folder_it_did_not_write(board, two_exports, tmp_path, cli):
    """``build --board B --out DIR`` on the iCE40 and Gowin boards: a folder of the user's files or
    a report is refused with one line, before any tool runs, and left as it was."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    rep = claim_dir(tmp_path / "rep", "report")
    (rep / "report.json").write_text('{"widths": [4]}\n')
    keep_claims()
    for out, words in ((mine, "did not write"), (rep, "holds the output of `l1bn report`")):
        before = _snapshot(out)
        code, text = cli(["build", str(two_exports[0]), "--board", board, "--out", str(out)])
        _one_error(code, text, words)
        assert _snapshot(out) == before


def test_integer_train_follows_the_output_rule(tmp_path, cli):
    """``train --integer``: a folder of the user's files is refused (``--force`` or not) before
    training; its run folder carries train's marker (its export, export's), is refused without
    ``--force`` and replaced whole with it."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    argv = ["train", "--integer", "--model", "mlp", "--epochs", "1"]
    code, text = cli([*argv, "--out", str(mine), "--force"])
    _one_error(code, text, "did not write")
    assert _snapshot(mine) == {".": "dir", "thesis.tex": hashlib.sha256(b"x\n").hexdigest()}
    run = tmp_path / "run"
    code, text = cli([*argv, "--out", str(run)])
    assert code == 0, text
    assert output_owner(run) == "train" and output_owner(run / "export") == "export"
    code, text = cli([*argv, "--out", str(run)])
    _one_error(code, text, "pass --force")
    (run / "notes.txt").write_text("an old file\n")
    code, text = cli([*argv, "--out", str(run), "--force"])
    assert code == 0, text
    assert not (run / "notes.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run", "thesis"]
