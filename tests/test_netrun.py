"""The reference network executor (l1bn.spec.reference.network, numpy): im2col convolution and
layer chaining, exact against naive models, against torch's float64 convolution and against the
torch executor it replaced (written out below, int64 torch ops only)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.spec.reference.infer_bn import apply_folded, fold_affine
from l1bn.spec.reference.mac import matmul
from l1bn.spec.reference.network import (
    IntLayer,
    IntNet,
    conv2d_int,
    im2col,
    linear_int,
    quantize_input,
    random_int_net,
    run_layer,
    run_net,
)


def naive_conv(x, w, stride, padding):
    """Pure-Python-int convolution with zero padding (lists in, lists out)."""
    n, c, h, wd = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    o, kh, kw = len(w), len(w[0][0]), len(w[0][0][0])
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1

    def px(i, ch, yy, xx):
        return x[i][ch][yy][xx] if 0 <= yy < h and 0 <= xx < wd else 0

    return [[[[sum(w[oc][ch][ky][kx] * px(i, ch, oy * stride - padding + ky, ox * stride - padding + kx)
                   for ch in range(c) for ky in range(kh) for kx in range(kw))
               for ox in range(wo)] for oy in range(ho)] for oc in range(o)] for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(3, 6), st.integers(3, 6),
       st.sampled_from([1, 2, 3]), st.integers(1, 3), st.integers(0, 2), st.data())
def test_conv2d_int_equals_naive(n, c, o, h, w, k, stride, padding, data):
    ints = st.integers(-128, 127)
    x = data.draw(st.lists(st.lists(st.lists(st.lists(ints, min_size=w, max_size=w), min_size=h, max_size=h),
                                    min_size=c, max_size=c), min_size=n, max_size=n))
    wt = data.draw(st.lists(st.lists(st.lists(st.lists(ints, min_size=k, max_size=k), min_size=k, max_size=k),
                                     min_size=c, max_size=c), min_size=o, max_size=o))
    got = conv2d_int(np.array(x), np.array(wt), stride, padding)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    assert got.tolist() == naive_conv(x, wt, stride, padding)


def test_conv_and_linear_match_float64_torch_on_large_values():
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 20), 1 << 20, (7, 5, 9, 8))
    w = rng.integers(-(1 << 20), 1 << 20, (6, 5, 3, 3))
    got = conv2d_int(x, w, stride=2, padding=1)
    # |products| < 2**40 and 45 terms: exact in float64
    want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=2, padding=1)
    assert np.array_equal(got, want.to(torch.int64).numpy())
    wl = rng.integers(-100, 100, (4, 5 * 9 * 8))
    assert np.array_equal(linear_int(x, wl), x.reshape(7, -1) @ wl.T)


def test_matmul_exact_on_both_sides_of_the_float64_bound():
    """matmul takes float64 BLAS only below the 2**53 bound; above it int64 stays exact where
    float64 would round (a product of two 2**30 + 1 needs 61 bits)."""
    for v, k in ((2**30 + 1, 2), ((1 << 26) - 1, 2), (3, 1 << 20)):
        w = np.full((2, k), v, dtype=np.int64)
        a = np.full((k, 3), -v, dtype=np.int64)
        got = matmul(w, a)
        assert got.dtype == np.int64 and got.tolist() == [[-k * v * v] * 3] * 2, (v, k)
    # float64 would be wrong above the bound: the int64 path is what makes the first case exact
    v = 2**30 + 1
    assert int(np.float64(v) * np.float64(v) * 2) != 2 * v * v


def test_im2col_row_order_matches_weight_reshape():
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    cols, ho, wo = im2col(x, 3, 3, 1, 0)
    assert (ho, wo) == (2, 2) and cols.shape == (27, 8)
    # column 0 = image 0, output (0, 0): the 3x3 patches of every channel in (c, ky, kx) order
    assert np.array_equal(cols[:, 0], x[0, :, :3, :3].reshape(-1))
    # column 5 = image 1, output (0, 1)
    assert np.array_equal(cols[:, 5], x[1, :, :3, 1:4].reshape(-1))


def test_run_net_equals_layer_by_layer_float_model():
    net = random_int_net(seed=5)
    x = np.random.default_rng(0).integers(0, 16, (50, 1, 8, 8))
    logits, outs = run_net(net, x, trace=True)
    assert logits.shape == (50, 10) and len(outs) == 4
    h = torch.from_numpy(x)
    for layer, out in zip(net.layers, outs, strict=True):
        w = torch.from_numpy(layer.weight).double()
        if layer.type == "conv2d":
            acc = F.conv2d(h.double(), w, stride=layer.stride, padding=layer.padding)
        else:
            acc = h.reshape(h.shape[0], -1).double() @ w.T
        acc = acc.to(torch.int64)
        h = acc if layer.bn is None else apply_folded(acc, layer.bn)
        assert np.array_equal(out, h.numpy()), layer.name
    # activations use their range (not all zero, not all saturated)
    for out in outs[:-1]:
        assert 0 < float(out.mean()) < 15


# ----------------------------------------- the torch executor this module replaced (sw/netrun.py)

def _torch_requantize(acc, f):
    """The old path's folded BN in torch int64: acc*mult + bias, round half up shift, ReLU, clamp."""
    mult = torch.as_tensor(np.asarray(f.mult)).view(1, -1, *([1] * (acc.dim() - 2)))
    bias = torch.as_tensor(np.asarray(f.bias)).view(1, -1, *([1] * (acc.dim() - 2)))
    y = acc * mult + bias
    if f.shift:
        y = (y + (1 << (f.shift - 1))) >> f.shift
    lo, hi = (0, (1 << f.out_bits) - 1) if f.relu else (-(1 << (f.out_bits - 1)), (1 << (f.out_bits - 1)) - 1)
    return y.clamp(lo, hi)


