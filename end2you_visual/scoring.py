"""Scoring predictions against labels: one dispatch from a model's head to
its metrics, for `test`, training validation, the recipes and the bench::

    from end2you_visual.scoring import score
    report = score(predictions, labels, "regression", names=["arousal", "valence"])
    report.pooled["arousal"].ccc

``predictions`` and ``labels`` are per-sequence (T_i, outputs) arrays in
output order; predictions are *activated* (``model.activate``: values for a
regression head, probabilities for a classification head). ``masks``
(per-sequence (T_i,) booleans, True = scored) leave frames out.

* ``regression`` -> :func:`~end2you_visual.metrics.evaluate_continuous`
  (per file and pooled);
* ``multiclass`` -> :func:`~end2you_visual.metrics.evaluate_categorical`
  (the top class against the one-hot label's class);
* ``multilabel`` -> :func:`~end2you_visual.metrics.evaluate_multilabel`
  (a label is on at a label value >= 0.5, predicted at a probability >= 0.5).

The same continuous predictions give two pooled CCCs, over **all frames**
and over the **face frames** (those with ``face_found``): `test` and
`evaluate` print both, named alike (:func:`frame_cccs`, :func:`ccc_line`).
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from .choices import HEAD_LABEL_KIND
from .errors import InputError
from .metrics import (CategoricalReport, ContinuousReport, MultiLabelReport,
                      evaluate_categorical, evaluate_continuous, evaluate_multilabel)

__all__ = ["HEAD_LABEL_KIND", "HEAD_FOR_KIND", "FRAME_SETS", "label_kind_of", "head_for_kind",
           "score", "frame_cccs", "ccc_line"]

#: The label kind a model head is trained and scored on (and back).
HEAD_FOR_KIND = {kind: head for head, kind in HEAD_LABEL_KIND.items()}
#: The two sets of frames a pooled CCC is given over, and their names in output.
FRAME_SETS = {"all_frames": "all frames", "face_frames": "face frames"}


def label_kind_of(head_kind: str) -> str:
    """The label kind (continuous, multilabel, multiclass) of a model head."""
    return HEAD_LABEL_KIND[head_kind]


def head_for_kind(label_kind: str, path: str | os.PathLike[str] | None = None) -> str:
    """The model head for a file's ``label_kind``; unlabelled data cannot train."""
    if label_kind not in HEAD_FOR_KIND:
        raise InputError(path, f"label kind {label_kind!r} cannot be trained on "
                               "(unlabelled data); generate it with label files")
    return HEAD_FOR_KIND[label_kind]


def score(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray],
          head_kind: str, masks: Sequence[npt.ArrayLike] | None = None,
          names: Sequence[str] | None = None, files: Sequence[str] | None = None
          ) -> Union[ContinuousReport, CategoricalReport, MultiLabelReport]:
    """The report of ``head_kind``'s metrics (see the module's docstring).

    Args:
        predictions, labels: lists of per-sequence (T_i, D) arrays.
        head_kind: ``"regression"``, ``"multiclass"`` or ``"multilabel"``.
        masks: optional per-sequence (T_i,) booleans (True = scored).
        names: the output names (default ``0, 1, ...``).
        files: per-sequence names (regression reports list them).

    Returns:
        A ``ContinuousReport``, ``CategoricalReport`` or ``MultiLabelReport``.
    """
    if head_kind not in HEAD_LABEL_KIND:
        raise ValueError(f"head_kind must be one of {list(HEAD_LABEL_KIND)}, not {head_kind!r}")
    if head_kind == "regression":
        return evaluate_continuous(predictions, labels, names=names, masks=masks, files=files)
    if masks is None:
        masks = [np.ones(len(p), bool) for p in predictions]
    if not predictions:
        raise InputError(None, "no predictions to score")
    scores = np.concatenate([np.asarray(p)[np.asarray(m, bool)]
                             for p, m in zip(predictions, masks)])
    targets = np.concatenate([np.asarray(y)[np.asarray(m, bool)]
                              for y, m in zip(labels, masks)])
    if head_kind == "multiclass":
        return evaluate_categorical(scores, targets.argmax(axis=1),
                                    num_classes=scores.shape[1], class_names=names)
    return evaluate_multilabel(scores, (targets >= 0.5).astype(np.int64), 0.5, label_names=names)


def frame_cccs(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray],
               face_found: Sequence[np.ndarray],
               names: List[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """The pooled CCC per output over all frames and over the face frames:
    ``{"all_frames": {name: ccc}, "face_frames": {name: ccc}}`` (None where
    undefined, e.g. no frame has a face).

    Args:
        predictions, labels: per-sequence (T_i, D) arrays (finite at every frame).
        face_found: per-sequence (T_i,) booleans.
        names: the D output names.
    """
    masks = {"all_frames": None, "face_frames": [np.asarray(f, bool) for f in face_found]}
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for key, mask in masks.items():
        if mask is not None and not any(m.any() for m in mask):
            out[key] = {n: None for n in names}
            continue
        pooled = evaluate_continuous(predictions, labels, names=names, masks=mask).pooled
        out[key] = {n: (pooled[n].ccc if math.isfinite(pooled[n].ccc) else None)
                    for n in names}
    return out


def ccc_line(title: str, frames: str, cccs: Dict[str, Optional[float]]) -> str:
    """One line of pooled CCCs named by their frames, the way `test` and
    `evaluate` print them: ``ccc_line("CCC", "face_frames", {"arousal": 0.5})``
    is ``"CCC (face frames): arousal 0.5000"`` (``n/a`` where undefined)."""
    values = ", ".join(f"{n} {v:.4f}" if v is not None and math.isfinite(v) else f"{n} n/a"
                       for n, v in cccs.items())
    return f"{title} ({FRAME_SETS[frames]}): {values}"
