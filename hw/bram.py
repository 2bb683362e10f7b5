"""Memories cut into block-RAM-sized pieces, read through the block RAM's output register.

An ECP5 DP16KD holds 16 kbit as 16384 x 1, 8192 x 2, 4096 x 4, 2048 x 9 or 1024 x 18 (per port).
Read without its output register (``REGMODE="NOREG"``), its clock-to-output is most of a 150 MHz
cycle: the digits accelerator's critical path was a DP16KD's output into the register after it
(7.8 ns, 1 logic level). With ``REGMODE="OUTREG"`` the block RAM registers its own output and the
word leaves the block early in the next cycle.

:class:`BankedMemory` is a memory built so that every piece Yosys maps is exactly one block RAM
and every piece's read data goes straight into a register with the read port's enable and no
reset: the shape :func:`l1bn.sim.fpga.bram_outreg.absorb_bram_outregs` turns into
``REGMODE="OUTREG"`` after synthesis. The word is cut into slices of at most 18 bits (aligned to
the write granularity) and the depth into banks of one block's depth for that slice width; the
banks' registered words are selected by the (registered) bank number after the output register.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.arith import pick

__all__ = ["BRAM_MODES", "BankedMemory", "bram_geometry", "bram_count"]

#: ECP5 DP16KD port shapes (data bits, words): one block RAM each
BRAM_MODES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024))
#: DP16KD write enables are per 9-bit byte: narrower lanes with their own enables cannot share one
#: (Yosys then builds one block RAM per lane of every piece)
BYTE_BITS = 9
#: memories this deep or less become distributed RAM (TRELLIS_DPR16X4, 4 bits wide), not block RAM
LUTRAM_DEPTH = 64


def _bits_for(n: int) -> int:
    return max(1, (n - 1).bit_length())


def bram_geometry(width: int, depth: int, granularity: int | None = None) -> tuple[list[tuple[int, int]], int, int]:
    """How :class:`BankedMemory` cuts a ``width`` x ``depth`` memory: ``(slices, bank_depth, banks)``.

    ``slices``: ``(lo, hi)`` bit ranges of at most 18 bits (whole ``granularity`` lanes; a lane
    wider than 18 bits is one slice; in a block-RAM sized memory, deeper than
    :data:`LUTRAM_DEPTH`, a lane narrower than :data:`BYTE_BITS` with its own enable is a slice of
    its own, as deep as the block RAM allows at its width); ``bank_depth``: the words of one block
    RAM at the widest slice's width; ``banks``: ``ceil(depth / bank_depth)``.
    """
    g = granularity or 1
    if width % g:
        raise ValueError(f"width={width} is not a multiple of granularity={g}")
    lanes = width // g
    per = max(1, 18 // g)                        # lanes per slice
    if granularity and g % BYTE_BITS and depth > LUTRAM_DEPTH:
        per = 1                                  # the block RAM's enables are 9-bit bytes
    n = -(-lanes // per)
    per = -(-lanes // n)                         # as even as whole lanes allow
    slices = [(k * per * g, min(lanes, (k + 1) * per) * g) for k in range(n)]
    widest = max(hi - lo for lo, hi in slices)
    bank_depth = next((d for w, d in BRAM_MODES if w >= widest), BRAM_MODES[-1][1])
    return slices, bank_depth, -(-depth // bank_depth)


def bram_count(width: int, depth: int, granularity: int | None = None) -> int:
    """Block RAMs of a :class:`BankedMemory` of this shape (slices x banks; a slice wider than 18
    bits counts ``ceil(bits / 18)``)."""
    slices, _, banks = bram_geometry(width, depth, granularity)
    return banks * sum(-(-(hi - lo) // 18) for lo, hi in slices)


class BankedMemory(wiring.Component):
    """One read port (and optionally one write port) over block-RAM-sized pieces.

    Parameters
    ----------
    width, depth : int
        Word bits and words.
    init : list of int
        Initial words (a ROM when ``write`` is False).
    write : bool
        Has a write port.
    granularity : int or None
        Write-enable lane width (``wr_en`` has ``width // granularity`` bits); None: one enable.
    block : bool
        Ask Yosys for block RAM (``rom_style``/``ram_style = "block"``) even where it would build
        a small ROM from LUTs.

    The caller never reads a word in the cycle it writes it (the pieces carry Yosys'
    ``no_rw_check``): what such a read returns is not defined in hardware (simulation returns the
    old word).

    Attributes
    ----------
    r_addr : In(range(depth)); r_en : In(1)
        The read address and the enable of the whole read pipeline (both stages hold while low).
    r_data : Out(width)
        The word at the address of two enabled cycles ago: the block RAM reads at the first
        enabled edge, its output register takes the word at the second, then the bank select (a
        mux of ``banks`` registered words; none with one bank). Not transparent: a write to the
        address being read is seen by later reads only.
    w_addr : In(range(depth)); w_data : In(width); w_en : In(lanes)
        The write port (``write=True``): written at the clock edge.

    Latency: 2 enabled cycles from ``r_addr`` to ``r_data``.
    """

    def __init__(self, *, width: int, depth: int, init=(), write: bool = False, granularity: int | None = None,
                 block: bool = False):
        if width < 1 or depth < 1:
            raise ValueError(f"width={width}, depth={depth}: both must be >= 1")
        self.width, self.depth, self.write, self.granularity, self.block = width, depth, write, granularity, block
        self.init = list(init)
        self.slices, self.bank_depth, self.banks = bram_geometry(width, depth, granularity)
        abits = _bits_for(max(depth, 2))
        ports = {"r_addr": In(abits), "r_en": In(1), "r_data": Out(width)}
        if write:
            ports |= {"w_addr": In(abits), "w_data": In(width),
                      "w_en": In(width // granularity if granularity else 1)}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        nb, bd = self.banks, self.bank_depth
        lo_bits = _bits_for(bd) if nb > 1 else len(self.r_addr)
        bank_bits = max(1, len(self.r_addr) - lo_bits) if nb > 1 else 0
        g = self.granularity
        outs = []
        for b in range(nb):
            words = min(bd, self.depth - b * bd)
            regs = []
            for s, (lo, hi) in enumerate(self.slices):
                init = [(w >> lo) & ((1 << (hi - lo)) - 1) for w in self.init[b * bd:b * bd + words]]
                # no_rw_check: the caller never reads an address in the cycle it writes it, so
                # Yosys leaves out the bypass that emulates read-old-data across the two ports
                attrs = {"no_rw_check": 1} if self.write else {}
                if self.block:
                    attrs["rom_style" if not self.write else "ram_style"] = "block"
                mem = Memory(shape=unsigned(hi - lo), depth=words, init=init, attrs=attrs or None)
                m.submodules[f"b{b}s{s}"] = mem
                rd = mem.read_port(domain="sync")
                m.d.comb += [rd.addr.eq(self.r_addr[:lo_bits]), rd.en.eq(self.r_en)]
                # the block RAM's output register: the read data straight into a reset-less
                # register with the read enable (absorbed as REGMODE=OUTREG after synthesis)
                q = Signal(hi - lo, name=f"q_b{b}s{s}", reset_less=True)
                with m.If(self.r_en):
                    m.d.sync += q.eq(rd.data)
                regs.append(q)
                if self.write:
                    wp = mem.write_port(**({"granularity": g} if g else {}))
                    sel = self.w_addr[lo_bits:] == b if nb > 1 else 1
                    en = self.w_en[lo // g:hi // g] if g else self.w_en
                    m.d.comb += [wp.addr.eq(self.w_addr[:lo_bits]), wp.data.eq(self.w_data[lo:hi]),
                                 wp.en.eq(en & sel.replicate(len(wp.en)) if nb > 1 else en)]
            outs.append(regs)
        if nb == 1:
            m.d.comb += self.r_data.eq(Cat(*outs[0]))
            return m
        # the bank of the word in the output registers: the address's high bits, two stages on
        bank1 = Signal(bank_bits, reset_less=True)
        bank2 = Signal(bank_bits, reset_less=True)
        with m.If(self.r_en):
            m.d.sync += [bank1.eq(self.r_addr[lo_bits:]), bank2.eq(bank1)]
        m.d.comb += self.r_data.eq(pick(bank2, [Cat(*r) for r in outs]))
        return m

