"""Following faces over the frames of a video: the face pipeline's tracker part.

A tracker (:class:`FaceTracker`) takes the frames of a video batch by
batch and says, per face it follows, where that face is on every frame (a
:class:`~end2you_visual.face_batch.FaceBatch` per face, crops not cut yet:
the pipeline's cropper cuts them). Two are built:

* :class:`SubjectTracking` (``--faces main``): the main subject. It
  composes the pipeline's detector, a :class:`SubjectTracker` (which face
  is the subject, detection frame by detection frame: steps 2-4 of
  :mod:`end2you_visual.faces`: acquisition, matching, smoothing,
  interpolation) and a :class:`ShotCuts` (where the whole frame must be
  searched again); with ``detector="tracked"`` it refines the tracked face
  where it is expected with the detector's ``refine`` (MTCNN's last stage,
  :mod:`end2you_visual.mtcnn`).
* :class:`~end2you_visual.people.PeopleTracker` (``--faces all``): every
  person, each with a stable id.

The subject's five landmarks (MTCNN's, in frame pixels) are carried with its
box: smoothed by the box centre's filter, interpolated as the box is.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Protocol, Tuple

import numpy as np

from .detectors import Detections, FaceDetector
from .face_batch import FaceBatch, empty_batch
from .face_settings import check_setting
from .ranges import check_number

__all__ = ["FaceTracker", "MAIN", "ShotCuts", "State", "SubjectTracker", "SubjectTracking",
           "expected_position", "fill_rows", "filter_step", "match_costs", "smooth_box",
           "smooth_points"]

#: The id of the main subject in :meth:`SubjectTracking.track`'s output.
MAIN = 0

# A tracked face may grow or shrink by at most this factor between detections.
_MAX_SIZE_CHANGE = 1.5
# Track-guided detection (``detector="tracked"``): how many frames' expected
# boxes go through O-Net in one call; and the least probability of O-Net's
# refinement (below it, the frame is detected in full).
_REFINE_GROUP = 8
_REFINE_MIN_PROB = 0.95
# Shot cuts: frames are compared on thumbnails of this many points (rows,
# columns); a cut is a colour-histogram distance (half the L1 distance of
# the 512-bin joint RGB histograms, 0-1) above the first threshold, or a
# mean absolute thumbnail difference (0-1) above the second. On the clips
# of ../shared/data/clips, frames within a shot reach at most 0.07 / 0.056
# and the cuts of a stage recording (short_hamilton_clip) 0.16 / 0.109.
_THUMB_SHAPE = (36, 64)
_CUT_HISTOGRAM = 0.12
_CUT_DIFFERENCE = 0.08


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _to_xyxy(c: np.ndarray) -> np.ndarray:
    return np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])


class _Key:
    """What tracking decided on one detection frame."""

    __slots__ = ("index", "box", "prob", "segment", "points")

    def __init__(self, index: int, box: Optional[np.ndarray] = None, prob: float = 0.0,
                 segment: int = -1, points: Optional[np.ndarray] = None) -> None:
        self.index = index  # frame index in the video
        self.box = box  # float64 (4,) or None (no face)
        self.prob = prob
        self.segment = segment  # id of the continuous track segment
        self.points = points  # float64 (5, 2) landmarks, or None (no face, none given)


def fill_rows(out: FaceBatch, keys: List[_Key], start: int) -> None:
    """Write a track's detection-frame results (``keys``, _Key objects in
    order) into the rows of ``out`` (a FaceBatch whose row 0 is frame
    ``start``), and between two keys of one continuous stretch the boxes,
    probabilities and landmarks interpolated linearly."""
    for a, b in zip(keys, keys[1:] + [None]):
        if a.index >= start and a.box is not None:
            row = a.index - start
            out.boxes[row], out.probs[row], out.found[row] = a.box, a.prob, True
            if a.points is not None:
                assert out.landmarks is not None  # a tracker's rows (empty_batch) have landmarks
                out.landmarks[row] = a.points
        if b is None or a.box is None or b.box is None or a.segment != b.segment:
            continue
        for index in range(max(a.index + 1, start), b.index):
            t = (index - a.index) / (b.index - a.index)
            row = index - start
            out.boxes[row] = (1 - t) * a.box + t * b.box
            out.probs[row] = (1 - t) * a.prob + t * b.prob
            out.found[row] = True
            if a.points is not None and b.points is not None:
                assert out.landmarks is not None
                out.landmarks[row] = (1 - t) * a.points + t * b.points


def match_costs(expected: np.ndarray, boxes: np.ndarray, gap: float, match_distance: float
                ) -> np.ndarray:
    """How far each detection is from where a track expects its face: the
    centre distance relative to the face's size (max(w, h) of ``expected``,
    ``cx, cy, w, h``), inf outside the gates: farther than ``match_distance``
    x sqrt(``gap`` frames since its last detection frame), at most one face
    size, or a size change beyond 1.5x. ``boxes`` (k, 4) ``x1, y1, x2, y2``;
    returns float64 (k,)."""
    size = max(expected[2], expected[3], 1e-6)
    det = np.stack([_to_cxcywh(b) for b in np.asarray(boxes, np.float64)])
    distance = np.hypot(det[:, 0] - expected[0], det[:, 1] - expected[1]) / size
    reach = min(match_distance * np.sqrt(gap), 1.0)
    ratio = np.sqrt(np.maximum(det[:, 2] * det[:, 3], 1e-12)
                    / max(expected[2] * expected[3], 1e-12))
    ok = (distance <= reach) & (ratio <= _MAX_SIZE_CHANGE) & (ratio >= 1 / _MAX_SIZE_CHANGE)
    return np.where(ok, distance, np.inf)


def filter_step(expected: np.ndarray, velocity: np.ndarray, observed: np.ndarray, gap: float,
                smoothing: float) -> Tuple[np.ndarray, np.ndarray]:
    """One step of the alpha-beta (constant velocity) filter that smooths a
    track: the new ``(position, velocity)`` after observing ``observed``
    where ``expected`` was predicted, ``gap`` frames after the last step.
    The velocity covers the leading coordinates (a box's centre, of its
    ``cx, cy, w, h``; every landmark). The gains give the same time constant
    whatever ``detect_every`` is, critically damped."""
    alpha = 1 - smoothing ** gap
    beta = alpha * alpha / (2 - alpha)
    residual = observed - expected
    return (expected + alpha * residual,
            velocity + beta * residual[:len(velocity)] / gap)


#: A smoothed track: ``(position, velocity)``, the position a box's
#: ``cx, cy, w, h`` (velocity of the centre) or landmarks (5, 2) (velocity of each).
State = Tuple[np.ndarray, np.ndarray]


def expected_position(state: Optional[State], box: np.ndarray, gap: int) -> np.ndarray:
    """Where a face should be ``gap`` frames after its last detection frame:
    ``cx, cy, w, h``, its smoothed ``state`` moved by its velocity, or its
    last raw ``box`` (``x1, y1, x2, y2``) when it has no state (lost)."""
    if state is None:
        return _to_cxcywh(box)
    expected = state[0].copy()
    expected[:2] += state[1] * gap
    return expected


def smooth_box(state: Optional[State], box: np.ndarray, gap: int, smoothing: float) -> State:
    """A track's state after detecting ``box`` ``gap`` frames after its last
    detection: :func:`filter_step` from ``state``, or a new state at the box
    (no velocity) when ``state`` is None (a new or interrupted track)."""
    observed = _to_cxcywh(box)
    if state is None:
        return observed, np.zeros(2)
    return filter_step(expected_position(state, box, gap), state[1], observed, gap, smoothing)


def smooth_points(state: Optional[State], points: np.ndarray, gap: int,
                  smoothing: float) -> State:
    """:func:`smooth_box` for a face's five landmarks (5, 2): each point
    follows the centre's filter with its own velocity."""
    observed = np.asarray(points, np.float64).reshape(5, 2)
    if state is None:
        return observed, np.zeros((5, 2))
    position, velocity = state
    return filter_step(position + velocity * gap, velocity, observed, gap, smoothing)


