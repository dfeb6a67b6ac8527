"""Training settings: one dataclass, filled from defaults, a TOML recipe and options.

:class:`TrainConfig` holds every setting of a run; its defaults are the
paper's (Adam, lr 4e-5, batches of 2 windows x 150 frames, up to 300 epochs,
early stopping after 20 epochs without improvement). ``TrainConfig.from_toml``
reads a recipe (flat keys, or keys grouped in any ``[section]``: sections
are only for reading and are flattened); keyword overrides win over the file.

Settings named ``"auto"`` are decided from the data when training starts
(see :func:`resolve_auto`): the head from the files' ``label_kind``, the loss
from the head, the metric from the head, augmentation on for categorical
pretraining and off for continuous fine-tuning, bf16 on CUDA.
"""
import dataclasses
import difflib
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..errors import InputError
from ..choices import ARCHS, HEADS as MODEL_HEADS, MODALITIES, PRECISIONS, STEMS, TEMPORALS
from ..ranges import COUNT, INDEX, NON_NEGATIVE, POSITIVE, Range

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.9/3.10: tomli (the same parser) when installed; else read_toml says so
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

__all__ = ["TrainConfig", "RANGES", "CHOICES", "METRICS", "LOWER_IS_BETTER",
           "SPLIT_BY", "HEADS", "LOSSES", "WEIGHTINGS", "SCHEDULERS",
           "metric_is_lower_better", "resolve_auto", "read_toml", "option_name"]

SPLIT_BY = ("auto", "files", "split", "subject", "sequence")
HEADS = ("auto",) + MODEL_HEADS
LOSSES = ("auto", "ccc", "mse", "bce", "ce")
WEIGHTINGS = ("auto", "inverse", "none")
SCHEDULERS = ("none", "cosine")
#: The settings that take one of a list of words, and the list (check()
#: refuses any other word; the CLI makes each a click.Choice).
CHOICES: Dict[str, Tuple[str, ...]] = {
    "split_by": SPLIT_BY, "head": HEADS, "loss": LOSSES, "label_weighting": WEIGHTINGS,
    "precision": PRECISIONS, "scheduler": SCHEDULERS, "temporal": TEMPORALS,
    "stem": tuple(STEMS), "modality": MODALITIES,
}

# Validation metrics each head reports (the CSV holds them all); "loss" too.
METRICS = {
    "regression": ("ccc", "pearson", "rmse", "mae", "loss"),
    "multiclass": ("accuracy", "uar", "f1", "loss"),
    "multilabel": ("auc", "f1", "loss"),
}
LOWER_IS_BETTER = ("loss", "rmse", "mae")
DEFAULT_METRIC = {"regression": "ccc", "multiclass": "accuracy", "multilabel": "auc"}
DEFAULT_LOSS = {"regression": "ccc", "multiclass": "ce", "multilabel": "bce"}
LOSSES_FOR_HEAD = {"regression": ("ccc", "mse"), "multiclass": ("ce",), "multilabel": ("bce",)}


def metric_is_lower_better(metric: str) -> bool:
    """True for metrics where a smaller value is better (loss, rmse, mae)."""
    return metric in LOWER_IS_BETTER


