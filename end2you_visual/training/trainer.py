"""The training loop: data, model, loss, validation, checkpoints, early stopping.

:func:`train` runs a :class:`TrainConfig` and returns a :class:`TrainResult`;
:class:`Trainer` exposes the steps (``train_epoch``, ``validate``...) for
notebooks and for ``bench/training.py``.

Everything that can be checked is checked before any model is built or any
pixel read: settings (types and ranges), the device, that ``out_dir`` is
writable and holds no other run (unless ``resume`` or ``overwrite``), the
settings of a resumed run, files, label names, the split, batch size against
the data, the metric against the head.

The run is split along its seams: :mod:`.preparation` (data and model set-up),
:mod:`.steps` (the step loop), :mod:`.validation`, :mod:`.checkpoints`
(checkpoints, logs, resume), :mod:`.distill` (a teacher, unlabelled data);
this module runs the epochs.

The fast path: DataLoader workers read uint8 windows from HDF5 (pinned
memory on CUDA); the uint8 batch moves to the device asynchronously and is
augmented, converted and normalised there; the forward pass runs under bf16
autocast with channels-last convolutions, optionally ``torch.compile``d. On
CUDA the loop syncs with the host only every ``SYNC_EVERY`` steps (the loss
shown, NaN check) and at the end of the epoch; the progress bar counts steps.

Files in ``out_dir``: ``last.pt`` (every epoch, atomically: model, optimiser,
scheduler, epoch, best score, early-stopping counter, RNG states, history),
``best.pt`` (the best model by the validation metric, a plain model
checkpoint), ``log.csv`` (one row per epoch), ``train.log``, ``tensorboard/``
(when tensorboard is importable).
"""
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..files import DISK_FULL
from . import distributed
from .checkpoints import (BEST, LAST, LOG_CSV, Checkpointing, RunLock, check_existing_run,
                          check_out_dir)
from .config import TrainConfig
from .distill import Distillation
from .preparation import RunSetup
from .steps import NonFiniteLossError, StepLoop
from .subnormals import flush_denormals
from .validation import Validation

__all__ = ["train", "Trainer", "TrainResult", "NonFiniteLossError"]

logger = logging.getLogger("end2you_visual.training")

@dataclass
class TrainResult:
    """What a run produced.

    ``best_score`` / ``best_epoch``: by ``metric`` on validation;
    ``stopped``: ``"completed"`` (all epochs), ``"early_stopping"``;
    ``history``: one dict per epoch (the rows of ``log.csv``);
    ``resample``: the re-sampling report's dict (None without re-sampling).
    """

    metric: str
    best_score: float
    best_epoch: int
    epochs_run: int
    stopped: str
    out_dir: str
    best_path: str
    last_path: str
    log_path: str
    history: list = field(default_factory=list)
    resample: dict = None
    label_names: list = field(default_factory=list)
    head: str = ""


def train(config=None, **overrides):
    """Train as ``config`` (a TrainConfig, or keyword settings) says.

    ``train(TrainConfig(train=["data/"], out_dir="runs/a"))`` or
    ``train(train=["data/"], out_dir="runs/a", epochs=10)``.
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    trainer = Trainer(config)
    try:
        return trainer.fit()
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise InputError(err.filename or config.out_dir, _disk_full(err, trainer)) from None
    finally:
        trainer.close()


def _disk_full(err, trainer):
    """What a run stopped by a full disk left: every file is written
    atomically, so ``last.pt`` on disk is the last complete epoch."""
    last = trainer.last_path
    kept = (f"{last} holds the last complete epoch: free some space and run again with "
            "--resume" if last.is_file() else "no epoch was complete: free some space and "
            "run again")
    return f"cannot be written: {err.strerror or err}; the run stopped, {kept}"


def _pick_device(device, dist_info):
    """The resolved ``device``; under DDP each process takes its local rank's GPU."""
    if device.type == "cuda" and (dist_info.enabled or device.index is None):
        device = torch.device("cuda", dist_info.local_rank if dist_info.enabled else 0)
    return device


def _is_better(score, best, lower):
    """``score`` beats ``best``; an undefined (NaN) score only fills an empty slot,
    and any defined score beats an undefined best."""
    if score is None or not math.isfinite(score):
        return best is None
    if best is None or not math.isfinite(best):
        return True
    return score < best if lower else score > best


