"""The training accelerator's Verilog and its schedule (library; the command is ``l1bn verilog train``).

The Verilog holds the initial state (``init_state(cfg, seed)``: master weights, gamma, beta, the
LFSR bank) as the memories' initial values. ``schedule.json`` records the config, the interface,
the memory map, every program entry with its cycles and array beats, the cycles per step and the
array's busy fraction (``l1bn.hw.train.schedule``).
"""

from __future__ import annotations

import json
from pathlib import Path

from l1bn.sim.rtl import to_verilog

__all__ = ["write_train_verilog", "train_summary", "check_train_output"]


#: the command named in the output folder's marker
COMMAND = "verilog train"


def check_train_output(out_dir, inputs=()) -> Path:
    """The output folder of ``l1bn verilog train``, checked before anything is built
    (``ValueError``, one line): the output rule of :mod:`l1bn.spec.outdir` (new, empty, or an
    earlier output of ``l1bn verilog train``: its marker; never an input, a folder holding one or a
    folder of other files), not inside an input, and writable."""
    from l1bn.spec.outdir import check_output_dir, check_writable

    out = check_output_dir(out_dir, command=COMMAND, inputs=list(inputs), option="-o", must_be_new=False)
    for src in inputs:
        if Path(out).resolve().is_relative_to(Path(src).resolve()):
            raise ValueError(f"-o {out_dir} is inside the input {src}; write the design elsewhere")
    check_writable(out, option="-o")
    return out


def train_summary(acc) -> dict:
    """The schedule and layout of a :class:`~l1bn.hw.train.accel.TrainAccelerator` as plain data."""
    p = acc.plan
    g0 = p.layers[0]
    return {
        "config": acc.cfg.to_dict(), "rows": acc.rows, "seed": acc.seed, "batch": p.n, "norm": acc.cfg.norm,
        "mac": json.loads(p.mac_cfg.to_json()), "mac_acc_bits": p.mac_cfg.acc_bits,
        "interface": {"pixels_per_image": g0.cin * g0.hwi, "pixel_bits": acc.cfg.abits,
                      "classes": p.layers[-1].out, "logit_bits": p.mem["logits"]["bits"],
                      "beats_per_step": p.n * g0.cin * g0.hwi, "logits_per_step": p.n * p.layers[-1].out,
                      "state_values": sum(s[2] for s in acc.dump_segments)},
        "memories": {k: {**v, "total_bits": v["depth"] * v["bits"] * v["lanes"]} for k, v in p.mem.items()},
        "memory_bits": p.mem_bits,
        "program": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()} for s in acc.schedule],
        "cycles_per_step": acc.cycles_per_step, "mac_beats": p.mac_beats, "useful_macs": p.useful_macs,
        "array_busy": acc.array_busy, "mac_utilization": p.useful_macs / (p.rows * acc.cycles_per_step),
    }


def write_train_verilog(acc, out_dir, *, name: str = "train_accel", inputs=()) -> list[Path]:
    """Write ``<name>.v`` and ``schedule.json`` of ``acc`` into ``out_dir`` (``out_dir`` may not
    be or hold one of ``inputs``; :func:`check_train_output`). Both texts are made before anything
    is written, into a staged folder that then replaces ``out_dir`` in one step (with the
    command's marker): an interrupted run leaves the old design or none. Returns the paths."""
    from l1bn.spec.outdir import staged_dir

    out = check_train_output(out_dir, inputs)
    text = to_verilog(acc, name)
    summary = json.dumps(train_summary(acc), indent=2) + "\n"
    with staged_dir(out, command=COMMAND) as tmp:
        (tmp / f"{name}.v").write_text(text)
        (tmp / "schedule.json").write_text(summary)
    return [out / f"{name}.v", out / "schedule.json"]
