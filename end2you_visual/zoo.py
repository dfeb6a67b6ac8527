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
``weights_only=True``. See ``docs/zoo.md``.
"""
import dataclasses
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .files import atomic_write_text, check_writable
from .models import (build_model, dequantize_state_dict, end2you_config, import_end2you,
                     load_checkpoint, quantize_state_dict, save_checkpoint)
from .models.checkpoint import model_from_checkpoint, read_checkpoint

__all__ = [
    "Weights", "WeightsNotFoundError", "ChecksumError",
    "load_pretrained", "list_pretrained", "get_weights", "locate", "fetch", "register_weights",
    "export",
    "pretrained_dir", "home_dir", "cache_dir", "export_dir", "registry_path", "registry_paths",
    "sha256_file",
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

def _shipped_dir():
    # The package data folder `end2you_visual.pretrained` (`pretrained/` of the
    # repository, mapped in setup.cfg): found through the import system, so it
    # is the right folder for a wheel and for an editable install alike.
    try:
        from . import pretrained
    except ImportError:  # an install made before the zoo was package data
        return Path(__file__).resolve().parent / "pretrained"
    return Path(pretrained.__file__).resolve().parent


def pretrained_dir():
    """``$E2Y_VISUAL_PRETRAINED`` when set, else the shipped zoo (``end2you_visual/pretrained``)."""
    env = os.environ.get("E2Y_VISUAL_PRETRAINED")
    return Path(env).expanduser() if env else _shipped_dir()


def home_dir():
    """Your zoo folder: ``$E2Y_VISUAL_HOME``, default ``~/.cache/end2you-visual``.

    :func:`fetch` puts weights here; :func:`export` publishes here (unless
    ``$E2Y_VISUAL_PRETRAINED`` is set); its ``registry.json`` is read after
    the pretrained folder's.
    """
    env = os.environ.get("E2Y_VISUAL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "end2you-visual"


def cache_dir():
    """Where :func:`fetch` puts weights: :func:`home_dir`."""
    return home_dir()


def export_dir():
    """Where :func:`export` writes: ``$E2Y_VISUAL_PRETRAINED`` when set, else :func:`home_dir`."""
    return pretrained_dir() if os.environ.get("E2Y_VISUAL_PRETRAINED") else home_dir()


def _folders():
    folders = []
    for folder in (pretrained_dir(), home_dir()):
        if folder.resolve() not in [f.resolve() for f in folders]:
            folders.append(folder)
    return folders


def registry_paths():
    """The registries read, in order: the pretrained folder's, then the home folder's."""
    return [folder / "registry.json" for folder in _folders()]


def registry_path():
    """The registry :func:`export` and :func:`register_weights` write (in :func:`export_dir`)."""
    return export_dir() / "registry.json"


def _looked_in():
    """Where the registries are, for error messages."""
    return "; ".join(f"{p}" + ("" if p.is_file() else " (absent)") for p in registry_paths())


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


def _read_one(path):
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable registry: {err}") from err
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise InputError(path, f"not an {REGISTRY_FORMAT} file")
    return [_entry(raw, path) for raw in data.get("models", [])]


def _read_registry():
    entries, origin = [], {}
    for path in registry_paths():
        for weights in _read_one(path):
            if weights.name in origin:
                where = origin[weights.name]
                raise InputError(path, f"duplicate model name {weights.name!r}"
                                       + ("" if where == path else f" (also in {where})"))
            origin[weights.name] = path
            entries.append(weights)
    return entries


def list_pretrained():
    """All registered :class:`Weights`: the pretrained folder's, then the home folder's."""
    return _read_registry()


def get_weights(name):
    """The :class:`Weights` named ``name`` (``InputError`` listing the known names if none)."""
    entries = _read_registry()
    for weights in entries:
        if weights.name == name:
            return weights
    known = ", ".join(w.name for w in entries) or "none"
    raise InputError(name, f"no pretrained model of that name; registered: {known} "
                           f"(registries: {_looked_in()})")


def _candidates(weights):
    file = Path(weights.file)
    if file.is_absolute():
        return [file]
    return [folder / file for folder in _folders()]


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


def _verify(path, expected, name, source=None):
    """Checks the SHA-256 of ``path``; a mismatch names ``source`` (default ``path``)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        advice = ("nothing was written" if source is not None else
                  f"the file is corrupt or not the registered one; get it again: "
                  f"{FETCH_HINT.format(name=name)} --force")
        raise ChecksumError(source or path, f"SHA-256 mismatch: the registry expects "
                                            f"{expected.lower()}, the file has {actual}; "
                                            + advice)


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
        known = ", ".join(sorted(names)) or "none"
        raise InputError(name_or_path, "neither a registered pretrained model (registered: "
                                       f"{known}; registries: {_looked_in()}) "
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
        for path in _candidates(weights):
            if path.is_file() and sha256_file(path) == weights.sha256.lower():
                return path
    source = source or weights.url
    if not source:
        raise InputError(None, f"no known address for the weights of {name!r}; pass one: "
                               + FETCH_HINT.format(name=name))
    dest = Path(weights.file) if Path(weights.file).is_absolute() else cache_dir() / weights.file
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with _open_source(source) as reader:
            _copy_to(reader, source, tmp, dest)
        _verify(tmp, weights.sha256, name, source=source)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _open_source(source):
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


def _copy_to(reader, source, tmp, dest):
    """Copies ``reader`` into ``tmp``: read errors name ``source``, write errors
    ``dest`` (never the temporary ``.part`` file)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            while True:
                try:
                    block = reader.read(1 << 20)
                except OSError as err:
                    raise InputError(source, f"cannot read: {err.strerror or err}") from err
                if not block:
                    break
                out.write(block)
    except OSError as err:
        raise InputError(dest, f"cannot write the fetched file: {err.strerror or err}") from err


def register_weights(name, path, replace=False, **meta):
    """Add (or with ``replace``, update) a registry entry for checkpoint ``path``.

    Reads the checkpoint (safely) for arch, head, outputs, label names,
    input size, mean/std and other build arguments, computes the SHA-256 and
    size, and rewrites :func:`registry_path` (in :func:`export_dir`)
    atomically. ``file`` is ``path`` relative to that folder when inside it,
    else its file name (to be fetched into the home folder). ``meta``: other
    :class:`Weights` fields (url, training_data, recipe, licence,
    description, metrics).

    Returns:
        The new :class:`Weights`.
    """
    path = Path(path)
    config = dict(read_checkpoint(path)["config"])
    root = export_dir().resolve()
    resolved = path.resolve()
    file = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path.name
    stated = {k: config.pop(k) for k in
              ("arch", "head", "outputs", "label_names", "input_size", "mean", "std")}
    entry = _entry({"name": name, "file": file, "sha256": sha256_file(path),
                    "size_bytes": path.stat().st_size, **stated, "build": config, **meta},
                   registry_path())
    _check_new_name(name, replace)
    entries = [w for w in _read_one(registry_path()) if w.name != name]
    _write_registry(entries + [entry])
    return entry


def _check_new_name(name, replace):
    """Refuses a name registered elsewhere, or here unless ``replace``."""
    writable = registry_path()
    for path in registry_paths() + [writable]:
        if not any(w.name == name for w in _read_one(path)):
            continue
        if path.resolve() != writable.resolve():
            raise InputError(name, f"a model of that name is already registered in {path}, "
                                   f"which export does not change (it writes {writable}); "
                                   "choose another name")
        if not replace:
            raise InputError(name, f"a model of that name is already registered in {path}; "
                                   "choose another name, or replace it (--replace, "
                                   "replace=True)")


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
    model = model_from_checkpoint(ckpt, checkpoint)
    if grey is not None and bool(grey) != bool(model.config.get("grey", False)):
        rebuilt = build_model(**{**model.config, "grey": bool(grey)})
        rebuilt.load_state_dict(model.state_dict())
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


def _write_registry(entries):
    data = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION,
            "models": [w.as_dict() for w in entries]}
    atomic_write_text(registry_path(), json.dumps(data, indent=2) + "\n")
