"""The training accelerator: engines around shared on-chip memories, run by a sequencer
(docs/train_accel.md; one step is docs/arith/training.md).

::

    i (pixels, labels) ─► Loader ─┐                                                ┌─► z (logits)
                                  │     shared memories (one read + one write port) │
    rd (read back) ─► Sequencer ──┼─► Prep, MacEngine (MACArray rows x 1), BN forward ─► o (per step)
                        │ cmd/done│   and backward per BN layer, Loss, Quant, Update ┌─► st (state)
                        └─────────┴──────────────────────────────────────► Dumper ──┘

Every engine and every memory is a component, joined with ``wiring.connect``: the sequencer's
``<engine>_cmd`` / ``<engine>_done`` streams to the engines, the engines' ``rd_<mem>`` /
``wr_<mem>`` ports to the :class:`~l1bn.hw.train.bus.SharedMemory` clients, the BN units and the
MAC array to their engines by streams. The initial state (masters, gamma, beta, the LFSR bank) is
the memories' initial contents: :func:`l1bn.spec.reference.train.init_state` of the given seed.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import CheckedComponent
from l1bn.hw.train.bn_engines import BNBackwardEngine, BNForwardEngine
from l1bn.hw.train.bus import SharedMemory, mem_shape
from l1bn.hw.train.io import Dumper, Loader, dump_segments, dump_width, input_layout
from l1bn.hw.train.loss import LossEngine
from l1bn.hw.train.mac_engine import MacEngine
from l1bn.hw.train.plan import TrainPlan
from l1bn.hw.train.quant import QuantEngine
from l1bn.hw.train.schedule import array_busy, schedule, step_cycles
from l1bn.hw.train.sequencer import Sequencer, result_layout
from l1bn.hw.train.update import PrepEngine, UpdateEngine
from l1bn.spec.reference.train import init_state
from l1bn.spec.training import IntTrainConfig

__all__ = ["TrainAccelerator", "initial_memories"]


def initial_memories(plan: TrainPlan, state) -> dict:
    """The memories' initial contents for a :class:`~l1bn.spec.reference.train.TrainState`."""
    def place(name, bases, values):
        out = np.zeros(plan.mem[name]["depth"], dtype=np.int64)
        for b, v in zip(bases, values, strict=True):
            out[b:b + v.size] = v.reshape(-1)
        return out.tolist()
    mb = [plan.bases["master"][g.index] for g in plan.layers]
    cb = [plan.bases["chan"][i] for i in plan.bn_layers]
    out = {"master": place("master", mb, state.master), "lfsr": [int(v) for v in state.lfsr]}
    if cb:
        out.update(gamma=place("gamma", cb, state.gamma), beta=place("beta", cb, state.beta),
                   run_mu=place("run_mu", cb, state.run_mu), run_sigma=place("run_sigma", cb, state.run_sigma))
    return out


class TrainAccelerator(CheckedComponent):
    """Integer SGD training of ``cfg``'s network, full batches of ``cfg.batch`` images.

    Parameters
    ----------
    cfg : IntTrainConfig
    rows : int, 1..16
        MAC array height (the array is ``rows x 1``).
    seed : int
        The initial state is ``init_state(cfg, seed)``.

    Interface
    ---------
    i : In(stream.Signature(input_layout(plan)))
        A batch: ``batch`` images one after another, each image's pixels in (c, y, x) order, one
        per beat, with the image's label (taken from its first beat). A step starts when a batch
        begins to arrive.
    o : Out(stream.Signature(result_layout(plan)))
        One beat per step: step number, correct predictions, probability error, saturations.
    z : Out(stream.Signature(signed(logit_bits)))
        The step's logits, (image, class) order, ``batch * classes`` beats per step.
    rd : In(stream.Signature(unsigned(1)))
        A request (taken while idle) to read the state back on ``st``.
    st : Out(stream.Signature(signed(dump_width(plan))))
        The state (:func:`~l1bn.hw.train.io.dump_segments`), one value per beat.

    Attributes
    ----------
    plan : TrainPlan ; cycles_per_step : int ; array_busy : float ; schedule : list of dict
    """

    @classmethod
    def _check_args(cls, cfg, *, rows: int, seed: int = 0):
        TrainPlan(cfg, rows=rows)                      # refuses what the accelerator cannot build
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")

    def __init__(self, cfg: IntTrainConfig, *, rows: int, seed: int = 0):
        self.plan = plan = TrainPlan(cfg, rows=rows)
        self.cfg, self.rows, self.seed = cfg, rows, seed
        self.state0 = init_state(cfg, seed)
        self.cycles_per_step = step_cycles(plan)
        self.array_busy = array_busy(plan)
        self.schedule = schedule(plan)
        self.dump_segments = dump_segments(plan)
        super().__init__({
            "i": In(stream.Signature(input_layout(plan))),
            "o": Out(stream.Signature(result_layout(plan))),
            "z": Out(stream.Signature(mem_shape(plan.mem["logits"]))),
            "rd": In(stream.Signature(1)),
            "st": Out(stream.Signature(signed(dump_width(plan)))),
        })

    def engines(self) -> dict:
        p = self.plan
        eng = {"load": Loader(p), "prep": PrepEngine(p), "mac": MacEngine(p), "loss": LossEngine(p),
               "quant": QuantEngine(p), "update": UpdateEngine(p), "dump": Dumper(p)}
        for i in p.bn_layers:
            eng[f"bnf{i}"] = BNForwardEngine(p, i)
            eng[f"bnb{i}"] = BNBackwardEngine(p, i)
        return eng

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        engines = self.engines()
        for name, e in engines.items():
            m.submodules[name] = e
        init = initial_memories(p, self.state0)
        for mem in p.mem:
            readers = [n for n, e in engines.items() if f"rd_{mem}" in e.signature.members]
            writers = [n for n, e in engines.items() if f"wr_{mem}" in e.signature.members]
            if not readers and not writers:
                continue
            sm = SharedMemory(mem, p.mem[mem], readers=readers, writers=writers, init=init.get(mem),
                              transparent=mem == "lfsr")
            m.submodules[f"mem_{mem}"] = sm
            for n in readers:
                wiring.connect(m, getattr(engines[n], f"rd_{mem}"), getattr(sm, f"r_{n}"))
            for n in writers:
                wiring.connect(m, getattr(engines[n], f"wr_{mem}"), getattr(sm, f"w_{n}"))
        init_max = [int(np.abs(w).max()) for w in self.state0.master]
        m.submodules.seq = seq = Sequencer(p, engines, init_max)
        for name, e in engines.items():
            wiring.connect(m, getattr(seq, f"{name}_cmd"), e.cmd)
            wiring.connect(m, e.done, getattr(seq, f"{name}_done"))
        wiring.connect(m, wiring.flipped(self.i), engines["load"].i)
        wiring.connect(m, engines["loss"].z, wiring.flipped(self.z))
        wiring.connect(m, engines["dump"].o, wiring.flipped(self.st))
        wiring.connect(m, seq.o, wiring.flipped(self.o))
        wiring.connect(m, wiring.flipped(self.rd), seq.rd)
        m.d.comb += seq.i_valid.eq(self.i.valid)
        return m
