"""The cache keys of sweep points.

The client keeps each successful point as ``<build>/flow-cache/sweep-<key>.json``; the key hashes
the point, the options that change its figures (pnr, seeds, energy, max_cycles), the flow and
step versions, the tool versions and a digest of the l1bn sources that make the design, the flow
and the stimulus (:func:`source_digest`). A rerun reads those and runs only the rest; a failed
point is never cached, so a rerun tries it again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

from l1bn.sim.asic.step import ASICJob, asic_params
from l1bn.sim.fpga.steps import CMOSJob, ECP5Job, EnergyJob
from l1bn.sim.jobs import FLOW_VERSION, cache_dir, tool_versions

__all__ = ["SWEEP_VERSION", "STEPS", "source_digest", "point_key", "point_cache_path"]

SWEEP_VERSION = "2"   # 2: the ECP5 Verilog through the flow's ECP5Job (DSP primitives, as the report)

#: the flow steps a point may run; their versions are part of every point's key
STEPS = (ECP5Job, CMOSJob, EnergyJob, ASICJob)

# the generators and their configs, the flow steps, and the stimulus: the trained capture model
# itself is cached on disk by its own name (l1bn.sw.capture), so its training code is not hashed
_SOURCE_PARTS = (("l1bn.spec", None), ("l1bn.hw", None), ("l1bn.sw", ("capture.py",)),
                 ("l1bn.sim", ("jobs.py", "rtl.py", "gatesim.py", "yowasp.py", "report/units.py", "simulate/mac.py")),
                 ("l1bn.sim.fpga", None), ("l1bn.sim.asic", None), ("l1bn.sim.sweep", None))


@functools.cache
def source_digest() -> str:
    """sha256 (16 hex digits) of the l1bn sources that make a point's design, flow and stimulus
    (``spec``, ``hw``, ``sw/capture.py`` and the flow modules of ``sim``), as installed here.
    Computed once per process, from the files as they are at the first call."""
    h = hashlib.sha256()
    for pkg, only in _SOURCE_PARTS:
        spec = importlib.util.find_spec(pkg)
        root = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(root.rglob("*.py")) if only is None else [root / f for f in only]
        for f in files:
            h.update(f"{pkg}/{f.relative_to(root).as_posix()}\0".encode())
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:16]


def point_key(p: dict, options: dict) -> str:
    """The cache key of a point's figures (see the module docstring)."""
    extra = asic_params() if p["target"] == "asic" else {}
    blob = json.dumps({"v": SWEEP_VERSION, "point": p, "options": options, "flow": FLOW_VERSION,
                       "steps": {j.kind: j.version for j in STEPS}, "tools": tool_versions(), "source": source_digest(),
                       "asic": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def point_cache_path(key: str, cache: Path | None) -> Path:
    """The cache file of the point with ``key`` in ``cache`` (default: the flow's cache folder)."""
    return (cache or cache_dir()) / f"sweep-{key[:24]}.json"
