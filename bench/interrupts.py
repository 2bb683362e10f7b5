"""Random interrupts of the long commands: no process left, no temporary file or lock, and a rerun
that gives a byte-identical result (issue 32).

Run:  .venv/bin/python bench/interrupts.py [--interrupts 20] [--commands train,export,...] [--seed 0]

For each command, one run from a clean workspace gives the reference: its result files and its
duration T. Then each trial starts the command in a clean workspace, sends a random signal
(SIGINT, SIGTERM or SIGKILL, equally likely) at a random moment in [0.05 T, 0.95 T], and checks:

* orphans: processes still alive 1 s after the command ended that carry the trial's tag (an
  environment variable every process the command starts inherits: workers, simulators,
  ``make``, ``c++``, solvers, tools);
* leftovers: temporary files (``.NAME.tmp-PID...``, ``.NAME.old-PID``), lock files, simulator
  build folders without their build stamp, cache entries that are not whole JSON, and a
  half-made output (the output folder present but not the command's whole result). After
  SIGINT and SIGTERM nothing may be left. After SIGKILL the command has no chance to clean up:
  what it leaves is counted separately, and the rerun must clear it;
* rerun: the command run again to the end in the same workspace: no leftovers, and its result
  files byte-identical to the reference (fields that are wall-clock times removed: listed per
  command in ``COMMANDS``).

The table has one row per command: trials, interrupts that landed (the command was still
running), orphans, leftovers after SIGINT/SIGTERM, leftovers after SIGKILL (before the rerun),
leftovers after the rerun, reruns byte-identical, and the exit statuses seen. The bench exits 1
if any orphan, any leftover that may not be there, or any rerun that differs is found.
``tests/test_interrupts.py`` runs a small version (a few interrupts of fast commands).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TAG = "L1BN_INTERRUPT_TAG"
_TEMP = re.compile(r"^\..+\.(?:tmp|old)-\d+(?:-.*)?$")
_TIMING_KEYS = {"time_s", "tool_s", "seconds", "wall_s", "sim_s", "build_s", "run_s", "images_per_s",
                "sim_wall_s", "threads", "started", "finished"}
_TIMING_LINE = re.compile(r"(\d+:\d\d:\d\d|simulation speed|\d+(\.\d+)? s\b|in \d+(\.\d+)? s|steps \()")
_PROGRESS_LINE = re.compile(r"(\d+:\d\d:\d\d|simulation speed|steps \()")
_TIME = re.compile(r"\b\d+(\.\d+)? s\b")


@dataclass
class Command:
    """One command of the bench: ``argv`` (``{ws}``, ``{run}``, ``{export}`` substituted), the
    output it writes (relative to the workspace; None: only stdout and the build folder) and how
    its result is compared."""

    name: str
    argv: list[str]
    output: str | None
    result: str            # "files": every file of the output; a file name in it; "stdout"
    needs: tuple[str, ...] = ()
    #: the rerun's extra options: a command that replaces its whole output needs --force when the
    #: interrupted run had finished it (a late signal) or had published it just before a kill -9
    rerun: tuple[str, ...] = ()
    #: stdout lines with a time are kept with the time masked (a proof's table: one line per
    #: property) instead of dropped (progress bars, speeds)
    mask_times: bool = False


COMMANDS = {
    "train": Command("train", ["train", "--model", "mlp", "--epochs", "1", "--wbits", "4", "--abits", "4",
                               "--out", "{ws}/run"], "run", "files", rerun=("--force",)),
    "export": Command("export", ["export", "{run}", "--out", "{ws}/export"], "export", "files", ("run",),
                      rerun=("--force",)),
    "verilog net": Command("verilog net", ["verilog", "net", "{export}", "-o", "{ws}/v"], "v", "files",
                           ("export",)),
    "report": Command("report", ["report", "--widths", "4", "--n", "8", "--channels", "1", "--no-pnr",
                                 "--no-backward", "--no-stages", "--jobs", "2", "--out", "{ws}/report"],
                      "report", "report.json"),
    "sweep": Command("sweep", ["sweep", "--design", "bn", "--norm", "l1,l2", "--width", "4", "--n", "8",
                               "--channels", "1", "--no-pnr", "--workers", "2", "--out", "{ws}/sweep"],
                     "sweep", "results.csv"),
    "sim net": Command("sim net", ["sim", "net", "{export}", "--simulator", "icarus", "--images", "2"], None,
                       "stdout", ("export",)),
    "sim mac": Command("sim mac", ["sim", "mac", "--rows", "2", "--cols", "2", "--tiles", "3"], None, "stdout"),
    # the default prover (pdr, native ABC) on the properties it closes; the overflow properties do
    # not close under pdr and fall back to smtbmc after half of --timeout (300 s by default), so
    # the smtbmc path (yosys-smtbmc and its solver, the orphan) has its own entry
    "prove": Command("prove", ["prove", "mac", "--rows", "2", "--cols", "2", "--wbits", "2", "--abits", "2",
                               "--k", "4", "--props", "stream,count,drain,product", "-o", "{ws}/prove"],
                     "prove", "stdout", mask_times=True),
    "prove induction": Command("prove induction", ["prove", "mac", "--rows", "2", "--cols", "2", "--wbits", "2",
                                                   "--abits", "2", "--k", "4", "--prover", "induction",
                                                   "-o", "{ws}/prove"], "prove", "stdout", mask_times=True),
}


# ----------------------------------------------------------------------------------- running


def _env(ws: Path, tag: str) -> dict:
    return {**os.environ, "L1BN_BUILD_DIR": str(ws / "build"), TAG: tag, "PYTHONWARNINGS": "ignore"}


def _argv(cmd: Command, ws: Path, inputs: dict, extra=()) -> list[str]:
    subst = {"ws": str(ws), **{k: str(v) for k, v in inputs.items()}}
    return [sys.executable, "-m", "l1bn.cli.main", *[a.format(**subst) for a in cmd.argv], *extra]


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose environment holds ``TAG=tag``."""
    needle = f"{TAG}={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z":
            out.append((int(d), cmd[:100]))
    return out


