"""Lock files that leave nothing behind: the flow cache's entries and the simulators' build folders.

:func:`file_lock` holds an exclusive ``flock`` on ``PATH.lock``-style files. The kernel releases a
``flock`` when its holder dies (``kill -9`` included), so a lock is never held by a dead process;
what a killed holder leaves is the file itself. Here the holder removes the file before it lets
go, and a process that waited on a file that was meanwhile removed (or replaced) tries again, so
the file exists only while someone holds or waits for it. :func:`remove_stale_locks` removes the
files a killed holder left: a lock file that can be taken at once is held by nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

__all__ = ["file_lock", "remove_stale_locks", "remove_released_locks"]


def _take(path: Path, flags: int) -> int | None:
    """An open descriptor of ``path`` holding ``flock(flags)``, the file still being ``path``; None
    when ``LOCK_NB`` is in ``flags`` and someone else holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)   # the holder before us removed it: lock the file that is there now


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)          # while held: nobody else holds this file
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def file_lock(path):
    """``with file_lock(PATH):`` hold an exclusive lock on ``PATH`` (created, and removed on release)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _take(path, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        _release(path, fd)


def remove_stale_locks(folder, pattern: str = "*.lock") -> list[Path]:
    """Remove the lock files in ``folder`` that nobody holds (left by a holder that was killed);
    return them. A held lock is left alone."""
    gone = []
    for p in Path(folder).glob(pattern):
        try:
            fd = _take(p, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        if fd is not None:
            _release(p, fd)
            gone.append(p)
    return gone


def remove_released_locks(paths, *, timeout: float = 3.0) -> list[Path]:
    """Remove the lock files ``paths`` as soon as nobody holds them, waiting at most ``timeout``
    seconds for holders that are exiting (workers just killed: the kernel drops a lock when its
    holder's descriptors close, which a loaded machine may take a moment to do). A lock still held
    after ``timeout`` (another live run's) is left alone. Returns the files removed."""
    gone, left = [], [Path(p) for p in paths]
    end = time.monotonic() + timeout
    while left:
        held = []
        for p in left:
            if not p.exists():
                continue
            try:
                fd = _take(p, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            if fd is None:
                held.append(p)
            else:
                _release(p, fd)
                gone.append(p)
        left = held
        if left and time.monotonic() < end:
            time.sleep(0.05)
        else:
            break
    return gone
