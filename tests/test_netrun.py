"""The integer network runner: im2col convolution and layer chaining, exact against naive models."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.spec.reference.infer_bn import apply_folded
from l1bn.sw.netrun import (
    IntLayer,
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
    got = conv2d_int(torch.tensor(x), torch.tensor(wt), stride, padding)
    assert got.dtype == torch.int64
    assert got.tolist() == naive_conv(x, wt, stride, padding)


def test_conv_and_linear_match_float64_torch_on_large_values():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-(1 << 20), 1 << 20, (7, 5, 9, 8), generator=g)
    w = torch.randint(-(1 << 20), 1 << 20, (6, 5, 3, 3), generator=g)
    got = conv2d_int(x, w, stride=2, padding=1)
    # |products| < 2**40 and 45 terms: exact in float64
    assert torch.equal(got, F.conv2d(x.double(), w.double(), stride=2, padding=1).to(torch.int64))
    wl = torch.randint(-100, 100, (4, 5 * 9 * 8), generator=g)
    assert torch.equal(linear_int(x, wl), (x.reshape(7, -1).double() @ wl.double().T).to(torch.int64))


def test_im2col_row_order_matches_weight_reshape():
    x = torch.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    cols, ho, wo = im2col(x, 3, 3, 1, 0)
    assert (ho, wo) == (2, 2) and cols.shape == (27, 8)
    # column 0 = image 0, output (0, 0): the 3x3 patches of every channel in (c, ky, kx) order
    assert torch.equal(cols[:, 0], x[0, :, :3, :3].reshape(-1))


def test_run_net_equals_layer_by_layer_float_model():
    net = random_int_net(seed=5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16, (50, 1, 8, 8), generator=g)
    logits, outs = run_net(net, x, trace=True)
    assert logits.shape == (50, 10) and len(outs) == 4
    h = x
    for layer, out in zip(net.layers, outs, strict=False):
        if layer.type == "conv2d":
            acc = F.conv2d(h.double(), layer.weight.double(), stride=layer.stride, padding=layer.padding)
        else:
            acc = h.reshape(h.shape[0], -1).double() @ layer.weight.double().T
        acc = acc.to(torch.int64)
        h = acc if layer.bn is None else apply_folded(acc, layer.bn)
        assert torch.equal(out, h), layer.name
    # activations use their range (not all zero, not all saturated)
    for out in outs[:-1]:
        assert 0 < float(out.double().mean()) < 15


def test_quantize_input_rounds_half_up_and_clamps():
    x = torch.tensor([-0.1, 0.0, 0.03125, 0.5, 0.96875, 0.99, 2.0])  # * 16: -1.6, 0, .5, 8, 15.5, 15.84, 32
    assert quantize_input(x, bits=4, exp=4).tolist() == [0, 0, 1, 8, 15, 15, 15]


def test_errors():
    net = random_int_net(seed=1)
    with pytest.raises(ValueError, match=r"input shape \(1, 8, 9\)"):
        run_net(net, torch.zeros(2, 1, 8, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match="activations out of range 0..15"):
        run_net(net, torch.full((2, 1, 8, 8), 16))
    bad = IntLayer(**{**net.layers[0].__dict__, "type": "pool"})
    with pytest.raises(ValueError, match="type='pool'"):
        run_layer(bad, torch.zeros(1, 1, 8, 8, dtype=torch.int64))


# ------------------------------------------------ the trained stand-in (tests/conftest.py)

def test_trained_standin_integer_reference_agrees_with_qat(trained_standin):
    from l1bn.sw.export import net_from_spec

    model, x, y = trained_standin
    with torch.no_grad():
        qat = model(x)
    net = net_from_spec(model.export_spec(), in_shape=(1, 8, 8), in_bits=4, in_exp=4)
    logits, outs = run_net(net, quantize_input(x, bits=4, exp=4), trace=True)
    for name, a_f, a_i in zip(("conv1", "conv2", "conv3"), model.acts, outs, strict=False):
        diff = (a_f * 4 != a_i.float())
        assert float(diff.double().mean()) < 1e-3
        print(f"\n{name}: {int(diff.sum())} of {diff.numel()} activations differ (max |diff| {int((a_f * 4 - a_i.float()).abs().max())} LSB)", end="")
    agree = float((qat.argmax(1) == logits.argmax(1)).double().mean())
    acc_q = float((qat.argmax(1) == y).double().mean())
    acc_i = float((logits.argmax(1) == y).double().mean())
    print(f"\nstand-in QAT L1BN w4a4: {len(y)} test images, QAT accuracy {100 * acc_q:.2f} %, "
          f"integer accuracy {100 * acc_i:.2f} %, agreement {100 * agree:.2f} %")
    assert acc_q > 0.85  # it did train
    assert agree >= 0.995 and abs(acc_q - acc_i) <= 0.005
