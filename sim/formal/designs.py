"""The properties ``l1bn prove`` checks for each design: its harnesses, depths and modes
(:class:`~l1bn.sim.formal.check.Prop`)."""

from __future__ import annotations

from l1bn.spec.norms import backward_norms, norm_names

from .check import Prop

__all__ = ["DESIGNS", "FORWARD_DESIGNS", "BACKWARD_DESIGNS", "design_props", "select"]

#: ``<norm>bn`` for every registered norm, ``<norm>bn-bwd`` for those with a backward unit
FORWARD_DESIGNS = {f"{nm}bn": nm for nm in norm_names()}
BACKWARD_DESIGNS = {f"{nm}bn-bwd": nm for nm in backward_norms()}
DESIGNS = (*FORWARD_DESIGNS, *BACKWARD_DESIGNS, "mac", "requant", "accel", "train")


def design_props(design: str, cfg) -> list[Prop]:
    """The properties ``l1bn prove`` checks for ``design`` (a name of :data:`DESIGNS`) and its
    config (``BNConfig``, ``BNBackwardConfig`` or ``MACConfig``). Depths come from the designs'
    own latency functions, so they follow any change of the pipelines."""
    from dataclasses import replace

    if design in FORWARD_DESIGNS:
        from l1bn.hw.bn_unit import bn_latency_cycles

        from .bn import BNCountHarness, BNDrainHarness, BNStreamHarness
        from .bn_count import BNCountInvHarness, count_k
        from .bn_data import BNDataHarness

        one = bn_latency_cycles(replace(cfg, channels=1)) + 2
        props = [
            Prop("stream.o", "stream", lambda: BNStreamHarness(cfg, "o"), 4, k=2,
                 what="o: valid and payload hold until ready"),
            Prop("stream.stats", "stream", lambda: BNStreamHarness(cfg, "stats"), 4, k=2,
                 what="stats: valid and payload hold until ready"),
            # unbounded: k-induction with the counter relations and buffer occupancy stated in
            # the harness (l1bn.sim.formal.bn_count)
            Prop("count", "count", lambda: BNCountInvHarness(cfg), count_k(cfg) + 1, k=count_k(cfg),
                 invariants=True,
                 what="any stalls: y never ahead of x, records in order, one per channel"),
            Prop("response", "count", lambda: BNCountHarness(cfg), bn_latency_cycles(cfg) + 4, mode="bmc",
                 what="any stalls: as count, and with both outputs ready a due y or record comes "
                      "within twice the one-channel latency"),
            Prop("drain", "count", lambda: BNDrainHarness(cfg), bn_latency_cycles(cfg) + 2, mode="bmc",
                 what="no stalls: all y and records of a batch out by bn_latency_cycles"),
            Prop("overflow", "overflow", lambda: BNDataHarness(cfg, vertices=True), one, mode="bmc",
                 what="x, gamma, beta at range ends: stats and y exact (no register too narrow)"),
        ]
        # the accumulating stages, unbounded: k-induction with the invariants stated in the
        # harnesses (l1bn.sim.formal.stages)
        from .stages import DispStageHarness, RecipStageHarness, StatsStageHarness, recip_k, stage_k

        for st, make, what in (
                ("stats", lambda: StatsStageHarness(cfg), "every x, any gaps, any run: the running "
                 "sum never wraps, mu exact"),
                ("disp", lambda: DispStageHarness(cfg), "x, mu at range ends, any gaps, any run: the "
                 "norm's running statistic never wraps, D exact")):
            k = stage_k(cfg, st)
            props.append(Prop(f"overflow.{st}", "overflow", make, k + 1, k=k, invariants=True, what=what))
        # the accumulators inside the unit and the stages' contracts there, unbounded:
        # k-induction with count's invariants beside them (l1bn.sim.formal.bn_overflow)
        from .bn_overflow import BNOverflowInvHarness, overflow_k

        props.append(Prop("overflow.unit", "overflow", lambda: BNOverflowInvHarness(cfg), overflow_k(cfg) + 1,
                          k=overflow_k(cfg), invariants=True,
                          what="every x, any stalls, any run: the unit's stats and dispersion "
                               "accumulators exact, its stages given their contracts"))
        props.append(Prop("overflow.recip", "overflow", lambda: RecipStageHarness(cfg), recip_k(cfg) + 1,
                          k=recip_k(cfg), invariants=True,
                          what="every D of n elements, any gaps and hold, any run: s, sigma, inv "
                               "exact against the program's rules"))
        # the whole batch against the reference program on the Amaranth backend (every norm)
        from .bn_batch import BNBatchHarness, batch_depth

        props.append(Prop("equiv.batch", "equiv", lambda: BNBatchHarness(cfg), batch_depth(cfg),
                          mode="bmc", what="all inputs, no stalls, one batch: every record and y "
                                           "equal the reference program (generated model)"))
        # equivalence where sigma is a constant multiply (L1, range): the square root of L2 makes
        # the full-input proof too slow, its overflow check stands in
        if cfg.norm_spec.sigma_kind == "const":
            props.append(Prop("equiv", "equiv", lambda: BNDataHarness(cfg, stalls=False), one,
                              mode="bmc", what="all inputs, no stalls: stats and y equal the "
                                               "reference formulas"))
        return props
    if design in BACKWARD_DESIGNS:
        from l1bn.hw.bn_backward import backward_latency_cycles

        from .backward import (
            BwdAccHarness,
            BwdCountHarness,
            BwdDrainHarness,
            BwdOverflowHarness,
            BwdStreamHarness,
            acc_k,
        )

        one = 2 * cfg.bn.n + 16
        return [
            Prop("stream.o", "stream", lambda: BwdStreamHarness(cfg, "o"), 2 * one, mode="auto",
                 k=4, what="o (dx): valid and payload hold until ready"),
            Prop("stream.g", "stream", lambda: BwdStreamHarness(cfg, "g"), 2 * one, mode="auto",
                 k=4, what="g (dgamma, dbeta): valid and payload hold until ready"),
            Prop("count", "count", lambda: BwdCountHarness(cfg), 2 * one, mode="bmc",
                 what="any stalls: one g per channel before its pass 2, dx never ahead"),
            Prop("drain", "count", lambda: BwdDrainHarness(cfg), backward_latency_cycles(cfg) + 2,
                 mode="bmc", what="no stalls: all dx and g out by backward_latency_cycles"),
            Prop("overflow", "overflow", lambda: BwdOverflowHarness(cfg), one, mode="bmc",
                 what="x, dy, mu, inv at range ends: dbeta and dgamma exact"),
            Prop("overflow.acc", "overflow", lambda: BwdAccHarness(cfg), acc_k(cfg) + 1, k=acc_k(cfg),
                 invariants=True, what="every x, dy, any stalls, any run: pass 1's sums never wrap"),
        ]
    if design == "mac":
        from l1bn.hw.mac_array import stream_cycles

        from .mac import (
            MACAccHarness,
            MACCountHarness,
            MACDrainHarness,
            MACOverflowHarness,
            MACProductHarness,
            MACStreamHarness,
        )

        tile = cfg.k + cfg.rows + 6
        corners = sorted({(0, 0), (cfg.rows - 1, cfg.cols - 1)})
        return [
            Prop("stream.o", "stream", lambda: MACStreamHarness(cfg), 4, k=2,
                 what="o: valid and payload hold until ready"),
            Prop("count", "count", lambda: MACCountHarness(cfg), tile + cfg.rows + 4, mode="bmc",
                 what="any stalls: rows rows per tile, last on the final one only"),
            Prop("drain", "count", lambda: MACDrainHarness(cfg), stream_cycles(cfg, cfg.k, 2) + 2,
                 mode="bmc", what="no stalls: 2 tiles out by stream_cycles"),
            Prop("product", "overflow", lambda: MACProductHarness(cfg), 1, mode="bmc",
                 what="shift-and-add = w * a for every w, a"),
        ] + [
            # unbounded (k-induction, the harness's shadow pipeline and queue as invariants);
            # the XNOR datapath has no product pipeline to shadow: bounded, w and a at range ends
            (Prop(f"overflow.pe{r}_{c}", "overflow",
                  (lambda r=r, c=c: MACOverflowHarness(cfg, pe=(r, c))), tile, mode="bmc",
                  what=f"PE ({r},{c}), w and a at range ends: every tile of 1..k steps exact")
             if cfg.xnor else
             Prop(f"overflow.pe{r}_{c}", "overflow",
                  (lambda r=r, c=c: MACOverflowHarness(cfg, pe=(r, c), vertices=False)), tile, k=2,
                  invariants=True,
                  what=f"PE ({r},{c}), every w and a, any stalls, any run: each result row "
                       "element equals the exact sum of its tile"))
            for r, c in corners
        ] + ([] if cfg.xnor else [
            Prop(f"overflow.acc{r}_{c}", "overflow", (lambda r=r, c=c: MACAccHarness(cfg, pe=(r, c))),
                 8, k=4, invariants=True,
                 what=f"PE ({r},{c}), every w and a, any stalls, any run: the accumulator never wraps")
            for r, c in corners])
    if design == "requant":
        from .requant import RequantHarness

        return [Prop("requant", "equiv", lambda: RequantHarness(cfg), 1, mode="bmc",
                     what="every acc_bits accumulator: hardware requantizer = rnd, ReLU, saturation")]
    if design == "accel":
        # cfg: the number of MAC columns of the tiny synthetic network's accelerator
        from functools import partial

        from amaranth.hdl import Fragment

        from .accel import (
            AccelCountHarness,
            AccelDrainHarness,
            AccelStreamHarness,
            tiny_accelerator,
        )

        make = partial(tiny_accelerator, cols=cfg)
        cyc = make()
        latency, period = cyc.latency, cyc.cycles_per_image
        Fragment.get(cyc, None)           # asked only for its schedule; elaborating marks it used
        return [
            Prop("stream.o", "stream", lambda: AccelStreamHarness(make), period + 5, mode="auto", k=4,
                 what="o (logits, argmax): valid and payload hold until ready"),
            Prop("count", "count", lambda: AccelCountHarness(make), period + 5, mode="bmc",
                 what="any stalls: one output per image, never before the image is in"),
            Prop("drain", "count", lambda: AccelDrainHarness(make), latency + 3, mode="bmc",
                 what="no stalls: the output handshake at the stated latency"),
        ]
    if design == "train":
        # cfg: the norm of the minimal network's training accelerator (sim/formal/train.py)
        from .train import (
            TrainCountHarness,
            TrainDrainHarness,
            TrainStreamHarness,
            minimal_step_cycles,
        )

        step = minimal_step_cycles(cfg)
        return [
            Prop("stream", "stream", lambda: TrainStreamHarness(cfg), 24, mode="auto", k=4,
                 what="o, z, st: valid and payload hold until ready"),
            Prop("count", "count", lambda: TrainCountHarness(cfg), step + 4, mode="bmc",
                 what="any gaps: a result only after its whole batch, one per batch; no early logit"),
            Prop("drain", "count", lambda: TrainDrainHarness(cfg), step + 2, mode="bmc",
                 what="no stalls: the result exactly cycles_per_step - 3 after the first beat"),
        ]
    raise ValueError(f"design {design!r} is not one of {', '.join(DESIGNS)}")


def select(props, names):
    """The properties whose name is in ``names`` or starts with one of them plus a dot."""
    if not names:
        return list(props)
    chosen = [p for p in props if any(p.name == n or p.name.startswith(n + ".") for n in names)]
    if not chosen:
        raise ValueError(f"--props {','.join(names)}: no such property (have "
                         f"{', '.join(p.name for p in props)})")
    return chosen
