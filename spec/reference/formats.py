"""Operand formats of an integer network: which integers a tensor may hold and how they are stored.

A :class:`Fmt` is one of

* ``unsigned`` ``bits`` wide: ``0 .. 2**bits - 1`` (``narrow``: ``0 .. 2**bits - 2``);
* ``signed`` ``bits`` wide, two's complement: ``-2**(bits-1) .. 2**(bits-1) - 1`` (``narrow``:
  the most negative value is left out, ``-(2**(bits-1) - 1) ..``, a symmetric range);
* ``bipolar``: the two values ``-1`` and ``+1`` in one bit, **code 0 = +1, code 1 = -1** (the
  encoding of 1-bit binary weights in :func:`l1bn.spec.reference.mac.encode_weights`; the same
  for binary weights and bipolar activations).

The reference computes with the *values*; :func:`to_codes` / :func:`from_codes` give the bit
patterns the memories hold (two's complement fields, or the bipolar code). Accumulators and
other raw sums have the format just wide enough for their exact range (:func:`fmt_for_range`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import signed_bits
from .core import as_int64, int_range

__all__ = ["KINDS", "Fmt", "fmt_for_range", "to_codes", "from_codes", "check_values"]

KINDS = ("unsigned", "signed", "bipolar")


@dataclass(frozen=True)
class Fmt:
    """An integer operand format (module docstring). Keyword construction, validated."""

    kind: str
    bits: int
    narrow: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"format kind {self.kind!r} is not one of {KINDS}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 62:
            raise ValueError(f"format bits={self.bits!r} must be an integer in 1..62")
        if not isinstance(self.narrow, bool):
            raise ValueError(f"format narrow={self.narrow!r} must be True or False")
        if self.kind == "bipolar" and (self.bits != 1 or self.narrow):
            raise ValueError("a bipolar format is 1 bit wide and not narrow")
        if self.kind == "signed" and self.bits == 1 and self.narrow:
            raise ValueError("a 1-bit signed format cannot be narrow (it would hold only 0)")

    @property
    def lo(self) -> int:
        if self.kind == "bipolar":
            return -1
        lo, _ = int_range(self.bits, self.kind == "signed")
        return lo + 1 if (self.narrow and self.kind == "signed") else lo

    @property
    def hi(self) -> int:
        if self.kind == "bipolar":
            return 1
        _, hi = int_range(self.bits, self.kind == "signed")
        return hi - 1 if (self.narrow and self.kind == "unsigned") else hi

    @property
    def signed(self) -> bool:
        """Values can be negative (signed or bipolar)."""
        return self.kind != "unsigned"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "narrow": self.narrow}

    @classmethod
    def from_dict(cls, d) -> Fmt:
        if not isinstance(d, dict) or set(d) != {"kind", "bits", "narrow"}:
            raise ValueError(f"format {d!r} must be an object with exactly kind, bits, narrow")
        return cls(kind=d["kind"], bits=d["bits"], narrow=d["narrow"])

    def describe(self) -> str:
        if self.kind == "bipolar":
            return "bipolar {-1,+1}"
        return f"{'u' if self.kind == 'unsigned' else 's'}{self.bits}{' narrow' if self.narrow else ''}"


def fmt_for_range(lo: int, hi: int) -> Fmt:
    """The format just wide enough for ``lo .. hi`` (accumulators, sums): unsigned when ``lo >= 0``
    (a sum of unsigned values), else signed."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return Fmt(kind="unsigned", bits=max(1, hi.bit_length()))
    return Fmt(kind="signed", bits=signed_bits(lo, max(hi, 0)))


def check_values(x, fmt: Fmt, what: str) -> np.ndarray:
    """``x`` as int64, or ``ValueError`` naming ``what`` when a value is outside ``fmt``
    (a bipolar tensor holds only -1 and +1: a 0 is refused)."""
    a = as_int64(x, what)
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < fmt.lo or hi > fmt.hi:
            raise ValueError(f"{what}: values {lo}..{hi} are outside the {fmt.describe()} range {fmt.lo}..{fmt.hi}")
        if fmt.kind == "bipolar" and bool((a == 0).any()):
            raise ValueError(f"{what}: a bipolar tensor holds -1 and +1 only; found 0")
    return a


def to_codes(x, fmt: Fmt) -> np.ndarray:
    """Values -> the field values the memories store (bipolar: +1 -> 0, -1 -> 1; otherwise the
    value itself, packed as two's complement by :mod:`l1bn.spec.words`)."""
    a = as_int64(x, "x")
    return (a < 0).astype(np.int64) if fmt.kind == "bipolar" else a


def from_codes(c, fmt: Fmt) -> np.ndarray:
    """Inverse of :func:`to_codes` (codes as :func:`l1bn.spec.words.unpack` returns them, sign
    extended)."""
    a = as_int64(c, "codes")
    if fmt.kind == "bipolar":
        return 1 - 2 * (a & 1)
    if fmt.kind == "unsigned":
        return a & ((1 << fmt.bits) - 1)
    return a
