"""Formal proofs (``l1bn prove``, :mod:`l1bn.sim.formal`): small proofs pass, and for each
property class a deliberately broken design fails with a counterexample trace.

Every check runs yosys-smtbmc with boolector (YoWASP), or ABC's pdr (Debian berkeley-abc, from
``make install``), on a small config; each takes 2-10 s on a quiet machine.
"""

from pathlib import Path

import pytest
from l1bn.hw.bn_unit import bn_unit_for
from l1bn.hw.mac_array import MACArray
from l1bn.sim.formal import abc as formal_abc
from l1bn.sim.formal.bn import BNDrainHarness, BNStreamHarness
from l1bn.sim.formal.check import Prop, check, unbounded
from l1bn.sim.formal.designs import design_props, select
from l1bn.sim.formal.mac import MACCountHarness, MACOverflowHarness, MACStreamHarness
from l1bn.sim.formal.mutants import (
    DropBeat,
    PayloadGlitch,
    narrow_mac_config,
    requantize_wrong_rounding,
)
from l1bn.sim.formal.requant import RequantHarness
from l1bn.spec.config import BNConfig, MACConfig

MAC = MACConfig(rows=2, cols=2, wbits=2, abits=2, k=2)
BN = BNConfig(norm="l1", width=4, n=2, channels=1, recip_bits=4)


needs_abc = pytest.mark.skipif(formal_abc.abc_path() is None,
                               reason="no native ABC: make install (apt berkeley-abc)")
RQ = MACConfig(rows=2, cols=2, wbits=4, abits=4, k=4, requant=True, shift=3, out_bits=4)


def _vcd_ok(path):
    text = Path(path).read_text()
    return "$enddefinitions" in text and "#" in text


def test_mac_stream_rule_proven_by_induction(tmp_path):
    r = check(Prop("stream.o", "stream", lambda: MACStreamHarness(MAC), 4, k=2), tmp_path)
    assert (r.status, r.method) == ("PASS", "k-induction k=2"), r


def test_bn_stats_stream_rule_proven_by_induction(tmp_path):
    # the stats port used to replace an untaken record (payload change under a stall)
    r = check(Prop("stream.stats", "stream", lambda: BNStreamHarness(BN, "stats"), 4, k=2), tmp_path)
    assert (r.status, r.method) == ("PASS", "k-induction k=2"), r


