"""The arithmetic of the BN forward and of the requantizer as *programs* over an operations
backend: the one definition that the numpy reference runs (:func:`l1bn.spec.reference.bn.bn_forward`
is this program on :data:`NUMPY`). It is written so that a second backend over Amaranth values can
turn the same text into the arithmetic model of a formal equivalence harness (issue 31; that
backend is not written yet), instead of a second, hand-written copy of the formulas.

A program is plain Python over values of the backend: ``+``, ``-``, ``*``, ``<<`` and
comparisons are the operators of the values themselves (numpy int64 arrays here, Amaranth values
in the formal backend: both exact for the widths ``BNConfig.widths`` admits); everything else goes
through the backend object ``ops``:

=====================  ===========================================================================
``ops.sum(v)``         sum over a channel's elements (numpy: the last axis, kept)
``ops.max``/``min``    largest / smallest element of a channel
``ops.abs(v)``         absolute value, element-wise
``ops.rnd(v, s)``      round half up shift (``rshift_round``)
``ops.sat(v, bits)``   clamp to a signed ``bits``-wide range; ``ops.clamp(v, lo, hi)`` any range
``ops.div_round``      ``round(v / n)``, ties up: ``floor((2v + n) / (2n))`` (``n`` a constant)
``ops.isqrt(v)``       ``floor(sqrt(v))`` of ``v >= 0``
``ops.recip(v, r)``    ``floor(2**r / v)`` of ``v >= 1``
``ops.exact(v)``       a per-channel value in exact integers (numpy: Python ints, for ``s * C``)
``ops.named(k, v)``    ``v``, under the name ``k`` (the formal backend compares it with what the
                       hardware reports under that name)
=====================  ===========================================================================

``div_round``, ``isqrt`` and ``recip`` take ``name=``: the formal backend then checks the value the
hardware reports under that name against the operation's defining relation
(``2n*q <= 2v + n < 2n*(q + 1)``; ``q*q <= v < (q+1)**2``; ``q*v <= 2**r < (q+1)*v``) instead of
building a divider.

The per-norm parts (the dispersion and sigma) are the registry's rules
(:attr:`l1bn.spec.norms.NormSpec.disp_rule`, :attr:`~l1bn.spec.norms.NormSpec.sigma_rule`),
written over the same backend.
"""

from __future__ import annotations

import math

import numpy as np

from .core import int_range, rshift_round_array

__all__ = ["NumpyOps", "NUMPY", "bn_forward_program", "requantize_program", "FORWARD_NAMES"]

#: the values :func:`bn_forward_program` returns (per channel, then per element)
FORWARD_NAMES = ("sum_x", "mu", "disp_sum", "s", "sigma", "inv", "xhat", "y")


class NumpyOps:
    """The numpy backend: a channel is a row, its elements the last axis; per-channel values keep
    that axis (shape ``(channels, 1)``) so they broadcast over the elements. int64 throughout,
    except ``exact`` (object arrays of Python ints, for the per-channel ``s * C``)."""

    def sum(self, v):
        return v.sum(-1, keepdims=True)

    def max(self, v):
        return v.max(-1, keepdims=True)

    def min(self, v):
        return v.min(-1, keepdims=True)

    def abs(self, v):
        return np.abs(v)

    def rnd(self, v, s: int):
        return rshift_round_array(v, s)

    def sat(self, v, bits: int):
        return np.clip(v, *int_range(bits))

    def clamp(self, v, lo: int, hi: int):
        return np.clip(v, lo, hi)

    def div_round(self, v, n: int, *, name: str | None = None):
        return (2 * v + n) // (2 * n)

    def isqrt(self, v, *, name: str | None = None):
        # per channel, exact (math.isqrt); the root of an int64 fits int64
        return np.array([math.isqrt(int(s)) for s in np.ravel(v)], dtype=np.int64).reshape(np.shape(v))

    def recip(self, v, bits: int, *, name: str | None = None):
        # per channel, from exact integers; the quotient (<= 2**bits) fits int64
        return np.array([(1 << bits) // int(s) for s in np.ravel(v)], dtype=np.int64).reshape(np.shape(v))

    def exact(self, v):
        return np.vectorize(int, otypes=[object])(v)

    def named(self, name: str, v):
        return v


#: the shared numpy backend (it has no state)
NUMPY = NumpyOps()


def bn_forward_program(ops, cfg, x, gamma, beta) -> dict:
    """The integer training-mode BN forward of ``cfg`` (``BNConfig``) on one batch: the values of
    :data:`FORWARD_NAMES`, as ``ops`` computes them (docs/arith/bn_train.md)::

        S      = sum x_i
        mu     = div_round(S << frac, n)
        d_i    = (x_i << frac) - mu
        D, s   = the norm's dispersion rule of d        (L1: sum |d|, L2: sum d*d, range: max - min)
        sigma  = the norm's sigma rule of s + eps       (rnd(s * C, c_bits) or isqrt(s))
        inv    = floor(2**recip_bits / sigma)
        xhat_i = rnd(d_i * inv, recip_bits - xhat_frac)
        y_i    = sat(rnd(gamma * xhat_i, xhat_frac + gamma_frac - out_frac) + beta, out_width)

    ``x`` holds a channel's n elements (numpy: shape ``(channels, n)``; gamma and beta
    ``(channels, 1)``).
    """
    rule = cfg.norm_spec
    r = cfg.recip_bits
    sum_x = ops.named("sum_x", ops.sum(x))
    mu = ops.div_round(sum_x << cfg.frac, cfg.n, name="mu")
    d = (x << cfg.frac) - mu
    disp_sum, s = rule.disp_rule(ops, d, cfg)
    sigma = ops.named("sigma", rule.sigma_rule(ops, s, cfg) + cfg.eps)
    inv = ops.recip(sigma, r, name="inv")
    xhat = ops.named("xhat", ops.rnd(d * inv, r - cfg.xhat_frac))
    y = ops.named("y", ops.sat(ops.rnd(gamma * xhat, cfg.affine_shift) + beta, cfg.out_width))
    return {"sum_x": sum_x, "mu": mu, "disp_sum": disp_sum, "s": s, "sigma": sigma, "inv": inv,
            "xhat": xhat, "y": y}


def requantize_program(ops, acc, *, shift: int, out_bits: int, relu: bool):
    """The output requantizer (docs/arith/mac.md): ``rnd(acc, shift)``, then ReLU and saturation
    into ``out_bits`` (unsigned with ``relu``, signed without)."""
    y = ops.rnd(acc, shift)
    return ops.named("y", ops.clamp(y, *int_range(out_bits, signed=not relu)))
