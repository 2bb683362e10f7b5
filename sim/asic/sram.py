"""SRAM macros in the ASIC flow: memories above :data:`SRAM_MIN_BITS` are taken out of the
synthesized flip-flops and modelled as macros with a documented per-access energy, area,
leakage and timing (the ``sram`` option of the ASIC step, :mod:`l1bn.sim.asic.step`).

How a memory is recognized: the Amaranth generators keep their buffers in
``amaranth.lib.memory.Memory`` (the BN unit's three x buffers, ``hw/bn_unit.py``); Yosys infers
one ``$mem_v2`` cell per memory (``synth -run :fine``: ``memory -nomap`` keeps it whole).
:func:`extract_srams` replaces every ``$mem_v2`` of at least :data:`SRAM_MIN_BITS` bits whose
ports are all synchronous on one rising clock, without transparency, resets or a non-zero init, by
an instance of a black-box macro ``L1BN_SRAM_<width>x<depth>_<r>r<w>w`` (one pin per bit: ``CLK``;
per read port ``R<i>E``, ``R<i>A<k>``, ``R<i>Q<k>``; per write port ``W<j>E``, ``W<j>A<k>``,
``W<j>D<k>``) named after the memory; the rest of synthesis then never sees it. Smaller memories
and those with other port kinds stay flip-flops.

The macro model (all per macro, W = word width in bits, D = depth in words, B = W x D bits):

energy per access (read or write of one word), from Horowitz (ISSCC 2014, "Computing's energy
    problem", 45 nm, 0.9 V): an 8 KB SRAM costs 10 pJ per 64-bit read (and 32 KB 20 pJ, 1 MB
    100 pJ: about the square root of the capacity, the bit line and word line lengths). Scaled
    linearly in the word width and with the square root of the capacity:
    ``E = 10 pJ * (W / 64) * sqrt(B / 65536)``; a write is charged as a read (Horowitz gives
    reads). Horowitz's figure is at 0.9 V and is *not* rescaled to the library's 1.1 V (it would
    be 1.49x more). Below his smallest point (8 KB) this is an extrapolation: a 64 x 8 buffer
    (512 bits) is 128x smaller, where the periphery (decoders, sense amplifiers) that does not
    shrink with the array dominates, so the figure is a lower bound there.
area, leakage and timing, from OpenROAD's ``fakeram45_64x32`` (OpenROAD-flow-scripts,
    ``flow/platforms/nangate45/lib/fakeram45_64x32.lib``, the NanGate45 platform's SRAM model,
    generated with CACTI at 45 nm): 1240.624 um^2 and 81627.2 nW leakage for 2048 bits, scaled
    linearly with B (0.606 um^2 per bit: the 6T cell of a 45 nm process is about 0.35 um^2, the
    rest is periphery); clock to read data 0.207 ns, setup of every input 0.050 ns; input pins
    5 fF, the clock pin 25 fF (charged in the clock energy).

The gate-level simulation uses a behavioural model of each macro type (:func:`sram_models`) that
counts the accesses of every instance (a read: a rising clock edge with ``R<i>E`` high; a write:
with ``W<j>E`` high) and writes them to ``sram.txt`` when the simulation ends
(:func:`read_counts`).
"""

from __future__ import annotations

import math
import re

__all__ = ["SRAM_MIN_BITS", "SRAM_PJ_REF", "SRAM_BITS_REF", "SRAM_WORD_REF", "FAKERAM_BITS", "FAKERAM_AREA_UM2",
           "FAKERAM_LEAKAGE_NW", "FAKERAM_CLK_Q_NS", "FAKERAM_SETUP_NS", "sram_params", "access_pj",
           "macro_type", "parse_type", "type_options", "macro_cell", "cells_with_macros", "extract_srams", "sram_models",
           "sram_liberty", "read_counts"]

#: memories of at least this many bits become SRAM macros (a 64 x 8 x buffer is 512 bits; below
#: 256 bits a register file of flip-flops or latches is the usual choice)
SRAM_MIN_BITS = 256

#: Horowitz (ISSCC 2014): 10 pJ per 64-bit read of an 8 KB SRAM (45 nm)
SRAM_PJ_REF, SRAM_WORD_REF, SRAM_BITS_REF = 10.0, 64, 8 * 1024 * 8

#: OpenROAD fakeram45_64x32 (NanGate45 platform): bits, area, leakage, clock-to-Q, setup
FAKERAM_BITS, FAKERAM_AREA_UM2, FAKERAM_LEAKAGE_NW = 64 * 32, 1240.624, 81627.2
FAKERAM_CLK_Q_NS, FAKERAM_SETUP_NS = 0.207, 0.050
FAKERAM_PIN_FF, FAKERAM_CLK_FF = 5.0, 25.0