@dataclass
class TrainConfig:
    """Every setting of a training run (see ``docs/training.md``).

    Data:
        train: HDF5 files or folders to train on.
        valid: explicit validation files/folders (then ``split_by="files"``).
        out_dir: where checkpoints and logs go.
        label_names: labels to train on, a subset/reordering of the files'
            label names (default: all of them).
        split_by: ``auto`` (explicit ``valid`` files, else the ``split``
            metadata column, else ``subject``, else a random split of the
            sequences), ``files``, ``split``, ``subject`` or ``sequence``.
        valid_fraction: share of subjects (or sequences) held out (0.2).
        window, stride: frames per training window (150) and the step
            between window starts (default: the window, no overlap).
        skip_no_face: leave frames without a detected face out of the loss
            and the metrics.
    Model:
        init: a zoo model name or checkpoint to start from, its head replaced
            to fit the data (fine-tuning); then arch/temporal/... come from it.
        keep_head: keep the init model's head when it already fits the data
            (same kind and number of outputs) instead of a new random one.
        arch, temporal, hidden_size, num_layers, dropout: for a new model.
        grey: a new model converts its input to grey (for grey training
            images such as FER2013, so that colour video is seen the same way).
        stem: a new model's CNN stem: ``imagenet`` (7x7/2 + max-pool),
            ``small`` (3x3/2, no max-pool), ``small1`` (3x3/1) or ``nopool``
            (7x7/2, no max-pool); the small ones keep detail on 48-64 px crops.
        head: ``auto`` (from the files' label kind) or a head name.
        modality: ``visual`` (the face crops), ``audio`` (each frame's audio
            window, through the raw-waveform front end) or ``audiovisual``
            (both, fused per frame before the recurrent layers); audio needs
            files generated with ``--audio``.
        projection: audiovisual: size of each modality's linear + ReLU
            projection before concatenation (0: concatenate as they are).
        freeze_visual: audiovisual: keep the visual CNN fixed (e.g. a zoo
            extractor given with ``init``); only audio, fusion and head train.
    Loss:
        loss: ``auto`` (ccc / bce / ce by head), ``ccc``, ``mse``, ``bce``, ``ce``.
        label_weighting: ``auto`` (inverse for bce, none for ce), ``inverse``
            (reciprocal frame counts, mean frame weight 1) or ``none``.
        class_weights: explicit per-label weights (overrides the above).
    Distillation (``docs/distillation.md``):
        teacher: a zoo model name or checkpoint whose outputs the student
            learns too (same modality, head and outputs as the run's); it is
            only run (eval mode, no gradient), never trained.
        distill_weight: ``w`` in ``(1 - w) * label loss + w * distillation
            loss`` (1: the teacher only).
        temperature: divides the logits of student and teacher in the
            distillation loss (classification heads), which is scaled by T^2.
        feature_weight: ``f``, adding ``f * feature loss``: the mean squared
            difference between the teacher's per-frame embeddings and the
            student's through a learned linear projection (0: off).
        unlabelled_share: share of each epoch's windows taken from unlabelled
            training files (label kind ``none``, trained on with the teacher's
            targets only), drawn anew each epoch; default: each unlabelled
            window once per epoch.
    Re-sampling (categorical pretraining):
        resample: repeat windows holding rare labels and no frequent ones.
        rare_threshold: a label is rare when its frame count is below this
            (a fraction of the training frames when < 1, else a count).
        resample_repeats: extra copies of each qualifying window.
        resample_ignore: labels never counted as frequent (e.g. neutral).
    Augmentation:
        augment: ``None`` = auto (on for categorical heads), True, False.
        resize: side before the random crop (default round(S * 170 / 150)).
        brightness, saturation: maximum relative change (factor in 1 +- x).
        hflip: probability of mirroring a window left to right (0: never,
            as in the paper).
    Optimisation:
        lr, weight_decay, batch_size, valid_batch_size, epochs, patience,
        metric (``auto``: ccc / accuracy / auc by head), grad_clip,
        scheduler (``none`` or ``cosine``), max_steps_per_epoch.
    System:
        seed, device (``auto``: cuda when available), precision (``auto``:
        bf16 on CUDA, fp32 on CPU), channels_last, compile, num_workers,
        resume (continue the run in ``out_dir``), overwrite (replace it; without
        either, an ``out_dir`` holding a run is refused), progress (tqdm
        bars), tensorboard (when importable).

    Every value is checked for its type (:meth:`from_dict`, :meth:`check`)
    and range (:meth:`check`); a bad one is an InputError naming the option
    (``--grad-clip``) and the recipe key (``grad_clip``).
    """

    train: List[str] = field(default_factory=list)
    valid: List[str] = field(default_factory=list)
    out_dir: str = "runs/train"
    label_names: Optional[List[str]] = None
    split_by: str = "auto"
    valid_fraction: float = 0.2
    window: int = 150
    stride: Optional[int] = None
    skip_no_face: bool = False

    init: Optional[str] = None
    keep_head: bool = False
    arch: str = "resnet50"
    temporal: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    grey: bool = False
    stem: str = "imagenet"
    head: str = "auto"
    modality: str = "visual"
    projection: int = 0
    freeze_visual: bool = False

    loss: str = "auto"
    label_weighting: str = "auto"
    class_weights: Optional[List[float]] = None

    teacher: Optional[str] = None
    distill_weight: float = 0.5
    temperature: float = 2.0
    feature_weight: float = 0.0
    unlabelled_share: Optional[float] = None

    resample: bool = False
    rare_threshold: float = 0.1
    resample_repeats: int = 4
    resample_ignore: List[str] = field(default_factory=list)

    augment: Optional[bool] = None
    resize: Optional[int] = None
    brightness: float = 0.2
    saturation: float = 0.2
    hflip: float = 0.0

    lr: float = 4e-5
    weight_decay: float = 0.0
    batch_size: int = 2
    valid_batch_size: Optional[int] = None
    epochs: int = 300
    patience: int = 20
    metric: str = "auto"
    grad_clip: Optional[float] = None
    scheduler: str = "none"
    max_steps_per_epoch: Optional[int] = None

    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    num_workers: int = 4
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("train", "valid", "resample_ignore"):
            value = getattr(self, name)
            value = [] if value is None else [value] if isinstance(value, (str, Path)) else value
            setattr(self, name, [str(v) for v in value])
        for name in ("out_dir", "init", "teacher"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.label_names, str):
            self.label_names = [n.strip() for n in self.label_names.split(",") if n.strip()]

    @classmethod
    def field_names(cls) -> List[str]:
        """The settings' names, in the order of the fields."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any],
                  source: Union[str, os.PathLike, None] = None) -> "TrainConfig":
        """A config from a dict; unknown keys are an InputError naming them."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            hints = [f"for {k!r} use {_suggest(k)!r}" for k in unknown if _suggest(k)]
            raise InputError(source, f"unknown training settings {unknown}"
                                     + (f" ({'; '.join(hints)})" if hints else "")
                                     + f"; known: {', '.join(cls.field_names())}")
        for name, value in values.items():
            problem = _type_problem(value, _FIELD_TYPES[name])
            if problem:
                raise InputError(source, f"{name}: {problem}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: Union[str, os.PathLike, None],
                  **overrides: Any) -> "TrainConfig":
        """Read a TOML recipe (``path``; None: no recipe, the defaults);
        ``overrides`` (not None) replace its values. An unknown key or a
        value of the wrong type is an InputError naming ``path``."""
        values = read_toml(path) if path is not None else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, source=path)

    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (fits a weights-only checkpoint and JSON)."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Static checks of the settings (no data read); raises InputError
        naming the option (and recipe key) of the first bad value."""
        for f in dataclasses.fields(self):
            problem = _type_problem(getattr(self, f.name), _FIELD_TYPES[f.name])
            if problem:
                raise InputError(option_name(f.name), problem)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(option_name(name), f"must be one of {', '.join(choices)}; "
                                                    f"got {getattr(self, name)!r}")
        if self.arch not in ARCHS:
            raise InputError("--arch", f"unknown architecture {self.arch!r}; known: "
                                       f"{', '.join(ARCHS)}")
        all_metrics = {m for ms in METRICS.values() for m in ms}
        if self.metric != "auto" and self.metric not in all_metrics:
            raise InputError("--metric", f"unknown metric {self.metric!r}; choose one of "
                                         f"{sorted(all_metrics)} (or auto)")
        if not self.train:
            raise InputError(None, "no training data given")
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value is not None and not allowed.contains(value):
                raise InputError(option_name(name),
                                 f"must be {allowed.text()}, got {_show(value)}")
        for weight in self.class_weights or ():
            if not (math.isfinite(weight) and weight >= 0):
                raise InputError(option_name("class_weights"),
                                 f"weights must be >= 0, got {_show(weight)}")
        if self.split_by == "files" and not self.valid:
            raise InputError(option_name("split_by"),
                             "'files' needs validation files (--valid)")
        if self.feature_weight and not self.teacher:
            raise InputError(option_name("feature_weight"),
                             "needs a --teacher (the student matches its embeddings)")
        if self.unlabelled_share is not None and not self.teacher:
            raise InputError(option_name("unlabelled_share"),
                             "needs a --teacher (unlabelled windows learn its outputs only)")
        if self.resume and self.overwrite:
            raise InputError("--resume", "and --overwrite contradict each other: --resume "
                                         "continues the run in --out, --overwrite replaces it")


# CLI spellings of the fields whose option is not --<field-with-dashes>.
_OPTIONS = {"out_dir": "--out", "label_names": "--labels", "train": "DATA"}

# Allowed ranges of the numeric settings (a None value is not checked).
# check() applies them to every config; the CLI builds its options' types
# from them (Range.click_type).
_FRACTION = Range(0, 1, high_open=True)  # [0, 1)
RANGES: Dict[str, Range] = {
    "valid_fraction": Range(0, 1, low_open=True, high_open=True),
    "window": COUNT,
    "stride": COUNT,
    "hidden_size": COUNT,
    "num_layers": COUNT,
    "projection": INDEX,
    "dropout": _FRACTION,
    "distill_weight": Range(0, 1),
    "temperature": POSITIVE,
    "feature_weight": NON_NEGATIVE,
    "unlabelled_share": _FRACTION,
    "rare_threshold": POSITIVE,
    "resample_repeats": INDEX,
    "resize": COUNT,
    "brightness": _FRACTION,
    "saturation": _FRACTION,
    "hflip": Range(0, 1),
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "valid_batch_size": COUNT,
    "epochs": COUNT,
    "patience": COUNT,
    "grad_clip": NON_NEGATIVE,
    "max_steps_per_epoch": COUNT,
    "seed": INDEX,
    "num_workers": INDEX,
}


def _suggest(key: str) -> Optional[str]:
    """The setting an unknown recipe key probably means (an option's spelling,
    ``out`` or ``labels``, or a near miss), or None."""
    spelled = str(key).replace("-", "_").lstrip("_")
    for name, option in _OPTIONS.items():
        if option.lstrip("-") == spelled:
            return name
    if spelled in _FIELD_TYPES:
        return spelled
    close = difflib.get_close_matches(spelled, list(_FIELD_TYPES), n=1, cutoff=0.75)
    return close[0] if close else None


def option_name(name: str) -> str:
    """How a setting is named in messages: its CLI option, and its recipe key
    when that is spelled differently (``--grad-clip (grad_clip)``)."""
    option = _OPTIONS.get(name, "--" + name.replace("_", "-"))
    return option if option.lstrip("-") == name else f"{option} ({name})"


def _show(value: Any) -> str:
    """A value as a recipe spells it: true/false, "text", [lists], numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar_ok(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, (str, os.PathLike))
    return True


