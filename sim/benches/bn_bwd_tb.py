"""cocotb bench for the BN backward units (:mod:`l1bn.hw.bn_backward`).

The test writes the batch (x, dy, gamma and the forward statistics mu, inv) as JSON into the file
named by ``L1BN_BWD_DATA``; expected values come from :func:`l1bn.spec.reference.bn_backward.bn_backward`
only. ``L1BN_GAPS`` (0..100) is the percent chance of an idle input cycle and of a not-ready cycle
on each output; with 0 the bench also checks the cycle count against ``backward_latency_cycles``.
``L1BN_DEBUG=1`` logs every output-port cycle.

``L1BN_SIGN_IN=1`` is for a unit built with ``sign_in=True`` (input field ``neg``): the bench drives
``neg`` from the reference's ``BNBackwardResult.sign`` in both passes and random garbage as x in
pass 2, so a unit that still read x in pass 2 would fail.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from l1bn.hw.bn_backward import backward_latency_cycles
from l1bn.spec.reference.bn_backward import bn_backward

from .common import env_int, load_config, load_data, reset, start_clock


class Bench:
    """Clock, cycle counter, input driver and the two output monitors."""

    def __init__(self, dut, cfg, data, gaps, rng, sign=None):
        self.dut, self.cfg, self.data, self.gaps, self.rng = dut, cfg, data, gaps, rng
        self.sign = sign  # (channels, n) list of 0/1 from the reference, or None without sign_in
        self.cycle = 0
        self.dx, self.g = [], []
        self.first_cycle = None
        self.last_dx_cycle = None

    def pack(self, x, dy, neg=0):
        w, gw = self.cfg.bn.width, self.cfg.grad_width
        return (x & ((1 << w) - 1)) | ((dy & ((1 << gw) - 1)) << w) | (neg << (w + gw))

    async def count(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.cycle += 1

    def gap(self):
        return self.gaps and self.rng.randrange(100) < self.gaps

    async def drive(self):
        dut, d = self.dut, self.data
        for c in range(self.cfg.bn.channels):
            for pass_no in range(2):
                for j, (x, dy) in enumerate(zip(d["x"][c], d["dy"][c], strict=True)):
                    neg = 0
                    if self.sign is not None:
                        neg = self.sign[c][j]
                        if pass_no == 1:  # x is don't care in pass 2: prove it
                            w = self.cfg.bn.width
                            x = self.rng.randrange(-(1 << (w - 1)), 1 << (w - 1))
                    await FallingEdge(dut.clk)
                    while self.gap():
                        dut.i__valid.value = 0
                        await FallingEdge(dut.clk)
                    dut.mu.value = d["mu"][c]
                    dut.inv.value = d["inv"][c]
                    dut.gamma.value = d["gamma"][c]
                    dut.i__payload.value = self.pack(x, dy, neg)
                    dut.i__valid.value = 1
                    while True:
                        await ReadOnly()
                        ok = int(dut.i__ready.value) == 1
                        if ok and self.first_cycle is None:
                            self.first_cycle = self.cycle
                        await RisingEdge(dut.clk)
                        if ok:
                            break
                        await FallingEdge(dut.clk)  # sample ready again after the sinks update
        await FallingEdge(dut.clk)
        dut.i__valid.value = 0

    async def watch(self, port, sink, total, unpack):
        dut = self.dut
        while len(sink) < total:
            await FallingEdge(dut.clk)
            getattr(dut, f"{port}__ready").value = 0 if self.gap() else 1
            await ReadOnly()
            if os.environ.get("L1BN_DEBUG"):
                dut._log.info("%s c%d v=%s r=%s p=%s iv=%s ir=%s ip=%s", port, self.cycle,
                              getattr(dut, f"{port}__valid").value, getattr(dut, f"{port}__ready").value,
                              getattr(dut, f"{port}__payload").value, dut.i__valid.value, dut.i__ready.value,
                              dut.i__payload.value)
            if int(getattr(dut, f"{port}__valid").value) and int(getattr(dut, f"{port}__ready").value):
                sink.append(unpack(getattr(dut, f"{port}__payload").value))
                if port == "o":
                    self.last_dx_cycle = self.cycle


@cocotb.test()
async def bn_backward_matches_reference(dut):
    cfg = load_config()
    data = load_data("bwd")
    gaps = env_int("L1BN_GAPS", 0)
    b = cfg.bn
    t = {k: torch.tensor(v, dtype=torch.int64) for k, v in data.items()}
    ref = bn_backward(t["x"], t["dy"], t["gamma"], t["mu"], t["inv"], cfg)
    sign_in = env_int("L1BN_SIGN_IN", 0) == 1
    # a unit/env mismatch would otherwise show up as confusing dx mismatches
    want = b.width + cfg.grad_width + sign_in
    assert len(dut.i__payload) == want, \
        f"i__payload is {len(dut.i__payload)} bits, L1BN_SIGN_IN={int(sign_in)} expects {want}"

    tb = Bench(dut, cfg, data, gaps, random.Random(env_int("L1BN_SEED", 1)),
               sign=ref.sign.tolist() if sign_in else None)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.g__ready.value = 0
    await start_clock(dut)
    await reset(dut)
    cocotb.start_soon(tb.count())
    hw = cfg.widths["h"]

    def unpack_g(v):
        return (v[hw - 1:0].to_signed(), v[len(v) - 1:hw].to_signed())

    cocotb.start_soon(tb.drive())
    cocotb.start_soon(tb.watch("g", tb.g, b.channels, unpack_g))
    await tb.watch("o", tb.dx, b.channels * b.n, lambda v: v.to_signed())

    exp_dx = ref.dx.flatten().tolist()
    bad = [(i, got, e) for i, (got, e) in enumerate(zip(tb.dx, exp_dx, strict=True)) if got != e]
    for i, got, e in bad[:10]:
        dut._log.error("dx[%d, %d] = %d, expected %d", i // b.n, i % b.n, got, e)
    for _ in range(20):
        if len(tb.g) == b.channels:
            break
        await RisingEdge(dut.clk)
    exp_g = list(zip(ref.dgamma.tolist(), ref.dbeta.tolist(), strict=True))
    assert tb.g == exp_g, f"(dgamma, dbeta) {tb.g} != expected {exp_g}"
    assert not bad, f"{len(bad)} dx mismatches of {len(exp_dx)}"
    if gaps == 0:
        measured = tb.last_dx_cycle - tb.first_cycle + 1
        dut._log.info("latency: %d cycles (formula %d)", measured, backward_latency_cycles(cfg))
        assert measured == backward_latency_cycles(cfg), (measured, backward_latency_cycles(cfg))
