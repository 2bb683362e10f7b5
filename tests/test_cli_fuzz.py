"""Every command, driven with generated bad values and paths (hypothesis), in process.

Each case has exactly one thing wrong (a value out of range or of the wrong type, an unknown
option, a contradiction, an output that is a file, lies under a file, is empty or is an input, an
input that is missing, a file, or damaged). Every case must be refused up front:

* no traceback, ever;
* exit status 2 and exactly one ``error:`` line on stderr;
* nothing written anywhere (the workspace tree, the current folder included, is unchanged);
* no input file changed or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from l1bn.cli.main import COMMANDS, main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a (fake) trained run, a real small export, a damaged export, a file."""
    from l1bn.spec.export import read_manifest, write_export
    from l1bn.spec.reference.network import random_int_net

    root = tmp_path_factory.mktemp("fuzz")
    run = root / "runs" / "run"
    run.mkdir(parents=True)
    torch.save({"state_dict": {}, "config": {"model": "cnn"}}, run / "model.pt")
    (run / "metrics.json").write_text("{}\n")
    trunc = root / "trunc"
    trunc.mkdir()
    (trunc / "model.pt").write_bytes((run / "model.pt").read_bytes()[:40])
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (12, 1, 8, 8), generator=g)
    exp = write_export(random_int_net(seed=1), root / "exp", extra={
        "test.inputs": (x, 4, False, "test_input"), "test.labels": (x[:, 0, 0, 0] % 10, 4, False, "test_label")})
    bad = root / "bad_exp"
    shutil.copytree(exp, bad)
    m = read_manifest(bad)
    m["nodes"][1]["requant"]["shift"] += 1   # the one-byte edit of issue 21
    (bad / "manifest.json").write_text(json.dumps(m, indent=1))
    (root / "afile").write_text("not a folder\n")
    (root / "build").mkdir()
    thesis = root / "thesis"                  # a folder of the user's own files
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{book}\n")
    rep = root / "rep"                        # another command's output (a report)
    rep.mkdir()
    (rep / ".l1bn-output.json").write_text('{"command": "report"}\n')
    (rep / "report.json").write_text("{}\n")
    (root / "model.onnx").write_bytes(b"not written by l1bn")
    return {"root": root, "run": run, "trunc": trunc, "exp": exp, "bad_exp": bad, "file": root / "afile",
            "thesis": thesis, "report": rep, "onnx": root / "model.onnx"}