def _run(cmd: Command, ws: Path, inputs: dict, *, signal_at: float | None = None, sig: int = 0,
         timeout: float = 3600, extra=()) -> dict:
    """Run the command in ``ws``; with ``signal_at`` send ``sig`` that many seconds after the
    start. Returns rc, seconds, stdout, whether the signal landed, and the orphans."""
    tag = uuid.uuid4().hex
    t0 = time.monotonic()
    p = subprocess.Popen(_argv(cmd, ws, inputs, extra), env=_env(ws, tag), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    landed = False
    try:
        if signal_at is not None:
            try:
                p.wait(timeout=signal_at)
            except subprocess.TimeoutExpired:
                p.send_signal(sig)
                landed = True
        out, err = p.communicate(timeout=timeout)
    except BaseException:                      # the bench stopped (Ctrl-C, `timeout`): the command too
        p.send_signal(signal.SIGTERM)
        p.communicate()
        raise
    dt = time.monotonic() - t0
    deadline = time.monotonic() + 1.0          # children must be gone within a second
    orphans = tagged_processes(tag)
    while orphans and time.monotonic() < deadline:
        time.sleep(0.05)
        orphans = tagged_processes(tag)
    for pid, _ in orphans:                     # do not let them disturb the next trial
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"rc": p.returncode, "seconds": dt, "stdout": out, "stderr": err, "landed": landed,
            "orphans": orphans}


# ------------------------------------------------------------------------------ what is left


def leftovers(ws: Path, cmd: Command) -> list[str]:
    """What may not be in the workspace after a clean exit (paths relative to ``ws``)."""
    bad = []
    for p in ws.rglob("*"):
        rel = str(p.relative_to(ws))
        if _TEMP.match(p.name) or p.name.endswith(".lock"):
            bad.append(rel)
    build = ws / "build"
    for b in build.iterdir() if build.is_dir() else []:
        if b.is_dir() and (b / ".l1bn-output.json").is_file() and json.loads(
                (b / ".l1bn-output.json").read_text()).get("command") == "sim" and not (b / ".built").is_file():
            bad.append(f"{b.relative_to(ws)} (simulator build without its stamp)")
    for c in (build / "flow-cache").glob("*.json") if (build / "flow-cache").is_dir() else []:
        try:
            json.loads(c.read_text())
        except ValueError:
            bad.append(f"{c.relative_to(ws)} (not whole JSON)")
    if cmd.output is not None and (ws / cmd.output).exists() and not _whole(cmd, ws):
        bad.append(f"{cmd.output} (half-made output)")
    return sorted(bad)


