"""Cologne Chip GateMate: ``synth_gatemate``, yowasp-nextpnr-himbaechel-gatemate.

The fabric is made of CPEs (CCGM1A1: 20,480), each with two LUT trees (``CPE_LT`` in nextpnr, one
4-input function each, or together an 8-input one) and two flip-flops, so the LUT4-equivalent
area is the ``CPE_LT`` sites placed (40,960 on the CCGM1A1) plus two per CPE in adder or
multiplier mode (``CPE_ADDF``, ``CPE_ADDF2``, ``CPE_MULT``: after placement nextpnr turns the two
LUT-tree cells of such a CPE into one; its packing table, printed before, counts them as two
``CPE_LT``: 10,092 = 8,044 + 2 x 1,024 on the 8x8 MAC array). ``CPE_COMP`` (a comparator CPE)
has a bel type of its own and is not counted. There are no hard multipliers: a multiply is either ``CC_MULT`` (the CPE
array's multiplier mode, the default of ``synth_gatemate``) or, with ``-nomult``, LUT trees and
``CC_ADDF`` adders; the DSP switch of the flow chooses between the two, and both cost CPEs.
Synthesis uses ``-luttree -nomx8`` (the mapping that nextpnr's GateMate back end places). Pins
are left to nextpnr (``allow-unconstrained``).

Flow note: yowasp-nextpnr-himbaechel-gatemate 0.11.1 dies (WebAssembly out-of-bounds memory
access) in its post-route step "Update configuration based on routing" on designs of a few
thousand CPEs (a BN unit at width 8), after routing, with and without ``no-bridges``; with
``no-bridges`` and ``no-cpe-cp`` (no routing through CPEs, no CP-line pass-through) it finishes,
at the same Fmax within 1 % on the design where both ran to the timing report (47.5 against
47.2 / 47.6 MHz), so the flow always passes both.
"""

from __future__ import annotations

from .base import Device, Family

__all__ = ["FAMILY"]


class GateMate(Family):
    name = "gatemate"
    title = "Cologne Chip GateMate"
    pnr_dist = "yowasp-nextpnr-himbaechel-gatemate"
    pnr_module = "yowasp_nextpnr_himbaechel_gatemate"
    pnr_function = "run_nextpnr_himbaechel_gatemate"
    dsp_cell = "CC_MULT (CPE multiplier mode)"
    site_bels = ("CPE_LT", "CPE_ADDF", "CPE_ADDF2", "CPE_MULT")
    # one cell for both LUT trees of a CPE in adder or multiplier mode (see above)
    site_weights = {"CPE_ADDF": 2, "CPE_ADDF2": 2, "CPE_MULT": 2}
    units = (("lut", "LUT trees"), ("carry", "CC_ADDF"), ("mult", "CC_MULT"), ("ff", "FF"), ("bram", "BRAM 20K"))
    devices = (
        Device("CCGM1A1", ("--device", "CCGM1A1"), lut=40960, ff=40960, dsp=0, bram=64,
               board="GateMate A1 Evaluation Board"),
    )

    def default_dsp(self, device):
        return True    # CC_MULT is CPEs, not a separate block: synth_gatemate's default

    def check_dsp(self, device, dsp):
        return None

    def synth_script(self, device, dsp):
        return "synth_gatemate -top top -luttree -nomx8" + ("" if dsp else " -nomult")

    def counts(self, cells):
        def n(pred):
            return sum(v for k, v in cells.items() if pred(k))

        l2t4, l2t5 = cells.get("CC_L2T4", 0), cells.get("CC_L2T5", 0)
        small = n(lambda k: k in ("CC_LUT1", "CC_LUT2", "CC_LUT3", "CC_LUT4"))
        addf = cells.get("CC_ADDF", 0)
        return {"lut": l2t4 + l2t5 + small, "carry": addf, "mult": cells.get("CC_MULT", 0),
                "ff": n(lambda k: k in ("CC_DFF", "CC_DLT")), "dsp": 0,
                "bram": cells.get("CC_BRAM_20K", 0) + 2 * cells.get("CC_BRAM_40K", 0),
                # a tree holds one function: an L2T4 or a small LUT; an L2T5 takes both trees of a
                # CPE; an adder bit takes one (two share a CPE as CPE_ADDF2)
                "lut_sites": l2t4 + 2 * l2t5 + small + addf,
                "lut_site_parts": {"CC_L2T4": l2t4, "in CC_L2T5": 2 * l2t5, "CC_LUT1-4": small, "CC_ADDF": addf}}

    def pnr_args(self, device, *, seed, freq_mhz):
        return super().pnr_args(device, seed=seed, freq_mhz=freq_mhz) + [
            "--vopt", "allow-unconstrained", "--vopt", "no-bridges", "--vopt", "no-cpe-cp"]


FAMILY = GateMate()
