"""Board top for an FPGA: the accelerator classifies images from an on-chip ROM, LEDs show the result.

``BoardTop`` holds a few test images of an export in block RAM, streams one into the accelerator
(on a button press, or one after another with a pause so that the LEDs can be read), and shows
the result on the board's LEDs:

====== =====================================================================================
LED    meaning
====== =====================================================================================
0..3   the argmax (class) of the last image, binary, LED 0 = LSB
4      the argmax equals the image's label (the classification is right)
5      the logits of *every* image so far equal the integer reference's (sticky; hardware OK)
6      busy (an image is in flight)
7      heartbeat, about 1 Hz (the clock runs)
====== =====================================================================================

The board-independent part (ROM, sequencing, checking) is :class:`ImageRunner`, a
``wiring.Component`` that simulates without a platform. :class:`BoardTop` adds the clock (the
board oscillator, or an ECP5 ``EHXPLLL`` for another frequency), the button synchronizer and the
LEDs. Nothing here imports torch: images, labels and reference logits are plain integers.
"""

from __future__ import annotations

from amaranth import (
    Cat,
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    Signal,
    unsigned,
)
from amaranth.lib import cdc, data, io, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from l1bn.hw.accel_layers import output_layout
from l1bn.hw.arith import CheckedComponent

__all__ = ["ImageRunner", "BoardTop", "ecp5_pll_params", "answer_layout", "LED_MEANINGS"]

LED_MEANINGS = ("argmax bit 0", "argmax bit 1", "argmax bit 2", "argmax bit 3", "argmax == label",
                "logits == reference (all images so far)", "busy", "heartbeat")


def answer_layout(result: data.StructLayout) -> data.StructLayout:
    """One answer ROM word for the accelerator's output beat ``result`` (:func:`output_layout`): the
    image's label (as wide as ``argmax``, low bits) and the reference's ``logits``."""
    return data.StructLayout({"label": result["argmax"].shape, "logits": result["logits"].shape})


def ecp5_pll_params(f_in_mhz: float, f_out_mhz: float) -> dict:
    """Dividers of an ECP5 ``EHXPLLL`` (feedback from CLKOP) for ``f_in`` -> ``f_out``.

    The search of Project Trellis' ``ecppll``: the PFD runs at 3.125..400 MHz, the VCO at
    400..800 MHz; the closest output wins, ties go to the VCO closest to 600 MHz. Returns
    ``clki_div``, ``clkfb_div``, ``clkop_div``, ``f_vco`` and the achieved ``f_out`` (MHz).
    Raises ``ValueError`` when the output is outside 10..400 MHz or off by more than 1 %.
    """
    if not 8 <= f_in_mhz <= 400:
        raise ValueError(f"PLL input {f_in_mhz} MHz is outside 8..400 MHz")
    if not 10 <= f_out_mhz <= 400:
        raise ValueError(f"PLL output {f_out_mhz} MHz is outside 10..400 MHz (ECP5 EHXPLLL)")
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            for clkop_div in range(1, 129):
                f_vco = f_pfd * clkfb_div * clkop_div
                if not 400 <= f_vco <= 800:
                    continue
                f_out = f_pfd * clkfb_div
                key = (abs(f_out - f_out_mhz), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, dict(clki_div=clki_div, clkfb_div=clkfb_div, clkop_div=clkop_div,
                                      f_vco=f_vco, f_out=f_out))
    if best is None or best[0][0] > 0.01 * f_out_mhz:
        raise ValueError(f"no ECP5 PLL setting gives {f_out_mhz} MHz from {f_in_mhz} MHz within 1 %")
    return best[1]


