"""MAC array generator: bit-exact against the integer reference on Icarus and Verilator, cycle
formula and utilization, config validation, CLI errors, and (slow) ECP5 place and route."""

import itertools

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.cli.main import cli
from l1bn.hw.mac_array import MACArray, stream_cycles, tile_period
from l1bn.sim.simulate.mac import random_tiles, simulate_mac
from l1bn.spec.config import MACConfig

# signed/unsigned, mixed widths, binary weights, with and without the requantizer, N=1 / M=1
CONFIGS = {
    "w4s_a4s": MACConfig(rows=4, cols=4, wbits=4, abits=4, k=16),
    "binary_a4u_requant_relu": MACConfig(rows=4, cols=4, wbits=1, abits=4, signed_a=False, k=16,
                                         requant=True, shift=3, out_bits=4, relu=True),
    "w2u_a3s_3x5": MACConfig(rows=3, cols=5, wbits=2, abits=3, signed_w=False, k=8),
    "w8s_a8s_requant": MACConfig(rows=2, cols=4, wbits=8, abits=8, k=12, requant=True, shift=5, out_bits=8),
    "w3s_a2u_saturate": MACConfig(rows=5, cols=2, wbits=3, abits=2, signed_a=False, k=12,
                                  requant=True, shift=0, out_bits=3),
    "w2u_a2u_1x1": MACConfig(rows=1, cols=1, wbits=2, abits=2, signed_w=False, signed_a=False, k=3),
    # issue 27: XNOR-popcount (binary x bipolar), the sign-select array on the same operands,
    # multi-bit weights x bipolar activations, wide (12-bit) activations
    "xnor_3x4": MACConfig(rows=3, cols=4, wbits=1, abits=1, bipolar_a=True, xnor=True, k=20),
    "binary_bipolar_sign_select": MACConfig(rows=3, cols=4, wbits=1, abits=1, bipolar_a=True, k=20),
    "w3s_bipolar_requant": MACConfig(rows=2, cols=3, wbits=3, abits=1, bipolar_a=True, k=9, requant=True,
                                     shift=1, out_bits=3),
    "xnor_requant_relu": MACConfig(rows=4, cols=2, wbits=1, abits=1, bipolar_a=True, xnor=True, k=33,
                                   requant=True, shift=2, out_bits=3, relu=True),
    "w2s_a12s": MACConfig(rows=2, cols=2, wbits=2, abits=12, k=10),
}


def _tiles(cfg, seed):
    """Random tiles, extreme-value tiles, an all-zero first tile (tests X-free startup), short K."""
    k = cfg.k
    zero = random_tiles(cfg, 1, k, seed=seed)
    zero[0]["a"] = [[1 if cfg.bipolar_a else 0] * cfg.cols for _ in range(k)]    # bipolar: all codes 0
    return (zero + random_tiles(cfg, 3, k, seed=seed + 1)
            + random_tiles(cfg, 3, k, seed=seed + 2, extremes=True)
            + random_tiles(cfg, 2, 1, seed=seed + 3))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_bit_exact(name, simulator, tmp_path):
    cfg = CONFIGS[name]
    r = simulate_mac(cfg, _tiles(cfg, 7), simulator=simulator, build_dir=tmp_path)
    assert r["mismatches"] == 0 and r["passed"]
    assert r["outputs"] == cfg.rows * cfg.cols * 9


@pytest.mark.parametrize("name", ["binary_a4u_requant_relu", "w2u_a3s_3x5", "xnor_3x4"])
def test_valid_gaps_and_backpressure(name, tmp_path):
    cfg = CONFIGS[name]
    r = simulate_mac(cfg, _tiles(cfg, 11), simulator="icarus", gaps=30, out_gaps=50, seed=5,
                     build_dir=tmp_path)
    assert r["mismatches"] == 0 and r["passed"]


def test_long_stream_utilization_and_cycle_formula(tmp_path):
    cfg = MACConfig(rows=8, cols=8, wbits=4, abits=4, k=64)
    tiles = 16
    r = simulate_mac(cfg, random_tiles(cfg, tiles, 64, seed=3), simulator="icarus", build_dir=tmp_path)
    assert r["mismatches"] == 0
    assert r["cycles"] == r["formula_cycles"] == stream_cycles(cfg, 64, tiles)
    assert r["period"] == tile_period(cfg, 64) == 64
    assert r["utilization"] >= 0.95
    assert r["input_stalls"] == 0


