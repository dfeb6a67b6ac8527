"""Batches of windows read in one piece, for the training and validation loaders.

``WindowBatches(dataset)[[i, j, ...]]`` returns the same dict as
``default_collate([dataset[i], dataset[j], ...])`` for a
:class:`~end2you_visual.data.WindowDataset`, but reads each window's frames
(and, for a dataset read with ``audio``, each frame's audio window)
straight into one batch tensor, which inside a DataLoader worker lives in
shared memory. That saves the per-window zero-filled copy and the collate
copy: about 2 x 10 MB of memory traffic per 150-frame window of 150x150
crops, which otherwise competes with the training process for the CPUs.

Use it with ``DataLoader(WindowBatches(ds), batch_size=None,
sampler=BatchSampler(sampler, batch_size, drop_last=False))``: one worker
task per batch.

``WindowBatches(ds, unlabelled=other)`` also serves the windows of
``other`` (a WindowDataset of unlabelled files, for distillation) as indices
``len(ds)`` on: their labels are zeros, and the batch then holds
``labelled`` (B,), False for them (True for the windows of ``ds``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch.utils.data import get_worker_info

if TYPE_CHECKING:
    from ..data import WindowDataset

__all__ = ["WindowBatches"]


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in shared memory inside a DataLoader worker
    (as ``default_collate`` does), so sending it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(int(np.prod(shape)), device=proto.device)
    return proto.new(storage).resize_(*shape)


class WindowBatches(torch.utils.data.Dataset):
    """A WindowDataset served a batch at a time: ``self[list_of_indices]``."""

    def __init__(self, windows: WindowDataset, unlabelled: WindowDataset | None = None) -> None:
        if windows.window is None:
            raise ValueError("WindowBatches needs fixed-length windows (window=None given)")
        if unlabelled is not None and unlabelled.window != windows.window:
            raise ValueError("unlabelled windows must be as long as the labelled ones")
        self.windows = windows
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return len(self.windows) + (len(self.unlabelled) if self.unlabelled is not None else 0)

    def _source(self, index: int) -> tuple[WindowDataset, int, bool]:
        """(WindowDataset, its window index, labelled) of window ``index``."""
        if index < len(self.windows):
            return self.windows, index, True
        # Past the labelled windows: there are unlabelled ones (__len__).
        return cast("WindowDataset", self.unlabelled), index - len(self.windows), False

    def __getitem__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        ds = self.windows
        width, size = cast(int, ds.window), ds.frame_size  # fixed-length (__init__)
        n_labels = len(ds.label_names)
        b = len(indices)
        frames = _empty((b, width, size, size, 3), torch.uint8)
        labels = torch.zeros((b, width, n_labels), dtype=torch.float32)
        mask = torch.zeros((b, width), dtype=torch.bool)
        face_found = torch.zeros((b, width), dtype=torch.bool)
        sequence = torch.empty(b, dtype=torch.int64)
        start = torch.empty(b, dtype=torch.int64)
        labelled = torch.ones(b, dtype=torch.bool)
        if ds.audio:
            audio = torch.zeros((b, width, cast(int, ds.audio_samples)), dtype=torch.float32)
            audio_found = torch.zeros((b, width), dtype=torch.bool)
        for k, index in enumerate(indices):
            source, index, has_labels = self._source(index)
            labelled[k] = has_labels
            file, info, first, stop = source.locate(index)
            clip = file.read(info, first, stop, audio=ds.audio)
            pixels = cast(np.ndarray, clip.frames)  # read with frames
            n = len(pixels)
            if ds.audio:
                samples = cast(np.ndarray, clip.audio)  # read with audio
                audio[k, :n, :samples.shape[1]] = torch.from_numpy(samples)
                audio_found[k, :n] = bool(clip.audio_found)
            frames[k, :n] = torch.from_numpy(pixels)
            if n < width:
                frames[k, n:] = 0
            if has_labels:
                labels[k, :n] = torch.from_numpy(np.asarray(clip.labels, np.float32))
            mask[k, :n] = True
            face_found[k, :n] = torch.from_numpy(np.asarray(clip.face_found, bool))
            sequence[k], start[k] = source.windows[index]
        batch = {"frames": frames, "labels": labels, "mask": mask, "face_found": face_found,
                 "sequence": sequence, "start": start}
        if self.unlabelled is not None:
            batch["labelled"] = labelled
        if ds.audio:
            batch.update(audio=audio, audio_found=audio_found)
        return batch
