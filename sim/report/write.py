"""Writing a report (FPGA, ASIC or both) into its folder, every file renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

from .asic import asic_markdown, plot_asic
from .fpga import plot_report, report_markdown

__all__ = ["write_report"]


def write_report(rep: dict, out) -> dict:
    """Write ``report.json``, ``report.md`` and the PNGs into ``out``; return their paths."""
    import os
    import shutil
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # everything is written into a private folder first and each file renamed into place: a
    # reader (or a second report writing the same folder) never sees a half-written file
    tmp = Path(tempfile.mkdtemp(prefix=f".report.tmp-{os.getpid()}-", dir=out))
    try:
        (tmp / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
        if rep.get("target") == "asic":    # l1bn report --target asic
            md, plots = asic_markdown(rep), plot_asic(rep, tmp)
        else:
            md, plots = report_markdown(rep), plot_report(rep, tmp)
            if "asic" in rep:              # --target both: the ASIC tables after the FPGA ones
                md, plots = md + "\n" + asic_markdown(rep["asic"]), plots + plot_asic(rep["asic"], tmp)
        (tmp / "report.md").write_text(md)
        names = ["report.json", "report.md"] + [p.name for p in plots]
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"json": out / "report.json", "md": out / "report.md", "png": [out / n for n in names[2:]]}
