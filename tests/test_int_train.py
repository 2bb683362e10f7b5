"""Integer training reference (docs/arith/training.md): the LFSR against its spec, the quantizers,
the fixed-point softmax, bit-exact determinism of a step, width checks that catch an injected
overflow, and configs refused up front with the intermediate named."""

import json
import math

import numpy as np
import pytest
import torch
from l1bn.spec.reference import train as T
from l1bn.spec.reference.grad_quant import (
    forward_weight,
    quantize_error,
    quantize_update,
    stochastic_shift,
)
from l1bn.spec.reference.lfsr import MASK32, lfsr_draw, lfsr_seed, xorshift32, xorshift32_int
from l1bn.spec.reference.softmax_ce import exp2_lut, log2e_const, softmax_ce_grad
from l1bn.spec.reference.widths import WidthError
from l1bn.spec.training import DIGITS_CNN, IntTrainConfig, TrainLayer

SMALL = dict(in_shape=(2, 6, 6), batch=8,
             layers=(TrainLayer(kind="conv2d", out=4, stride=1), TrainLayer(kind="conv2d", out=6, stride=2),
                     TrainLayer(kind="linear", out=5, kernel=1, stride=1, padding=0)))


def small_batch(cfg, seed=0, n=None):
    rng = np.random.default_rng(seed)
    n = n or cfg.batch
    x = rng.integers(0, 1 << cfg.abits, (n, *cfg.in_shape))
    return x, rng.integers(0, cfg.classes, n)


# ------------------------------------------------------------------------------------- LFSR

def test_xorshift_matches_its_spec():
    assert xorshift32_int(1) == 270369                  # Marsaglia (2003): the first value from 1
    rng = np.random.default_rng(0)
    states = rng.integers(1, 1 << 32, 1000, dtype=np.uint64).astype(np.uint32)
    assert xorshift32(states).tolist() == [xorshift32_int(int(s)) for s in states]


def naive_seed(seed, lanes, salt):
    out = []
    for i in range(lanes):
        x = (seed + salt * 0x85EBCA6B + (i + 1) * 0x9E3779B9) & MASK32 or 1
        for _ in range(16):
            x = xorshift32_int(x)
        out.append(x)
    return out


def test_lfsr_bank_sequence_matches_its_spec():
    """Seeding, then element r*L + i gets lane i after its (r+1)-th step; the bank ends stepped
    ceil(E/L) times (a partial row steps every lane)."""
    lanes, count = 7, 23
    bank = lfsr_seed(12345, lanes, salt=3)
    lanes_now = naive_seed(12345, lanes, 3)
    assert bank.tolist() == lanes_now
    words, after = lfsr_draw(bank, count)
    expect = []
    for _row in range(math.ceil(count / lanes)):
        lanes_now = [xorshift32_int(v) for v in lanes_now]
        expect.extend(lanes_now)
    assert words.tolist() == expect[:count]
    assert after.tolist() == lanes_now
    assert bank.tolist() == naive_seed(12345, lanes, 3)        # the input bank is not modified
    assert lfsr_seed(12345, lanes, salt=4).tolist() != bank.tolist()


# ------------------------------------------------------------------------------- quantizers

def test_quantize_error_is_normalized_and_rounds_half_up():
    rng = np.random.default_rng(1)
    for bits in (2, 4, 8, 16):
        for scale in (3, 1000, 1 << 40):
            v = rng.integers(-scale, scale + 1, 500)
            q, s = quantize_error(v, bits)
            assert -(1 << (bits - 1)) <= int(q.min()) and int(q.max()) < 1 << (bits - 1)
            assert int(np.abs(q).max()) >= 1 << (bits - 2)                 # uses its top bit
            if s > 0:
                assert (q == np.clip((v + (1 << (s - 1))) >> s, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)).all()
            else:
                assert (q == v << -s).all()                                   # exact
    assert quantize_error(np.zeros(4, dtype=np.int64), 8)[1] == 0


def test_stochastic_rounding_is_unbiased_and_between_neighbours():
    v = np.full(20000, 1000 + 3, dtype=np.int64)        # 1003 / 16 = 62.6875
    words, _ = lfsr_draw(lfsr_seed(7, 1024), v.size)
    q = stochastic_shift(v, 4, words)
    assert set(np.unique(q).tolist()) == {62, 63}
    assert abs(q.mean() - 1003 / 16) < 0.01              # 20000 draws: std 0.0034
    assert (stochastic_shift(v, -2, words) == v << 2).all()