def _whole(cmd: Command, ws: Path) -> bool:
    """The output folder holds the command's whole result (a prove folder: its marker)."""
    if cmd.result == "stdout":
        return (ws / cmd.output / ".l1bn-output.json").is_file()
    return result_of(cmd, ws, "") is not None


def _strip_times(node):
    if isinstance(node, dict):
        return {k: _strip_times(v) for k, v in node.items() if k not in _TIMING_KEYS}
    if isinstance(node, list):
        return [_strip_times(v) for v in node]
    return node


def _digest_file(p: Path) -> str:
    if p.suffix == ".json" and p.name != ".l1bn-output.json":
        try:
            return hashlib.sha256(json.dumps(_strip_times(json.loads(p.read_text())), sort_keys=True)
                                  .encode()).hexdigest()
        except ValueError:
            return "not JSON"
    return hashlib.sha256(p.read_bytes()).hexdigest()


def result_of(cmd: Command, ws: Path, stdout: str) -> dict | None:
    """The command's result (file -> digest, or its stdout lines without times); None when the
    output is not whole."""
    if cmd.result == "stdout":
        if cmd.mask_times:
            lines = [_TIME.sub("T s", ln) for ln in stdout.splitlines()
                     if ln.strip() and not _PROGRESS_LINE.search(ln)]
        else:
            lines = [ln for ln in stdout.splitlines() if ln.strip() and not _TIMING_LINE.search(ln)]
        if cmd.output is not None and not _whole(cmd, ws):
            return None
        return {"stdout": lines} if lines else None
    out = ws / cmd.output
    if not out.is_dir():
        return None
    if cmd.result == "files":
        files = {str(p.relative_to(out)): _digest_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
        return files if ".l1bn-output.json" in files and len(files) > 1 else None
    p = out / cmd.result
    return {cmd.result: _digest_file(p)} if p.is_file() else None


# ---------------------------------------------------------------------------------- trials


@dataclass
class Row:
    name: str
    trials: int = 0
    landed: int = 0
    orphans: list = field(default_factory=list)
    left_soft: list = field(default_factory=list)   # after SIGINT / SIGTERM
    left_kill: int = 0                               # after SIGKILL, before the rerun
    left_rerun: list = field(default_factory=list)
    identical: int = 0
    differ: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.orphans or self.left_soft or self.left_rerun or self.differ)


def _clean(ws: Path) -> None:
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)


def prepare_inputs(root: Path, needs) -> dict:
    """A trained run and its export for the commands that read one (made once)."""
    inputs = {}
    if {"run", "export"} & set(needs):
        run = root / "inputs" / "run"
        if not (run / "model.pt").is_file():
            _must(["train", "--model", "cnn", "--epochs", "1", "--wbits", "4", "--abits", "4", "--out", str(run),
                   "--force"])
        inputs["run"] = run
        export = root / "inputs" / "export"
        if "export" in needs and not (export / "manifest.json").is_file():
            _must(["export", str(run), "--out", str(export), "--force"])
        inputs["export"] = export
    return inputs


def _must(argv):
    r = subprocess.run([sys.executable, "-m", "l1bn.cli.main", *argv], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"l1bn {' '.join(argv)} failed: {r.stderr[-500:]}")


