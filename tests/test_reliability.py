"""Nothing lost, nothing half-written: data loss, the manifest checksum, a shared build folder under
concurrency, interrupts and kills (issue 21)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from l1bn.spec.export import ExportError, load_export, manifest_digest, read_manifest, write_export
from l1bn.spec.reference.network import random_int_net


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ data loss

@pytest.mark.parametrize("target", ["run", "parent"])
def test_export_force_never_replaces_its_run(tiny_run, tmp_path, l1bn_cli, target):
    parent = tmp_path / "p"
    run = parent / "run"
    shutil.copytree(tiny_run, run)
    before = _snapshot(parent)
    out = run if target == "run" else parent
    code, text = l1bn_cli(["export", str(run), "--out", str(out), "--force"])
    assert code == 2 and text.startswith("error: --out") and "the input" in text, text
    assert len(text.strip().splitlines()) == 1
    assert _snapshot(parent) == before     # model.pt and metrics.json untouched


def test_train_refuses_an_existing_run_without_force(tiny_run, tmp_path, l1bn_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _snapshot(run)
    code, text = l1bn_cli(["train", "--model", "mlp", "--epochs", "1", "--out", str(run)])
    assert code == 2 and "pass --force" in text, text
    assert _snapshot(run) == before


def test_export_of_a_truncated_checkpoint_is_one_error_line(tiny_run, tmp_path, l1bn_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    raw = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(raw[: len(raw) // 2])
    code, text = l1bn_cli(["export", str(run), "--out", str(tmp_path / "e")])
    assert code == 2 and text.startswith("error: ") and "cannot be read as a checkpoint" in text, text
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------ manifest

@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (8, 1, 8, 8), generator=g)
    return write_export(random_int_net(seed=3), tmp_path_factory.mktemp("m") / "e",
                        extra={"test.inputs": (x, 4, False, "test_input")})


def _leaves(node, path=()):
    """Every int and bool leaf of the manifest JSON: (path, value)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    elif isinstance(node, (bool, int)):
        yield path, node


def _edited(m: dict, path, value) -> dict:
    m = json.loads(json.dumps(m))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return m


