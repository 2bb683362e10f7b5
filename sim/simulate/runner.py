"""The one simulator helper every cocotb run goes through.

``run_cocotb`` takes an Amaranth component (or Verilog text), writes its Verilog into a build
folder of its own, builds it for Icarus or Verilator, runs a cocotb test module against it, and
returns a parsed :class:`SimResult`. A failing cocotb test raises :class:`SimulationError` naming it.

The config of the design travels to the bench as JSON in the ``L1BN_CONFIG`` environment variable
(``l1bn.sim.simulate.benches.common.load_config`` reads it back); extra data go through ``L1BN_*`` variables
or files in the build folder.

Safe under concurrency, interrupts and kills:

- a build folder is shared by every run of one design (it is keyed by the Verilog's hash): the
  build runs under the folder's lock (:func:`l1bn.sim.locks.file_lock`), after which a stamp
  (``.built``) records what was built; a folder without a matching stamp (a build that was
  interrupted, an older layout) is cleared and built again;
- each run has files of its own there (data, ports, result, results XML, log, named
  ``.NAME.tmp-PID-THREAD``), removed when it ends, so two runs of one design at once (``sim mac
  --tiles 3`` and ``--tiles 9``) never read each other's data or results;
- the simulators (Icarus ``vvp``, Verilator's ``make``, ``c++`` and model) run through
  :func:`l1bn.sim.executors.run_guarded`: in a process group of their own that dies with this
  process (error, Ctrl-C, SIGTERM, ``kill -9``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from l1bn.sim.build_root import default_build_root
from l1bn.sim.executors import run_guarded
from l1bn.sim.locks import file_lock, remove_stale_locks
from l1bn.sim.rtl import to_verilog
from l1bn.sim.tools import ToolError, require_iverilog, setup_verilator
from l1bn.spec.outdir import check_output_dir, claim_dir, keep_claims

__all__ = ["BENCHES", "SIMULATORS", "SimResult", "SimulationError", "run_cocotb", "run_bench",
           "stream_ports", "build_folder", "run_file", "run_id"]

SIMULATORS = ("icarus", "verilator")

_env_lock = threading.Lock()


class SimulationError(RuntimeError):
    """A cocotb run failed; ``failed`` lists the names of the failing tests."""

    def __init__(self, message: str, failed: list[str], result: SimResult | None = None):
        super().__init__(message)
        self.failed = failed
        self.result = result


@dataclass
class TestCaseResult:
    name: str
    passed: bool
    message: str = ""
    sim_time_ns: float | None = None
    wall_s: float | None = None


@dataclass
class SimResult:
    """What one cocotb run produced."""

    simulator: str
    toplevel: str
    build_dir: Path
    results_xml: Path
    tests: list[TestCaseResult] = field(default_factory=list)
    build_s: float = 0.0
    run_s: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(t.passed for t in self.tests)

    @property
    def failed(self) -> list[str]:
        return [t.name for t in self.tests if not t.passed]


def _parse_results(xml_text: str) -> list[TestCaseResult]:
    root = ET.fromstring(xml_text)
    out = []
    for tc in root.iter("testcase"):
        fail = tc.find("failure")
        if fail is None:
            fail = tc.find("error")
        sim_ns = tc.get("sim_time_ns")
        wall = tc.get("time")
        out.append(TestCaseResult(
            name=tc.get("name", "?"),
            passed=fail is None,
            message="" if fail is None else (fail.get("message") or fail.text or "failed"),
            sim_time_ns=float(sim_ns) if sim_ns else None,
            wall_s=float(wall) if wall else None,
        ))
    return out


#: ``make`` variables for Verilator's C++ build. The default (``-Os`` everywhere) spends most of a
#: short run compiling: ``bench/verilator_opt.py`` (the digits training accelerator, 3 steps, both
#: variants at once on this 2-core machine) built in 40.1 s instead of 56.5 s and simulated in
#: 27.8 s against 27.7 s, 67.9 s against 84.2 s in all.
VERILATOR_MAKE_OPT = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0")


def _guarded_execute_cmds(self, cmds, cwd, stdout=None):
    """cocotb's ``Runner._execute_cmds`` with every command run by
    :func:`l1bn.sim.executors.run_guarded` (its process group dies with this process); Verilator's
    ``make`` gets :data:`VERILATOR_MAKE_OPT`."""
    import subprocess

    for cmd in cmds:
        if cmd and cmd[0] == "make" and "Vtop.mk" in cmd:
            cmd = [*cmd, *VERILATOR_MAKE_OPT]
        r = run_guarded(cmd, cwd=cwd, env=self.env, stdout=stdout,
                        stderr=None if stdout is None else subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"Command failed with return code: {r.returncode}")


def run_id() -> str:
    """``PID-THREAD``: names the files of one run in a shared build folder (``.NAME.tmp-RUNID``)."""
    return f"{os.getpid()}-{threading.get_ident()}"


def run_file(bdir: Path, name: str) -> Path:
    """The private file ``name`` of this run in ``bdir`` (removed as stale once this process is gone)."""
    return bdir / f".{name}.tmp-{run_id()}"


#: the command named in a simulator build folder's marker (:mod:`l1bn.spec.outdir`)
COMMAND = "sim"
_STAMP = ".built"


def build_folder(build_dir, toplevel: str) -> Path:
    """Check and claim a simulator build folder (the output rule of :mod:`l1bn.spec.outdir`: its
    marker, one an older version made (it holds ``TOPLEVEL.v``) or a new one; never a folder of
    other files) and remove what a killed run left there (its files, an unheld lock)."""
    bdir = Path(build_dir).resolve()
    check_output_dir(bdir, command=COMMAND, option="build folder", must_be_new=False,
                     legacy=(f"{toplevel}.v",))
    claim_dir(bdir, COMMAND)
    remove_stale_locks(bdir)
    return bdir


def _prepare_build_dir(bdir: Path, toplevel: str, text: str, simulator: str, build_args, extra_sources) -> str:
    """Under the folder's lock: the build key; clear the folder when its stamp does not match."""
    extra = [[str(p), Path(p).read_text()] for p in extra_sources]
    key = hashlib.sha256(json.dumps([text, simulator, list(build_args), toplevel, extra,
                                     list(VERILATOR_MAKE_OPT) if simulator == "verilator" else []]).encode()).hexdigest()
    stamp = bdir / _STAMP
    if not stamp.exists() or stamp.read_text().strip() != key:
        # an interrupted build (no stamp), another design or an older layout: start clean (every
        # run's private files and the locks are dot-files, kept)
        for p in bdir.iterdir():
            if not p.name.startswith("."):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        stamp.unlink(missing_ok=True)
    return key


