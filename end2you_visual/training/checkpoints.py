"""Checkpoints and logs of a training run: the checks of ``out_dir`` and of
a run to resume (which settings may change), ``last.pt`` / ``best.pt``,
``log.csv``, ``train.log`` and TensorBoard; a part of
:class:`~end2you_visual.training.Trainer`.
"""
import logging
import os
import shutil
import sys
from pathlib import Path

from ..errors import InputError
from ..locks import OutputBusy, OutputLock
from ..models import read_checkpoint, save_checkpoint
from . import distributed
from .config import option_name
from .state import TensorBoard, rng_state, set_rng_state, write_csv_atomic

__all__ = ['Checkpointing', 'check_out_dir', 'check_existing_run', 'resume_changes', 'RESUME_FREE', 'RESUME_APPLIED', 'LAST', 'BEST', 'LOG_CSV', 'LOG_TXT', 'RUN_FILES']

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
LAST, BEST, LOG_CSV, LOG_TXT = "last.pt", "best.pt", "log.csv", "train.log"
RUN_FILES = (BEST, LAST, LOG_CSV)  # an out_dir holding one of these holds a run


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


class RunLog(logging.FileHandler):
    """``train.log``: a line that cannot be written (a full disk) raises an
    OSError naming the file, which stops the run (one ``Error:`` line on
    the command line), instead of logging's ``--- Logging error ---`` page
    on every later line."""

    def handleError(self, record):
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), self.baseFilename) from None
        super().handleError(record)

    def close(self):
        try:
            super().close()
        except OSError:  # its last flush, on a full disk: the run already failed
            pass


class RunLock:
    """One writer per run folder: ``flock`` on ``OUT/.run.lock`` for as long
    as a :class:`~end2you_visual.training.Trainer` lives (released by its
    ``close``, or by the kernel when the process dies, ``kill -9`` included).

    A second run into the folder (``train --resume`` twice, a new run while
    one trains) fails at once with an InputError naming the folder and the
    other run's pid, before it reads or writes anything there. Only the
    main process of a multi-process run (``RANK`` 0) takes the lock: its
    other processes write nothing. A folder the lock had to create is
    removed again when the run fails before writing anything into it.
    """

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self._created = not self.out_dir.exists()
        self._lock = None
        if int(os.environ.get("RANK", 0)) != 0:
            return
        lock = OutputLock(self.out_dir / "run", wait=False)
        try:
            lock.acquire()
        except OutputBusy as busy:
            owner = f"another run (pid {busy.pid})" if busy.pid else "another run"
            raise InputError(self.out_dir, f"{owner} is training into this folder; wait for "
                                           "it to end, or choose another --out") from None
        self._lock = lock

    def release(self, failed=False):
        """Release the lock; after a failed start, remove a folder made for it and left empty."""
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        if failed and self._created:
            try:
                self.out_dir.rmdir()  # only when empty
            except OSError:
                pass


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


class Checkpointing:
    """Checkpoints and logs of :class:`~end2you_visual.training.Trainer` (a
    mixin): the run to resume, ``last.pt`` / ``best.pt``, ``log.csv``,
    ``train.log`` and TensorBoard."""

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
            "teacher": self.teacher_record,
            "projection": (self.projection.state_dict() if self.projection is not None
                           else None),
        }

    def _restore(self, state):
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])
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

    def _start_logs(self):
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._replacing and self.config.overwrite:
            self._remove_old_run()
        self._log_handler = RunLog(self.out_dir / LOG_TXT)
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


def _model_text(config):
    """"resnet18 / lstm", "audio / lstm", "audiovisual resnet18 / gru"."""
    modality = config.get("modality", "visual")
    arch = config.get("arch", "")
    name = arch if modality == "visual" else f"{modality} {arch}".strip()
    return f"{name} / {config['temporal']}"
