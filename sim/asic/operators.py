"""Single operators on NanGate45, for the cross-check against Horowitz (ISSCC 2014, 45 nm, 0.9 V)
and EvoApproxLib (``bench/asic_ops.py``)."""

from __future__ import annotations

from .liberty import read_liberty
from .step import asic_step, energy_per_op

__all__ = ["HOROWITZ_PJ", "HOROWITZ_VOLT", "EVOAPPROX", "OPS", "operator", "random_vectors", "operator_energy"]

HOROWITZ_PJ = {"add8": 0.03, "mul8": 0.2, "add32": 0.1}

HOROWITZ_VOLT = 0.9

# EvoApproxLib (FreePDK45) exact circuits: (area um^2, delay ns)
EVOAPPROX = {"add8": (70.4, 0.63), "mul8": (709.6, 1.43)}

OPS = {"add8": ("add", 8), "mul8": ("mul", 8), "add32": ("add", 32)}


def operator(op: str, width: int):
    """A combinational ``width``-bit unsigned adder (``width + 1``-bit sum) or multiplier
    (``2 * width``-bit product): ports ``a``, ``b`` in, ``o`` out, no clock."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    if op not in ("add", "mul"):
        raise ValueError(f"op={op!r} is unknown; choose add or mul")
    if isinstance(width, bool) or not isinstance(width, int):
        raise TypeError(f"width={width!r} must be an int")
    if not 1 <= width <= 64:
        raise ValueError(f"width={width} is out of range; allowed 1..64")

    class Operator(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(width), "b": In(width), "o": Out(2 * width if op == "mul" else width + 1)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.o.eq(self.a * self.b if op == "mul" else self.a + self.b)
            return m

    return Operator()


def random_vectors(width: int, count: int, *, seed: int = 0, constant: bool = False) -> list[dict]:
    """``count`` input vectors {a, b} of uniform random ``width``-bit values (all equal to the
    first when ``constant``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vals = [(int(a), int(b)) for a, b in zip(rng.integers(0, 1 << width, count, dtype=np.uint64).tolist(),
                                             rng.integers(0, 1 << width, count, dtype=np.uint64).tolist(),
                                             strict=True)]
    if constant:
        vals = [vals[0]] * count
    return [{"a": a, "b": b} for a, b in vals]


def operator_energy(op: str, width: int, *, vectors: int = 1000, workdir, seed: int = 0,
                    constant: bool = False, use_cache: bool = True) -> dict:
    """Area, delay and pJ per operation of one operator on random inputs (a new vector every
    operation). ``total_pj`` at the library's 1.1 V; ``pj_at_0v9`` scales the dynamic part by
    (0.9 / 1.1)^2, the voltage of Horowitz's figures."""
    beats = random_vectors(width, vectors, seed=seed, constant=constant)
    r = asic_step(operator(op, width), name=f"op-{op}{width}", workdir=workdir, sim="vectors", beats=beats,
                  use_cache=use_cache)
    e = energy_per_op(r, vectors - 1)
    v = read_liberty()["voltage"]
    return {**r, **e, "ops": vectors - 1, "pj_at_0v9": e["dynamic_pj"] * (HOROWITZ_VOLT / v) ** 2 + e["leakage_pj"]}
