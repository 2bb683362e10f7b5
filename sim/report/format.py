"""Markdown tables and ratio plots shared by the FPGA report (:mod:`l1bn.sim.report.fpga`) and the
ASIC report (:mod:`l1bn.sim.report.asic`).

Both reports hold ``rep["widths"][w][kind][norm]`` (``kind`` "forward" / "backward"), the ratios
to the baseline norm under ``ratio_key(norm)``, and per forward stage
``rep["widths"][w]["stages"][stage][norm]``; these helpers walk that layout once, and the
reports only say which columns they print and which metrics they plot.
"""

from __future__ import annotations

from pathlib import Path

from .units import NORMS, STAGES, compared, norms_for, ratio_key

__all__ = ["fmt", "md_row", "md_header", "unit_rows", "stage_rows", "pyplot", "nan_none",
           "unit_ratio_lines", "finish_axis", "save_figure"]


def fmt(v, nd: int = 2) -> str:
    """A table cell: ``-`` for None, a float with ``nd`` decimals, anything else as ``str``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def md_row(cells) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(x) for x in cells) + " |"


def md_header(columns) -> list[str]:
    """A Markdown table's header line and rule line."""
    return [md_row(columns), "|---" * len(columns) + "|"]


def unit_rows(rep: dict, kind: str, unit_cells, ratio_cells) -> list[str]:
    """Rows of a units table: per width, one row per norm of ``kind``
    (``unit_cells(w, norm, unit)``), then one per ratio to the baseline (``ratio_cells(w, norm, ratios)``)."""
    lines = []
    for w, wr in rep["widths"].items():
        for norm in norms_for(kind):
            lines.append(md_row(unit_cells(w, norm, wr[kind][norm])))
        for nm in compared(norms_for(kind)):
            lines.append(md_row(ratio_cells(w, nm, wr[kind][ratio_key(nm)])))
    return lines


def stage_rows(rep: dict, cells) -> list[str]:
    """Rows of a forward-stages table: per width, stage (and "top") and norm,
    ``cells(w, stage, norm, values, ratios)`` (``ratios`` is ``{}`` for the baseline)."""
    lines = []
    for w, wr in rep["widths"].items():
        for s in (*STAGES, "top"):
            r = wr["stages"][s]
            for nm in NORMS:
                lines.append(md_row(cells(w, s, nm, r[nm], r.get(ratio_key(nm), {}))))
    return lines


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (reports run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def nan_none(ys) -> list[float]:
    """``ys`` with None (a value not measured) as NaN, which matplotlib leaves out of a line."""
    return [y if y is not None else float("nan") for y in ys]


def unit_ratio_lines(ax, rep: dict, key: str, colors: dict, *, label: str = "{norm} {kind}", **style) -> None:
    """On ``ax``: per kind (forward solid, backward dashed) and compared norm, the ratio to the
    baseline of metric ``key`` against width; kinds or metrics the report lacks are left out."""
    widths = [int(w) for w in rep["widths"]]
    for kind, line in (("forward", "o-"), ("backward", "s--")):
        for nm in compared(norms_for(kind)):
            ys = [rep["widths"][str(w)].get(kind, {}).get(ratio_key(nm), {}).get(key) for w in widths]
            if any(y is not None for y in ys):
                ax.plot(widths, nan_none(ys), line, color=colors[nm],
                        label=label.format(norm=nm.upper(), kind=kind), **style)


def finish_axis(ax, title: str, widths, *, log: bool = False) -> None:
    """The common frame of a ratio plot: the line y = 1, title, width ticks, grid."""
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("bit width")
    ax.set_xticks(widths)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def save_figure(plt, fig, path: Path) -> Path:
    """Lay out, write (110 dpi) and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
