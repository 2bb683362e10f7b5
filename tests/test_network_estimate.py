"""The training-step estimate (``l1bn report --network``, l1bn.sim.report.network): its arithmetic
on small fake report.json / results.json files (energies, latencies, shares and ratios against a
hand computation from the counts and the units' latency formulas), and bad input as one error
line with nothing written."""

import json
import math

import pytest
from l1bn.hw.bn_backward import backward_latency_cycles
from l1bn.hw.bn_unit import bn_latency_cycles
from l1bn.sim.jobs import FLOW_VERSION
from l1bn.sim.report.network import estimate_networks, load_costs
from l1bn.sim.report.units import backward_config, forward_config
from l1bn.spec.netshape import network_shape
from l1bn.spec.opcount import step_counts

W = 8
# energy per element (forward, backward), recip stage energy per element, Fmax (forward, backward)
FWD = {"l1": (90.0, 6.0, 120.0), "l2": (100.0, 9.0, 100.0), "range": (88.0, 5.0, 110.0)}
BWD = {"l1": (150.0, 130.0), "l2": (200.0, 100.0)}
MAC = {"fpga": (3.0, 150.0), "asic": (0.5, 400.0)}       # energy per MAC, Fmax
KEYS = {"fpga": ("energy_per_element", "energy_per_mac"), "asic": ("energy_pj_per_element", "energy_pj_per_mac")}


def fake_report(target, *, scale=1.0):
    ek = KEYS[target][0]

    def unit(e, f):
        return {ek: e * scale, "fmax_mhz": f, "latency_cycles": 430, "latency_cycles_formula": 430, "elements": 256}

    wr = {"forward": {nm: unit(e, f) for nm, (e, _, f) in FWD.items()},
          "backward": {nm: unit(e, f) for nm, (e, f) in BWD.items()},
          "stages": {"recip": {nm: {ek: r * scale} for nm, (_, r, _) in FWD.items()}}}
    rep = {"flow_version": FLOW_VERSION, "params": {"widths": [W], "n": 64, "lanes": 1, "channels": 4},
           "widths": {str(W): wr}}
    if target == "asic":
        rep["target"] = "asic"
    return rep


def fake_sweep(points=(("fpga", 4, 8), ("asic", 4, 8))):
    from l1bn.hw.mac_array import stream_cycles
    from l1bn.spec.config import MACConfig

    pts = []
    for target, r, b in points:
        cyc = stream_cycles(MACConfig(rows=r, cols=r, wbits=b, abits=b, k=64), 64, 2)
        pts.append({"rows": r, "cols": r, "wbits": b, "abits": b, "target": target, "status": "ok",
                    "fmax_mhz": MAC[target][1], "cycles": cyc, KEYS[target][1]: MAC[target][0]})
    return {"design": "mac", "mac_k": 64, "flow_version": FLOW_VERSION, "points": pts}


@pytest.fixture
def files(tmp_path):
    paths = {"fpga": tmp_path / "fpga.json", "asic": tmp_path / "asic.json", "mac": tmp_path / "mac.json"}
    paths["fpga"].write_text(json.dumps(fake_report("fpga")))
    paths["asic"].write_text(json.dumps(fake_report("asic", scale=0.1)))
    paths["mac"].write_text(json.dumps(fake_sweep()))
    return paths