def _type_problem(value: Any, annotation: Any) -> Optional[str]:
    """None when ``value`` fits the field type ``annotation``, else what is wrong
    ("expected an integer, got true"). bool is not taken for an int or a float."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) is typing.Union and type(None) in args
    if optional:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) in (list, List):
        (item,) = typing.get_args(annotation)
        if item is str and isinstance(value, (str, os.PathLike)):  # one path, or "a,b"
            return None
        if isinstance(value, (list, tuple)) and all(_scalar_ok(v, item) for v in value):
            return None
        return f"expected a list of {'strings' if item is str else 'numbers'}, got {_show(value)}"
    if _scalar_ok(value, annotation):
        return None
    return f"expected {_KIND_WORDS[annotation]}, got {_show(value)}"


def read_toml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """A recipe's settings as one flat dict (``[sections]`` are flattened)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError as err:
        raise InputError(path, "no such recipe file") from err
    except IsADirectoryError as err:
        raise InputError(path, "is a folder, not a TOML recipe") from err
    if tomllib is None:
        raise InputError(path, "reading a TOML recipe needs Python 3.11 or later "
                               "(or the tomli package on Python 3.9 and 3.10)")
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(path, f"not a text file (not UTF-8: {err.reason} at byte "
                               f"{err.start})") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, _toml_problem(err)) from err
    flat: Dict[str, Any] = {}
    where: Dict[str, str] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if k in flat:
                raise InputError(path, f"setting {k!r} is given twice ({where[k]} and "
                                       f"{_section(key, value)})")
            flat[k], where[k] = v, _section(key, value)
    return flat


