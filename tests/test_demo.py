"""End to end: `l1bn demo` on small settings (1 epoch, a few images on Icarus, no place and route)."""

import json

import pytest
from l1bn.cli.demo import run_demo
from rich.console import Console


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    s = run_demo(out, epochs=1, images=4, simulator="icarus", area=False,
                 console=Console(file=open(tmp_path / "console.txt", "w"), width=120))
    assert s["mismatches"] == 0 and s["hw_images"] == 4
    assert s["int_qat_agreement"] >= 0.99
    assert json.loads((out / "summary.json").read_text())["cycles_per_image"] == s["cycles_per_image"]
    for sub in ("float", "qat", "export", "verilog"):
        assert (out / sub).is_dir()
    assert (out / "verilog" / "l1bn.v").exists() and (out / "verilog" / "l2bn.v").exists()


@pytest.mark.parametrize("kw, msg", [
    (dict(epochs=0), "epochs=0 is out of range"),
    (dict(bits=9), "bits=9 is out of range"),
    (dict(simulator="modelsim"), "simulator='modelsim' is not allowed"),
])
def test_demo_bad_input(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg):
        run_demo(tmp_path / "d", **kw)
