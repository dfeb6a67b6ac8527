"""The training loop: data, model, loss, validation, checkpoints, early stopping.

:func:`train` runs a :class:`TrainConfig` and returns a :class:`TrainResult`;
:class:`Trainer` exposes the steps (``train_epoch``, ``validate``...) for
notebooks and for ``bench/training.py``.

Everything that can be checked is checked before any model is built or any
pixel read: settings (types and ranges), the device, that ``out_dir`` is
writable and holds no other run (unless ``resume`` or ``overwrite``), the
settings of a resumed run, files, label names, the split, batch size against
the data, the metric against the head.

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
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import WindowDataset, check_label_names, open_files
from ..devices import resolve_device
from ..errors import InputError
from ..metrics import evaluate_categorical, evaluate_continuous, evaluate_multilabel
from ..models import build_model, read_checkpoint, save_checkpoint
from ..models.checkpoint import model_from_checkpoint
from . import distributed
from .augment import Augmenter
from .config import TrainConfig, metric_is_lower_better, option_name, resolve_auto
from .loader import WindowBatches
from .losses import FrameWeights, inverse_frequency_weights, make_loss
from .sampler import WindowSampler, resample_windows, sequence_labels, window_label_counts
from .split import split_sequences
from .state import TensorBoard, rng_state, seed_everything, set_rng_state, write_csv_atomic
from .subnormals import flush_denormals, zero_subnormals_

__all__ = ["train", "Trainer", "TrainResult", "NonFiniteLossError"]

logger = logging.getLogger("end2you_visual.training")

# Resuming with changed settings (docs/training.md, "Resume"): these only say
# how or where the run computes, and take effect silently;
RESUME_FREE = ("resume", "overwrite", "progress", "tensorboard", "num_workers", "device",
               "out_dir", "compile", "valid_batch_size", "channels_last", "precision")
# these are applied from the resumed epoch on, and logged ("lr 0.001 -> 0.01");
RESUME_APPLIED = ("lr", "weight_decay", "epochs", "patience", "grad_clip",
                  "max_steps_per_epoch")
# every other setting defines the data, the model or the loss of the run, and
# a change is refused (so are lr and epochs under the cosine schedule, which
# they define): the record of a run must describe what ran.
SCHEDULE_SETTINGS = ("lr", "epochs")
SYNC_EVERY = 20  # steps between host syncs (NaN check, subnormals on CPU)
LAST, BEST, LOG_CSV, LOG_TXT = "last.pt", "best.pt", "log.csv", "train.log"
RUN_FILES = (BEST, LAST, LOG_CSV)  # an out_dir holding one of these holds a run


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, ``last.pt`` kept."""


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
    finally:
        trainer.close()


def _pick_device(device, dist_info):
    """The resolved ``device``; under DDP each process takes its local rank's GPU."""
    if device.type == "cuda" and (dist_info.enabled or device.index is None):
        device = torch.device("cuda", dist_info.local_rank if dist_info.enabled else 0)
    return device


def check_out_dir(out_dir):
    """InputError unless ``out_dir`` is (or can be made) a writable folder."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file, not a folder (--out)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(path, f"cannot be made: {existing} is a file, not a folder (--out)")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} is not writable)"
        raise InputError(path, f"is not writable{where}; choose another --out")


def check_existing_run(out_dir, resume=False, overwrite=False):
    """Refuse to start a new run over a run in ``out_dir`` unless told to
    ``resume`` it or ``overwrite`` it; returns the run's files found."""
    out_dir = Path(out_dir)
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if not found or overwrite:
        return found
    if resume:
        if LAST not in found:
            raise InputError(out_dir, f"holds a run ({', '.join(found)}) but no {LAST} to "
                                      "resume from; use --overwrite to replace it, or "
                                      "another --out")
        return found
    raise InputError(out_dir, f"already holds a training run ({', '.join(found)}); use "
                              "--resume to continue it or --overwrite to replace it (or "
                              "choose another --out)")


