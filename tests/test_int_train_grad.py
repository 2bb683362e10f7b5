"""Gradients of the integer training step against float64 autograd of the same quantized forward
(docs/arith/training.md, "Agreement with float").

The float model takes the integer forward's values (weights, activations, BN gamma/beta, the ReLU
and quantizer masks, L1's signs of d) and differentiates the float formulas through them: conv2d
and linear exactly, BN with float batch statistics, softmax cross-entropy summed over the batch.

* Per layer, given the same upstream gradient, the MAC gradients are equal bit for bit and the
  activation mask is the quantizer's straight-through mask.
* End to end, the stated error: with 16-bit gradients every parameter gradient is within 3 % of its
  tensor's largest float value (the 64-entry exp2 table of the softmax alone is ~0.5 % of p), with
  the float sign wherever the float value exceeds those 3 % and a cosine similarity >= 0.999; with 8-bit gradients within 30 % and a
  cosine similarity >= 0.9 (each 8-bit rounding is 2**-8 of the tensor's max, and a weight gradient
  sums N*H*W >= 72 of them).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from l1bn.spec.intmath import C_SQRT_PI_2, range_scale
from l1bn.spec.reference import train as T
from l1bn.spec.training import IntTrainConfig, TrainLayer
from l1bn.sw.quant import fake_quant

SMALL = dict(in_shape=(2, 6, 6), batch=8,
             layers=(TrainLayer(kind="conv2d", out=4, stride=1), TrainLayer(kind="conv2d", out=6, stride=2),
                     TrainLayer(kind="linear", out=5, kernel=1, stride=1, padding=0)))
F64 = torch.float64


def step_trace(norm, gbits, seed, **kw):
    extra = dict(recip_bits=18, master_bits=24) if gbits > 8 else {}
    cfg = IntTrainConfig(norm=norm, gbits=gbits, **extra, **{**SMALL, **kw})
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << cfg.abits, (cfg.batch, *cfg.in_shape))
    y = rng.integers(0, cfg.classes, cfg.batch)
    _, r = T.train_step(T.init_state(cfg, seed), x, y, cfg, trace=True)
    return cfg, x, y, r.trace


def float_bn(x, gamma, beta, norm, eps, neg):
    """The float BN of each norm on x (C, n) (eps after the dispersion, as the integer rule); L1
    takes the sign of d from the integer forward (``neg``)."""
    mu = x.mean(1, keepdim=True)
    d = x - mu
    if norm == "l1":
        sigma = C_SQRT_PI_2 * (d * torch.tensor(np.where(neg, -1.0, 1.0))).mean(1, keepdim=True) + eps
    elif norm == "l2":
        sigma = torch.sqrt((d * d).mean(1, keepdim=True)) + eps
    else:
        sigma = range_scale(x.shape[1]) * (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) + eps
    return gamma[:, None] * d / sigma + beta[:, None]


def float_grads(cfg, x, labels, tr):
    """float64 autograd of the same quantized forward: {layer: {"W", "gamma", "beta": grad}}."""
    a = torch.tensor(x * 2.0 ** -cfg.in_exp, dtype=F64)
    leaves = {}
    for i, ge in enumerate(cfg.geometry):
        t, la = tr[ge.name], ge.layer
        w = torch.tensor(t["w"] * 2.0 ** -t["w_exp"], dtype=F64, requires_grad=True)
        acc = (F.conv2d(a, w, stride=la.stride, padding=la.padding) if la.kind == "conv2d"
               else (a.flatten(1) @ w.T)[:, :, None, None])
        leaves[ge.name] = {"W": w}
        if i == len(cfg.geometry) - 1:
            z = acc[:, :, 0, 0]
            break
        c, n_img, ho, wo = acc.shape[1], acc.shape[0], acc.shape[2], acc.shape[3]
        xs = (acc * 2.0 ** (t["w_exp"] + t["a_exp"])).transpose(0, 1).reshape(c, -1)   # integer units
        g = torch.tensor(t["gamma"] * 2.0 ** -cfg.gamma_frac, dtype=F64, requires_grad=True)
        b = torch.tensor(t["beta"] * 2.0 ** -cfg.out_frac, dtype=F64, requires_grad=True)
        neg = (t["acc"] << cfg.frac) < t["bn"].mu[:, None]
        yf = float_bn(xs, g, b, cfg.norm, cfg.eps * 2.0 ** -cfg.frac, neg)
        act = torch.tensor(t["act"] * 2.0 ** -cfg.a_exp, dtype=F64)
        # the integer activation's value, the float BN's gradient through the quantizer's mask
        a = (act + (yf - yf.detach()) * torch.tensor(t["mask"], dtype=F64)).reshape(c, n_img, ho, wo).transpose(0, 1)
        leaves[ge.name].update(gamma=g, beta=b)
    assert np.array_equal(z.detach().numpy(), tr["logits"] * 2.0 ** -tr["logit_exp"])   # same forward
    F.cross_entropy(z, torch.tensor(labels), reduction="sum").backward()
    return {k: {kk: vv.grad.numpy() for kk, vv in v.items()} for k, v in leaves.items()}


def int_grads(cfg, tr):
    out = {}
    for p in cfg.names:
        t = tr[p]
        out[p] = {"W": t["dW"] * 2.0 ** -t["e_dW"]}
        if "dgamma" in t:
            out[p]["gamma"] = t["dgamma"] * 2.0 ** -t["e_dgamma"]
            out[p]["beta"] = t["dbeta"] * 2.0 ** -t["e_dbeta"]
    return out


@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
def test_mac_gradients_equal_autograd_bit_for_bit(norm):
    """Given the step's quantized upstream gradient ``dacc``, autograd of conv2d/linear on the same
    integers gives exactly the step's weight gradient and input gradient."""
    cfg, x, _, tr = step_trace(norm, 8, 1)
    a = x.astype(np.float64)
    for i, ge in enumerate(cfg.geometry):
        t, la = tr[ge.name], ge.layer
        at = torch.tensor(a, dtype=F64, requires_grad=True)
        w = torch.tensor(t["w"], dtype=F64, requires_grad=True)
        if la.kind == "conv2d":
            out = F.conv2d(at, w, stride=la.stride, padding=la.padding)
            gout = torch.tensor(t["dacc"].reshape(out.shape[1], out.shape[0], *out.shape[2:]),
                                dtype=F64).transpose(0, 1)
        else:
            out = at.flatten(1) @ w.T
            gout = torch.tensor(t["dacc"].T, dtype=F64)
        out.backward(gout)
        assert np.array_equal(w.grad.numpy().astype(np.int64), t["dW"]), ge.name
        if i > 0:
            got = t["input_grad"].transpose(1, 0, 2, 3)            # (C, N, H, W) -> (N, C, H, W)
            assert np.array_equal(at.grad.numpy().astype(np.int64), got), ge.name
        if i < len(cfg.geometry) - 1:
            a = t["act"].reshape(ge.out_shape[0], cfg.batch, *ge.out_shape[1:]).transpose(1, 0, 2, 3).astype(np.float64)


