"""Following the main subject of a video: the tracker, track-guided detection
and shot-cut detection of :class:`~end2you_visual.faces.FacePipeline`.

:class:`SubjectTracker` decides, detection frame by detection frame, which
face is the subject (steps 2-4 of :mod:`end2you_visual.faces`: acquisition,
matching, smoothing, interpolation). :class:`TrackGuidedDetection` refines
the tracked face where it is expected with MTCNN's last stage
(``detector="tracked"``, :mod:`end2you_visual.mtcnn`) and finds the shot
cuts where the whole frame must be searched again. The subject's five
landmarks (MTCNN's, in frame pixels) are carried with its box: smoothed by
the box centre's filter, interpolated as the box is. Both are parts of
:class:`~end2you_visual.faces.FacePipeline`, which holds their settings and
state (set in its ``__init__`` and ``reset``).
"""

import numpy as np


__all__ = ["SubjectTracker", "TrackGuidedDetection", "fill_rows", "filter_step", "match_costs"]

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


def _area(boxes):
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _to_cxcywh(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _to_xyxy(c):
    return np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])


class _Key:
    """What tracking decided on one detection frame."""

    __slots__ = ("index", "box", "prob", "segment", "points")

    def __init__(self, index, box=None, prob=0.0, segment=-1, points=None):
        self.index = index  # frame index in the video
        self.box = box  # float64 (4,) or None (no face)
        self.prob = prob
        self.segment = segment  # id of the continuous track segment
        self.points = points  # float64 (5, 2) landmarks, or None (no face, none given)


def fill_rows(out, keys, start):
    """Write a track's detection-frame results (``keys``, _Key objects in
    order) into the rows of ``out`` (a FaceBatch whose row 0 is frame
    ``start``), and between two keys of one continuous stretch the boxes,
    probabilities and landmarks interpolated linearly."""
    for a, b in zip(keys, keys[1:] + [None]):
        if a.index >= start and a.box is not None:
            row = a.index - start
            out.boxes[row], out.probs[row], out.found[row] = a.box, a.prob, True
            if a.points is not None:
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
                out.landmarks[row] = (1 - t) * a.points + t * b.points


def match_costs(expected, boxes, gap, match_distance):
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


def filter_step(expected, velocity, observed, gap, smoothing):
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


class SubjectTracker:
    """The main-subject tracker of :class:`~end2you_visual.faces.FacePipeline`.

    Uses the pipeline's ``max_lost``, ``match_distance``, ``acquire_prob``
    and ``smoothing`` and its track state (``_track_box``, ``_segment``,
    ``_lost``, ``_state``, ``_points_state``, ``_prev_key``, set by ``reset``).
    """

    def _track(self, index, boxes, probs, points=None):
        """Update the track with one detection frame; returns its _Key.

        ``points``: the detections' landmarks (k, 5, 2), or None; they go
        with the subject's box and do not take part in choosing it."""
        gap = index - self._prev_key.index if self._prev_key is not None else 1
        if self._track_box is not None:
            j = self._match(boxes, gap)
            if j is not None:
                continuous = self._lost == 0
                self._lost = 0
                return self._accept(index, boxes[j], probs[j], gap, continuous,
                                    None if points is None else points[j])
            self._lost += gap
            self._state = None  # no smoothing (or motion) across a loss
            if self._lost <= self.max_lost:
                return _Key(index)
            self._track_box = None
        prominence = _area(boxes.astype(np.float64)) * probs * (probs >= self.acquire_prob)
        if not prominence.any():
            return _Key(index)
        j = int(np.argmax(prominence))
        self._segment += 1
        self._lost = 0
        return self._accept(index, boxes[j], probs[j], gap, continuous=False,
                            points=None if points is None else points[j])

    def _expected(self, gap):
        """Where the subject should be ``gap`` frames after the last detection
        frame: (cx, cy, w, h), moved by its velocity while tracked, its last
        detection while lost."""
        if self._state is None:
            return _to_cxcywh(self._track_box)
        expected = self._state[0].copy()
        expected[:2] += self._state[1] * gap
        return expected

    def _match(self, boxes, gap):
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
        cost = match_costs(self._expected(gap), boxes, gap, self.match_distance)
        if not np.isfinite(cost).any():
            return None
        return int(np.argmin(cost))

    def _accept(self, index, box, prob, gap, continuous, points=None):
        """Take a detection as the subject's; returns the smoothed _Key.

        Smoothing is an alpha-beta (constant velocity) filter on the box
        centre and an exponential average on its size: jitter is averaged
        out while a face moving steadily is followed without lag. Each of
        the landmarks ``points`` (5, 2) follows the same filter as the
        centre (same alpha and beta, its own velocity).
        """
        box = np.asarray(box, np.float64)
        self._track_box = box
        observed = _to_cxcywh(box)
        if continuous and self._state is not None:
            self._state = filter_step(self._expected(gap), self._state[1], observed, gap,
                                      self.smoothing)
        else:
            self._state = (observed, np.zeros(2))
        return _Key(index, _to_xyxy(self._state[0]), float(prob), self._segment,
                    self._accept_points(points, gap, continuous))

    def _accept_points(self, points, gap, continuous):
        """The subject's smoothed landmarks (5, 2) after a detection with
        ``points`` (None: none, and the landmark track restarts)."""
        if points is None:
            self._points_state = None
            return None
        observed = np.asarray(points, np.float64).reshape(5, 2)
        if continuous and self._points_state is not None:
            position, velocity = self._points_state
            self._points_state = filter_step(position + velocity * gap, velocity, observed,
                                             gap, self.smoothing)
        else:
            self._points_state = (observed, np.zeros((5, 2)))
        return self._points_state[0].copy()

    def _fill_rows(self, out, keys, start):
        """Write key results and interpolate between them into ``out`` rows."""
        fill_rows(out, keys, start)


