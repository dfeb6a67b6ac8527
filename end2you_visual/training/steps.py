"""The step loop of a training run: batches to the device (read ahead),
one optimiser step, one epoch of steps with the NaN check and the progress
bar (a part of :class:`~end2you_visual.training.Trainer`).
"""
import math
import time

import torch
from tqdm import tqdm

from . import distributed
from .subnormals import zero_subnormals_

__all__ = ['StepLoop', 'NonFiniteLossError', 'SYNC_EVERY']


SYNC_EVERY = 20  # steps between host syncs (NaN check, subnormals on CPU)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped, ``last.pt`` kept."""


class StepLoop:
    """The step loop of :class:`~end2you_visual.training.Trainer` (a mixin):
    batches to the device, one optimiser step, one epoch of steps."""

    def _to_device(self, batch):
        """A loader batch -> (inputs, labels, mask, labelled) on the device (no
        host sync); ``inputs``: the model's input tensors by modality,
        ``(frames,)`` uint8, ``(audio,)`` or ``(frames, audio)``; ``labelled``:
        (B,) bool, False for the windows of unlabelled files (distillation),
        None when every window has labels."""
        dev = self.device
        inputs = tuple(batch[key].to(dev, non_blocking=True) for key in self.input_keys)
        labels = batch["labels"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        if self.columns is not None:
            labels = labels.index_select(-1, self._columns_on_device)
        if self.config.skip_no_face:
            mask = mask & batch["face_found"].to(dev, non_blocking=True)
        labelled = batch.get("labelled")
        if labelled is not None:
            labelled = labelled.to(dev, non_blocking=True)
        return inputs, labels, mask, labelled

    def _augmented(self, inputs):
        """``inputs`` with the frames (the first input, unless audio only) augmented."""
        if self.augment is None or self.input_keys[0] != "frames":
            return inputs
        return (self.augment(inputs[0]),) + inputs[1:]

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
            inputs, labels, mask, labelled = current
            for tensor in (*inputs, labels, mask, labelled):
                if tensor is not None:
                    tensor.record_stream(main)
            upcoming = load() if step + 1 < steps else None
            yield current

    def train_step(self, batch):
        """One optimiser step on a device batch ``(inputs, labels, mask,
        labelled)``; returns the loss tensor (no host sync). With a teacher,
        the loss is :meth:`distilled_loss` (the teacher sees the same
        augmented inputs)."""
        inputs, labels, mask, labelled = batch
        inputs = self._augmented(inputs)
        features = None
        with self.autocast:
            if self.projection is None:
                out = self.net(*inputs)
            else:
                out, features = self.net(*inputs, return_features=True)
        if self.teacher is None:
            loss = self.loss_fn(out, labels, mask)
        else:
            loss = self.distilled_loss(inputs, out, labels, mask, labelled, features)
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
            frames += batch[1].shape[0] * batch[1].shape[1]  # windows x frames
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
