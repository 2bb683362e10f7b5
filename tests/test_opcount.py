"""Operation counts of one training step (l1bn.spec.opcount): a hand count on a tiny network, the
digits CNN against the shapes of the integer training reference's own arrays, the standard shapes
against their published sizes, scaling with the batch, and bad shapes refused."""

import numpy as np
import pytest
from l1bn.spec.netshape import (
    Conv,
    GlobalAvgPool,
    Linear,
    MaxPool,
    NetShape,
    Residual,
    from_train_config,
    network_names,
    network_shape,
)
from l1bn.spec.opcount import COUNT_FIELDS, step_counts
from l1bn.spec.reference import train as T
from l1bn.spec.training import IntTrainConfig, TrainLayer

TINY = NetShape(name="tiny", in_shape=(2, 5, 5), layers=(
    Conv(out=3, kernel=3, stride=2, padding=1),          # (2,5,5) -> (3,3,3)
    MaxPool(kernel=2, stride=1),                         # -> (3,2,2)
    Residual(body=(Conv(out=3, kernel=1),)),             # identity shortcut, -> (3,2,2)
    GlobalAvgPool(),                                     # -> (3,1,1)
    Linear(out=4, bn=False, act=False)))                 # logits


def test_tiny_network_hand_count():
    c = step_counts(TINY, batch=2)
    assert [la.name for la in c.layers] == ["conv1", "block1.conv1", "fc"]
    conv, blk, fc = c.layers
    # conv1: K = 2*3*3 = 18, 3x3 positions, 3 channels, batch 2; the first layer has no input gradient
    assert (conv.k, conv.positions, conv.out_shape) == (18, 9, (3, 3, 3))
    assert (conv.fwd_macs, conv.igrad_macs, conv.wgrad_macs) == (2 * 9 * 3 * 18, 0, 2 * 9 * 3 * 18)
    assert (conv.bn_elements, conv.bn_channels, conv.weights, conv.bn_params, conv.act_elements) == \
        (2 * 9 * 3, 3, 3 * 18, 2 * 3, 2 * 9 * 3)
    # block conv: 1x1 on (3,2,2): K = 3, 4 positions
    assert (blk.k, blk.positions) == (3, 4)
    assert (blk.fwd_macs, blk.igrad_macs, blk.wgrad_macs) == (2 * 4 * 3 * 3,) * 3
    assert (blk.bn_elements, blk.bn_channels, blk.weights) == (2 * 4 * 3, 3, 3 * 3)
    # fc: K = 3, 4 outputs, no BN, no activation
    assert (fc.fwd_macs, fc.igrad_macs, fc.wgrad_macs) == (2 * 4 * 3,) * 3
    assert (fc.bn_elements, fc.bn_channels, fc.bn_params, fc.act_elements, fc.weights) == (0, 0, 0, 0, 12)
    assert c.other == {"maxpool_compares": 2 * 3 * 2 * 2 * 3,      # (k*k - 1) = 3 per output
                       "residual_adds": 2 * (2 * 3 * 2 * 2),      # forward add + backward sum
                       "residual_act_elements": 2 * 3 * 2 * 2,
                       "avgpool_adds": 2 * 3 * 2 * 2,
                       "loss_elements": 2 * 4}
    t = c.totals
    assert t["macs"] == 2 * (2 * 9 * 3 * 18) + 3 * (2 * 4 * 3 * 3) + 3 * (2 * 4 * 3)
    assert t["updates"] == (54 + 9 + 12) + (6 + 6)


