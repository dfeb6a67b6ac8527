"""Every person in a video, each followed with a stable id (``--faces all``).

:class:`PeopleTracker` is the face pipeline's tracker part for every
person (a :class:`~end2you_visual.tracking.FaceTracker`, as the main
subject's :class:`~end2you_visual.tracking.SubjectTracking` is): it turns
batches of video frames into one :class:`~end2you_visual.face_batch.FaceBatch`
per person, the same rows, boxes and no-face frames as the main subject's
tracker gives for its one face. A :class:`~end2you_visual.faces.FacePipeline`
with ``faces="all"`` composes it with the detector (MTCNN's cascade and its
O-Net refinement) and the cropper::

    pipeline = FacePipeline(faces="all", fps=info.fps)
    for start, frames in iter_frame_batches(path):
        batch = pipeline.track(frames)       # {person id: FaceBatch of n rows}
    persons = pipeline.people()              # who was seen, when, where

What happens on each detection frame (every ``detect_every``-th frame, and
every shot cut):

1. Detection. While people are in view, only O-Net runs, on where each
   of them is expected (their last box moved by their velocity; all
   people and up to 8 frames in one batch): the cost grows with the number
   of people through O-Net alone. A person O-Net does not confirm
   (probability below 0.95) is missing from that frame on. The whole frame
   is searched by MTCNN's cascade at a shot cut, every ``refresh_every``
   frames (a newcomer is found there) and every ``search_every`` frames
   (about 0.2 s) while somebody is missing or nobody is in view; while
   nobody is, the frames between searches wait, and once a search finds a
   face (the last frame of each :meth:`process` call is searched when
   frames wait), they are searched too: the face is found from the frame
   it appears in.
2. Association. Detections are given to the tracks by one global
   assignment (scipy's ``linear_sum_assignment``) on the distance between
   each detection and where each track expects its face, relative to the
   face's size, within ``match_distance`` x sqrt(frames since) and a size
   change of 1.5x at most: two people side by side never swap.
3. Short misses. A track missing for at most ``max_gap`` seconds (a missed
   detection, a hand over the face) keeps its id; its frames meanwhile are
   no-face frames.
4. Re-identification. After a shot cut, or a longer absence, positions say
   nothing: a face that no tracked person explains is compared by
   appearance (:func:`appearance`: the colours of the face, hair and chin,
   quarter by quarter) with every person seen so
   far and not in view; above ``relink_similarity`` it is that person again,
   otherwise a new person (with probability at least ``acquire_prob``).
5. Smoothing and interpolation as for the main subject (an alpha-beta
   filter per person, boxes interpolated between detection frames of one
   continuous stretch).

A person seen on fewer than ``min_duration`` seconds of frames is dropped at
:meth:`PeopleTracker.finish` (a passer-by, a false detection): ``process``
returns every candidate, the caller keeps those :meth:`finish` lists.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

import numpy as np

from .detectors import Detections, FaceDetector
from .face_batch import FaceBatch, empty_batch
from .face_settings import check_setting
from .ranges import check_number
from .tracking import (_REFINE_GROUP, _REFINE_MIN_PROB, ShotCuts, _Key, _area, _to_xyxy,
                       detection_rows, expected_position, fill_rows, match_costs, smooth_box,
                       smooth_points)

__all__ = ["PeopleTracker", "Person", "PersonSeries", "appearance", "RELINK_SIMILARITY"]

# Appearance: the square around the face box, this many face sides wide,
# cut into 2 x 2 quarters, each binned into this many levels per colour channel.
_CONTEXT = 1.3
_GRID = 2
_BINS = 8
#: Least appearance similarity (0-1) for a face to be a person seen before.
#: Chosen from a trace of the re-identification step on four composites of
#: two different real people side by side who swap sides at a cut (as in
#: tests/test_people.py): across the cut the same person scored 0.91-0.98
#: and the other person at most 0.64; but on a dark stage recording
#: (short_hamilton_clip.mp4) faces of different people scored up to 0.82
#: against each other. The threshold is above every
#: different-person score seen; a new id for a person seen before is the
#: lesser error.
RELINK_SIMILARITY = 0.85
# A match must also beat every rival (another person gone, another new
# face) by this much.
_RELINK_MARGIN = 0.05


def appearance(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A face's appearance descriptor: float64 (2048,), unit length.

    The square of side 1.3 x max(w, h) around ``box`` (the face, hair and
    chin) is cut into 2 x 2 quarters; each gives its joint RGB histogram (8
    levels a channel), square-rooted and normalised, so that the dot product
    of two descriptors is the mean Bhattacharyya coefficient of their
    quarters (1: the same colours in the same places).

    Args:
        frame: uint8 (H, W, 3), RGB.
        box: ``x1, y1, x2, y2`` in pixels.
    """
    h, w = frame.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * _CONTEXT / 2
    x1, x2 = int(max(0, cx - half)), int(min(w, cx + half))
    y1, y2 = int(max(0, cy - half)), int(min(h, cy + half))
    patch = frame[y1:y2, x1:x2]
    ph, pw = patch.shape[:2]
    parts = [_histogram(patch[i * ph // _GRID:(i + 1) * ph // _GRID,
                              j * pw // _GRID:(j + 1) * pw // _GRID])
             for i in range(_GRID) for j in range(_GRID)]
    return _unit(np.concatenate(parts))


def _histogram(patch: np.ndarray) -> np.ndarray:
    """The square-rooted, unit-length joint RGB histogram of ``patch``."""
    if patch.size == 0:
        return np.zeros(_BINS ** 3)
    step = max(1, int(min(patch.shape[:2]) // 48))  # about 48 x 48 samples
    q = patch[::step, ::step].astype(np.int64) // (256 // _BINS)
    codes = (q[..., 0] * _BINS + q[..., 1]) * _BINS + q[..., 2]
    return _unit(np.sqrt(np.bincount(codes.ravel(), minlength=_BINS ** 3).astype(np.float64)))


@dataclass
class Person:
    """One person of a video, as :meth:`PeopleTracker.finish` reports them.

    Attributes:
        id: 1, 2, ... in order of first appearance; stable across the video.
        first_frame, last_frame: video frame indices of the first and last
            frame where the person's face is found.
        frames: frames where the face is found.
        mean_x, mean_y: mean centre of the face box over those frames, as a
            fraction of the frame's width and height (0 left/top, 1 right/bottom).
        mean_size: mean side of the face box, pixels.
    """

    id: int
    first_frame: int
    last_frame: int
    frames: int
    mean_x: float
    mean_y: float
    mean_size: float

    def to_dict(self) -> dict:
        return {"id": self.id, "first_frame": self.first_frame, "last_frame": self.last_frame,
                "frames": self.frames, "mean_x": round(self.mean_x, 4),
                "mean_y": round(self.mean_y, 4), "mean_size": round(self.mean_size, 1)}


@dataclass
class _Track:
    """The state of one person's track."""

    id: int
    box: np.ndarray                      # last raw detection (4,)
    state: Optional[tuple] = None        # ((cx, cy, w, h), (vx, vy)) or None
    points_state: Optional[tuple] = None
    segment: int = 0                     # continuous stretch, for interpolation
    lost: int = 0                        # frames since last seen
    last_index: int = -1                 # frame index of its last detection frame
    active: bool = True                  # tracked now (else ended, kept for re-linking)
    descriptor: Optional[np.ndarray] = None
    keys: List[_Key] = field(default_factory=list)  # detection-frame results not yet written
    # statistics over found frames
    found: int = 0
    first: int = -1
    last: int = -1
    sum_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    sum_size: float = 0.0


class PeopleTracker:
    """Detect and track every face of a video, batch by batch (crops are
    the pipeline's cropper's).

    Args:
        face_detector: the pipeline's
            :class:`~end2you_visual.detectors.FaceDetector`.
        fps: the video's frame rate (for the durations below).
        smoothing, detect_every: the face settings of those names
            (:class:`~end2you_visual.face_settings.FaceSettings`).
        min_duration: seconds of frames with the face found for a person to
            be kept by :meth:`finish`.
        max_gap: seconds a person may be missing and keep the track
            (motion-based); longer, they are re-identified by appearance.
        relink_similarity: least appearance similarity (0-1) for a face to
            be a person seen before (:data:`RELINK_SIMILARITY`).
        search_every: while somebody is missing or nobody is in view, frames
            between whole-frame searches (the pipeline gives 0.2 s of frames).
        match_distance, acquire_prob, refresh_every: as for the main
            subject's :class:`~end2you_visual.faces.FacePipeline` (which
            works out the frame counts from the frame rate, for both trackers).
    """

    def __init__(self, face_detector: FaceDetector, fps: float = 25.0, smoothing: float = 0.5,
                 detect_every: int = 1, min_duration: float = 0.5, max_gap: float = 1.0,
                 relink_similarity: float = RELINK_SIMILARITY,
                 search_every: int = 5, match_distance: float = 0.5,
                 acquire_prob: float = 0.9, refresh_every: int = 50):
        # scipy's assignment, imported (0.4 s) when people are tracked, not
        # in the middle of a video nor with `import end2you_visual.faces`.
        from scipy.optimize import linear_sum_assignment

        self._assign = linear_sum_assignment
        self.face_detector = face_detector
        self.cuts = ShotCuts()
        self.fps = float(fps)
        self.smoothing = check_setting("smoothing", smoothing)
        self.detect_every = check_setting("detect_every", detect_every)
        min_duration = check_setting("min_duration", min_duration)
        max_gap = check_setting("max_gap", max_gap)
        self.min_frames = max(1, int(round(min_duration * self.fps)))
        self.max_lost = max(0, int(round(max_gap * self.fps)))
        self.relink_similarity = check_number("relink_similarity", relink_similarity, 0, 1)
        # Checked as the main subject's tracker checks them (tracking.py).
        self.search_every = check_number("search_every", search_every, 1, integer=True)
        self.match_distance = check_number("match_distance", match_distance, 0, min_open=True)
        self.acquire_prob = check_number("acquire_prob", acquire_prob, 0, 1)
        self.refresh_every = check_number("refresh_every", refresh_every, 1, integer=True)
        self.reset()

    def reset(self) -> None:
        """Forget the current video."""
        self.cuts.reset()
        self.tracks: Dict[int, _Track] = {}
        self._next_id = 1
        self._next_index = 0
        self._last_full: Optional[int] = None
        self._last_search: Optional[int] = None
        self.full_detections = 0
        self._frame_size = (1, 1)  # width, height of the frames (for mean positions)

    # ------------------------------------------------------------------ API
    def track(self, frames: np.ndarray) -> Dict[int, FaceBatch]:
        """Where every person is on the next frames (n, H, W, 3) of the
        video: ``{person id: FaceBatch}``, one batch of n rows per person
        known so far (rows where the person is not in view are no-face
        rows), crops not cut. Ids of people that :meth:`finish` drops may
        appear here too."""
        frames = np.asarray(frames)
        n = len(frames)
        start = self._next_index
        if n == 0:
            return {t: empty_batch(0, 0) for t in self.tracks}
        self._frame_size = (frames.shape[2], frames.shape[1])
        self.face_detector.check_frame_size(frames.shape[2], frames.shape[1])
        cuts = self.cuts.find(frames)
        self._detect_rows(frames, detection_rows(n, start, self.detect_every, cuts), cuts, start)
        self._next_index = start + n
        return self._outputs(frames, start)

    def finish(self) -> List[Person]:
        """The people kept: seen on at least ``min_duration`` of frames, by id."""
        w, h = self._frame_size
        people = []
        for t in sorted(self.tracks.values(), key=lambda t: t.id):
            if t.found < self.min_frames:
                continue
            centre = t.sum_centre / t.found
            people.append(Person(t.id, t.first, t.last, t.found, float(centre[0] / w),
                                 float(centre[1] / h), float(t.sum_size / t.found)))
        return people

    # ------------------------------------------------------------ detection
    def _detect_rows(self, frames: np.ndarray, rows: List[int], cuts: np.ndarray,
                     start: int) -> None:
        """Detect and track the detection rows of one batch, in order."""
        # rows skipped while nobody is tracked, searched once a face is found
        pending: List[int] = []
        i = 0
        while i < len(rows):
            row = rows[i]
            index = start + row
            last = row == len(frames) - 1 and bool(pending)  # their frames go with this call
            if not (last or self._search_now(index, cuts[row])):
                if self._tracked():
                    i += self._refine(frames, rows[i:i + _REFINE_GROUP], cuts, start)
                else:
                    pending.append(row)
                    i += 1
                continue
            found = self.face_detector.detect(frames[row:row + 1])[0]
            if pending and not self._tracking() and (found[1] >= self.acquire_prob).any():
                # A face appeared since the last search: the frames skipped
                # meanwhile are searched too, in order, before this one.
                for skipped in pending:
                    self._full(frames, skipped, start + skipped, cuts[skipped])
            pending = []
            self._full(frames, row, index, cuts[row], found)
            i += 1

    def _tracked(self) -> List[_Track]:
        """The people in view: active and found at their last detection frame."""
        return [t for t in self.tracks.values() if t.active and t.lost == 0
                and t.state is not None]

    def _tracking(self) -> bool:
        """Someone is tracked (or was missing for at most ``max_gap``)."""
        return any(t.active for t in self.tracks.values())

    def _search_now(self, index: int, cut: bool) -> bool:
        """Whether frame ``index`` is searched whole: at a cut, at the first
        frame and every ``refresh_every`` frames (a newcomer is found there),
        and every ``search_every`` frames while somebody active is missing
        or nobody is in view. Otherwise the people in view are refined by
        O-Net: the whole frame is searched at most every ``search_every``
        frames, however many people O-Net misses."""
        if cut or self._last_full is None or index - self._last_full >= self.refresh_every:
            return True
        missing = any(t.active and (t.lost > 0 or t.state is None)
                      for t in self.tracks.values())
        due = self._last_search is None or index - self._last_search >= self.search_every
        return due and (missing or not self._tracked())

    def _refine(self, frames: np.ndarray, group: List[int], cuts: np.ndarray, start: int) -> int:
        """O-Net on every person in view, where each is expected, in the
        frames of ``group`` (one call); a person it does not confirm
        (probability below 0.95, or outside the gates) is missing there.
        Returns how many rows of ``group`` it handled: up to the first that
        must be searched whole."""
        live = self._tracked()
        expected = []
        for row in group:
            for t in live:
                assert t.state is not None  # in view (_tracked)
                e = t.state[0].copy()
                e[:2] += t.state[1] * (start + row - t.last_index)
                expected.append(_to_xyxy(e))
        rows = np.repeat(np.asarray(group), len(live))
        boxes, probs, points = self.face_detector.refine(frames[rows], np.stack(expected))
        missed: Set[int] = set()
        for g, row in enumerate(group):
            index = start + row
            if g and self._search_now(index, cuts[row]):
                return g
            part = range(g * len(live), (g + 1) * len(live))
            for t, k in zip(live, part):
                if t.id in missed:
                    continue
                if probs[k] >= _REFINE_MIN_PROB and \
                        np.isfinite(self._match_cost(t, boxes[k][None], index)[0]):
                    self._accept(t, index, boxes[k], probs[k], points[k])
                else:
                    self._miss(t, index)
                    missed.add(t.id)
        return len(group)

    def _full(self, frames: np.ndarray, row: int, index: int, cut: bool,
              found: Optional[Detections] = None) -> None:
        """MTCNN on the whole frame (``found``: its result, when already
        run), then association (positions, or appearance after a cut) and
        new people."""
        if found is None:
            found = self.face_detector.detect(frames[row:row + 1])[0]
        boxes, probs, points = found
        self.full_detections += 1
        self._last_full = self._last_search = index
        if cut:  # positions say nothing across a cut
            for t in self.tracks.values():
                t.state, t.points_state = None, None
                if t.active:
                    t.active, t.lost = False, self.max_lost + 1
        live = [t for t in self.tracks.values() if t.active]
        cost = np.full((len(live), len(boxes)), np.inf)
        for a, t in enumerate(live):
            cost[a] = self._match_cost(t, boxes, index)
        taken, matched = set(), set()
        if len(live) and len(boxes):
            finite = np.where(np.isfinite(cost), cost, 1e6)
            for a, d in zip(*self._assign(finite)):
                if np.isfinite(cost[a, d]):
                    self._accept(live[a], index, boxes[d], probs[d], points[d],
                                 frame=frames[row])
                    taken.add(d)
                    matched.add(live[a].id)
        for t in live:
            if t.id not in matched:
                self._miss(t, index)
        self._new_people(frames[row], index, boxes, probs, points, taken)

    def _new_people(self, frame: np.ndarray, index: int, boxes: np.ndarray, probs: np.ndarray,
                    points: np.ndarray, taken: Set[int]) -> None:
        """Detections no tracked person explains: a person seen before (by
        appearance), or a new one.

        A detection is that person again only when their similarity is at
        least ``relink_similarity`` and beats, by ``_RELINK_MARGIN``, both
        its similarity to anyone else gone and anyone else new's to that
        person: an ambiguous match (two new faces alike to one person seen
        before) makes new people, never a guess."""
        new = [d for d in np.argsort(-_area(np.asarray(boxes, np.float64)) * probs)
               if d not in taken and probs[d] >= self.acquire_prob] if len(boxes) else []
        if not new:
            return
        gone = [t for t in self.tracks.values() if not t.active and t.descriptor is not None]
        descriptors = [appearance(frame, boxes[d]) for d in new]
        sim = np.array([[float(t.descriptor @ x) for t in gone] for x in descriptors]) \
            if gone else np.zeros((len(new), 0))
        match = _unambiguous(sim, self.relink_similarity, _RELINK_MARGIN)
        for k, d in enumerate(new):
            relinked = match[k]
            if relinked is not None:
                track = gone[relinked]
                track.active, track.lost, track.state = True, 0, None
                track.segment += 1
            else:
                track = _Track(self._next_id, np.asarray(boxes[d], np.float64))
                self._next_id += 1
                self.tracks[track.id] = track
            self._accept(track, index, boxes[d], probs[d], points[d], frame=frame,
                         descriptor=descriptors[k])

    def _miss(self, track: _Track, index: int) -> None:
        """``track`` not found at frame ``index``: lost since its last
        detection; no smoothing or motion across the loss (as the main
        subject's); ended after ``max_gap``."""
        track.lost = index - track.last_index
        track.state, track.points_state = None, None
        track.keys.append(_Key(index))
        if track.lost > self.max_lost:
            track.active = False

    # ------------------------------------------------------------ tracking
    def _match_cost(self, track: _Track, boxes: np.ndarray, index: int) -> np.ndarray:
        """Distance of each detection to where ``track`` expects its face,
        relative to the face's size; inf outside the gates."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return np.zeros(0)
        return match_costs(expected_position(track.state, track.box, index - track.last_index),
                           boxes,
                           max(1, index - track.last_index), self.match_distance)

    def _accept(self, track: _Track, index: int, box: np.ndarray, prob: float,
                points: Optional[np.ndarray], frame: Optional[np.ndarray] = None,
                descriptor: Optional[np.ndarray] = None) -> None:
        """Take a detection as ``track``'s at frame ``index`` (smoothed as
        the main subject's box is)."""
        box = np.asarray(box, np.float64)
        gap = max(1, index - track.last_index) if track.last_index >= 0 else 1
        continuous = track.lost == 0 and track.state is not None
        if not continuous:
            track.segment += 1
        track.state = smooth_box(track.state if continuous else None, box, gap, self.smoothing)
        smoothed_points = None
        if points is not None:
            track.points_state = smooth_points(track.points_state if continuous else None,
                                               points, gap, self.smoothing)
            smoothed_points = track.points_state[0].copy()
        track.box, track.lost, track.last_index, track.active = box, 0, index, True
        if frame is not None:  # full detections update the appearance
            d = descriptor if descriptor is not None else appearance(frame, box)
            track.descriptor = d if track.descriptor is None else \
                _unit(0.8 * track.descriptor + 0.2 * d)
        track.keys.append(_Key(index, _to_xyxy(track.state[0]), float(prob), track.segment,
                               smoothed_points))

    # -------------------------------------------------------------- outputs
    def _outputs(self, frames: np.ndarray, start: int) -> Dict[int, FaceBatch]:
        out: Dict[int, FaceBatch] = {}
        for t in self.tracks.values():
            batch = empty_batch(len(frames), 0)
            keys = t.keys
            fill_rows(batch, keys, start)
            t.keys = [k for k in keys if k.index >= start + len(frames) - 1][-1:]
            rows = np.flatnonzero(batch.found)
            if len(rows):
                centres = (batch.boxes[rows, :2] + batch.boxes[rows, 2:]) / 2
                t.sum_centre += centres.sum(axis=0)
                t.sum_size += float(np.maximum(batch.boxes[rows, 2] - batch.boxes[rows, 0],
                                               batch.boxes[rows, 3] - batch.boxes[rows, 1]).sum())
                if t.first < 0:
                    t.first = start + int(rows[0])
                t.last = start + int(rows[-1])
                t.found += len(rows)
            out[t.id] = batch
        return out


class PersonSeries:
    """Per person, one value row per frame of the video, gathered batch by
    batch as :meth:`FacePipeline.track <end2you_visual.faces.FacePipeline.track>` gives them: a person first seen
    after ``done`` frames gets NaN rows (and no face) before. For outputs
    known only at the video's end (the people kept are known then)."""

    def __init__(self, width: int):
        self.width = int(width)
        self._values: Dict[int, list] = {}
        self._found: Dict[int, list] = {}

    def append(self, pid: int, done: int, values: np.ndarray, found: np.ndarray) -> None:
        """Person ``pid``'s rows (n, width) and face marks (n,) of the frames
        after the first ``done``."""
        if pid not in self._values:
            self._values[pid] = [np.full((done, self.width), np.nan, np.float32)]
            self._found[pid] = [np.zeros(done, bool)]
        self._values[pid].append(np.asarray(values, np.float32))
        self._found[pid].append(np.asarray(found, bool).copy())

    def values(self, pid: int) -> np.ndarray:
        """float32 (T, width)."""
        return np.concatenate(self._values[pid])

    def found(self, pid: int) -> np.ndarray:
        """bool (T,)."""
        return np.concatenate(self._found[pid])


def _unambiguous(sim: np.ndarray, threshold: float, margin: float) -> List[Optional[int]]:
    """Per row of ``sim`` (new faces x people gone), the column it matches
    or None: its best column, at least ``threshold`` and ahead by ``margin``
    of the rest of its row and of its column."""
    out: List[Optional[int]] = [None] * len(sim)
    for k in range(len(sim)):
        if not sim.shape[1]:
            break
        c = int(np.argmax(sim[k]))
        best = sim[k, c]
        rivals = np.concatenate([np.delete(sim[k], c), np.delete(sim[:, c], k)])
        if best >= threshold and (not len(rivals) or best - rivals.max() >= margin):
            out[k] = c
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm else v
