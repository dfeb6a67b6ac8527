"""Worker processes that end with the run that started them.

:func:`init_worker` (a process pool's initializer) ends a worker when its
parent process ends, whatever ends it; :func:`sigterm_raises` turns SIGTERM
into :class:`Stopped` so that the parent can end its workers
(:func:`end_workers`) before it exits. Used by :func:`end2you_visual.generate.generate`.
"""
import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

__all__ = ["init_worker", "sigterm_raises", "end_workers", "Stopped"]

_PR_SET_PDEATHSIG = 1


def init_worker(parent_pid: int) -> None:
    """In each worker: end when the parent process ends, whatever ends it.

    On Linux the kernel sends SIGTERM when the parent dies (prctl
    PR_SET_PDEATHSIG); everywhere a watcher thread ends the worker once its
    parent is gone (it is then adopted by another process).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="e2y-watch-parent").start()


def _watch_parent(parent_pid: int, every: float = 1.0) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every)
    os._exit(1)


class Stopped(SystemExit):
    """SIGTERM arrived while workers ran (exit status 128 + 15, like the default)."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Stopped` (so that the workers can be
    ended) instead of ending the process at once; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise Stopped(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes now and wait for them to go."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