def test_quantize_update_consumes_the_bank_whatever_the_shift():
    bank = lfsr_seed(1, 16)
    g = np.arange(-20, 20, dtype=np.int64)
    _, _, b1 = quantize_update(g, 8, 3, "stochastic", bank)     # s <= 0: exact, words still drawn
    _, _, b2 = quantize_update(g << 20, 8, 3, "stochastic", bank)
    assert b1.tolist() == b2.tolist() != bank.tolist()
    d, s, b3 = quantize_update(g << 20, 8, 3, "nearest", bank)
    assert b3 is bank and s == (19 << 20).bit_length() - 7
    assert (d == np.clip(((g << 20) + (1 << (s - 1))) >> s, -128, 127) << 3).all()


def test_forward_weight_is_the_qat_rule():
    """w * 2**-(master_frac - s) equals sw.quant.fake_quant of the master value with weight_exp."""
    from l1bn.sw.quant import fake_quant, weight_exp

    rng = np.random.default_rng(2)
    for wbits in (2, 4, 8):
        for mag in (1, 7, 300, 32767):
            m = rng.integers(-mag, mag + 1, 200)
            m[0] = mag
            w, s = forward_weight(m, wbits)
            real = torch.tensor(m, dtype=torch.float64) * 2.0 ** -15
            q = fake_quant(real, weight_exp(real, wbits), wbits, signed=True)
            assert torch.equal(torch.tensor(w, dtype=torch.float64) * 2.0 ** -(15 - s), q)


# ---------------------------------------------------------------------------------- softmax

def test_exp2_table_and_log2e():
    lut = exp2_lut(6, 16)
    r = np.arange(64)
    assert (lut == np.floor(2.0 ** (16 - r / 64) + 0.5)).all() and lut[0] == 1 << 16
    assert log2e_const(16) == round(math.log2(math.e) * 65536)


def test_softmax_gradient_matches_float_within_bound():
    """|p_int - softmax| <= 2 p rho + (p_max + p p_max C + 1) 2**-(P+1), rho the relative error of
    one E_i (docs/arith/training.md, "Loss")."""
    rng = np.random.default_rng(3)
    z = rng.integers(-3000, 3000, (64, 10))
    labels = rng.integers(0, 10, 64)
    P, Tb, Lc, e = 16, 6, 16, 9
    g, p = softmax_ce_grad(z, labels, e, exp_frac=Tb, prob_bits=P, log2e_bits=Lc)
    zf = torch.tensor(z * 2.0 ** -e)
    pf = torch.softmax(zf, 1).numpy()
    # relative error of each E_i: t rounding (half an LSB of 2**-T) and the constant's
    # (delta * 2**-(Lc+1) in units of the exponent), times ln 2; the table's rounding 2**-(P+1)
    # relative to the smallest used entry 2**(P-1); the shift's rounding 2**-(P+1) absolute.
    delta = (z.max(1, keepdims=True) - z) * 2.0 ** -e
    rho = np.log(2) * (2.0 ** -(Tb + 1) + delta.max() * math.log2(math.e) * 2.0 ** -(Lc + 1)) * 1.01 + 2.0 ** -P
    pmax = pf.max(1, keepdims=True)
    # E_i = 2**P p_i / p_max (1 + rho) + 2**-(P+1) LSB; S = 2**P / p_max (1 + rho) + 10 * half LSB
    bound = 2 * pf * rho + (pmax + pf * pmax * 10 + 1) * 2.0 ** -(P + 1)
    err = np.abs(p * 2.0 ** -P - pf)
    assert (err <= bound).all()
    assert bound.max() < 0.012          # 64-entry table: rho ~ ln2 * 2**-7 = 0.54 %
    onehot = np.eye(10)[labels]
    assert np.abs(g * 2.0 ** -P - (pf - onehot)).max() <= bound.max()


# ------------------------------------------------------------------------------ config errors

def test_config_round_trips_and_validates():
    cfg = IntTrainConfig(norm="range", gbits=6, lr_decay=(3, 5))
    assert IntTrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.names == ("conv1", "conv2", "conv3", "fc") and cfg.layers == DIGITS_CNN
    with pytest.raises(ValueError, match="the last layer must be linear"):
        IntTrainConfig(layers=DIGITS_CNN[:3])
    with pytest.raises(ValueError, match="gbits=1 is out of range"):
        IntTrainConfig(gbits=1)
    with pytest.raises(ValueError, match="norm='l3' is not allowed"):
        IntTrainConfig(norm="l3")
    with pytest.raises(ValueError, match="lr_decay"):
        IntTrainConfig(lr_decay=(5, 3))


