"""Evaluation metrics: continuous (CCC, Pearson, RMSE, MAE), categorical
(accuracy, UAR, macro F1, confusion matrix) and multi-label (ROC AUC, F1).

Continuous results are given per file and *pooled*: the headline number is
the AVEC practice, the CCC over all files' frames concatenated into one
sequence (not the mean of per-file CCCs). An optional mask per file (True =
keep, e.g. the face was found) excludes frames from every statistic; values
at excluded frames are ignored and may be NaN. At kept frames a NaN label or
prediction is an error.

Undefined values are NaN in the dataclasses and ``None`` in ``to_dict()``
(valid JSON): Pearson r when one sequence is constant, the recall of a class
with no true samples, the AUC of a label with only one class present, the
F1 of a label that is neither true nor predicted anywhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.stats import rankdata

from .ccc import ccc_columns
from .errors import InputError

#: Per-file arrays: one array (one file), or a sequence of them.
Arrays = Union[np.ndarray, Sequence[Any]]

__all__ = [
    "pearson", "rmse", "mae", "RegressionScores", "ContinuousReport",
    "evaluate_continuous", "CategoricalReport", "evaluate_categorical",
    "roc_auc", "MultiLabelReport", "evaluate_multilabel", "confusion_matrix",
]


def _jsonable(obj: Any) -> Any:
    """Dataclass/containers -> plain JSON types, NaN and inf -> None."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class _Serializable:
    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (``json.dumps``-able, NaN -> None)."""
        return _jsonable(self)


# ---------------------------------------------------------------- continuous

def _pair(x: Any, y: Any, path: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(path, f"predictions and labels differ in shape: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise InputError(path, "empty input")
    if not np.isfinite(y).all():
        raise InputError(path, "labels contain NaN or infinity")
    if not np.isfinite(x).all():
        raise InputError(path, "predictions contain NaN or infinity")
    return x, y


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation of two 1-D sequences (NaN if either is constant)."""
    x, y = _pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else math.nan


def rmse(x: Any, y: Any) -> float:
    """Root mean squared error of two equal-length sequences."""
    x, y = _pair(x, y)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def mae(x: Any, y: Any) -> float:
    """Mean absolute error of two equal-length sequences."""
    x, y = _pair(x, y)
    return float(np.mean(np.abs(x - y)))


@dataclass
class RegressionScores(_Serializable):
    """Scores of one output dimension over some frames."""
    ccc: float
    pearson: float
    rmse: float
    mae: float
    n_frames: int