def resume_changes(old, config):
    """Compare a resumed run's settings ``old`` (a dict) with ``config``.

    Returns ``(applied, refused)``: lists of ``(name, old value, new value)``;
    ``applied`` are in :data:`RESUME_APPLIED` (and take effect), ``refused``
    change the data, the model or the loss (or the cosine schedule).
    """
    applied, refused = [], []
    for name, before in old.items():
        if name in RESUME_FREE or not hasattr(config, name):
            continue
        now = getattr(config, name)
        if name in ("train", "valid"):
            same = (sorted(str(Path(p).resolve()) for p in before)
                    == sorted(str(Path(p).resolve()) for p in now))
        else:
            same = now == before
        if same:
            continue
        cosine = config.scheduler == "cosine" or old.get("scheduler") == "cosine"
        if name in RESUME_APPLIED and not (cosine and name in SCHEDULE_SETTINGS):
            applied.append((name, before, now))
        else:
            refused.append((name, before, now))
    return applied, refused


def _is_better(score, best, lower):
    """``score`` beats ``best``; an undefined (NaN) score only fills an empty slot,
    and any defined score beats an undefined best."""
    if score is None or not math.isfinite(score):
        return best is None
    if best is None or not math.isfinite(best):
        return True
    return score < best if lower else score > best


