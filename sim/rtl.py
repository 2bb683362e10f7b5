"""A component as every flow sees it: its Verilog text and its ports."""

from __future__ import annotations

from amaranth import Value
from amaranth.lib.wiring import In

__all__ = ["to_verilog", "ports"]


def to_verilog(component, name: str) -> str:
    """Amaranth component to Verilog text (no source locations, so the text is stable)."""
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)


def ports(component) -> list[tuple[str, str, int]]:
    """``(verilog name, "in"|"out", bits)`` of every port of ``component`` (path joined by ``__``)."""
    out = []
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        out.append((name, "in" if member.flow == In else "out", len(Value.cast(value))))
    return out