_TYPE = re.compile(r"^L1BN_SRAM_(\d+)x(\d+)_(\d+)r(\d+)w(?:_m(\d+))?(_t)?$")


def sram_params() -> dict:
    """What the SRAM model adds to an ASIC step's cache key."""
    return {"min_bits": SRAM_MIN_BITS, "pj_ref": SRAM_PJ_REF, "word_ref": SRAM_WORD_REF, "bits_ref": SRAM_BITS_REF,
            "fakeram": [FAKERAM_BITS, FAKERAM_AREA_UM2, FAKERAM_LEAKAGE_NW, FAKERAM_CLK_Q_NS, FAKERAM_SETUP_NS,
                        FAKERAM_PIN_FF, FAKERAM_CLK_FF]}


def access_pj(width: int, depth: int) -> float:
    """Energy (pJ) of one read or write of a ``width``-bit word in a ``width x depth`` macro."""
    return SRAM_PJ_REF * (width / SRAM_WORD_REF) * math.sqrt(width * depth / SRAM_BITS_REF)


def macro_type(width: int, depth: int, nread: int, nwrite: int, *, mask: int = 1, transparent: bool = False) -> str:
    """The macro type's name; ``mask`` > 1: that many write-enable groups (lanes) per write port
    (suffix ``_m<mask>``); ``transparent``: a read of the address being written returns the new
    word (suffix ``_t``). The units' buffers have neither (the training accelerator has both)."""
    return (f"L1BN_SRAM_{width}x{depth}_{nread}r{nwrite}w" + (f"_m{mask}" if mask > 1 else "")
            + ("_t" if transparent else ""))


def parse_type(name: str):
    """``(width, depth, nread, nwrite)`` of a macro type name, or None for any other cell
    (:func:`type_options` gives the mask groups and the transparency)."""
    m = _TYPE.match(name)
    return tuple(int(x) for x in m.groups()[:4]) if m else None


def type_options(name: str) -> tuple[int, bool]:
    """``(mask groups, transparent)`` of a macro type name (1, False for the units' buffers)."""
    m = _TYPE.match(name)
    return (int(m.group(5) or 1), bool(m.group(6)))