def test_estimate_arithmetic_on_a_fake_report(files):
    batch = 8
    costs = load_costs([files["fpga"], files["asic"]], files["mac"], width=W)
    est = estimate_networks(["digits"], costs, width=W, batch=batch)
    c = step_counts(network_shape("digits"), batch=batch)
    macs, bn = c.total("macs"), c.total("bn_elements")
    assert est["label"].startswith("estimate built from measured parts")
    for target, scale in (("fpga", 1.0), ("asic", 0.1)):
        r = est["networks"]["digits"]["targets"][target]
        e_mac, f_mac = MAC[target]
        t_mac = macs / 16 / f_mac                         # 4x4 array, K = 64 > rows: 16 MACs per cycle

        def energy(fn, bn_, e_mac=e_mac, scale=scale):
            return macs * e_mac + bn * scale * (FWD[fn][0] + BWD[bn_][0])

        def bn_us(fn, bn_):
            fwd = sum(bn_latency_cycles(forward_config(fn, W, n=batch * la.positions, lanes=1, channels=la.bn_channels))
                      for la in c.layers if la.bn_channels)
            bwd = sum(backward_latency_cycles(backward_config(bn_, W, n=batch * la.positions, channels=la.bn_channels))
                      for la in c.layers if la.bn_channels)
            return fwd / FWD[fn][2], bwd / BWD[bn_][1]

        for var, fn, bn_ in (("l1", "l1", "l1"), ("l2", "l2", "l2"), ("range", "range", "l1"),
                             ("range_fwd_only", "range", "l2")):
            v = r[var]
            assert v["energy_total"] == pytest.approx(energy(fn, bn_), rel=1e-12)
            assert v["energy_over_l2"] == pytest.approx(energy(fn, bn_) / energy("l2", "l2"), rel=1e-12)
            assert v["bn_energy_share"] == pytest.approx(1 - macs * e_mac / energy(fn, bn_), rel=1e-12)
            assert v["bn_energy_over_l2"] == pytest.approx((FWD[fn][0] + BWD[bn_][0]) / 300.0, rel=1e-12)
            no_recip = macs * e_mac + bn * scale * (FWD[fn][0] - FWD[fn][1] + BWD[bn_][0])
            l2_no_recip = macs * e_mac + bn * scale * (100.0 - 9.0 + 200.0)
            assert v["energy_over_l2_no_recip"] == pytest.approx(no_recip / l2_no_recip, rel=1e-12)
            fu, bu = bn_us(fn, bn_)
            assert v["latency_us"]["mac"] == pytest.approx(t_mac, rel=1e-12)
            assert v["latency_us"]["bn_forward"] == pytest.approx(fu, rel=1e-12)
            assert v["latency_us"]["bn_backward"] == pytest.approx(bu, rel=1e-12)
            assert v["bn_latency_share"] == pytest.approx((fu + bu) / (t_mac + fu + bu), rel=1e-12)
            l2f, l2b = bn_us("l2", "l2")
            assert v["latency_over_l2"] == pytest.approx((t_mac + fu + bu) / (t_mac + l2f + l2b), rel=1e-12)
            assert v["bn_latency_over_l2"] == pytest.approx((fu + bu) / (l2f + l2b), rel=1e-12)
        assert r["range"]["assumed"] and "L1 backward" in r["range"]["assumed"]
        assert r["l1"]["assumed"] is None
    assert est["targets"]["fpga"]["sources"]["report"] == str(files["fpga"])
    assert est["targets"]["asic"]["mac"]["point"] == "4x4w8a8"


def test_more_units_or_arrays_shorten_only_their_own_time(files):
    costs = load_costs([files["fpga"]], files["mac"], width=W)
    one = estimate_networks(["cnv"], costs, width=W, batch=4)["networks"]["cnv"]["targets"]["fpga"]["l2"]
    four = estimate_networks(["cnv"], costs, width=W, batch=4, bn_units=4)["networks"]["cnv"]["targets"]["fpga"]["l2"]
    assert four["latency_us"]["mac"] == one["latency_us"]["mac"] and four["energy"] == one["energy"]
    for k in ("bn_forward", "bn_backward"):      # channels split 4 ways: about a quarter of the time
        assert 0.24 < four["latency_us"][k] / one["latency_us"][k] < 0.3
    arr = estimate_networks(["cnv"], costs, width=W, batch=4, mac_arrays=4)["networks"]["cnv"]["targets"]["fpga"]["l2"]
    assert arr["latency_us"]["mac"] == pytest.approx(one["latency_us"]["mac"] / 4, rel=1e-12)
    assert arr["latency_us"]["bn_forward"] == one["latency_us"]["bn_forward"] and arr["energy"] == one["energy"]
    assert set(estimate_networks(["cnv"], costs, width=W, batch=4)["targets"]) == {"fpga"}


def run_cli(argv, capsys):
    from l1bn.cli.main import main

    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_the_estimate(files, tmp_path, capsys):
    out = tmp_path / "est"
    code, so, se = run_cli(["report", "--network", "digits,cnv", "--from-json", str(files["fpga"]), "--from-json",
                            str(files["asic"]), "--mac-json", str(files["mac"]), "--batch", "4", "--out", str(out)],
                           capsys)
    assert code == 0, se
    est = json.loads((out / "estimate.json").read_text())
    assert list(est["networks"]) == ["digits", "cnv"] and est["width"] == W and est["batch"] == 4
    assert "built from measured parts" in so and "| cnv | ASIC |" in so and f"wrote {out / 'estimate.json'}" in so
    r = est["networks"]["cnv"]["targets"]["fpga"]
    assert math.isclose(r["l1"]["energy_over_l2"], r["l1"]["energy_total"] / r["l2"]["energy_total"])


