"""The Amaranth backend of the reference programs (:mod:`l1bn.spec.reference.program`).

The numpy reference runs :func:`~l1bn.spec.reference.program.bn_forward_program` on
:data:`~l1bn.spec.reference.program.NUMPY`; this module runs the *same program text* on Amaranth
values, so a formal harness gets its arithmetic model of the reference generated from ``spec/``
instead of a second, hand-written copy of the formulas.

Values are :class:`Lanes`: a list of Amaranth values, one per element of a channel (a
per-channel value is a :class:`Lanes` of length one, and broadcasts), with the operators the
programs use (``+ - * << >>``, unary ``-``) in exact, growing Amaranth arithmetic.

The operations that would need a divider or a square root (``div_round``, ``isqrt``, ``recip``)
take the value the hardware reports under their ``name`` (the ``reported`` mapping: the unit's
``stats`` record) and add its defining relation to :attr:`AmaranthOps.checks` instead
(``2n*q <= 2v + n < 2n*(q + 1)``; ``q*q <= v < (q + 1)**2``; ``q*v <= 2**r < (q + 1)*v``): each
relation has exactly one solution, so the model is the reference's arithmetic, and the harness
asserts every check. ``named`` values that the hardware reports are compared with it the same way.
"""

from __future__ import annotations

from amaranth import Mux, Value
from l1bn.spec.reference.core import int_range
from l1bn.spec.reference.program import bn_forward_program

__all__ = ["Lanes", "AmaranthOps", "forward_model"]


class Lanes:
    """A channel's values (a list of Amaranth values or ints); length one broadcasts."""

    def __init__(self, items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        return self.items[k]

    def _zip(self, other):
        b = other.items if isinstance(other, Lanes) else [other]
        a = self.items
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            raise ValueError(f"Lanes of lengths {len(a)} and {len(b)} do not broadcast")
        n = max(len(a), len(b))
        return [(a[0] if len(a) == 1 else a[k], b[0] if len(b) == 1 else b[k]) for k in range(n)]

    def map(self, f):
        return Lanes(f(v) for v in self.items)

    def __add__(self, o):
        return Lanes(a + b for a, b in self._zip(o))

    def __radd__(self, o):
        return Lanes(b + a for a, b in self._zip(o))

    def __sub__(self, o):
        return Lanes(a - b for a, b in self._zip(o))

    def __rsub__(self, o):
        return Lanes(b - a for a, b in self._zip(o))

    def __mul__(self, o):
        return Lanes(a * b for a, b in self._zip(o))

    def __rmul__(self, o):
        return Lanes(b * a for a, b in self._zip(o))

    def __lshift__(self, s: int):
        return self.map(lambda v: v << s)

    def __rshift__(self, s: int):
        return self.map(lambda v: v >> s)

    def __neg__(self):
        return self.map(lambda v: -v)


class AmaranthOps:
    """The operations backend over :class:`Lanes` (see the module and
    :mod:`l1bn.spec.reference.program` for each operation's meaning).

    Parameters
    ----------
    reported : dict
        ``name -> Amaranth value``: what the hardware reports (per channel).

    Attributes
    ----------
    checks : list of (name, Amaranth value)
        The conditions the reported values must meet (one bit each); a harness asserts them.
    """

    def __init__(self, reported: dict | None = None):
        self.reported = dict(reported or {})
        self.checks: list[tuple[str, Value]] = []
        #: every sum/max/min in the order the program computed them: (kind, prefixes)
        self.folds: list[tuple[str, list]] = []

    def _reported(self, name, what):
        if name not in self.reported:
            raise ValueError(f"{what} needs the value the hardware reports as {name!r} "
                             f"(reported: {', '.join(sorted(self.reported)) or 'none'})")
        return self.reported[name]

    def _fold(self, kind, v, step):
        # a left fold in element order: the order a running accumulator (sum, max, min) takes
        # them in, so the solver can match the model with the hardware term by term; the
        # prefixes are kept (``folds``) for the harnesses' per-element lemmas
        prefixes = [v.items[0]]
        for a in v.items[1:]:
            prefixes.append(step(prefixes[-1], a))
        self.folds.append((kind, prefixes))
        return Lanes([prefixes[-1]])

    def sum(self, v):
        return self._fold("sum", v, lambda t, a: t + a)

    def max(self, v):
        return self._fold("max", v, lambda t, a: Mux(a > t, a, t))

    def min(self, v):
        return self._fold("min", v, lambda t, a: Mux(a < t, a, t))

    def abs(self, v):
        return v.map(lambda a: Mux(a < 0, -a, a))

    def rnd(self, v, s: int):
        if s > 0:
            return v.map(lambda a: (a + (1 << (s - 1))) >> s)
        return v.map(lambda a: a << -s) if s < 0 else v

    def clamp(self, v, lo: int, hi: int):
        return v.map(lambda a: Mux(a > hi, hi, Mux(a < lo, lo, a)))

    def sat(self, v, bits: int):
        return self.clamp(v, *int_range(bits))

    def div_round(self, v, n: int, *, name: str | None = None):
        (val,) = v.items
        q = self._reported(name, "div_round")
        t = 2 * val + n
        self.checks.append((name, (2 * n * q <= t) & (t < 2 * n * (q + 1))))
        return Lanes([q])

    def isqrt(self, v, *, name: str | None = None):
        (val,) = v.items
        q = self._reported(name, "isqrt")
        self.checks.append((name, (q >= 0) & (q * q <= val) & (val < (q + 1) * (q + 1))))
        return Lanes([q])

    def recip(self, v, bits: int, *, name: str | None = None):
        (val,) = v.items
        q = self._reported(name, "recip")
        one = 1 << bits
        self.checks.append((name, (val >= 1) & (q * val <= one) & (one < (q + 1) * val)))
        return Lanes([q])

    def exact(self, v):
        return v                    # Amaranth arithmetic is exact already

    def named(self, name: str, v):
        if name in self.reported and len(v) == 1:
            self.checks.append((name, self.reported[name] == v.items[0]))
        return v


def forward_model(cfg, xs, gamma, beta, reported: dict, *, folds: list | None = None):
    """The reference BN forward of one channel (``cfg``: ``BNConfig``; ``xs``: its ``n`` elements,
    Amaranth values; ``gamma``, ``beta``: the channel's) on :class:`AmaranthOps`. With a subset
    of the elements, the element-wise values (``xhat``, ``y``) are still exact, since they use
    only the element and the record's ``mu`` and ``inv``; the checks then are not meaningful.

    ``reported``: the hardware's ``stats`` record of the channel, ``{"mu", "s", "sigma", "inv"}``
    (Amaranth values). The square root of a ``"sqrt"`` sigma is checked against
    ``sigma - eps`` (the record's sigma includes eps). Returns ``(values, checks)``: the
    program's values (:data:`~l1bn.spec.reference.program.FORWARD_NAMES`, as :class:`Lanes`) and
    the list of ``(name, condition)`` that must hold. ``folds`` (a list, optional) receives
    the program's sums, maxima and minima with their prefixes (:attr:`AmaranthOps.folds`).
    """
    rep = dict(reported)
    if "sigma" in rep:
        rep.setdefault("sigma_core", rep["sigma"] - cfg.eps)
    ops = AmaranthOps(rep)
    values = bn_forward_program(ops, cfg, Lanes(xs), Lanes([gamma]), Lanes([beta]))
    if folds is not None:
        folds.extend(ops.folds)
    return values, ops.checks