def _write_manifest(export: Path, m: dict, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(export, dst)
    (dst / "manifest.json").write_text(json.dumps(m, indent=1))
    return dst


def test_every_arithmetic_field_changed_by_one_is_refused(small_export, tmp_path):
    """+1 and -1 on every integer of the manifest, every flag flipped: each edit is refused."""
    m = read_manifest(small_export)
    leaves = list(_leaves(m))
    # every shape, width, exponent, shift, count, stride, padding, flag (and the schema version)
    assert len(leaves) > 150
    names = {p[-1] for p, _ in leaves if isinstance(p[-1], str)}
    assert {"shift", "mult_bits", "bias_bits", "out_bits", "w_bits", "w_exp", "acc_bits", "exp", "bits", "stride",
            "padding", "k", "hex_rows", "relu", "last_use", "peak_live_values", "narrow"} <= names
    for path, v in leaves:
        for new in [not v] if isinstance(v, bool) else [v + 1, v - 1]:
            d = _write_manifest(small_export, _edited(m, path, new), tmp_path / "e")
            with pytest.raises(ExportError):   # never another exception either
                load_export(d)
                pytest.fail(f"manifest field {path} changed from {v} to {new} was accepted")


def test_swapped_tensors_are_refused(small_export, tmp_path):
    m = read_manifest(small_export)
    a, b = m["nodes"][1]["requant"], m["nodes"][2]["requant"]     # both 32 channels: shapes agree
    a["mult"], b["mult"] = b["mult"], a["mult"]
    with pytest.raises(ExportError):
        load_export(_write_manifest(small_export, m, tmp_path / "e"))


@pytest.mark.parametrize("path", [
    ("nodes", 0, "acc_bits"), ("nodes", 1, "w_exp"), ("nodes", 2, "k"), ("activations", "conv3.out", "exp"),
    ("output", "exp"), ("output", "shape", 0), ("input", "shape", 1), ("nodes", 1, "kernel", 0),
    ("nodes", 1, "in_shapes", 0, 0), ("activations", "conv1.out", "last_use"), ("peak_live_values",),
    ("input", "bits"), ("nodes", 2, "acc_format", "bits"),
    ("tensors", "conv2.weight", "exp"), ("tensors", "conv3.mult", "exp"), ("tensors", "conv1.bias", "exp"),
    ("tensors", "fc.weight", "hex", "rows"),
])
def test_redundant_field_is_checked_against_the_tensors_even_when_resigned(small_export, tmp_path, path):
    """A field that follows from the tensors and the other fields is checked on its own: an edit
    is refused even when the manifest checksum is recomputed."""
    m = read_manifest(small_export)
    node = m
    for k in path:
        node = node[k]
    m = _edited(m, path, node + 1)
    m["manifest_sha256"] = manifest_digest(m)
    with pytest.raises(ExportError):
        load_export(_write_manifest(small_export, m, tmp_path / "e"))


def test_infer_refuses_the_one_byte_shift_edit(small_export, tmp_path, l1bn_cli):
    d = _write_manifest(small_export, read_manifest(small_export), tmp_path / "e")
    text = (d / "manifest.json").read_text()
    i = text.index('"shift": ') + len('"shift": ')
    (d / "manifest.json").write_text(text[:i] + str(int(text[i]) + 1 if text[i] != "9" else 8) + text[i + 1:])
    code, out = l1bn_cli(["infer", str(d)])
    assert code == 2 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, out


# ------------------------------------------------------------------------- kills during a write

_DRIVER = r"""
import sys, time
what, argv = sys.argv[1], sys.argv[2:]
if what == "export":
    import l1bn.spec.export as E
    add = E._Writer.add
    def slow(self, *a, **k):
        name = add(self, *a, **k)
        print("wrote", name, flush=True)
        time.sleep(0.2)
        return name
    E._Writer.add = slow
else:
    import torch
    save = torch.save
    def slow(obj, f, *a, **k):
        save(obj, f, *a, **k)
        print("saved", f, flush=True)
        time.sleep(60)
    torch.save = slow
from l1bn.cli.main import main
main(argv)
"""


def _kill_after(lines_wanted: int, what: str, *argv) -> None:
    """Run the CLI with slowed writes; SIGKILL it after ``lines_wanted`` lines of progress."""
    p = subprocess.Popen([sys.executable, "-c", _DRIVER, what, *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(lines_wanted):
            assert p.stdout.readline(), "the command ended before it was killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL


def _ok(argv) -> None:
    """Run a command in process that must succeed."""
    from l1bn.cli.main import main

    try:
        main(argv)
    except SystemExit as e:
        assert e.code in (0, None), e.code


def test_killed_export_leaves_the_old_export_or_none(tiny_run, tmp_path, l1bn_cli):
    out = tmp_path / "exp"
    # no old export: nothing at all under the target name
    _kill_after(3, "export", "export", str(tiny_run), "--out", str(out))
    assert not out.exists()
    # an old export: it survives whole
    _ok(["export", str(tiny_run), "--out", str(out), "--rows", "8"])
    old = _snapshot(out)
    _kill_after(3, "export", "export", str(tiny_run), "--out", str(out), "--force")
    assert _snapshot(out) == old
    load_export(out)
    # the half-written folder of the killed process cannot be used: infer refuses it
    half = [p for p in tmp_path.iterdir() if p.name.startswith(".exp.tmp-")]
    assert half and not (half[0] / "manifest.json").exists()
    code, text = l1bn_cli(["infer", str(half[0])])
    assert code == 2 and "manifest.json is missing" in text
    # the next export replaces the old one and clears what the killed one left
    _ok(["export", str(tiny_run), "--out", str(out), "--force"])
    assert load_export(out).manifest["hex_rows"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_killed_train_leaves_the_old_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = _snapshot(run)
    _kill_after(1, "train", "train", "--model", "mlp", "--epochs", "1", "--seed", "1", "--out", str(run),
                "--force")
    assert _snapshot(run) == old


# ----------------------------------------------------------------- report: concurrency, signals

_TINY = ["report", "--widths", "4", "--n", "8", "--channels", "1", "--no-pnr", "--no-backward"]


def _env(build: Path) -> dict:
    return {**os.environ, "L1BN_BUILD_DIR": str(build)}


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmd or b"_worker_main" in cmd


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_two_reports_on_one_build_folder_both_finish_identically(tmp_path):
    """Reports started together on one build folder (one cache, and two of them one output
    folder): every one succeeds and they write the same report.json."""
    env = _env(tmp_path / "build")
    outs = [tmp_path / "a", tmp_path / "a", tmp_path / "c"]
    procs = [subprocess.Popen([sys.executable, "-m", "l1bn.cli.main", *_TINY, "--no-stages", "--jobs", "2",
                               "--out", str(o)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for o in outs]
    res = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, res, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    # each printed the report.md it wrote; the same tables
    tables = [out.split("wrote ")[0] for out, _ in res]
    assert tables[0] == tables[1] == tables[2] and "| 4 | **L1/L2** |" in tables[0]
    a = (tmp_path / "a" / "report.json").read_text()
    assert a == (tmp_path / "c" / "report.json").read_text()
    json.loads(a)
    assert not list((tmp_path / "a").glob(".report.tmp-*"))
    assert not list((tmp_path / "a" / "flow").glob(".*.tmp-*"))


def _start_and_wait_for_workers(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "l1bn.cli.main", *_TINY, "--jobs", "2", "--out",
                          str(tmp_path / "r")], env=_env(tmp_path / "build"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:
        kids = _descendants(p.pid)
        seen |= kids
        if sum(_is_worker(k) for k in kids) >= 2:      # both workers started
            break
        time.sleep(0.1)
    assert p.poll() is None and sum(_is_worker(k) for k in seen) >= 2, "the workers never started"
    for _ in range(10):         # let them get into the tools; keep collecting their children
        seen |= _descendants(p.pid)
        time.sleep(0.1)
    return p, seen


@pytest.mark.slow
def test_sigint_stops_report_jobs_2_within_5s_leaving_no_process(tmp_path):
    p, seen = _start_and_wait_for_workers(tmp_path)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    dt = time.monotonic() - t0
    assert dt < 5, f"exit took {dt:.1f} s"
    assert p.returncode == 130 and "aborted" in err and "Traceback" not in err, err[-2000:]
    time.sleep(0.5)
    assert [q for q in seen if _alive(q)] == []
    # nothing half-written in the cache (what finished is kept)
    for f in (tmp_path / "build" / "flow-cache").glob("*.json"):
        json.loads(f.read_text())


@pytest.mark.slow
def test_kill_9_of_report_leaves_no_worker(tmp_path):
    p, seen = _start_and_wait_for_workers(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(q) for q in seen):
        time.sleep(0.1)
    assert [q for q in seen if _alive(q)] == []


def test_run_net_refuses_float_images():
    """Float images would be truncated silently by the integer reference: refused instead."""
    net = random_int_net(seed=0)
    with pytest.raises(ValueError, match="quantize_input"):
        from l1bn.spec.reference.network import run_net

        run_net(net, torch.rand(2, 1, 8, 8))
