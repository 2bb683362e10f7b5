"""Fixed-point pieces with a run-time shift: the quantizers of the training contract in hardware
(docs/arith/training.md, section 5). Every scale is a power of two chosen per tensor from its
largest magnitude, so the hardware is a max register, a priority encoder and a barrel shifter.

All functions build combinational Amaranth values; ``s`` is a signed run-time shift with a known
range ``[smin, smax]`` (the generator sizes the shifters from it). :class:`RunShift` is the
pipelined form the engines use: the shift's decoded amounts and rounding constants are registers
(``s`` holds for a whole tensor), the add and the barrel shift are separate register stages.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["bitlen", "magnitude", "rnd_var", "stochastic_var", "sat_to", "RunShift", "delay", "MaxTracker"]


def bitlen(v) -> Value:
    """Bits of the unsigned value ``v`` (0 for 0): a priority encoder, ``unsigned(bits(width))``."""
    v = Value.cast(v)
    w = v.shape().width
    shape = unsigned(max(1, w.bit_length()))
    if w <= 4:
        out = Const(0, shape)
        for k in range(w):
            out = Mux(v[k], k + 1, out)
        return out
    # a balanced tree (log2(width) multiplexer levels): the upper half decides
    h = w // 2
    return Mux(v[h:].any(), h + bitlen(v[h:]), bitlen(v[:h]))


def magnitude(v) -> Value:
    """``|v|`` of a signed value as ``unsigned(width)`` (the most negative value included)."""
    v = Value.cast(v)
    w = v.shape().width
    return Mux(v[-1], -v, v)[:w] if v.shape().signed else v


def _amount(s, lo: int, hi: int):
    """``s`` (signed) limited to ``lo..hi`` (a non-negative range) as an unsigned shift amount."""
    bits = max(1, hi.bit_length())
    return Mux(s < lo, lo, Mux(s > hi, hi, s))[:bits]


def rnd_var(v, s, smin: int, smax: int) -> Value:
    """``rnd(v, s)`` for a run-time ``s`` in ``smin..smax``: ``(v + 2**(s-1)) >> s`` for s > 0,
    ``v << -s`` for s <= 0 (``l1bn.spec.reference.core.rshift_round_array``). Signed result."""
    v = Value.cast(v)
    v = v.as_signed() if v.shape().signed else Cat(v, Const(0, 1)).as_signed()
    out = []
    if smax > 0:
        sh = _amount(s, 1, smax)
        half = ((Const(1, unsigned(smax + 1)) << sh) >> 1)[:smax]
        out.append((s > 0, (v + half) >> sh))
    if smin < 0:
        left = v << _amount(-s, 0, -smin)
        out.append((s < 0, left))
    res = v
    for cond, val in reversed(out):
        res = Mux(cond, val, res)
    return res


def stochastic_var(v, s, word, smin: int, smax: int) -> Value:
    """``floor((v + r) / 2**s)`` with ``r`` the low ``s`` bits of the 32-bit ``word`` (``s <= 32``)
    or ``word << (s - 32)`` (``s > 32``); ``v << -s`` for ``s <= 0``
    (``l1bn.spec.reference.grad_quant.stochastic_shift``). Signed result."""
    v = Value.cast(v)
    v = v.as_signed() if v.shape().signed else Cat(v, Const(0, 1)).as_signed()
    word = Value.cast(word)
    res = v
    if smin < 0:
        res = Mux(s < 0, v << _amount(-s, 0, -smin), res)
    if smax > 0:
        sh = _amount(s, 1, smax)
        low = min(smax, 32)
        mask = ((Const(1, unsigned(low + 1)) << _amount(s, 1, low)) - 1)[:low]
        r = word[:low] & mask
        if smax > 32:
            r = Mux(s > 32, word << _amount(s - 32, 0, smax - 32), r)
        r = Cat(r, Const(0, 1)).as_signed()
        res = Mux(s > 0, (v + r) >> sh, res)
    return res


def sat_to(v, bits: int) -> Value:
    """Clamp a signed value into ``bits`` signed bits (``signed(bits)``)."""
    from l1bn.hw.arith import sat

    return sat(Value.cast(v), bits)[:bits].as_signed()


def _signed(v) -> Value:
    v = Value.cast(v)
    return v.as_signed() if v.shape().signed else Cat(v, Const(0, 1)).as_signed()


def delay(m: Module, v, n: int, name: str) -> Value:
    """``v`` through ``n`` registers (``v`` itself for ``n = 0``)."""
    v = Value.cast(v)
    for i in range(n):
        r = Signal(v.shape(), name=f"{name}_d{i + 1}")
        m.d.sync += r.eq(v)
        v = r
    return v


class RunShift:
    """:func:`rnd_var` or :func:`stochastic_var` as two register stages, for a run-time ``s``
    (``smin..smax``) that holds while an operation streams elements.

    Built in ``m`` from the register ``s``: ``pos`` (s > 0), ``neg`` (s < 0), the right and left
    shift amounts and the rounding constant (``2**(s-1)``, or for stochastic rounding the mask of
    the word's low ``s`` bits) are registers one cycle behind ``s``, so an operation may use them
    from the second cycle after it loaded ``s``. Per element, :meth:`add` is the first stage
    (``v + r`` for s > 0, else ``v``: one adder) and :meth:`shift` the second (one barrel
    shifter); the caller registers each. ``shift(add(v, bias(word)))`` equals
    ``stochastic_var(v, s, word)`` (``stochastic``) or ``rnd_var(v, s)``, for every ``s`` in range.
    """

    def __init__(self, m: Module, s, smin: int, smax: int, *, name: str, stochastic: bool = False):
        self.smin, self.smax, self.stochastic = smin, smax, stochastic
        s = Value.cast(s)
        self.pos, self.neg = Signal(name=f"{name}_pos"), Signal(name=f"{name}_neg")
        m.d.sync += [self.pos.eq(s > 0), self.neg.eq(s < 0)]
        if smax > 0:
            self.rsh = Signal(range(smax + 1), name=f"{name}_rsh")
            m.d.sync += self.rsh.eq(_amount(s, 1, smax))
            if stochastic:
                low = min(smax, 32)
                self.low = low
                self.mask = Signal(low, name=f"{name}_mask")
                m.d.sync += self.mask.eq(((Const(1, unsigned(low + 1)) << _amount(s, 1, low)) - 1)[:low])
                if smax > 32:
                    self.big = Signal(name=f"{name}_big")
                    self.bsh = Signal(range(smax - 32 + 1), name=f"{name}_bsh")
                    m.d.sync += [self.big.eq(s > 32), self.bsh.eq(_amount(s - 32, 0, smax - 32))]
            else:
                self.half = Signal(smax, name=f"{name}_half")
                m.d.sync += self.half.eq(((Const(1, unsigned(smax + 1)) << _amount(s, 1, smax)) >> 1)[:smax])
        if smin < 0:
            self.lsh = Signal(range(-smin + 1), name=f"{name}_lsh")
            m.d.sync += self.lsh.eq(_amount(-s, 0, -smin))

    def bias(self, word=None) -> Value:
        """The value added before a right shift: ``2**(s-1)``, or the stochastic ``r`` drawn from
        the 32-bit ``word`` (one AND level; a variable shift only where ``smax > 32``)."""
        if self.smax <= 0:
            return Const(0, 1)
        if not self.stochastic:
            return self.half
        word = Value.cast(word)
        r = word[:self.low] & self.mask
        if self.smax > 32:
            r = Mux(self.big, word << self.bsh, r)
        return r

    def add(self, v, r) -> Value:
        """Stage 1: ``v + r`` where s > 0, else ``v`` (signed)."""
        v = _signed(v)
        if self.smax <= 0:
            return v
        return Mux(self.pos, v + _signed(r), v)

    def shift(self, t) -> Value:
        """Stage 2: ``t >> s`` where s > 0, ``t << -s`` where s < 0, else ``t`` (signed)."""
        t = _signed(t)
        res = t
        if self.smin < 0:
            res = Mux(self.neg, t << self.lsh, res)
        if self.smax > 0:
            res = Mux(self.pos, t >> self.rsh, res)
        return res


class MaxTracker(wiring.Component):
    """The largest magnitude of a stream of values, for a per-tensor power-of-two scale.

    Parameters
    ----------
    width : int
        Signed bits of the values.

    Interface
    ---------
    clear : In(1)
        Start a new tensor (the maximum becomes 0 in the next cycle; a ``take`` in the same
        cycle counts for the new tensor).
    take : In(1); value : In(signed(width))
        A value of the tensor.
    max : Out(unsigned(width))
        The largest ``|value|`` taken since the last ``clear`` (one cycle after the take).
    bits : Out(unsigned)
        ``bitlen(max)``, combinational from the ``max`` register.
    """

    def __init__(self, width: int):
        self.width = width
        super().__init__({"clear": In(1), "take": In(1), "value": In(signed(width)),
                          "max": Out(unsigned(width)), "bits": Out(unsigned(max(1, width.bit_length())))})

    def elaborate(self, platform):
        m = Module()
        mag = Signal(unsigned(self.width))
        m.d.comb += mag.eq(magnitude(self.value))
        cur = Mux(self.clear, 0, self.max)
        with m.If(self.take):
            m.d.sync += self.max.eq(Mux(mag > cur, mag, cur))
        with m.Elif(self.clear):
            m.d.sync += self.max.eq(0)
        m.d.comb += self.bits.eq(bitlen(self.max))
        return m
