"""The model zoo: pretrained weights listed in ``registry.json`` files.

Each registry entry is a :class:`Weights` record (in the spirit of
torchvision's weights API): name, architecture, file and SHA-256, what the
model expects (input size, mean/std, label names) and where it came from
(training data, recipe, licence, metrics). Two folders hold registries and
weight files, and are searched in this order:

1. the pretrained folder: the zoo that ships with the package (package data
   ``end2you_visual/pretrained``: ``pretrained/`` of the repository), or
   ``$E2Y_VISUAL_PRETRAINED`` instead when set;
2. the home folder (``$E2Y_VISUAL_HOME``, default ``~/.cache/end2you-visual``),
   where :func:`fetch` (``e2y-visual zoo fetch NAME --from PATH_OR_URL``)
   puts weights and :func:`export` (``e2y-visual zoo export``) publishes
   models (into ``$E2Y_VISUAL_PRETRAINED`` instead when that is set).

Loading never downloads; it verifies the SHA-256 and reads the file with
``weights_only=True``. See ``docs/zoo.md``. The registries themselves
(:class:`Weights`, the folders, reading and writing ``registry.json``) are
:mod:`end2you_visual.registry`; their public names are importable from here too.
"""
import dataclasses
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Mapping, Optional, Tuple, Union, cast

import torch
from torch import nn

from .errors import InputError
from .files import atomic_path, check_writable
from .framing import Framing, model_framing
from .models import (build_model, dequantize_state_dict, end2you_config, import_end2you,
                     load_checkpoint, quantize_state_dict, save_checkpoint)
from .models.checkpoint import (model_from_checkpoint, read_checkpoint, state_dict_sha256,
                                unwrap_model)
from .registry import (DEFAULT_MODEL, FETCH_HINT, ChecksumError, Weights, WeightsNotFoundError,
                       cache_dir, candidate_paths, export_dir, get_weights, home_dir,
                       list_pretrained, locate, looked_in, parse_entry, pretrained_dir,
                       read_registry_file, registry_path, registry_paths, sha256_file,
                       write_registry)

__all__ = [
    "Weights", "WeightsNotFoundError", "ChecksumError", "DEFAULT_MODEL",
    "load_pretrained", "resolve_model", "ResolvedModel", "model_title", "model_checksum",
    "list_pretrained", "get_weights", "locate", "fetch", "register_weights",
    "export",
    "pretrained_dir", "home_dir", "cache_dir", "export_dir", "registry_path", "registry_paths",
    "sha256_file",
    "quantize_state_dict", "dequantize_state_dict", "import_end2you", "end2you_config",
    "build_model", "save_checkpoint", "load_checkpoint",
]

PathLike = Union[str, "os.PathLike[str]"]


# --- checking files -----------------------------------------------------------