def _scores(x: np.ndarray, y: np.ndarray) -> RegressionScores:
    """RegressionScores of two finite 1-D float64 arrays (possibly empty)."""
    if x.size == 0:
        return RegressionScores(math.nan, math.nan, math.nan, math.nan, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return RegressionScores(
            ccc=float(ccc_columns(x[:, None], y[:, None])[0]),
            pearson=pearson(x, y) if x.size > 1 else math.nan,
            rmse=float(np.sqrt(np.mean((x - y) ** 2))),
            mae=float(np.mean(np.abs(x - y))),
            n_frames=int(x.size),
        )


@dataclass
class ContinuousReport(_Serializable):
    """Continuous metrics: ``pooled[name]`` (headline, AVEC: all frames
    concatenated) and ``per_file[file][name]``."""
    names: List[str]
    files: List[str]
    pooled: Dict[str, RegressionScores]
    per_file: Dict[str, Dict[str, RegressionScores]]

    @property
    def headline(self) -> Dict[str, float]:
        """Pooled CCC per dimension."""
        return {n: self.pooled[n].ccc for n in self.names}


def _as_file_list(arrays: Arrays, what: str) -> List[Any]:
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    arrays = list(arrays)
    if not arrays:
        raise InputError(None, f"no {what} given")
    return arrays


def _as_2d(a: Any, path: str, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InputError(path, f"{what} must be (T,) or (T, D), got shape {a.shape}")
    return a


def _checked_file(pred: Any, label: Any, mask: Any, path: str
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One file's (pred, label, keep) after the checks in the module doc."""
    pred = _as_2d(pred, path, "predictions")
    label = _as_2d(label, path, "labels")
    if pred.shape != label.shape:
        raise InputError(path, f"predictions {pred.shape} and labels {label.shape} "
                               "differ in length or number of dimensions")
    if pred.shape[0] == 0:
        raise InputError(path, "empty sequence")
    keep = np.ones(pred.shape[0], bool) if mask is None else np.asarray(mask, bool)
    if keep.shape != (pred.shape[0],):
        raise InputError(path, f"mask has shape {keep.shape}, expected ({pred.shape[0]},)")
    if not np.isfinite(label[keep]).all():
        raise InputError(path, "labels contain NaN or infinity at kept frames")
    if not np.isfinite(pred[keep]).all():
        raise InputError(path, "predictions contain NaN or infinity at kept frames "
                               "(mask those frames out)")
    return pred, label, keep


def evaluate_continuous(preds: Arrays, labels: Arrays, names: Optional[Sequence[str]] = None,
                        masks: Optional[Sequence[Any]] = None,
                        files: Optional[Sequence[Any]] = None) -> ContinuousReport:
    """Continuous metrics per file and pooled over all files.

    ``preds``/``labels``: one (T, D) array or a list of per-file (T_i, D)
    arrays ((T,) is read as D = 1). ``masks``: None or a list of (T_i,)
    booleans, True = keep the frame. ``names``: the D output names (default
    ``dim0``...). ``files``: names used in the report and in error messages.
    """
    preds = _as_file_list(preds, "predictions")
    labels = _as_file_list(labels, "labels")
    if len(preds) != len(labels):
        raise InputError(None, f"{len(preds)} prediction files but {len(labels)} label files")
    files = [f"file{i}" for i in range(len(preds))] if files is None else [str(f) for f in files]
    masks = [None] * len(preds) if masks is None else list(masks)
    if len(files) != len(preds) or len(masks) != len(preds):
        raise InputError(None, "files/masks must have one entry per prediction file")
    checked = [_checked_file(p, l, m, f) for p, l, m, f in zip(preds, labels, masks, files)]
    dims = {p.shape[1] for p, _, _ in checked}
    if len(dims) != 1:
        raise InputError(None, f"files differ in number of dimensions: {sorted(dims)}")
    d = dims.pop()
    names = [f"dim{i}" for i in range(d)] if names is None else list(names)
    if len(names) != d:
        raise InputError(None, f"{len(names)} names for {d} dimensions")
    per_file = {}
    for f, (p, l, k) in zip(files, checked):
        per_file[f] = {n: _scores(p[k, j], l[k, j]) for j, n in enumerate(names)}
    all_p = np.concatenate([p[k] for p, _, k in checked])
    all_l = np.concatenate([l[k] for _, l, k in checked])
    if all_p.shape[0] == 0:
        raise InputError(None, "every frame is masked out")
    pooled = {n: _scores(all_p[:, j], all_l[:, j]) for j, n in enumerate(names)}
    return ContinuousReport(names=names, files=files, pooled=pooled, per_file=per_file)


# --------------------------------------------------------------- categorical

@dataclass
class CategoricalReport(_Serializable):
    """Single-label classification scores.

    ``confusion[i][j]`` counts frames of true class i predicted as class j.
    ``uar`` (unweighted average recall) is the mean recall over the classes
    that occur in the targets. ``macro_f1`` is the mean F1 over the classes
    that occur in the targets or the predictions.
    """
    class_names: List[str]
    accuracy: float
    uar: float
    macro_f1: float
    per_class_recall: Dict[str, float]
    per_class_f1: Dict[str, float]
    confusion: List[List[int]]
    n: int


def _class_indices(pred: Any, target: Any, num_classes: Optional[int]
                   ) -> Tuple[np.ndarray, np.ndarray, int]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.ndim == 2:                                   # scores -> argmax
        num_classes = pred.shape[1] if num_classes is None else num_classes
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or target.ndim != 1:
        raise InputError(None, "categorical predictions must be (N,) indices or (N, C) "
                               f"scores and targets (N,) indices; got {pred.shape}, {target.shape}")
    if pred.shape != target.shape:
        raise InputError(None, f"{pred.shape[0]} predictions but {target.shape[0]} targets")
    if pred.size == 0:
        raise InputError(None, "empty input")
    for a, what in ((target, "targets"), (pred, "predictions")):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(None, f"{what} contain NaN")
        if (a != np.round(a)).any() or (a < 0).any():
            raise InputError(None, f"{what} must be non-negative class indices")
    pred, target = pred.astype(np.int64), target.astype(np.int64)
    top = int(max(pred.max(), target.max())) + 1
    num_classes = top if num_classes is None else int(num_classes)
    if top > num_classes:
        raise InputError(None, f"class index {top - 1} out of range for {num_classes} classes")
    return pred, target, num_classes


def confusion_matrix(pred: Any, target: Any, num_classes: Optional[int] = None) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    pred, target, c = _class_indices(pred, target, num_classes)
    return np.bincount(target * c + pred, minlength=c * c).reshape(c, c)


def evaluate_categorical(pred: Any, target: Any, num_classes: Optional[int] = None,
                         class_names: Optional[Sequence[str]] = None) -> CategoricalReport:
    """Accuracy, UAR, macro F1, per-class recall and the confusion matrix.

    ``pred``: (N,) class indices or (N, C) scores (argmax is taken);
    ``target``: (N,) class indices.
    """
    pred, target, c = _class_indices(pred, target, num_classes)
    if class_names is None:
        class_names = [str(i) for i in range(c)]
    class_names = list(class_names)
    if len(class_names) != c:
        raise InputError(None, f"{len(class_names)} class names for {c} classes")
    cm = np.bincount(target * c + pred, minlength=c * c).reshape(c, c)
    tp = np.diag(cm).astype(np.float64)
    true_n = cm.sum(axis=1).astype(np.float64)
    pred_n = cm.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true_n > 0, tp / true_n, np.nan)
        f1 = np.where(true_n + pred_n > 0, 2 * tp / (true_n + pred_n), np.nan)
    return CategoricalReport(
        class_names=class_names,
        accuracy=float(tp.sum() / cm.sum()),
        uar=float(np.nanmean(recall)),
        macro_f1=float(np.nanmean(f1)),
        per_class_recall={n: float(r) for n, r in zip(class_names, recall)},
        per_class_f1={n: float(v) for n, v in zip(class_names, f1)},
        confusion=cm.tolist(),
        n=int(cm.sum()),
    )


# --------------------------------------------------------------- multi-label

def roc_auc(scores: Any, labels: Any) -> float:
    """ROC AUC from ranks (Mann-Whitney U), ties counted as one half.

    AUC = (sum of the positives' average ranks - P (P + 1) / 2) / (P N),
    which is the probability that a random positive scores above a random
    negative, plus half the probability of a tie. NaN when the labels hold
    only one class.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise InputError(None, f"AUC needs 1-D scores and labels of equal length, "
                               f"got {scores.shape} and {labels.shape}")
    if scores.size == 0:
        raise InputError(None, "AUC of empty input")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise InputError(None, "labels contain NaN")
    if not np.isfinite(scores).all():
        raise InputError(None, "scores contain NaN or infinity")
    if not np.isin(labels, (0, 1)).all():
        raise InputError(None, "AUC labels must be 0/1")
    pos = labels.astype(bool)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores, method="average")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class MultiLabelReport(_Serializable):
    """Per-label ROC AUC and F1 at ``threshold``; macro means skip NaNs."""
    label_names: List[str]
    threshold: float
    auc: Dict[str, float]
    f1: Dict[str, float]
    macro_auc: float
    macro_f1: float
    n: int


def evaluate_multilabel(scores: Any, targets: Any, threshold: float = 0.5,
                        label_names: Optional[Sequence[str]] = None) -> MultiLabelReport:
    """Multi-label scores: ``scores`` (N, L) (e.g. sigmoid outputs) and 0/1
    ``targets`` (N, L). A label is predicted where score >= threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise InputError(None, f"scores and targets must both be (N, L), "
                               f"got {scores.shape} and {targets.shape}")
    if scores.shape[0] == 0:
        raise InputError(None, "empty input")
    n_labels = scores.shape[1]
    label_names = [str(i) for i in range(n_labels)] if label_names is None else list(label_names)
    if len(label_names) != n_labels:
        raise InputError(None, f"{len(label_names)} label names for {n_labels} labels")
    auc: Dict[str, float] = {}
    f1: Dict[str, float] = {}
    for j, name in enumerate(label_names):
        auc[name] = roc_auc(scores[:, j], targets[:, j])
        truth = targets[:, j].astype(bool)
        guess = scores[:, j] >= threshold
        tp = int((truth & guess).sum())
        den = int(truth.sum()) + int(guess.sum())
        f1[name] = 2.0 * tp / den if den else math.nan

    def nanmean(values: Iterable[float]) -> float:
        v = [x for x in values if not math.isnan(x)]
        return float(np.mean(v)) if v else math.nan

    return MultiLabelReport(
        label_names=label_names, threshold=float(threshold), auc=auc, f1=f1,
        macro_auc=nanmean(auc.values()), macro_f1=nanmean(f1.values()),
        n=int(scores.shape[0]),
    )