class FaceTracker(Protocol):
    """What the face pipeline needs of a tracker."""

    #: Frames of this video searched whole by the detector (a statistic).
    full_detections: int
    #: The detector it runs (the pipeline's).
    face_detector: FaceDetector

    def reset(self) -> None:
        """Forget the current video."""

    def track(self, frames: np.ndarray) -> Dict[int, FaceBatch]:
        """Where each followed face is on the next frames (n, H, W, 3) of the
        video: ``{face id: FaceBatch of n rows}``, crops not cut (zeros)."""


class SubjectTracker:
    """Which face is the main subject, detection frame by detection frame.

    The first time faces are seen, the most prominent one (area x
    probability, among those with probability >= ``acquire_prob``) becomes
    the subject; later, only the detection nearest where the subject is
    expected continues the track (:func:`match_costs`); after more than
    ``max_lost`` frames without it, the most prominent face is acquired
    again. Its box (and landmarks) are smoothed by :func:`filter_step`.

    Args:
        max_lost: frames without the subject before another face is acquired.
        match_distance: the gate of :func:`match_costs`.
        acquire_prob: least probability of a face to become the subject.
        smoothing: the face setting ``smoothing`` (0: none).
    """

    def __init__(self, max_lost: int = 25, match_distance: float = 0.5,
                 acquire_prob: float = 0.9, smoothing: float = 0.5):
        self.max_lost = check_number("max_lost", max_lost, 0, integer=True)
        self.match_distance = check_number("match_distance", match_distance, 0, min_open=True)
        self.acquire_prob = check_number("acquire_prob", acquire_prob, 0, 1)
        self.smoothing = check_setting("smoothing", smoothing)
        self.reset()

    def reset(self) -> None:
        """Forget the subject."""
        self.box: Optional[np.ndarray] = None  # last raw detection of the subject, (4,)
        self.segment = -1  # id of the current continuous track segment
        self.lost = 0  # frames since the subject was last seen
        self.state: Optional[Tuple[np.ndarray, np.ndarray]] = None  # ((cx, cy, w, h), (vx, vy))
        # landmark filter state ((5, 2), (5, 2) per frame) or None
        self._points_state: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self.last_key: Optional[_Key] = None  # the last detection frame's result

    @property
    def in_view(self) -> bool:
        """The subject was found at the last detection frame."""
        return self.box is not None and self.lost == 0

    def step(self, index: int, boxes: np.ndarray, probs: np.ndarray,
             points: Optional[np.ndarray] = None) -> _Key:
        """Update the track with detection frame ``index`` (its faces:
        ``boxes`` (k, 4), ``probs`` (k,), ``points`` (k, 5, 2) or None; the
        landmarks go with the subject's box and do not take part in choosing
        it); returns (and keeps as :attr:`last_key`) its result."""
        self.last_key = self._step(index, boxes, probs, points)
        return self.last_key

    def _step(self, index: int, boxes: np.ndarray, probs: np.ndarray,
              points: Optional[np.ndarray]) -> _Key:
        gap = index - self.last_key.index if self.last_key is not None else 1
        if self.box is not None:
            j = self.match(boxes, gap)
            if j is not None:
                continuous = self.lost == 0
                self.lost = 0
                return self._accept(index, boxes[j], probs[j], gap, continuous,
                                    None if points is None else points[j])
            self.lost += gap
            self.state = None  # no smoothing (or motion) across a loss
            if self.lost <= self.max_lost:
                return _Key(index)
            self.box = None
        prominence = _area(boxes.astype(np.float64)) * probs * (probs >= self.acquire_prob)
        if not prominence.any():
            return _Key(index)
        j = int(np.argmax(prominence))
        self.segment += 1
        self.lost = 0
        return self._accept(index, boxes[j], probs[j], gap, continuous=False,
                            points=None if points is None else points[j])

    def expected(self, gap: int) -> np.ndarray:
        """Where the subject should be ``gap`` frames after the last detection
        frame: (cx, cy, w, h), moved by its velocity while tracked, its last
        detection while lost."""
        assert self.box is not None  # asked only while there is a subject
        return expected_position(self.state, self.box, gap)

    def match(self, boxes: np.ndarray, gap: int) -> Optional[int]:
        """Index of the detection that continues the track, or None.

        The detection nearest the expected position (centre distance
        relative to the subject's size, max(w, h)), within ``match_distance``
        x sqrt(frames since the last detection frame), at most 1 face size,
        and of similar size (within 1.5x). Faces of different people are
        rarely closer than a face width apart, so the crop does not jump;
        unlike IoU, this follows a small face moving fast.
        """
        if len(boxes) == 0:
            return None
        cost = match_costs(self.expected(gap), boxes, gap, self.match_distance)
        if not np.isfinite(cost).any():
            return None
        return int(np.argmin(cost))

    def _accept(self, index: int, box: np.ndarray, prob: float, gap: int, continuous: bool,
                points: Optional[np.ndarray] = None) -> _Key:
        """Take a detection as the subject's; returns the smoothed _Key.

        Smoothing is an alpha-beta (constant velocity) filter on the box
        centre and an exponential average on its size: jitter is averaged
        out while a face moving steadily is followed without lag. Each of
        the landmarks ``points`` (5, 2) follows the same filter as the
        centre (same alpha and beta, its own velocity).
        """
        self.box = np.asarray(box, np.float64)
        self.state = smooth_box(self.state if continuous else None, self.box, gap,
                                self.smoothing)
        # No landmarks given: none, and the landmark track restarts.
        self._points_state = None if points is None else smooth_points(
            self._points_state if continuous else None, points, gap, self.smoothing)
        return _Key(index, _to_xyxy(self.state[0]), float(prob), self.segment,
                    None if self._points_state is None else self._points_state[0].copy())