@pytest.mark.parametrize("kw,named", [
    (dict(norm="l2", gbits=16), "conv1 BN: .* 64-bit dx_product"),   # u * gamma * inv > 62 bits
    (dict(norm="range", gbits=12, batch=256), "conv1 BN: .* dx_product"),
    (dict(gbits=16, master_bits=12), "conv1 weights update: a 16-bit gradient .* 12-bit master"),
    (dict(prob_bits=30), "loss.div_numerator needs 64"),
    (dict(bn_lr_shift=0, beta_width=8, bn_extra_frac=8, master_bits=12), "conv1 beta update"),
])
def test_configs_too_wide_are_refused_naming_the_intermediate(kw, named):
    with pytest.raises(ValueError, match=named):
        IntTrainConfig(**kw)


def test_every_declared_width_fits_int64():
    cfg = IntTrainConfig()
    assert max(cfg.widths.values()) <= 62
    assert all(v <= 54 for v in cfg.matmul_bits().values())        # the float64 path is exact


# --------------------------------------------------------------------------------- the step

@pytest.mark.parametrize("norm", ["l1", "l2", "range"])
def test_step_is_deterministic_and_pure(norm):
    cfg = IntTrainConfig(norm=norm, **SMALL)
    x, y = small_batch(cfg)
    s0 = T.init_state(cfg, seed=5)
    assert s0.equal(T.init_state(cfg, seed=5)) and not s0.equal(T.init_state(cfg, seed=6))
    keep = [m.copy() for m in s0.master]
    s1, r1 = T.train_step(s0, x, y, cfg)
    s1b, r1b = T.train_step(s0, x, y, cfg)
    assert s1.equal(s1b) and np.array_equal(r1.logits, r1b.logits)
    assert all(np.array_equal(a, b) for a, b in zip(keep, s0.master, strict=True))   # not mutated
    assert not s1.equal(s0) and s1.step == 1
    s2, _ = T.train_step(s1, x, y, cfg)
    assert not np.array_equal(s2.lfsr, s1.lfsr)        # stochastic rounding consumed the bank


def test_training_learns_a_small_problem():
    """A separable toy problem: the class sets one input channel's mean; 8 epochs fit it."""
    cfg = IntTrainConfig(norm="l1", lr_decay=(), **SMALL)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    x = rng.integers(0, 4, (200, 2, 6, 6))
    x[:, 0] += (y * 3)[:, None, None]
    st = T.init_state(cfg, 0)
    st, first = T.train_epoch(st, x, y, cfg, epoch=0)
    for e in range(1, 8):
        st, r = T.train_epoch(st, x, y, cfg, epoch=e)
    z, _ = T.evaluate(st, x, cfg)     # batch-statistics accuracy at batch 8 is noisy; eval is not
    assert (z.argmax(1) == y).mean() > 0.9 and first.train_accuracy < 0.6 < r.train_accuracy


def test_epoch_order_is_a_seeded_permutation():
    o = T.epoch_order(3, 0, 1437)
    assert sorted(o.tolist()) == list(range(1437))
    assert not np.array_equal(o, T.epoch_order(3, 1, 1437))
    assert np.array_equal(o, T.epoch_order(3, 0, 1437))


def test_injected_overflow_is_caught_and_named(monkeypatch):
    cfg = IntTrainConfig(**SMALL)
    x, y = small_batch(cfg)
    st = T.init_state(cfg, 0)
    real = T.exact_matmul

    def faulty(a, b, bits):
        out = real(a, b, bits)
        if a.shape == (6, 36):          # conv2's forward product: wrap one accumulator
            out = out.copy()
            out[0, 0] += 1 << 40
        return out

    monkeypatch.setattr(T, "exact_matmul", faulty)
    with pytest.raises(WidthError, match=r"conv2\.acc: value \d+ does not fit its declared 14-bit"):
        T.train_step(st, x, y, cfg)
    monkeypatch.setattr(T, "exact_matmul", real)
    bad = T.replace_state(st, master=(st.master[0] + (1 << 20),) + st.master[1:])
    with pytest.raises(WidthError, match=r"conv1\.master"):
        T.train_step(bad, x, y, cfg)


def test_bad_batches_are_refused():
    cfg = IntTrainConfig(**SMALL)
    x, y = small_batch(cfg)
    st = T.init_state(cfg, 0)
    with pytest.raises(ValueError, match="unsigned 4-bit integers"):
        T.train_step(st, x + 16, y, cfg)
    with pytest.raises(ValueError, match="labels must be"):
        T.train_step(st, x, y + 5, cfg)
    with pytest.raises(ValueError, match="exceeds the config's batch"):
        T.train_step(st, np.concatenate([x, x]), np.concatenate([y, y]), cfg)
    with pytest.raises(ValueError, match="at least 2 images"):
        T.train_step(st, x[:1], y[:1], cfg)
    with pytest.raises(ValueError, match="lr_shift=3 must be"):
        T.train_step(st, x, y, cfg, lr_shift=3)
    with pytest.raises(ValueError, match="no running statistics"):
        T.evaluate(st, x, cfg)
