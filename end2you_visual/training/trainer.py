"""The training loop: data, model, loss, validation, checkpoints, early stopping.

:func:`train` runs a :class:`TrainConfig` and returns a :class:`TrainResult`;
:class:`Trainer` exposes the steps (``train_epoch``, ``validate``...) for
notebooks and for ``bench/training.py``.

Everything that can be checked is checked before any model is built or any
pixel read: settings (types and ranges), the device, that ``out_dir`` is
writable and holds no other run (unless ``resume`` or ``overwrite``), the
settings of a resumed run, files, label names, the split, batch size against
the data, the metric against the head.

The Trainer is composed of parts, each an object with its own state and
only the references it needs; the Trainer builds them (:mod:`.preparation`
sets up the data, the model and the loaders), runs the epochs and calls
them:

* :class:`~.steps.StepLoop`: the optimiser steps of an epoch (the
  optimiser, schedule and augmentation are its state);
* :class:`~.validation.Validation`: the validation metrics;
* :class:`~.validation.EarlyStopping`: the best score, its epoch, patience;
* :class:`~.checkpoints.Checkpointing`: ``last.pt`` / ``best.pt``, the
  logs, the history and the random states;
* :class:`~.distill.Distillation`: the teacher, its loss and projection.

A part that carries state over a resume has ``state_dict()`` (its entries
of ``last.pt``'s flat ``training`` dict) and ``load_state_dict(state)``;
the Trainer joins them into ``last.pt`` and hands them back on resume. A
new part is a class in its own module (or beside its kin), built in
:meth:`Trainer._build` from what it needs and called from the epoch loop
(:meth:`Trainer._run_epoch`) or the step loop.

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
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..files import DISK_FULL
from ..models.build import model_inputs
from . import distributed
from .augment import Augmenter
from .checkpoints import (BEST, LAST, LOG_CSV, Checkpointing, RunLock, check_existing_run,
                          check_out_dir, read_resume, resume_changes)
from .config import TrainConfig
from .distill import Distillation, training_sampler
from .distributed import DistInfo
from .losses import make_loss
from .parts import Batch, LossFn, RunModel
from .preparation import RunData, make_loader, prepare_data, prepare_model
from .sampler import WindowSampler
from .state import seed_everything
from .steps import NonFiniteLossError, StepLoop, ToDevice
from .subnormals import flush_denormals
from .validation import EarlyStopping, SequenceOutputs, Validation

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
    history: list[dict[str, Any]] = field(default_factory=list)
    resample: dict[str, Any] | None = None
    label_names: list[str] = field(default_factory=list)
    head: str = ""


def train(config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
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


def _disk_full(err: OSError, trainer: Trainer) -> str:
    """What a run stopped by a full disk left: every file is written
    atomically, so ``last.pt`` on disk is the last complete epoch."""
    last = trainer.last_path
    kept = (f"{last} holds the last complete epoch: free some space and run again with "
            "--resume" if last.is_file() else "no epoch was complete: free some space and "
            "run again")
    return f"cannot be written: {err.strerror or err}; the run stopped, {kept}"


def _pick_device(device: torch.device, dist_info: DistInfo) -> torch.device:
    """The resolved ``device``; under DDP each process takes its local rank's GPU."""
    if device.type == "cuda" and (dist_info.enabled or device.index is None):
        device = torch.device("cuda", dist_info.local_rank if dist_info.enabled else 0)
    return device


def _part_attribute(part: str, name: str) -> property:
    """A read-only Trainer attribute that is the attribute ``name`` of its ``part``."""
    def get(self: Trainer) -> Any:
        return getattr(getattr(self, part), name)

    return property(get, doc=f"``{part}.{name}``")