class Trainer:
    """One training run; construct (checks + set-up), then :meth:`fit`.

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
        self._replacing = check_existing_run(self.out_dir, config.resume, config.overwrite)
        self.last_path, self.best_path = self.out_dir / LAST, self.out_dir / BEST
        self._resume_ckpt = self._read_resume()
        self.dist = distributed.setup(device.type)
        try:
            self.device = _pick_device(device, self.dist)
            self._prepare_data()
            self._prepare_model()
        except BaseException:
            distributed.teardown(self.dist)
            raise

    def _read_resume(self):
        """The checkpoint to resume (None for a new run); a changed setting
        that the resumed run cannot honour is refused here, before any work."""
        if not (self.config.resume and self.last_path.is_file()):
            return None
        ckpt = read_checkpoint(self.last_path)
        if not isinstance(ckpt.get("training"), dict):
            raise InputError(self.last_path, "not a training checkpoint (no training state)")
        _, refused = resume_changes(ckpt["training"].get("config", {}), self.config)
        if refused:
            raise InputError(self.last_path, "the run being resumed used other settings: "
                             + "; ".join(f"{option_name(k)} {a!r} -> {b!r}"
                                         for k, a, b in refused)
                             + f". Resume with the run's settings (only "
                               f"{', '.join(RESUME_APPLIED)} may change), or start a new "
                               "run with another --out or --overwrite")
        return ckpt

    # ------------------------------------------------------------------ data

    def _prepare_data(self):
        cfg = self.config
        train_files = open_files(cfg.train)
        valid_files = open_files(cfg.valid) if cfg.valid else []
        files = train_files + valid_files
        kinds = {f.label_kind for f in files}
        if len(kinds) != 1:
            raise InputError(None, "files of different label kinds: " + ", ".join(
                f"{f.path} ({f.label_kind})" for f in files))
        self.label_kind = kinds.pop()
        sizes = {f.frame_size for f in files}
        if len(sizes) != 1:
            raise InputError(None, f"files of different frame sizes {sorted(sizes)}")
        self.frame_size = sizes.pop()
        data_names = check_label_names(files)
        self.auto = resolve_auto(cfg, self.label_kind, self.device.type, files[0].path)
        self.head, self.loss_kind, self.metric = (self.auto["head"], self.auto["loss"],
                                                  self.auto["metric"])
        self.lower_is_better = metric_is_lower_better(self.metric)
        self.label_names, self.columns = self._select_labels(data_names, files[0].path)
        if self.columns is not None:
            self._columns_on_device = torch.tensor(self.columns, device=self.device)

        split = split_sequences(train_files, valid_files, cfg.split_by, cfg.valid_fraction,
                                cfg.seed)
        self.split = split
        self.train_set = WindowDataset(train_files, cfg.window, cfg.stride,
                                       sequence_filter=lambda s: (s.path, s.index) in split.train)
        self.valid_set = WindowDataset(files, cfg.window,
                                       sequence_filter=lambda s: (s.path, s.index) in split.valid)
        seq_labels = sequence_labels(self.train_set, cfg.skip_no_face)
        self.indices = list(range(len(self.train_set)))
        self.resample_report = None
        if cfg.resample:
            if self.head == "regression":
                raise InputError(None, "resample is for categorical labels, not continuous ones")
            counts, frames = window_label_counts(self.train_set, seq_labels, self.columns)
            self.indices, self.resample_report = resample_windows(
                counts, frames, self.label_names, cfg.rare_threshold, cfg.resample_repeats,
                cfg.resample_ignore)
        per_process = len(self.indices) // self.dist.world_size
        if cfg.batch_size > per_process:
            raise InputError(None, f"batch size {cfg.batch_size} is larger than the data: "
                                   f"{len(self.indices)} training windows of {cfg.window} frames"
                                   + (f" over {self.dist.world_size} processes"
                                      if self.dist.enabled else ""))
        self.frame_weights = self._frame_weights(seq_labels)

    def _select_labels(self, data_names, path):
        cfg = self.config
        if cfg.label_names is None:
            return list(data_names), None
        unknown = [n for n in cfg.label_names if n not in data_names]
        if unknown or not cfg.label_names:
            raise InputError(path, f"label names {cfg.label_names} do not match the data's "
                                   f"{data_names}" + (f" (unknown: {unknown})" if unknown else ""))
        if len(set(cfg.label_names)) != len(cfg.label_names):
            raise InputError(None, f"label names repeat: {cfg.label_names}")
        columns = [data_names.index(n) for n in cfg.label_names]
        return list(cfg.label_names), (None if columns == list(range(len(data_names)))
                                       else columns)

    def _frame_weights(self, seq_labels):
        cfg = self.config
        if cfg.class_weights is not None:
            if len(cfg.class_weights) != len(self.label_names):
                raise InputError(None, f"{len(cfg.class_weights)} class weights for "
                                       f"{len(self.label_names)} labels {self.label_names}")
            if self.loss_kind not in ("bce", "ce"):
                raise InputError(None, "class_weights need a bce or ce loss")
            return FrameWeights([float(w) for w in cfg.class_weights], 1.0, 1.0)
        if self.auto["weighting"] == "inverse":
            return inverse_frequency_weights(seq_labels, self.train_set, self.indices,
                                             self.columns)
        return None

    # ----------------------------------------------------------------- model

    def _prepare_model(self):
        cfg = self.config
        self.history, self.start_epoch = [], 1
        self._next_epoch = {}  # epoch -> loader iterator already reading it
        self.best_score, self.best_epoch, self.bad_epochs = None, 0, 0
        self.stopped = None
        resume_ckpt = self._resume_ckpt
        seed_everything(cfg.seed)
        if resume_ckpt is not None:
            model = model_from_checkpoint(resume_ckpt, self.last_path)
        elif cfg.init:
            model = self._load_init()
        else:
            model = build_model(arch=cfg.arch, head=self.head, outputs=len(self.label_names),
                                temporal=cfg.temporal, hidden_size=cfg.hidden_size,
                                num_layers=cfg.num_layers, label_names=self.label_names,
                                input_size=self.frame_size, dropout=cfg.dropout,
                                grey=cfg.grey)
        self._record_input_size(model)
        self._check_model(model)
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.epochs)
                          if cfg.scheduler == "cosine" else None)
        self.augment = (Augmenter(self.frame_size, cfg.resize, cfg.brightness, cfg.saturation,
                                  seed=cfg.seed + 1, hflip=cfg.hflip)
                        if self.auto["augment"] else None)
        self.loss_fn = make_loss(self.loss_kind, self.frame_weights)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                         if self.auto["precision"] == "bf16" else nullcontext())
        if resume_ckpt is not None:
            self._restore(resume_ckpt["training"])
        self.net = self.model
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.eval_net = self.net  # no DDP wrapper: ranks validate different numbers of batches
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.train_sampler = WindowSampler(self.indices, shuffle=True, seed=cfg.seed,
                                           rank=self.dist.rank, world_size=self.dist.world_size)
        self.valid_sampler = WindowSampler(range(len(self.valid_set)), shuffle=False,
                                           rank=self.dist.rank, world_size=self.dist.world_size,
                                           pad=False)
        self.train_loader = self._loader(self.train_set, self.train_sampler, cfg.batch_size)
        self.valid_loader = self._loader(self.valid_set, self.valid_sampler,
                                         cfg.valid_batch_size or cfg.batch_size)

    def _load_init(self):
        from ..zoo import load_pretrained  # the zoo reads its registry: only when asked

        cfg = self.config
        model = load_pretrained(cfg.init, outputs=len(self.label_names), head=self.head,
                                label_names=self.label_names)
        if not cfg.keep_head:
            model.replace_head(head=self.head, outputs=len(self.label_names),
                               label_names=self.label_names)
        if model.config["temporal"] == "none" and cfg.temporal != "none" and cfg.window != 1:
            model = self._add_recurrence(model)
        self._notes.append(f"initialised from {cfg.init} (arch {model.config['arch']}, "
                           f"temporal {model.config['temporal']}), new {self.head} head with "
                           f"{len(self.label_names)} outputs")
        return model

    def _add_recurrence(self, frame_model):
        """The paper's pretrain -> fine-tune step for a frame-level extractor
        (e.g. trained on images): its CNN under new recurrent layers."""
        cfg = self.config
        model = build_model(**{**frame_model.config, "temporal": cfg.temporal,
                               "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                               "head": self.head, "outputs": len(self.label_names),
                               "label_names": self.label_names})
        model.extractor.load_state_dict(frame_model.extractor.state_dict())
        self._notes.append(f"frame-level {cfg.init}: its CNN under a new {cfg.num_layers}-layer "
                           f"{cfg.temporal}")
        return model

    def _record_input_size(self, model):
        """The model is trained on the data's crops: its config says their size
        (``test`` checks it, ``predict`` crops at it), not its origin's."""
        before = model.config.get("input_size")
        if before != self.frame_size:
            if self.config.init and self._resume_ckpt is None:
                self._notes.append(f"{self.config.init} was trained on {before}x{before} crops; "
                                   f"this run trains it on the data's {self.frame_size}x"
                                   f"{self.frame_size} (recorded as its input_size)")
            model.config["input_size"] = int(self.frame_size)

    def _check_model(self, model):
        cfg = model.config
        if cfg["head"] != self.head or cfg["outputs"] != len(self.label_names):
            raise InputError(self.last_path if self.config.resume else self.config.init,
                             f"the model has a {cfg['head']} head with {cfg['outputs']} outputs; "
                             f"the data needs {self.head} with {len(self.label_names)}")

    def _loader(self, dataset, sampler, batch_size):
        workers = min(self.config.num_workers, os.cpu_count() or 1)
        batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
        return torch.utils.data.DataLoader(
            WindowBatches(dataset), batch_size=None, sampler=batches, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None, drop_last=False,
            generator=torch.Generator().manual_seed(self.config.seed))

    # ------------------------------------------------------------- training

    def _to_device(self, batch):
        """A loader batch -> (frames uint8, labels, mask) on the device (no host sync)."""
        dev = self.device
        frames = batch["frames"].to(dev, non_blocking=True)
        labels = batch["labels"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        if self.columns is not None:
            labels = labels.index_select(-1, self._columns_on_device)
        if self.config.skip_no_face:
            mask = mask & batch["face_found"].to(dev, non_blocking=True)
        return frames, labels, mask

    def _device_batches(self, it, steps):
        """Up to ``steps`` batches of the loader iterator ``it``, on the device.

        On CUDA the next batch is copied on a side stream while the current
        one is computed (the copy overlaps the step instead of preceding it).
        """
        self.data_wait = 0.0

        def fetch():
            start = time.perf_counter()
            batch = next(it, None)
            self.data_wait += time.perf_counter() - start
            return batch

        if self.device.type != "cuda":
            for _ in range(steps):
                batch = fetch()
                if batch is None:
                    return
                yield self._to_device(batch)
            return
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)

        def load():
            batch = fetch()
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self._to_device(batch)

        upcoming = load()
        for step in range(steps):
            if upcoming is None:
                return
            main.wait_stream(side)
            current = upcoming
            for tensor in current:
                tensor.record_stream(main)
            upcoming = load() if step + 1 < steps else None
            yield current

    def train_step(self, batch):
        """One optimiser step on a device batch ``(frames, labels, mask)``;
        returns the loss tensor (no host sync)."""
        frames, labels, mask = batch
        x = self.augment(frames) if self.augment is not None else frames
        with self.autocast:
            out = self.net(x)
        loss = self.loss_fn(out, labels, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _check_finite(self, loss_sum, epoch, step):
        distributed.all_reduce_sum(loss_sum, self.dist)
        value = float(loss_sum)
        if not math.isfinite(value):
            good = (f"the last good checkpoint is {self.last_path} (epoch {epoch - 1})"
                    if epoch > 1 and self.last_path.is_file() else "no checkpoint was written")
            raise NonFiniteLossError(f"the training loss became {value} in epoch {epoch} "
                                     f"(by step {step}); training stopped and {good}. Try a "
                                     "lower lr, --precision fp32 or --grad-clip, or check the "
                                     "labels for NaN.")
        return value

    def _prefetch_epoch(self, epoch):
        """Start the loader workers on ``epoch``'s first batches now, so that
        they read while this epoch ends and validates (not at its start)."""
        if self.train_loader.num_workers > 0 and epoch <= self.config.epochs:
            self.train_sampler.set_epoch(epoch)
            self._next_epoch[epoch] = iter(self.train_loader)

    def train_epoch(self, epoch):
        """Train one epoch; returns {train_loss, train_fps (frames/s of this
        process x processes), train_seconds, steps, frames (this process's),
        first_batch_seconds (wait for the first batch), data_wait_seconds
        (time the loop waited for the loader, first batch included)}."""
        self.net.train()
        it = self._next_epoch.pop(epoch, None)
        self._next_epoch.clear()
        if it is None:
            self.train_sampler.set_epoch(epoch)
            it = iter(self.train_loader)
        steps = len(self.train_loader)
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        show = self.config.progress and self.dist.is_main
        bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not show,
                   leave=False, dynamic_ncols=True)
        loss_sum = torch.zeros((), device=self.device)
        frames, done, seen = 0, 0, 0.0
        start = time.perf_counter()
        first_batch = None
        for step, batch in enumerate(self._device_batches(it, steps)):
            if first_batch is None:
                first_batch = time.perf_counter() - start
            loss_sum += self.train_step(batch)
            frames += batch[0].shape[0] * batch[0].shape[1]
            done = step + 1
            synced = done % SYNC_EVERY == 0 or done == steps
            if synced and self.device.type == "cpu":
                zero_subnormals_(self.model.parameters(), self.optimizer)
            # On one CPU process reading the loss costs nothing: the bar shows it every step.
            if synced or (self.device.type == "cpu" and not self.dist.enabled):
                seen = self._check_finite(loss_sum.clone(), epoch, done)
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{seen / done / self.dist.world_size:.4f}",
                                fps=f"{frames * self.dist.world_size / elapsed:.0f}",
                                refresh=False)
            bar.update(1)  # counts steps, without waiting for the device
        self._prefetch_epoch(epoch + 1)
        total = self._check_finite(loss_sum.clone(), epoch, done)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"train_loss": total / max(done, 1) / self.dist.world_size,
                "train_fps": frames * self.dist.world_size / max(seconds, 1e-9),
                "train_seconds": seconds, "steps": done, "frames": frames,
                "first_batch_seconds": first_batch or 0.0, "data_wait_seconds": self.data_wait}

    # ----------------------------------------------------------- validation

    @torch.no_grad()
    def predict_valid(self):
        """Outputs on the validation windows, assembled per sequence.

        Returns ``(loss, [(pred (n, L), labels (n, L), keep (n,)) per sequence])``;
        all processes get everything.
        """
        distributed.broadcast_buffers(self.model, self.dist)
        self.eval_net.eval()
        parts, loss_sum, n_seq = [], 0.0, 0
        for batch in self.valid_loader:
            frames, labels, mask = self._to_device(batch)
            with self.autocast:
                out = self.eval_net(frames)
            loss = self.loss_fn(out, labels, mask)
            loss_sum += float(loss) * len(frames)
            n_seq += len(frames)
            parts.append((batch["sequence"].numpy(), batch["start"].numpy(),
                          out.float().cpu().numpy(), labels.float().cpu().numpy(),
                          mask.cpu().numpy()))
        gathered = distributed.gather_objects((parts, loss_sum, n_seq), self.dist)
        loss = sum(g[1] for g in gathered) / max(sum(g[2] for g in gathered), 1)
        seqs = []
        n_out = len(self.label_names)
        for _, info in self.valid_set.sequences:
            seqs.append((np.full((info.length, n_out), np.nan, np.float32),
                         np.zeros((info.length, n_out), np.float32),
                         np.zeros(info.length, bool)))
        for g in gathered:
            for seq_ids, starts, outs, labs, masks in g[0]:
                for q, s, o, lab, m in zip(seq_ids, starts, outs, labs, masks):
                    pred, target, keep = seqs[q]
                    n = min(len(o), len(pred) - s)
                    pred[s:s + n], target[s:s + n], keep[s:s + n] = o[:n], lab[:n], m[:n]
        return loss, seqs

    def validate(self):
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
        if self.head == "regression":
            report = evaluate_continuous(preds, targets, names=self.label_names)
            for key in ("ccc", "pearson", "rmse", "mae"):
                values = [getattr(report.pooled[n], key) for n in self.label_names]
                metrics[key] = float(np.mean(values))
            for n in self.label_names:
                metrics[f"ccc_{n}"] = float(report.pooled[n].ccc)
        elif self.head == "multiclass":
            p, t = np.concatenate(preds), np.concatenate(targets)
            has_class = t.max(axis=1) >= 0.5
            report = evaluate_categorical(p[has_class], t[has_class].argmax(axis=1),
                                          num_classes=len(self.label_names),
                                          class_names=self.label_names)
            metrics.update(accuracy=report.accuracy, uar=report.uar, f1=report.macro_f1)
        else:
            p, t = np.concatenate(preds), np.concatenate(targets)
            report = evaluate_multilabel(1.0 / (1.0 + np.exp(-p.astype(np.float64))),
                                         (t >= 0.5).astype(np.int64),
                                         label_names=self.label_names)
            metrics.update(auc=report.macro_auc, f1=report.macro_f1)
        return metrics

    # ------------------------------------------------------- checkpointing

    def _training_state(self, epoch):
        rngs = distributed.gather_objects(rng_state(), self.dist)
        return {
            "epoch": epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "stopped": self.stopped, "metric": self.metric,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "augment": self.augment.state_dict() if self.augment is not None else None,
            "rng": rngs, "world_size": self.dist.world_size,
            "history": self.history, "config": self.config.to_dict(),
        }

    def _restore(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        applied, _ = resume_changes(state.get("config", {}), self.config)
        for group in self.optimizer.param_groups:  # the saved state holds the old ones
            for name in ("lr", "weight_decay"):
                if any(k == name for k, _, _ in applied):
                    group[name] = getattr(self.config, name)
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.augment is not None and state.get("augment") is not None:
            self.augment.load_state_dict(state["augment"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_score, self.best_epoch = state["best_score"], int(state["best_epoch"])
        self.bad_epochs, self.stopped = int(state["bad_epochs"]), state.get("stopped")
        self.history = list(state["history"])
        if state.get("metric") != self.metric:
            raise InputError(self.last_path, f"the run being resumed selects by "
                                             f"{state.get('metric')!r}, not {self.metric!r}")
        if applied:
            self._notes.append(f"resuming with changed settings, applied from epoch "
                               f"{self.start_epoch}: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                                   for k, a, b in applied))
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])
        self._notes.append(f"resuming {self.last_path} after epoch {state['epoch']} (best "
                           f"{self.metric} {self.best_score} at epoch {self.best_epoch})")

    def _save(self, epoch, improved, metrics):
        state = self._training_state(epoch)  # every process takes part (RNG gather)
        if not self.dist.is_main:
            return
        if improved:
            save_checkpoint(self.model, self.best_path, extra={
                "epoch": epoch, "metric": self.metric, "score": metrics[self.metric],
                "metrics": metrics, "train_config": self.config.to_dict()})
        save_checkpoint(self.model, self.last_path, extra={"training": state})
        write_csv_atomic(self.out_dir / LOG_CSV, self.history)

    # ------------------------------------------------------------------ fit

    def _start_logs(self):
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._replacing and self.config.overwrite:
            self._remove_old_run()
        self._log_handler = logging.FileHandler(self.out_dir / LOG_TXT)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(self._log_handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._tb = TensorBoard(self.out_dir / "tensorboard", self.config.tensorboard)

    def _remove_old_run(self):
        """--overwrite: the earlier run's files go before this run writes any."""
        for name in (*RUN_FILES, LOG_TXT):
            (self.out_dir / name).unlink(missing_ok=True)
        if (self.out_dir / "tensorboard").is_dir():
            shutil.rmtree(self.out_dir / "tensorboard")
        self._notes.insert(0, f"--overwrite: replaced the run in {self.out_dir} "
                              f"({', '.join(self._replacing)})")

    def _describe(self):
        cfg = self.config
        lines = [self.split.describe(),
                 f"{len(self.train_set)} training windows ({len(self.indices)} per epoch), "
                 f"{len(self.valid_set)} validation windows of {cfg.window} frames "
                 f"({self.frame_size}x{self.frame_size})",
                 f"model {self.model.config['arch']} / {self.model.config['temporal']}, "
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
        for loader in (getattr(self, "train_loader", None), getattr(self, "valid_loader", None)):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        if self._tb is not None:
            self._tb.close()
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        distributed.teardown(self.dist)
