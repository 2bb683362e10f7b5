"""ECP5 block RAMs with their output registers: a pass over Yosys' JSON netlist.

Yosys 0.70 maps memories to DP16KD with ``REGMODE_A/B = "NOREG"`` only (its
``share/lattice/brams_16kd.txt`` has no option for the output register), so a register right
after a block RAM stays a fabric flip-flop and the path into it starts with the block RAM's full
clock-to-output. :func:`absorb_bram_outregs` moves such registers into the DP16KD
(``REGMODE_x = "OUTREG"``, ``OCEx`` = the register's clock enable), which is the same circuit:
with ``NOREG`` the port's word changes at each edge with ``CEx``; the output register takes that
word at each edge with ``OCEx``, as the flip-flop did at each edge with its ``CE``.

A port's registers are moved only when every used data output of the port drives exactly one
thing, the ``DI`` of a ``TRELLIS_FF`` that has the port's clock, no set/reset (``LSR`` tied to 0,
``GSR`` disabled, reset value 0), and one clock enable shared by all of them (or none). The
36-bit pseudo-dual-port mode (``DATA_WIDTH_B = 36``, whose data leave on both ports' pins) is left
as it is. Generators produce that shape with :class:`l1bn.hw.bram.BankedMemory`.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["absorb_bram_outregs"]


def _param(v):
    """A Yosys JSON parameter: an int from its binary string, else the string without padding."""
    if isinstance(v, str) and v and set(v) <= {"0", "1"} and len(v) >= 8:
        return int(v, 2)
    return v.strip() if isinstance(v, str) else v


def absorb_bram_outregs(netlist: dict, top: str = "top") -> dict:
    """Move the flip-flops after DP16KD read ports into the block RAMs' output registers, in
    place. Returns ``{"ports": ports changed, "ffs": flip-flops removed}``."""
    mod = netlist["modules"][top]
    cells = mod["cells"]
    sinks = defaultdict(list)
    for name, c in cells.items():
        dirs = c.get("port_directions", {})
        for port, bits in c["connections"].items():
            if dirs.get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        sinks[b].append((name, port))
    for pname, p in mod.get("ports", {}).items():
        if p["direction"] != "input":
            for b in p["bits"]:
                if isinstance(b, int):
                    sinks[b].append(("", pname))

    ports = ffs = 0
    for c in [c for c in cells.values() if c["type"] == "DP16KD"]:
        prm, con = c["parameters"], c["connections"]
        if 36 in (_param(prm.get("DATA_WIDTH_A", 18)), _param(prm.get("DATA_WIDTH_B", 18))):
            continue
        for x in "AB":
            regs = _port_regs(c, x, cells, sinks)
            if not regs:
                continue
            ce = regs[0][1]
            prm[f"REGMODE_{x}"] = "OUTREG"
            con[f"OCE{x}"] = ce
            for pin, _, ffname in regs:
                con[pin] = cells[ffname]["connections"]["Q"]
                del cells[ffname]
            ports += 1
            ffs += len(regs)
    return {"ports": ports, "ffs": ffs}


def _port_regs(c: dict, x: str, cells: dict, sinks: dict) -> list | None:
    """``[(DO pin, clock enable bits, flip-flop name)]`` for port ``x`` of DP16KD ``c`` when all
    of its used outputs feed plain registers with one clock enable; None otherwise."""
    prm, con = c["parameters"], c["connections"]
    if (_param(prm.get(f"REGMODE_{x}", "NOREG")) != "NOREG" or con.get(f"OCE{x}") != ["1"]
            or con.get(f"RST{x}") != ["0"] or _param(prm.get(f"CLK{x}MUX", f"CLK{x}")) != f"CLK{x}"):
        return None
    clk = con.get(f"CLK{x}")
    regs, ce = [], None
    for i in range(18):
        bits = con.get(f"DO{x}{i}")
        if not bits or not isinstance(bits[0], int) or not sinks.get(bits[0]):
            continue
        s = sinks[bits[0]]
        if len(s) != 1 or not s[0][0] or s[0][1] != "DI":
            return None
        ffname = s[0][0]
        ff = cells[ffname]
        fp, fc = ff["parameters"], ff["connections"]
        if ff["type"] != "TRELLIS_FF" or fc.get("CLK") != clk or _param(fp.get("CLKMUX", "CLK")) != "CLK":
            return None
        if fc.get("LSR", ["0"]) != ["0"] or _param(fp.get("GSR", "DISABLED")) != "DISABLED" \
                or _param(fp.get("REGSET", "RESET")) != "RESET":
            return None
        mux = _param(fp.get("CEMUX", "1"))
        if mux == "1":
            en = ["1"]
        elif mux == "CE":
            en = fc.get("CE", ["1"])
        else:                   # an inverted clock enable: left alone
            return None
        if ce is not None and en != ce:
            return None
        ce = en
        regs.append((f"DO{x}{i}", en, ffname))
    return regs or None