def _abits(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def _pins(width, depth, nread, nwrite, mask=1):
    a = _abits(depth)
    ins, outs = ["CLK"], []
    for i in range(nread):
        ins += [f"R{i}E", *(f"R{i}A{k}" for k in range(a))]
        outs += [f"R{i}Q{k}" for k in range(width)]
    for j in range(nwrite):
        en = [f"W{j}E"] if mask == 1 else [f"W{j}E{g}" for g in range(mask)]
        ins += [*en, *(f"W{j}A{k}" for k in range(a)), *(f"W{j}D{k}" for k in range(width))]
    return ins, outs


def macro_cell(name: str) -> dict:
    """The macro ``name`` as a cell of :func:`~l1bn.sim.asic.liberty.read_liberty` (area, leakage,
    pins with capacitance; no internal-power tables: its energy is per access)."""
    w, d, r, wr = parse_type(name)
    bits = w * d
    ins, outs = _pins(w, d, r, wr, type_options(name)[0])
    pins = {p: {"dir": "input", "cap": FAKERAM_CLK_FF if p == "CLK" else FAKERAM_PIN_FF, "function": None,
                "clock": p == "CLK", "gate_role": None, "power": [], "transition": []} for p in ins}
    pins.update({p: {"dir": "output", "cap": 0.0, "function": None, "clock": False, "gate_role": None,
                     "power": [], "transition": []} for p in outs})
    return {"area": FAKERAM_AREA_UM2 * bits / FAKERAM_BITS, "leakage_nw": FAKERAM_LEAKAGE_NW * bits / FAKERAM_BITS,
            "pins": pins, "ff": None, "dont_use": False, "icg": None, "sram": {"width": w, "depth": d, "reads": r,
                                                                             "writes": wr}}


def cells_with_macros(cells: dict, types) -> dict:
    """``cells`` (the library's) plus the macro cells among ``types``."""
    extra = {t: macro_cell(t) for t in types if t not in cells and parse_type(t)}
    return {**cells, **extra} if extra else cells


def _int(v) -> int:
    return int(v, 2) if isinstance(v, str) else int(v)


def _bits(v: str) -> str:
    return v if isinstance(v, str) else format(v, "b")


def _eligible(c: dict, *, init: bool = False, transparent: bool = False, masked: bool = False) -> bool:
    """Whether the ``$mem_v2`` ``c`` can be a macro (module docstring); ``init``: non-zero initial
    contents allowed (the model loads them), ``transparent``: a 1r1w memory whose read port is
    transparent for its write port, ``masked``: lane-masked writes (equal lanes)."""
    p, k = c["parameters"], c["connections"]
    nr, nw = _int(p["RD_PORTS"]), _int(p["WR_PORTS"])
    if nr < 1 or nw < 1 or _int(p["OFFSET"]) != 0:
        return False
    ones = lambda s, n: _bits(s).rjust(n, "0")[-n:] == "1" * n   # noqa: E731
    zeros = lambda s, n: set(_bits(s).rjust(n, "0")[-n:]) <= {"0"}   # noqa: E731
    if not (ones(p["RD_CLK_ENABLE"], nr) and ones(p["RD_CLK_POLARITY"], nr) and ones(p["WR_CLK_ENABLE"], nw)
            and ones(p["WR_CLK_POLARITY"], nw)
            and zeros(p["RD_WIDE_CONTINUATION"], nr) and zeros(p["WR_WIDE_CONTINUATION"], nw)):
        return False
    if not zeros(p["RD_TRANSPARENCY_MASK"], nr * nw) and not (transparent and nr == nw == 1):
        return False
    if not init and set(_bits(p.get("INIT", "x"))) - {"x", "0"}:   # zero or no init (Amaranth's init=[]: zeros)
        return False
    if any(b != "0" for b in k["RD_ARST"] + k["RD_SRST"]):
        return False
    clocks = set(map(str, k["RD_CLK"] + k["WR_CLK"]))
    if len(clocks) != 1:
        return False
    return _mask_groups(c) == 1 or (masked and _mask_groups(c) > 1)


def _mask_groups(c: dict) -> int:
    """Write-enable groups per write port: 1 when one enable drives the whole word, g when the
    word splits into g equal lanes of one enable each (every write port alike), else 0."""
    p, k = c["parameters"], c["connections"]
    width, nw, en = _int(p["WIDTH"]), _int(p["WR_PORTS"]), k["WR_EN"]
    groups = set()
    for j in range(nw):
        bits = list(map(str, en[j * width:(j + 1) * width]))
        runs = [i for i in range(width) if i == 0 or bits[i] != bits[i - 1]]
        g = len(runs)
        if width % g or any(len(set(bits[i:i + width // g])) != 1 for i in range(0, width, width // g)):
            return 0
        groups.add(g)
    return groups.pop() if len(groups) == 1 else 0


def extract_srams(design: dict, *, min_bits: int = SRAM_MIN_BITS, init: bool = False, transparent: bool = False,
                  masked: bool = False) -> list[dict]:
    """Replace, in the Yosys JSON ``design`` (after ``synth -run :fine``), every eligible
    ``$mem_v2`` of at least ``min_bits`` bits by a macro instance, in place, and add the macro
    types as black-box modules. Returns one dict per macro: ``module``, ``cell`` (the instance
    name, the memory's), ``type``, ``width``, ``depth``, ``reads``, ``writes`` (port counts), and
    ``init`` (the initial words, LSB word first, when the memory has non-zero ones).

    ``init``, ``transparent``, ``masked`` (all off for the BN units, whose buffers need none)
    also take memories with initial contents (a preloaded macro: the gate-level model loads
    them), a transparent read port (1r1w) and lane-masked writes (a bit-masked macro; a write of
    any lanes is charged one access): the training accelerator's weight memories and LFSR bank."""
    found, types = [], {}
    for mname, mod in design["modules"].items():
        for cname, c in list(mod["cells"].items()):
            if c["type"] != "$mem_v2":
                continue
            p, k = c["parameters"], c["connections"]
            width, depth = _int(p["WIDTH"]), _int(p["SIZE"])
            if width * depth < min_bits or not _eligible(c, init=init, transparent=transparent, masked=masked):
                continue
            nr, nw, ab = _int(p["RD_PORTS"]), _int(p["WR_PORTS"]), _int(p["ABITS"])
            a = _abits(depth)
            mask = _mask_groups(c)
            t = macro_type(width, depth, nr, nw, mask=mask,
                           transparent=not set(_bits(p["RD_TRANSPARENCY_MASK"])) <= {"0"})
            conns = {"CLK": [k["RD_CLK"][0]]}
            for i in range(nr):
                conns[f"R{i}E"] = [k["RD_EN"][i]]
                for b in range(a):
                    conns[f"R{i}A{b}"] = [k["RD_ADDR"][i * ab + b] if b < ab else "0"]
                for b in range(width):
                    conns[f"R{i}Q{b}"] = [k["RD_DATA"][i * width + b]]
            for j in range(nw):
                if mask == 1:
                    conns[f"W{j}E"] = [k["WR_EN"][j * width]]
                for g in range(mask if mask > 1 else 0):
                    conns[f"W{j}E{g}"] = [k["WR_EN"][j * width + g * (width // mask)]]
                for b in range(a):
                    conns[f"W{j}A{b}"] = [k["WR_ADDR"][j * ab + b] if b < ab else "0"]
                for b in range(width):
                    conns[f"W{j}D{b}"] = [k["WR_DATA"][j * width + b]]
            ins, outs = _pins(width, depth, nr, nw, mask)
            inst = "sram_" + p["MEMID"].lstrip("\\$").replace(".", "_").replace("$", "_").replace(":", "_")
            del mod["cells"][cname]
            mod["cells"][f"\\{inst}"] = {"hide_name": 0, "type": t, "parameters": {}, "attributes": {},
                                         "port_directions": {**dict.fromkeys(ins, "input"),
                                                             **dict.fromkeys(outs, "output")},
                                         "connections": conns}
            types[t] = (ins, outs)
            found.append({"module": mname, "cell": inst, "type": t, "width": width, "depth": depth,
                          "reads": nr, "writes": nw})
            words = _init_words(p.get("INIT"), width, depth)
            if words:
                found[-1]["init"] = words
    for t, (ins, outs) in types.items():
        ports, n = {}, 2
        for pn in ins + outs:
            ports[pn] = {"direction": "input" if pn in ins else "output", "bits": [n]}
            n += 1
        design["modules"][t] = {"attributes": {"blackbox": "00000000000000000000000000000001"},
                                "ports": ports, "cells": {}, "netnames": {}}
    return found


def _init_words(v, width: int, depth: int) -> list[int] | None:
    """The initial words of a ``$mem_v2`` INIT parameter (bit string, word 0 in the low bits), or
    None when it is all zero or undefined."""
    if v is None:
        return None
    bits = _bits(v).replace("x", "0").rjust(width * depth, "0")
    if "1" not in bits:
        return None
    n = int(bits, 2)
    mask = (1 << width) - 1
    return [(n >> (i * width)) & mask for i in range(depth)]


def sram_models(types, *, init_param: bool = False) -> str:
    """Behavioural Verilog of the macro types ``types`` for the gate-level simulation: synchronous
    reads (data registered at the rising clock when ``R<i>E``, old data on a same-address write),
    writes at the rising clock when ``W<j>E`` (a masked type: when any ``W<j>E<g>``, only those
    lanes; a transparent type: a read of the address written in the same edge returns the new
    word); the read data starts at 0 like the flow's flip-flops; each instance appends ``<path>
    <reads> <writes>`` to ``sram.txt`` at the end. ``init_param``: each model has a parameter
    ``INIT_FILE`` (``$readmemh`` of the initial words when not empty; set by ``defparam``)."""
    out = []
    for t in sorted(types):
        w, d, nr, nw = parse_type(t)
        mask, transp = type_options(t)
        a = _abits(d)
        ins, outs = _pins(w, d, nr, nw, mask)
        lines = [f"module {t}({', '.join(ins + outs)});"]
        lines += [f"  input {p};" for p in ins] + [f"  output {p};" for p in outs]
        lines += [f"  reg [{w - 1}:0] mem [0:{d - 1}];", "  integer reads = 0, writes = 0, fd, k;",
                  f"  initial for (k = 0; k < {d}; k = k + 1) mem[k] = {w}'d0;   // as the memory's zero init"]
        if init_param:
            lines += ['  parameter INIT_FILE = "";', '  initial if (INIT_FILE != "") $readmemh(INIT_FILE, mem);']
        body = []
        lw = w // mask
        for j in range(nw):
            lines += [f"  wire [{a - 1}:0] wa{j} = {{{', '.join(f'W{j}A{k}' for k in reversed(range(a)))}}};",
                      f"  wire [{w - 1}:0] wd{j} = {{{', '.join(f'W{j}D{k}' for k in reversed(range(w)))}}};"]
            if mask == 1:
                lines.append(f"  wire we{j} = W{j}E;")
                lines.append(f"  wire [{w - 1}:0] nw{j} = wd{j};")
            else:
                lines.append(f"  wire we{j} = {' | '.join(f'W{j}E{g}' for g in range(mask))};")
                lanes = ", ".join(f"(W{j}E{g} ? wd{j}[{(g + 1) * lw - 1}:{g * lw}] : mem[wa{j}][{(g + 1) * lw - 1}:{g * lw}])"
                                  for g in reversed(range(mask)))
                lines.append(f"  wire [{w - 1}:0] nw{j} = {{{lanes}}};")
        for i in range(nr):
            lines += [f"  reg [{w - 1}:0] q{i} = {w}'d0;",
                      f"  wire [{a - 1}:0] ra{i} = {{{', '.join(f'R{i}A{k}' for k in reversed(range(a)))}}};"]
            lines += [f"  assign R{i}Q{k} = q{i}[{k}];" for k in range(w)]
            rd = f"(we0 && wa0 == ra{i}) ? nw0 : mem[ra{i}]" if transp else f"mem[ra{i}]"
            body.append(f"    if (R{i}E) begin q{i} <= {rd}; reads = reads + 1; end")
        for j in range(nw):
            body.append(f"    if (we{j}) begin mem[wa{j}] <= nw{j}; writes = writes + 1; end")
        lines += ["  always @(posedge CLK) begin", *body, "  end",
                  '  final begin fd = $fopen("sram.txt", "a"); $fdisplay(fd, "%m %0d %0d", reads, writes); '
                  "$fclose(fd); end", "endmodule"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def sram_liberty(types) -> str:
    """A Liberty library of the macro types ``types`` for OpenSTA: area, leakage, pin
    capacitances, clock-to-data arcs and setup checks (the fakeram45_64x32 figures)."""
    cells = []
    for t in sorted(types):
        w, d, nr, nw = parse_type(t)
        ins, outs = _pins(w, d, nr, nw, type_options(t)[0])
        c = macro_cell(t)
        body = [f"  cell({t}) {{", f"    area : {c['area']:.4f};", f"    cell_leakage_power : {c['leakage_nw']:.4f};",
                "    interface_timing : true;",
                f"    pin(CLK) {{ direction : input; capacitance : {FAKERAM_CLK_FF}; clock : true; }}"]
        for p in ins[1:]:
            body.append(
                f"    pin({p}) {{ direction : input; capacitance : {FAKERAM_PIN_FF};\n"
                f"      timing() {{ related_pin : \"CLK\"; timing_type : setup_rising;\n"
                f"        rise_constraint(scalar) {{ values(\"{FAKERAM_SETUP_NS}\"); }}\n"
                f"        fall_constraint(scalar) {{ values(\"{FAKERAM_SETUP_NS}\"); }} }} }}")
        for p in outs:
            body.append(
                f"    pin({p}) {{ direction : output;\n"
                f"      timing() {{ related_pin : \"CLK\"; timing_type : rising_edge;\n"
                f"        cell_rise(scalar) {{ values(\"{FAKERAM_CLK_Q_NS}\"); }}\n"
                f"        cell_fall(scalar) {{ values(\"{FAKERAM_CLK_Q_NS}\"); }}\n"
                f"        rise_transition(sram_slew) {{ index_1(\"5, 500\"); values(\"0.009, 0.227\"); }}\n"
                f"        fall_transition(sram_slew) {{ index_1(\"5, 500\"); values(\"0.009, 0.227\"); }} }} }}")
        body.append("  }")
        cells.append("\n".join(body))
    head = """library(l1bn_sram) {
  delay_model : table_lookup;
  time_unit : "1ns"; voltage_unit : "1V"; current_unit : "1uA"; leakage_power_unit : "1nW";
  capacitive_load_unit (1,ff); pulling_resistance_unit : "1kohm";
  nom_process : 1; nom_temperature : 25; nom_voltage : 1.1;
  input_threshold_pct_rise : 50; input_threshold_pct_fall : 50;
  output_threshold_pct_rise : 50; output_threshold_pct_fall : 50;
  slew_lower_threshold_pct_rise : 20; slew_upper_threshold_pct_rise : 80;
  slew_lower_threshold_pct_fall : 20; slew_upper_threshold_pct_fall : 80;
  lu_table_template(sram_slew) { variable_1 : total_output_net_capacitance; index_1 ("5, 500"); }
"""
    return head + "\n".join(cells) + "\n}\n"


def read_counts(path) -> dict:
    """``{instance name: (reads, writes)}`` from the ``sram.txt`` the models wrote (``tb.dut.X``
    -> ``X``)."""
    out = {}
    for line in path.read_text().splitlines():
        name, r, w = line.rsplit(None, 2)
        name = name.split("tb.dut.", 1)[-1].lstrip("\\").strip()
        out[name] = (int(r), int(w))
    return out
