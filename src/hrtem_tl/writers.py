"""Safe writers: temporary names, clean-up after dead writers, one writer per folder.

Every file of the package is written to :func:`temp_path` (``.<name>.<pid>.tmp``) and
renamed over its final name, so a reader never sees half a file; a writer that dies
leaves at most its temporary file, which :func:`remove_dead_temps` deletes once its
PID is gone. PIDs are those of this host: a writer on another host that shares the
folder looks dead here.

A sweep holds its results folder with :class:`WriterLock`: ``<folder>/.lock``, a JSON
file of its PID, host and start time (Unix time [s]), created complete in one step (a
hard link of a written temporary file, which fails if a lock exists, as ``O_EXCL``
does). A lock of a live process, of another host or that cannot be read refuses the
next sweep with :class:`ResultsLocked`; one of a dead PID on this host is stale and is
taken over by moving it aside with a rename (one taker wins it) and creating a new one.
Before each write the holder checks that the lock still names it (:meth:`WriterLock.verify`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def temp_path(path: Path) -> Path:
    """The name ``path`` is written to before it is renamed: ``.<name>.<pid>.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def replacing(path: Path):
    """Write ``path`` atomically: yields the temporary path to write; on leaving without an
    error it is renamed over ``path``; either way no temporary file is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_temps(folder: Path) -> list[Path]:
    """Delete the temporary files (:func:`temp_path`) of dead writers under ``folder``; returns them."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        match = TEMP_NAME.match(path.name)
        if match and path.is_file() and not pid_alive(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(folder: Path, what: str) -> None:
    """Raise ``OSError`` unless ``folder`` is, or could be made, a writable folder (nothing is created)."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} folder {folder} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} folder {folder} is not writable ({existing} is read-only)")


class ResultsLocked(RuntimeError):
    """Another process holds the folder (or this one lost its hold)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _holder(text: str) -> dict | None:
    """The PID, host and start time of a lock's text (``None`` if malformed)."""
    try:
        holder = json.loads(text)
        pid, host = holder["pid"], holder["host"]
        time.localtime(holder["since"])
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        return None
    return holder if isinstance(pid, int) and isinstance(host, str) else None


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
    return f"PID {holder['pid']} on host {holder['host']} since {since}"


class WriterLock:
    """Exclusive hold of ``folder`` by this process, for a ``with`` block."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self.host = socket.gethostname()
        self.text = json.dumps({"pid": os.getpid(), "host": self.host, "since": time.time()})

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raises :class:`ResultsLocked` if it is held."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp, aside = temp_path(self.path), temp_path(self.path.with_name(".lock-stale"))
        tmp.write_text(self.text)
        stale = None
        try:
            for _ in range(5):
                try:
                    os.link(tmp, self.path)
                    if stale:
                        print(f"hrtem-tl: took over the stale lock of {_describe(stale)} (no longer running)",
                              file=sys.stderr)
                    return
                except FileExistsError:
                    pass
                text = _read(self.path)
                if text is None:
                    continue  # released meanwhile
                holder = _holder(text)
                if holder is None:
                    raise ResultsLocked(f"{self.path} is not a lock this package wrote; delete it if no sweep "
                                        f"writes {self.folder}")
                if holder["host"] != self.host or pid_alive(holder["pid"]):
                    raise ResultsLocked(f"results folder {self.folder} is in use by another sweep "
                                        f"({_describe(holder)}); wait for it to end, or delete {self.path} if it "
                                        f"is gone")
                try:
                    os.rename(self.path, aside)
                except FileNotFoundError:
                    continue  # another sweep moved it first
                if _read(aside) == text:
                    stale = holder
                else:  # a newer lock of a sweep that took over first: give it back
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:
                        pass
                aside.unlink()
            raise ResultsLocked(f"could not take {self.path}: other sweeps are starting on {self.folder}")
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self) -> None:
        """Raise :class:`ResultsLocked` unless the lock still names this process (call before each write)."""
        text = _read(self.path)
        if text != self.text:
            holder = _holder(text) if text else None
            now = _describe(holder) if holder else "no lock" if text is None else "an unreadable lock"
            raise ResultsLocked(f"lost the lock {self.path} (now: {now}); stopped so that two sweeps never "
                                f"write one folder")

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        if _read(self.path) == self.text:
            self.path.unlink(missing_ok=True)
