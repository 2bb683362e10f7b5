"""The word codec (l1bn.spec.words): fields <-> words <-> .hex text, exact at corner widths, and the
same bits as the hardware's data layouts (l1bn.hw.accel_plan) for the words they share."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from l1bn.spec.words import field_offsets, hex_digits, hex_lines, hex_text, pack, parse_hex, unpack


@pytest.mark.parametrize("bits", [1, 2, 7, 8, 32, 63, 64])
@pytest.mark.parametrize("fields", [1, 3, 8])
def test_round_trip_at_corner_widths(bits, fields):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    corners = [lo, hi, 0, -1, lo + 1, hi - 1 if hi > 0 else 0]
    rng = np.random.default_rng(bits * 10 + fields)
    rand = [int(v) for v in rng.integers(lo, hi, 40, endpoint=True, dtype=np.int64)]
    vals = (corners + rand)[: (len(corners + rand) // fields) * fields]
    f = np.array(vals, dtype=np.int64).reshape(-1, fields)
    words = pack(f, bits)
    assert all(0 <= w < 1 << (bits * fields) for w in words)
    assert np.array_equal(unpack(words, bits, fields), f)
    # a word's fields, LSB first, two's complement: what a Python bit loop gives
    for row, w in zip(f.tolist(), words, strict=True):
        assert w == sum((v % (1 << bits)) << (j * bits) for j, v in enumerate(row))
    # the .hex text round trip, zero-padded to the word width
    text = hex_text(words, bits * fields)
    assert all(len(s) == hex_digits(bits * fields) for s in text.splitlines())
    assert parse_hex(text) == words


@pytest.mark.parametrize("bits", [1, 2, 7, 8, 32])
def test_unsigned_fields_and_signed_min_max(bits):
    top = (1 << bits) - 1
    w = pack([[top, 0], [0, top]], bits)
    assert w == [top, top << bits]
    if bits < 64:
        assert unpack(w, bits, 2, signed=False).tolist() == [[top, 0], [0, top]]
    assert unpack(w, bits, 2).tolist() == [[-1, 0], [0, -1]]       # all ones is -1 in two's complement
    smin = pack([[-(1 << (bits - 1))]], bits)
    assert smin == [1 << (bits - 1)]                               # only the sign bit


def test_mixed_widths_and_wide_fields():
    """Fields of different widths (a bench's ports), one of them wider than int64."""
    widths = [3, 72, 1, 5]
    assert field_offsets(widths) == (0, 3, 75, 76)
    big = (1 << 71) + 12345
    w = pack([[-4, big, 1, 31]], widths)
    assert w == [4 | (big << 3) | (1 << 75) | (31 << 76)]
    assert w[0].bit_length() == 81


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda b: st.tuples(
    st.just(b), st.lists(st.integers(-(1 << (b - 1)), (1 << (b - 1)) - 1), min_size=1, max_size=9))))
def test_round_trip_any_width(case):
    bits, vals = case
    assert unpack(pack([vals], bits), bits, len(vals)).tolist() == [vals]


def test_refusals():
    with pytest.raises(ValueError, match="field 0: values 8..8 do not fit 3 bits"):
        pack([[8]], 3)
    with pytest.raises(ValueError, match="field 1: values -5..-5 do not fit 3 bits"):
        pack([[0, -5]], 3)
    with pytest.raises(ValueError, match="2 fields per word but 3 widths"):
        pack([[0, 1]], [1, 2, 3])
    with pytest.raises(ValueError, match="field width 0"):
        pack([[0]], 0)
    with pytest.raises(ValueError, match="integers"):
        pack([[0.5]], 4)
    with pytest.raises(ValueError, match="wider than the 8 bits"):
        unpack([0x100], 4, 2)
    with pytest.raises(ValueError, match="field width 65"):
        unpack([0], 65, 1)
    with pytest.raises(ValueError, match="field width 64"):
        unpack([0], 64, 1, signed=False)
    with pytest.raises(ValueError, match=r"line 2 \('xyz'\)"):
        parse_hex("0a\nxyz\n")
    with pytest.raises(ValueError, match="does not fit 8 unsigned bits"):
        hex_lines([256], 8)
    assert parse_hex("\n 0A \n\n") == [10] and hex_lines([10]) == ["a"]


def test_hardware_layouts_pack_the_same_bits():
    """The generator's ROM words (amaranth.lib.data layouts) equal the codec's words."""
    from l1bn.hw.accel_plan import _word, mb_word_layout, table_entry_layout, weight_word_layout

    rng = np.random.default_rng(0)
    for rows, wb in ((1, 2), (4, 4), (8, 3), (16, 8)):
        f = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (20, rows))
        lay = weight_word_layout(rows, wb)
        assert [_word(lay, list(map(int, r))) for r in f] == pack(f, wb)
    mb = mb_word_layout(16, 23)
    pairs = [(-(1 << 15), (1 << 22) - 1), (123, -456), (-1, -1)]
    assert [_word(mb, {"mult": m, "bias": b}) for m, b in pairs] == pack(pairs, [16, 23])
    te = table_entry_layout(5, 2)
    assert _word(te, {"valid": 1, "off": 17, "lane": 3}) == pack([[1, 17, 3]], [1, 5, 2])[0]


@pytest.mark.parametrize("rows,cols,wbits,abits", [(4, 4, 4, 4), (8, 8, 1, 1), (2, 3, 2, 8)])
def test_sweep_mac_beats_are_the_arrays_input_layout(rows, cols, wbits, abits):
    """The gate-level sweep's MAC stimulus (packed by the codec) is the word the generator's
    ``in_layout`` describes: weights (binary: 0 -> +1, 1 -> -1), activations, last."""
    from l1bn.hw.mac_array import in_layout
    from l1bn.sim.simulate.mac import random_tiles
    from l1bn.sim.sweep.evaluate import stimulus
    from l1bn.sim.sweep.grid import MAC_K, MAC_TILES, point_config
    from l1bn.spec.reference.mac import encode_weights

    p = {"design": "mac", "rows": rows, "cols": cols, "wbits": wbits, "abits": abits}
    cfg = point_config(p)
    lay = in_layout(cfg)
    want = []
    for t in random_tiles(cfg, MAC_TILES, MAC_K, seed=0):
        w = encode_weights(np.array(t["w"]), cfg)
        want += [lay.const({"w": [int(v) for v in w[:, k]], "a": t["a"][k], "last": int(k == MAC_K - 1)}).as_bits()
                 for k in range(MAC_K)]
    assert [b["i__payload"] for b in stimulus(p)["beats"]] == want