def _tree(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------- bad values

NON_INTS = ["abc", "1.5", "", "0x10", "--", "1e3"]


def _range_bad(help_text: str) -> list[int]:
    """Out-of-range integers for an option whose help ends with a ``[lo..hi]`` range."""
    m = re.search(r"\[(-?\d+)\.\.(\d+)", help_text or "")
    if not m:
        return []
    lo, hi = int(m.group(1)), int(m.group(2))
    return [lo - 1, hi + 1, -(10 ** 9), 10 ** 12]


def _generated_config_cases(group: str, sub: str, base: list[str]):
    """(argv) cases: one generated config option with a bad value (from the click command)."""
    import click
    from l1bn.cli.sim import sim
    from l1bn.cli.verilog import verilog

    cmd = {"verilog": verilog, "sim": sim}[group].commands[sub]
    cases = []
    for p in cmd.params:
        if not isinstance(p, click.Option) or p.is_flag or p.type is not click.INT:
            continue
        name = p.opts[0]
        if name in ("--output", "-o"):
            continue
        for v in NON_INTS[:3] + [str(b) for b in _range_bad(p.help)]:
            cases.append([group, sub, *base, name, v])
    return cases


def _policy_cases(w) -> list[list[str]]:
    """The output rule (issue 32): another command's output, a folder of unknown files, or a single
    file this command did not write is refused, --force or not (a Verilog -o FILE: without --force)."""
    r, e, bad, f = str(w["run"]), str(w["exp"]), str(w["bad_exp"]), str(w["file"])
    cases: list[list[str]] = []
    thesis, rep = str(w["thesis"]), str(w["report"])
    cases += [["verilog", "mac", "-o", str(w["run"] / "model.pt")],
              ["verilog", "l1bn", "-o", str(w["exp"] / "manifest.json")],
              ["verilog", "l2bn-bwd", "-o", str(w["thesis"] / "thesis.tex")],
              ["verilog", "net", e, "-o", bad], ["verilog", "net", e, "-o", thesis], ["verilog", "net", e, "-o", rep]]
    cases += [["demo", "--out", str(w["run"].parent)], ["demo", "--out", thesis], ["demo", "--out", rep]]
    cases += [["build", e, "--board", "ulx3s-85f", "--out", o] for o in (rep, thesis, bad)]
    cases += [[*c, "--force"] for c in (["export", r, "--out", thesis], ["export", r, "--out", rep],
                                        ["train", "--out", bad], ["train", "--out", thesis],
                                        ["import", f, "--out", thesis], ["import", f, "--out", r])]
    cases += [["report", "--out", o] for o in (thesis, r, bad)]
    cases += [["sweep", "--out", o] for o in (thesis, rep, bad)]
    cases += [["prove", "mac", "-o", o] for o in (thesis, rep, r)]
    cases += [["export", r, "--format", "qonnx", "--out", str(w["onnx"]), "--force"]]
    return cases


def _cases(w) -> list[list[str]]:
    r, e, bad, f = str(w["run"]), str(w["exp"]), str(w["bad_exp"]), str(w["file"])
    root = w["root"]
    nowhere = str(root / "new")
    under_file = str(w["file"] / "x")
    outs_dir = ["", f, under_file]                  # an output folder that cannot be one
    cases: list[list[str]] = []
    # train
    for opt, vals in {"--wbits": ["1", "9", "99", "x"], "--abits": ["0", "9"], "--epochs": ["0", "-1", "10001"],
                      "--batch-size": ["1", "5000"], "--lr": ["0", "-1", "1", "nan"], "--seed": ["-1"],
                      "--model": ["resnet"], "--norm": ["l3"], "--device": ["tpu"]}.items():
        cases += [["train", opt, v, "--out", nowhere] for v in vals]
    cases += [["train", "--out", o] for o in outs_dir]
    cases += [["train", "--out", r],                                       # an existing run, no --force
              ["train", "--float", "--wbits", "4", "--out", nowhere],
              ["train", "--float", "--quantize-bn", "--out", nowhere],
              ["train", "--norm", "none", "--quantize-bn", "--out", nowhere]]
    # export
    cases += [["export", r, "--out", o, "--force"] for o in outs_dir + [r, str(w["run"].parent)]]
    cases += [["export", r, "--out", nowhere, "--rows", v] for v in ("0", "65", "x")]
    cases += [["export", r, "--out", nowhere, "--mult-bits", v] for v in ("1", "33")]
    cases += [["export", str(w["trunc"]), "--out", nowhere], ["export", f, "--out", nowhere],
              ["export", str(root / "missing"), "--out", nowhere], ["export", e, "--out", nowhere]]
    cases += [["export", r, "--format", "qonnx", "--out", o] for o in ("", str(root), under_file)]
    # import (a QONNX model)
    cases += [["import", str(root / "missing.onnx"), "--out", nowhere], ["import", f, "--out", nowhere]]
    cases += [["import", f, "--out", o] for o in outs_dir + [f]]
    cases += [["import", f, "--out", nowhere, opt, v] for opt, v in (("--rows", "0"), ("--mult-bits", "x"))]
    # infer
    cases += [["infer", e, "--threads", v] for v in ("-1", "100000", "257", "x")]
    cases += [["infer", p] for p in (bad, r, f, str(root / "missing"), "")]
    # verilog
    out_v = str(root / "v" / "x.v")
    for sub in ("l1bn", "l2bn", "l1bn-bwd", "l2bn-bwd", "mac"):
        cases += _generated_config_cases("verilog", sub, ["-o", out_v])
        cases += [["verilog", sub, "-o", o] for o in ("", str(root), under_file)]
    cases += [["verilog", "mac", "--rows", "64", "-o", out_v], ["verilog", "mac", "--shift", "2", "-o", out_v],
              ["verilog", "l1bn", "--n", "10", "--lanes", "4", "-o", out_v],
              ["verilog", "l2bn-bwd", "--sign-in", "-o", out_v]]
    cases += [["verilog", "net", p, "-o", nowhere] for p in (bad, r, f)]
    cases += [["verilog", "net", e, "-o", o] for o in ("", f, under_file, e, str(root))]
    cases += [["verilog", "net", e, "-o", nowhere, "--cols", v] for v in ("0", "65")]
    # sim
    for sub in ("bn", "mac"):
        cases += _generated_config_cases("sim", sub, [])
        cases += [["sim", sub, "--gaps", v] for v in ("-5", "100", "x")]
        cases += [["sim", sub, "--seed", "-1"], ["sim", sub, "--simulator", "modelsim"]]
    cases += [["sim", "mac", opt, v] for opt, v in (("--tiles", "0"), ("--tiles", "1001"), ("--tile-k", "0"),
                                                  ("--tile-k", "65"), ("--out-gaps", "100"), ("--rows", "17"))]
    cases += [["sim", "net", p] for p in (bad, r, f, str(root / "missing"))]
    cases += [["sim", "net", e, opt, v] for opt, v in (("--images", "0"), ("--images", "13"), ("--cols", "0"),
                                                     ("--cols", "65"), ("--simulator", "x"))]
    # report
    cases += [["report", "--out", o] for o in outs_dir]
    cases += [["report", opt, v, "--out", nowhere] for opt, v in (
        ("--widths", "2"), ("--widths", "4,40"), ("--widths", ""), ("--widths", "8,8"), ("--n", "4"),
        ("--n", "2048"), ("--lanes", "9"), ("--lanes", "3"), ("--channels", "0"), ("--channels", "17"),
        ("--jobs", "0"), ("--jobs", "65"), ("--n", "x"))]
    # sweep
    cases += [["sweep", "--out", o] for o in outs_dir]
    cases += [["sweep", opt, v, "--out", nowhere] for opt, v in (
        ("--width", "4,99"), ("--workers", "0"), ("--scheduler", "nowhere"), ("--spec", str(root / "missing.toml")))]
    # prove
    cases += [["prove", d, "-o", o] for d in ("l1bn", "mac") for o in outs_dir]
    cases += [["prove", "mac", "--rows", "0", "-o", nowhere], ["prove", "l1bn", "--depth", "0", "-o", nowhere],
              ["prove", "l1bn", "--prover", "ic3", "-o", nowhere], ["prove", "requant", "--shift", "99", "-o", nowhere],
              ["prove", "rangebn", "--n", "1", "-o", nowhere]]
    # build
    cases += [["build", e, "--board", "ulx3s-85f", opt, v] for opt, v in (
        ("--seed", "-1"), ("--images", "0"), ("--images", "100001"), ("--clock", "0"), ("--clock", "500"),
        ("--mode", "x"), ("--out", ""), ("--out", f), ("--out", under_file), ("--out", e))]
    cases += [["build", e, "--board", "nosuch"], ["build", bad, "--board", "ulx3s-85f", "--out", nowhere]]
    # demo
    cases += [["demo", opt, v, "--out", nowhere] for opt, v in (
        ("--epochs", "0"), ("--bits", "1"), ("--bits", "9"), ("--images", "0"), ("--images", "100000"),
        ("--seed", "-1"), ("--simulator", "modelsim"))]
    cases += [["demo", "--out", o] for o in outs_dir]
    cases += _policy_cases(w)
    # every command, including those added later: an unknown option
    cases += [[name, "--no-such-option"] for name in COMMANDS]
    return cases


@pytest.fixture(scope="module")
def cases(ws):
    """The cases grouped by command (``verilog mac``, ``train``...), so each is drawn as often."""
    groups: dict[str, list] = {}
    for c in _cases(ws):
        groups.setdefault(" ".join(c[:2]) if c[0] in ("verilog", "sim") else c[0], []).append(c)
    return groups


def _range_options():
    """(command words, option, lo, hi) of every generated option with a documented range."""
    import click
    from l1bn.cli.sim import sim
    from l1bn.cli.verilog import verilog

    out = []
    for group, g in (("verilog", verilog), ("sim", sim)):
        for sub in ("l1bn", "l2bn", "l1bn-bwd", "l2bn-bwd", "mac") if group == "verilog" else ("bn", "mac"):
            for p in g.commands[sub].params:
                m = re.search(r"\[(-?\d+)\.\.(\d+)", getattr(p, "help", None) or "")
                if isinstance(p, click.Option) and m:
                    out.append(((group, sub), p.opts[0], int(m.group(1)), int(m.group(2))))
    return out


def _run(argv, ws) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(ws["root"])   # a default output in the current folder would show in the tree
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
                code = 0
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def _check_refused(argv, ws):
    before = _tree(ws["root"])
    code, out, err = _run(argv, ws)
    assert "Traceback" not in out + err, (argv, err)
    assert code == 2, (argv, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert _tree(ws["root"]) == before, argv   # nothing written, no input changed or deleted


def test_output_rule_cases_are_all_refused(ws, monkeypatch):
    """Every case of the output rule, each run (not drawn): refused with one line, nothing changed."""
    monkeypatch.setenv("L1BN_BUILD_DIR", str(ws["root"] / "build"))
    for argv in _policy_cases(ws):
        _check_refused(argv, ws)


def test_case_list_covers_every_command(cases):
    assert {k.split()[0] for k in cases} >= set(COMMANDS)
    assert sum(len(v) for v in cases.values()) > 300


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=250, **_SETTINGS)
@given(data=st.data())
def test_bad_input_is_refused_with_one_line(ws, cases, monkeypatch, data):
    monkeypatch.setenv("L1BN_BUILD_DIR", str(ws["root"] / "build"))
    group = data.draw(st.sampled_from(sorted(cases)), label="command")
    _check_refused(data.draw(st.sampled_from(cases[group]), label="argv"), ws)


@settings(max_examples=100, **_SETTINGS)
@given(data=st.data())
def test_generated_out_of_range_values_and_paths(ws, monkeypatch, data):
    """Any integer outside an option's documented range, or an output under a file, is refused."""
    monkeypatch.setenv("L1BN_BUILD_DIR", str(ws["root"] / "build"))
    words, opt, lo, hi = data.draw(st.sampled_from(_range_options()), label="option")
    bad = data.draw(st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)), label="value")
    name = data.draw(st.text("abcxyz._-0123456789", min_size=1, max_size=12).filter(lambda t: t not in (".", "..")),
                     label="name")
    argv = [*words, opt, str(bad)]
    if words[0] == "verilog":
        argv += ["-o", str(ws["root"] / "v" / f"{name}.v")]
    _check_refused(argv, ws)
    if words[0] == "verilog":   # a good value, but the output lies under a file
        _check_refused([*words, "-o", str(ws["file"] / name / "x.v")], ws)
