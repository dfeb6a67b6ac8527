"""One device resolver for every command: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

A name that torch does not know, or a CUDA device on a machine without one,
is bad user input: an :class:`~end2you_visual.errors.InputError` naming the
``--device`` option, never a traceback from deep inside a model or MTCNN.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Union

import torch

from .errors import InputError

__all__ = ["one_cpu_thread", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` for ``device``.

    Args:
        device: ``"auto"`` (or ``None``: CUDA when available, else the CPU),
            a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``...) or a
            :class:`torch.device`.

    Raises:
        InputError: the name is not a device, or names a CUDA device that
            this machine does not have.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError("--device", f"{device!r} is not a device "
                                     "(use auto, cpu, cuda or cuda:N)") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device", f"{device!r} asked for, but CUDA is not available "
                                         "on this machine (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InputError("--device", f"{device!r} asked for, but this machine has "
                                         f"{count} CUDA device(s)")
    elif resolved.type not in ("cpu", "mps"):
        raise InputError("--device", f"{device!r}: device type {resolved.type!r} is not "
                                     "supported (use auto, cpu, cuda or cuda:N)")
    return resolved


@contextmanager
def one_cpu_thread(device: Union[str, torch.device]) -> Iterator[None]:
    """Run the body on one torch thread when ``device`` is the CPU (the
    caller's count is restored after): the same float rounding whatever the
    caller's thread count. The face pipeline detects and tracks under it
    (see :mod:`end2you_visual.faces`)."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)
