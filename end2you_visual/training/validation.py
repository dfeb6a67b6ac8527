"""Validation of a training run, two parts of
:class:`~end2you_visual.training.Trainer`:

* :class:`Validation`: predictions on the validation windows, assembled per
  sequence, scored with :func:`end2you_visual.scoring.score`;
* :class:`EarlyStopping`: the best score by the run's metric, its epoch, the
  epochs since (patience) and how the run stopped, kept in ``last.pt``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import WindowDataset
from ..errors import InputError
from ..models.checkpoint import unwrap_model
from ..scoring import score
from . import distributed
from .distributed import DistInfo
from .parts import LossFn
from .steps import NonFiniteLossError, ToDevice

__all__ = ['Validation', 'EarlyStopping']

# (predictions (n, L), labels (n, L), keep (n,)) of one validation sequence
SequenceOutputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class Validation:
    """Predictions on the validation windows and their metrics.

    ``model``: the trained model (its buffers broadcast from the first
    process, its ``activate`` applied to the outputs); ``net``: what runs
    it (the model, or its compiled form; never DDP-wrapped, as processes
    validate different numbers of batches); ``loader``: batches of the
    WindowDataset ``dataset``; ``loss_fn(out, labels, mask)``: the loss
    reported; ``last_path``: named when the outputs are not finite.
    """

    def __init__(self, *, model: torch.nn.Module, net: torch.nn.Module,
                 loader: Iterable[dict[str, torch.Tensor]], dataset: WindowDataset,
                 to_device: ToDevice, autocast: AbstractContextManager[Any], loss_fn: LossFn,
                 head: str, label_names: list[str], dist: DistInfo, last_path: Path) -> None:
        self.model, self.net, self.dataset = model, net, dataset
        self.loader: Iterable[dict[str, torch.Tensor]] | None = loader
        self.to_device, self.autocast, self.loss_fn = to_device, autocast, loss_fn
        self.head, self.label_names = head, list(label_names)
        self.dist, self.last_path = dist, last_path

    @torch.no_grad()
    def predict_valid(self) -> tuple[float, list[SequenceOutputs]]:
        """Outputs on the validation windows, assembled per sequence.

        Returns ``(loss, [(pred (n, L), labels (n, L), keep (n,)) per sequence])``;
        all processes get everything.
        """
        if self.loader is None:
            raise RuntimeError("validation after Trainer.close()")
        distributed.broadcast_buffers(self.model, self.dist)
        self.net.eval()
        parts, loss_sum, n_seq = [], 0.0, 0
        for batch in self.loader:
            inputs, labels, mask, _ = self.to_device(batch)
            with self.autocast:
                out = self.net(*inputs)
            loss = self.loss_fn(out, labels, mask)
            loss_sum += float(loss) * len(labels)
            n_seq += len(labels)
            parts.append((batch["sequence"].numpy(), batch["start"].numpy(),
                          out.float().cpu().numpy(), labels.float().cpu().numpy(),
                          mask.cpu().numpy()))
        gathered = distributed.gather_objects((parts, loss_sum, n_seq), self.dist)
        mean_loss = sum(g[1] for g in gathered) / max(sum(g[2] for g in gathered), 1)
        seqs = []
        n_out = len(self.label_names)
        for _, info in self.dataset.sequences:
            seqs.append((np.full((info.length, n_out), np.nan, np.float32),
                         np.zeros((info.length, n_out), np.float32),
                         np.zeros(info.length, bool)))
        for g in gathered:
            for seq_ids, starts, outs, labs, masks in g[0]:
                for q, s, o, lab, m in zip(seq_ids, starts, outs, labs, masks):
                    pred, target, keep = seqs[q]
                    n = min(len(o), len(pred) - s)
                    pred[s:s + n], target[s:s + n], keep[s:s + n] = o[:n], lab[:n], m[:n]
        return mean_loss, seqs

    def validate(self) -> dict[str, float]:
        """Validation metrics: {loss, and the head's metrics (see config.METRICS)}."""
        loss, seqs = self.predict_valid()
        metrics = {"loss": loss}
        kept = [(p[k], t[k]) for p, t, k in seqs]
        preds = [p for p, _ in kept if len(p)]
        targets = [t for p, t in kept if len(p)]
        if not preds:
            raise InputError(None, "no validation frame is left (all masked out)")
        for p in preds:
            if not np.isfinite(p).all():
                raise NonFiniteLossError("the model's validation outputs are NaN or infinite; "
                                         f"training stopped, the last good checkpoint is "
                                         f"{self.last_path}")
        if self.head == "multiclass":  # frames without a class are not scored
            keep = [t.max(axis=1) >= 0.5 for t in targets]
            preds = [p[k] for p, k in zip(preds, keep)]
            targets = [t[k] for t, k in zip(targets, keep)]
        base: Any = unwrap_model(self.model)  # a TemporalHeadModel
        preds = [base.activate(torch.from_numpy(p)).numpy() for p in preds]
        report: Any = score(preds, targets, self.head, names=self.label_names)  # the head's
        if self.head == "regression":
            for key in ("ccc", "pearson", "rmse", "mae"):
                values = [getattr(report.pooled[n], key) for n in self.label_names]
                metrics[key] = float(np.mean(values))
            for n in self.label_names:
                metrics[f"ccc_{n}"] = float(report.pooled[n].ccc)
        elif self.head == "multiclass":
            metrics.update(accuracy=report.accuracy, uar=report.uar, f1=report.macro_f1)
        else:
            metrics.update(auc=report.macro_auc, f1=report.macro_f1)
        return metrics

    def close(self) -> None:
        """Drop the loader (its worker processes end with it)."""
        self.loader = None


def is_better(score: float | None, best: float | None, lower: bool) -> bool:
    """``score`` beats ``best``; an undefined (NaN) score only fills an empty slot,
    and any defined score beats an undefined best."""
    if score is None or not math.isfinite(score):
        return best is None
    if best is None or not math.isfinite(best):
        return True
    return score < best if lower else score > best


class EarlyStopping:
    """The best validation score by ``metric`` (``lower_is_better`` or
    higher), its epoch, and the epochs since: after ``patience`` epochs
    without a better score the run stops early.

    Its state (``best_score``, ``best_epoch``, ``bad_epochs``, ``stopped``:
    None while running, ``"completed"``, ``"early_stopping"``; and
    ``metric``) is kept in ``last.pt``.
    """

    def __init__(self, metric: str, lower_is_better: bool, patience: int) -> None:
        self.metric, self.lower_is_better, self.patience = metric, lower_is_better, patience
        self.best_score: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped: str | None = None

    def observe(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s validation ``score``; True when it is the best so
        far (then ``epoch`` is the best epoch). Sets ``stopped`` to
        ``"early_stopping"`` when patience runs out."""
        improved = is_better(score, self.best_score, self.lower_is_better)
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = float(score), epoch, 0
        else:
            self.bad_epochs += 1
        if self.should_stop:
            self.stopped = "early_stopping"
        return improved

    def complete(self) -> None:
        """The run trained all its epochs."""
        self.stopped = "completed"

    @property
    def should_stop(self) -> bool:
        """Patience ran out: ``patience`` epochs without a better score."""
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """``best_score``, ``best_epoch``, ``bad_epochs``, ``stopped``, ``metric``."""
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "stopped": self.stopped, "metric": self.metric}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's ``training`` dict (its ``metric`` is
        the caller's to check: a run selects by one metric)."""
        self.best_score, self.best_epoch = state["best_score"], int(state["best_epoch"])
        self.bad_epochs, self.stopped = int(state["bad_epochs"]), state.get("stopped")
