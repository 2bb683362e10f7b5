"""The MAC reference (matmul + requantize) against a naive pure-Python-int reading of docs/arith/mac.md."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.spec.config import MACConfig
from l1bn.spec.reference.mac import (
    acc_bits,
    act_range,
    check_operands,
    decode_weights,
    encode_weights,
    mac_tile,
    matmul,
    product_bits,
    requantize,
    weight_range,
)

SETTINGS = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------- naive model of the documented formulas

def naive_matmul(w, a):
    return [[sum(w[i][k] * a[k][j] for k in range(len(a))) for j in range(len(a[0]))] for i in range(len(w))]


def naive_requant(v, shift, out_bits, relu):
    y = (v + (1 << (shift - 1))) // (1 << shift) if shift > 0 else v  # floor((v + 2^(s-1)) / 2^s)
    if relu:
        return min(max(y, 0), (1 << out_bits) - 1)
    return min(max(y, -(1 << (out_bits - 1))), (1 << (out_bits - 1)) - 1)


def naive_weight_values(wbits, signed):
    if wbits == 1 and signed:
        return [-1, 1]
    if signed:
        return list(range(-(1 << (wbits - 1)), 1 << (wbits - 1)))
    return list(range(0, 1 << wbits))


def naive_act_values(abits, signed):
    if signed:
        return list(range(-(1 << (abits - 1)), 1 << (abits - 1)))
    return list(range(0, 1 << abits))


@st.composite
def mac_case(draw):
    wbits, abits = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    sw, sa = draw(st.booleans()), draw(st.booleans())
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 4))
    wv, av = naive_weight_values(wbits, sw), naive_act_values(abits, sa)
    # mix extremes (min/max ints) with arbitrary values
    wel = st.one_of(st.sampled_from([wv[0], wv[-1]]), st.sampled_from(wv))
    ael = st.one_of(st.sampled_from([av[0], av[-1]]), st.sampled_from(av))
    w = draw(st.lists(st.lists(wel, min_size=k, max_size=k), min_size=m, max_size=m))
    a = draw(st.lists(st.lists(ael, min_size=n, max_size=n), min_size=k, max_size=k))
    cfg = MACConfig(wbits=wbits, abits=abits, signed_w=sw, signed_a=sa, k=k, rows=m, cols=n)
    return cfg, w, a


@SETTINGS
@given(mac_case())
def test_matmul_equals_naive(case):
    cfg, w, a = case
    got = mac_tile(torch.tensor(w), torch.tensor(a), cfg)
    assert got.dtype == torch.int64
    assert got.tolist() == naive_matmul(w, a)
    lo, hi = -(1 << (acc_bits(cfg) - 1)), (1 << (acc_bits(cfg) - 1)) - 1
    assert all(lo <= v <= hi for row in got.tolist() for v in row)


@SETTINGS
@given(mac_case(), st.integers(0, 31), st.integers(2, 16), st.booleans())
def test_mac_tile_requant_equals_naive(case, shift, out_bits, relu):
    cfg, w, a = case
    cfg = MACConfig(wbits=cfg.wbits, abits=cfg.abits, signed_w=cfg.signed_w, signed_a=cfg.signed_a,
                    k=cfg.k, rows=cfg.rows, cols=cfg.cols, requant=True, shift=shift,
                    out_bits=out_bits, relu=relu)
    got = mac_tile(torch.tensor(w), torch.tensor(a), cfg).tolist()
    want = [[naive_requant(v, shift, out_bits, relu) for v in row] for row in naive_matmul(w, a)]
    assert got == want


@SETTINGS
@given(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=32), st.integers(0, 40),
       st.integers(2, 16), st.booleans())
def test_requantize_equals_naive(vals, shift, out_bits, relu):
    got = requantize(torch.tensor(vals, dtype=torch.int64), shift=shift, out_bits=out_bits, relu=relu)
    assert got.tolist() == [naive_requant(v, shift, out_bits, relu) for v in vals]


def test_requantize_rounds_half_up_and_saturates():
    acc = torch.tensor([-3, -2, -1, 1, 2, 3, 5, 6, 10**9, -10**9])
    # shift 2: -0.75 -> -1, -0.5 -> 0 (half up), -0.25 -> 0, 0.25 -> 0, 0.5 -> 1, 0.75 -> 1, 1.25 -> 1, 1.5 -> 2
    assert requantize(acc, shift=2, out_bits=8, relu=False).tolist() == [-1, 0, 0, 0, 1, 1, 1, 2, 127, -128]
    assert requantize(acc, shift=2, out_bits=4, relu=True).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 15, 0]


@pytest.mark.parametrize("wbits,abits,sw,sa", [(1, 1, True, True), (1, 8, True, False), (8, 8, True, True),
                                               (4, 4, True, False), (3, 5, False, False), (8, 1, False, True)])
@pytest.mark.parametrize("k", [1, 2, 3, 64, 4096])
def test_acc_bits_is_tight(wbits, abits, sw, sa, k):
    cfg = MACConfig(wbits=wbits, abits=abits, signed_w=sw, signed_a=sa, k=k)
    prods = [x * y for x in naive_weight_values(wbits, sw) for y in naive_act_values(abits, sa)]
    lo, hi = k * min(prods), k * max(prods)
    b = acc_bits(cfg)
    assert -(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1
    assert not (-(1 << (b - 2)) <= lo and hi <= (1 << (b - 2)) - 1)  # one bit fewer would overflow
    # the extreme accumulations actually reach lo / hi through matmul
    wv, av = naive_weight_values(wbits, sw), naive_act_values(abits, sa)
    best = max(((x, y) for x in wv for y in av), key=lambda p: p[0] * p[1])
    got = matmul(torch.full((1, k), best[0]), torch.full((k, 1), best[1]))
    assert int(got) == hi
    pb = product_bits(cfg)
    assert -(1 << (pb - 1)) <= min(prods) and max(prods) <= (1 << (pb - 1)) - 1


def test_ranges_and_operand_errors():
    cfg = MACConfig(wbits=4, abits=4, signed_w=True, signed_a=False, k=8)
    assert weight_range(cfg) == (-8, 7) and act_range(cfg) == (0, 15)
    with pytest.raises(ValueError, match="weights out of range -8..7"):
        check_operands(torch.tensor([[8]]), torch.tensor([[0]]), cfg)
    with pytest.raises(ValueError, match="activations out of range 0..15"):
        check_operands(torch.tensor([[0]]), torch.tensor([[-1]]), cfg)
    with pytest.raises(ValueError, match="exceeds k=8"):
        check_operands(torch.zeros(1, 9, dtype=torch.int64), torch.zeros(9, 1, dtype=torch.int64), cfg)
    binary = MACConfig(wbits=1, abits=2, k=4)
    with pytest.raises(ValueError, match="binary"):
        check_operands(torch.tensor([[0, 1]]), torch.tensor([[0], [0]]), binary)
    with pytest.raises(ValueError, match="wbits=9"):
        MACConfig(wbits=9)


@pytest.mark.parametrize("wbits,signed", [(1, True), (1, False), (4, True), (4, False), (8, True)])
def test_weight_encoding_round_trip(wbits, signed):
    cfg = MACConfig(wbits=wbits, signed_w=signed)
    w = torch.tensor(naive_weight_values(wbits, signed))
    bits = encode_weights(w, cfg)
    assert int(bits.min()) >= 0 and int(bits.max()) < (1 << wbits)
    assert torch.equal(decode_weights(bits, cfg), w)