def bench_command(cmd: Command, root: Path, inputs: dict, n: int, rng: random.Random, log=print) -> Row:
    """Reference run, then ``n`` interrupted trials each followed by a rerun."""
    ws = root / cmd.name.replace(" ", "-")
    _clean(ws)
    ref = _run(cmd, ws, inputs)
    if ref["rc"] != 0:
        raise SystemExit(f"{cmd.name}: the reference run failed ({ref['rc']}): {ref['stderr'][-800:]}")
    want = result_of(cmd, ws, ref["stdout"])
    if want is None:
        raise SystemExit(f"{cmd.name}: the reference run left no result")
    t_ref = ref["seconds"]
    row = Row(cmd.name)
    for i in range(n):
        _clean(ws)
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        at = rng.uniform(0.05, 0.95) * t_ref
        r = _run(cmd, ws, inputs, signal_at=at, sig=sig)
        row.trials += 1
        row.landed += r["landed"]
        key = f"{signal.Signals(sig).name}:{r['rc']}" if r["landed"] else f"ended first:{r['rc']}"
        if r["landed"] and r["rc"] == 0:   # the work was done: the late signal is ignored (docs)
            key = f"{signal.Signals(sig).name} after the work:0"
        row.statuses[key] = row.statuses.get(key, 0) + 1
        row.orphans += [f"trial {i}: {c}" for _, c in r["orphans"]]
        left = leftovers(ws, cmd)
        if sig == signal.SIGKILL and r["landed"]:
            row.left_kill += len(left)
        else:
            row.left_soft += [f"trial {i} ({signal.Signals(sig).name} at {at:.1f} s): {x}" for x in left]
            if r["landed"] and "Traceback" in r["stderr"]:
                last = [ln for ln in r["stderr"].splitlines() if ln.strip()][-1]
                row.left_soft.append(f"trial {i}: a traceback on stderr, ending {last.strip()!r}")
        again = _run(cmd, ws, inputs, extra=cmd.rerun)
        row.orphans += [f"trial {i} rerun: {c}" for _, c in again["orphans"]]
        after = leftovers(ws, cmd)
        row.left_rerun += [f"trial {i}: {x}" for x in after]
        got = result_of(cmd, ws, again["stdout"]) if again["rc"] == 0 else None
        if got == want:
            row.identical += 1
        else:
            row.differ.append(f"trial {i}: rerun rc {again['rc']}: {again['stderr'][-300:]}")
        log(f"  {cmd.name} trial {i + 1}/{n}: {signal.Signals(sig).name} at {at:.1f} s of {t_ref:.1f} s "
            f"-> rc {r['rc']}{'' if r['landed'] else ' (ended first)'}, orphans {len(r['orphans'])}, "
            f"left {len(left)}{', TRACEBACK' if 'Traceback' in r['stderr'] else ''}, "
            f"rerun {'identical' if got == want else 'DIFFERS'}, left after rerun {len(after)}")
    return row


def table(rows: list[Row]) -> str:
    head = ("| command | trials | landed | orphans | left after SIGINT/SIGTERM | left by SIGKILL (cleared "
            "by the rerun) | left after rerun | rerun identical | exit statuses |\n"
            "| --- | ---:| ---:| ---:| ---:| ---:| ---:| ---:| --- |")
    body = [f"| {r.name} | {r.trials} | {r.landed} | {len(r.orphans)} | {len(r.left_soft)} | {r.left_kill} | "
            f"{len(r.left_rerun)} | {r.identical}/{r.trials} | "
            + ", ".join(f"{k} x{v}" for k, v in sorted(r.statuses.items())) + " |" for r in rows]
    return "\n".join([head, *body])


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interrupts", type=int, default=20, help="trials per command")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma list of: " + ", ".join(COMMANDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="workspace folder to use (kept); default: a temporary one")
    a = ap.parse_args(argv)
    names = [c.strip() for c in a.commands.split(",") if c.strip()]
    for c in names:
        if c not in COMMANDS:
            ap.error(f"unknown command {c!r}; choose from {', '.join(COMMANDS)}")
    rng = random.Random(a.seed)
    # SIGTERM (`timeout`) stops the bench as Ctrl-C does: the running command stopped, the
    # temporary workspace removed
    signal.signal(signal.SIGTERM, _stop)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="l1bn-interrupts-"))
    rows = []
    try:
        needs = {n for c in names for n in COMMANDS[c].needs}
        inputs = prepare_inputs(root, needs)
        for c in names:
            t0 = time.monotonic()
            rows.append(bench_command(COMMANDS[c], root, inputs, a.interrupts, rng,
                                      log=lambda s: print(s, file=sys.stderr, flush=True)))
            print(f"{c}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"random interrupts (seed {a.seed}): SIGINT, SIGTERM or SIGKILL at a random moment of the run; "
          f"{os.cpu_count()} cores\n")
    print(table(rows))
    for r in rows:
        for what, items in (("orphan", r.orphans), ("left after SIGINT/SIGTERM", r.left_soft),
                            ("left after rerun", r.left_rerun), ("rerun differs", r.differ)):
            for x in items[:5]:
                print(f"{r.name}: {what}: {x}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
