"""Label frame counts, re-sampling of rare-label windows, and the window sampler.

Counting: a frame *carries* a label when its value is >= 0.5 (0/1 multi-label
columns, one-hot classes). Counts are taken over the training windows as the
loss sees them: padding never counts, a frame in two overlapping windows
counts twice, and with ``skip_no_face`` frames without a face do not count.

Re-sampling (the paper's imbalance fix, on windows, never single frames):

* ``threshold`` = ``rare_threshold`` x the training frames when
  ``rare_threshold < 1``, else ``rare_threshold`` frames;
* a label is **rare** when 0 < its frame count < threshold, **frequent**
  when its count >= threshold; labels in ``ignore`` (e.g. ``neutral``, which
  accompanies nearly every window) are neither;
* a window **qualifies** when it holds at least one frame of a rare label
  and no frame of a frequent one;
* each qualifying window is added ``repeats`` more times to the epoch.

:class:`ResampleReport` gives the per-label frame counts before and after
(the paper's Table 4) as a dict and as a printed table.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ..data import Clip, WindowDataset

__all__ = ["sequence_labels", "window_label_counts", "ResampleReport",
           "resample_windows", "WindowSampler", "MixedWindowSampler", "unlabelled_count"]

PRESENT = 0.5


def sequence_labels(dataset: WindowDataset, skip_no_face: bool = False
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sequence of a WindowDataset: (labels (n, L) float32, valid (n,) bool).

    Reads labels only (no pixels): each file's rows in one read (an image
    shard holds thousands of one-frame sequences), then cut per sequence.
    """
    rows: dict[int, Clip] = {}
    for fi in sorted({fi for fi, _ in dataset.sequences}):
        f = dataset.files[fi]
        whole = dataclasses.replace(f.sequences[0], index=-1, start=0, length=f.n_frames)
        rows[fi] = f.read(whole, 0, f.n_frames, frames=False)
    out = []
    for fi, info in dataset.sequences:
        clip = rows[fi]
        a, b = info.start, info.start + info.length
        valid = (clip.face_found[a:b].astype(bool) if skip_no_face
                 else np.ones(info.length, bool))
        out.append((np.asarray(clip.labels[a:b], np.float32), valid))
    return out