def test_digits_cnn_counts_are_the_training_reference_shapes():
    """Every count of the digits CNN equals the size of the product the integer reference
    actually computes in one step (its cols, weights, accumulators, dacc and gradients)."""
    cfg = IntTrainConfig(batch=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1 << cfg.abits, (8, *cfg.in_shape))
    labels = rng.integers(0, cfg.classes, 8)
    state = T.init_state(cfg, 1)
    _, _, layers = T.forward_train(state, x, cfg)
    _, res = T.train_step(state, x, labels, cfg, trace=True)
    c = step_counts(from_train_config(cfg), batch=8)
    assert tuple(la.name for la in c.layers) == cfg.names
    for i, (la, rec) in enumerate(zip(c.layers, layers, strict=True)):
        tr = res.trace[la.name]
        w2 = rec["w"].reshape(rec["w"].shape[0], -1)            # (O, K)
        cols, dacc = rec["cols"], tr["dacc"]                   # (K, N*P), (O, N*P)
        assert la.fwd_macs == w2.shape[0] * w2.shape[1] * cols.shape[1]
        assert la.wgrad_macs == dacc.shape[0] * dacc.shape[1] * cols.shape[0]
        assert tr["dW"].shape == rec["w"].shape and la.weights == state.master[i].size
        if i > 0:   # w.T @ dacc, then col2im to the layer's input
            assert la.igrad_macs == w2.shape[1] * w2.shape[0] * dacc.shape[1]
            assert tr["input_grad"].shape[0] * np.prod(tr["input_grad"].shape[2:]) == np.prod(la.in_shape)
        else:
            assert la.igrad_macs == 0 and "input_grad" not in tr
        if i < len(layers) - 1:
            assert la.bn_elements == rec["acc"].size == rec["bn"].y.size == tr["dy"].size
            assert la.bn_channels == rec["acc"].shape[0] == state.gamma[i].size
            assert la.bn_params == state.gamma[i].size + state.beta[i].size
            assert la.act_elements == rec["act"].size
        else:
            assert (la.bn_elements, la.bn_channels, la.bn_params, la.act_elements) == (0, 0, 0, 0)
    assert c.other["loss_elements"] == res.logits.size


def test_digits_is_the_contract_default_and_counts_scale_with_the_batch():
    assert network_shape("digits") == from_train_config(IntTrainConfig())
    assert step_counts(network_shape("digits"), batch=1).total("fwd_macs") == 121088   # docs/accelerator.md
    for name in network_names():
        a, b = step_counts(network_shape(name), batch=3), step_counts(network_shape(name), batch=6)
        for k in COUNT_FIELDS:
            fixed = k in ("bn_channels", "weights", "bn_params")
            assert b.total(k) == (a.total(k) if fixed else 2 * a.total(k)), (name, k)


def test_standard_shapes_have_their_published_sizes():
    cnv = step_counts(network_shape("cnv"), batch=1)
    # FINN's CNV: about 59 M MACs and 1.54 M weights per image (3x3 convs without padding)
    hand = sum(ho * ho * co * ci * 9 for ci, co, ho in ((3, 64, 30), (64, 64, 28), (64, 128, 12),
                                                          (128, 128, 10), (128, 256, 3), (256, 256, 1)))
    hand += 256 * 512 + 512 * 512 + 512 * 10
    assert cnv.total("fwd_macs") == hand and round(hand / 1e6) == 59
    assert round(cnv.total("weights") / 1e4) == 154
    assert cnv.total("bn_channels") == 64 + 64 + 128 + 128 + 256 + 256 + 512 + 512
    r18 = step_counts(network_shape("resnet18"), batch=1)
    # torchvision-style CIFAR ResNet-18 has 11,173,962 parameters: weights + 9,600 BN + 10 bias
    assert r18.total("weights") + r18.total("bn_params") + 10 == 11173962
    assert round(r18.total("fwd_macs") / 1e6) == 555
    assert len(r18.layers) == 1 + 16 + 3 + 1            # stem, 8 blocks x 2, 3 shortcuts, fc
    assert [la.name for la in r18.layers if "short" in la.name] == \
        ["block3.short.conv1", "block5.short.conv1", "block7.short.conv1"]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="network='vgg' is unknown; allowed digits, cnv, resnet18"):
        network_shape("vgg")
    with pytest.raises(ValueError, match="last layer must be Linear"):
        NetShape(name="x", in_shape=(1, 4, 4), layers=(Conv(out=2),))
    with pytest.raises(ValueError, match="a residual add needs equal shapes"):
        step_counts(NetShape(name="x", in_shape=(2, 4, 4), layers=(
            Residual(body=(Conv(out=3, kernel=1),)), Linear(out=2, bn=False, act=False))))
    with pytest.raises(ValueError, match="leaves no output"):
        step_counts(NetShape(name="x", in_shape=(1, 2, 2), layers=(
            Conv(out=2, kernel=3), Linear(out=2, bn=False, act=False))))
    with pytest.raises(ValueError, match="batch=0 is out of range"):
        step_counts(TINY, batch=0)
    with pytest.raises(ValueError, match="padding=3 is out of range"):
        Conv(out=2, kernel=3, padding=3)
    with pytest.raises(ValueError, match="must be a tuple of layers"):
        Residual(body=(TrainLayer(),))
