"""The cocotb bench kit (``l1bn.sim.simulate.benches.kit``): payloads packed through the generators' own
layouts, the stream ports the launcher hands to the benches, and the stream rules at the BN unit's
outputs when every output port is stalled."""

import pytest
from amaranth import Module, signed, unsigned
from amaranth.hdl import Fragment
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.bn_unit import bn_unit_for, stats_layout
from l1bn.hw.mac_array import MACArray, in_layout, out_layout
from l1bn.sim.simulate.benches.kit import Codec, InOrderChecker
from l1bn.sim.simulate.bn import random_batch
from l1bn.sim.simulate.runner import BENCHES, run_bench, stream_ports
from l1bn.spec.config import BNConfig, MACConfig


def test_codec_round_trips_through_the_generator_layouts():
    cfg = MACConfig(rows=2, cols=3, wbits=1, abits=4, signed_a=False, k=8, requant=True, shift=1,
                    out_bits=4, relu=True)
    lay = in_layout(cfg)
    beat = {"w": [1, 0], "a": [15, 0, 7], "last": 1}   # binary weights: stored bits (1 = -1)
    c = Codec(lay)
    raw = c.encode(beat)
    assert raw == lay.const(beat).as_bits() and c.decode(raw) == beat
    assert Codec(out_layout(cfg)).decode(Codec(out_layout(cfg)).encode({"y": [15, 0, 3], "last": 0})) == \
        {"y": [15, 0, 3], "last": 0}
    st = Codec(stats_layout(BNConfig(n=16, channels=3)))
    rec = {"channel": 2, "mu": -5, "s": 7, "sigma": 9, "inv": 1234}
    assert st.decode(st.encode(rec)) == rec
    arr = Codec(data.ArrayLayout(signed(8), 4))
    assert arr.decode(arr.encode([-128, 127, -1, 0])) == [-128, 127, -1, 0]
    plain = Codec(signed(5))
    assert plain.encode(-1) == 31 and plain.decode(31) == -1 and plain.decode(15) == 15


@pytest.mark.parametrize("shape, value", [
    (data.ArrayLayout(signed(4), 2), [8, 0]),          # Layout.const would truncate these silently
    (data.StructLayout({"a": unsigned(2), "b": 1}), {"a": 4}),
    (data.StructLayout({"a": unsigned(2), "b": 1}), {"a": -1}),
    (signed(3), 4),
])
def test_codec_refuses_a_value_that_does_not_fit(shape, value):
    with pytest.raises(ValueError, match="does not fit"):
        Codec(shape).encode(value)


def test_in_order_checker_locates_mismatches():
    chk = InOrderChecker([1, 2, 3, 4], where=lambda i: {"channel": i // 2, "element": i % 2})
    for v in (1, 5, None, 4):
        chk(v)
    assert chk.complete and chk.done.is_set() and chk.mismatches == 2
    assert chk.first == [{"channel": 0, "element": 1, "got": 5, "expected": 2},
                         {"channel": 1, "element": 0, "got": None, "expected": 3}]


def test_stream_ports_come_from_the_signature():
    mac = MACArray(MACConfig(rows=2, cols=2, k=4))
    ports = stream_ports(mac)
    assert {k: v["flow"] for k, v in ports.items()} == {"i": "in", "o": "out"}
    assert ports["i"]["shape"] == in_layout(mac.cfg) and ports["o"]["shape"] == out_layout(mac.cfg)
    cfg = BNConfig(n=16, lanes=2, channels=3)
    bn = bn_unit_for(cfg)
    ports = stream_ports(bn)
    assert {k: v["flow"] for k, v in ports.items()} == {"i": "in", "o": "out", "stats": "out"}
    assert ports["stats"]["shape"] == stats_layout(cfg)
    assert set(BENCHES) == {"absdiff", "bn", "bwd", "loopback", "mac", "net", "train"}
    with pytest.raises(ValueError, match="bench='nope' is unknown"):
        run_bench(mac, name="nope", build_dir="unused")
    for dut in (mac, bn):   # elaborated: neither is left unused
        Fragment.get(dut, None)


def test_bn_outputs_stalled_keep_the_stream_rules(tmp_path):
    """Backpressure on every output port: ``o`` not ready half of the cycles, ``stats`` 99 %, two
    elements per channel so each channel's statistics come long before the last one was taken.
    Every y and every statistics record equals the reference, every channel's record comes out
    once and in order, and no output changes its payload or drops ``valid`` before ``ready``."""
    cfg = BNConfig(norm="l1", width=8, n=2, lanes=1, channels=16)
    x, gamma, beta = random_batch(cfg, seed=4)
    r, _ = run_bench(bn_unit_for(cfg), name="bn", build_dir=tmp_path, simulator="icarus", config=cfg,
                     raise_on_fail=False, data={"x": x.tolist(), "gamma": gamma.tolist(), "beta": beta.tolist()},
                     options={"gaps": 0, "out_gaps": 50, "stats_gaps": 99, "seed": 3})
    assert r["violations"] == []
    assert r["mismatches"] == 0 and r["outputs"] == cfg.channels * cfg.n
    assert r["stats_mismatches"] == 0 and r["stats_seen"] == cfg.channels
    assert r["passed"]


class Slice(wiring.Component):
    """A register slice: ``o`` holds its beat until ``ready`` (the stream rules)."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(signed(6))), "o": Out(stream.Signature(signed(6)))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        return m


class OverwritingSlice(Slice):
    """Test-only mutant: always ready, so a new beat replaces one that waits for ``ready``."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


@pytest.mark.parametrize("design, ok", [(Slice, True), (OverwritingSlice, False)])
def test_sink_checks_the_stream_rules(design, ok, tmp_path):
    """Source and sink around a register slice, with pauses and backpressure: the correct slice
    passes every value in order; the mutant that overwrites a waiting beat is caught by the
    sink's stream-rule check (and by the in-order checker: beats are lost)."""
    values = [-32, 31, 0, -1] + list(range(-20, 20, 3))
    r, _ = run_bench(design(), name="loopback", build_dir=tmp_path, simulator="icarus",
                     data={"values": values}, options={"gaps": 20, "out_gaps": 50, "seed": 2},
                     raise_on_fail=False)
    assert r["passed"] is ok
    if ok:
        assert r["count"] == len(values) and r["mismatches"] == 0 and r["violations"] == []
        assert r["input_stalls"] > 0      # the backpressure reached the source
    else:
        assert r["violations"] and "payload changed before ready" in r["violations"][0]
        assert r["mismatches"] > 0