def _torch_run_net(net, x):
    """sw/netrun.run_net before the move, in torch int64: unfold-based im2col, int64 matmul."""
    x = torch.as_tensor(x).to(torch.int64)
    for layer in net.layers:
        w = torch.as_tensor(np.asarray(layer.weight)).to(torch.int64)
        if layer.type == "conv2d":
            o, _, kh, kw = w.shape
            n, c, hh, ww = x.shape
            p, s = layer.padding, layer.stride
            xp = F.pad(x, (p, p, p, p)) if p else x
            ho, wo = (hh + 2 * p - kh) // s + 1, (ww + 2 * p - kw) // s + 1
            cols = xp.unfold(2, kh, s).unfold(3, kw, s).permute(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * ho * wo)
            acc = (w.reshape(o, -1) @ cols).reshape(o, n, ho, wo).permute(1, 0, 2, 3)
        else:
            acc = (w @ x.reshape(x.shape[0], -1).T).T
        x = acc if layer.bn is None else _torch_requantize(acc, layer.bn)
    return x


def _odd_net(seed: int) -> IntNet:
    """Random geometry the digits-shaped nets never have: 5x5 and 1x1 kernels, stride 3, padding
    2, signed activations (a BN without ReLU), 2..8-bit weights and activations."""
    rng = np.random.default_rng(seed)
    wb, ab = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    specs = [(5, 5, 1, 2, 6, False), (1, 1, 3, 0, 5, True), (3, 3, 2, 1, 4, True)]  # kh kw stride pad O relu
    shape, a_bits, a_exp, a_signed, layers = (3, 13, 11), ab, ab, False, []
    for i, (kh, kw, s, p, o, relu) in enumerate(specs):
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (o, shape[0], kh, kw))
        out = (o, (shape[1] + 2 * p - kh) // s + 1, (shape[2] + 2 * p - kw) // s + 1)
        lay = IntLayer(name=f"c{i}", type="conv2d", in_shape=shape, out_shape=out, weight=w, w_bits=wb, w_exp=wb,
                       a_bits=a_bits, a_exp=a_exp, a_signed=a_signed, stride=s, padding=p, bn=None, out_exp=ab)
        bn = fold_affine(rng.random(o) + 0.1, rng.standard_normal(o), acc_exp=wb + a_exp, out_exp=ab,
                         acc_bits=lay.acc_bits, out_bits=ab, relu=relu)
        layers.append(dataclasses.replace(lay, bn=bn))
        shape, a_bits, a_exp, a_signed = out, ab, ab, not relu
    k = int(np.prod(shape))
    layers.append(IntLayer(name="fc", type="linear", in_shape=shape, out_shape=(7,),
                           weight=rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (7, k)), w_bits=wb, w_exp=wb,
                           a_bits=a_bits, a_exp=a_exp, a_signed=a_signed, stride=1, padding=0, bn=None,
                           out_exp=wb + a_exp))
    return IntNet(in_shape=(3, 13, 11), in_bits=ab, in_exp=ab, in_signed=False, layers=tuple(layers))


