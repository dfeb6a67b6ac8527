"""Model checkpoints: tensors and plain types only, written atomically.

Format (a dict saved with ``torch.save``)::

    {"format": "end2you-visual-model", "version": 1,
     "config": model.config,            # build_model(**config) rebuilds it
     "state_dict": {name: tensor},      # possibly int8-compact, see .compact
     "framing": {...},                  # how its training crops were cut, when known
     **extra}                           # e.g. epoch, metrics, optimiser state

Files are read with ``torch.load(..., weights_only=True)``: a file holding
pickled Python objects is refused, never executed.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from torch import nn

from ..errors import InputError
from ..files import atomic_file
from ..framing import Framing
from .compact import dequantize_state_dict, quantize_state_dict
from .build import build_model


__all__ = ["FORMAT", "VERSION", "safe_torch_load", "save_checkpoint", "read_checkpoint",
           "model_from_checkpoint", "load_checkpoint", "unwrap_model", "state_dict_sha256"]

FORMAT = "end2you-visual-model"
VERSION = 1
RESERVED = ("format", "version", "config", "state_dict", "framing")
_Module = TypeVar("_Module", bound=nn.Module)
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError,
                TypeError, AttributeError, ImportError, zipfile.BadZipFile)


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, errors as InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = [line.strip().rstrip(".") for line in str(err).splitlines() if "GLOBAL" in line]
        if not found:
            problem = f"not a readable PyTorch checkpoint ({_last_detail(err)})"
            raise InputError(path, problem) from err
        raise InputError(path, "refused to load: the file holds pickled Python objects, not only "
                               "tensors and plain values, and unpickling them could run arbitrary "
                               f"code (torch.load weights_only=True; {found[0]}). Re-save it from "
                               "a trusted copy as tensors and plain values only.") from err
    except _LOAD_ERRORS as err:
        problem = f"not a readable PyTorch checkpoint ({type(err).__name__}: {err})"
        raise InputError(path, problem) from err


def _last_detail(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    details = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    return (details or lines or [type(err).__name__])[-1]


def _check_plain(value: object, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not a tensor or plain value")


def unwrap_model(model: _Module) -> _Module:
    """The model inside a ``torch.compile`` wrapper (else ``model`` itself)."""
    return getattr(model, "_orig_mod", model)


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str],
                    extra: Mapping[str, Any] | None = None, compact: bool = False) -> Path:
    """Write ``model`` (and ``extra``) to ``path`` atomically.

    Args:
        model: a :class:`VisualModel` (or its ``torch.compile`` wrapper).
        path: destination file; its folder is created.
        extra: dict of tensors and plain values stored beside the model
            (epoch, metrics, optimiser ``state_dict``...); may not use the
            keys ``format``, ``version``, ``config``, ``state_dict``,
            ``framing``.
        compact: store weight matrices as int8 + per-channel scales.

    Returns:
        ``path`` as a ``Path``.
    """
    # A model of this package: nn.Module does not declare its config.
    base: Any = unwrap_model(model)
    extra = dict(extra or {})
    clash = [k for k in extra if k in RESERVED]
    if clash:
        raise ValueError(f"extra may not use the reserved keys {clash}")
    _check_plain(extra, "extra")
    state = {k: v.detach().cpu().contiguous() for k, v in base.state_dict().items()}
    if compact:
        state = quantize_state_dict(state)
    ckpt = {"format": FORMAT, "version": VERSION, "config": dict(base.config),
            "state_dict": state, **extra}
    framing = getattr(base, "framing", None)  # how its training crops were cut
    if framing is not None:
        ckpt["framing"] = framing.as_dict()
    with atomic_file(path) as handle:
        torch.save(ckpt, handle)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict in ``path``, checked for format and version."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        looks_e2y = isinstance(ckpt, dict) and "state_dict" in ckpt and "format" not in ckpt
        hint = (" It looks like an End2You checkpoint: use end2you_visual.zoo.import_end2you."
                if looks_e2y else "")
        raise InputError(path, f"not an {FORMAT} checkpoint (format: {found!r}).{hint}")
    if ckpt.get("version") != VERSION:
        raise InputError(path, f"checkpoint version {ckpt.get('version')!r}; "
                               f"this release reads version {VERSION}")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(path, "checkpoint lacks its 'config' or 'state_dict' dict")
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike[str] | None = None
                          ) -> nn.Module:
    """Build and fill a model from a :func:`read_checkpoint` dict (``path`` for messages)."""
    try:
        # Any: nn.Module does not declare the extra and framing set below.
        model: Any = build_model(**ckpt["config"])
    except (TypeError, ValueError) as err:
        raise InputError(path, f"bad model config {ckpt['config']}: {err}") from err
    try:
        state = dequantize_state_dict(ckpt["state_dict"])
    except KeyError as err:
        raise InputError(path, f"broken compact weights: {err}") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(path, f"weights do not match the model config: {err}") from err
    model.extra = {k: v for k, v in ckpt.items() if k not in RESERVED}
    # None: an older checkpoint, or crops of unknown framing (today's defaults apply).
    model.framing = (Framing.from_dict(ckpt["framing"], path)
                     if ckpt.get("framing") is not None else None)
    return model.eval()


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu"
                    ) -> nn.Module:
    """Load a model saved by :func:`save_checkpoint` (plain or compact).

    Returns:
        The :class:`VisualModel` in eval mode on ``device``; the checkpoint's
        extra entries are in ``model.extra``, its framing (a
        :class:`~end2you_visual.framing.Framing`, or None) in ``model.framing``.

    Raises:
        InputError: naming the file, when it is missing, holds pickled
            objects, is not this format, or its weights do not fit its config.
    """
    return model_from_checkpoint(read_checkpoint(path), path).to(device)


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 (hex) over a model's tensors, by name (each name's bytes, then
    its tensor's raw bytes, in name order): the same weights give the same
    digest whatever file they came from (any dtype, bf16 included)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
