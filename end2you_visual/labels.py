"""Label files: reading a label CSV and aligning it to the frames of a video.

A label CSV (End2You style) has a header row, then one row per label time::

    time,arousal,valence
    0.00,0.12,-0.05
    0.04,0.13,-0.04
    ...

The time column, in seconds, is the first column unless named otherwise; the
other columns are labels: continuous (arousal, valence) or 0/1 columns of a
multi-label emotion set. Frame ``i`` of a video has time ``i / fps``.

Two alignments (see :func:`align_labels`):

* ``align="video"``: one output frame per video frame, the label evaluated at
  the frame's time (sample-and-hold, nearest, or linear).
* ``align="labels"``: one output frame per label row, the video frame nearest
  to the row's time. End2You truncated ``int(fps * dt)`` frames per label,
  which is 0 for labels every 1/30 s on 30 fps video; here the nearest frame is
  used, so such labels map one-to-one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import numpy.typing as npt

from .csvfile import read_csv_rows
from .errors import InputError

ALIGN_MODES = ("video", "labels")
INTERPOLATIONS = ("previous", "nearest", "linear")

# Two times closer than this are the same time (float noise: 0.04 * 3 is
# 0.12000000000000001, 3 / 25 is 0.12).
TIME_EPSILON = 1e-6
# For sample-and-hold, a label row this fraction of a frame period after a
# frame's time still counts as "at" the frame: label files often store times
# rounded to 3 or 4 decimals ("0.0667" for 2/30 s), which would otherwise hold
# the previous row for that frame.
HOLD_FRACTION = 0.05


@dataclass
class LabelTrack:
    """The rows of one label file.

    ``times`` is float64 (R,), seconds, strictly increasing and >= 0;
    ``values`` is float32 (R, L), one column per name in ``names``.
    """

    path: Path
    names: List[str]
    times: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class Alignment:
    """Labels matched to video frames.

    ``frame_indices`` int64 (T,): the video frame of each output step (may
    repeat with ``align="labels"``); ``timestamps`` float64 (T,): seconds (the
    frame times for ``align="video"``, the label times for ``align="labels"``);
    ``labels`` float32 (T, L). ``dropped_rows``: label rows past the video's
    last frame (within tolerance) left out by ``align="labels"``.
    """

    frame_indices: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray
    names: List[str] = field(default_factory=list)
    dropped_rows: int = 0


def read_labels(path: str | os.PathLike[str], time_column: Optional[str] = None,
                label_columns: Optional[Sequence[str]] = None) -> LabelTrack:
    """Read a label CSV into a :class:`LabelTrack`.

    ``time_column`` names the time column (default: the first column);
    ``label_columns`` selects label columns in the order given (default: all
    the other columns). Only the time and selected columns must be numeric.
    Raises :class:`InputError` naming the file (and row, where it helps) for a
    missing file, no data rows, an unknown column, a non-numeric cell, a NaN
    or infinite time or label, a negative time, or times that do not strictly
    increase.
    """
    path = Path(path)
    header, rows = read_csv_rows(path, "label file")
    time_index, label_indices = _select_columns(path, header, time_column,
                                                label_columns)
    if not rows:
        raise InputError(path, "has a header but no data rows")
    times = np.empty(len(rows), dtype=np.float64)
    values = np.empty((len(rows), len(label_indices)), dtype=np.float64)
    for i, (line, cells) in enumerate(rows):
        if len(cells) != len(header):
            raise InputError(path, f"row {line} has {len(cells)} cells, the "
                                   f"header has {len(header)}")
        times[i] = _parse_number(path, line, header[time_index],
                                 cells[time_index])
        for j, k in enumerate(label_indices):
            values[i, j] = _parse_number(path, line, header[k], cells[k])
    lines = [line for line, _ in rows]
    names = [header[k] for k in label_indices]
    _check_times(path, lines, times)
    with np.errstate(over="ignore"):        # too large -> inf, reported
        values = values.astype(np.float32)
    _check_values(path, lines, names, values)
    return LabelTrack(path=path, names=names, times=times, values=values)


def align_labels(track: LabelTrack, n_frames: int, fps: float,
                 align: str = "video", interpolation: str = "previous",
                 tolerance: float = 1.0) -> Alignment:
    """Match the rows of ``track`` to the frames of a video.

    ``align="video"``: one step per video frame ``i`` (time ``i / fps``),
    labels evaluated with ``interpolation``: ``"previous"`` (sample-and-hold:
    a row at ``t_j`` holds over ``[t_j, t_j+1)``; a row at most 5 % of a
    frame period after a frame's time counts as at that frame, because label
    files store rounded times such as 0.0667 for 2/30 s), ``"nearest"``
    (ties, within 1 microsecond, go to the earlier row) or ``"linear"``.
    Frames before the first row take the first row, frames after the last
    row hold the last row.

    ``align="labels"``: one step per label row, on the video frame nearest
    to the row's time, ``floor(t * fps + 0.5)`` (halves round up). Labels at
    1/30 s on 30 fps video map one-to-one; a 100 Hz track on 25 fps video
    gives each frame about four steps (the frame index repeats). Rows whose
    nearest frame is past the last frame are dropped and counted in
    ``dropped_rows``. ``interpolation`` is not used.

    Coverage (both modes): the labels must start within ``tolerance``
    seconds of the video's start (time 0), and end within ``tolerance``
    seconds of the video's last frame (``(n_frames - 1) / fps``), neither
    before nor after it. A gap larger than that almost always means the
    video and label file were wrongly paired (another clip, another
    frame rate), so it raises :class:`InputError` naming the label file and
    giving both durations rather than training on misaligned labels.
    """
    n_frames, fps, tolerance = _check_align_args(n_frames, fps, align,
                                                 interpolation, tolerance)
    _check_coverage(track, n_frames, fps, tolerance)
    if align == "video":
        return _align_to_video(track, n_frames, fps, interpolation)
    return _align_to_labels(track, n_frames, fps)


def one_hot(index: int, n: int) -> np.ndarray:
    """A float32 (n,) vector of zeros with a 1 at ``index``."""
    if n < 1 or not 0 <= index < n:
        raise ValueError(f"one_hot: index {index} is not in [0, {n})")
    vector = np.zeros(n, dtype=np.float32)
    vector[index] = 1.0
    return vector


# --- reading -----------------------------------------------------------------

def _select_columns(path: Path, header: list[str], time_column: Optional[str],
                    label_columns: Optional[Sequence[str]]) -> tuple[int, list[int]]:
    """Indices of the time column and of the label columns in ``header``."""
    for k, name in enumerate(header):
        if not name:
            raise InputError(path, f"header column {k + 1} has no name")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InputError(path, f"header repeats column(s) {duplicates}")
    time_index = 0 if time_column is None else _column_index(
        path, header, time_column, "time")
    if label_columns is None:
        label_indices = [k for k in range(len(header)) if k != time_index]
    else:
        label_columns = list(label_columns)
        if len(set(label_columns)) != len(label_columns):
            raise InputError(path, f"label columns {label_columns} repeat a "
                                   "name")
        label_indices = [_column_index(path, header, name, "label")
                         for name in label_columns]
        if time_index in label_indices:
            raise InputError(path, f"column {header[time_index]!r} is the "
                                   "time column, not a label column")
    if not label_indices:
        raise InputError(path, f"has no label columns (header {header})")
    return time_index, label_indices


def _column_index(path: Path, header: list[str], name: str, role: str) -> int:
    if name not in header:
        raise InputError(path, f"no {role} column {name!r}; the columns are "
                               f"{header}")
    return header.index(name)


def _parse_number(path: Path, line: int, column: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise InputError(path, f"row {line}, column {column!r}: {cell!r} is "
                               "not a number") from None


def _check_times(path: Path, lines: Sequence[int], times: npt.NDArray[np.float64]) -> None:
    bad = ~np.isfinite(times)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "NaN" if math.isnan(times[i]) else "infinite"
        raise InputError(path, f"row {lines[i]}: time is {kind}")
    if (times < 0).any():
        i = int(np.argmax(times < 0))
        raise InputError(path, f"row {lines[i]}: time {times[i]:g} s is "
                               "negative")
    steps = np.diff(times)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise InputError(path, f"row {lines[i]}: time {times[i]:g} s is not "
                               f"after the previous row's {times[i - 1]:g} s "
                               "(times must strictly increase)")


def _check_values(path: Path, lines: Sequence[int], names: Sequence[str],
                  values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(values[i, j]) else "infinite or too large"
        raise InputError(path, f"row {lines[i]}, column {names[j]!r}: label "
                               f"is {kind}")


# --- alignment ---------------------------------------------------------------

def _check_align_args(n_frames: float, fps: float, align: str, interpolation: str,
                      tolerance: float) -> tuple[int, float, float]:
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, not {align!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, "
                         f"not {interpolation!r}")
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, not "
                         f"{n_frames!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive and finite, not {fps!r}")
    if not tolerance >= 0:  # math.inf is allowed: no coverage check
        raise ValueError(f"tolerance must be >= 0, not {tolerance!r}")
    return int(n_frames), float(fps), float(tolerance)


def _check_coverage(track: LabelTrack, n_frames: int, fps: float, tolerance: float) -> None:
    first, last = float(track.times[0]), float(track.times[-1])
    video_end = (n_frames - 1) / fps
    both = (f"labels cover {first:g}-{last:g} s ({last - first:g} s), the "
            f"video {n_frames} frames at {fps:g} fps covers 0-{video_end:g} s "
            f"(last frame time); tolerance {tolerance:g} s; is this the "
            "right label file for the video?")
    limit = tolerance + TIME_EPSILON
    if first > limit:
        raise InputError(track.path, f"labels start {first:g} s after the "
                                     f"video starts: {both}")
    if last < video_end - limit:
        raise InputError(track.path, f"labels end {video_end - last:g} s "
                                     f"before the video ends: {both}")
    if last > video_end + limit:
        raise InputError(track.path, f"labels run {last - video_end:g} s "
                                     f"past the video's end: {both}")


def _align_to_video(track: LabelTrack, n_frames: int, fps: float,
                    interpolation: str) -> Alignment:
    frames = np.arange(n_frames, dtype=np.int64)
    stamps = frames / fps
    if interpolation == "linear":
        labels = np.stack([np.interp(stamps, track.times, column)
                           for column in track.values.astype(np.float64).T],
                          axis=1)
    else:
        if interpolation == "previous":
            rows = _previous_rows(track.times, stamps, fps)
        else:
            rows = _nearest_rows(track.times, stamps)
        labels = track.values[rows]
    return Alignment(frame_indices=frames, timestamps=stamps,
                     labels=labels.astype(np.float32),
                     names=list(track.names))


def _previous_rows(times: npt.NDArray[np.float64], stamps: npt.NDArray[np.float64], fps: float) -> npt.NDArray[np.int64]:
    """For each stamp, the last row at or before it (the first row if none)."""
    epsilon = max(TIME_EPSILON, HOLD_FRACTION / fps)
    rows = np.searchsorted(times, stamps + epsilon, side="right") - 1
    return np.clip(rows, 0, len(times) - 1)


def _nearest_rows(times: npt.NDArray[np.float64], stamps: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """For each stamp, the nearest row; a tie goes to the earlier row."""
    right = np.clip(np.searchsorted(times, stamps), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    later_is_nearer = (stamps - times[left]) > (times[right] - stamps
                                                + TIME_EPSILON)
    return np.where(later_is_nearer, right, left)


def _align_to_labels(track: LabelTrack, n_frames: int, fps: float) -> Alignment:
    frames = np.floor((track.times + TIME_EPSILON) * fps + 0.5)
    frames = frames.astype(np.int64)
    keep = frames < n_frames
    if not keep.any():
        raise InputError(track.path, f"no label row falls on one of the "
                                     f"video's {n_frames} frames at {fps:g} "
                                     "fps")
    return Alignment(frame_indices=frames[keep],
                     timestamps=track.times[keep].copy(),
                     labels=track.values[keep].copy(),
                     names=list(track.names),
                     dropped_rows=int((~keep).sum()))
