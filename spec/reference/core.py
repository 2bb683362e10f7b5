"""Integer primitives shared by every stage of the reference (docs/arithmetic.md, section 1).

Rounding is **round half up** (toward +inf on ties) everywhere: ``floor(x / 2**s + 1/2)``. In
hardware that is one constant add before an arithmetic shift, with no dependence on the sign;
round-half-away-from-zero would need a sign-dependent add, and half-to-even a sticky-bit check.
The float quantizers in training use the same rule (``floor(v + 0.5)``) so QAT and integers agree.

The reference computes in numpy int64. Every config it accepts keeps every intermediate inside
``MAX_INTERMEDIATE_BITS`` (62) signed bits, so int64 never wraps (``BNConfig.widths``). It imports
neither torch nor amaranth: a caller may pass numpy arrays or torch CPU tensors (anything with
``__array__``); :func:`like` hands results back in the caller's array type.
"""

from __future__ import annotations

import numpy as np

__all__ = ["int_range", "saturate", "rshift_round", "recip_const", "div_const", "as_int64",
           "as_float64", "like", "is_numpy", "plain", "rshift_round_array", "div_const_array"]


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """Smallest and largest value of a ``bits``-wide integer."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def plain(x):
    """A torch tensor becomes a detached CPU tensor (so ``np.asarray`` can read it); others pass."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu()
    return x


def is_numpy(x) -> bool:
    """True for numpy arrays, numpy scalars and Python numbers (results stay numpy)."""
    return isinstance(x, (np.ndarray, np.generic, int, float, list, tuple))


def as_int64(x, name: str = "x") -> np.ndarray:
    """``x`` as a numpy int64 array; ``ValueError`` naming ``name`` when it is not integer-typed."""
    a = np.asarray(plain(x))
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers (int64); got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def as_float64(x) -> np.ndarray:
    """``x`` as a flat numpy float64 array (float parameters: running statistics, gamma, beta)."""
    return np.asarray(plain(x), dtype=np.float64).reshape(-1)


def like(result, template):
    """``result`` (numpy) in the array type of ``template``.

    numpy in, numpy out. For a torch tensor template the result becomes a tensor through the
    template's own ``new_tensor`` (int64 for integer results, float64 otherwise), so the spec never
    imports torch.
    """
    if is_numpy(template) or not hasattr(template, "new_tensor"):
        return result
    result = np.asarray(result)
    base = template.long() if result.dtype.kind in "iub" else template.double()
    return base.new_tensor(result.astype(np.int64) if result.dtype.kind == "b" else result)


def saturate(x, bits: int, signed: bool = True):
    """Clamp ``x`` into the range of a ``bits``-wide integer (same array type out)."""
    lo, hi = int_range(bits, signed)
    return like(np.clip(as_int64(x), lo, hi), x)


def rshift_round_array(a: np.ndarray, s: int) -> np.ndarray:
    if s > 0:
        return (a + (1 << (s - 1))) >> s
    if s < 0:
        return a << (-s)
    return a


def rshift_round(x, s: int):
    """``floor((x + 2**(s-1)) / 2**s)`` for s > 0 (round half up); ``x << -s`` for s <= 0."""
    return like(rshift_round_array(as_int64(x), s), x)


def recip_const(n: int, k: int) -> int:
    """The generation-time reciprocal of a known divisor: ``round(2**k / n)`` (half up)."""
    return ((1 << (k + 1)) // n + 1) >> 1


def div_const_array(a: np.ndarray, n: int, k: int) -> np.ndarray:
    return rshift_round_array(a * recip_const(n, k), k)


def div_const(x, n: int, k: int):
    """Division by a constant ``n`` known at generation time, as the hardware does it.

    ``(x * recip_const(n, k) + 2**(k-1)) >> k``: one constant multiply and a rounding shift. It is
    the *definition* of the quotient (it equals ``round(x / n)`` when ``k`` is large enough for the
    range of ``x``; the spec does not rely on that).
    """
    return like(div_const_array(as_int64(x), n, k), x)
