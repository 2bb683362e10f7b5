"""Train on the simulated training accelerator, step by step against the integer reference.

:func:`simulate_train` is the Python entry point (``l1bn sim train``, the tests and the benches share
it): it generates the accelerator for an :class:`~l1bn.spec.training.IntTrainConfig` *before* any
simulator starts (a config the accelerator cannot take stops with one error line and nothing is
built), runs the reference for the same K batches, and hands the bench the input beats and every
expected value (logits, per-step results, the state after K steps).

:func:`train_source` turns ``RUN_OR_EXPORT`` (a run folder of ``l1bn train``, or an export) into
the training config and the images to train on: the run's own ``int_train_config`` when it has
one (``l1bn train --integer``), else a config built from the export's layers (conv2d / linear,
its weight and activation bits), with ``batch`` and ``norm`` as given; the images are the export's
test images and labels (real digits for the digits models).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from l1bn.sim.build_root import default_build_root
from l1bn.sim.rtl import to_verilog

from .runner import SIMULATORS, SimulationError, run_bench, stream_ports

__all__ = ["simulate_train", "train_source", "reference_steps", "state_values", "DEFAULT_ROWS",
           "DEFAULT_BATCH"]

#: MAC array height of the generated accelerator unless given (docs/train_accel.md: at 8 rows the
#: array is busy in >= 70 % of a step of the digits CNN)
DEFAULT_ROWS = 8
#: batch of the generated accelerator unless given (every BN unit and buffer is sized for it)
DEFAULT_BATCH = 8


def _export_dir(path: Path) -> Path:
    if (path / "manifest.json").is_file():
        return path
    if (path / "export" / "manifest.json").is_file():
        return path / "export"
    raise ValueError(f"{path}: neither a run folder with export/ nor an export (no manifest.json)")


def train_source(path, *, batch: int | None = None, norm: str | None = None):
    """``(cfg, x, y)``: the training config of a run or export and its images (unsigned ``abits``,
    (N, C, H, W)) and labels. ``batch`` (default :data:`DEFAULT_BATCH`) and ``norm`` (default: the
    run's, else ``l1``) override the run's. ``ValueError`` (one line) for a network the integer
    trainer cannot take."""
    import dataclasses

    from l1bn.spec.export import load_export
    from l1bn.spec.norms import FEATURED
    from l1bn.spec.training import IntTrainConfig, TrainLayer

    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such run folder or export")
    e = load_export(_export_dir(p))
    src = e.manifest.get("source") or {}
    cfg_d = src.get("int_train_config")
    if cfg_d is None and (p / "metrics.json").is_file():
        cfg_d = json.loads((p / "metrics.json").read_text()).get("int_train_config")
    over = {"batch": DEFAULT_BATCH if batch is None else batch}
    if norm is not None:
        over["norm"] = norm
    if cfg_d is not None:
        cfg = dataclasses.replace(IntTrainConfig.from_dict(cfg_d), **over)
    else:
        net = e.net
        layers = []
        for la in net.layers:
            if la.type == "conv2d":
                k = int(np.asarray(la.weight).shape[-1])
                layers.append(TrainLayer(kind="conv2d", out=int(la.out_shape[0]), kernel=k, stride=la.stride,
                                         padding=la.padding))
            elif la.type == "linear":
                layers.append(TrainLayer(kind="linear", out=int(la.out_shape[0]), kernel=1, stride=1, padding=0))
            else:
                raise ValueError(f"layer {la.name} ({la.type}): the integer trainer takes conv2d and linear layers")
        wb = max(la.w_bits for la in net.layers)
        cfg = IntTrainConfig(in_shape=tuple(net.in_shape), layers=tuple(layers), wbits=wb, abits=net.in_bits,
                             **{"norm": FEATURED, **over})
    if e.test_inputs is None or e.test_labels is None:
        raise ValueError(f"{path}: the export holds no test images and labels to train on")
    x = np.asarray(e.test_inputs, dtype=np.int64)
    if tuple(x.shape[1:]) != tuple(cfg.in_shape):
        raise ValueError(f"{path}: test images of shape {tuple(x.shape[1:])} do not fit the network's input "
                         f"{tuple(cfg.in_shape)}")
    return cfg, x, np.asarray(e.test_labels, dtype=np.int64)


def state_values(cfg, state) -> list[int]:
    """A :class:`~l1bn.spec.reference.train.TrainState` in the accelerator's read-back order
    (:func:`l1bn.hw.train.io.dump_segments`)."""
    out = [m.reshape(-1) for m in state.master]
    for i in range(len(cfg.layers) - 1):
        out += [state.gamma[i], state.beta[i], state.run_mu[i], state.run_sigma[i]]
    return np.concatenate(out).astype(np.int64).tolist()


def reference_steps(cfg, seed: int, batches):
    """The reference's K steps from ``init_state(cfg, seed)``: ``(state, logits per step,
    results per step as the accelerator's o beats)``."""
    from l1bn.spec.reference.softmax_ce import softmax_ce_grad
    from l1bn.spec.reference.train import init_state, train_step

    state = init_state(cfg, seed)
    logits, results = [], []
    for k, (x, y) in enumerate(batches):
        state, r = train_step(state, x, y, cfg)
        _, p = softmax_ce_grad(r.logits, y, r.logit_exp, exp_frac=cfg.exp_frac, prob_bits=cfg.prob_bits,
                               log2e_bits=cfg.log2e_bits)
        perr = int(((1 << cfg.prob_bits) - p[np.arange(len(y)), y]).sum())
        logits.append(r.logits)
        results.append({"step": k + 1, "correct": r.correct, "perr": perr, "saturated": r.master_saturated,
                        "loss": r.loss})
    return state, logits, results


def simulate_train(cfg, x, y, *, steps: int, rows: int = DEFAULT_ROWS, seed: int = 0,
                   simulator: str = "verilator", build_dir=None, raise_on_fail: bool = False) -> dict:
    """K = ``steps`` training steps on consecutive batches of ``x``/``y`` on the simulated
    accelerator, compared with the reference.

    Returns a dict: ``passed``, ``steps``, the mismatch counts (``logit_mismatches``,
    ``result_mismatches``, ``state_mismatches``), ``cycles_per_step`` (measured period, None for
    one step), ``formula_cycles``, ``first_to_result``, ``array_busy`` (MAC beats / step cycles),
    ``results`` (per step: correct, perr, saturated, the reference's float loss), ``sim_s``,
    ``build_s``, ``simulator``, ``rows``, ``batch``, ``norm``, ``build_dir``.
    """
    from l1bn.hw.train.accel import TrainAccelerator
    from l1bn.spec.config import check_choice, check_int

    check_choice("simulator", simulator, SIMULATORS)
    n = cfg.batch
    check_int("steps", steps, 1, 10_000)
    if len(x) < steps * n:
        raise ValueError(f"{steps} steps of batch {n} need {steps * n} images; {len(x)} given")
    acc = TrainAccelerator(cfg, rows=rows, seed=seed)
    verilog = to_verilog(acc, "train_accel")
    batches = [(x[k * n:(k + 1) * n], y[k * n:(k + 1) * n]) for k in range(steps)]
    state, logits, results = reference_steps(cfg, seed, batches)
    beats = [[int(p), int(lab)] for xb, yb in batches for img, lab in zip(xb, yb, strict=True)
             for p in img.reshape(-1)]
    data = {"steps": steps, "beats": beats,
            "logits": np.concatenate([z.reshape(-1) for z in logits]).tolist(),
            "results": [{k: r[k] for k in ("step", "correct", "perr", "saturated")} for r in results],
            "state": state_values(cfg, state), "cycles_per_step": acc.cycles_per_step,
            "first_to_result": acc.cycles_per_step - 3}
    if build_dir is None:
        h = hashlib.sha256(verilog.encode()).hexdigest()[:10]
        build_dir = default_build_root() / f"train-{h}-{simulator}"
    build_dir = Path(build_dir).resolve()
    r, res = run_bench(verilog, name="train", build_dir=build_dir, ports=stream_ports(acc), simulator=simulator,
                       data=data, raise_on_fail=False, extra_env={"COCOTB_LOG_LEVEL": "WARNING"})
    periods = r["period_cycles"]
    out = {
        "passed": res.passed, "simulator": simulator, "steps": steps, "rows": rows, "batch": n, "norm": cfg.norm,
        "logit_mismatches": r["logit_mismatches"], "result_mismatches": r["result_mismatches"],
        "state_mismatches": r["state_mismatches"], "first": r["first"],
        "state_values": len(data["state"]), "logits": len(data["logits"]),
        "cycles_per_step": sorted(set(periods)) if periods else None, "formula_cycles": acc.cycles_per_step,
        "first_to_result": sorted(set(r["first_to_result"])), "array_busy": acc.array_busy,
        "mac_beats": acc.plan.mac_beats, "results": results, "sim_s": r["sim_wall_s"], "build_s": res.build_s,
        "run_s": res.run_s, "build_dir": str(build_dir),
    }
    if raise_on_fail and not res.passed:
        raise SimulationError(f"the training accelerator differs from the reference or its formula; see {build_dir}",
                              res.failed, res)
    return out