def test_xnor_array_keeps_the_stream_timing(tmp_path):
    """The XNOR-popcount PEs take the product pipeline's cycles: the same stream formula, for
    long tiles and for short ones (K < rows + 1, the result bank the bottleneck)."""
    for rows, k in ((8, 64), (6, 3)):
        cfg = MACConfig(rows=rows, cols=4, wbits=1, abits=1, bipolar_a=True, xnor=True, k=k)
        r = simulate_mac(cfg, random_tiles(cfg, 6, k, seed=rows), simulator="icarus", build_dir=tmp_path / str(k))
        assert r["mismatches"] == 0
        assert r["cycles"] == r["formula_cycles"] == stream_cycles(cfg, k, 6)
        assert r["period"] == tile_period(cfg, k) == max(k, rows + 1)


def test_short_tiles_stall_as_the_formula_says(tmp_path):
    # K < rows + 1: the result bank is the bottleneck; the formula still predicts the cycles exactly
    cfg = MACConfig(rows=6, cols=3, wbits=2, abits=2, k=4)
    r = simulate_mac(cfg, random_tiles(cfg, 6, 4, seed=2), simulator="icarus", build_dir=tmp_path)
    assert r["mismatches"] == 0
    assert r["cycles"] == stream_cycles(cfg, 4, 6)
    assert r["period"] == tile_period(cfg, 4) == 7


# ------------------------------------------------------------------ widths against brute force

@settings(max_examples=60, deadline=None)
@given(wbits=st.integers(1, 8), abits=st.integers(1, 8), sw=st.booleans(), sa=st.booleans(),
       k=st.integers(1, 300))
