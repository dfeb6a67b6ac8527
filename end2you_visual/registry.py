"""The zoo's registries: the :class:`Weights` records of ``registry.json``
files, the folders that hold them (the shipped pretrained folder, then the
home folder) and reading and writing them. :mod:`end2you_visual.zoo` loads,
fetches and exports models through these (and re-exports every public name).
"""
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from .errors import InputError
from .files import atomic_write_text
from .framing import Framing

__all__ = [
    "Weights", "WeightsNotFoundError", "ChecksumError", "REGISTRY_FORMAT", "REGISTRY_VERSION",
    "DEFAULT_MODEL", "FETCH_HINT", "list_pretrained", "get_weights", "locate", "pretrained_dir", "shipped_dir",
    "home_dir",
    "cache_dir", "export_dir", "registry_path", "registry_paths", "sha256_file",
    "candidate_paths", "parse_entry", "read_registry_file", "write_registry", "looked_in",
]

REGISTRY_FORMAT = "end2you-visual-registry"
REGISTRY_VERSION = 1
FETCH_HINT = "e2y-visual zoo fetch {name} --from PATH_OR_URL"
#: The model `predict` and `extract` run when none is named: the shipped CPU
#: model of the best accuracy (FER2013, 10 % held out: 0.665; its card is
#: pretrained/resnet18-small-fer2013-cpu.md).
DEFAULT_MODEL = "resnet18-small-fer2013-cpu"


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
        url: where :func:`~end2you_visual.zoo.fetch` gets it when no ``--from`` is given.
        head, outputs, label_names, input_size, mean, std: what the
            checkpoint's model is (checked against the file when given).
        build: other ``build_model`` arguments (temporal, hidden_size...).
        framing: how the training crops were cut (a
            :class:`~end2you_visual.framing.Framing` as a dict: margin,
            square, size, grey, source); `predict` and `extract` cut video
            crops the same way by default. None: not recorded.
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
    head: Optional[str] = None
    outputs: Optional[int] = None
    label_names: Optional[list] = None
    input_size: Optional[int] = None
    mean: Optional[list] = None
    std: Optional[list] = None
    build: dict = field(default_factory=dict)
    framing: Optional[dict] = None
    training_data: str = ""
    recipe: str = ""
    licence: str = ""
    description: str = ""
    metrics: dict = field(default_factory=dict)
    size_bytes: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        """The entry as it is written in ``registry.json``."""
        return dataclasses.asdict(self)

    def face_framing(self) -> Optional[Framing]:
        """The entry's :class:`~end2you_visual.framing.Framing`, or None."""
        return None if self.framing is None else Framing.from_dict(self.framing, self.name)

    def config(self) -> Dict[str, Any]:
        """The ``build_model`` arguments this entry states."""
        config = dict(self.build)
        if config.get("modality") != "audio":  # an audio entry's arch is "audio", not a CNN
            config["arch"] = self.arch
        for key in ("head", "outputs", "label_names", "input_size", "mean", "std"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config


# --- where things are -------------------------------------------------------

def shipped_dir() -> Path:
    """The zoo that ships with the package: the package data folder
    ``end2you_visual.pretrained`` (``pretrained/`` of the repository, mapped
    in setup.cfg), whatever ``$E2Y_VISUAL_PRETRAINED`` says."""
    # Found through the import system, so it is the right folder for a wheel
    # and for an editable install alike.
    try:
        from . import pretrained
    except ImportError:  # an install made before the zoo was package data
        return Path(__file__).resolve().parent / "pretrained"
    return Path(pretrained.__file__).resolve().parent


def pretrained_dir() -> Path:
    """``$E2Y_VISUAL_PRETRAINED`` when set, else the shipped zoo (``end2you_visual/pretrained``)."""
    env = os.environ.get("E2Y_VISUAL_PRETRAINED")
    return Path(env).expanduser() if env else shipped_dir()


def home_dir() -> Path:
    """Your zoo folder: ``$E2Y_VISUAL_HOME``, default ``~/.cache/end2you-visual``.

    :func:`~end2you_visual.zoo.fetch` puts weights here; :func:`~end2you_visual.zoo.export` publishes here (unless
    ``$E2Y_VISUAL_PRETRAINED`` is set); its ``registry.json`` is read after
    the pretrained folder's.
    """
    env = os.environ.get("E2Y_VISUAL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "end2you-visual"


def cache_dir() -> Path:
    """Where :func:`~end2you_visual.zoo.fetch` puts weights: :func:`home_dir`."""
    return home_dir()


def export_dir() -> Path:
    """Where :func:`~end2you_visual.zoo.export` writes: ``$E2Y_VISUAL_PRETRAINED`` when set, else :func:`home_dir`."""
    return pretrained_dir() if os.environ.get("E2Y_VISUAL_PRETRAINED") else home_dir()


def _folders() -> List[Path]:
    folders: List[Path] = []
    for folder in (pretrained_dir(), home_dir()):
        if folder.resolve() not in [f.resolve() for f in folders]:
            folders.append(folder)
    return folders


def registry_paths() -> List[Path]:
    """The registries read, in order: the pretrained folder's, then the home folder's."""
    return [folder / "registry.json" for folder in _folders()]


def registry_path() -> Path:
    """The registry :func:`~end2you_visual.zoo.export` and :func:`~end2you_visual.zoo.register_weights` write (in :func:`export_dir`)."""
    return export_dir() / "registry.json"


def looked_in() -> str:
    """Where the registries are, for error messages."""
    return "; ".join(f"{p}" + ("" if p.is_file() else " (absent)") for p in registry_paths())


# --- the registry -----------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(Weights)}
_REQUIRED = ("name", "arch", "file", "sha256")


def parse_entry(raw: Any, path: Union[str, "os.PathLike[str]"]) -> Weights:
    if not isinstance(raw, dict):
        raise InputError(path, f"registry entry {raw!r} is not an object")
    missing = [k for k in _REQUIRED if not raw.get(k)]
    unknown = sorted(set(raw) - _FIELDS)
    if missing or unknown:
        raise InputError(path, f"registry entry {raw.get('name', '?')!r}: "
                               f"missing {missing}, unknown fields {unknown}")
    if raw.get("framing") is not None:  # checked now: a bad one names the registry
        Framing.from_dict(raw["framing"], f"{path}: registry entry {raw['name']!r}")
    return Weights(**raw)


def read_registry_file(path: Path) -> List[Weights]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable registry: {err}") from err
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise InputError(path, f"not an {REGISTRY_FORMAT} file")
    return [parse_entry(raw, path) for raw in data.get("models", [])]


def _read_registry() -> List[Weights]:
    entries: List[Weights] = []
    origin: Dict[str, Path] = {}
    for path in registry_paths():
        for weights in read_registry_file(path):
            if weights.name in origin:
                where = origin[weights.name]
                raise InputError(path, f"duplicate model name {weights.name!r}"
                                       + ("" if where == path else f" (also in {where})"))
            origin[weights.name] = path
            entries.append(weights)
    return entries


def list_pretrained() -> List[Weights]:
    """All registered :class:`Weights`: the pretrained folder's, then the home folder's."""
    return _read_registry()


def get_weights(name: str) -> Weights:
    """The :class:`Weights` named ``name`` (``InputError`` listing the known names if none)."""
    entries = _read_registry()
    for weights in entries:
        if weights.name == name:
            return weights
    known = ", ".join(w.name for w in entries) or "none"
    raise InputError(name, f"no pretrained model of that name; registered: {known} "
                           f"(registries: {looked_in()})")


def candidate_paths(weights: Weights) -> List[Path]:
    file = Path(weights.file)
    if file.is_absolute():
        return [file]
    return [folder / file for folder in _folders()]


def locate(weights: Union[Weights, str]) -> Path:
    """Path of the weight file of ``weights`` (a :class:`Weights` or a name).

    Raises:
        WeightsNotFoundError: saying where it looked and how to fetch it.
    """
    weights = get_weights(weights) if isinstance(weights, str) else weights
    for path in candidate_paths(weights):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidate_paths(weights))
    source = f" (known address: {weights.url})" if weights.url else ""
    raise WeightsNotFoundError(
        weights.file, f"weights of pretrained model {weights.name!r} not found; looked in: "
                      f"{looked}. Get them with: {FETCH_HINT.format(name=weights.name)}{source}")


def sha256_file(path: Union[str, "os.PathLike[str]"], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_registry(entries: Iterable[Weights]) -> None:
    """Rewrite :func:`registry_path` atomically with ``entries`` (:class:`Weights`)."""
    data = {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION,
            "models": [w.as_dict() for w in entries]}
    atomic_write_text(registry_path(), json.dumps(data, indent=2) + "\n")
