"""The model zoo: pretrained weights listed in ``pretrained/registry.json``.

Each registry entry is a :class:`Weights` record (in the spirit of
torchvision's weights API): name, architecture, file and SHA-256, what the
model expects (input size, mean/std, label names) and where it came from
(training data, recipe, licence, metrics). Weight files are looked up

1. in the pretrained folder (``pretrained/`` of the repository, or
   ``$E2Y_VISUAL_PRETRAINED``), which also holds ``registry.json``;
2. in the cache (``$E2Y_VISUAL_CACHE``, default ``~/.cache/end2you_visual``),
   where :func:`fetch` (``e2y-visual zoo fetch NAME --from PATH_OR_URL``)
   puts them.

Loading never downloads; it verifies the SHA-256 and reads the file with
``weights_only=True``. See ``docs/zoo.md``.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .files import atomic_write_text
from .models import (build_model, dequantize_state_dict, end2you_config, import_end2you,
                     load_checkpoint, quantize_state_dict, save_checkpoint)
from .models.checkpoint import model_from_checkpoint, read_checkpoint

__all__ = [
    "Weights", "WeightsNotFoundError", "ChecksumError",
    "load_pretrained", "list_pretrained", "get_weights", "locate", "fetch", "register_weights",
    "export",
    "pretrained_dir", "cache_dir", "registry_path", "sha256_file",
    "quantize_state_dict", "dequantize_state_dict", "import_end2you", "end2you_config",
    "build_model", "save_checkpoint", "load_checkpoint",
]

REGISTRY_FORMAT = "end2you-visual-registry"
REGISTRY_VERSION = 1
FETCH_HINT = "e2y-visual zoo fetch {name} --from PATH_OR_URL"


class WeightsNotFoundError(InputError):
    """A registered model's weight file is in none of the places looked in."""


class ChecksumError(InputError):
    """A weight file's SHA-256 differs from the registry's."""


