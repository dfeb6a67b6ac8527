"""One device resolver for every command: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

A name that torch does not know, or a CUDA device on a machine without one,
is bad user input: an :class:`~end2you_visual.errors.InputError` naming the
``--device`` option, never a traceback from deep inside a model or MTCNN.
"""
import torch

from .errors import InputError

__all__ = ["resolve_device"]


def resolve_device(device="auto"):
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
