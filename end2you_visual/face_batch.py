"""What the face pipeline gives for each frame: :class:`FaceBatch`.

Every part of the pipeline (:mod:`end2you_visual.tracking`'s trackers,
:mod:`end2you_visual.people`, :mod:`end2you_visual.crops`) fills the rows of
these batches, one row per frame, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["FaceBatch", "empty_batch"]


@dataclass
class FaceBatch:
    """The faces of n frames, one row per frame.

    Attributes:
        crops: uint8 (n, size, size, 3), RGB.
        boxes: float32 (n, 4), ``x1, y1, x2, y2`` in source pixels of the
            tracked face (after smoothing); NaN where no face.
        found: bool (n,), whether the frame holds the tracked face.
        probs: float32 (n,), the detector's face probability; 0 where no face.
        landmarks: float32 (n, 5, 2), the tracked face's five landmarks
            ``x, y`` in source pixels (after smoothing), in MTCNN's order:
            left eye, right eye, nose tip, left and right mouth corners (left
            and right as seen in the image); NaN where no face. None from a
            pipeline that gives none.
    """

    crops: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    probs: np.ndarray
    landmarks: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.found)


def empty_batch(n: int, size: int) -> FaceBatch:
    """A FaceBatch of ``n`` no-face rows: zero crops of ``size`` x ``size``,
    NaN boxes and landmarks, probability 0."""
    return FaceBatch(
        crops=np.zeros((n, size, size, 3), np.uint8),
        boxes=np.full((n, 4), np.nan, np.float32),
        found=np.zeros(n, bool),
        probs=np.zeros(n, np.float32),
        landmarks=np.full((n, 5, 2), np.nan, np.float32),
    )