def _check_rom(images, labels, expected, in_bits, logit_bits):
    """Integer lists of the ROM contents; ``ValueError`` naming what does not fit."""
    images = [list(map(int, im)) for im in images]
    labels = [int(v) for v in labels]
    expected = [list(map(int, e)) for e in expected]
    if not images:
        raise ValueError("ImageRunner needs at least one image")
    pixels = len(images[0])
    classes = len(expected[0]) if expected else 0
    if any(len(im) != pixels for im in images) or pixels == 0:
        raise ValueError("all images must have the same, non-zero number of pixels")
    if len(labels) != len(images) or len(expected) != len(images):
        raise ValueError(f"{len(images)} images need as many labels and reference logit rows, "
                         f"got {len(labels)} and {len(expected)}")
    if classes < 2 or any(len(e) != classes for e in expected):
        raise ValueError("every reference logit row must have the same number (>= 2) of classes")
    if any(not 0 <= p < (1 << in_bits) for im in images for p in im):
        raise ValueError(f"a pixel does not fit in unsigned {in_bits} bits")
    lo, hi = -(1 << (logit_bits - 1)), (1 << (logit_bits - 1)) - 1
    if any(not lo <= v <= hi for e in expected for v in e):
        raise ValueError(f"a reference logit does not fit in signed {logit_bits} bits")
    if any(not 0 <= v < classes for v in labels):
        raise ValueError(f"a label is outside 0..{classes - 1}")
    return images, labels, expected