@pytest.mark.parametrize("seed", range(6))
def test_numpy_executor_equals_the_torch_executor_it_replaced(seed):
    rng = np.random.default_rng(100 + seed)
    bits = (2, 3, 4, 5, 6, 8)[seed]
    nets = [random_int_net(seed, w_bits=bits, a_bits=bits, in_bits=bits, norm=("l1", "l2")[seed % 2],
                           channels=(int(rng.integers(1, 20)), int(rng.integers(1, 40)), int(rng.integers(1, 40)))),
            _odd_net(seed)]
    for net in nets:
        x = rng.integers(0, 1 << net.in_bits, (23, *net.in_shape))
        x[0] = 0
        x[1] = (1 << net.in_bits) - 1            # every pixel at full scale: the widest accumulators
        got, outs = run_net(net, x, trace=True)
        want = _torch_run_net(net, x)
        assert got.dtype == np.int64 and np.array_equal(got, want.numpy())
        assert all(o.dtype == np.int64 for o in outs)
        # a torch tensor in gives a torch tensor out, with the same integers
        t = run_net(net, torch.from_numpy(x))
        assert isinstance(t, torch.Tensor) and torch.equal(t, want)


def test_quantize_input_rounds_half_up_and_clamps():
    x = np.array([-0.1, 0.0, 0.03125, 0.5, 0.96875, 0.99, 2.0])  # * 16: -1.6, 0, .5, 8, 15.5, 15.84, 32
    assert quantize_input(x, bits=4, exp=4).tolist() == [0, 0, 1, 8, 15, 15, 15]
    t = quantize_input(torch.tensor(x, dtype=torch.float32), bits=4, exp=4)
    assert t.dtype == torch.int64 and t.tolist() == [0, 0, 1, 8, 15, 15, 15]


def test_errors():
    net = random_int_net(seed=1)
    with pytest.raises(ValueError, match=r"input shape \(1, 8, 9\)"):
        run_net(net, np.zeros((2, 1, 8, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="activations out of range 0..15"):
        run_net(net, np.full((2, 1, 8, 8), 16))
    with pytest.raises(ValueError, match="integer images"):
        run_net(net, np.zeros((2, 1, 8, 8)))
    bad = IntLayer(**{**net.layers[0].__dict__, "type": "pool"})
    with pytest.raises(ValueError, match="type='pool'"):
        run_layer(bad, np.zeros((1, 1, 8, 8), dtype=np.int64))


def test_spec_imports_without_torch():
    """l1bn.spec (the format, the codec and the executor included) loads, runs, writes and reads an
    export with torch and amaranth blocked."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['amaranth'] = None\n"
            "import l1bn.spec.export, l1bn.spec.words, l1bn.spec.outdir, l1bn.spec.reference.network as n\n"
            "import numpy as np\n"
            "net = n.random_int_net(0)\n"
            "print(n.run_net(net, np.zeros((2, 1, 8, 8), dtype=np.int64)).shape)\n"
            "import tempfile, pathlib\n"
            "with tempfile.TemporaryDirectory() as t:\n"
            "    d = l1bn.spec.export.write_export(net, pathlib.Path(t) / 'e')\n"
            "    assert np.array_equal(l1bn.spec.export.load_export(d).net.layers[1].weight, net.layers[1].weight)\n"
            "assert not any(m.split('.')[0] in ('torch', 'amaranth') for m in sys.modules if sys.modules[m])\n"
            "assert not any(m.startswith(('l1bn.hw', 'l1bn.sw', 'l1bn.sim', 'l1bn.cli')) for m in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 10)"


# ------------------------------------------------ the trained stand-in (tests/conftest.py)

def test_trained_standin_integer_reference_agrees_with_qat(trained_standin):
    from l1bn.sw.export import net_from_spec

    model, x, y = trained_standin
    with torch.no_grad():
        qat = model(x).numpy()
    net = net_from_spec(model.export_spec(), in_shape=(1, 8, 8), in_bits=4, in_exp=4)
    logits, outs = run_net(net, quantize_input(x.numpy(), bits=4, exp=4), trace=True)
    for name, a_f, a_i in zip(("conv1", "conv2", "conv3"), model.acts, outs, strict=False):
        a_f = a_f.numpy() * 4
        diff = a_f != a_i
        assert float(diff.mean()) < 1e-3
        print(f"\n{name}: {int(diff.sum())} of {diff.size} activations differ (max |diff| {int(np.abs(a_f - a_i).max())} LSB)", end="")
    y = y.numpy()
    agree = float((qat.argmax(1) == logits.argmax(1)).mean())
    acc_q = float((qat.argmax(1) == y).mean())
    acc_i = float((logits.argmax(1) == y).mean())
    print(f"\nstand-in QAT L1BN w4a4: {len(y)} test images, QAT accuracy {100 * acc_q:.2f} %, "
          f"integer accuracy {100 * acc_i:.2f} %, agreement {100 * agree:.2f} %")
    assert acc_q > 0.85  # it did train
    assert agree >= 0.995 and abs(acc_q - acc_i) <= 0.005
