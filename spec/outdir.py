"""Output folders that appear whole or not at all, and never replace an input.

:func:`staged_dir` hands out a temporary folder beside the target; when the ``with`` block ends
normally the folder is moved onto the target in one step (``renameat2(RENAME_EXCHANGE)`` on Linux,
so an existing target is swapped out atomically; two renames elsewhere). An exception, Ctrl-C or
``kill -9`` inside the block leaves the target as it was: the old content, or nothing.

:func:`check_output_dir` is the rule every command applies to an output folder before any work:
not the empty string, no file on its path, an existing non-empty folder only with
``force``, and never an input or a folder that contains an input.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["check_output_dir", "check_output_file", "check_not_input", "check_path_is_creatable", "staged_dir",
           "publish_dir", "write_text_atomic"]


def _contains(folder: Path, path: Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def check_not_input(out, inputs, *, option: str = "--out") -> None:
    """Refuse an output that is an input, or a folder that contains one (``ValueError``)."""
    o = Path(out).resolve()
    for p in inputs:
        if p is None:
            continue
        q = Path(p).resolve()
        if _contains(o, q):
            what = "is" if o == q else "contains"
            raise ValueError(f"{option} {out} {what} the input {p}; choose another output folder")


def check_output_dir(out, *, inputs=(), force: bool = False, option: str = "--out",
                     must_be_new: bool = True) -> Path:
    """Check an output folder before any work; return it as a ``Path``.

    Refused (``ValueError``, one line): the empty string; a path with a file on it (``out`` itself
    or a parent); an output that is an input or contains one; with ``must_be_new``, an existing
    non-empty folder unless ``force``.
    """
    if out is None or str(out).strip() == "":
        raise ValueError(f"{option} is empty; name a folder")
    o = Path(out)
    check_path_is_creatable(o, option=option, folder=True)
    check_not_input(o, inputs, option=option)
    if must_be_new and o.is_dir() and any(o.iterdir()) and not force:
        raise ValueError(f"{option} {o} exists and is not empty; pass --force to replace it")
    return o


def check_path_is_creatable(path: Path, *, option: str = "--out", folder: bool = True) -> None:
    """Refuse a path that names an existing file (for a folder) or folder (for a file), or that
    lies under a file."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ValueError(f"{option} {p} is a file, not a folder")
    if not folder and p.is_dir():
        raise ValueError(f"{option} {p} is a folder, not a file")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {p}: {parent} is a file, not a folder")
            break


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False when the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def publish_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out``, replacing an existing ``out`` in one step."""
    if out.exists():
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)   # now the old content
            return
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


@contextlib.contextmanager
def staged_dir(out):
    """``with staged_dir(out) as tmp:`` write into ``tmp``; on success it becomes ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale(out: Path) -> None:
    """Remove temporary folders of ``out`` left by a killed process (its pid is in the name)."""
    prefix = f".{out.name}.tmp-"
    for p in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to a temporary sibling of ``path`` and rename it into place; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_output_file(out, *, inputs=(), option: str = "-o") -> Path:
    """Check an output file before any work: not empty, not a folder, no file on its path, not an
    input, not a folder holding an input. Returns it as a ``Path``."""
    if out is None or str(out).strip() == "":
        raise ValueError(f"{option} is empty; name a file")
    o = Path(out)
    check_path_is_creatable(o, option=option, folder=False)
    check_not_input(o, inputs, option=option)
    return o