def _section(key: str, value: Any) -> str:
    return f"[{key}]" if isinstance(value, dict) else "the top level"


def _toml_problem(err: ValueError) -> str:
    """A TOML syntax error as "line N, column C: what" (a duplicate key says so)."""
    message = str(err)
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message).strip()
    if "overwrite" in what.lower():
        what += " (a key or table given twice)"
    where = (f"line {found.group(1)}, column {found.group(2)}" if found
             else "at the end of the file" if "end of document" in message else "")
    return f"not valid TOML: {where}: {what}" if where else f"not valid TOML: {what}"


def _refuse_categorical_settings(config: TrainConfig,
                                 path: Union[str, os.PathLike, None]) -> None:
    """One InputError for every setting of categorical training (the
    ``pretrain`` recipe's) given for continuous labels, naming the shipped
    recipe that fits them (``finetune``)."""
    found = [text for text, given in (("label_weighting 'inverse'",
                                       config.label_weighting == "inverse"),
                                      ("resample", bool(config.resample))) if given]
    if found:
        raise InputError(path, f"continuous labels, but {' and '.join(found)} "
                               f"{'is' if len(found) == 1 else 'are'} for categorical labels: "
                               "the pretraining recipe (pretrain) is for categorical labels; "
                               "for continuous labels use the fine-tuning recipe "
                               "(--config finetune), or turn these off (--label-weighting "
                               "none --no-resample)")


