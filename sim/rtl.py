"""A component as every flow sees it: its Verilog text and its ports.

A member whose value is a constant (the ``ready`` of an ``always_ready`` stream) is no port:
Amaranth 0.5 refuses a constant as a port of the top level, and there is nothing to drive.
"""

from __future__ import annotations

from amaranth import Const, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["to_verilog", "ports", "is_constant"]


def is_constant(value) -> bool:
    """True for a member tied to a constant (the ``ready`` of an ``always_ready`` stream)."""
    return isinstance(Value.cast(value), Const)


def to_verilog(component, name: str) -> str:
    """Amaranth component to Verilog text (no source locations, so the text is stable)."""
    from amaranth.back import verilog

    ports_ = None
    sig = getattr(component, "signature", None)
    if isinstance(sig, wiring.Signature):
        flat = list(sig.flatten(component))
        if any(is_constant(v) for _, _, v in flat):
            ports_ = {"__".join(map(str, path)): (Value.cast(v), None) for path, _, v in flat
                      if not is_constant(v)}
    return verilog.convert(component, name=name, emit_src=False, ports=ports_)


def ports(component) -> list[tuple[str, str, int]]:
    """``(verilog name, "in"|"out", bits)`` of every port of ``component`` (path joined by ``__``)."""
    out = []
    for path, member, value in component.signature.flatten(component):
        if is_constant(value):
            continue
        name = "__".join(str(p) for p in path)
        out.append((name, "in" if member.flow == In else "out", len(Value.cast(value))))
    return out