def _verify(path: PathLike, expected: str, name: str, source: Optional[PathLike] = None
            ) -> None:
    """Checks the SHA-256 of ``path``; a mismatch names ``source`` (default ``path``)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        advice = ("nothing was written" if source is not None else
                  f"the file is corrupt or not the registered one; get it again: "
                  f"{FETCH_HINT.format(name=name)} --force")
        raise ChecksumError(source or path, f"SHA-256 mismatch: the registry expects "
                                            f"{expected.lower()}, the file has {actual}; "
                                            + advice)


def _check_matches(weights: Weights, config: Mapping[str, Any], path: PathLike) -> None:
    stated = weights.config()
    wrong = {k: (v, config.get(k)) for k, v in stated.items()
             if (list(v) if isinstance(v, (list, tuple)) else v) != config.get(k)}
    if wrong:
        diffs = ", ".join(f"{k}: registry {a!r}, file {b!r}" for k, (a, b) in wrong.items())
        raise InputError(path, f"checkpoint does not match its registry entry: {diffs}")


# --- loading ----------------------------------------------------------------

def _load_registered(weights: Weights) -> Tuple[Any, Path]:
    """``(model, path)``: the model of ``weights`` from the first copy
    (pretrained folder, then cache) whose SHA-256 matches."""
    existing = [p for p in candidate_paths(weights) if p.is_file()] or [locate(weights)]
    verified = [p for p in existing if sha256_file(p) == weights.sha256.lower()]
    if not verified:
        _verify(existing[0], weights.sha256, weights.name)
    path = verified[0]
    ckpt = read_checkpoint(path)
    _check_matches(weights, ckpt["config"], path)
    # Any: nn.Module does not declare the framing and weights set below.
    model: Any = model_from_checkpoint(ckpt, path)
    model.framing = _entry_framing(weights, model.framing, path)
    model.weights = weights
    return model, path


def _entry_framing(weights: Weights, framing: Optional[Framing], path: PathLike
                   ) -> Optional[Framing]:
    """The framing of a registered model: its entry's (which may be added to an
    entry by hand, for a file written without one), else its file's; the two
    must agree when both say."""
    stated = weights.face_framing()
    if stated is not None and framing is not None and stated != framing:
        raise InputError(path, f"checkpoint does not match its registry entry: framing: "
                               f"registry {stated.as_dict()!r}, file {framing.as_dict()!r}")
    return stated if stated is not None else framing


def _load(name_or_path: PathLike) -> Tuple[Any, Optional[Weights], Path]:
    """``(model, Weights or None, path)`` of a registered name or a checkpoint
    file, on the CPU; the registries are read once. (The model is Any: a
    VisualModel, AudioModel... whose ``config`` nn.Module does not declare.)"""
    registered = {w.name: w for w in list_pretrained()}
    weights = registered.get(str(name_or_path))
    if weights is not None:
        model, path = _load_registered(weights)
        return model, weights, path
    if Path(name_or_path).is_file():
        return load_checkpoint(name_or_path), None, Path(name_or_path)
    known = ", ".join(sorted(registered)) or "none"
    raise InputError(name_or_path, "neither a registered pretrained model (registered: "
                                   f"{known}; registries: {looked_in()}) "
                                   "nor a checkpoint file")


def load_pretrained(name_or_path: PathLike, outputs: Optional[int] = None,
                    head: Optional[str] = None, label_names: Optional[list] = None,
                    device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A pretrained :class:`~end2you_visual.models.VisualModel`, in eval mode.

    Args:
        name_or_path: a registered name (see :func:`list_pretrained`) or the
            path of a checkpoint written by ``save_checkpoint`` (loaded
            directly, no registry or checksum).
        outputs, head: when either differs from the checkpoint's, the head is
            replaced by a new random one and the CNN and recurrent weights are
            kept bit for bit: the pretrain -> fine-tune step, e.g.
            ``load_pretrained(name, head="regression", outputs=2)``.
        label_names: names of the outputs (alone, only renames them).
        device: where the model goes.

    Raises:
        InputError: unknown name, missing file (:class:`WeightsNotFoundError`),
            checksum mismatch (:class:`ChecksumError`), unsafe or wrong file.
    """
    model = _load(name_or_path)[0]
    config = model.config
    new_kind = head is not None and head != config["head"]
    new_size = outputs is not None and outputs != config["outputs"]
    if new_kind or new_size:
        model.replace_head(head=head, outputs=outputs, label_names=label_names)
    elif label_names is not None:
        model.set_label_names(label_names)
    return model.to(device).eval()


