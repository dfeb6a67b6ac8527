"""Batches of windows read in one piece, for the training and validation loaders.

``WindowBatches(dataset)[[i, j, ...]]`` returns the same dict as
``default_collate([dataset[i], dataset[j], ...])`` for a
:class:`~end2you_visual.data.WindowDataset`, but reads each window's frames
straight into one batch tensor, which inside a DataLoader worker lives in
shared memory. That saves the per-window zero-filled copy and the collate
copy: about 2 x 10 MB of memory traffic per 150-frame window of 150x150
crops, which otherwise competes with the training process for the CPUs.

Use it with ``DataLoader(WindowBatches(ds), batch_size=None,
sampler=BatchSampler(sampler, batch_size, drop_last=False))``: one worker
task per batch.
"""
import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["WindowBatches"]


def _empty(shape, dtype):
    """An uninitialised tensor; in shared memory inside a DataLoader worker
    (as ``default_collate`` does), so sending it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(int(np.prod(shape)), device=proto.device)
    return proto.new(storage).resize_(*shape)


class WindowBatches(torch.utils.data.Dataset):
    """A WindowDataset served a batch at a time: ``self[list_of_indices]``."""

    def __init__(self, windows):
        if windows.window is None:
            raise ValueError("WindowBatches needs fixed-length windows (window=None given)")
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, indices):
        ds = self.windows
        width, size = ds.window, ds.frame_size
        n_labels = len(ds.label_names)
        b = len(indices)
        frames = _empty((b, width, size, size, 3), torch.uint8)
        labels = torch.zeros((b, width, n_labels), dtype=torch.float32)
        mask = torch.zeros((b, width), dtype=torch.bool)
        face_found = torch.zeros((b, width), dtype=torch.bool)
        sequence = torch.empty(b, dtype=torch.int64)
        start = torch.empty(b, dtype=torch.int64)
        for k, index in enumerate(indices):
            file, info, first, stop = ds.locate(index)
            clip = file.read(info, first, stop)
            n = len(clip.frames)
            frames[k, :n] = torch.from_numpy(clip.frames)
            if n < width:
                frames[k, n:] = 0
            labels[k, :n] = torch.from_numpy(np.asarray(clip.labels, np.float32))
            mask[k, :n] = True
            face_found[k, :n] = torch.from_numpy(np.asarray(clip.face_found, bool))
            sequence[k], start[k] = ds.windows[index]
        return {"frames": frames, "labels": labels, "mask": mask, "face_found": face_found,
                "sequence": sequence, "start": start}