class TrackGuidedDetection:
    """Track-guided detection and shot cuts (``detector="tracked"``) of
    :class:`~end2you_visual.faces.FacePipeline`.

    Uses the pipeline's MTCNN, ``device``, ``thresholds``, ``batch_size``,
    ``refresh_every``, its :class:`SubjectTracker` methods and its state
    (``_anchor``, ``_last_full``, ``_untracked``, ``_last_thumb``).
    """

    def _track_guided(self, frames, key_rows, cuts, start, keys):
        """Detect and track the key rows with ``detector="tracked"``.

        While the subject is tracked, groups of key rows are refined by
        O-Net where it is expected; the first row where O-Net does not
        confirm it (no match, or a low probability), a cut and a due
        refresh are detected in full. While no face is tracked,
        rows are detected in full, a batch at a time.
        """
        pending = []  # rows skipped while nothing is tracked
        i = 0
        while i < len(key_rows):
            if self._track_box is None or self._lost > 0:  # nothing in view
                i = self._search_untracked(frames, key_rows, i, cuts, start, keys, pending)
                continue
            if self._can_refine(start + key_rows[i], cuts[key_rows[i]]):
                group_id = (start + key_rows[i]) // _REFINE_GROUP
                if self._anchor is None or self._anchor[0] != group_id:
                    self._anchor = (group_id, self._prev_key.index, *self._state)
                group = [key_rows[i]]
                for row in key_rows[i + 1:]:
                    if (start + row) // _REFINE_GROUP != (start + group[0]) // _REFINE_GROUP \
                            or not self._can_refine(start + row, cuts[row]):
                        break
                    group.append(row)
                for row, (boxes, probs, points) in zip(group,
                                                       self._refine_track(frames, group, start)):
                    j = self._match(boxes, start + row - self._prev_key.index)
                    if j is None or probs[j] < _REFINE_MIN_PROB:
                        break
                    self._prev_key = self._track(start + row, boxes, probs, points)
                    keys.append(self._prev_key)
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
            tracked = self._track_box is not None and self._lost == 0
            size = 1 if tracked else min(self.batch_size, max(1, self._untracked))
            group = key_rows[i:i + size]
            later_cuts = [k for k, row in enumerate(group) if k and cuts[row]]
            if later_cuts:
                group = group[:later_cuts[0]]
            for row, (boxes, probs, points) in zip(group, self.detect(frames[group],
                                                                      landmarks=True)):
                self._last_full = start + row
                self._anchor = None
                self.full_detections += 1
                self._prev_key = self._track(start + row, boxes, probs, points)
                keys.append(self._prev_key)
                tracked = self._track_box is not None and self._lost == 0
                self._untracked = 0 if tracked else self._untracked + 1
                i += 1

    def _search_untracked(self, frames, key_rows, i, cuts, start, keys, pending):
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
        found = self.detect(frames[row:row + 1], landmarks=True)[0]
        rows = [row]
        if pending and (found[1] >= self.acquire_prob).any():
            rows = pending + rows  # the face may have appeared since the last search
            detections = self.detect(frames[pending], landmarks=True) + [found]
        else:
            detections = [found]
        pending.clear()
        for r, (boxes, probs, points) in zip(rows, detections):
            self._last_full = start + r
            self._anchor = None
            self.full_detections += 1
            self._prev_key = self._track(start + r, boxes, probs, points)
            keys.append(self._prev_key)
        return i + 1

    def _can_refine(self, index, cut):
        """Whether frame ``index`` can be refined where the track expects the face."""
        return (self._track_box is not None and self._lost == 0 and self._state is not None
                and not cut and self._last_full is not None
                and index - self._last_full < self.refresh_every)

    def _refine_track(self, frames, rows, start):
        """MTCNN's O-Net on where the subject is expected in ``rows``.

        The expected place is the anchor's (the smoothed track at the
        start of the group, or after the last full detection) moved by its
        velocity, so that it does not depend on where batches end; its
        size is the anchor's. All rows' boxes, at three scales, go through
        O-Net in one batch (:func:`~end2you_visual.mtcnn.refine_boxes`).
        Returns ``(boxes, probs, landmarks)`` per row as :meth:`detect` does with
        ``landmarks=True``, in frame pixels: the refined box when O-Net
        calls it a face (its threshold), else none.
        """
        _, anchor, position, velocity = self._anchor
        offsets = np.array([start + row - anchor for row in rows], np.float64)[:, None]
        expected = np.tile(position, (len(rows), 1))
        expected[:, :2] += velocity * offsets
        boxes, probs, points = self.face_detector.refine(
            frames[rows], np.stack([_to_xyxy(e) for e in expected]))
        results = []
        for box, prob, point in zip(boxes, probs, points):
            k = 1 if prob > self.thresholds[2] else 0
            results.append((box[None][:k], prob[None][:k], point[None][:k]))
        return results

    def _cuts(self, frames):
        """Shot cuts: bool (n,), True where a frame differs sharply from the
        one before it (the last frame of the previous call for the first)."""
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