@contextlib.contextmanager
def _not_under_pytest():
    # cocotb's runner calls sys.exit() on failure when it sees PYTEST_CURRENT_TEST; we want to
    # parse the results ourselves and raise an error that names the failing test.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def run_cocotb(
    design,
    *,
    toplevel: str,
    test_module: str,
    simulator: str = "icarus",
    build_dir: str | os.PathLike | None = None,
    config=None,
    extra_env: dict[str, str] | None = None,
    testcase: str | list[str] | None = None,
    extra_sources: list[str | os.PathLike] = (),
    waves: bool = False,
    seed: int | None = None,
    raise_on_fail: bool = True,
    verbose: bool = False,
) -> SimResult:
    """Build ``design`` and run the cocotb ``test_module`` against it.

    Parameters
    ----------
    design : amaranth Component or str
        The design under test, or its Verilog text.
    toplevel : str
        Verilog module name of the top.
    test_module : str
        Dotted name of the cocotb test module (e.g. ``"l1bn.sim.simulate.benches.absdiff_tb"``).
    simulator : {"icarus", "verilator"}
    build_dir : path, optional
        Defaults to ``build/<toplevel>-<simulator>-<hash of the Verilog>``.
    config : a config object of :mod:`l1bn.spec.config`, optional
        Passed to the bench as JSON in ``L1BN_CONFIG``.
    raise_on_fail : bool
        Raise :class:`SimulationError` naming the failing tests (default).

    Returns
    -------
    SimResult
    """
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator={simulator!r} is unknown; choose one of {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        require_iverilog()
    else:
        with _env_lock:
            setup_verilator()

    from cocotb_tools.runner import get_runner

    text = design if isinstance(design, str) else to_verilog(design, toplevel)
    h = hashlib.sha256(text.encode()).hexdigest()[:10]
    bdir = Path(build_dir) if build_dir is not None else default_build_root() / f"{toplevel}-{simulator}-{h}"
    bdir = build_folder(bdir, toplevel)
    src = bdir / f"{toplevel}.v"

    env = dict(extra_env or {})
    if config is not None:
        env["L1BN_CONFIG"] = config.to_json()
    # the bench imports l1bn from the same environment as this process
    env.setdefault("PYTHONPATH", os.pathsep.join(sys.path))

    runner = get_runner(simulator)
    if hasattr(runner, "_execute_cmds"):   # cocotb 2.1: the one place the runner starts a process
        runner._execute_cmds = types.MethodType(_guarded_execute_cmds, runner)
    # compiler and simulator chatter goes to files in the build folder unless verbose
    build_log, sim_log = bdir / "build.log", bdir / "sim.log"
    run_log = run_file(bdir, "sim.log")
    build_args = ["-Wno-fatal"] if simulator == "verilator" else []
    t0 = time.perf_counter()
    with _not_under_pytest():
        with file_lock(bdir / ".build.lock"):   # one build at a time; the others wait, then reuse it
            key = _prepare_build_dir(bdir, toplevel, text, simulator, build_args, extra_sources)
            if not src.exists() or src.read_text() != text:
                src.write_text(text)
            try:
                runner.build(
                    sources=[src, *map(Path, extra_sources)],
                    hdl_toplevel=toplevel,
                    build_dir=bdir,
                    build_args=build_args,
                    timescale=("1ns", "1ps"),
                    waves=waves,
                    verbose=verbose,
                    log_file=None if verbose else build_log,
                )
            except (SystemExit, Exception) as e:  # the runner exits on compiler errors
                raise SimulationError(f"{simulator} failed to build {toplevel} ({e}); see {build_log}",
                                      failed=["<build>"]) from None
            (bdir / _STAMP).write_text(key + "\n")
            keep_claims(bdir)   # a finished build stays, even if the simulation is interrupted
        t1 = time.perf_counter()
        xml = run_file(bdir, "results.xml")
        try:
            _run_test(runner, xml, run_log, sim_log, dict(test_module=test_module, hdl_toplevel=toplevel,
                                                            build_dir=bdir, test_dir=bdir, extra_env=env,
                                                            testcase=testcase, waves=waves, seed=seed,
                                                            verbose=verbose))
        finally:
            xml_text = xml.read_text() if xml.exists() else None
            xml.unlink(missing_ok=True)
    t2 = time.perf_counter()

    tests = _parse_results(xml_text) if xml_text is not None else []
    result = SimResult(simulator, toplevel, bdir, xml, tests, build_s=t1 - t0, run_s=t2 - t1)
    if raise_on_fail and not result.passed:
        failed = result.failed or ["<no test ran>"]
        detail = "; ".join(f"{t.name}: {t.message.strip().splitlines()[0] if t.message.strip() else 'failed'}"
                           for t in tests if not t.passed)
        raise SimulationError(
            f"cocotb test(s) failed on {simulator}: {', '.join(failed)}"
            + (f" ({detail})" if detail else "") + ("" if verbose else f"; log: {sim_log}"),
            failed=failed, result=result)
    return result


def _run_test(runner, xml: Path, run_log: Path, sim_log: Path, kw: dict) -> None:
    """``runner.test`` writing the results to ``xml`` and the log to this run's own file, which
    becomes ``sim.log`` when the run ends (kept for reading; removed if the run is interrupted)."""
    verbose = kw.pop("verbose")
    try:
        try:
            runner.test(
                results_xml=str(xml),
                timescale=("1ns", "1ps"),
                verbose=verbose,
                log_file=None if verbose else run_log,
                **kw,
            )
        except SystemExit:
            pass  # results (if any) are in the XML
    except BaseException:
        run_log.unlink(missing_ok=True)
        raise
    if run_log.exists():
        os.replace(run_log, sim_log)


# bench name -> (Verilog top-level module, cocotb test module): the one table of benches
BENCHES: dict[str, tuple[str, str]] = {
    "absdiff": ("absdiff", "l1bn.sim.simulate.benches.absdiff_tb"),
    "bn": ("bn_unit", "l1bn.sim.simulate.benches.bn_tb"),
    "bwd": ("bn_bwd", "l1bn.sim.simulate.benches.bn_bwd_tb"),
    "loopback": ("loopback", "l1bn.sim.simulate.benches.loopback_tb"),
    "mac": ("mac_array", "l1bn.sim.simulate.benches.mac_tb"),
    "net": ("accelerator", "l1bn.sim.simulate.benches.net_tb"),
    "train": ("train_accel", "l1bn.sim.simulate.benches.train_tb"),
}


def stream_ports(component) -> dict:
    """The ``lib.stream`` ports of an Amaranth component, for the bench kit.

    Returns ``{name: {"flow": "in" | "out", "shape": payload shape (the generator's own
    ``data.Layout`` or plain shape), "always_valid": bool, "always_ready": bool}}``; the flow is
    seen from the design (``"in"``: the bench drives ``valid`` and ``payload``).
    """
    from amaranth.lib import stream, wiring

    ports = {}
    for name, member in component.signature.members.items():
        if not member.is_signature:
            continue
        sig = member.signature
        unflipped = sig.flip() if isinstance(sig, wiring.FlippedSignature) else sig
        if not isinstance(unflipped, stream.Signature):
            continue
        ports[name] = {"flow": "out" if member.flow == wiring.Out else "in", "shape": unflipped.members["payload"].shape,
                       "always_valid": unflipped.always_valid, "always_ready": unflipped.always_ready}
    return ports


def run_bench(design, *, name: str, build_dir, data: dict | None = None, options: dict | None = None,
              ports: dict | None = None, toplevel: str | None = None, test_module: str | None = None,
              extra_env: dict[str, str] | None = None, **kwargs):
    """Build ``design`` and run the bench ``name`` of :data:`BENCHES` on it: the one launcher.

    Parameters
    ----------
    design : amaranth Component or str
        The design, or its Verilog text (then ``ports`` must be given for a stream bench).
    name : str
        A key of :data:`BENCHES` (it names the top-level module and the cocotb test module).
    build_dir : path
        The simulator build folder; the bench's files are exchanged there.
    data : dict, optional
        The bench's inputs, written to this run's ``BUILD/.<name>_data.json.tmp-RUNID``
        (``L1BN_<NAME>_DATA``; read by ``benches.common.load_data``).
    options : dict, optional
        Small knobs (``seed``, ``gaps`` ...), sent as JSON in ``L1BN_OPTIONS``
        (``benches.kit.Testbench.options``).
    ports : dict, optional
        :func:`stream_ports` of the design; taken from ``design`` when it is a component. Pickled
        to a file of this run (``L1BN_PORTS``), so the bench packs payloads through the
        generator's own layouts.
    toplevel, test_module : str, optional
        Override the table entry (a design under another module name).

    Other keyword arguments go to :func:`run_cocotb`. The bench writes its measurements to this
    run's ``BUILD/.<name>_result.json.tmp-RUNID`` (``L1BN_<NAME>_RESULT``): a bench that dies
    before writing raises :class:`SimulationError`, never returns another run's result. Every file
    of the run is removed when it ends, however it ends.

    Returns
    -------
    (dict, SimResult)
        The bench's result with ``passed``, ``build_s`` and ``run_s`` added, and the run itself.
    """
    import pickle

    if name not in BENCHES:
        raise ValueError(f"bench={name!r} is unknown; choose one of {', '.join(BENCHES)}")
    top, module = BENCHES[name]
    toplevel, test_module = toplevel or top, test_module or module
    if ports is None and not isinstance(design, str):
        ports = stream_ports(design)
    bdir = build_folder(build_dir, toplevel)
    key = name.upper()
    env = dict(extra_env or {})
    data_file, ports_file, out = (run_file(bdir, f"{name}_{what}") for what in ("data.json", "ports.pkl",
                                                                                "result.json"))
    try:
        if data is not None:
            data_file.write_text(json.dumps(data))
            env[f"L1BN_{key}_DATA"] = str(data_file)
        if ports is not None:
            ports_file.write_bytes(pickle.dumps(ports))
            env["L1BN_PORTS"] = str(ports_file)
        env["L1BN_OPTIONS"] = json.dumps(options or {})
        env[f"L1BN_{key}_RESULT"] = str(out)
        res = run_cocotb(design, toplevel=toplevel, test_module=test_module, build_dir=bdir,
                         extra_env=env, **kwargs)
        if not out.exists():
            raise SimulationError(f"the {name} bench stopped before writing its result; see {bdir}",
                                  res.failed or ["<no result>"], res)
        r = json.loads(out.read_text())
    finally:
        for f in (data_file, ports_file, out):
            f.unlink(missing_ok=True)
    r.update(passed=res.passed, build_s=res.build_s, run_s=res.run_s)
    return r, res


__all__ += ["ToolError"]
