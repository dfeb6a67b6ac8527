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
import importlib
from typing import Any

# name -> module (relative to this package) that defines it, imported on first
# use: the settings (config) need no torch, so ``--help`` and recipe checks
# answer at once.
_NAMES = {
    "Augmenter": "augment", "default_resize": "augment",
    "LOWER_IS_BETTER": "config", "METRICS": "config", "TrainConfig": "config",
    "metric_is_lower_better": "config", "read_toml": "config", "resolve_auto": "config",
    "FrameWeights": "losses", "distillation_loss": "losses",
    "inverse_frequency_weights": "losses", "make_loss": "losses",
    "ResampleReport": "sampler", "WindowSampler": "sampler", "resample_windows": "sampler",
    "sequence_labels": "sampler", "window_label_counts": "sampler",
    "Split": "split", "split_sequences": "split",
    "NonFiniteLossError": "trainer", "TrainResult": "trainer", "Trainer": "trainer",
    "train": "trainer",
}

__all__ = [
    "TrainConfig", "read_toml", "resolve_auto", "METRICS", "LOWER_IS_BETTER",
    "metric_is_lower_better", "train", "Trainer", "TrainResult", "NonFiniteLossError",
    "Augmenter", "default_resize", "FrameWeights", "inverse_frequency_weights", "make_loss",
    "distillation_loss",
    "ResampleReport", "WindowSampler", "resample_windows", "sequence_labels",
    "window_label_counts", "Split", "split_sequences",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *globals()})