def test_a_measured_range_backward_replaces_the_assumptions(files, tmp_path):
    """A report that holds range's own backward unit (``RangeBNBackwardUnit``) gives one measured
    range row, priced with that unit; a report from before it (the fixture's) gives the two
    assumed rows, and the summary's columns follow what the estimate holds."""
    from l1bn.sim.report.network import estimate_markdown

    rep = json.loads(files["fpga"].read_text())
    rng = {"energy_per_element": 170.0, "fmax_mhz": 90.0, "latency_cycles": 430,
           "latency_cycles_formula": 430, "elements": 256}
    rep["widths"][str(W)]["backward"]["range"] = rng
    path = tmp_path / "with_range.json"
    path.write_text(json.dumps(rep))
    old = estimate_networks(["digits"], load_costs([files["fpga"]], files["mac"], width=W), width=W, batch=4)
    new = estimate_networks(["digits"], load_costs([path], files["mac"], width=W), width=W, batch=4)
    r_old, r_new = (e["networks"]["digits"]["targets"]["fpga"] for e in (old, new))
    assert set(r_old) == {"l1", "l2", "range", "range_fwd_only"} and set(r_new) == {"l1", "l2", "range"}
    v = r_new["range"]
    assert v["backward_unit"] == "range" and v["assumed"] is None
    c = step_counts(network_shape("digits"), batch=4)
    assert v["energy"]["bn_backward"] == pytest.approx(c.total("bn_elements") * 170.0, rel=1e-12)
    bwd = sum(backward_latency_cycles(backward_config("range", W, n=4 * la.positions, channels=la.bn_channels))
              for la in c.layers if la.bn_channels)
    assert v["latency_us"]["bn_backward"] == pytest.approx(bwd / 90.0, rel=1e-12)
    head_old = estimate_markdown(old).split("## Summary")[1].splitlines()[2]
    head_new = estimate_markdown(new).split("## Summary")[1].splitlines()[2]
    assert ("range/L2 energy (bwd: L1's) | range/L2 latency (bwd: L1's) | range/L2 energy (bwd: L2's)"
            in head_old and "RANGE" not in head_old)
    assert "| RANGE/L2 energy | RANGE/L2 latency | L1/L2 energy, no recip |" in head_new and "bwd:" not in head_new


def _drop(path, *keys):
    d = json.loads(path.read_text())
    node = d
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("case, message", [
    ("unknown_network", "error: network='vgg' is unknown; allowed digits, cnv, resnet18"),
    ("missing_unit", "has no backward l2 unit at width 8"),
    ("missing_energy", "widths.8.forward.range.energy_per_element is None; a measured positive number is needed"),
    ("no_file", "does not exist"),
    ("not_json", "is not JSON"),
    ("two_points", "has 2 fpga points (4x4w8a8, 8x8w8a8); choose one with --mac-point"),
    ("flow_version", "were measured by different flows"),
    ("bad_width", "width 4 is not in every report given (common widths: 8)"),
    ("flow_option", "--no-pnr is an option of the flows"),
    ("no_mac", "--network needs --mac-json"),
    ("malformed", "is malformed (KeyError: 'rows')"),
    ("out_holds_input", "contains the input"),
])
def test_bad_input_is_one_error_line(files, tmp_path, capsys, case, message):
    rep, mac, extra = files["fpga"], files["mac"], []
    net = "digits"
    if case == "unknown_network":
        net = "vgg"
    elif case == "missing_unit":
        _drop(rep, "widths", "8", "backward", "l2")
    elif case == "missing_energy":
        _drop(rep, "widths", "8", "forward", "range", "energy_per_element")
    elif case == "no_file":
        rep = tmp_path / "nothere.json"
    elif case == "not_json":
        rep.write_text("{not json")
    elif case == "two_points":
        mac.write_text(json.dumps(fake_sweep((("fpga", 4, 8), ("fpga", 8, 8)))))
    elif case == "flow_version":
        d = json.loads(mac.read_text())
        d["flow_version"] = "0-other"
        mac.write_text(json.dumps(d))
    elif case == "bad_width":
        extra = ["--widths", "4"]
    elif case == "flow_option":
        extra = ["--no-pnr"]
    elif case == "malformed":
        d = json.loads(mac.read_text())
        del d["points"][0]["rows"]
        mac.write_text(json.dumps(d))
    out = tmp_path / "est"
    if case == "out_holds_input":
        out = tmp_path
    argv = ["report", "--network", net, "--from-json", str(rep), "--out", str(out), *extra]
    if case != "no_mac":
        argv += ["--mac-json", str(mac)]
    code, so, se = run_cli(argv, capsys)
    assert code == 2 and so == ""
    lines = se.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], se
    assert not (out / "estimate.json").exists()


def test_network_estimate_follows_the_output_rule(files, tmp_path, capsys):
    """``report --network --out DIR`` (issue 32's one output rule): a folder of the user's files or
    another command's output is refused with one line and left as it was; its own output (the
    marker of ``l1bn report``) is reused, and no temporary file is left."""
    from l1bn.spec.outdir import claim_dir, keep_claims, output_owner

    argv = ["report", "--network", "digits", "--from-json", str(files["fpga"]), "--mac-json", str(files["mac"])]
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    other = claim_dir(tmp_path / "exp", "export")
    (other / "manifest.json").write_text("{}\n")
    keep_claims()   # (made by the test, not by a command that fails below)
    for out, words in ((mine, "did not write"), (other, "holds the output of `l1bn export`")):
        before = sorted(p.name for p in out.iterdir())
        code, so, se = run_cli([*argv, "--out", str(out)], capsys)
        lines = [ln for ln in (so + se).splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], so + se
        assert sorted(p.name for p in out.iterdir()) == before
    out = tmp_path / "est"
    for _ in range(2):
        code, so, se = run_cli([*argv, "--out", str(out)], capsys)
        assert code == 0, se
    assert output_owner(out) == "report"
    assert sorted(p.name for p in out.iterdir()) == [".l1bn-output.json", "estimate.json", "estimate.md"]
