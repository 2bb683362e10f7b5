"""Softmax cross-entropy gradient from integer logits, in fixed point (docs/arith/training.md, "Loss").

Per image, with logits ``z`` (integers, value ``z * 2**-e``), ``T = exp_frac``, ``P = prob_bits``,
``Lc = log2e_bits``::

    delta_i = max_j z_j - z_i                                       >= 0
    t_i     = min(rnd(delta_i * L2E, Lc + e - T), (P + 2) << T)     base-2 exponent, T frac bits
              L2E = round(log2(e) * 2**Lc)
    E_i     = rnd(LUT[t_i & (2**T - 1)], t_i >> T)                   2**(P - t_i / 2**T), P frac bits
              LUT[r] = round(2**(P - r / 2**T)), r = 0 .. 2**T - 1
    S       = sum_i E_i                                             (>= 2**P: the max has E = 2**P)
    p_i     = div_round(E_i << P, S) = floor((2 * (E_i << P) + S) / (2 S))
    g_i     = p_i - [i = label] << P                                dL/dz_i (real logits), P frac bits

``rnd`` is round half up; the shift ``Lc + e - T`` is at least 1 for every accepted config
(``IntTrainConfig``). The loss is the sum over the batch (its 1/N is folded into the normalized
update). ``E_i`` is 0 once ``t_i >= (P + 2) << T`` (the probability is below 2**-(P+1)).
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["log2e_const", "exp2_lut", "softmax_ce_grad"]


@functools.cache
def log2e_const(lc: int) -> int:
    """``round(log2(e) * 2**lc)`` (half up; float64 is exact enough for lc <= 30: no tie)."""
    v = math.log2(math.e) * (1 << lc)
    if abs(v - math.floor(v) - 0.5) < 1e-6:
        raise ValueError(f"log2(e) * 2**{lc} is too close to a rounding tie for float64")
    return int(math.floor(v + 0.5))


@functools.cache
def _lut(t: int, p: int) -> np.ndarray:
    r = np.arange(1 << t, dtype=np.float64)
    v = np.exp2(p - r / (1 << t))
    frac = v - np.floor(v)
    # 2**(P - r/2**T) is irrational for r > 0: float64 (error < 2**-20 here) decides every rounding
    if bool((np.abs(frac[1:] - 0.5) < 1e-6).any()):
        raise ValueError(f"the exp2 table (exp_frac={t}, prob_bits={p}) has a value too close to a tie")
    out = np.floor(v + 0.5).astype(np.int64)
    out.setflags(write=False)
    return out


def exp2_lut(exp_frac: int, prob_bits: int) -> np.ndarray:
    """``LUT[r] = round(2**(P - r / 2**T))`` (half up), ``r = 0 .. 2**T - 1`` (read-only int64)."""
    return _lut(exp_frac, prob_bits)


def softmax_ce_grad(z: np.ndarray, labels: np.ndarray, z_exp: int, *, exp_frac: int,
                    prob_bits: int, log2e_bits: int, check=None) -> tuple[np.ndarray, np.ndarray]:
    """``(g, p)`` (both (N, classes) int64, ``prob_bits`` fractional bits) of the summed CE loss.

    ``z`` (N, classes) integer logits worth ``z * 2**-z_exp``; ``labels`` (N,) in 0..classes-1.
    ``check(name, values)`` (optional) is called on every intermediate (``loss.*`` names).
    """
    t_bits, p_bits, lc = exp_frac, prob_bits, log2e_bits
    chk = check or (lambda name, v: v)
    shift = lc + z_exp - t_bits
    if shift < 1:
        raise ValueError(f"logit exponent {z_exp} too small for log2e_bits={lc}, exp_frac={t_bits}")
    delta = chk("loss.delta", z.max(1, keepdims=True) - z)
    prod = chk("loss.delta_log2e", delta * log2e_const(lc) + (1 << (shift - 1)))
    t = chk("loss.t", np.minimum(prod >> shift, (p_bits + 2) << t_bits))
    q, r = t >> t_bits, t & ((1 << t_bits) - 1)
    lut = exp2_lut(t_bits, p_bits)[r]
    # rnd(LUT[r], q): q = 0 keeps the entry; q >= 1 adds 2**(q-1) before the shift
    e = chk("loss.exp", np.where(q > 0, (lut + (np.int64(1) << np.maximum(q - 1, 0))) >> q, lut))
    s = chk("loss.sum", e.sum(1, keepdims=True))
    num = chk("loss.div_numerator", 2 * (e << p_bits) + s)
    p = num // (2 * s)
    onehot = np.zeros_like(p)
    onehot[np.arange(z.shape[0]), labels] = 1 << p_bits
    return chk("loss.grad", p - onehot), p