def test_mutant_payload_change_under_stall_fails(tmp_path):
    p = Prop("stream.o", "stream", lambda: MACStreamHarness(MAC, PayloadGlitch(MACArray(MAC), "o")), 8)
    r = check(p, tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r
    assert "props.py" in r.detail      # the stream-rule assertion


def test_mutant_dropped_beat_fails(tmp_path):
    p = Prop("count", "count", lambda: MACCountHarness(MAC, DropBeat(MACArray(MAC), "o")), 16, mode="bmc")
    r = check(p, tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


def test_mutant_narrow_accumulator_fails(tmp_path):
    narrow = narrow_mac_config(MAC)
    assert narrow.acc_bits == MAC.acc_bits - 1
    p = Prop("overflow", "overflow", lambda: MACOverflowHarness(narrow, MACArray(narrow)), 10, mode="bmc")
    r = check(p, tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


def test_property_selection_and_errors():
    names = [p.name for p in design_props("l1bn", BN)]
    assert names[:2] == ["stream.o", "stream.stats"] and "equiv" in names
    assert [p.name for p in design_props("accel", 2)] == ["stream.o", "count", "drain"]
    assert "equiv" not in [p.name for p in design_props("l2bn", BNConfig(norm="l2", width=4, n=2))]
    assert [p.name for p in select(design_props("mac", MAC), ["stream"])] == ["stream.o"]
    with pytest.raises(ValueError, match="no such property"):
        select(design_props("mac", MAC), ["nosuch"])
    with pytest.raises(ValueError, match="design"):
        design_props("fpga", MAC)
    with pytest.raises(ValueError, match="engine"):
        check(design_props("mac", MAC)[0], "unused", engine="minisat")


def test_cli_prove_mac_and_errors(l1bn_cli, tmp_path, capsys):
    from l1bn.cli.main import main

    main(["prove", "mac", "--rows", "2", "--cols", "2", "--wbits", "2", "--abits", "2", "--k", "2",
          "--props", "drain", "-o", str(tmp_path)])          # returns: no FAIL
    out = capsys.readouterr().out
    assert "drain" in out and "PASS" in out and "1 passed, 0 failed, 0 unknown" in out
    code, out = l1bn_cli(["prove", "mac", "--props", "nosuch", "-o", str(tmp_path)])
    assert code == 2 and out.count("error:") == 1 and "Traceback" not in out


def test_cli_exit_status_on_fail(monkeypatch, tmp_path, capsys):
    from l1bn.cli import prove as cli_prove
    from l1bn.sim.formal import designs

    mutant = Prop("stream.o", "stream", lambda: MACStreamHarness(MAC, PayloadGlitch(MACArray(MAC), "o")), 8)
    monkeypatch.setattr(designs, "design_props", lambda design, cfg: [mutant])
    with pytest.raises(SystemExit) as e:
        cli_prove._run("mac", MAC, "mutant", None, "boolector", "", 300.0, str(tmp_path))
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and ".vcd" in out and "0 passed, 1 failed" in out


@pytest.mark.slow
def test_bn_drain_and_dropped_beat(tmp_path):
    from l1bn.hw.bn_unit import bn_latency_cycles

    depth = bn_latency_cycles(BN) + 2
    r = check(Prop("drain", "count", lambda: BNDrainHarness(BN), depth, mode="bmc"), tmp_path)
    assert r.status == "PASS" and r.depth == depth, r
    p = Prop("drain", "count", lambda: BNDrainHarness(BN, DropBeat(bn_unit_for(BN), "o", index=1)),
             depth, mode="bmc")
    r = check(p, tmp_path / "mutant")
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


# --- the unbounded engine (ABC pdr on the AIGER of the harness) ------------------------------

@needs_abc
def test_pdr_proves_mac_count_unbounded(tmp_path):
    # the count property is bmc-only under smtbmc (its induction does not close)
    p = Prop("count", "count", lambda: MACCountHarness(MAC), 16, mode="bmc")
    r = check(p, tmp_path, prover="pdr", fallback=False, timeout=300)
    assert (r.status, r.method) == ("PASS", "pdr") and unbounded(r), r


@needs_abc
@pytest.mark.parametrize("relu", [False, True])
def test_pdr_proves_requantizer(tmp_path, relu):
    from dataclasses import replace

    cfg = replace(RQ, relu=relu)
    r = check(Prop("requant", "equiv", lambda: RequantHarness(cfg), 1, mode="bmc"), tmp_path,
              prover="pdr", fallback=False, timeout=300)
    assert (r.status, r.method) == ("PASS", "pdr"), r


MUTANTS = {
    "payload_glitch": lambda: MACStreamHarness(MAC, PayloadGlitch(MACArray(MAC), "o")),
    "dropped_beat": lambda: MACCountHarness(MAC, DropBeat(MACArray(MAC), "o")),
    "narrow_accumulator": lambda: MACOverflowHarness(narrow_mac_config(MAC), MACArray(narrow_mac_config(MAC))),
    "wrong_rounding": lambda: RequantHarness(RQ, requantize_wrong_rounding),
}


@needs_abc
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutants_fail_under_pdr(tmp_path, name):
    # pdr reports the frame; smtbmc replays that depth for the VCD and the failing assertion
    r = check(Prop(name, "mutant", MUTANTS[name], 8, mode="bmc"), tmp_path, prover="pdr",
              fallback=False, timeout=300)
    assert (r.status, r.method) == ("FAIL", "pdr") and _vcd_ok(r.trace), r
    assert "asserted in frame" in r.detail and "fails in step" in r.detail, r


def test_wrong_rounding_fails_by_bmc(tmp_path):
    r = check(Prop("requant", "equiv", lambda: RequantHarness(RQ, requantize_wrong_rounding), 1,
                   mode="bmc"), tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r
    r = check(Prop("requant", "equiv", lambda: RequantHarness(RQ), 1, mode="bmc"), tmp_path / "ok")
    assert r.status == "PASS", r


def test_pdr_falls_back_without_abc(monkeypatch, tmp_path):
    monkeypatch.setattr(formal_abc, "abc_path", lambda: None)
    r = check(Prop("stream.o", "stream", lambda: MACStreamHarness(MAC), 4, k=2), tmp_path, prover="pdr")
    assert (r.status, r.method) == ("PASS", "k-induction k=2"), r
    assert "no native ABC" in r.detail
    with pytest.raises(ValueError, match="prover"):
        check(Prop("stream.o", "stream", lambda: MACStreamHarness(MAC), 4), tmp_path, prover="ic3")


# -- unbounded overflow of the accumulating stages (k-induction with the harnesses' invariants)

STAGE_BN = BNConfig(norm="l2", width=4, n=4, channels=2, recip_bits=4)


@pytest.mark.parametrize("norm", [pytest.param("l1", marks=pytest.mark.slow), "l2",
                                  pytest.param("range", marks=pytest.mark.slow)])
def test_stage_overflow_proven_unbounded(tmp_path, norm):
    from dataclasses import replace

    cfg = replace(STAGE_BN, norm=norm)
    props = select(design_props(f"{norm}bn", cfg), ["overflow.stats", "overflow.disp"])
    assert [p.name for p in props] == ["overflow.stats", "overflow.disp"]
    for p in props:
        r = check(p, tmp_path / p.name, prover="induction")
        assert r.status == "PASS" and unbounded(r) and r.method.startswith("k-induction"), r


@pytest.mark.parametrize("prop", ["overflow.acc0_0", "overflow.pe1_1"])
def test_mac_accumulator_proven_unbounded(tmp_path, prop):
    props = select(design_props("mac", MAC), [prop])
    r = check(props[0], tmp_path, prover="induction")
    assert r.status == "PASS" and unbounded(r), r


@pytest.mark.parametrize("stage", ["stats", pytest.param("disp", marks=pytest.mark.slow)])
def test_narrow_stage_accumulator_fails(tmp_path, stage):
    from l1bn.hw.bn_stages import DispersionStage, StatsStage
    from l1bn.sim.formal.mutants import narrow_bn_config
    from l1bn.sim.formal.stages import DispStageHarness, StatsStageHarness, stage_k

    width = "sum_bits" if stage == "stats" else "disp_sum_bits"
    narrow = narrow_bn_config(STAGE_BN, width)
    assert getattr(narrow, width) == getattr(STAGE_BN, width) - 1
    make = ((lambda: StatsStageHarness(STAGE_BN, StatsStage(narrow))) if stage == "stats" else
            (lambda: DispStageHarness(STAGE_BN, DispersionStage(narrow))))
    k = stage_k(STAGE_BN, stage)
    r = check(Prop(f"overflow.{stage}", "overflow", make, k + 1, k=k), tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


def test_narrow_mac_accumulator_fails_the_invariant(tmp_path):
    from l1bn.sim.formal.mac import MACAccHarness

    narrow = narrow_mac_config(MAC)
    r = check(Prop("overflow.acc", "overflow", lambda: MACAccHarness(narrow, MACArray(narrow)), 8, k=4),
              tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


@pytest.mark.slow
def test_backward_accumulators_proven_unbounded(tmp_path):
    from l1bn.spec.config import BNBackwardConfig

    cfg = BNBackwardConfig(bn=BNConfig(norm="l1", width=4, n=2, channels=1, recip_bits=4), grad_width=4)
    (p,) = select(design_props("l1bn-bwd", cfg), ["overflow.acc"])
    r = check(p, tmp_path, prover="induction")
    assert r.status == "PASS" and unbounded(r), r


@pytest.mark.slow
def test_batch_equivalence_passes_and_catches_a_wrong_constant(tmp_path, monkeypatch):
    from l1bn.hw import bn_l1
    from l1bn.sim.formal.bn_batch import BNBatchHarness, batch_depth

    cfg = BNConfig(norm="l1", width=4, n=2, channels=1, recip_bits=4)
    (p,) = select(design_props("l1bn", cfg), ["equiv.batch"])
    assert p.depth == batch_depth(cfg)
    r = check(p, tmp_path / "good", prover="induction")
    assert r.status == "PASS" and r.method == "bmc", r
    # a unit built with twice the sigma constant: the generated model (the registry's constant)
    # catches it on the stats record
    real = bn_l1.c_const
    monkeypatch.setattr(bn_l1, "c_const", lambda bits: 2 * real(bits))
    bad = Prop("equiv.batch", "equiv", lambda: BNBatchHarness(cfg), batch_depth(cfg), mode="bmc")
    r = check(bad, tmp_path / "bad", prover="induction")
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


# -- the BN forward unit's count, unbounded (k-induction with the harness's invariants)

def test_bn_count_proven_unbounded(tmp_path):
    from dataclasses import replace

    cfg = replace(BN, channels=2)
    (p,) = select(design_props("l1bn", cfg), ["count"])
    r = check(p, tmp_path, prover="induction")
    assert r.status == "PASS" and unbounded(r) and r.method.startswith("k-induction"), r


@pytest.mark.parametrize("port", ["o", "stats"])
def test_bn_count_catches_a_lost_beat_or_record(tmp_path, port):
    # a y (or a record) consumed inside the unit and never shown: the occupancy (or record
    # counter) relation fails on a trace from reset
    from l1bn.sim.formal.bn_count import BNCountInvHarness

    r = check(Prop("count", "count", lambda: BNCountInvHarness(BN, DropBeat(bn_unit_for(BN), port)),
                   40, mode="bmc"), tmp_path)
    assert r.status == "FAIL" and _vcd_ok(r.trace), r


# -- the reciprocal stage (counter invariants) and the accumulators inside the unit, unbounded

@pytest.mark.slow
def test_recip_stage_proven_unbounded_at_its_latency(tmp_path):
    # the counter invariants close the induction one computation deep (recip_cycles + 2)
    from dataclasses import replace

    from l1bn.hw.bn_stages import recip_cycles

    cfg = replace(BN, channels=2)
    (p,) = select(design_props("l1bn", cfg), ["overflow.recip"])
    assert p.k == recip_cycles(cfg) + 2
    r = check(p, tmp_path, prover="induction")
    assert r.status == "PASS" and unbounded(r) and r.method == f"k-induction k={p.k}", r


@pytest.mark.slow
def test_unit_accumulators_proven_unbounded_and_narrow_one_fails(tmp_path):
    # overflow.unit: the stats and dispersion accumulators inside the unit, any stalls, any run;
    # a unit whose stats accumulator is one bit narrower fails it on a trace from reset
    from dataclasses import replace

    from l1bn.sim.formal.bn_overflow import BNOverflowInvHarness, overflow_k
    from l1bn.sim.formal.mutants import narrow_bn_config

    cfg = replace(BN, channels=2)
    (p,) = select(design_props("l1bn", cfg), ["overflow.unit"])
    r = check(p, tmp_path / "good", prover="induction")
    assert r.status == "PASS" and unbounded(r) and r.method.startswith("k-induction"), r
    narrow = narrow_bn_config(cfg, "sum_bits")
    k = overflow_k(cfg)
    bad = Prop("overflow.unit", "overflow", lambda: BNOverflowInvHarness(cfg, bn_unit_for(narrow)),
               k + 1, k=k)
    r = check(bad, tmp_path / "bad", prover="induction")
    assert r.status == "FAIL" and _vcd_ok(r.trace), r