class ShotCuts:
    """Finds shot cuts: frames that differ sharply from the one before
    (colour histograms and differences of small thumbnails). Keeps the last
    frame's thumbnail, so a cut between two batches is found too."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the last frame (before the next video)."""
        self._last_thumb: Optional[np.ndarray] = None

    def find(self, frames: np.ndarray) -> np.ndarray:
        """bool (n,), True where a frame of ``frames`` (n, H, W, 3) differs
        sharply from the one before it (the last frame of the previous call
        for the first)."""
        h, w = frames.shape[1:3]
        ys = np.linspace(0, h - 1, _THUMB_SHAPE[0]).round().astype(np.int64)
        xs = np.linspace(0, w - 1, _THUMB_SHAPE[1]).round().astype(np.int64)
        thumbs = frames[:, ys][:, :, xs]
        if self._last_thumb is not None:
            thumbs = np.concatenate([self._last_thumb[None], thumbs])
        self._last_thumb = thumbs[-1].copy()
        cuts = np.zeros(len(frames), bool)
        if len(thumbs) < 2:
            return cuts
        shift = len(thumbs) - len(frames)  # 1 when the previous thumbnail leads
        q = thumbs.astype(np.int64) >> 5
        codes = (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).reshape(len(thumbs), -1)
        hist = np.stack([np.bincount(c, minlength=512) for c in codes]) / codes.shape[1]
        distance = np.abs(np.diff(hist, axis=0)).sum(axis=1) / 2
        difference = np.abs(np.diff(thumbs.astype(np.float32), axis=0)).mean(axis=(1, 2, 3)) / 255
        changed = (distance > _CUT_HISTOGRAM) | (difference > _CUT_DIFFERENCE)
        cuts[1 - shift:] = changed
        return cuts


