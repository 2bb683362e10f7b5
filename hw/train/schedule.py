"""Cycles of one training step: each program entry's engine formula, summed (docs/train_accel.md).

Every entry of :attr:`TrainPlan.program` costs its engine's cycles from the command handshake to
``done`` valid (the formula next to each engine, checked against Amaranth's simulator by
``tests/test_train_blocks.py``) plus one cycle in which the sequencer takes ``done``; the step ends
with the result beat. With the input valid and ``o``/``z`` ready every cycle::

    cycles_per_step = sum over entries (engine cycles + 1) + 1

from the handshake of the batch's first input beat... (:func:`step_cycles`). The array is busy in a
cycle when it takes a beat: :attr:`TrainPlan.mac_beats` of them per step (:func:`array_busy`).
"""

from __future__ import annotations

from l1bn.hw.train.bn_engines import bnb_cycles, bnf_cycles
from l1bn.hw.train.io import loader_cycles
from l1bn.hw.train.loss import loss_cycles
from l1bn.hw.train.mac_engine import mac_cycles
from l1bn.hw.train.plan import TrainPlan
from l1bn.hw.train.quant import quant_cycles
from l1bn.hw.train.update import prep_cycles, update_cycles

__all__ = ["schedule", "step_cycles", "array_busy", "BLOCKS"]

#: the block each engine's cycles are counted under in the breakdowns
BLOCKS = {"load": "control", "prep": "update", "mac": "MAC array", "bnf": "BN forward", "loss": "loss",
          "quant": "quantizers", "bnb": "BN backward", "update": "update", "out": "control"}


def _entry_cycles(plan: TrainPlan, eng: str, arg) -> int:
    if eng == "load":
        return loader_cycles(plan)
    if eng == "prep":
        return prep_cycles(plan, arg)
    if eng == "mac":
        return mac_cycles(plan, plan.mac_ops[plan.mac_order[arg]])
    if eng == "bnf":
        return bnf_cycles(plan, arg)
    if eng == "bnb":
        return bnb_cycles(plan, arg)
    if eng == "loss":
        return loss_cycles(plan)
    if eng == "quant":
        g = plan.layers[arg]
        return quant_cycles(g.out * plan.n * g.hwo)
    if eng == "update":
        return update_cycles(plan, *arg)
    if eng == "out":
        return 0
    raise ValueError(f"unknown engine {eng!r}")


def schedule(plan: TrainPlan) -> list[dict]:
    """Per program entry: ``engine``, ``arg``, ``name`` (e.g. ``mac fwd conv1``), ``block``,
    ``cycles`` (its share of the step, the sequencer's cycle included) and ``beats`` (array
    beats)."""
    out = []
    for eng, arg in plan.program:
        beats = 0
        if eng == "mac":
            kind, i = plan.mac_order[arg]
            op = plan.mac_ops[(kind, i)]
            name, beats = f"mac {kind} {plan.layers[i].name}", op.beats
        elif eng in ("bnf", "bnb", "prep", "quant"):
            name = f"{eng} {plan.layers[arg].name}"
        elif eng == "update":
            name = f"update {plan.layers[arg[1]].name} {arg[0]}"
        else:
            name = eng
        out.append({"engine": eng, "arg": arg, "name": name, "block": BLOCKS[eng],
                    "cycles": _entry_cycles(plan, eng, arg) + 1, "beats": beats})
    return out


def step_cycles(plan: TrainPlan) -> int:
    """Cycles of one step: from the sequencer leaving idle (the batch's first beat is waiting) to
    the handshake of the step's result beat, input valid and outputs ready every cycle."""
    return sum(s["cycles"] for s in schedule(plan)) + 1


def array_busy(plan: TrainPlan) -> float:
    """Fraction of the step's cycles in which the MAC array takes a beat."""
    return plan.mac_beats / step_cycles(plan)
