"""Classify test images on the simulated accelerator, image by image against the
integer reference.

:func:`simulate_net` is the Python entry point (``make demo``, the tests and ``bench/net_sim.py``
share it). The export is loaded and validated once (here, or by the caller that passes the loaded
``ExportedNet``) and the accelerator generated *before* any simulator starts, so a tampered export
stops with one ``error:`` line and nothing is built. The bench gets what it needs in its data file
(the pixels, the integer reference's logits, the labels); it does not read the export.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
from l1bn.sim.build_root import default_build_root
from l1bn.sim.rtl import to_verilog

from .runner import SIMULATORS, SimulationError, run_bench, run_file, stream_ports

__all__ = ["simulate_net"]


def _prepare(export, rows: int | None, cols: int | None, own_images: bool = False, lanes: int = 1):
    """The loaded export (``export`` is a folder or an ``ExportedNet``), the accelerator, its
    interface and Verilog (raises ValueError)."""
    from l1bn.hw.accelerator import accelerator_from_export, accelerator_interface
    from l1bn.spec.export import ExportedNet, load_export

    e = export if isinstance(export, ExportedNet) else load_export(export)
    if e.test_inputs is None and not own_images:
        raise ValueError(f"{e.path}: the export holds no test images (test.inputs)")
    acc = accelerator_from_export(e, rows=rows, cols=cols, lanes=lanes)
    iface = dict(accelerator_interface(e), cycles_per_image=acc.cycles_per_image, latency=acc.latency)
    return e, acc, iface, to_verilog(acc, "accelerator")


def simulate_net(export, *, simulator: str = "verilator", images: int | None = None,
                 progress: bool = False, build_dir=None, rows: int | None = None, cols: int | None = None,
                 raise_on_fail: bool = False, console=None, inputs=None, labels=None, lanes: int = 1) -> dict:
    """Run the first ``images`` test images of an export through the accelerator in cocotb.

    Parameters
    ----------
    export : path or ExportedNet
        An export (``l1bn export``): its folder, validated with ``load_export`` before anything
        is built, or the ``ExportedNet`` the caller loaded.
    simulator : {"verilator", "icarus"}
    images : int, optional
        How many test images (default: all of them).
    progress : bool
        Show a progress bar (the bench writes a progress file that this process polls).
    build_dir : path, optional
        Simulator build folder (default ``build/net-<hash>-<simulator>``; an unchanged design
        reuses its build).
    rows, cols : int, optional
        MAC array shape (default: the 32-MAC shape with the fewest cycles per image, see
        :func:`l1bn.hw.accelerator.accelerator_from_export`).
    lanes : int
        1 (default): the MAC PE; more: the tree PE with that many input channels per beat.
    raise_on_fail : bool
        Raise :class:`~l1bn.sim.simulate.runner.SimulationError` when an image differs (default: return
        the counts).
    inputs, labels : numpy.ndarray, optional
        Your own images instead of the export's test split: the input integers (N, *input shape),
        as :func:`l1bn.spec.images.load_images` returns them, and their labels (or None).

    Returns
    -------
    dict
        ``hw_accuracy``, ``ref_accuracy``, ``images``, ``mismatches``, ``first`` (up to 10
        differing images), ``cycles_per_image`` (measured output-to-output period; None for one
        image), ``latency_cycles`` (of the first image, which enters an idle accelerator),
        ``formula_cycles``, ``images_per_s`` (simulated images per wall second, excluding the
        build), ``sim_s``, ``build_s``, ``simulator``, ``passed``.
    """
    from l1bn.spec.config import check_choice, check_int
    from l1bn.spec.reference.graph import run_graph

    check_choice("simulator", simulator, SIMULATORS)
    e, acc, iface, verilog = _prepare(export, rows, cols, own_images=inputs is not None, lanes=lanes)
    if inputs is not None:
        from l1bn.spec.reference.formats import check_values

        xs = check_values(inputs, e.graph.input.fmt, "inputs")
        if tuple(xs.shape[1:]) != tuple(e.graph.in_shape) or xs.shape[0] < 1:
            raise ValueError(f"inputs: shape {list(xs.shape)}; expected (N, {', '.join(map(str, e.graph.in_shape))})")
        all_labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    else:
        xs, all_labels = e.test_inputs, e.test_labels
    total = int(xs.shape[0])
    if images is not None:
        check_int("images", images, 1, total)
    n = total if images is None else images
    if build_dir is None:
        h = hashlib.sha256(verilog.encode()).hexdigest()[:10]
        build_dir = default_build_root() / f"net-{h}-{simulator}"
    build_dir = Path(build_dir).resolve()
    prog = run_file(build_dir, "net_progress.txt")   # this run's own (two runs of one design at once)
    x = xs[:n]
    ref = np.asarray(run_graph(e.graph, x))                    # (n, classes) int64: the expectation
    labels = all_labels
    px = np.asarray(x, dtype=np.int64).reshape(n, -1) & ((1 << iface["in_bits"]) - 1)   # two's complement bits
    data = {"export": str(Path(e.path).resolve()), "images": n, "progress": str(prog),
            "pixels": px.tolist(),                               # (c, y, x) order, one list per image
            "expected": ref.tolist(), "labels": None if labels is None else labels[:n].tolist(),
            "cycles_per_image": iface["cycles_per_image"], "latency": iface["latency"]}

    # the simulation runs in this thread (an interrupt reaches it: the simulator's group is killed
    # and every file of the run removed); the progress bar reads the progress file in another
    done = threading.Event()
    th = threading.Thread(target=_poll, args=(done, prog, n, simulator, console), daemon=True)
    if progress:
        th.start()
    try:
        r, res = run_bench(verilog, name="net", build_dir=build_dir, ports=stream_ports(acc),
                           simulator=simulator, data=data, raise_on_fail=False,
                           extra_env={"COCOTB_LOG_LEVEL": "WARNING"})
    finally:
        done.set()
        if progress:
            th.join()
        prog.unlink(missing_ok=True)
    periods = r["period_cycles"]
    measured = periods[0] if len(periods) == 1 else (None if n == 1 else periods)
    summary = {
        "simulator": simulator, "images": n, "mismatches": r["mismatches"], "first": r["first"],
        "hw_accuracy": None if r["hw_correct"] is None else r["hw_correct"] / n,
        "ref_accuracy": None if r["ref_correct"] is None else r["ref_correct"] / n,
        "cycles_per_image": measured, "latency_cycles": r["latency_cycles"],
        "formula_cycles": r["formula_cycles"], "images_per_s": r["images_per_s"],
        "sim_s": r["sim_wall_s"], "build_s": res.build_s, "run_s": res.run_s,
        "passed": res.passed, "cols": acc.cols, "rows": acc.rows, "lanes": acc.plan.lanes, "build_dir": str(build_dir),
    }
    if raise_on_fail and not res.passed:
        raise SimulationError(f"{r['mismatches']} of {n} images differ from the integer reference "
                              f"(or the cycle count differs from the formula); see {build_dir}",
                              res.failed, res)
    return summary


def _poll(done: threading.Event, prog: Path, n: int, simulator: str, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(f"{simulator}: building", total=n)
        started = False
        while not done.wait(0.25):
            try:
                count = int(prog.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not started:
                bar.update(task, description=f"{simulator}: images")
                started = True
            bar.update(task, completed=count)
        try:
            bar.update(task, completed=int(prog.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass

