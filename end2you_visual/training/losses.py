"""Training losses: 1 - CCC, MSE, weighted sigmoid BCE, weighted cross-entropy.

Every loss takes the model's raw outputs ``out`` (B, T, L), the labels
(B, T, L) and a frame mask (B, T) (True = the frame counts: not padding, and
with ``skip_no_face`` a face was found) and computes in float32, also under
bf16 autocast.

* ``ccc``: :func:`end2you_visual.ccc.ccc_loss`: 1 - CCC per sequence and per
  dimension, averaged (the paper's fine-tuning loss).
* ``mse``: mean squared error over the masked frames and dimensions.
* ``bce``: sigmoid binary cross-entropy per label, summed over the masked
  frames and labels, each frame multiplied by its weight, divided by
  (masked frames x labels).
* ``ce``: softmax cross-entropy against the argmax of the one-hot labels,
  each frame multiplied by its weight, divided by the masked frames. Frames
  whose labels are all zero carry no class and are left out.

Frame weights (:class:`FrameWeights`, ``label_weighting="inverse"``): label
*e* gets ``1 / n_e``, where ``n_e`` is the number of training frames
carrying *e* (value >= 0.5) in one epoch, after re-sampling. A frame's weight
is that of the **rarest label it carries** (the largest ``1 / n_e`` among its
labels), so a frame labelled happy + contempt weighs as a contempt frame.
A frame carrying no label (multi-label data) counts as one more category,
weight ``1 / n_none``. The weights are then scaled so that their mean over
the epoch's training frames is exactly 1, which keeps the loss on the scale
of the unweighted one. Explicit ``class_weights`` are used as given (no
scaling; frames with no label weigh 1).

Distillation (:func:`distillation_loss`, ``docs/distillation.md``): the
student's raw outputs against a teacher's, per masked frame, averaged over
the masked frames; temperature ``T`` divides the logits of both:

* multiclass: ``T^2 * KL(softmax(t / T) || softmax(s / T))`` (summed over
  the classes);
* multilabel: ``T^2 * BCE(sigmoid(s / T), sigmoid(t / T))``, the mean over
  the labels (its minimum, at ``s = t``, is the teacher's own entropy, not 0);
* regression: ``(s - t)^2``, the mean over the outputs (no temperature).

The ``T^2`` keeps the gradients' scale as ``T`` grows (Hinton et al. 2015).

Feature matching (:func:`feature_loss`): the student's per-frame embeddings,
mapped by a learned projection, against the teacher's: the squared
difference, the mean over the teacher's features, averaged over the masked
frames (FitNets, Romero et al. 2015, on the final embeddings).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..ccc import ccc_loss
from .parts import LossFn

if TYPE_CHECKING:
    from ..data import WindowDataset

__all__ = ["FrameWeights", "inverse_frequency_weights", "make_loss",
           "distillation_loss", "feature_loss"]

PRESENT = 0.5


@dataclass
class FrameWeights:
    """Per-label weights; a frame's weight is the largest among its labels.

    ``label_weights`` (L,), ``none_weight`` for frames carrying no label,
    ``scale`` multiplies every weight. Plain floats, so it travels to any
    device.
    """

    label_weights: list[float]
    none_weight: float = 1.0
    scale: float = 1.0

    def raw(self, labels: np.ndarray) -> np.ndarray:
        """NumPy: unscaled weights of frames ``labels`` (..., L)."""
        labels = np.asarray(labels)
        present = labels >= PRESENT
        w = np.where(present, np.asarray(self.label_weights, np.float64), 0.0).max(
            axis=-1, initial=0.0)
        return np.where(present.any(axis=-1), w, self.none_weight)

    def _on(self, device: torch.device) -> torch.Tensor:
        # Cached per device: a host-to-device copy every step would sync the host.
        cache = self.__dict__.setdefault("_device_weights", {})
        if device not in cache:
            cache[device] = torch.as_tensor(self.label_weights, dtype=torch.float32,
                                            device=device)
        return cache[device]

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """Torch: weights (B, T) of frames ``labels`` (B, T, L), float32."""
        present = labels >= PRESENT
        lw = self._on(labels.device)
        w = torch.where(present, lw, torch.zeros_like(lw)).amax(dim=-1)
        w = torch.where(present.any(dim=-1), w, torch.full_like(w, self.none_weight))
        return w * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"label_weights": [float(w) for w in self.label_weights],
                "none_weight": float(self.none_weight), "scale": float(self.scale)}


def inverse_frequency_weights(seq_labels: Sequence[tuple[np.ndarray, np.ndarray]],
                              dataset: WindowDataset, indices: Sequence[int],
                              columns: Sequence[int] | None = None) -> FrameWeights:
    """:class:`FrameWeights` with ``1 / n_e`` per label, mean frame weight 1.

    Args:
        seq_labels: per sequence ``(labels (n, L), valid (n,))`` (see
            :func:`~end2you_visual.training.sampler.sequence_labels`).
        dataset: the training WindowDataset (its windows).
        indices: window indices of one epoch (with the re-sampled copies).
        columns: label columns used (default all).

    Labels that no training frame carries get weight 0 (they never occur).
    """
    def frames_of(i: int) -> np.ndarray:
        q, start = dataset.windows[i]
        labels, valid = seq_labels[q]
        lab = labels if columns is None else labels[:, columns]
        stop = len(lab) if dataset.window is None else min(start + dataset.window, len(lab))
        keep = valid[start:stop]
        return lab[start:stop][keep]

    # Counts: each window's valid frames, as often as the window is used.
    counts: np.ndarray | None = None
    n_none = 0.0
    for i in indices:
        present = frames_of(i) >= PRESENT
        counts = present.sum(axis=0) + (0 if counts is None else counts)
        n_none += float((~present.any(axis=1)).sum())
    counts = np.asarray(counts, np.float64)
    label_w = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    weights = FrameWeights(label_weights=label_w.tolist(),
                           none_weight=1.0 / n_none if n_none else 0.0)
    total, n_frames = 0.0, 0
    for i in indices:
        raw = weights.raw(frames_of(i))
        total += float(raw.sum())
        n_frames += len(raw)
    weights.scale = n_frames / total if total > 0 else 1.0
    return weights


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def make_loss(kind: str, frame_weights: FrameWeights | None = None) -> LossFn:
    """A loss ``f(out, labels, mask) -> scalar`` of kind ccc/mse/bce/ce (module doc).

    ``frame_weights``: a :class:`FrameWeights` (bce, ce) or None (all 1).
    """
    def weights(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.to(torch.float32)
        return w if frame_weights is None else w * frame_weights(labels)

    def ccc(out: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ccc_loss(out.float(), labels.float(), mask)

    def mse(out: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        err = (out.float() - labels.float()).pow(2).mean(dim=-1)
        return _masked_mean(err, mask)

    def bce(out: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(out.float(), labels.float(), reduction="none")
        w = weights(labels, mask)
        den = mask.to(torch.float32).sum().clamp(min=1.0) * out.shape[-1]
        return (per * w.unsqueeze(-1)).sum() / den

    def ce(out: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        has_class = labels.amax(dim=-1) >= PRESENT
        mask = mask & has_class
        target = labels.argmax(dim=-1)
        per = F.cross_entropy(out.float().flatten(0, 1), target.flatten(),
                              reduction="none").view(target.shape)
        w = weights(labels, mask)
        return (per * w).sum() / mask.to(torch.float32).sum().clamp(min=1.0)

    losses: dict[str, LossFn] = {"ccc": ccc, "mse": mse, "bce": bce, "ce": ce}
    if kind not in losses:
        raise ValueError(f"unknown loss {kind!r}; choose one of {sorted(losses)}")
    return losses[kind]


def feature_loss(projected: torch.Tensor, teacher: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """The student's projected embeddings against the teacher's (module
    doc), a scalar.

    Args:
        projected: (B, T, F) the student's per-frame embeddings mapped to
            the teacher's size F.
        teacher: (B, T, F) the teacher's embeddings (no gradient).
        mask: (B, T) bool, True = the frame counts (default: every frame).

    Computed in float32 (float64 inputs stay float64); 0 when no frame counts.
    """
    dtype = torch.float64 if projected.dtype == torch.float64 else torch.float32
    p, t = projected.to(dtype), teacher.detach().to(dtype)
    if p.shape != t.shape:
        raise ValueError(f"projected student features {tuple(p.shape)} and teacher features "
                         f"{tuple(t.shape)} differ in shape")
    per = (p - t).pow(2).mean(dim=-1)
    if mask is None:
        mask = torch.ones(per.shape, dtype=torch.bool, device=per.device)
    return _masked_mean(per, mask)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, head: str,
                      temperature: float = 1.0, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """The student's outputs against the teacher's (module doc), a scalar.

    Args:
        student, teacher: raw outputs (B, T, L) (logits for classification
            heads); the teacher's carry no gradient.
        head: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        temperature: divides both logits (classification heads only).
        mask: (B, T) bool, True = the frame counts (default: every frame).

    Computed in float32 (float64 inputs stay float64), also under bf16
    autocast; 0 when no frame counts.
    """
    dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    s, t = student.to(dtype), teacher.detach().to(dtype)
    if s.shape != t.shape:
        raise ValueError(f"student outputs {tuple(s.shape)} and teacher outputs "
                         f"{tuple(t.shape)} differ in shape")
    scale = float(temperature) ** 2
    if head == "multiclass":
        log_s = F.log_softmax(s / temperature, dim=-1)
        log_t = F.log_softmax(t / temperature, dim=-1)
        per = (log_t.exp() * (log_t - log_s)).sum(dim=-1) * scale
    elif head == "multilabel":
        per = F.binary_cross_entropy_with_logits(
            s / temperature, torch.sigmoid(t / temperature), reduction="none").mean(dim=-1) * scale
    elif head == "regression":
        per = (s - t).pow(2).mean(dim=-1)
    else:
        raise ValueError(f"unknown head {head!r}; choose multiclass, multilabel or regression")
    if mask is None:
        mask = torch.ones(per.shape, dtype=torch.bool, device=per.device)
    return _masked_mean(per, mask)
