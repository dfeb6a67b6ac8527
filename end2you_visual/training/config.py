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
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import InputError

__all__ = ["TrainConfig", "METRICS", "LOWER_IS_BETTER", "metric_is_lower_better",
           "metrics_for_head", "head_for_kind", "resolve_auto"]

SPLIT_BY = ("auto", "files", "split", "subject", "sequence")
HEADS = ("auto", "regression", "multilabel", "multiclass")
LOSSES = ("auto", "ccc", "mse", "bce", "ce")
WEIGHTINGS = ("auto", "inverse", "none")
PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULERS = ("none", "cosine")
TEMPORALS = ("lstm", "gru", "none")

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
HEAD_FOR_KIND = {"continuous": "regression", "multilabel": "multilabel",
                 "multiclass": "multiclass"}


def metric_is_lower_better(metric):
    """True for metrics where a smaller value is better (loss, rmse, mae)."""
    return metric in LOWER_IS_BETTER


def metrics_for_head(head):
    """The metric names a run with this head can select by ``metric``."""
    return METRICS[head]


def head_for_kind(label_kind, path=None):
    """The model head for a file's ``label_kind``; unlabelled data cannot train."""
    if label_kind not in HEAD_FOR_KIND:
        raise InputError(path, f"label kind {label_kind!r} cannot be trained on "
                               "(unlabelled data); generate it with label files")
    return HEAD_FOR_KIND[label_kind]


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
        head: ``auto`` (from the files' label kind) or a head name.
    Loss:
        loss: ``auto`` (ccc / bce / ce by head), ``ccc``, ``mse``, ``bce``, ``ce``.
        label_weighting: ``auto`` (inverse for bce, none for ce), ``inverse``
            (reciprocal frame counts, mean frame weight 1) or ``none``.
        class_weights: explicit per-label weights (overrides the above).
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
        resume, progress (tqdm bars), tensorboard (when importable).
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
    head: str = "auto"

    loss: str = "auto"
    label_weighting: str = "auto"
    class_weights: Optional[List[float]] = None

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
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        for name in ("train", "valid", "resample_ignore"):
            value = getattr(self, name)
            value = [] if value is None else [value] if isinstance(value, (str, Path)) else value
            setattr(self, name, [str(v) for v in value])
        if isinstance(self.label_names, str):
            self.label_names = [n.strip() for n in self.label_names.split(",") if n.strip()]

    @classmethod
    def field_names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values, source=None):
        """A config from a dict; unknown keys are an InputError naming them."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise InputError(source, f"unknown training settings {unknown}; "
                                     f"known: {', '.join(cls.field_names())}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path, **overrides):
        """Read a TOML recipe; ``overrides`` (not None) replace its values."""
        values = read_toml(path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, source=path)

    def to_dict(self):
        """Plain types only (fits a weights-only checkpoint and JSON)."""
        return dataclasses.asdict(self)

    def check(self):
        """Static checks of the settings (no data read); raises InputError."""
        def choose(name, choices):
            if getattr(self, name) not in choices:
                raise InputError(None, f"{name} must be one of {choices}, "
                                       f"got {getattr(self, name)!r}")
        for name, choices in (("split_by", SPLIT_BY), ("head", HEADS), ("loss", LOSSES),
                              ("label_weighting", WEIGHTINGS), ("precision", PRECISIONS),
                              ("scheduler", SCHEDULERS), ("temporal", TEMPORALS)):
            choose(name, choices)
        all_metrics = {m for ms in METRICS.values() for m in ms}
        if self.metric != "auto" and self.metric not in all_metrics:
            raise InputError(None, f"unknown metric {self.metric!r}; choose one of "
                                   f"{sorted(all_metrics)} (or auto)")
        if not self.train:
            raise InputError(None, "no training data given")
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "lr": self.lr,
                    "patience": self.patience, "window": self.window}
        for name in ("valid_batch_size", "stride", "max_steps_per_epoch", "resize"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(None, f"{name} must be positive, got {value!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise InputError(None, f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if self.num_workers < 0 or self.resample_repeats < 0 or self.rare_threshold <= 0:
            raise InputError(None, "num_workers and resample_repeats must be >= 0 and "
                                   "rare_threshold > 0")
        if self.split_by == "files" and not self.valid:
            raise InputError(None, "split_by='files' needs validation files (valid)")
        for name in ("brightness", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(None, f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hflip <= 1.0:
            raise InputError(None, f"hflip is a probability in [0, 1], got {self.hflip}")


def read_toml(path):
    """A recipe's settings as one flat dict (``[sections]`` are flattened)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        raise InputError(path, "no such recipe file") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML ({err})") from err
    flat = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if k in flat:
                raise InputError(path, f"setting {k!r} is given twice")
            flat[k] = v
    return flat


def resolve_auto(config, label_kind, device_type, path=None):
    """The ``auto`` settings decided for data of ``label_kind`` on ``device_type``.

    Returns a dict: head, loss, metric, weighting, augment, precision. Raises
    InputError for combinations that do not fit (a CCC loss on a
    classification head, a metric the head does not report...).
    """
    head = head_for_kind(label_kind, path) if config.head == "auto" else config.head
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
    if weighting == "inverse" and loss not in ("bce", "ce"):
        raise InputError(path, f"label_weighting 'inverse' needs a bce or ce loss, not {loss!r}")
    augment = (head != "regression") if config.augment is None else bool(config.augment)
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" else "fp32"
    return {"head": head, "loss": loss, "metric": metric, "weighting": weighting,
            "augment": augment, "precision": precision}
