"""Training: categorical pretraining and CCC fine-tuning (``docs/training.md``).

* :class:`TrainConfig`: every setting (defaults = the paper's), from Python,
  a TOML recipe (:meth:`TrainConfig.from_toml`) or the CLI.
* :func:`train` -> :class:`TrainResult`; :class:`Trainer` for step-by-step use.
* :func:`resample_windows` / :class:`ResampleReport`: the rare-label window
  re-sampling and its per-label frame counts before and after.
* :func:`make_loss`, :class:`FrameWeights`, :func:`inverse_frequency_weights`.
* :func:`distillation_loss`: a student's outputs against a teacher's
  (``teacher``, ``docs/distillation.md``).
* :class:`Augmenter`: batched resize + random crop + brightness/saturation.
"""
from .augment import Augmenter, default_resize
from .config import (LOWER_IS_BETTER, METRICS, TrainConfig, metric_is_lower_better, read_toml,
                     resolve_auto)
from .losses import FrameWeights, distillation_loss, inverse_frequency_weights, make_loss
from .sampler import (ResampleReport, WindowSampler, resample_windows, sequence_labels,
                      window_label_counts)
from .split import Split, split_sequences
from .trainer import NonFiniteLossError, TrainResult, Trainer, train

__all__ = [
    "TrainConfig", "read_toml", "resolve_auto", "METRICS", "LOWER_IS_BETTER",
    "metric_is_lower_better", "train", "Trainer", "TrainResult", "NonFiniteLossError",
    "Augmenter", "default_resize", "FrameWeights", "inverse_frequency_weights", "make_loss",
    "distillation_loss",
    "ResampleReport", "WindowSampler", "resample_windows", "sequence_labels",
    "window_label_counts", "Split", "split_sequences",
]
