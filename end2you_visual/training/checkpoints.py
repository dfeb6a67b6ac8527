"""Checkpoints and logs of a training run: the checks of ``out_dir`` and of
a run to resume (which settings may change), and :class:`Checkpointing`,
the part of :class:`~end2you_visual.training.Trainer` that writes
``last.pt`` / ``best.pt``, ``log.csv``, ``train.log`` and TensorBoard.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..locks import OutputBusy, OutputLock
from ..models import read_checkpoint, save_checkpoint
from . import distributed
from .config import option_name
from .distributed import DistInfo
from .state import TensorBoard, rng_state, set_rng_state, write_csv_atomic

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ['Checkpointing', 'RunLock', 'check_out_dir', 'check_existing_run', 'read_resume',
           'resume_changes', 'RESUME_FREE', 'RESUME_APPLIED', 'LAST', 'BEST', 'LOG_CSV',
           'LOG_TXT', 'RUN_FILES']

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


def check_out_dir(out_dir: str | Path) -> None:
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

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), self.baseFilename) from None
        super().handleError(record)

    def close(self) -> None:
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

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self._created = not self.out_dir.exists()
        self._lock: OutputLock | None = None
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

    def release(self, failed: bool = False) -> None:
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


def check_existing_run(out_dir: str | Path, resume: bool = False,
                       overwrite: bool = False) -> list[str]:
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


def resume_changes(old: Mapping[str, Any], config: TrainConfig
                   ) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
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


def read_resume(last_path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint ``last_path`` to resume (None for a new run: no
    ``config.resume``, or no such file); a changed setting that the resumed
    run cannot honour is refused here, before any work."""
    if not (config.resume and last_path.is_file()):
        return None
    ckpt = read_checkpoint(last_path)
    if not isinstance(ckpt.get("training"), dict):
        raise InputError(last_path, "not a training checkpoint (no training state)")
    _, refused = resume_changes(ckpt["training"].get("config", {}), config)
    if refused:
        raise InputError(last_path, "the run being resumed used other settings: "
                         + "; ".join(f"{option_name(k)} {a!r} -> {b!r}"
                                     for k, a, b in refused)
                         + f". Resume with the run's settings (only "
                           f"{', '.join(RESUME_APPLIED)} may change), or start a new "
                           "run with another --out or --overwrite")
    return ckpt


class Checkpointing:
    """The files of a run in ``out_dir``: ``last.pt`` / ``best.pt``,
    ``log.csv``, ``train.log`` and TensorBoard; a part of
    :class:`~end2you_visual.training.Trainer`.

    ``config``: the run's settings (saved with it; ``overwrite`` and
    ``tensorboard`` read); ``model``: what the checkpoints hold; ``dist``:
    only the main process writes, every process's random state is saved;
    ``replacing``: the files of an earlier run that ``--overwrite``
    replaces. Its state: ``history`` (the rows of ``log.csv``, one per
    epoch) and the global random-number states.
    """

    def __init__(self, out_dir: Path, *, config: TrainConfig, model: torch.nn.Module,
                 dist: DistInfo, replacing: Sequence[str] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.last_path, self.best_path = self.out_dir / LAST, self.out_dir / BEST
        self.config, self.model, self.dist = config, model, dist
        self.replacing = list(replacing)
        self.history: list[dict[str, Any]] = []
        self._tb: TensorBoard | None = None
        self._log_handler: RunLog | None = None

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """``rng`` (every process's global random states; every process
        takes part), ``world_size``, ``history`` and ``config``."""
        rngs = distributed.gather_objects(rng_state(), self.dist)
        return {"rng": rngs, "world_size": self.dist.world_size, "history": self.history,
                "config": self.config.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's ``training`` dict: its history, and
        this process's random states (the first process's when the number of
        processes changed). Load it last: nothing may draw a random number
        between it and the first step."""
        self.history = list(state["history"])
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])

    # ----------------------------------------------------------------- files

    def save(self, epoch: int, training: Mapping[str, Any], improved: bool,
             metrics: Mapping[str, float], metric: str) -> None:
        """Write ``last.pt`` (the model and the ``training`` state),
        ``best.pt`` when the epoch ``improved`` (with its ``metrics``, scored
        by ``metric``) and ``log.csv``; on the main process only."""
        if not self.dist.is_main:
            return
        if improved:
            save_checkpoint(self.model, self.best_path, extra={
                "epoch": epoch, "metric": metric, "score": metrics[metric],
                "metrics": dict(metrics), "train_config": self.config.to_dict()})
        save_checkpoint(self.model, self.last_path, extra={"training": dict(training)})
        write_csv_atomic(self.out_dir / LOG_CSV, self.history)

    def start_logs(self) -> None:
        """Make ``out_dir`` (removing the run that ``--overwrite`` replaces),
        open ``train.log`` and TensorBoard; on the main process only."""
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        removed = self.replacing and self.config.overwrite
        if removed:
            self._remove_old_run()
        self._log_handler = RunLog(self.out_dir / LOG_TXT)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(self._log_handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._tb = TensorBoard(self.out_dir / "tensorboard", self.config.tensorboard)
        if removed:
            logger.info("--overwrite: replaced the run in %s (%s)", self.out_dir,
                        ", ".join(self.replacing))

    def _remove_old_run(self) -> None:
        """--overwrite: the earlier run's files go before this run writes any."""
        for name in (*RUN_FILES, LOG_TXT):
            (self.out_dir / name).unlink(missing_ok=True)
        if (self.out_dir / "tensorboard").is_dir():
            shutil.rmtree(self.out_dir / "tensorboard")

    def log_epoch(self, row: Mapping[str, Any], epoch: int) -> None:
        """``row``'s numbers to TensorBoard (when it is open)."""
        if self._tb is not None:
            self._tb.log(row, epoch)

    def close(self) -> None:
        """Close TensorBoard and ``train.log``."""
        if self._tb is not None:
            self._tb.close()
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