class Trainer(RunSetup, StepLoop, Validation, Checkpointing, Distillation):
    """One training run; construct (checks + set-up), then :meth:`fit`.

    Its parts live in their own modules: :class:`~.preparation.RunSetup` (data and
    model set-up), :class:`~.steps.StepLoop` (the step loop),
    :class:`~.validation.Validation`, :class:`~.checkpoints.Checkpointing`
    (checkpoints and logs) and :class:`~.distill.Distillation` (a teacher's
    outputs as targets); this class runs the epochs.

    Attributes of interest: ``config``, ``device``, ``model`` (the
    :class:`VisualModel`), ``train_set`` / ``valid_set`` (WindowDatasets),
    ``label_names``, ``head``, ``loss_kind``, ``metric``, ``resample_report``,
    ``frame_weights``, ``history``.
    """

    def __init__(self, config):
        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(dict(config))
        config.check()
        self.config = config
        self.out_dir = Path(config.out_dir)
        self._tb = None
        self._log_handler = None
        self._notes = []  # set-up messages, logged once train.log is open
        # Everything the user typed is checked before any process group, data or model.
        device = resolve_device(config.device)
        check_out_dir(self.out_dir)
        self._run_lock = RunLock(self.out_dir)  # one writer per run folder
        try:
            self._replacing = check_existing_run(self.out_dir, config.resume, config.overwrite)
            self.last_path, self.best_path = self.out_dir / LAST, self.out_dir / BEST
            self._resume_ckpt = self._read_resume()
        except BaseException:
            self._run_lock.release(failed=True)
            raise
        self.dist = distributed.setup(device.type)
        try:
            self.device = _pick_device(device, self.dist)
            self._prepare_data()
            self._prepare_model()
        except BaseException:
            distributed.teardown(self.dist)
            self._run_lock.release(failed=True)
            raise
    # ------------------------------------------------------------------ fit

    def fit(self):
        """Train until ``epochs`` or early stopping; returns a :class:`TrainResult`."""
        cfg = self.config
        self._start_logs()
        if self.dist.is_main:
            for note in self._notes:
                logger.info(note)
            self._describe()
        if self.stopped == "early_stopping":
            logger.info("the resumed run had already stopped early at epoch %d",
                        self.start_epoch - 1)
            return self._result()
        with flush_denormals(self.device.type == "cpu"):
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                if self._run_epoch(epoch):
                    break
            else:
                self.stopped = "completed"
        return self._result()

    def _run_epoch(self, epoch):
        """Train + validate + save one epoch; True when early stopping fires."""
        stats = self.train_epoch(epoch)
        start = time.perf_counter()
        metrics = self.validate()
        score = metrics[self.metric]
        if not math.isfinite(score) and self.dist.is_main:
            logger.warning("validation %s is undefined (NaN) at epoch %d", self.metric, epoch)
        improved = _is_better(score, self.best_score, self.lower_is_better)
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = float(score), epoch, 0
        else:
            self.bad_epochs += 1
        early = self.bad_epochs >= self.config.patience
        if early:
            self.stopped = "early_stopping"
        row = {"epoch": epoch, "train_loss": stats["train_loss"],
               **{f"valid_{k}": v for k, v in metrics.items()},
               "lr": self.optimizer.param_groups[0]["lr"], "train_fps": stats["train_fps"],
               "train_seconds": stats["train_seconds"],
               "data_wait_seconds": stats.get("data_wait_seconds", 0.0),
               "valid_seconds": time.perf_counter() - start,
               "best_epoch": self.best_epoch, "best_score": self.best_score}
        self.history.append(row)
        self._save(epoch, improved, metrics)
        if self.dist.is_main:
            logger.info("epoch %d: train loss %.4f, valid %s %.4f%s (best %.4f at epoch %d), "
                        "%.0f frames/s (%.1f s waiting for data), %.1f s", epoch,
                        stats["train_loss"], self.metric, score, " *" if improved else "",
                        self.best_score if self.best_score is not None else float("nan"),
                        self.best_epoch, stats["train_fps"], row["data_wait_seconds"],
                        stats["train_seconds"] + row["valid_seconds"])
            if self._tb is not None:
                self._tb.log(row, epoch)
            if early:
                logger.info("early stopping: %d epochs without a better validation %s",
                            self.bad_epochs, self.metric)
        return early

    def _result(self):
        return TrainResult(
            metric=self.metric,
            best_score=self.best_score if self.best_score is not None else float("nan"),
            best_epoch=self.best_epoch,
            epochs_run=self.history[-1]["epoch"] if self.history else 0,
            stopped=self.stopped or "", out_dir=str(self.out_dir),
            best_path=str(self.best_path), last_path=str(self.last_path),
            log_path=str(self.out_dir / LOG_CSV), history=list(self.history),
            resample=self.resample_report.to_dict() if self.resample_report else None,
            label_names=list(self.label_names), head=self.head)

    def close(self):
        """Stop loader workers, close logs, leave the process group."""
        # A DataLoader's workers end when its last iterator is dropped (persistent
        # ones live in the loader): drop the prefetched iterators and the loaders.
        getattr(self, "_next_epoch", {}).clear()
        self.train_loader = self.valid_loader = None
        if self._tb is not None:
            self._tb.close()
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        distributed.teardown(self.dist)
        self._run_lock.release()
