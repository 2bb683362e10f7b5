"""Amaranth forms of the project-wide arithmetic rules (docs/arith/core.md).

The same rules as :mod:`l1bn.spec.intmath` and :mod:`l1bn.spec.reference.core`, written on Amaranth
values so every generator rounds and saturates the same way.
"""

from __future__ import annotations

import contextlib
import contextvars

from amaranth import Mux, Value
from amaranth.lib import wiring

__all__ = ["rnd", "sat", "pick", "Pipe", "mul_parts", "mul_terms", "mul_latency", "sum_levels",
           "DSP_SIGNED_BITS", "ecp5_dsp_primitives"]


def rnd(v, s: int):
    """Round half up shift: ``(v + 2**(s-1)) >> s`` for s > 0 (a constant add and an arithmetic
    shift, the same logic for both signs), ``v << -s`` for s < 0, ``v`` for s = 0."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    if s < 0:
        return v << (-s)
    return v


def sat(v, bits: int):
    """Clamp ``v`` into a signed ``bits``-wide range.

    A signed ``v`` is in range exactly when its bits from ``bits - 1`` up are all equal (all
    sign): two wide AND/NOR reductions (a shallow LUT tree, no carry chain) and a mux; otherwise
    two comparators and a mux.
    """
    from amaranth import Value

    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = Value.cast(v)
    shape = v.shape()
    if shape.signed and shape.width > bits:
        top = v[bits - 1:]
        ok = top.all() | ~top.any()
        return Mux(ok, v[:bits].as_signed(), Mux(v[-1], lo, hi))
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def requantize(v, *, shift: int, out_bits: int, relu: bool):
    """The requantizer of docs/arith/mac.md: ``rnd(v, shift)``, then ReLU (clamp at 0) and
    saturation into ``out_bits`` (unsigned with ``relu``, signed without); the Amaranth form of
    ``l1bn.spec.reference.mac.requantize``.

    Saturation inspects the dropped high bits instead of comparing: in range when they are all
    copies of the kept sign bit (signed) or all zero (ReLU). Combinational; the value is
    ``unsigned(out_bits)`` with ``relu`` and ``signed(out_bits)`` without.
    """
    y = Value.cast(rnd(v, shift)).as_signed()
    ob = out_bits
    neg = y[-1]
    if relu:
        fits = ~y[ob:].any()
        return Mux(neg, 0, Mux(fits, y[:ob], (1 << ob) - 1))[:ob]
    top = y[ob - 1:]
    fits = ~top.any() | top.all()
    lo, hi = -(1 << (ob - 1)), (1 << (ob - 1)) - 1
    return Mux(fits, y[:ob].as_signed(), Mux(neg, lo, hi))[:ob].as_signed()


def pick(sel, items):
    """``items[sel]`` as a chain of Muxes.

    A chain of Muxes becomes continuous assigns in Verilog, which Icarus evaluates from time 0; an
    indexed ``Array`` becomes an ``always @*`` case that never runs while its inputs keep their
    initial values, leaving X on the output.
    """
    items = list(items)
    out = items[-1]
    for k in range(len(items) - 2, -1, -1):
        out = Mux(sel == k, items[k], out)
    return out


# ---------------------------------------------------------------------------------------------
# pipelining: registers that share one clock enable, multiplies split for MULT18X18D

# ECP5's MULT18X18D multiplies 18 x 18 signed bits; an unsigned chunk of 17 bits fits it
DSP_SIGNED_BITS = 18
_CHUNK = DSP_SIGNED_BITS - 1


def _chunks(width: int, signed: bool) -> list[tuple[int, int, bool]]:
    """``(lo, hi, signed)`` bit slices of a ``width``-bit operand so that each fits MULT18X18D:
    unsigned 17-bit low chunks, the top chunk signed (up to 18 bits) when the operand is."""
    if width <= (DSP_SIGNED_BITS if signed else _CHUNK):
        return [(0, width, signed)]
    out, lo = [], 0
    while width - lo > (DSP_SIGNED_BITS if signed else _CHUNK):
        out.append((lo, lo + _CHUNK, False))
        lo += _CHUNK
    out.append((lo, width, signed))
    return out


def _const_chunks(c: int) -> list[tuple[int, int]]:
    """``(value, shift)`` non-zero 17-bit chunks of a constant (negative: one signed chunk list)."""
    if c == 0:
        return []
    if -(1 << _CHUNK) <= c < (1 << _CHUNK):
        return [(c, 0)]
    out, k, mask = [], 0, (1 << _CHUNK) - 1
    while c not in (0, -1) or k == 0:
        part = c & mask
        c >>= _CHUNK
        if c == -1:             # the rest is the sign: fold it into this chunk as a signed value
            part -= 1 << _CHUNK
            c = 0
        if part:
            out.append((part, k * _CHUNK))
        k += 1
    return out


def mul_terms(a_shape, b) -> int:
    """How many partial products :meth:`Pipe.mul` forms for ``a * b`` (``b`` a shape or an int)."""
    na = len(_chunks(a_shape.width, a_shape.signed))
    if isinstance(b, int):
        return na * len(_const_chunks(b))
    return na * len(_chunks(b.width, b.signed))


def sum_levels(terms: int) -> int:
    """Registered two-input adder levels that reduce ``terms`` values to one."""
    return max(0, (terms - 1).bit_length())


def mul_latency(a_shape, b, *, add: int = 0) -> int:
    """Cycles of :meth:`Pipe.mul`: one for the registered partial products, one per adder level
    (the constant ``add`` counts as one more term)."""
    t = mul_terms(a_shape, b)
    if t == 0:
        return 1
    return 1 + sum_levels(t + (1 if add else 0))


_ECP5_DSP = contextvars.ContextVar("l1bn_ecp5_dsp", default=False)


@contextlib.contextmanager
def ecp5_dsp_primitives(on: bool = True):
    """Inside this block, :meth:`Pipe.mul` writes each registered partial product as an ECP5
    ``MULT18X18D`` instance with its own output register (``REG_OUTPUT_CLK``), instead of a
    multiply followed by a fabric register. Same value, same cycle; used by the ECP5 synthesis
    flow only (Yosys does not fold fabric registers into the DSP, and simulators have no model of
    the primitive)."""
    tok = _ECP5_DSP.set(on)
    try:
        yield
    finally:
        _ECP5_DSP.reset(tok)


def _mult18(m, a, b, en, domain):
    """``a * b`` registered inside one MULT18X18D (a, b: values of at most 18 signed bits)."""
    from amaranth import C, ClockSignal, Instance, Signal, Value

    a, b = Value.cast(a), Value.cast(b)
    width = (a * b).shape().width
    pa, pb = Signal(18), Signal(18)
    prod = Signal(36)
    m.d.comb += [pa.eq(a.as_signed() if a.shape().signed else a), pb.eq(b.as_signed() if b.shape().signed else b)]
    ports = {f"i_A{k}": pa[k] for k in range(18)}
    ports.update({f"i_B{k}": pb[k] for k in range(18)})
    ports.update({f"i_C{k}": C(0, 1) for k in range(18)})
    ports.update({f"o_P{k}": prod[k] for k in range(36)})
    ports.update(i_SIGNEDA=C(1, 1), i_SIGNEDB=C(1, 1), i_SOURCEA=C(0, 1), i_SOURCEB=C(0, 1),
                 i_CLK0=ClockSignal(domain), i_CE0=C(1, 1) if en is None else en, i_RST0=C(0, 1))
    m.submodules += Instance("MULT18X18D", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0",
                             p_REG_OUTPUT_RST="RST0", p_GSR="DISABLED", **ports)
    return prod[:width].as_signed()


class Pipe:
    """Pipeline registers that all advance together (``en``; always when ``en`` is None).

    Every value passed through :meth:`reg` gains one cycle of latency; :meth:`mul` is a multiply
    split into MULT18X18D-sized partial products, each registered (the DSP output register that
    Yosys does not use), summed by registered two-input adder levels; its inputs must already be
    registers for the DSP to see a register-to-register path.
    """

    def __init__(self, m, en=None, *, domain: str = "sync", prefix: str = "p"):
        self.m, self.en, self.domain, self.prefix = m, en, domain, prefix
        self._n = 0

    def _name(self, name):
        self._n += 1
        return f"{self.prefix}_{name}_{self._n}"

    def reg(self, value, name: str = "r", *, reset=0, cut: bool = True):
        """``value`` one cycle later (a register of the value's own shape); ``value`` itself
        when ``cut`` is False (an optional pipeline register left out)."""
        from amaranth import Signal, Value

        value = Value.cast(value)
        if not cut:
            return value
        s = Signal(value.shape(), name=self._name(name), init=reset)
        stmt = s.eq(value)
        if self.en is None:
            self.m.d[self.domain] += stmt
        else:
            with self.m.If(self.en):
                self.m.d[self.domain] += stmt
        return s

    def product(self, p, name: str = "mul", *, cut: bool = True):
        """A partial product from :func:`mul_parts`, registered (in the DSP itself inside
        :func:`ecp5_dsp_primitives`)."""
        if cut and _ECP5_DSP.get():
            a, b = p.operands
            return _mult18(self.m, a, b, self.en, self.domain)
        return self.reg(p, name, cut=cut)

    def delay(self, value, cycles: int, name: str = "d"):
        """``value`` ``cycles`` cycles later."""
        for _ in range(cycles):
            value = self.reg(value, name)
        return value

    def add_tree(self, terms, name: str = "sum", *, cuts=None):
        """``sum(terms)`` by two-input adder levels, each registered unless ``cuts[level]`` is
        False: :func:`sum_levels` cycles when every level is cut."""
        terms = list(terms)
        level = 0
        while len(terms) > 1:
            cut = True if cuts is None else cuts[level]
            nxt = [self.reg(terms[k] + terms[k + 1], name, cut=cut) for k in range(0, len(terms) - 1, 2)]
            if len(terms) % 2:
                nxt.append(self.reg(terms[-1], name, cut=cut))
            terms = nxt
            level += 1
        return terms[0]

    def mul(self, a, b, name: str = "mul", *, add: int = 0, cut_products: bool = True, cuts=None):
        """``a * b + add`` after :func:`mul_latency` cycles (``b`` a value or an int constant);
        ``cut_products`` / ``cuts`` leave the product or adder-level registers out."""
        from amaranth import Const

        parts = mul_parts(a, b)
        if not parts:
            return self.reg(Const(add), name, cut=cut_products)
        # register each product before its shift: the shift is wiring in the adder after it
        terms = [self.product(p, name, cut=cut_products).shift_left(sh) for p, sh in parts]
        if add:
            terms.append(Const(add))
        return self.add_tree(terms, name, cuts=cuts)


def mul_parts(a, b) -> list:
    """``a * b`` as ``[(partial product, shift)]``, each product one MULT18X18D (``b`` may be an
    int constant: its zero chunks are left out)."""
    from amaranth import Value

    a = Value.cast(a)
    sa = a.shape()
    parts = []
    for lo, hi, sg in _chunks(sa.width, sa.signed):
        ca = a[lo:hi].as_signed() if sg else a[lo:hi]
        if isinstance(b, int):
            for c, sh in _const_chunks(b):
                parts.append((ca * c, lo + sh))
        else:
            bv = Value.cast(b)
            sb = bv.shape()
            for blo, bhi, bsg in _chunks(sb.width, sb.signed):
                cb = bv[blo:bhi].as_signed() if bsg else bv[blo:bhi]
                parts.append((ca * cb, lo + blo))
    return parts


class CheckedComponent(wiring.Component):
    """A ``wiring.Component`` whose constructor arguments are refused before the object exists.

    Amaranth records every elaboratable when it is created and warns, when it is collected, about
    one that was never elaborated. A constructor that raises after the object exists would make
    that warning about a design nobody built. Subclasses define ``_check_args(cls, *args,
    **kwargs)`` (a classmethod that raises ``ValueError`` or ``TypeError``); it runs in
    ``__new__``, so a refused design is never created.
    """

    @classmethod
    def _check_args(cls, *args, **kwargs):
        pass

    def __new__(cls, *args, **kwargs):
        cls._check_args(*args, **kwargs)
        return super().__new__(cls, src_loc_at=1)   # the warning names the caller's line
