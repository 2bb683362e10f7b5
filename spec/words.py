"""The word codec: integer fields packed into memory words and back, and the ``.hex`` text format.

Every numpy-side consumer packs through here: the export's ``.hex`` memory images
(:mod:`l1bn.spec.export`) and the stimulus words of the gate-level benches. The hardware side
describes the same words with ``amaranth.lib.data`` layouts (:mod:`l1bn.hw.accel_plan`).

A word format is a list of field widths ``widths = (w_0, w_1, ...)``. Field ``j`` occupies bits
``[o_j, o_j + w_j)`` with ``o_j = w_0 + ... + w_(j-1)`` (LSB first, field 0 lowest), in two's
complement: a field holds any value in ``-2**(w-1) .. 2**w - 1`` (a signed or an unsigned
``w``-bit number) and stores its low ``w`` bits. Words are Python integers of any width (a word of
64 fields of 8 bits is 512 bits), so no width is limited by int64; the per-field work is
vectorized over words with numpy object arrays (no Python loop over words).

``.hex`` text (``$readmemh``): one word per line, lowercase hexadecimal, zero-padded to
``hex_digits(bits)`` digits, a newline after every line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hex_digits", "field_offsets", "pack", "unpack", "hex_lines", "hex_text", "parse_hex"]

#: widest field :func:`unpack` returns (int64); :func:`pack` takes fields of any width
MAX_FIELD_BITS = 64


def hex_digits(bits: int) -> int:
    """Hexadecimal digits of a ``bits``-wide word (at least 1)."""
    return max(1, (int(bits) + 3) // 4)


def _widths(widths, count: int | None, most: int | None = None) -> tuple[int, ...]:
    if isinstance(widths, (int, np.integer)):
        if count is None:
            raise ValueError("a single field width needs the field count")
        widths = (int(widths),) * count
    ws = tuple(int(w) for w in widths)
    if not ws:
        raise ValueError("a word format needs at least one field")
    for w in ws:
        if w < 1 or (most is not None and w > most):
            raise ValueError(f"field width {w} is outside 1..{most or 'any'}")
    return ws


def field_offsets(widths: Sequence[int]) -> tuple[int, ...]:
    """The lowest bit of each field (LSB first): ``(0, w_0, w_0 + w_1, ...)``."""
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum(widths)[:-1]]))


def _int(v) -> int:
    if isinstance(v, (int, np.integer)):
        return int(v)
    raise ValueError(f"fields must be integers; got {type(v).__name__} {v!r}")


def _as_fields(fields) -> np.ndarray:
    """(n, F) object array of Python ints (values of any size are kept exactly)."""
    if isinstance(fields, np.ndarray) or (hasattr(fields, "__array__") and not isinstance(fields, (list, tuple))):
        a = np.asarray(fields)
        if a.dtype.kind == "b":
            a = a.astype(np.int64)
        if a.dtype.kind not in "iuO":
            raise ValueError(f"fields must be integers; got dtype {a.dtype}")
        a = a.astype(object)          # numpy integers -> Python ints (no wrap on shifts)
    else:   # (nested) lists: never through numpy's dtype guess (a list holding 2**63 becomes float64)
        rows = [list(r) if isinstance(r, (list, tuple, np.ndarray)) else [r] for r in fields]
        if any(len(r) != len(rows[0]) for r in rows):
            raise ValueError("every word needs the same number of fields")
        a = np.empty((len(rows), len(rows[0]) if rows else 1), dtype=object)
        if rows:
            a[...] = rows
    if a.size:
        a = np.frompyfunc(_int, 1, 1)(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"fields must be (words, fields); got shape {a.shape}")
    return a


def pack(fields, widths) -> list[int]:
    """Pack ``fields`` (``(n, F)`` integers: numpy, nested lists, or ``(n,)`` for one field) into
    ``n`` words; ``widths`` is ``F`` field widths or one width shared by all fields.

    Raises ``ValueError`` when a value fits neither the signed nor the unsigned range of its field.
    """
    a = _as_fields(fields)
    ws = _widths(widths, a.shape[1])
    if len(ws) != a.shape[1]:
        raise ValueError(f"{a.shape[1]} fields per word but {len(ws)} widths")
    word = np.zeros(a.shape[0], dtype=object)
    for j, (w, off) in enumerate(zip(ws, field_offsets(ws), strict=True)):  # a loop over fields
        col = a[:, j]
        if col.size and (col.min() < -(1 << (w - 1)) or col.max() >= 1 << w):
            raise ValueError(f"field {j}: values {col.min()}..{col.max()} do not fit {w} bits")
        word = word | ((col & ((1 << w) - 1)) << off)
    return [int(v) for v in word]


def unpack(words, widths, count: int | None = None, *, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` words -> int64 ``(n, F)`` fields, sign-extended with
    ``signed`` (unsigned fields are at most 63 bits wide). ``widths``: ``F`` widths, or one width
    and ``count`` fields. Raises ``ValueError`` when a word has bits above its last field, or a
    field does not fit int64 (signed: 64 bits, unsigned: 63)."""
    ws = _widths(widths, count, MAX_FIELD_BITS if signed else MAX_FIELD_BITS - 1)
    total = sum(ws)
    wd = np.array([int(v) for v in words], dtype=object)
    if wd.size and (wd.min() < 0 or wd.max() >> total):
        raise ValueError(f"a word is wider than the {total} bits of its format")
    out = np.zeros((wd.size, len(ws)), dtype=np.int64)
    for j, (w, off) in enumerate(zip(ws, field_offsets(ws), strict=True)):
        col = (wd >> off) & ((1 << w) - 1)
        if signed:
            col = col - ((col >> (w - 1)) << w)       # two's complement: subtract 2**w when the top bit is set
        out[:, j] = col.astype(np.int64) if col.size else 0
    return out


def hex_lines(words, bits: int | None = None) -> list[str]:
    """Words as ``$readmemh`` lines: ``hex_digits(bits)`` digits each (no padding when ``bits``
    is None). Raises ``ValueError`` on a negative word or one wider than ``bits``."""
    digits = 1 if bits is None else hex_digits(bits)
    out = []
    for v in words:
        v = int(v)
        if v < 0 or (bits is not None and v >> bits):
            raise ValueError(f"word {v} does not fit {bits} unsigned bits")
        out.append(f"{v:0{digits}x}")
    return out


def hex_text(words, bits: int | None = None) -> str:
    """The ``.hex`` file text of ``words``: :func:`hex_lines`, a newline after each."""
    return "".join(s + "\n" for s in hex_lines(words, bits))


def parse_hex(text: str) -> list[int]:
    """The words of a ``.hex`` text (one hexadecimal word per line, blank lines ignored).

    Raises ``ValueError`` naming the first line that is not a plain hexadecimal number (``$readmemh``
    addresses ``@...`` and comments are not part of the format this toolkit writes).
    """
    words = []
    for i, line in enumerate(text.splitlines()):
        s = line.strip()
        if not s:
            continue
        if not all(c in "0123456789abcdefABCDEF" for c in s):
            raise ValueError(f"line {i + 1} ({s[:20]!r}) is not a hexadecimal word")
        words.append(int(s, 16))
    return words