def window_label_counts(dataset: WindowDataset,
                        seq_labels: Sequence[tuple[np.ndarray, np.ndarray]],
                        columns: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames carrying each label in each window, and valid frames per window.

    Args:
        dataset: a WindowDataset (its ``windows`` and ``window``).
        seq_labels: :func:`sequence_labels` of it.
        columns: label columns to count (default all).

    Returns:
        ``(counts (n_windows, L) int64, frames (n_windows,) int64)``.
    """
    cums = []
    for labels, valid in seq_labels:
        lab = labels if columns is None else labels[:, columns]
        present = (lab >= PRESENT) & valid[:, None]
        cums.append((np.concatenate([np.zeros((1, lab.shape[1]), np.int64),
                                     np.cumsum(present, axis=0)]),
                     np.concatenate([[0], np.cumsum(valid)])))
    n_labels = cums[0][0].shape[1] if cums else 0
    counts = np.zeros((len(dataset.windows), n_labels), np.int64)
    frames = np.zeros(len(dataset.windows), np.int64)
    for i, (q, start) in enumerate(dataset.windows):
        cum, cum_valid = cums[q]
        length = len(cum) - 1
        stop = length if dataset.window is None else min(start + dataset.window, length)
        counts[i] = cum[stop] - cum[start]
        frames[i] = cum_valid[stop] - cum_valid[start]
    return counts, frames


@dataclass
class ResampleReport:
    """Per-label frame counts before and after re-sampling (Table 4).

    ``before``/``after``: {label: frames}; ``rare``/``frequent``/``ignored``:
    label lists; ``threshold``: in frames; ``windows_before``/``windows_after``:
    windows per epoch; ``qualifying``: windows that were repeated.
    """

    label_names: list[str]
    before: dict[str, int]
    after: dict[str, int]
    rare: list[str] = field(default_factory=list)
    frequent: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    threshold: float = 0.0
    windows_before: int = 0
    windows_after: int = 0
    qualifying: int = 0
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"label_names": list(self.label_names), "before": dict(self.before),
                "after": dict(self.after), "rare": list(self.rare),
                "frequent": list(self.frequent), "ignored": list(self.ignored),
                "threshold": float(self.threshold), "windows_before": self.windows_before,
                "windows_after": self.windows_after, "qualifying": self.qualifying,
                "repeats": self.repeats}

    def table(self) -> str:
        """A plain-text table: label, frames before, after, factor, role."""
        width = max([5] + [len(n) for n in self.label_names])
        lines = [f"{'label':<{width}}  {'before':>10}  {'after':>10}  {'x':>5}  role",
                 "-" * (width + 38)]
        for name in self.label_names:
            b, a = self.before[name], self.after[name]
            role = ("rare" if name in self.rare else "frequent" if name in self.frequent
                    else "ignored" if name in self.ignored else "absent")
            factor = f"{a / b:5.2f}" if b else "    -"
            lines.append(f"{name:<{width}}  {b:>10,d}  {a:>10,d}  {factor}  {role}")
        lines.append(f"windows: {self.windows_before:,d} -> {self.windows_after:,d} "
                     f"({self.qualifying:,d} qualifying x {self.repeats} extra copies); "
                     f"rare below {self.threshold:,.0f} frames")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _counts_dict(names: Iterable[str], counts: Iterable[Any]) -> dict[str, int]:
    return {n: int(c) for n, c in zip(names, counts)}


def resample_windows(counts: np.ndarray, frames: np.ndarray, label_names: Iterable[str],
                     rare_threshold: float = 0.1, repeats: int = 4, ignore: Iterable[str] = ()
                     ) -> tuple[list[int], ResampleReport]:
    """Window indices for one epoch with rare-label windows repeated.

    Args:
        counts, frames: :func:`window_label_counts`.
        label_names: names of the count columns.
        rare_threshold: fraction of the training frames (< 1) or frame count.
        repeats: extra copies of each qualifying window.
        ignore: labels that are never frequent (nor rare).

    Returns:
        ``(indices (list of window indices, each window once plus the
        copies), ResampleReport)``.
    """
    counts = np.asarray(counts, np.int64)
    names = list(label_names)
    total_before = counts.sum(axis=0)
    n_frames = int(np.asarray(frames).sum())
    threshold = rare_threshold * n_frames if rare_threshold < 1 else float(rare_threshold)
    ignored = [n for n in names if n in set(ignore)]
    rare = [n for n, c in zip(names, total_before)
            if n not in ignored and 0 < c < threshold]
    frequent = [n for n, c in zip(names, total_before) if n not in ignored and c >= threshold]
    rare_cols = [names.index(n) for n in rare]
    frequent_cols = [names.index(n) for n in frequent]
    has_rare = counts[:, rare_cols].sum(axis=1) > 0 if rare_cols else np.zeros(len(counts), bool)
    has_frequent = (counts[:, frequent_cols].sum(axis=1) > 0 if frequent_cols
                    else np.zeros(len(counts), bool))
    qualifying = np.flatnonzero(has_rare & ~has_frequent)
    indices = list(range(len(counts))) + [int(i) for i in qualifying for _ in range(repeats)]
    total_after = total_before + repeats * counts[qualifying].sum(axis=0)
    report = ResampleReport(
        label_names=names, before=_counts_dict(names, total_before),
        after=_counts_dict(names, total_after), rare=rare, frequent=frequent,
        ignored=ignored, threshold=float(threshold), windows_before=len(counts),
        windows_after=len(indices), qualifying=len(qualifying), repeats=int(repeats))
    return indices, report


class WindowSampler(torch.utils.data.Sampler):
    """Yields window indices for one epoch, for one of ``world_size`` processes.

    The list (with repeats) is shuffled with ``seed + epoch`` (call
    :meth:`set_epoch` before each epoch), so every process, and a resumed
    run, sees the same order. Process ``rank`` takes every ``world_size``-th
    index. With ``pad`` (training) the list is first extended by wrapping
    around so that all processes get the same number of windows (as
    ``DistributedSampler`` does); without it (validation) nothing is repeated.
    """

    def __init__(self, indices: Iterable[int], shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad: bool = True) -> None:
        self.indices = list(indices)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(self.indices)
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.indices), generator=gen).tolist()
        return [self.indices[i] for i in perm]

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self.pad and self.world_size > 1 and order:
            total = math.ceil(len(order) / self.world_size) * self.world_size
            order = (order * math.ceil(total / len(order)))[:total]
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        n = len(self.indices)
        if self.pad:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))


def unlabelled_count(labelled: int, pool: int, share: float | None = None) -> int:
    """Unlabelled windows per epoch beside ``labelled`` labelled ones: all
    ``pool`` of them when ``share`` is None, else the number that makes them
    ``share`` of the epoch's windows, ``round(labelled * share / (1 - share))``."""
    if share is None:
        return int(pool)
    return int(round(labelled * float(share) / (1.0 - float(share)))) if pool else 0


class MixedWindowSampler(WindowSampler):
    """A :class:`WindowSampler` over ``indices`` plus ``count`` windows drawn
    each epoch from ``pool`` (unlabelled windows for distillation).

    The draw takes the pool in a random order, again and again as long as
    ``count`` asks for more; it and the shuffle of the whole epoch come from
    one generator seeded with ``seed + epoch`` (a resumed run draws the same).
    """

    def __init__(self, indices: Iterable[int], pool: Iterable[int], count: int,
                 **kwargs: Any) -> None:
        super().__init__(indices, **kwargs)
        self.pool = list(pool)
        self.count = int(count) if self.pool else 0

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn: list[int] = []
        while len(drawn) < self.count:
            drawn += [self.pool[i] for i in torch.randperm(len(self.pool), generator=gen).tolist()]
        order = list(self.indices) + drawn[:self.count]
        if not self.shuffle:
            return order
        perm = torch.randperm(len(order), generator=gen).tolist()
        return [order[i] for i in perm]

    def __len__(self) -> int:
        n = len(self.indices) + self.count
        if self.pad:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))