@pytest.mark.parametrize("norm", ["l1", "range"])
def test_activation_mask_is_the_quantizers_straight_through_gradient(norm):
    """relu then sw.quant.fake_quant (unsigned abits on 2**-a_exp) of the BN output's real value:
    autograd's gradient is 1 exactly where the step's mask is set."""
    cfg, _, _, tr = step_trace(norm, 8, 2)
    for p in cfg.names[:-1]:
        y = torch.tensor(tr[p]["y"] * 2.0 ** -cfg.out_frac, dtype=F64, requires_grad=True)
        fake_quant(torch.relu(y), cfg.a_exp, cfg.abits, signed=False).sum().backward()
        assert np.array_equal(y.grad.numpy() == 1, tr[p]["mask"])
        assert np.array_equal(fake_quant(torch.relu(y), cfg.a_exp, cfg.abits, signed=False).detach().numpy(),
                              tr[p]["act"] * 2.0 ** -cfg.a_exp)


@pytest.mark.parametrize("gbits", [16, 8])
@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
def test_parameter_gradients_agree_with_float_autograd(norm, gbits):
    tol, min_cos = (0.03, 0.999) if gbits == 16 else (0.30, 0.9)
    for seed in range(3):
        cfg, x, y, tr = step_trace(norm, gbits, seed)
        fg, ig = float_grads(cfg, x, y, tr), int_grads(cfg, tr)
        for p in cfg.names:
            for k, gf in fg[p].items():
                gi = ig[p][k].reshape(gf.shape)
                top = np.abs(gf).max()
                assert np.abs(gi - gf).max() <= tol * top, (p, k, seed)
                big = np.abs(gf) > tol * top
                assert (np.sign(gi[big]) == np.sign(gf[big])).all(), (p, k, seed)
                cos = (gi * gf).sum() / np.sqrt((gi * gi).sum() * (gf * gf).sum())
                assert cos >= min_cos, (p, k, seed, cos)
