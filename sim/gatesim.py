"""Gate-level simulation on Icarus, shared by the FPGA (generic gates) and ASIC (NanGate45) energy
steps: the stimulus file, a stream testbench, the Icarus run and the transition counts of a VCD."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["tb_connections", "stream_tb_verilog", "write_stim", "run_tb", "vcd_header", "vcd_changes",
           "flipped_bits", "vcd_toggles"]


def tb_connections(port_list, layout, *, fixed=None, out_name=None) -> tuple[list, list, list]:
    """Port connections of the design ``dut`` inside a generated Verilog testbench.

    Input port ``name`` is driven by ``fixed[name]`` when given, else by its bits of the stimulus
    register ``cur`` (``layout[name]`` = its lowest bit), else by 0. Each output drives a wire named
    ``out_name(i, name)`` (default: the port's name; ``i`` counts the outputs).

    Returns ``(conns, decl, outs)``: the ``.port(expr)`` items, the output wire declarations and
    the output wire names in port order.
    """
    fixed = fixed or {}
    conns, decl, outs = [], [], []
    for name, d, bits in port_list:
        if name in fixed:
            expr = fixed[name]
        elif d == "out":
            expr = out_name(len(outs), name) if out_name else name
            decl.append(f"  wire [{bits - 1}:0] {expr};")
            outs.append(expr)
        elif name in layout:
            lo = layout[name]
            expr = f"cur[{lo + bits - 1}:{lo}]"
        else:
            expr = f"{bits}'d0"
        conns.append(f".{name}({expr})")
    return conns, decl, outs


def stream_tb_verilog(port_list, main: str, nbeats: int, stim_width: int, layout, expect_out: int,
                out: str, max_cycles: int) -> str:
    """A plain Verilog testbench: beat ``p`` of ``stim.hex`` drives every input until ``main``
    accepts it; every output stream is always ready; ends after ``expect_out`` beats on ``out``."""
    fixed = {"clk": "clk", "rst": "rst"}
    for name, d, _ in port_list:   # the main input's valid is the testbench's; other handshakes always on
        if d != "out" and name not in fixed and (name.endswith("__ready") or name.endswith("__valid")):
            fixed[name] = "in_valid" if name == f"{main}__valid" else "1'b1"
    conns, decl, _ = tb_connections(port_list, layout, fixed=fixed)
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = ~clk;
  reg [{stim_width - 1}:0] stim [0:{nbeats - 1}];
  integer p = 0, cyc = 0, first = -1, last = -1, nout = 0, nin = 0;
  wire [{stim_width - 1}:0] cur = stim[p < {nbeats} ? p : {nbeats - 1}];
  wire in_valid = !rst && p < {nbeats};
{chr(10).join(decl)}
  top dut({", ".join(conns)});
  initial begin
    $readmemh("stim.hex", stim);
    repeat (3) @(posedge clk);
    #1 rst = 0;
    $dumpfile("dump.vcd");
    $dumpvars(0, dut);
  end
  always @(posedge clk) if (!rst) begin
    cyc <= cyc + 1;
    if (in_valid && {main}__ready) begin p <= p + 1; nin <= nin + 1; if (first < 0) first <= cyc; end
    if ({out}__valid) begin nout <= nout + 1; last <= cyc; end
    if (nout == {expect_out} || cyc == {max_cycles}) begin
      $display("RESULT first=%0d last=%0d nin=%0d nout=%0d cycles=%0d", first, last, nin, nout, cyc);
      $finish;
    end
  end
endmodule
"""


def vcd_header(f) -> list[tuple[str, str, str, int]]:
    """``(code, scope, name, width)`` of every ``$var`` of the VCD open in ``f``, read up to
    ``$enddefinitions`` (the file is then at the first value change). Scopes are joined with
    dots; header lines may be indented (Verilator's are)."""
    out, scope = [], []
    for line in f:
        line = line.lstrip()
        if line.startswith("$var"):
            parts = line.split()
            out.append((parts[3], ".".join(scope), parts[4], int(parts[2])))
        elif line.startswith("$scope"):
            scope.append(line.split()[2])
        elif line.startswith("$upscope"):
            scope.pop()
        elif line.startswith("$enddefinitions"):
            break
    return out


def vcd_changes(f):
    """The value changes of the VCD open in ``f`` after :func:`vcd_header`: ``(code, old, new)``
    for each change of a scalar (``0 1 x z``) or vector (``b...``) value that had one before
    (``old`` and ``new`` as written: a scalar's character, a vector's bits MSB first, leading
    zeros dropped); ``(None, line, None)`` for a time (``#...``) or a ``$`` line (``$dumpon``, ...)."""
    last = {}
    for line in f:
        c = line[0]
        if c == "0" or c == "1" or c == "x" or c == "z":
            code = line[1:-1]
            prev = last.get(code)
            last[code] = c
            if prev is not None and prev != c:
                yield code, prev, c
        elif c == "b":
            val, code = line[1:].split()
            prev = last.get(code)
            last[code] = val
            if prev is not None and prev != val:
                yield code, prev, val
        elif c == "#" or c == "$":
            yield None, line, None


_FLIP = (0,)


def flipped_bits(old: str, new: str, width: int):
    """The bits (0 = least significant) of a ``width``-bit value that went 0 -> 1 or 1 -> 0
    from ``old`` to ``new`` (VCD values, right-aligned; bits that were or became x or z do not
    count), in increasing order."""
    if width == 1:                # a scalar (most changes): no parsing
        return _FLIP if old + new in ("01", "10") else ()
    a, b = old.rjust(width, "0"), new.rjust(width, "0")
    try:
        diff, out = int(a, 2) ^ int(b, 2), []
    except ValueError:           # x or z bits: only the bits that are 0 or 1 on both sides
        return [i for i in range(width) if a[width - 1 - i] != b[width - 1 - i]
                and a[width - 1 - i] in "01" and b[width - 1 - i] in "01"]
    while diff:
        low = diff & -diff
        out.append(low.bit_length() - 1)
        diff ^= low
    return out


def vcd_toggles(path: Path) -> dict:
    """{(scope, var name): [toggles of bit 0, bit 1, ...]} counting 0<->1 transitions only."""
    ids, counts = {}, {}          # id code -> list of ((scope, name), width)
    with open(path) as f:
        for code, scope, name, width in vcd_header(f):
            ids.setdefault(code, []).append(((scope, name), width))
            counts[(scope, name)] = [0] * width
        for code, old, new in vcd_changes(f):
            if code is None:          # a time or a $ line
                continue
            for key, width in ids.get(code, ()):
                for i in flipped_bits(old, new, width):
                    counts[key][i] += 1
    return counts


def write_stim(workdir: Path, beats: list[dict], widths: dict) -> tuple[dict, int]:
    """Write ``workdir/stim.hex``, one hex word per beat: the beat's ports packed LSB first in
    name order, each ``widths[port]`` bits. Returns ``(layout, width)``: each port's lowest bit
    and the word width (at least 1)."""
    from l1bn.spec.words import field_offsets, hex_text, pack

    names = sorted({k for beat in beats for k in beat})
    layout = dict(zip(names, field_offsets([widths[k] for k in names]), strict=True)) if names else {}
    pos = sum(widths[k] for k in names)
    words = (pack([[beat.get(k, 0) for k in names] for beat in beats], [widths[k] for k in names])
             if names else [0] * len(beats))
    (workdir / "stim.hex").write_text(hex_text(words))
    return layout, max(pos, 1)


def run_tb(workdir: Path, sources: list[str]) -> tuple[int, int, int, int, int]:
    """Compile ``sources`` (testbench module ``tb`` first) with Icarus in ``workdir`` and run it;
    the ``RESULT`` line it prints: ``(first, last, nin, nout, cycles)``."""
    from l1bn.sim.executors import (
        run_guarded,  # each tool in a process group killed with the command
    )

    run_guarded(["iverilog", "-g2012", "-o", "sim.vvp", "-s", "tb", *sources], cwd=workdir,
                check=True, capture_output=True, text=True)
    r = run_guarded(["vvp", "-n", "sim.vvp"], cwd=workdir, check=True, capture_output=True, text=True)
    m = re.search(r"RESULT first=(-?\d+) last=(-?\d+) nin=(\d+) nout=(\d+) cycles=(\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"gate-level simulation printed no result in {workdir}: {r.stdout[-500:]}")
    return tuple(map(int, m.groups()))
