"""One writer per output file: an advisory lock beside it.

Two ``generate`` runs into one folder (two terminals, a re-run started
while the first still works) must not write the same output at once: HDF5
refuses the second (``unable to lock file, errno = 11``), and a run that
took that refusal for a failure would record a failed file that the other
run completes. :class:`OutputLock` makes the owner explicit: the first run
locks ``.NAME.h5.lock`` (holding its pid) for as long as it writes
``NAME.h5``; another run sees who owns it and waits for it, or moves on.

The lock is ``flock(2)``: the kernel releases it when its holder ends,
``kill -9`` included, so a stale lock file never blocks a later run. The
file is removed on release. On systems without ``fcntl`` (Windows) locking
is a no-op.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Literal

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    # No fcntl module (Windows): locking is a no-op. mypy types the name as
    # the module it finds on this platform, hence the ignore.
    fcntl = None  # type: ignore[assignment]

__all__ = ["OutputBusy", "OutputLock"]


class OutputBusy(Exception):
    """Another process holds the lock of ``path``; ``pid`` is its process id (or None)."""

    def __init__(self, path: str | os.PathLike[str], pid: int | None) -> None:
        self.path, self.pid = Path(path), pid
        owner = f"another process (pid {pid})" if pid else "another process"
        super().__init__(f"{path}: {owner} is writing this output")


class OutputLock:
    """The lock of one output file; a context manager.

    ``with OutputLock(path):`` waits until no other process writes ``path``;
    ``OutputLock(path, wait=False)`` raises :class:`OutputBusy` instead.
    """

    def __init__(self, path: str | os.PathLike[str], wait: bool = True) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.wait = wait
        self._fd: int | None = None

    def owner(self) -> int | None:
        """The pid written in the lock file, or None."""
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> OutputLock:
        if fcntl is None:
            return self
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            kept = False
            try:
                flags = fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB)
                try:
                    fcntl.flock(fd, flags)
                except BlockingIOError:
                    raise OutputBusy(self.path, self.owner()) from None
                # The previous holder may have removed the file between our
                # open and our lock: then we hold a lock on nothing; retry.
                if self._same_file(fd):
                    self._write_pid(fd)
                    self._fd, kept = fd, True
                    return self
            finally:
                if not kept:
                    os.close(fd)

    @staticmethod
    def _write_pid(fd: int) -> None:
        """The holder's pid, for others' messages; on a full disk the lock
        (the ``flock``) holds without it."""
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass

    def _same_file(self, fd: int) -> bool:
        try:
            current = os.stat(self.lock_path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        self.release()
        return False
