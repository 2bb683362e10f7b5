"""The whole-network accelerator: logits bit-exact against the integer reference (every test image of
a trained stand-in on Verilator, a subset on Icarus), measured cycles == formula, odd channel counts
and array widths, argmax ties, Verilator lint, and tampered exports refused before simulation."""

import dataclasses
import json
import shutil
import subprocess

import pytest
import torch
from amaranth.hdl import Fragment
from click.testing import CliRunner
from l1bn.cli.main import cli
from l1bn.hw.accelerator import accelerator_from_export, accelerator_interface
from l1bn.sim.sim_net import simulate_net
from l1bn.sw.export import load_export, write_export
from l1bn.sw.netrun import random_int_net, run_net


def _unused(component):
    """Elaborate a component asked only for its schedule (Amaranth warns about unused designs)."""
    Fragment.get(component, None)
    return component


@pytest.fixture(scope="module")
def odd_export(tmp_path_factory):
    """A random net with channel counts that are not multiples of the array height (6, 10, 7) and
    an fc layer whose classes 3 and 8 have identical weights (argmax ties: the first must win)."""
    net = random_int_net(seed=5, channels=(6, 10, 7))
    fc = net.layers[-1]
    w = torch.full_like(fc.weight, -1)
    w[3] = 7
    w[8] = 7
    net = dataclasses.replace(net, layers=net.layers[:-1] + (dataclasses.replace(fc, weight=w),))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (4, 1, 8, 8), generator=g)
    x[0] = 0  # an all-zero image
    y = torch.randint(0, 10, (4,), generator=g)
    path = write_export(net, tmp_path_factory.mktemp("acc-odd") / "net", rows=4,
                        extra={"test.inputs": (x, 4, False, "test_input"),
                               "test.labels": (y, 8, False, "test_label")})
    return path


@pytest.mark.slow
def test_verilator_every_test_image_bit_exact(trained_export, tmp_path):
    e = load_export(trained_export)
    n = int(e.test_inputs.shape[0])
    r = simulate_net(trained_export, simulator="verilator", build_dir=tmp_path)
    acc = _unused(accelerator_from_export(e))
    assert r["images"] == n == 360
    assert r["mismatches"] == 0 and r["passed"]
    assert r["cycles_per_image"] == r["formula_cycles"] == acc.cycles_per_image
    assert r["latency_cycles"] == [acc.latency]
    pred = torch.argmax(run_net(e.net, e.test_inputs), dim=1)
    assert r["hw_accuracy"] == r["ref_accuracy"] == float((pred == e.test_labels).double().mean())
    print(f"\nverilator: {n} images, {r['images_per_s']:.1f} images/s, {r['cycles_per_image']} cycles/image, "
          f"build {r['build_s']:.1f} s, simulation {r['sim_s']:.1f} s")


def test_icarus_subset_bit_exact(trained_export, tmp_path):
    r = simulate_net(trained_export, simulator="icarus", images=3, build_dir=tmp_path)
    assert r["images"] == 3 and r["mismatches"] == 0 and r["passed"]
    assert r["cycles_per_image"] == r["formula_cycles"]


def test_odd_channels_and_cols_and_argmax_ties(odd_export, tmp_path):
    e = load_export(odd_export)
    ref = run_net(e.net, e.test_inputs)
    assert bool((ref[:, 3] == ref[:, 8]).all()) and bool((torch.argmax(ref, 1) != 8).all())
    r = simulate_net(odd_export, simulator="icarus", cols=3, build_dir=tmp_path)
    assert r["mismatches"] == 0 and r["passed"] and r["images"] == 4
    assert r["cycles_per_image"] == r["formula_cycles"]


def test_cycle_formula_by_hand(trained_export):
    """The formula of docs/accelerator.md written out for the digits CNN and a 4x8 array."""
    acc = _unused(accelerator_from_export(load_export(trained_export), cols=8))
    per = {s["name"]: (s["K"], s["T"], s["G"], s["cycles"]) for s in acc.schedule()}

    def layer(k, tiles):  # stream_cycles (rows = 4) + 3
        return (tiles - 1) * max(k, 5) + k + 4 + 4 + 3

    assert per == {"conv1": (9, 4, 8, layer(9, 32)), "conv2": (144, 8, 2, layer(144, 16)),
                   "conv3": (288, 8, 1, layer(288, 8)), "fc": (128, 3, 1, layer(128, 3))}
    assert acc.cycles_per_image == 64 + 1 + sum(v[3] for v in per.values()) == 5389


def test_interface(trained_export):
    e = load_export(trained_export)
    assert accelerator_interface(e) == {"in_bits": 4, "logit_bits": e.manifest["layers"][-1]["acc_bits"],
                                        "classes": 10, "pixels": 64, "argmax_bits": 4}
    acc = _unused(accelerator_from_export(e))
    assert acc.i.payload.shape().width == 4
    assert set(acc.o.payload.shape().members) == {"logits", "argmax"}
    with pytest.raises(ValueError, match="cols=0"):
        accelerator_from_export(e, cols=0)


def test_verilog_net_cli_and_verilator_lint(trained_export, tmp_path):
    from l1bn.sim.tools import setup_verilator

    out = tmp_path / "v"
    r = CliRunner().invoke(cli, ["verilog", "net", str(trained_export), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "cycles per image 5389" in r.output
    names = sorted(p.name for p in out.iterdir())
    assert "accelerator.v" in names and "schedule.json" in names and "conv2.weight.hex" in names
    assert (out / "conv2.weight.hex").read_text() == (trained_export / "conv2.weight.hex").read_text()
    assert json.loads((out / "schedule.json").read_text())["cycles_per_image"] == 5389
    setup_verilator()
    # WIDTH: Amaranth's own output style (see toolchain.md); everything else must be clean
    lint = subprocess.run(["verilator", "--lint-only", "-Wno-WIDTH", "--top-module", "accelerator",
                           str(out / "accelerator.v")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-2000:]


def _edit_manifest(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("damage", ["missing_hex", "wrong_shape", "not_an_export"])
def test_tampered_export_stops_before_simulation(odd_export, tmp_path, l1bn_cli, monkeypatch, damage):
    build = tmp_path / "build"
    monkeypatch.setenv("L1BN_BUILD_DIR", str(build))
    p = tmp_path / "e"
    shutil.copytree(odd_export, p)
    expect = {"missing_hex": "tensor conv2.weight: hex file conv2.weight.hex is missing",
              "wrong_shape": "layer conv2: in_shape [10, 4, 4] does not follow",
              "not_an_export": "manifest.json is missing"}[damage]
    if damage == "missing_hex":
        (p / "conv2.weight.hex").unlink()
    elif damage == "wrong_shape":
        _edit_manifest(p, lambda m: m["layers"][1].update(in_shape=[10, 4, 4]))
    else:
        (p / "manifest.json").unlink()
    for argv in (["sim", "net", str(p)], ["verilog", "net", str(p), "-o", str(tmp_path / "v")]):
        code, out = l1bn_cli(argv)
        assert code == 2, out
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], out
    assert not build.exists() and not (tmp_path / "v").exists()


def test_bad_options_are_one_line(odd_export, l1bn_cli):
    code, out = l1bn_cli(["sim", "net", str(odd_export), "--images", "99"])
    assert code == 2 and "images=99" in out and "Traceback" not in out
    code, out = l1bn_cli(["sim", "net", str(odd_export), "--cols", "65"])
    assert code == 2 and "cols=65" in out
