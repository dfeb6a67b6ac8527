"""Which output rows, with which labels, each decoded batch of a video
gives: :class:`RowPlan` (used by `generate` for the main subject and for
every person)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np

from .errors import InputError
from .labels import TIME_EPSILON, Alignment, LabelTrack, align_labels

if TYPE_CHECKING:
    from .generate_settings import GenerateSettings
    from .video import VideoFrames

__all__ = ["RowPlan"]


class RowPlan:
    """Which output rows, with which labels, each decoded batch of frames gives.

    Unlabelled video: every decoded frame. Labelled video: the alignment's
    frame indices (a frame may give no row, or several with
    ``--align labels``). A video's header only estimates its frame count (a
    longer audio track, a truncated file), so the rows are planned for the
    estimate plus a second, planned again further if the video runs longer,
    and the labels' coverage is checked on the true count at the end.
    """

    def __init__(self, track: Optional[LabelTrack], fps: float, settings: GenerateSettings,
                 estimate: int) -> None:
        self.track, self.fps, self.settings = track, fps, settings
        self.pointer = 0
        self.alignment: Optional[Alignment] = None
        if track is not None:
            self._plan(max(estimate, 1) + int(np.ceil(fps)) + 1)

    def _plan(self, n_frames: int) -> None:
        s = self.settings
        assert self.track is not None  # planned for labelled videos only
        self.planned = n_frames
        self.alignment = align_labels(self.track, n_frames, self.fps, s.align, s.interpolation,
                                      math.inf)

    def rows(self, start: int, n: int
             ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], int]:
        """(frame rows within the batch, timestamps, labels or None, first output row)."""
        first = self.pointer
        if self.track is None:
            self.pointer += n
            return np.arange(n), (start + np.arange(n)) / self.fps, None, first
        if start + n > self.planned:
            self._plan(max(start + n, 2 * self.planned))
        a = self.alignment
        assert a is not None  # planned with the track
        self.pointer = int(np.searchsorted(a.frame_indices, start + n, side="left"))
        return (a.frame_indices[first:self.pointer] - start, a.timestamps[first:self.pointer],
                a.labels[first:self.pointer], first)

    def check_coverage(self, video: VideoFrames) -> int:
        """Raise InputError if the labels do not fit the frames that decoded
        (``video``: the :class:`~end2you_visual.video.VideoFrames` read);
        returns the number of label rows after the video's end (dropped).

        When the video ended early (a truncated file), labels running past
        its last decoded frame are the video's fault, not the label file's:
        the error names the video and says so.
        """
        if self.track is None:
            return 0
        s = self.settings
        decoded, last_label = video.decoded, float(self.track.times[-1])
        video_end = (decoded - 1) / self.fps
        if video.ends_early and last_label > video_end + s.tolerance + TIME_EPSILON:
            raise InputError(video.info.path, (
                f"the video ends early (decoded {decoded} of {video.expected} frames: "
                f"{video.decode_error}); its labels {self.track.path} run "
                f"{last_label - video_end:g} s past its last decoded frame; the file may "
                "be truncated or damaged"))
        return align_labels(self.track, decoded, self.fps, s.align, s.interpolation,
                            s.tolerance).dropped_rows