class ImageRunner(CheckedComponent):
    """Streams ROM images into an accelerator and checks every result.

    Parameters
    ----------
    images : sequence of sequence of int
        The images, each ``pixels`` unsigned ``in_bits`` values in stream order.
    labels : sequence of int
        The true class of each image.
    expected : sequence of sequence of int
        The integer reference's logits for each image (``classes`` values).
    in_bits, logit_bits : int
        Pixel and logit widths (those of the accelerator).
    continuous : bool
        Start the next image by itself after ``hold_cycles``; otherwise wait for ``start``.
    hold_cycles : int
        Cycles a result stays shown before the next image may start (also debounces ``start``).

    Members
    -------
    o : ``Out(stream.Signature(unsigned(in_bits)))``
        Pixels to the accelerator, one image per run, ``(c, y, x)`` order.
    i : ``In(stream.Signature(output_layout(classes, logit_bits)))``
        The accelerator's result, one beat per image.
    start : ``In(1)``
        A rising edge starts the next image (button mode).
    argmax, label_ok, ref_ok, all_ok, busy, index, done : ``Out``
        The last result; ``ref_ok``: its logits equal the reference; ``all_ok``: every result
        since reset did; ``index``: the ROM image that runs next; ``done``: one-cycle pulse per result.

    The ROM is read one cycle ahead (``rd.addr`` is the next cycle's address), so a pixel beat
    can be offered on every cycle and stalls cost nothing.
    """

    @classmethod
    def _check_args(cls, *, images, labels, expected, in_bits: int, logit_bits: int,
                    continuous: bool = False, hold_cycles: int = 1):
        _check_rom(images, labels, expected, in_bits, logit_bits)
        if hold_cycles < 1:
            raise ValueError(f"hold_cycles={hold_cycles} must be >= 1")

    def __init__(self, *, images, labels, expected, in_bits: int, logit_bits: int,
                 continuous: bool = False, hold_cycles: int = 1):
        images, labels, expected = _check_rom(images, labels, expected, in_bits, logit_bits)
        pixels, classes = len(images[0]), len(expected[0])
        self.images, self.labels, self.expected = images, labels, expected
        self.pixels, self.classes = pixels, classes
        self.in_bits, self.logit_bits = in_bits, logit_bits
        self.continuous, self.hold_cycles = continuous, hold_cycles
        layout = output_layout(classes, logit_bits)
        self.layout = layout
        super().__init__({
            "o": Out(stream.Signature(unsigned(in_bits))),
            "i": In(stream.Signature(layout)),
            "start": In(1),
            "argmax": Out(layout["argmax"].shape),
            "label_ok": Out(1),
            "ref_ok": Out(1),
            "all_ok": Out(1, init=1),
            "busy": Out(1),
            "index": Out(range(len(images))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, px = len(self.images), self.pixels
        # one answer word per image: label (low bits) then the reference logits
        alay = answer_layout(self.layout)
        answers = [alay.const({"label": lab, "logits": e}).as_bits()
                   for lab, e in zip(self.labels, self.expected, strict=True)]
        m.submodules.pix_rom = pix_rom = Memory(shape=unsigned(self.in_bits), depth=n * px,
                                                init=[p for im in self.images for p in im])
        m.submodules.ans_rom = ans_rom = Memory(shape=unsigned(alay.size), depth=n, init=answers)
        rd = pix_rom.read_port()
        ans = ans_rom.read_port()
        answer = data.View(alay, ans.data)

        addr = Signal(range(n * px))            # address of the pixel read next (a register)
        base = Signal.like(addr)                # first pixel of image `index`
        pix = Signal(range(px))
        hold = Signal(range(self.hold_cycles + 1))
        start_q = Signal()
        m.d.sync += start_q.eq(self.start)
        # the ROM address is a register, never a function of o.ready: one pixel per two cycles
        # (LOAD, STREAM), far faster than the accelerator takes an image
        m.d.comb += [
            rd.addr.eq(addr),
            ans.addr.eq(self.index),
            self.o.payload.eq(rd.data),
        ]
        m.d.sync += self.done.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                go = Const(1) if self.continuous else (self.start & ~start_q)
                with m.If(go & (hold == 0)):
                    m.d.sync += [addr.eq(base), pix.eq(0), self.busy.eq(1)]
                    m.next = "LOAD"
                with m.Elif(hold != 0):
                    m.d.sync += hold.eq(hold - 1)
            with m.State("LOAD"):               # rd.data becomes mem[addr]
                m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += [addr.eq(addr + 1), pix.eq(pix + 1)]
                    with m.If(pix == px - 1):
                        m.next = "WAIT"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("WAIT"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    logits = self.i.payload.logits.as_value()
                    ref = answer.logits.as_value()
                    same = logits == ref
                    m.d.sync += [
                        self.argmax.eq(self.i.payload.argmax),
                        self.label_ok.eq(self.i.payload.argmax == answer.label),
                        self.ref_ok.eq(same),
                        self.all_ok.eq(self.all_ok & same),
                        self.busy.eq(0),
                        self.done.eq(1),
                        hold.eq(self.hold_cycles - 1),
                        pix.eq(0),
                    ]
                    # the next image: index and base advance (wrap after the last one)
                    with m.If(self.index == n - 1):
                        m.d.sync += [self.index.eq(0), base.eq(0)]
                    with m.Else():
                        m.d.sync += [self.index.eq(self.index + 1), base.eq(base + px)]
                    m.next = "SHOW"
            with m.State("SHOW"):               # ans.data follows the new index; nothing to do
                m.next = "IDLE"
        return m


class BoardTop(Elaboratable):
    """The top of a board build: clock, accelerator, :class:`ImageRunner`, button and LEDs.

    Parameters
    ----------
    accelerator : wiring.Component
        Has ``i: In(stream.Signature(unsigned(in_bits)))`` and ``o: Out(stream.Signature(
        StructLayout({"logits": ArrayLayout(signed(logit_bits), classes), "argmax": ...})))``.
    images, labels, expected :
        As for :class:`ImageRunner` (the reference logits are checked on the board).
    clock_mhz : float or None
        The ``sync`` clock. None or the board oscillator's frequency: the oscillator drives it
        directly; otherwise an ``EHXPLLL`` makes it (ECP5 only) and holds reset until lock.
    continuous : bool
        Classify the images one after another (a result is shown for ``show_ms``); otherwise
        button 0 starts the next image. Boards without a button always run continuously.
    show_ms : float
        How long a result stays on the LEDs before the next image may start (also the button
        debounce time).
    """

    def __init__(self, accelerator, *, images, labels, expected, clock_mhz: float | None = None,
                 continuous: bool = False, show_ms: float = 500.0):
        sig = accelerator.signature.members
        if "i" not in sig or "o" not in sig:
            raise ValueError("the accelerator must have stream members `i` and `o`")
        self.accelerator = accelerator
        self.in_bits = len(accelerator.i.payload)
        layout = accelerator.o.payload.shape()
        logits = layout["logits"].shape
        self.logit_bits = logits.elem_shape.width
        self.classes = logits.length
        self.images, self.labels, self.expected = images, labels, expected
        self.clock_mhz = clock_mhz
        self.continuous = continuous
        self.show_ms = show_ms
        self.pll = None          # the dividers, filled in by elaborate() when a PLL is used

    def _clock(self, m, platform) -> float:
        """Make the ``sync`` domain; return its frequency in MHz."""
        f_osc = platform.default_clk_frequency / 1e6
        if self.clock_mhz is None or abs(self.clock_mhz - f_osc) < 1e-6:
            return f_osc                 # the platform's own sync domain: oscillator + reset sync
        if getattr(platform, "family", None) != "ecp5":
            raise ValueError(f"a clock other than the {f_osc:g} MHz oscillator needs an ECP5 PLL")
        p = ecp5_pll_params(f_osc, self.clock_mhz)
        self.pll = p
        clk_io = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        clk = Signal()
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{f_osc:g}", a_FREQUENCY_PIN_CLKOP=f"{p['f_out']:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["clki_div"], p_CLKOP_DIV=p["clkop_div"], p_CLKOP_CPHASE=p["clkop_div"] - 1,
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["clkfb_div"],
            i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, o_CLKOP=clk, i_CLKFB=clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        platform.add_clock_constraint(clk, p["f_out"] * 1e6)
        m.submodules.reset_sync = cdc.ResetSynchronizer(~locked, domain="sync")
        return p["f_out"]

    def elaborate(self, platform):
        m = Module()
        f_mhz = self._clock(m, platform)
        leds = []
        for k in range(len(LED_MEANINGS)):
            try:
                leds.append(platform.request("led", k, dir="-"))
            except Exception:  # ResourceError: the board has fewer LEDs
                break
        button = None
        if not self.continuous:
            try:
                button = platform.request("button", 0, dir="-")
            except Exception:
                button = None
        hold = max(1, round(self.show_ms * 1e-3 * f_mhz * 1e6))
        m.submodules.accel = accel = self.accelerator
        m.submodules.runner = runner = ImageRunner(
            images=self.images, labels=self.labels, expected=self.expected, in_bits=self.in_bits,
            logit_bits=self.logit_bits, continuous=button is None, hold_cycles=hold)
        # pixels through a 2-deep buffered FIFO: the runner's ROM read and its handshake logic
        # would otherwise be one combinational path into the accelerator's input register
        m.submodules.pix_fifo = pix_fifo = SyncFIFOBuffered(width=self.in_bits, depth=2)
        wiring.connect(m, runner.o, pix_fifo.w_stream)
        wiring.connect(m, pix_fifo.r_stream, accel.i)
        wiring.connect(m, accel.o, runner.i)

        if button is not None:
            m.submodules.btn_buf = btn = io.Buffer("i", button)
            m.submodules.btn_sync = cdc.FFSynchronizer(btn.i, runner.start)
        beat = Signal(max(1, round(f_mhz * 1e6 / 2)).bit_length())  # toggles at about 1 Hz
        beat_led = Signal()
        with m.If(beat == 0):
            m.d.sync += [beat.eq(round(f_mhz * 1e6 / 2) - 1), beat_led.eq(~beat_led)]
        with m.Else():
            m.d.sync += beat.eq(beat - 1)
        argmax4 = Cat(runner.argmax, Const(0, 4))[:4]
        values = Cat(argmax4, runner.label_ok, runner.all_ok, runner.busy, beat_led)
        for k, led in enumerate(leds):
            m.submodules[f"led_buf{k}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(values[k])
        return m