def detection_rows(n: int, start: int, every: int, cuts: Optional[np.ndarray] = None) -> List[int]:
    """The rows of a batch of ``n`` frames (row 0 is frame ``start``) that
    are detection frames: every ``every``-th frame of the video, the last row
    and, given ``cuts`` (bool (n,)), every shot cut."""
    rows = {i for i in range(n) if (start + i) % every == 0} | {n - 1}
    if cuts is not None:
        rows |= set(np.flatnonzero(cuts).tolist())
    return sorted(rows)


class SubjectTracking:
    """The main subject's tracker part (a :class:`FaceTracker`): its detector,
    a :class:`SubjectTracker` and a :class:`ShotCuts`, and when to detect.

    Args:
        face_detector: the pipeline's :class:`~end2you_visual.detectors.FaceDetector`.
        subject: which face is the subject (:class:`SubjectTracker`).
        detector: ``"tracked"`` (refine the subject where it is expected
            between whole-frame searches) or ``"full"`` (search every
            detection frame whole); the face setting of that name.
        detect_every: detect on every k-th frame, interpolate between.
        refresh_every: with ``"tracked"``, a whole-frame search at least
            every this many frames while the subject is tracked.
        search_every: with ``"tracked"``, while nothing is in view, frames
            between whole-frame searches (see :class:`~end2you_visual.faces.FacePipeline`).
        batch_size: most frames searched whole in one detector call.
        refine_threshold: least probability of the detector's refinement
            for a face to be there at all (MTCNN's O-Net threshold).
    """

    def __init__(self, face_detector: FaceDetector, subject: SubjectTracker,
                 detector: str = "tracked", detect_every: int = 1, refresh_every: int = 50,
                 search_every: int = 5, batch_size: int = 16, refine_threshold: float = 0.7):
        self.face_detector = face_detector
        self.subject = subject
        self.cuts = ShotCuts()
        self.detector = check_setting("detector", detector)
        self.detect_every = check_setting("detect_every", detect_every)
        self.refresh_every = check_number("refresh_every", refresh_every, 1, integer=True)
        self.search_every = check_number("search_every", search_every, 1, integer=True)
        self.batch_size = check_setting("batch_size", batch_size)
        self.refine_threshold = check_number("thresholds", refine_threshold, 0, 1)
        self.reset()

    def reset(self) -> None:
        """Forget the current video."""
        self.subject.reset()
        self.cuts.reset()
        self._next_index = 0  # video index of the next frame given to track
        self._last_full: Optional[int] = None  # index of the last frame detected in full
        # Expected boxes are placed from the track as it was at a frame:
        # (group, frame index, centre-size, velocity); kept for a group of
        # _REFINE_GROUP frames (of the video, whatever the batches) or until
        # a full detection.
        self._anchor: Optional[tuple] = None
        self.full_detections = 0  # frames of this video detected in full (a statistic)
        self._untracked = 0  # frames detected in full in a row without a tracked face
        self._last_search: Optional[int] = None  # last frame searched while nothing was tracked

    def track(self, frames: np.ndarray) -> Dict[int, FaceBatch]:
        """The subject on the next frames (n, H, W, 3): ``{MAIN: FaceBatch}``,
        crops not cut."""
        self.face_detector.check_frame_size(frames.shape[2], frames.shape[1])
        n, start = len(frames), self._next_index
        out = empty_batch(n, 0)
        if n == 0:
            return {MAIN: out}
        keys = [self.subject.last_key] if self.subject.last_key is not None else []
        if self.detector == "full":
            rows = detection_rows(n, start, self.detect_every)
            chosen = frames if len(rows) == n else frames[rows]
            for row, found in zip(rows, self.face_detector.detect(chosen)):
                keys.append(self.subject.step(start + row, *found))
            self.full_detections += len(rows)
        else:
            cuts = self.cuts.find(frames)
            rows = detection_rows(n, start, self.detect_every, cuts)
            self._track_guided(frames, rows, cuts, start, keys)
        fill_rows(out, keys, start)
        self._next_index = start + n
        return {MAIN: out}

    def _full(self, index: int, found: Detections, keys: List[_Key]) -> None:
        """Frame ``index`` searched whole (its faces: ``found``)."""
        self._last_full = index
        self._anchor = None
        self.full_detections += 1
        keys.append(self.subject.step(index, *found))

    def _track_guided(self, frames: np.ndarray, key_rows: List[int], cuts: np.ndarray, start: int,
                      keys: List[_Key]) -> None:
        """Detect and track the key rows with ``detector="tracked"``.

        While the subject is tracked, groups of key rows are refined by
        the detector where it is expected; the first row where the
        refinement does not confirm it (no match, or a low probability), a
        cut and a due refresh are detected in full. While no face is in
        view, the whole frame is searched every ``search_every`` frames
        (:meth:`_search_untracked`).
        """
        pending: List[int] = []  # rows skipped while nothing is tracked
        subject = self.subject
        i = 0
        while i < len(key_rows):
            if not subject.in_view:  # nothing in view
                i = self._search_untracked(frames, key_rows, i, cuts, start, keys, pending)
                continue
            if self._can_refine(start + key_rows[i], cuts[key_rows[i]]):
                # the subject is in view: found at a detection frame, its track smoothed
                assert subject.last_key is not None and subject.state is not None
                group_id = (start + key_rows[i]) // _REFINE_GROUP
                if self._anchor is None or self._anchor[0] != group_id:
                    self._anchor = (group_id, subject.last_key.index, *subject.state)
                group = [key_rows[i]]
                for row in key_rows[i + 1:]:
                    if (start + row) // _REFINE_GROUP != (start + group[0]) // _REFINE_GROUP \
                            or not self._can_refine(start + row, cuts[row]):
                        break
                    group.append(row)
                for row, (boxes, probs, points) in zip(group,
                                                       self._refine_track(frames, group, start)):
                    j = subject.match(boxes, start + row - subject.last_key.index)
                    if j is None or probs[j] < _REFINE_MIN_PROB:
                        break
                    keys.append(subject.step(start + row, boxes, probs, points))
                    i += 1
                else:
                    continue
            # Full detection: one row while a face is tracked (the windows
            # resume after it); while none is, batches growing 1, 1, 2, 4...
            # up to batch_size frames (a face appearing costs little, a
            # video without faces is detected in whole batches).
            # A shot cut starts a new run (a face may appear there).
            if cuts[key_rows[i]]:
                self._untracked = 0
            size = 1 if subject.in_view else min(self.batch_size, max(1, self._untracked))
            group = key_rows[i:i + size]
            later_cuts = [k for k, row in enumerate(group) if k and cuts[row]]
            if later_cuts:
                group = group[:later_cuts[0]]
            for row, found in zip(group, self.face_detector.detect(frames[group])):
                self._full(start + row, found, keys)
                self._untracked = 0 if subject.in_view else self._untracked + 1
                i += 1

    def _search_untracked(self, frames: np.ndarray, key_rows: List[int], i: int, cuts: np.ndarray,
                          start: int, keys: List[_Key], pending: List[int]) -> int:
        """While no face is in view (none tracked, or the tracked one lost):
        search the whole frame of row
        ``key_rows[i]`` only at a cut, every ``search_every`` frames and on
        the last frame of the call (else the row waits in ``pending``); when
        a search finds a face, the waiting rows are searched first, in
        order. Returns the next i."""
        row = key_rows[i]
        index = start + row
        last = row == len(frames) - 1  # the waiting rows' frames are gone after this call
        if not cuts[row] and not last and self._last_search is not None and \
                index - self._last_search < self.search_every:
            pending.append(row)
            return i + 1
        self._last_search = index
        found = self.face_detector.detect(frames[row:row + 1])[0]
        rows = [row]
        if pending and (found[1] >= self.subject.acquire_prob).any():
            rows = pending + rows  # the face may have appeared since the last search
            detections = self.face_detector.detect(frames[pending]) + [found]
        else:
            detections = [found]
        pending.clear()
        for r, detected in zip(rows, detections):
            self._full(start + r, detected, keys)
        return i + 1

    def _can_refine(self, index: int, cut: bool) -> bool:
        """Whether frame ``index`` can be refined where the track expects the face."""
        return (self.subject.in_view and self.subject.state is not None
                and not cut and self._last_full is not None
                and index - self._last_full < self.refresh_every)

    def _refine_track(self, frames: np.ndarray, rows: List[int], start: int) -> List[Detections]:
        """The detector's refinement where the subject is expected in ``rows``.

        The expected place is the anchor's (the smoothed track at the
        start of the group, or after the last full detection) moved by its
        velocity, so that it does not depend on where batches end; its
        size is the anchor's. All rows' boxes go through the detector's
        ``refine`` in one call (MTCNN: O-Net at three scales,
        :func:`~end2you_visual.mtcnn.refine_boxes`).
        Returns ``(boxes, probs, landmarks)`` per row as the detector's
        ``detect`` does, in frame pixels: the refined box when its
        probability passes ``refine_threshold``, else none.
        """
        assert self._anchor is not None  # placed by _track_guided before refining
        _, anchor, position, velocity = self._anchor
        offsets = np.array([start + row - anchor for row in rows], np.float64)[:, None]
        expected = np.tile(position, (len(rows), 1))
        expected[:, :2] += velocity * offsets
        boxes, probs, points = self.face_detector.refine(
            frames[rows], np.stack([_to_xyxy(e) for e in expected]))
        results = []
        for box, prob, point in zip(boxes, probs, points):
            k = 1 if prob > self.refine_threshold else 0
            results.append((box[None][:k], prob[None][:k], point[None][:k]))
        return results
