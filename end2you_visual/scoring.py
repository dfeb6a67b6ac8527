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
"""
import numpy as np

from .errors import InputError
from .metrics import evaluate_categorical, evaluate_continuous, evaluate_multilabel

__all__ = ["HEAD_LABEL_KIND", "HEAD_FOR_KIND", "label_kind_of", "head_for_kind", "score"]

#: The label kind a model head is trained and scored on (and back).
HEAD_LABEL_KIND = {"regression": "continuous", "multilabel": "multilabel",
                   "multiclass": "multiclass"}
HEAD_FOR_KIND = {kind: head for head, kind in HEAD_LABEL_KIND.items()}


def label_kind_of(head_kind):
    """The label kind (continuous, multilabel, multiclass) of a model head."""
    return HEAD_LABEL_KIND[head_kind]


def head_for_kind(label_kind, path=None):
    """The model head for a file's ``label_kind``; unlabelled data cannot train."""
    if label_kind not in HEAD_FOR_KIND:
        raise InputError(path, f"label kind {label_kind!r} cannot be trained on "
                               "(unlabelled data); generate it with label files")
    return HEAD_FOR_KIND[label_kind]


def score(predictions, labels, head_kind, masks=None, names=None, files=None):
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
