"""Image loader of the accelerator: pixels from the input stream into two image slots.

Two slots let the next image load while the current one is computed; the issuer
(:mod:`l1bn.hw.accel_issue`) frees a slot as soon as layer 0 has read it.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_layers import bits_for

__all__ = ["ImageLoader", "mem_write_signature"]


def mem_write_signature(addr_bits: int, data_bits: int, en_bits: int = 1) -> wiring.Signature:
    """A write request to a memory: ``addr``, ``data`` and ``en`` (one bit per write lane)."""
    return wiring.Signature({"addr": Out(addr_bits), "data": Out(data_bits), "en": Out(en_bits)})


class ImageLoader(wiring.Component):
    """Writes one image per ``pixels`` beats into slot ``0, 1, 0, ...`` of the image memory.

    Parameters
    ----------
    in_chw : (C, H, W); in_bits : pixel bits; cols : lanes per word; lane_bits : bits per lane;
    in_signed : the pixels are two's complement (sign-extended to the lane);
    bipolar_code : the pixels are -1/+1 (two's complement) and are stored as their 1-bit code, the
    sign bit (the XNOR array's lanes);
    img_words : words per slot (``C * ceil(H*W / cols)``).

    Attributes
    ----------
    i : In(stream.Signature(unsigned(in_bits)))
        Pixels in (c, y, x) order. ``ready`` while the slot being loaded is free.
    wr : Out(mem_write_signature(addr, cols * lane_bits, cols))
        Pixel ``q`` of channel ``c`` goes to word ``slot*img_words + c*G + q // cols``, lane
        ``q % cols`` (one lane enable per write).
    full : Out(2)
        Slot ``s`` holds a whole image not yet released: high two cycles after the image's last
        pixel handshake (the write is registered, then the flag).
    release : In(2)
        One-cycle pulse: slot ``s`` has been read and may be overwritten.

    Latency: a pixel is written one cycle after its handshake (the write request is a register,
    so nothing outside reaches the memory combinationally); ``full`` rises two cycles after the
    last pixel's handshake.
    """

    def __init__(self, *, in_chw, in_bits: int, cols: int, lane_bits: int, img_words: int, in_signed: bool = False,
                 bipolar_code: bool = False):
        self.in_chw, self.cols, self.lane_bits, self.img_words = tuple(in_chw), cols, lane_bits, img_words
        self.in_signed, self.bipolar_code = in_signed, bipolar_code
        self.addr_bits = bits_for(2 * img_words)
        super().__init__({
            "i": In(stream.Signature(unsigned(in_bits))),
            "wr": Out(mem_write_signature(self.addr_bits, cols * lane_bits, cols)),
            "full": Out(2),
            "release": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        C, LB = self.cols, self.lane_bits
        ch, hgt, wid = self.in_chw
        hw = hgt * wid
        pixels = ch * hw
        slot = Signal()
        q = Signal(range(max(hw, 2)))
        lane = Signal(range(max(C, 2)))
        word = Signal(range(max(2 * self.img_words, 2)))
        count = Signal(range(max(pixels, 2)))
        full = Signal(2)
        pend = Signal(2)
        # the write request is registered (the input's valid/payload may come from a long path
        # outside); a pixel is copied to every lane and only its own lane is enabled: no shifter
        set_ = Signal(2)
        take = self.i.valid & self.i.ready
        wr_addr = Signal(self.addr_bits)
        wr_en = Signal(C)
        wr_data = Signal(C * LB)
        m.d.sync += wr_en.eq(0)
        m.d.comb += [self.wr.addr.eq(wr_addr), self.wr.data.eq(wr_data), self.wr.en.eq(wr_en)]
        lane_px = Signal(LB)
        # zero- or (two's complement pixels) sign-extended to the lane width; bipolar pixels
        # (-1/+1) stored as their code for the XNOR array: the sign bit
        if self.bipolar_code:
            m.d.comb += lane_px.eq(self.i.payload[-1])
        else:
            m.d.comb += lane_px.eq(self.i.payload.as_signed() if self.in_signed else self.i.payload)
        with m.If(take):
            m.d.sync += [wr_addr.eq(word), wr_data.eq(Cat(*[lane_px] * C)),
                         wr_en.eq(Cat(*[lane == k for k in range(C)]))]
            with m.If((q == hw - 1) | (lane == C - 1)):
                m.d.sync += [lane.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
            m.d.sync += q.eq(Mux(q == hw - 1, 0, q + 1))
            with m.If(count == pixels - 1):
                m.d.comb += set_.eq(Mux(slot, 0b10, 0b01))
                m.d.sync += [count.eq(0), q.eq(0), lane.eq(0), slot.eq(~slot),
                             word.eq(Mux(slot, 0, self.img_words))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
        # busy: the slot's image is complete (ready drops at once); full: also written (a cycle
        # later, after the registered last write), which is what the issuer waits for
        busy = Signal(2)
        m.d.sync += [busy.eq((busy & ~self.release) | set_), full.eq((full & ~self.release) | pend)]
        m.d.sync += pend.eq(set_)
        m.d.comb += [self.full.eq(full), self.i.ready.eq(~busy.bit_select(slot, 1))]
        return m