def model_title(model: Union[PathLike, nn.Module]) -> str:
    """How plots name ``model``: the registered name or checkpoint path as
    given, else its architecture (``"resnet18 model"``)."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    base: Any = unwrap_model(model)
    return f"{base.config.get('arch', 'a')} model"


def model_checksum(model: nn.Module, path: Optional[PathLike] = None) -> Tuple[str, str]:
    """``("file", sha256 of path)`` for a checkpoint file, else ``("state_dict",
    sha256 over the model's tensors, by name)``: the same weights give the
    same checksum whatever file they came from."""
    if path is not None:
        return "file", sha256_file(path)
    return "state_dict", state_dict_sha256(model)


@dataclass(frozen=True)
class ResolvedModel:
    """A model as :func:`resolve_model` finds it, with what the commands say of it.

    Attributes:
        model: the model, in eval mode and on the device asked for when it
            was loaded; a model given in memory is as given (a
            ``torch.compile`` wrapper stays one).
        title: how plots name it (:func:`model_title`): the registered name
            or checkpoint path as given, else its architecture
            (``"resnet18 model"``).
        source: the registered name or checkpoint path as given; None for a
            model given in memory.
        weights: its registry entry when it is registered, else None.
        path: the checkpoint file read (a registered model's verified copy);
            None for a model given in memory.
        framing: how its training crops were cut
            (:func:`~end2you_visual.framing.model_framing`), or None.
    """

    model: nn.Module
    title: str
    source: Optional[str] = None
    weights: Optional[Weights] = None
    path: Optional[Path] = None
    framing: Optional[Framing] = None

    @property
    def base(self) -> nn.Module:
        """The model inside a ``torch.compile`` wrapper (else the model)."""
        return unwrap_model(self.model)

    @property
    def config(self) -> Dict[str, Any]:
        """The model's ``build_model`` arguments."""
        return cast(Dict[str, Any], self.base.config)

    def checksum(self) -> Tuple[str, str]:
        """``(kind, hex SHA-256)``: ``"file"`` for a registered model (its
        entry's, which the file was checked against) or a checkpoint file,
        ``"state_dict"`` over the tensors of a model given in memory (see
        :func:`model_checksum`)."""
        if self.weights is not None:
            return "file", self.weights.sha256.lower()
        return model_checksum(self.base, self.path)


def resolve_model(model: Union[PathLike, nn.Module],
                  device: Union[str, torch.device] = "cpu") -> ResolvedModel:
    """The model `predict`, `extract` and `test` run, and what they say of it.

    Args:
        model: a registered name (:func:`list_pretrained`; its file found
            and checksum-verified), the path of a checkpoint file
            (``save_checkpoint``, a training ``best.pt``), or a model,
            returned as it is (not moved, its train/eval mode kept: the
            engines do that).
        device: where a loaded model goes (in eval mode).

    Returns:
        A :class:`ResolvedModel`; the registries are read once.

    Raises:
        InputError: as :func:`load_pretrained`.
    """
    if not isinstance(model, (str, os.PathLike)):
        return ResolvedModel(model, model_title(model), framing=model_framing(model))
    loaded, weights, path = _load(model)
    return ResolvedModel(loaded.to(device).eval(), model_title(model), str(model), weights,
                         path, model_framing(loaded))


# --- getting and adding weights --------------------------------------------

def _is_url(source: PathLike) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "file", "ftp")


def fetch(name: str, source: Optional[PathLike] = None, force: bool = False) -> Path:
    """Copy (path) or download (URL) the weights of ``name`` into :func:`home_dir`.

    The file is written to a temporary name, its SHA-256 checked against the
    registry, then moved into place; a mismatch leaves nothing behind.

    Args:
        name: registered model name.
        source: local path or URL; default the entry's ``url``.
        force: fetch even if a verified copy is already in place.

    Returns:
        The path of the verified file.
    """
    weights = get_weights(name)
    if not force:
        for path in candidate_paths(weights):
            if path.is_file() and sha256_file(path) == weights.sha256.lower():
                return path
    source = source or weights.url
    if not source:
        raise InputError(None, f"no known address for the weights of {name!r}; pass one: "
                               + FETCH_HINT.format(name=name))
    dest = Path(weights.file) if Path(weights.file).is_absolute() else cache_dir() / weights.file
    with _open_source(source) as reader:  # a source that cannot be read: nothing is created
        try:
            with atomic_path(dest) as tmp:
                _copy_to(reader, source, tmp)
                _verify(tmp, weights.sha256, name, source=source)
        except OSError as err:  # named dest by atomic_path, never the temporary file
            raise InputError(dest, f"cannot write the fetched file: "
                                   f"{err.strerror or err}") from err
    return dest


def _open_source(source: PathLike) -> BinaryIO:
    """A binary reader of ``source`` (path or URL); errors name ``source``."""
    if _is_url(source):
        try:
            return urllib.request.urlopen(str(source))
        except urllib.error.URLError as err:
            raise InputError(source, f"cannot download: {err.reason}") from err
        except (OSError, ValueError) as err:
            raise InputError(source, f"cannot download: {err}") from err
    if not Path(source).is_file():
        raise InputError(source, "no such file to fetch from")
    try:
        return open(source, "rb")
    except OSError as err:
        raise InputError(source, f"cannot read: {err.strerror or err}") from err


def _copy_to(reader: BinaryIO, source: PathLike, tmp: PathLike) -> None:
    """Copies ``reader`` into ``tmp``: read errors are InputErrors naming
    ``source``; write errors are the OSErrors of the writing."""
    with open(tmp, "wb") as out:
        while True:
            try:
                block = reader.read(1 << 20)
            except OSError as err:
                raise InputError(source, f"cannot read: {err.strerror or err}") from err
            if not block:
                break
            out.write(block)


def register_weights(name: str, path: PathLike, replace: bool = False,
                     **meta: Any) -> Weights:
    """Add (or with ``replace``, update) a registry entry for checkpoint ``path``.

    Reads the checkpoint (safely) for arch, head, outputs, label names,
    input size, mean/std, other build arguments and the framing of its
    training crops (when it records one), computes the SHA-256 and
    size, and rewrites :func:`registry_path` (in :func:`export_dir`)
    atomically. ``file`` is ``path`` relative to that folder when inside it,
    else its file name (to be fetched into the home folder). ``meta``: other
    :class:`Weights` fields (url, training_data, recipe, licence,
    description, metrics).

    Returns:
        The new :class:`Weights`.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    config = dict(ckpt["config"])
    root = export_dir().resolve()
    resolved = path.resolve()
    file = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path.name
    stated = {k: config.pop(k) for k in
              ("arch", "head", "outputs", "label_names", "input_size", "mean", "std")
              if k in config}
    stated.setdefault("arch", config.get("modality"))  # an audio model has no CNN: "audio"
    entry = parse_entry({"name": name, "file": file, "sha256": sha256_file(path),
                    "size_bytes": path.stat().st_size, **stated, "build": config,
                    "framing": ckpt.get("framing"), **meta},
                   registry_path())
    _check_new_name(name, replace)
    entries = [w for w in read_registry_file(registry_path()) if w.name != name]
    write_registry(entries + [entry])
    return entry


def _check_new_name(name: str, replace: bool) -> None:
    """Refuses a name registered elsewhere, or here unless ``replace``."""
    writable = registry_path()
    for path in registry_paths() + [writable]:
        if not any(w.name == name for w in read_registry_file(path)):
            continue
        if path.resolve() != writable.resolve():
            raise InputError(name, f"a model of that name is already registered in {path}, "
                                   f"which export does not change (it writes {writable}); "
                                   "choose another name")
        if not replace:
            raise InputError(name, f"a model of that name is already registered in {path}; "
                                   "choose another name, or replace it (--replace, "
                                   "replace=True)")


def _validation_metrics(ckpt: Mapping[str, Any]) -> Dict[str, float]:
    """``{"valid_<metric>": value}`` from a training checkpoint's best-epoch metrics."""
    metrics = ckpt.get("metrics") or {}
    found = {f"valid_{k}": float(v) for k, v in metrics.items()
             if k != "loss" and isinstance(v, (int, float))}
    if found and "epoch" in ckpt:
        found["epoch"] = int(ckpt["epoch"])
    return found


def export(checkpoint: PathLike, name: str, path: Optional[PathLike] = None,
           compact: bool = True, grey: Optional[bool] = None, replace: bool = False,
           metrics: Optional[dict] = None, **meta: Any) -> Weights:
    """Publish a trained checkpoint in the zoo: the last step of a zoo recipe.

    Writes the model (without optimiser or training state, with the framing
    of its training crops when the checkpoint records one) to ``path``
    (default ``<export_dir()>/<name>.pt``: the home folder, or
    ``$E2Y_VISUAL_PRETRAINED`` when set), int8-compact unless
    ``compact=False``, and registers it under ``name`` in that folder's
    ``registry.json`` (see :func:`register_weights`).

    Args:
        checkpoint: a ``best.pt``/``last.pt`` from ``train`` or any
            ``save_checkpoint`` file.
        name: the zoo name, e.g. ``"resnet50-fer2013"``.
        grey: switch the model's grey-input setting on (True) or off (False);
            None keeps the checkpoint's.
        replace: update an existing entry of that name (and overwrite ``path``).
        metrics: dict for the entry; default the checkpoint's best-epoch
            validation metrics as ``valid_<metric>`` (with its ``epoch``).
        meta: other :class:`Weights` fields (training_data, recipe, licence,
            description, url).

    Returns:
        The new :class:`Weights`.
    """
    ckpt = read_checkpoint(checkpoint)
    model: Any = model_from_checkpoint(ckpt, checkpoint)
    if grey is not None and bool(grey) != bool(model.config.get("grey", False)):
        rebuilt: Any = build_model(**{**model.config, "grey": bool(grey)})
        rebuilt.load_state_dict(model.state_dict())
        rebuilt.framing = (None if model.framing is None
                           else dataclasses.replace(model.framing, grey=bool(grey)))
        model = rebuilt
    _check_new_name(name, replace)  # before writing the weight file
    path = Path(path) if path is not None else export_dir() / f"{name}.pt"
    if path.exists() and not replace:
        raise InputError(path, "exists; choose another --out, or overwrite it (--replace, "
                               "replace=True)")
    check_writable(path, option=None, folder=False)
    check_writable(registry_path(), option=None, folder=False)
    save_checkpoint(model, path, compact=compact)
    metrics = _validation_metrics(ckpt) if metrics is None else metrics
    return register_weights(name, path, replace=replace, metrics=metrics, **meta)