def resolve_auto(config: TrainConfig, label_kind: str, device_type: str,
                 path: Union[str, os.PathLike, None] = None) -> Dict[str, Any]:
    """The ``auto`` settings decided for data of ``label_kind`` on ``device_type``.

    Returns a dict: head, loss, metric, weighting, augment, precision. Raises
    InputError for combinations that do not fit (a CCC loss on a
    classification head, a metric the head does not report...).
    """
    from ..scoring import head_for_kind  # scipy: imported when a run starts

    head = head_for_kind(label_kind, path) if config.head == "auto" else config.head
    if head == "regression":  # inverse weighting and resampling: classification heads only
        _refuse_categorical_settings(config, path)
    loss = DEFAULT_LOSS[head] if config.loss == "auto" else config.loss
    if loss not in LOSSES_FOR_HEAD[head]:
        raise InputError(path, f"loss {loss!r} does not fit a {head} head; "
                               f"use one of {LOSSES_FOR_HEAD[head]}")
    metric = DEFAULT_METRIC[head] if config.metric == "auto" else config.metric
    if metric not in METRICS[head]:
        raise InputError(path, f"metric {metric!r} is not reported for a {head} head; "
                               f"choose one of {METRICS[head]}")
    weighting = config.label_weighting
    if weighting == "auto":
        weighting = "inverse" if loss == "bce" else "none"
    augment = (head != "regression") if config.augment is None else bool(config.augment)
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" else "fp32"
    return {"head": head, "loss": loss, "metric": metric, "weighting": weighting,
            "augment": augment, "precision": precision}