class Trainer:
    """One training run; construct (checks + set-up), then :meth:`fit`.

    The run is composed of parts (module doc), each with its own state:
    ``data`` (:class:`~.preparation.RunData`), ``steps``
    (:class:`~.steps.StepLoop`), ``validation``
    (:class:`~.validation.Validation`), ``early_stopping``
    (:class:`~.validation.EarlyStopping`), ``checkpointing``
    (:class:`~.checkpoints.Checkpointing`) and ``distillation``
    (:class:`~.distill.Distillation`); this class builds them and runs the
    epochs.

    Attributes of interest: ``config``, ``device``, ``model`` (the
    :class:`VisualModel`), ``train_set`` / ``valid_set`` (WindowDatasets),
    ``label_names``, ``head``, ``loss_kind``, ``metric``, ``resample_report``,
    ``frame_weights``, ``history`` (the parts' attributes, read here).
    """

    # The data's attributes (read-only: the data is set up once).
    label_kind = _part_attribute("data", "label_kind")
    frame_size = _part_attribute("data", "frame_size")
    framing = _part_attribute("data", "framing")
    uses_audio = _part_attribute("data", "uses_audio")
    audio_rate = _part_attribute("data", "audio_rate")
    auto = _part_attribute("data", "auto")
    head = _part_attribute("data", "head")
    loss_kind = _part_attribute("data", "loss_kind")
    metric = _part_attribute("data", "metric")
    lower_is_better = _part_attribute("data", "lower_is_better")
    label_names = _part_attribute("data", "label_names")
    columns = _part_attribute("data", "columns")
    split = _part_attribute("data", "split")
    train_set = _part_attribute("data", "train_set")
    valid_set = _part_attribute("data", "valid_set")
    indices = _part_attribute("data", "indices")
    resample_report = _part_attribute("data", "resample_report")
    frame_weights = _part_attribute("data", "frame_weights")
    unlabelled_files = _part_attribute("data", "unlabelled_files")
    unlabelled_set = _part_attribute("data", "unlabelled_set")
    unlabelled_count = _part_attribute("data", "unlabelled_count")
    # The parts' attributes.
    optimizer = _part_attribute("steps", "optimizer")
    scheduler = _part_attribute("steps", "scheduler")
    augment = _part_attribute("steps", "augment")
    autocast = _part_attribute("steps", "autocast")
    train_loader = _part_attribute("steps", "loader")
    train_sampler = _part_attribute("steps", "sampler")
    valid_loader = _part_attribute("validation", "loader")
    input_keys = _part_attribute("to_device", "input_keys")
    best_score = _part_attribute("early_stopping", "best_score")
    best_epoch = _part_attribute("early_stopping", "best_epoch")
    bad_epochs = _part_attribute("early_stopping", "bad_epochs")
    stopped = _part_attribute("early_stopping", "stopped")
    history = _part_attribute("checkpointing", "history")
    teacher = _part_attribute("distillation", "teacher")
    _teacher_columns = _part_attribute("distillation", "columns")
    projection = _part_attribute("distillation", "projection")
    projection_net = _part_attribute("distillation", "projection_net")

    def __init__(self, config: TrainConfig | Mapping[str, Any]) -> None:
        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(dict(config))
        config.check()
        self.config = config
        self.out_dir = Path(config.out_dir)
        self._notes: list[str] = []  # set-up messages, logged once train.log is open
        # Everything the user typed is checked before any process group, data or model.
        device = resolve_device(config.device)
        check_out_dir(self.out_dir)
        self._run_lock = RunLock(self.out_dir)  # one writer per run folder
        try:
            self._replacing = check_existing_run(self.out_dir, config.resume, config.overwrite)
            self.last_path, self.best_path = self.out_dir / LAST, self.out_dir / BEST
            resume = read_resume(self.last_path, config)
        except BaseException:
            self._run_lock.release(failed=True)
            raise
        self.dist = distributed.setup(device.type)
        try:
            self.device = _pick_device(device, self.dist)
            self.data: RunData = prepare_data(config, self.device, self.dist, self._notes)
            self._build(resume)
        except BaseException:
            distributed.teardown(self.dist)
            self._run_lock.release(failed=True)
            raise

    # ------------------------------------------------------------ set-up

    def _build(self, resume: dict[str, Any] | None) -> None:
        """The model and the parts (on the device, in ``dist``'s processes);
        a resumed run's parts continue from ``resume``."""
        cfg, data, dist = self.config, self.data, self.dist
        self.start_epoch = 1
        seed_everything(cfg.seed)
        model = prepare_model(cfg, data, resume, self.last_path, self._notes)
        self.model: RunModel = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.to_device = ToDevice(self.device, model_inputs(model), data.columns,
                                  cfg.skip_no_face)
        loss_fn = make_loss(data.loss_kind, data.frame_weights)
        autocast: AbstractContextManager[Any] = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if data.auto["precision"] == "bf16" else nullcontext())
        self.distillation = Distillation.load(
            cfg, student=self.model, head=data.head, label_names=data.label_names,
            frame_size=data.frame_size, audio_rate=data.audio_rate, device=self.device,
            loss_fn=loss_fn, autocast=autocast, notes=self._notes)
        optimizer = torch.optim.Adam(list(self.model.parameters())
                                     + self.distillation.parameters(),
                                     lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
                     if cfg.scheduler == "cosine" else None)
        augment = (Augmenter(data.frame_size, cfg.resize, cfg.brightness, cfg.saturation,
                             seed=cfg.seed + 1, hflip=cfg.hflip)
                   if data.auto["augment"] else None)
        self.net: torch.nn.Module = self.model
        if cfg.compile:
            self.net = cast(torch.nn.Module, torch.compile(self.net))
        self.eval_net = self.net  # no DDP wrapper: ranks validate different numbers of batches
        if dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
            self.distillation.distribute(ids)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        train_sampler = training_sampler(data.indices, len(data.train_set),
                                         data.unlabelled_set, data.unlabelled_count,
                                         shuffle=True, seed=cfg.seed, rank=dist.rank,
                                         world_size=dist.world_size)
        valid_sampler = WindowSampler(range(len(data.valid_set)), shuffle=False,
                                      rank=dist.rank, world_size=dist.world_size, pad=False)
        self.steps = StepLoop(
            net=self.net, model=self.model, optimizer=optimizer, scheduler=scheduler,
            augment=augment, loss_fn=loss_fn, autocast=autocast,
            distillation=self.distillation, to_device=self.to_device,
            loader=make_loader(data.train_set, train_sampler, cfg.batch_size,
                               num_workers=cfg.num_workers, device=self.device, seed=cfg.seed,
                               unlabelled=data.unlabelled_set),
            sampler=train_sampler, config=cfg, dist=dist, last_path=self.last_path)
        self.validation = Validation(
            model=self.model, net=self.eval_net,
            loader=make_loader(data.valid_set, valid_sampler,
                               cfg.valid_batch_size or cfg.batch_size,
                               num_workers=cfg.num_workers, device=self.device, seed=cfg.seed),
            dataset=data.valid_set, to_device=self.to_device, autocast=autocast,
            loss_fn=loss_fn, head=data.head, label_names=data.label_names, dist=dist,
            last_path=self.last_path)
        self.early_stopping = EarlyStopping(data.metric, data.lower_is_better, cfg.patience)
        self.checkpointing = Checkpointing(self.out_dir, config=cfg, model=self.model,
                                           dist=dist, replacing=self._replacing)
        if resume is not None:
            self._restore(resume["training"])

    @property
    def loss_fn(self) -> LossFn:
        """The label loss ``f(out, labels, mask) -> scalar``; set it to train
        and validate with another."""
        return self.steps.loss_fn

    @loss_fn.setter
    def loss_fn(self, loss_fn: LossFn) -> None:
        self.steps.loss_fn = self.validation.loss_fn = self.distillation.loss_fn = loss_fn

    # ------------------------------------------------------------ state

    def _training_state(self, epoch: int) -> dict[str, Any]:
        """``last.pt``'s ``training`` dict after ``epoch``: the parts' entries
        (every process takes part: the random states are gathered)."""
        return {"epoch": epoch, **self.early_stopping.state_dict(),
                **self.steps.state_dict(), **self.checkpointing.state_dict(),
                **self.distillation.state_dict()}

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Continue the parts from ``last.pt``'s ``training`` dict ``state``;
        the settings that a resume may change apply from here on."""
        self.distillation.load_state_dict(state)
        if state.get("metric") != self.metric:
            raise InputError(self.last_path, f"the run being resumed selects by "
                                             f"{state.get('metric')!r}, not {self.metric!r}")
        applied, _ = resume_changes(state.get("config", {}), self.config)
        self.steps.load_state_dict(state, overrides={
            name: getattr(self.config, name) for name, _, _ in applied
            if name in ("lr", "weight_decay")})
        self.early_stopping.load_state_dict(state)
        self.start_epoch = int(state["epoch"]) + 1
        if applied:
            self._notes.append(f"resuming with changed settings, applied from epoch "
                               f"{self.start_epoch}: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                                   for k, a, b in applied))
        self.checkpointing.load_state_dict(state)  # the random states: last
        self._notes.append(f"resuming {self.last_path} after epoch {state['epoch']} (best "
                           f"{self.metric} {self.best_score} at epoch {self.best_epoch})")

    # ------------------------------------------------------------------ fit

    def fit(self) -> TrainResult:
        """Train until ``epochs`` or early stopping; returns a :class:`TrainResult`."""
        cfg = self.config
        self.checkpointing.start_logs()
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
                self.early_stopping.complete()
        return self._result()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (each batch through :meth:`train_step`); returns
        {train_loss, train_fps (frames/s of this process x processes),
        train_seconds, steps, frames (this process's), first_batch_seconds
        (wait for the first batch), data_wait_seconds (time the loop waited
        for the loader, first batch included)}."""
        return self.steps.run_epoch(epoch, self.train_step)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimiser step on a device batch ``(inputs, labels, mask,
        labelled)``; returns the loss tensor (no host sync)."""
        return self.steps.step(batch)

    def validate(self) -> dict[str, float]:
        """Validation metrics: {loss, and the head's metrics (see config.METRICS)}."""
        return self.validation.validate()

    def predict_valid(self) -> tuple[float, list[SequenceOutputs]]:
        """Outputs on the validation windows, assembled per sequence:
        ``(loss, [(pred (n, L), labels (n, L), keep (n,)) per sequence])``."""
        return self.validation.predict_valid()

    def _to_device(self, batch: Mapping[str, torch.Tensor]) -> Batch:
        """A loader batch on the device (:class:`~.steps.ToDevice`)."""
        return self.to_device(batch)

    def teacher_outputs(self, inputs: tuple[torch.Tensor, ...], features: bool = False
                        ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The teacher's raw outputs on ``inputs``
        (:meth:`~.distill.Distillation.teacher_outputs`)."""
        return self.distillation.teacher_outputs(inputs, features)

    def distilled_loss(self, inputs: tuple[torch.Tensor, ...], out: torch.Tensor,
                       labels: torch.Tensor, mask: torch.Tensor,
                       labelled: torch.Tensor | None = None,
                       features: torch.Tensor | None = None) -> torch.Tensor:
        """The loss with a teacher (:meth:`~.distill.Distillation.loss`)."""
        return self.distillation.loss(inputs, out, labels, mask, labelled, features)

    def _run_epoch(self, epoch: int) -> bool:
        """Train + validate + save one epoch; True when early stopping fires."""
        stats = self.train_epoch(epoch)
        start = time.perf_counter()
        metrics = self.validate()
        score = metrics[self.metric]
        if not math.isfinite(score) and self.dist.is_main:
            logger.warning("validation %s is undefined (NaN) at epoch %d", self.metric, epoch)
        improved = self.early_stopping.observe(epoch, score)
        early = self.early_stopping.should_stop
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
            self.checkpointing.log_epoch(row, epoch)
            if early:
                logger.info("early stopping: %d epochs without a better validation %s",
                            self.bad_epochs, self.metric)
        return early

    def _save(self, epoch: int, improved: bool, metrics: Mapping[str, float]) -> None:
        """``last.pt`` (and ``best.pt`` when ``improved``) and ``log.csv`` after ``epoch``."""
        state = self._training_state(epoch)  # every process takes part (RNG gather)
        self.checkpointing.save(epoch, state, improved, metrics, self.metric)

    def _result(self) -> TrainResult:
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

    def _describe(self) -> None:
        """The run in a few lines of ``train.log``: data, model, loss, device."""
        cfg = self.config
        lines = [self.split.describe(),
                 f"{len(self.train_set)} training windows ({len(self.indices)} per epoch), "
                 f"{len(self.valid_set)} validation windows of {cfg.window} frames "
                 f"({self.frame_size}x{self.frame_size})",
                 f"model {_model_text(self.model.config)}, "
                 f"{self.head} head {self.label_names}; loss {self.loss_kind}, "
                 f"select by validation {self.metric} "
                 f"({'lower' if self.lower_is_better else 'higher'} is better)",
                 f"device {self.device}, {self.auto['precision']}, "
                 f"{self.dist.world_size} process(es), augment {self.auto['augment']}"]
        if self.frame_weights is not None:
            weights = [w * self.frame_weights.scale for w in self.frame_weights.label_weights]
            lines.append("frame weights: " + ", ".join(
                f"{n} {w:.4g}" for n, w in zip(self.label_names, weights)))
        if self.resample_report is not None:
            lines.append("re-sampling (frames per label):\n" + self.resample_report.table())
        for line in lines:
            logger.info(line)

    def close(self) -> None:
        """Stop loader workers, close logs, leave the process group."""
        # A DataLoader's workers end when its last iterator is dropped (persistent
        # ones live in the loader): the parts drop the prefetched iterators and the loaders.
        self.steps.close()
        self.validation.close()
        self.checkpointing.close()
        distributed.teardown(self.dist)
        self._run_lock.release()


def _model_text(config: Mapping[str, Any]) -> str:
    """"resnet18 / lstm", "audio / lstm", "audiovisual resnet18 / gru"."""
    modality = config.get("modality", "visual")
    arch = config.get("arch", "")
    name = arch if modality == "visual" else f"{modality} {arch}".strip()
    return f"{name} / {config['temporal']}"