def test_widths_hold_every_sum(wbits, abits, sw, sa, k):
    cfg = MACConfig(wbits=wbits, abits=abits, signed_w=sw, signed_a=sa, k=k)
    ws = [-1, 1] if (wbits == 1 and sw) else range(-(1 << (wbits - 1)) if sw else 0,
                                                   (1 << (wbits - 1 if sw else wbits)))
    as_ = range(-(1 << (abits - 1)) if sa else 0, (1 << (abits - 1 if sa else abits)))
    prods = [w * a for w, a in itertools.product(ws, as_)]
    lo, hi = k * min(prods), k * max(prods)
    b = cfg.acc_bits
    assert -(1 << (b - 1)) <= lo and hi < (1 << (b - 1))
    # and it is the fewest such bits
    assert b == 1 or not (-(1 << (b - 2)) <= lo and hi < (1 << (b - 2)))
    pb = cfg.product_bits
    assert -(1 << (pb - 1)) <= min(prods) and max(prods) < (1 << (pb - 1))


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("kw, match", [
    ({"rows": 0}, "rows=0"), ({"cols": 65}, "cols=65"), ({"wbits": 9}, "wbits=9"),
    ({"abits": 0}, "abits=0"), ({"k": 0}, "k=0"), ({"out_bits": 1}, "out_bits=1"),
    ({"shift": 32}, "shift=32"), ({"signed_w": 1}, "signed_w=1"), ({"rows": 2.0}, "rows=2.0"),
    ({"abits": 17}, "abits=17"), ({"abits": 2, "bipolar_a": True}, "bipolar_a needs abits=1"),
    ({"abits": 1, "signed_a": False, "bipolar_a": True}, "bipolar_a needs abits=1 and signed_a"),
    ({"wbits": 1, "abits": 1, "xnor": True}, "xnor .* needs binary weights"),
    ({"wbits": 2, "abits": 1, "bipolar_a": True, "xnor": True}, "xnor .* needs binary weights"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        MACConfig(**kw)


def test_generator_rejects_non_config():
    with pytest.raises(TypeError, match="MACConfig"):
        MACArray({"rows": 4})


def test_cli_errors_are_one_line(tmp_path, l1bn_cli):
    code, out = l1bn_cli(["verilog", "mac", "--wbits", "9", "-o", str(tmp_path / "m.v")])
    assert code == 2 and "wbits=9" in out and "Traceback" not in out
    code, out = l1bn_cli(["verilog", "mac", "--shift", "2", "-o", str(tmp_path / "m.v")])
    assert code == 2 and "--requant" in out


def test_cli_writes_verilog(tmp_path):
    out = tmp_path / "mac.v"
    r = CliRunner().invoke(cli, ["verilog", "mac", "--rows", "2", "--cols", "3", "--wbits", "1",
                                 "--requant", "--shift", "2", "--out-bits", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "module mac_array" in out.read_text()
    cfg = MACConfig(rows=2, cols=3, wbits=1, k=64, requant=True, shift=2, out_bits=4)
    assert f"accumulator {cfg.acc_bits} bits" in r.output


def _bench_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "mac_array.py"
    spec = importlib.util.spec_from_file_location("bench_mac_array", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_fmax_is_the_median_over_seeds(tmp_path, monkeypatch):
    """bench/mac_array.py places and routes once per seed (same design, seed in the job) and reports
    the median run with every seed's Fmax; an even count takes the lower middle run."""
    from l1bn.sim import jobs

    mod = _bench_module()
    fmax = {1: 157.85, 2: 145.16, 3: 150.22, 4: 140.0}
    seen = []

    def fake_run_jobs(jobs, **kw):
        seen.append([j.params["seed"] for j in jobs])
        assert len({j.verilog for j in jobs}) == 1 and all(j.params["pnr"] for j in jobs)
        return [{"fmax_mhz": fmax[j.params["seed"]], "lut": 10 * j.params["seed"], "seed_run": j.params["seed"]}
                for j in jobs]

    monkeypatch.setattr(jobs, "run_jobs", fake_run_jobs)
    cfg = MACConfig(rows=2, cols=2, wbits=2, abits=2, k=4)
    r = mod.implement(cfg, workdir=tmp_path, seeds=(1, 2, 3))
    assert seen[-1] == [1, 2, 3]
    assert r["fmax_mhz"] == 150.22 and r["median_seed"] == 3 and r["seed_run"] == 3 and r["lut4"] == 30
    assert r["fmax_seeds"] == {1: 157.85, 2: 145.16, 3: 150.22}
    r = mod.implement(cfg, workdir=tmp_path, seeds=(1, 2, 3, 4))
    assert r["fmax_mhz"] == 145.16 and r["median_seed"] == 2
    assert mod.implement(cfg, workdir=tmp_path)["median_seed"] == 1     # default: seed 1 only
    with pytest.raises(SystemExit):
        mod.main(["--seeds", "1,1"])
    with pytest.raises(SystemExit):
        mod.main(["--only", "9x9w4a4"])


def test_bench_reports_an_array_too_large_for_the_device_and_measures_the_rest(tmp_path, monkeypatch):
    """An array that does not fit (the 8x8 on an iCE40 UP5K) is a row of the JSON's ``unfit`` with
    the fit check's message; the arrays that fit are still measured and written."""
    import json

    from l1bn.sim.fpga.families import DeviceFitError

    mod = _bench_module()
    monkeypatch.setattr(mod, "measure_cycles", lambda cfg: {"period": 64.0, "formula_period": 64, "utilization": 1.0})

    def fake_implement(cfg, **kw):
        if cfg.rows == 8:
            raise DeviceFitError("mac-x-s1: the design needs 5781 ICESTORM_LC after packing but iCE40UP5K-SG48 has 5280")
        return {"fmax_mhz": 50.0, "fmax_seeds": {1: 50.0}, "median_seed": 1, "lut4": 900, "le": 1500, "lut": 900}

    monkeypatch.setattr(mod, "implement", fake_implement)
    out = tmp_path / "mac.json"
    rows = mod.main(["--quick", "--seeds", "1", "--family", "ice40", "--workdir", str(tmp_path), "--json", str(out)])
    d = json.loads(out.read_text())
    assert [r["config"] for r in rows] == [r["config"] for r in d["rows"]] == ["4x4 w4s a4s"]
    assert d["rows"][0]["gops"] == 2 * 16 * 50e6 / 1e9
    assert [u["config"] for u in d["unfit"]] == ["8x8 w4s a4s"] and "5781 ICESTORM_LC" in d["unfit"][0]["error"]


@pytest.mark.slow
def test_ecp5_8x8_w4a4_meets_100mhz(tmp_path):
    implement = _bench_module().implement

    cfg = MACConfig(rows=8, cols=8, wbits=4, abits=4, k=64)
    res = implement(cfg, workdir=tmp_path)
    assert res["dsp"] == 0
    assert res["fmax_mhz"] >= 100, res


# ------------------------------------------------------------------ one real layer of the digits CNN

def test_real_layer_tile_by_tile(trained_export, tmp_path):
    """Layer 2 of the exported digits CNN (conftest; real 4-bit activations of layer 1) on the
    array, tile by tile, equals the reference layer's accumulators (``conv2d_int``)."""
    from l1bn.spec.export import load_export
    from l1bn.spec.reference.network import conv2d_int, im2col, run_layer

    digits_export = load_export(trained_export)
    net = digits_export.net
    layer = net.layers[1]
    assert layer.type == "conv2d"
    x = run_layer(net.layers[0], digits_export.test_inputs[:2])  # real activations, 2 images
    expected = conv2d_int(x, layer.weight, layer.stride, layer.padding)   # (2, O, Ho, Wo)

    cfg = MACConfig(rows=8, cols=8, wbits=layer.w_bits, abits=layer.a_bits, signed_a=layer.a_signed,
                    k=layer.k)
    kh, kw = layer.weight.shape[2:]
    w = layer.weight.reshape(layer.weight.shape[0], -1)                    # (O, K)
    a, ho, wo = im2col(x, kh, kw, layer.stride, layer.padding)            # (K, 2*Ho*Wo)
    o, n = w.shape[0], a.shape[1]
    assert o % cfg.rows == 0 and n % cfg.cols == 0
    tiles = [{"w": w[i:i + cfg.rows].tolist(), "a": a[:, j:j + cfg.cols].tolist()}
             for i in range(0, o, cfg.rows) for j in range(0, n, cfg.cols)]
    r = simulate_mac(cfg, tiles, simulator="icarus", build_dir=tmp_path, out_rows=True)
    assert r["mismatches"] == 0
    got = np.zeros((o, n), dtype=np.int64)
    t = 0
    for i in range(0, o, cfg.rows):
        for j in range(0, n, cfg.cols):
            got[i:i + cfg.rows, j:j + cfg.cols] = r["rows"][t * cfg.rows:(t + 1) * cfg.rows]
            t += 1
    # columns of im2col are (image, y, x): back to (N, O, Ho, Wo)
    got = got.reshape(o, 2, ho, wo).transpose(1, 0, 2, 3)
    assert np.array_equal(got, expected)
    assert bool((x != 0).any()) and bool((expected != 0).any())


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 5), k=st.integers(1, 70), n=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_xnor_popcount_is_the_bipolar_product(m, k, n, seed):
    """The XNOR reference (2 * matches - K on the codes) equals w @ a of the {-1, +1} values,
    corners included (all codes equal: +K; all different: -K)."""
    from l1bn.spec.reference.mac import encode_activations, encode_weights, mac_tile, xnor_popcount

    rng = np.random.default_rng(seed)
    w = rng.choice([-1, 1], size=(m, k))
    a = rng.choice([-1, 1], size=(k, n))
    cfg = MACConfig(rows=m, cols=n, wbits=1, abits=1, bipolar_a=True, xnor=True, k=k)
    wc, ac = np.asarray(encode_weights(w, cfg)), np.asarray(encode_activations(a, cfg))
    assert (xnor_popcount(wc, ac) == w @ a).all()
    assert (np.asarray(mac_tile(w, a, cfg)) == w @ a).all()
    assert (xnor_popcount(np.zeros((m, k), int), np.zeros((k, n), int)) == k).all()
    assert (xnor_popcount(np.ones((m, k), int), np.zeros((k, n), int)) == -k).all()


def test_xnor_reference_rejects_bad_codes():
    from l1bn.spec.reference.mac import mac_tile, xnor_popcount

    with pytest.raises(ValueError, match="0 or 1"):
        xnor_popcount(np.array([[2]]), np.array([[0]]))
    with pytest.raises(ValueError, match="reduction lengths differ"):
        xnor_popcount(np.zeros((1, 3), int), np.zeros((2, 1), int))
    cfg = MACConfig(rows=1, cols=1, wbits=1, abits=1, bipolar_a=True, xnor=True, k=4)
    with pytest.raises(ValueError, match="bipolar activations must be -1 or \\+1"):
        mac_tile(np.ones((1, 2), int), np.zeros((2, 1), int), cfg)
