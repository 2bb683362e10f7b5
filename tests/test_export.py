"""Export / load: round trip, hex layout, and refusal of tampered or inconsistent exports."""

import json
import shutil

import numpy as np
import pytest
import torch
from l1bn.spec.export import (
    SCHEMA_VERSION,
    ExportError,
    decode_hex_column,
    decode_hex_weights,
    encode_hex_column,
    encode_hex_weights,
    load_export,
    read_manifest,
    write_export,
)
from l1bn.spec.reference.network import quantize_input, random_int_net, run_net


@pytest.fixture(scope="module")
def synthetic_export(tmp_path_factory):
    net = random_int_net(seed=2)
    x = np.random.default_rng(0).integers(0, 16, (40, 1, 8, 8))
    path = write_export(net, tmp_path_factory.mktemp("exp") / "net",
                        extra={"test.inputs": (x, 4, False, "test_input")}, rows=4)
    return net, x, path


def _copy(path, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def _edit_manifest(path, fn):
    m = read_manifest(path)
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_round_trip_same_numbers(synthetic_export):
    net, x, path = synthetic_export
    e = load_export(path)
    assert isinstance(e.test_inputs, np.ndarray) and e.test_inputs.dtype == np.int64
    assert np.array_equal(run_net(e.net, e.test_inputs), run_net(net, x))
    for a, b in zip(net.layers, e.net.layers, strict=True):
        assert b.weight.dtype == np.int64 and np.array_equal(a.weight, b.weight)
        assert a.stride == b.stride and a.padding == b.padding
        if a.bn is not None:
            assert np.array_equal(a.bn.mult, b.bn.mult) and np.array_equal(a.bn.bias, b.bn.bias)
            assert (a.bn.shift, a.bn.out_bits, a.bn.relu) == (b.bn.shift, b.bn.out_bits, b.bn.relu)
    m = e.manifest
    assert m["schema_version"] == SCHEMA_VERSION
    assert [node["op"] for node in m["nodes"]] == ["conv2d", "conv2d", "conv2d", "linear"]
    assert m["tensors"]["conv1.weight"]["dtype"] == "int8" and m["tensors"]["conv1.weight"]["bits"] == 4


def test_weight_hex_layout_is_documented_word_order(synthetic_export):
    """Word t*K + k holds W[t*rows + r, k] in bits [4r, 4r+4), two's complement (docs/export.md)."""
    net, _, path = synthetic_export
    w = net.layers[1].weight.reshape(32, -1)  # conv2: O=32, K=16*9
    lines = (path / "conv2.weight.hex").read_text().split()
    assert len(lines) == (32 // 4) * 144 and all(len(s) == 4 for s in lines)
    for t, k, r in [(0, 0, 0), (0, 0, 3), (2, 17, 1), (7, 143, 3)]:
        word = int(lines[t * 144 + k], 16)
        field = (word >> (4 * r)) & 0xF
        assert field - 16 * (field >= 8) == int(w[t * 4 + r, k])


@pytest.mark.parametrize("bits,rows,o", [(1, 3, 5), (4, 4, 10), (8, 1, 3), (3, 7, 2)])
def test_hex_encoders_round_trip(bits, rows, o):
    w = np.random.default_rng(bits).integers(-(1 << (bits - 1)), 1 << (bits - 1), (o, 2, 3))
    assert np.array_equal(decode_hex_weights(encode_hex_weights(w, bits, rows), (o, 2, 3), bits, rows), w)
    v = np.array([-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0])
    assert np.array_equal(decode_hex_column(encode_hex_column(v, bits), bits), v)


def test_corrupt_npy_byte(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    raw = bytearray((p / "conv2.weight.npy").read_bytes())
    raw[-1] ^= 0x01
    (p / "conv2.weight.npy").write_bytes(bytes(raw))
    with pytest.raises(ExportError, match=r"tensor conv2.weight: sha256 of conv2.weight.npy .* corrupted"):
        load_export(p)


def test_dropped_tensor(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    (p / "conv3.mult.npy").unlink()
    with pytest.raises(ExportError, match="tensor conv3.mult: file conv3.mult.npy is missing"):
        load_export(p)
    p2 = _copy(synthetic_export[2], tmp_path / "b")
    _edit_manifest(p2, lambda m: m["tensors"].pop("conv3.mult"))
    with pytest.raises(ExportError, match="tensor 'conv3.mult' is not declared"):
        load_export(p2)


def test_wrong_schema_version(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    _edit_manifest(p, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(ExportError, match=f"schema_version {SCHEMA_VERSION + 1} is not supported"):
        load_export(p)


def test_missing_hex_and_corrupt_hex(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    (p / "fc.weight.hex").unlink()
    with pytest.raises(ExportError, match="tensor fc.weight: hex file fc.weight.hex is missing"):
        load_export(p)
    p2 = _copy(synthetic_export[2], tmp_path / "b")
    _edit_manifest(p2, lambda m: m["tensors"]["fc.weight"].pop("hex"))
    with pytest.raises(ExportError, match="tensor fc.weight: the .hex memory image is missing"):
        load_export(p2)
    p3 = _copy(synthetic_export[2], tmp_path / "c")
    text = (p3 / "conv1.mult.hex").read_text().replace("0", "1", 1)
    (p3 / "conv1.mult.hex").write_text(text)
    with pytest.raises(ExportError, match="conv1.mult: sha256 of conv1.mult.hex"):
        load_export(p3)


def _rewrite_hex(p, name, text):
    """Replace a tensor's .hex consistently (file and sha256), as a buggy exporter would."""
    import hashlib

    (p / f"{name}.hex").write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    _edit_manifest(p, lambda m: m["tensors"][name]["hex"].update(sha256=digest))


@pytest.mark.parametrize("damage,want", [
    ("not_hex", r"conv1.mult: hex file conv1.mult.hex is malformed: line 3 \('12zz'\) is not a hexadecimal word"),
    ("too_wide", r"conv1.mult: hex file conv1.mult.hex is malformed: a word is wider than the 16 bits of its format"),
    ("padding", r"fc.weight: hex file fc.weight.hex is malformed: padding rows are not zero"),
    ("other_value", r"conv3.bias: hex file conv3.bias.hex does not hold the same values as conv3.bias.npy"),
])
def test_spec_reader_refuses_tampered_hex(synthetic_export, tmp_path, damage, want):
    """The reader decodes every .hex with the word codec and compares it with its .npy."""
    p = _copy(synthetic_export[2], tmp_path)
    if damage in ("not_hex", "too_wide"):
        lines = (p / "conv1.mult.hex").read_text().split()
        lines[2] = "12zz" if damage == "not_hex" else "1" + lines[2]   # 17 bits in a 16-bit word
        _rewrite_hex(p, "conv1.mult", "\n".join(lines) + "\n")
    elif damage == "padding":   # fc: 10 classes in 3 tiles of 4 rows; rows 10, 11 must be 0
        lines = (p / "fc.weight.hex").read_text().split()
        lines[-1] = f"{int(lines[-1], 16) | (1 << 12):04x}"        # row 3 of the last tile = channel 11
        _rewrite_hex(p, "fc.weight", "\n".join(lines) + "\n")
    else:
        lines = (p / "conv3.bias.hex").read_text().split()
        lines[0], lines[1] = lines[1], lines[0]
        _rewrite_hex(p, "conv3.bias", "\n".join(lines) + "\n")
    with pytest.raises(ExportError, match=want):
        load_export(p)


def test_spec_reader_refuses_a_manifest_that_is_not_an_object(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    (p / "manifest.json").write_text("[1, 2]\n")
    with pytest.raises(ExportError, match="schema is None"):
        load_export(p)
    (p / "manifest.json").write_text("{\"schema\": ")
    with pytest.raises(ExportError, match="manifest.json: not valid JSON"):
        read_manifest(p)
    (p / "manifest.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ExportError, match="manifest.json: not a text file"):
        load_export(p)


def _rewrite_npy(p, name, arr):
    """Replace a tensor consistently (file and sha256), as a buggy exporter would."""
    import hashlib

    np.save(p / f"{name}.npy", arr, allow_pickle=False)
    digest = hashlib.sha256((p / f"{name}.npy").read_bytes()).hexdigest()
    _edit_manifest(p, lambda m: m["tensors"][name].update(sha256=digest, shape=list(arr.shape),
                                                          dtype=str(arr.dtype)))


def test_values_out_of_declared_range(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    arr = np.load(p / "conv1.weight.npy")
    arr[0, 0, 0, 0] = 8  # 4-bit signed max is 7
    _rewrite_npy(p, "conv1.weight", arr)
    with pytest.raises(ExportError, match=r"conv1.weight: values -?\d+..8 are outside the declared 4-bit signed range -8..7"):
        load_export(p)


def test_wrong_shape_and_hex_disagreeing_with_npy(synthetic_export, tmp_path):
    p = _copy(synthetic_export[2], tmp_path)
    arr = np.load(p / "conv2.mult.npy")[:-1]
    _rewrite_npy(p, "conv2.mult", arr)
    with pytest.raises(ExportError, match="conv2.mult: hex file conv2.mult.hex is malformed: has 32 words; the tensor has 31"):
        load_export(p)
    p2 = _copy(synthetic_export[2], tmp_path / "b")
    arr = np.load(p2 / "conv2.weight.npy")
    arr[0, 0, 0, 0] = -arr[0, 0, 0, 0] - 1  # still in range, no longer equal to the .hex
    _rewrite_npy(p2, "conv2.weight", arr)
    with pytest.raises(ExportError, match="conv2.weight: hex file conv2.weight.hex does not hold the same values"):
        load_export(p2)
    p3 = _copy(synthetic_export[2], tmp_path / "c")
    _edit_manifest(p3, lambda m: m["nodes"][1].update(in_shapes=[[16, 4, 4]]))
    with pytest.raises(ExportError, match=r"node conv2: in_shapes=\[\[16, 4, 4\]\] disagrees"):
        load_export(p3)


def test_not_an_export(tmp_path):
    with pytest.raises(ExportError, match="no such export folder"):
        load_export(tmp_path / "nope")
    with pytest.raises(ExportError, match="manifest.json is missing"):
        load_export(tmp_path)


def test_write_is_atomic_and_refuses_overwrite(synthetic_export, tmp_path):
    net = synthetic_export[0]
    out = write_export(net, tmp_path / "e")
    with pytest.raises(ValueError, match="exists and is not empty"):
        write_export(net, out)
    write_export(net, out, force=True)
    load_export(out)
    # a failure half-way leaves neither a partial target nor temporary folders behind
    with pytest.raises(ValueError, match="exceed 4-bit"):
        write_export(net, tmp_path / "f", extra={"bad": (np.array([99]), 4, True, "x")})
    assert sorted(q.name for q in tmp_path.iterdir()) == ["e"]


# ------------------------------------------------------------------------------------------- CLI

class CLIResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def l1bn(*args, subprocess_=False):
    """Run the CLI entry point (in process by default: importing torch per call costs ~2 s)."""
    import contextlib
    import io
    import subprocess
    import sys

    if subprocess_:
        return subprocess.run([sys.executable, "-m", "l1bn.cli.main", *args], capture_output=True, text=True,
                              timeout=300)
    from l1bn.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
    return CLIResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def synthetic_with_split(tmp_path_factory):
    """A synthetic export carrying a test split and 'QAT' logits (the integer logits, rescaled)."""
    net = random_int_net(seed=4)
    x = np.random.default_rng(1).integers(0, 16, (64, 1, 8, 8))
    logits = run_net(net, x)
    labels = logits.argmax(1)
    labels[:8] = (labels[:8] + 1) % 10  # 56 of 64 right
    qat = logits * 2.0 ** -net.layers[-1].out_exp
    qat[0] = -qat[0]  # one QAT prediction differs (unless the row is constant)
    path = write_export(net, tmp_path_factory.mktemp("cli") / "net", extra={
        "test.inputs": (x, 4, False, "test_input"), "test.labels": (labels, 4, False, "test_label"),
        "test.qat_logits": (qat, None, None, "qat_logits")})
    return path, int((qat.argmax(1) != logits.argmax(1)).sum())


def test_cli_infer_json(synthetic_with_split):
    path, ndiff = synthetic_with_split
    p = l1bn("infer", str(path), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["images"] == 64 and r["accuracy"] == pytest.approx(56 / 64)
    assert r["disagreements"] == ndiff == 1 and r["agreement"] == pytest.approx(63 / 64)
    assert r["time_s"] > 0 and r["threads"] == 1


@pytest.mark.parametrize("damage", ["npy_byte", "drop_tensor", "schema_version"])
def test_cli_refuses_tampered_export(synthetic_with_split, tmp_path, damage):
    p = _copy(synthetic_with_split[0], tmp_path)
    if damage == "npy_byte":
        raw = bytearray((p / "conv1.weight.npy").read_bytes())
        raw[-3] ^= 0x10
        (p / "conv1.weight.npy").write_bytes(bytes(raw))
        want = "error: tensor conv1.weight: sha256 of conv1.weight.npy"
    elif damage == "drop_tensor":
        (p / "fc.weight.npy").unlink()
        want = "error: tensor fc.weight: file fc.weight.npy is missing"
    else:
        _edit_manifest(p, lambda m: m.update(schema_version=99))
        want = "error: "
        want += f"{p / 'manifest.json'}: schema_version 99 is not supported"
    r = l1bn("infer", str(p), subprocess_=damage == "npy_byte")  # one real process end to end
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith(want), r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cli_export_missing_run(tmp_path):
    r = l1bn("export", str(tmp_path / "norun"), "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "e").exists()


def test_documented_hex_example():
    """docs/export.md: W[0..3, 0] = -3, 7, 0, -8 with rows=4, 4-bit -> word 807d."""
    assert encode_hex_weights(np.array([[-3], [7], [0], [-8]]), 4, 4) == ["807d"]


class _L1BN(torch.nn.Module):
    """A stand-in trained L1BN (eval mode): sigma = sqrt(pi/2) * running_s + eps."""

    norm = "l1"

    def __init__(self, c, g):
        super().__init__()
        self.running_mean = torch.randn(c, generator=g) * 2
        self.running_s = torch.rand(c, generator=g) * 2 + 0.5
        self.weight = torch.rand(c, generator=g) + 0.5
        self.bias = torch.randn(c, generator=g) * 0.3 + 0.5
        self.eps = 1e-5

    def forward(self, x):
        sh = (1, -1, 1, 1)
        sigma = 1.2533141373155001 * self.running_s + self.eps
        return self.weight.view(sh) * (x - self.running_mean.view(sh)) / sigma.view(sh) + self.bias.view(sh)


def _float_qat_model(seed=0):
    """A float32 model shaped like the digits CNN with power-of-two fake quantizers, and its spec."""
    g = torch.Generator().manual_seed(seed)
    spec, chans, cin = [], (16, 32, 32), 1
    for i, (c, s) in enumerate(zip(chans, (1, 2, 2), strict=False)):
        w = torch.randint(-8, 8, (c, cin, 3, 3), generator=g).float() / 2 ** 3
        spec.append(dict(name=f"conv{i + 1}", type="conv2d", weight=w, w_bits=4, w_exp=3, stride=s, padding=1,
                         bn=_L1BN(c, g), relu=True, out_bits=4, out_exp=2))
        cin = c
    spec.append(dict(name="fc", type="linear", weight=torch.randint(-8, 8, (10, 128), generator=g).float() / 8,
                     w_bits=4, w_exp=3, bn=None, relu=False))

    def q(v, exp, bits):
        return torch.clamp(torch.floor(v * 2 ** exp + 0.5), 0, 2 ** bits - 1) / 2 ** exp

    def forward(x):
        h = q(x, 4, 4)
        for d in spec[:-1]:
            h = torch.nn.functional.conv2d(h, d["weight"], stride=d["stride"], padding=d["padding"])
            h = q(torch.relu(d["bn"](h)), d["out_exp"], d["out_bits"])
        return h.flatten(1) @ spec[-1]["weight"].T

    return spec, forward


def test_net_from_spec_agrees_with_float_model():
    from l1bn.sw.export import net_from_spec

    spec, forward = _float_qat_model()
    net = net_from_spec(spec, in_shape=(1, 8, 8), in_bits=4, in_exp=4)
    x = torch.rand(2000, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    logits_f = forward(x).double().numpy()
    logits_i = run_net(net, quantize_input(x.numpy(), bits=4, exp=4))
    agree = float((logits_f.argmax(1) == logits_i.argmax(1)).mean())
    assert agree >= 0.995, agree
    # the MAC part is exact: same integer activations give the same logits up to the scale
    assert net.layers[-1].out_exp == 3 + 2
    err = np.abs(logits_i * 2.0 ** -5 - logits_f)
    assert float(np.median(err)) == 0.0


def test_net_from_spec_refuses_off_grid_weights():
    from l1bn.sw.export import net_from_spec

    spec, _ = _float_qat_model()
    spec[1]["weight"] = spec[1]["weight"] + 0.01
    with pytest.raises(ValueError, match=r"layer conv2: weights are not on the 2\*\*-3 grid"):
        net_from_spec(spec, in_shape=(1, 8, 8), in_bits=4, in_exp=4)


# ------------------------------------------------------------- export_run on a trained run (stand-in)

@pytest.fixture
def standin_run(trained_standin, tmp_path, monkeypatch):
    """A run folder whose model is the trained QAT L1BN stand-in (conftest), served through the
    training package's contract (``train.load_run``, ``data`` test split, ``model.export_spec``)."""
    import sys
    import types

    model, x, y = trained_standin
    run = tmp_path / "run"
    run.mkdir()
    torch.save({}, run / "model.pt")
    train_mod = types.ModuleType("l1bn.sw.train")
    train_mod.load_run = lambda d: (model, {"model": "cnn", "norm": "l1", "wbits": 4, "abits": 4})
    data_mod = types.ModuleType("l1bn.sw.data")
    data_mod.test_split = lambda: (x, y)
    monkeypatch.setitem(sys.modules, "l1bn.sw.train", train_mod)
    monkeypatch.setitem(sys.modules, "l1bn.sw.data", data_mod)
    import l1bn.sw as pkg

    monkeypatch.setattr(pkg, "train", train_mod, raising=False)
    monkeypatch.setattr(pkg, "data", data_mod, raising=False)
    return run, model, x, y


def test_export_run_round_trip_and_cli(standin_run, tmp_path):
    from l1bn.cli.export import infer_export

    run, model, x, y = standin_run
    x, y = x.numpy(), y.numpy()
    r = l1bn("export", str(run), "--out", str(tmp_path / "exp"))
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stdout and "conv2" in r.stdout and "fc" in r.stdout
    e = load_export(tmp_path / "exp")
    assert np.array_equal(e.test_inputs, quantize_input(x, bits=4, exp=4)) and np.array_equal(e.test_labels, y)
    assert e.manifest["source"]["config"]["norm"] == "l1"
    logits = run_net(e.net, e.test_inputs)
    res = infer_export(tmp_path / "exp")
    assert res["accuracy"] == float((logits.argmax(1) == y).mean())
    assert res["agreement"] >= 0.995 and abs(res["accuracy"] - res["qat_accuracy"]) <= 0.005
    r2 = l1bn("infer", str(tmp_path / "exp"), "--json")
    assert r2.returncode == 0 and json.loads(r2.stdout)["accuracy"] == res["accuracy"]
    # export again with other array height: same numbers, other packing
    r3 = l1bn("export", str(run), "--out", str(tmp_path / "exp"), "--rows", "8")
    assert r3.returncode == 2 and "exists and is not empty" in r3.stderr
    assert l1bn("export", str(run), "--out", str(tmp_path / "exp"), "--rows", "8", "--force").returncode == 0
    e8 = load_export(tmp_path / "exp")
    assert e8.manifest["hex_rows"] == 8 and np.array_equal(run_net(e8.net, e8.test_inputs), logits)
    r4 = l1bn("export", str(run), "--out", str(tmp_path / "e2"), "--rows", "65")
    assert r4.returncode == 2 and r4.stderr.startswith("error: rows=65 is out of range")
