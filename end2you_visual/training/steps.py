"""The step loop of a training run, a part of
:class:`~end2you_visual.training.Trainer`: batches to the device (read
ahead), one optimiser step, one epoch of steps with the NaN check and the
progress bar.

:class:`ToDevice` moves a loader batch to the device; :class:`StepLoop`
owns what an optimiser step changes (the optimiser, the learning-rate
schedule, the augmentation's random state: its entries of ``last.pt``) and
runs the epochs' steps, calling the :class:`~.distill.Distillation` part for
the loss when the run has a teacher.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from . import distributed
from .distributed import DistInfo
from .parts import Batch, LossFn
from .subnormals import zero_subnormals_

if TYPE_CHECKING:
    from .augment import Augmenter
    from .config import TrainConfig
    from .distill import Distillation

__all__ = ['ToDevice', 'StepLoop', 'NonFiniteLossError', 'SYNC_EVERY']


SYNC_EVERY = 20  # steps between host syncs (NaN check, subnormals on CPU)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, ``last.pt`` kept."""


class ToDevice:
    """A loader batch -> :data:`Batch` on ``device`` (no host sync).

    ``input_keys``: the batch entries the model takes, in order
    (``("frames",)``, ``("audio",)`` or ``("frames", "audio")``);
    ``columns``: the label columns the run trains on (None: all);
    ``skip_no_face``: frames without a face are masked out.
    """

    def __init__(self, device: torch.device, input_keys: Sequence[str],
                 columns: Sequence[int] | None = None, skip_no_face: bool = False) -> None:
        self.device, self.input_keys, self.skip_no_face = device, tuple(input_keys), skip_no_face
        self.columns = (torch.tensor(list(columns), device=device) if columns is not None
                        else None)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> Batch:
        """``(inputs, labels, mask, labelled)``; ``inputs``: the model's input
        tensors by modality, ``(frames,)`` uint8, ``(audio,)`` or ``(frames,
        audio)``; ``labelled``: (B,) bool, False for the windows of unlabelled
        files (distillation), None when every window has labels."""
        dev = self.device
        inputs = tuple(batch[key].to(dev, non_blocking=True) for key in self.input_keys)
        labels = batch["labels"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        if self.columns is not None:
            labels = labels.index_select(-1, self.columns)
        if self.skip_no_face:
            mask = mask & batch["face_found"].to(dev, non_blocking=True)
        labelled = batch.get("labelled")
        if labelled is not None:
            labelled = labelled.to(dev, non_blocking=True)
        return inputs, labels, mask, labelled


class StepLoop:
    """Optimiser steps over the training loader, one epoch at a time.

    ``net`` runs the model (compiled, DDP-wrapped); ``model`` is the model
    itself (its parameters clipped, their subnormals zeroed on CPU);
    ``optimizer``, ``scheduler`` (stepped once per epoch, or None),
    ``augment`` (an :class:`~.augment.Augmenter` applied to the frames on
    the device, or None); ``loss_fn(out, labels, mask)``; ``autocast``: the
    forward pass's precision; ``distillation``: the loss when it has a
    teacher; ``loader`` / ``sampler``: the training batches and their
    order (``sampler.set_epoch``); ``config``: its ``grad_clip``,
    ``max_steps_per_epoch``, ``progress`` and ``epochs``; ``last_path``:
    named when the loss is not finite.
    """

    def __init__(self, *, net: torch.nn.Module, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                 augment: Augmenter | None, loss_fn: LossFn,
                 autocast: AbstractContextManager[Any], distillation: Distillation,
                 to_device: ToDevice, loader: Any, sampler: Any, config: TrainConfig,
                 dist: DistInfo, last_path: Path) -> None:
        self.net, self.model = net, model
        self.optimizer, self.scheduler, self.augment = optimizer, scheduler, augment
        self.loss_fn, self.autocast, self.distillation = loss_fn, autocast, distillation
        self.to_device, self.loader, self.sampler = to_device, loader, sampler
        self.config, self.dist, self.last_path = config, dist, last_path
        self.device = to_device.device
        self.data_wait = 0.0  # seconds the last epoch waited for the loader
        self._next_epoch: dict[int, Iterator[Any]] = {}  # epoch -> iterator already reading it

    # ----------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """``optimizer``, ``scheduler`` and ``augment`` (None without one)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "augment": self.augment.state_dict() if self.augment is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any],
                        overrides: Mapping[str, float] | None = None) -> None:
        """Continue from a checkpoint's ``training`` dict; ``overrides``: the
        optimiser settings (``lr``, ``weight_decay``) that a resume changes,
        which replace the saved ones in every parameter group."""
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the saved state holds the old ones
            group.update(overrides or {})
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.augment is not None and state.get("augment") is not None:
            self.augment.load_state_dict(state["augment"])

    # ----------------------------------------------------------------- steps

    def augmented(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """``inputs`` with the frames (the first input, unless audio only) augmented."""
        if self.augment is None or self.to_device.input_keys[0] != "frames":
            return inputs
        return (self.augment(inputs[0]),) + inputs[1:]

    def device_batches(self, it: Iterator[Any], steps: int) -> Iterator[Batch]:
        """Up to ``steps`` batches of the loader iterator ``it``, on the device.

        On CUDA the next batch is copied on a side stream while the current
        one is computed (the copy overlaps the step instead of preceding it).
        """
        self.data_wait = 0.0

        def fetch() -> Any:
            start = time.perf_counter()
            batch = next(it, None)
            self.data_wait += time.perf_counter() - start
            return batch

        if self.device.type != "cuda":
            for _ in range(steps):
                batch = fetch()
                if batch is None:
                    return
                yield self.to_device(batch)
            return
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)

        def load() -> Batch | None:
            batch = fetch()
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self.to_device(batch)

        upcoming = load()
        for step in range(steps):
            if upcoming is None:
                return
            main.wait_stream(side)
            current = upcoming
            inputs, labels, mask, labelled = current
            for tensor in (*inputs, labels, mask, labelled):
                if tensor is not None:
                    tensor.record_stream(main)
            upcoming = load() if step + 1 < steps else None
            yield current

    def step(self, batch: Batch) -> torch.Tensor:
        """One optimiser step on a device batch ``(inputs, labels, mask,
        labelled)``; returns the loss tensor (no host sync). With a teacher,
        the loss is :meth:`~.distill.Distillation.loss` (the teacher sees the
        same augmented inputs)."""
        inputs, labels, mask, labelled = batch
        inputs = self.augmented(inputs)
        features = None
        with self.autocast:
            if self.distillation.projection is None:
                out = self.net(*inputs)
            else:
                out, features = self.net(*inputs, return_features=True)
        if self.distillation.teacher is None:
            loss = self.loss_fn(out, labels, mask)
        else:
            loss = self.distillation.loss(inputs, out, labels, mask, labelled, features)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, step: int) -> float:
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

    def _prefetch_epoch(self, epoch: int) -> None:
        """Start the loader workers on ``epoch``'s first batches now, so that
        they read while this epoch ends and validates (not at its start)."""
        if self.loader.num_workers > 0 and epoch <= self.config.epochs:
            self.sampler.set_epoch(epoch)
            self._next_epoch[epoch] = iter(self.loader)

    def run_epoch(self, epoch: int,
                  step: Callable[[Batch], torch.Tensor] | None = None) -> dict[str, float]:
        """Train one epoch, each batch through ``step`` (default :meth:`step`);
        returns {train_loss, train_fps (frames/s of this process x
        processes), train_seconds, steps, frames (this process's),
        first_batch_seconds (wait for the first batch), data_wait_seconds
        (time the loop waited for the loader, first batch included)}."""
        step = step or self.step
        self.net.train()
        it = self._next_epoch.pop(epoch, None)
        self._next_epoch.clear()
        if it is None:
            self.sampler.set_epoch(epoch)
            it = iter(self.loader)
        steps = len(self.loader)
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        show = self.config.progress and self.dist.is_main
        bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not show,
                   leave=False, dynamic_ncols=True)
        loss_sum = torch.zeros((), device=self.device)
        frames, done, seen = 0, 0, 0.0
        start = time.perf_counter()
        first_batch = None
        for index, batch in enumerate(self.device_batches(it, steps)):
            if first_batch is None:
                first_batch = time.perf_counter() - start
            loss_sum += step(batch)
            frames += batch[1].shape[0] * batch[1].shape[1]  # windows x frames
            done = index + 1
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

    def close(self) -> None:
        """Drop the loader and the iterators reading ahead (their worker
        processes end with them)."""
        self._next_epoch.clear()
        self.loader = None