@dataclass(frozen=True)
class Weights:
    """One registry entry. Only ``name``, ``arch``, ``file`` and ``sha256`` are required.

    Attributes:
        name: unique name, e.g. ``"resnet50_lstm_realeyes"``.
        arch: ``build_model`` arch of the checkpoint.
        file: path relative to the pretrained folder / cache (or absolute).
        sha256: hex digest of the file.
        url: where :func:`fetch` gets it when no ``--from`` is given.
        head, outputs, label_names, input_size, mean, std: what the
            checkpoint's model is (checked against the file when given).
        build: other ``build_model`` arguments (temporal, hidden_size...).
        training_data, recipe, licence, description: provenance, free text
            (``recipe`` relative to the pretrained folder, e.g. ``recipes/x.yaml``).
        metrics: e.g. ``{"RECOLA_test_ccc": {"arousal": 0.34}}``.
        size_bytes: file size, for information.
    """

    name: str
    arch: str
    file: str
    sha256: str
    url: str = ""
    head: str = None
    outputs: int = None
    label_names: list = None
    input_size: int = None
    mean: list = None
    std: list = None
    build: dict = field(default_factory=dict)
    training_data: str = ""
    recipe: str = ""
    licence: str = ""
    description: str = ""
    metrics: dict = field(default_factory=dict)
    size_bytes: int = None

    def as_dict(self):
        """The entry as it is written in ``registry.json``."""
        return dataclasses.asdict(self)

    def config(self):
        """The ``build_model`` arguments this entry states."""
        config = {"arch": self.arch, **self.build}
        for key in ("head", "outputs", "label_names", "input_size", "mean", "std"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config


# --- where things are -------------------------------------------------------

def pretrained_dir():
    """The folder of ``registry.json``: ``$E2Y_VISUAL_PRETRAINED`` or the repo's ``pretrained/``."""
    env = os.environ.get("E2Y_VISUAL_PRETRAINED")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "pretrained"


def cache_dir():
    """Where fetched weights go (``$E2Y_VISUAL_CACHE`` or ``~/.cache/end2you_visual``)."""
    env = os.environ.get("E2Y_VISUAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "end2you_visual"


def registry_path():
    """``pretrained_dir() / "registry.json"``."""
    return pretrained_dir() / "registry.json"


# --- the registry -----------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(Weights)}
_REQUIRED = ("name", "arch", "file", "sha256")


def _entry(raw, path):
    if not isinstance(raw, dict):
        raise InputError(path, f"registry entry {raw!r} is not an object")
    missing = [k for k in _REQUIRED if not raw.get(k)]
    unknown = sorted(set(raw) - _FIELDS)
    if missing or unknown:
        raise InputError(path, f"registry entry {raw.get('name', '?')!r}: "
                               f"missing {missing}, unknown fields {unknown}")
    return Weights(**raw)


def _read_registry():
    path = registry_path()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable registry: {err}") from err
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise InputError(path, f"not an {REGISTRY_FORMAT} file")
    entries = [_entry(raw, path) for raw in data.get("models", [])]
    names = [w.name for w in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(path, f"duplicate model names {duplicates}")
    return entries


def list_pretrained():
    """All registered :class:`Weights`, in registry order."""
    return _read_registry()


def get_weights(name):
    """The :class:`Weights` named ``name`` (``InputError`` listing the known names if none)."""
    for weights in _read_registry():
        if weights.name == name:
            return weights
    known = [w.name for w in _read_registry()]
    raise InputError(registry_path(),
                     f"no pretrained model named {name!r}; registered: {known or 'none'}")


def _candidates(weights):
    file = Path(weights.file)
    if file.is_absolute():
        return [file]
    return [pretrained_dir() / file, cache_dir() / file]


def locate(weights):
    """Path of the weight file of ``weights`` (a :class:`Weights` or a name).

    Raises:
        WeightsNotFoundError: saying where it looked and how to fetch it.
    """
    weights = get_weights(weights) if isinstance(weights, str) else weights
    for path in _candidates(weights):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in _candidates(weights))
    source = f" (known address: {weights.url})" if weights.url else ""
    raise WeightsNotFoundError(
        weights.file, f"weights of pretrained model {weights.name!r} not found; looked in: "
                      f"{looked}. Get them with: {FETCH_HINT.format(name=weights.name)}{source}")


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path, expected, name):
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(path, f"SHA-256 mismatch: the registry expects {expected.lower()}, "
                                  f"the file has {actual}. The file is corrupt or not the "
                                  "registered one; get it again: "
                                  f"{FETCH_HINT.format(name=name)} --force")


def _check_matches(weights, config, path):
    stated = weights.config()
    wrong = {k: (v, config.get(k)) for k, v in stated.items()
             if (list(v) if isinstance(v, (list, tuple)) else v) != config.get(k)}
    if wrong:
        diffs = ", ".join(f"{k}: registry {a!r}, file {b!r}" for k, (a, b) in wrong.items())
        raise InputError(path, f"checkpoint does not match its registry entry: {diffs}")


# --- loading ----------------------------------------------------------------

def _load_registered(name):
    # the first copy (pretrained folder, then cache) whose SHA-256 matches
    weights = get_weights(name)
    existing = [p for p in _candidates(weights) if p.is_file()] or [locate(weights)]
    verified = [p for p in existing if sha256_file(p) == weights.sha256.lower()]
    if not verified:
        _verify(existing[0], weights.sha256, name)
    path = verified[0]
    ckpt = read_checkpoint(path)
    _check_matches(weights, ckpt["config"], path)
    model = model_from_checkpoint(ckpt, path)
    model.weights = weights
    return model


def load_pretrained(name_or_path, outputs=None, head=None, label_names=None, device="cpu"):
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
    names = {w.name for w in _read_registry()}
    if str(name_or_path) in names:
        model = _load_registered(str(name_or_path))
    elif Path(name_or_path).is_file():
        model = load_checkpoint(name_or_path)
    else:
        raise InputError(name_or_path, "neither a registered pretrained model "
                                       f"{sorted(names) or ''} (registry: {registry_path()}) "
                                       "nor a checkpoint file")
    config = model.config
    new_kind = head is not None and head != config["head"]
    new_size = outputs is not None and outputs != config["outputs"]
    if new_kind or new_size:
        model.replace_head(head=head, outputs=outputs, label_names=label_names)
    elif label_names is not None:
        model.set_label_names(label_names)
    return model.to(device).eval()


# --- getting and adding weights --------------------------------------------

def _is_url(source):
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https", "file", "ftp")


def fetch(name, source=None, force=False):
    """Copy (path) or download (URL) the weights of ``name`` into the cache.

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
        for path in _candidates(weights):
            if path.is_file() and sha256_file(path) == weights.sha256.lower():
                return path
    source = source or weights.url
    if not source:
        raise InputError(None, f"no known address for the weights of {name!r}; pass one: "
                               + FETCH_HINT.format(name=name))
    dest = Path(weights.file) if Path(weights.file).is_absolute() else cache_dir() / weights.file
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        if _is_url(source):
            with urllib.request.urlopen(str(source)) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        else:
            if not Path(source).is_file():
                raise InputError(source, "no such file to fetch from")
            shutil.copyfile(source, tmp)
        _verify(tmp, weights.sha256, name)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def register_weights(name, path, replace=False, **meta):
    """Add (or with ``replace``, update) a registry entry for checkpoint ``path``.

    Reads the checkpoint (safely) for arch, head, outputs, label names,
    input size, mean/std and other build arguments, computes the SHA-256 and
    size, and rewrites ``registry.json`` atomically. ``file`` is ``path``
    relative to the pretrained folder when inside it, else its file name
    (to be fetched into the cache). ``meta``: other :class:`Weights` fields
    (url, training_data, recipe, licence, description, metrics).

    Returns:
        The new :class:`Weights`.
    """
    path = Path(path)
    config = dict(read_checkpoint(path)["config"])
    root = pretrained_dir().resolve()
    resolved = path.resolve()
    file = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path.name
    stated = {k: config.pop(k) for k in
              ("arch", "head", "outputs", "label_names", "input_size", "mean", "std")}
    entry = _entry({"name": name, "file": file, "sha256": sha256_file(path),
                    "size_bytes": path.stat().st_size, **stated, "build": config, **meta},
                   registry_path())
    _check_new_name(name, replace)
    entries = [w for w in _read_registry() if w.name != name]
    _write_registry(entries + [entry])
    return entry


def _check_new_name(name, replace):
    if not replace and any(w.name == name for w in _read_registry()):
        raise InputError(registry_path(), f"a model named {name!r} is already registered "
                                          "(replace=True to update)")


def _validation_metrics(ckpt):
    """``{"valid_<metric>": value}`` from a training checkpoint's best-epoch metrics."""
    metrics = ckpt.get("metrics") or {}
    found = {f"valid_{k}": float(v) for k, v in metrics.items()
             if k != "loss" and isinstance(v, (int, float))}
    if found and "epoch" in ckpt:
        found["epoch"] = int(ckpt["epoch"])
    return found


def export(checkpoint, name, path=None, compact=True, grey=None, replace=False,
           metrics=None, **meta):
    """Publish a trained checkpoint in the zoo: the last step of a zoo recipe.

    Writes the model (without optimiser or training state) to ``path``
    (default ``<pretrained folder>/<name>.pt``), int8-compact unless
    ``compact=False``, and registers it under ``name`` (see
    :func:`register_weights`).

    Args:
        checkpoint: a ``best.pt``/``last.pt`` from ``train`` or any
            ``save_checkpoint`` file.
        name: the zoo name, e.g. ``"resnet50-fer2013"``.
        grey: switch the model's grey-input setting on (True) or off (False);
            None keeps the checkpoint's.
        replace: update an existing entry of that name.
        metrics: dict for the entry; default the checkpoint's best-epoch
            validation metrics as ``valid_<metric>`` (with its ``epoch``).
        meta: other :class:`Weights` fields (training_data, recipe, licence,
            description, url).

    Returns:
        The new :class:`Weights`.
    """
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    if grey is not None and bool(grey) != bool(model.config.get("grey", False)):
        rebuilt = build_model(**{**model.config, "grey": bool(grey)})
        rebuilt.load_state_dict(model.state_dict())
        model = rebuilt
    _check_new_name(name, replace)  # before writing the weight file
    path = Path(path) if path is not None else pretrained_dir() / f"{name}.pt"
    save_checkpoint(model, path, compact=compact)
    metrics = _validation_metrics(ckpt) if metrics is None else metrics
    return register_weights(name, path, replace=replace, metrics=metrics, **meta)


def _write_registry(entries):
    data = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION,
            "models": [w.as_dict() for w in entries]}
    atomic_write_text(registry_path(), json.dumps(data, indent=2) + "\n")
