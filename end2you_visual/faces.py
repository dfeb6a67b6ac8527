"""Face detection, tracking of the main subject, and square face crops.

:class:`FacePipeline` turns batches of video frames into one face crop per
frame. It is modelled on facenet-pytorch's ``MTCNN``: one object holding the
settings and the state, called on batch after batch of one video::

    pipeline = FacePipeline(size=150, fps=info.fps)
    for start, frames in iter_frame_batches(path):
        faces = pipeline.process(frames)   # one row per frame, never dropped
    pipeline.reset()                       # before the next video

What happens to each frame:

1. Detection: facenet-pytorch's MTCNN (weights ship with the package) finds
   all faces, on every ``detect_every``-th frame, optionally on a frame
   downscaled by ``detect_scale``. With ``detector="tracked"`` (the
   default), once a face is tracked MTCNN searches only a window around
   where it is expected (batched over frames); the whole frame is searched
   again when the window loses it, at shot cuts and every ``refresh_every``
   frames. ``detector="full"`` searches every whole frame.
2. Tracking: the first time faces are seen, the most prominent one (largest
   area x probability, among those with probability >= ``acquire_prob``)
   becomes the subject. On later frames only the detection nearest where
   the subject is expected (its last box moved by its velocity; centre
   within ``match_distance`` x its size, similar size) is taken, so the
   crop never jumps to another person. A frame without it is a no-face
   frame; after more than ``max_lost`` such frames in a row the most
   prominent face is acquired again.
3. Between detection frames the subject's box is interpolated linearly when
   both neighbouring detection frames hold the subject; otherwise those
   frames are no-face frames.
4. Smoothing: within a continuous track the box centre follows a
   constant-velocity (alpha-beta) filter and its size an exponential
   average (``smoothing``, 0 = none): jitter is averaged out, steady motion
   is followed without lag; a loss restarts it.
5. Cropping: a square of side ``max(w, h) * (1 + margin)`` centred on the box,
   zero outside the frame, resized to ``size`` x ``size`` with
   ``torchvision.ops.roi_align`` (averaging when it shrinks).
6. No-face frames get ``found=False``, a NaN box, probability 0 and, as
   crop, the last good crop (``fill="last"``, zeros before any face) or
   zeros (``fill="zeros"``).

On a CPU, MTCNN runs fastest with one torch thread per process
(``torch.set_num_threads(1)``): its many small convolutions gain little
from more, and on a busy machine spinning OpenMP threads can slow it ten
times. Parallelise over videos instead.

Boxes are ``x1, y1, x2, y2`` in pixels of the frames given (source pixels,
whatever ``detect_scale`` is). Crops are uint8 RGB, (n, size, size, 3).
"""

import os
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .devices import resolve_device
from .errors import InputError
from .ranges import check_number

__all__ = ["FaceBatch", "FacePipeline", "FaceSettings", "crop_image", "resize_only"]

# Frames converted to float at once when cropping, in pixels (x 3 channels x
# 4 bytes: about 200 MB), so a batch of 1080p frames is cropped in chunks.
_CROP_PIXEL_BUDGET = 1 << 24
# A tracked face may grow or shrink by at most this factor between detections.
_MAX_SIZE_CHANGE = 1.5
# MTCNN's smallest window is 12 px: asking for smaller faces upsamples the image.
_MTCNN_MIN_WINDOW = 12.0
# Track-guided detection (``detector="tracked"``): the window searched around
# the tracked face, as a multiple of its size (max(w, h)); the side, in
# pixels, that window is resized to (so the face is ~60 px for MTCNN); the
# smallest face searched for in it (the face may shrink 1.5x); how many
# frames' windows go through MTCNN in one call; and the least probability
# of a windowed detection (below it, the frame is detected in full).
_WINDOW_FACES = 3.0
_WINDOW_PIXELS = 180
_WINDOW_MIN_FACE = 40.0
_WINDOW_GROUP = 8
_WINDOW_MIN_PROB = 0.95
# Shot cuts: frames are compared on thumbnails of this many points (rows,
# columns); a cut is a colour-histogram distance (half the L1 distance of
# the 512-bin joint RGB histograms, 0-1) above the first threshold, or a
# mean absolute thumbnail difference (0-1) above the second. On the clips
# of ../shared/data/clips, frames within a shot reach at most 0.07 / 0.056
# and the cuts of a stage recording (short_hamilton_clip) 0.16 / 0.109.
_THUMB_SHAPE = (36, 64)
_CUT_HISTOGRAM = 0.12
_CUT_DIFFERENCE = 0.08
DETECTORS = ("tracked", "full")


@dataclass
class FaceBatch:
    """The faces of n frames, one row per frame.

    Attributes:
        crops: uint8 (n, size, size, 3), RGB.
        boxes: float32 (n, 4), ``x1, y1, x2, y2`` in source pixels of the
            tracked face (after smoothing); NaN where no face.
        found: bool (n,), whether the frame holds the tracked face.
        probs: float32 (n,), the detector's face probability; 0 where no face.
    """

    crops: np.ndarray
    boxes: np.ndarray
    found: np.ndarray
    probs: np.ndarray

    def __len__(self):
        return len(self.found)


def _empty_batch(n, size):
    return FaceBatch(
        crops=np.zeros((n, size, size, 3), np.uint8),
        boxes=np.full((n, 4), np.nan, np.float32),
        found=np.zeros(n, bool),
        probs=np.zeros(n, np.float32),
    )


def _area(boxes):
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _to_cxcywh(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _to_xyxy(c):
    return np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])


class _Key:
    """What tracking decided on one detection frame."""

    __slots__ = ("index", "box", "prob", "segment")

    def __init__(self, index, box=None, prob=0.0, segment=-1):
        self.index = index  # frame index in the video
        self.box = box  # float64 (4,) or None (no face)
        self.prob = prob
        self.segment = segment  # id of the continuous track segment


def _setting(default, option, help, low=None, high=None, *, integer=False, low_open=False,
             high_open=False, choices=None):
    """A :class:`FaceSettings` field: its default, command-line option, help and range."""
    return field(default=default, metadata={
        "option": option, "help": help, "range": (low, high, integer, low_open, high_open),
        "choices": choices})


@dataclass
class FaceSettings:
    """The face pipeline's settings, one definition for `generate` and
    `predict` (their command-line options are made from these fields:
    ``metadata["option"]``, ``["help"]``, ``["range"]``, ``["choices"]``).

    A number out of its range raises :class:`~end2you_visual.errors.InputError`
    naming the option, at construction. :meth:`pipeline` builds the
    :class:`FacePipeline` (``size``/``device`` may be overridden, e.g. by a
    model's input size).
    """

    size: int = _setting(150, "--size", "Side of the square crops.", 1, integer=True)
    margin: float = _setting(0.2, "--margin",
                             "Border around the face box, as a fraction of its side.", 0)
    device: str = _setting("cpu", "--device", "auto, cpu, cuda, cuda:1...")
    batch_size: int = _setting(16, "--batch-size",
                               "Frames decoded and detected together (64 or more on a GPU).",
                               1, integer=True)
    detect_every: int = _setting(1, "--detect-every", "Detect on every k-th frame and "
                                 "interpolate the track in between.", 1, integer=True)
    detect_scale: float = _setting(None, "--detect-scale", "Detect on frames scaled by this "
                                   "factor (e.g. 0.5 for 1080p).", 0, 1, low_open=True)
    min_face_size: int = _setting(20, "--min-face-size", "Smallest face searched for, in "
                                  "pixels.", 1, integer=True)
    smoothing: float = _setting(0.5, "--smoothing", "Box smoothing strength over time "
                                "(0: none).", 0, 1, high_open=True)
    fill: str = _setting("last", "--fill", "What a frame without a face holds (its mask says "
                         "no face either way).", choices=("last", "zeros"))
    detector: str = _setting("tracked", "--detector", "tracked: between full-frame detections, "
                             "search only a window around the tracked face (several times "
                             "faster); full: MTCNN on every whole frame.", choices=DETECTORS)

    def __post_init__(self):
        self.check_faces()

    def check_faces(self):
        """Raise InputError, naming its option, for the first face setting out of range."""
        for f in fields(FaceSettings):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] is not None:
                if value not in meta["choices"]:
                    raise InputError(meta["option"], f"must be one of {list(meta['choices'])}, "
                                                     f"got {value!r}")
            elif f.type in ("int", "float", int, float) and value is not None:
                low, high, integer, low_open, high_open = meta["range"]
                setattr(self, f.name, check_number(meta["option"], value, low, high,
                                                   integer=integer, min_open=low_open,
                                                   max_open=high_open))
        return self

    def face_settings(self):
        """Only the face pipeline's settings, as a dict of FacePipeline arguments."""
        return {f.name: getattr(self, f.name) for f in fields(FaceSettings)}

    def pipeline(self, fps=None, size=None, device=None):
        """The :class:`FacePipeline` of these settings for a video at ``fps``."""
        args = self.face_settings()
        args.update({k: v for k, v in (("size", size), ("device", device)) if v is not None})
        return FacePipeline(fps=fps, **args)


class FacePipeline:
    """Detect, track and crop the main face of a video, batch by batch.

    The object is stateful across the batches of one video (track, smoothing,
    last crop, frame counter); call :meth:`reset` (or make a new one) before
    the next video. All settings are plain attributes fixed at construction.

    Args:
        size: side of the square output crops, in pixels.
        margin: extra border around the face box: the crop's side is
            ``max(w, h) * (1 + margin)``.
        device: torch device for detection and cropping (``"auto"``,
            ``"cpu"``, ``"cuda"``...; see
            :func:`end2you_visual.devices.resolve_device`).
        detect_every: run the detector on every k-th frame (frame indices
            0, k, 2k... of the video, plus the last frame of each
            :meth:`process` call) and interpolate boxes in between. 1 (the
            default) detects on every frame. With k > 1 the result depends
            slightly on where the batches end.
        min_face_size: smallest face searched for, in source pixels. With
            ``detect_scale`` s, at least 12 / s (MTCNN's smallest window).
        thresholds: MTCNN's three stage thresholds (P-, R-, O-net).
        smoothing: box smoothing strength in [0, 1): per frame, the weight
            of the prediction against the new detection (alpha-beta filter
            on the centre, exponential average of the size). 0 = none.
        fill: crop for no-face frames: ``"last"`` (the last good crop, zeros
            before any face) or ``"zeros"``.
        max_lost: after more than this many consecutive frames without the
            tracked face, the most prominent face is acquired again. Default:
            one second of frames (``round(fps)``), 25 frames if ``fps`` is
            not given.
        fps: the video's frame rate, only used for the default ``max_lost``.
        detect_scale: if given (e.g. 0.5), detect on frames downscaled by
            this factor (faster on large frames such as 1080p) and scale the
            boxes back; crops are still cut from the full-size frames.
        batch_size: frames per MTCNN call (memory vs. overhead).
        match_distance: a detection continues the track if its centre is
            within this fraction of the subject's box size (max(w, h)) of
            where the subject is expected (its last position moved by its
            velocity), times sqrt(frames between detections), at most one
            face size; and if its size is within 1.5x. The nearest is taken.
        acquire_prob: least face probability for a detection to start a
            track (continuing one needs only MTCNN's thresholds): a higher
            bar for new subjects rejects isolated false detections (letters,
            patterns score 0.7-0.9) without losing a tracked face turning away.
        detector: ``"tracked"`` (the default) or ``"full"``. ``"full"``
            runs MTCNN on the whole of every detection frame. ``"tracked"``
            does so only until a face is tracked; then, on the following
            detection frames, MTCNN searches only a window around where the
            face is expected (3x its size, resized so that the face is about
            60 px: a few small P-Net scales, batched over frames), and the
            boxes are mapped back to the frame. A frame is detected in full
            when the windowed search does not find the tracked face (or its
            probability is below 0.95), at a shot cut (found from colour
            histograms and differences of small thumbnails), and every
            ``refresh_every`` frames. The main-subject rule, the smoothing and
            the interpolation are the same; the boxes match full detection's
            closely (mean IoU above 0.9 on the benchmark clips) at several
            times its speed. Shot cuts also become detection frames when
            ``detect_every`` > 1, so a face appearing at a cut is found at once.
        refresh_every: with ``detector="tracked"``, a full-frame detection at
            least every this many frames while a face is tracked. Default:
            two seconds of frames (``2 * round(fps)``), 50 if ``fps`` is not
            given.

    A number out of its range (a negative ``margin``, ``detect_scale``
    outside (0, 1], a ``size`` below 1...), an unknown ``fill`` or an
    unusable ``device`` raises :class:`~end2you_visual.errors.InputError`
    naming the option.

    Example:
        >>> pipeline = FacePipeline(size=150, fps=30)
        >>> faces = pipeline.process(frames)      # frames: uint8 (n, H, W, 3)
        >>> faces.crops.shape, faces.found.mean()
    """

    def __init__(
        self, size=150, margin=0.2, device="cpu", detect_every=1, min_face_size=20,
        thresholds=(0.6, 0.7, 0.7), smoothing=0.5, fill="last", max_lost=None, fps=None,
        detect_scale=None, batch_size=16, match_distance=0.5, acquire_prob=0.9,
        detector="tracked", refresh_every=None,
    ):
        from facenet_pytorch import MTCNN

        if fill not in ("last", "zeros"):
            raise InputError("--fill", f'must be "last" or "zeros", got {fill!r}')
        # Every number in its range (InputError naming the option): a negative
        # margin, for one, would crop nothing and flag the black crops as faces.
        self.size = check_number("--size", size, 1, integer=True)
        self.margin = check_number("--margin", margin, 0)
        self.device = resolve_device(device)
        self.detect_every = check_number("--detect-every", detect_every, 1, integer=True)
        self.min_face_size = check_number("--min-face-size", min_face_size, 1)
        self.thresholds = tuple(check_number("thresholds", t, 0, 1) for t in thresholds)
        self.smoothing = check_number("smoothing", smoothing, 0, 1, max_open=True)
        self.fill = fill
        if max_lost is None:
            max_lost = round(fps) if fps else 25
        self.max_lost = check_number("max_lost", max_lost, 0, integer=True)
        if detect_scale is not None:
            detect_scale = check_number("--detect-scale", detect_scale, 0, 1, min_open=True)
        self.detect_scale = None if detect_scale in (None, 1.0) else detect_scale
        self.batch_size = check_number("--batch-size", batch_size, 1, integer=True)
        self.match_distance = check_number("match_distance", match_distance, 0, min_open=True)
        self.acquire_prob = check_number("acquire_prob", acquire_prob, 0, 1)
        if detector not in DETECTORS:
            raise InputError("--detector", f'must be "tracked" or "full", got {detector!r}')
        self.detector = detector
        if refresh_every is None:
            refresh_every = 2 * round(fps) if fps else 50
        self.refresh_every = check_number("refresh_every", refresh_every, 1, integer=True)

        detector_min = self.min_face_size
        if self.detect_scale is not None:
            detector_min = max(self.min_face_size * self.detect_scale, _MTCNN_MIN_WINDOW)
        self.mtcnn = MTCNN(
            keep_all=True, select_largest=False, post_process=False,
            min_face_size=detector_min, thresholds=list(self.thresholds), device=self.device,
        ).eval()
        self.reset()

    def reset(self):
        """Forget the current video: track, smoothing, last crop, frame count."""
        self._next_index = 0  # video index of the next frame given to process
        self._track_box = None  # last raw detection of the subject, (4,)
        self._segment = -1  # id of the current continuous track segment
        self._lost = 0  # frames since the subject was last seen
        self._state = None  # filter state ((cx, cy, w, h), (vx, vy) per frame) or None
        self._prev_key = None  # last detection frame, a _Key
        self._last_crop = None  # last good crop, (size, size, 3)
        self._last_thumb = None  # thumbnail of the last frame given, for cut detection
        self._last_full = None  # index of the last frame detected in full
        # Windows are placed from the track as it was at a frame: (group,
        # frame index, centre-size, velocity); kept for a group of
        # _WINDOW_GROUP frames (of the video, whatever the batches) or until
        # a full detection.
        self._anchor = None
        self.full_detections = 0  # frames of this video detected in full (a statistic)
        self._untracked = 0  # frames detected in full in a row without a tracked face

    # ------------------------------------------------------------------ API

    def process(self, frames):
        """Detect, track and crop the faces of the next frames of the video.

        Args:
            frames: uint8 array (n, H, W, 3), RGB, the frames following those
                of the previous call (same video, same size).

        Returns:
            FaceBatch with exactly n rows, in order.
        """
        frames = _check_frames(frames)
        n = len(frames)
        out = _empty_batch(n, self.size)
        if n == 0:
            return out
        start = self._next_index
        key_rows = [i for i in range(n) if (start + i) % self.detect_every == 0]
        if not key_rows or key_rows[-1] != n - 1:
            key_rows.append(n - 1)
        keys = [self._prev_key] if self._prev_key is not None else []
        if self.detector == "full":
            detections = self.detect(frames if len(key_rows) == n else frames[key_rows])
            for row, (boxes, probs) in zip(key_rows, detections):
                self._prev_key = self._track(start + row, boxes, probs)
                keys.append(self._prev_key)
            self.full_detections += len(key_rows)
        else:
            cuts = self._cuts(frames)
            key_rows = sorted(set(key_rows) | set(np.flatnonzero(cuts).tolist()))
            self._track_guided(frames, key_rows, cuts, start, keys)
        self._fill_rows(out, keys, start)
        self._next_index = start + n

        rows = np.flatnonzero(out.found)
        if len(rows):
            out.crops[rows] = self.crop(frames, out.boxes[rows], rows=rows)
        self._fill_missing(out.crops, out.found)
        return out

    def process_image(self, image):
        """Crop the most prominent face of one still image.

        Resets the pipeline first (an image is not part of a video).

        Args:
            image: uint8 array (H, W, 3), RGB.

        Returns:
            FaceBatch of one row (crop zeros if no face).
        """
        self.reset()
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
        faces = self.process(image[None])
        self.reset()
        return faces

    def detect(self, frames):
        """Run MTCNN on frames; no tracking, no state.

        Args:
            frames: uint8 array (n, H, W, 3), RGB.

        Returns:
            A list of n pairs ``(boxes, probs)``: float32 (k, 4) boxes
            ``x1, y1, x2, y2`` in source pixels and float32 (k,) face
            probabilities, k >= 0 faces per frame, most probable first.
        """
        frames = _check_frames(frames)
        results = []
        for s in range(0, len(frames), self.batch_size):
            chunk = frames[s:s + self.batch_size]
            if self.detect_scale is None:
                batch, scale = chunk, np.ones(4, np.float32)
            else:
                batch, scale = self._downscale(chunk)
            boxes, probs = self.mtcnn.detect(batch)
            for b, p in zip(boxes, probs):
                if b is None:
                    results.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
                else:
                    b = np.asarray(b, np.float32).reshape(-1, 4) / scale
                    results.append((b, np.asarray(p, np.float32).reshape(-1)))
        return results

    # ------------------------------------------------------------- detection

    def _downscale(self, frames):
        """Frames (n, H, W, 3) uint8 -> float tensor (n, h, w, 3) and the
        factors (4,) by which ``x1, y1, x2, y2`` shrank."""
        h, w = frames.shape[1:3]
        th = max(1, round(h * self.detect_scale))
        tw = max(1, round(w * self.detect_scale))
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        scale = np.array([tw / w, th / h, tw / w, th / h], np.float32)
        return x.permute(0, 2, 3, 1), scale

    # ------------------------------------------------- track-guided detection

    def _track_guided(self, frames, key_rows, cuts, start, keys):
        """Detect and track the key rows with ``detector="tracked"``.

        While the subject is tracked, groups of key rows are searched in
        windows around where it is expected; the first row whose windowed
        search does not confirm it (no match, or a low probability), a cut
        and a due refresh are detected in full. While no face is tracked,
        rows are detected in full, a batch at a time.
        """
        i = 0
        while i < len(key_rows):
            if self._can_window(start + key_rows[i], cuts[key_rows[i]]):
                group_id = (start + key_rows[i]) // _WINDOW_GROUP
                if self._anchor is None or self._anchor[0] != group_id:
                    self._anchor = (group_id, self._prev_key.index, *self._state)
                group = [key_rows[i]]
                for row in key_rows[i + 1:]:
                    if (start + row) // _WINDOW_GROUP != (start + group[0]) // _WINDOW_GROUP \
                            or not self._can_window(start + row, cuts[row]):
                        break
                    group.append(row)
                for row, (boxes, probs) in zip(group, self._detect_windows(frames, group, start)):
                    j = self._match(boxes, start + row - self._prev_key.index)
                    if j is None or probs[j] < _WINDOW_MIN_PROB:
                        break
                    self._prev_key = self._track(start + row, boxes, probs)
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
            for row, (boxes, probs) in zip(group, self.detect(frames[group])):
                self._last_full = start + row
                self._anchor = None
                self.full_detections += 1
                self._prev_key = self._track(start + row, boxes, probs)
                keys.append(self._prev_key)
                tracked = self._track_box is not None and self._lost == 0
                self._untracked = 0 if tracked else self._untracked + 1
                i += 1

    def _can_window(self, index, cut):
        """Whether frame ``index`` can be searched in a window around the track."""
        return (self._track_box is not None and self._lost == 0 and self._state is not None
                and not cut and self._last_full is not None
                and index - self._last_full < self.refresh_every)

    def _detect_windows(self, frames, rows, start):
        """MTCNN on windows around where the subject is expected in ``rows``.

        The expected place is the anchor's (the smoothed track at the
        start of the group, or after the last full detection) moved by its
        velocity, so that the windows do not depend on where batches end.
        Each window is a square of ``_WINDOW_FACES`` x the face's size
        centred on its expected position (zeros outside the frame), resized
        to ``_WINDOW_PIXELS``; all go through MTCNN in one batch. Returns
        ``(boxes, probs)`` per row as :meth:`detect` does, in frame pixels.
        """
        from facenet_pytorch.models.utils.detect_face import detect_face

        h, w = frames.shape[1:3]
        windows, origins = [], []
        _, anchor, position, velocity = self._anchor
        for row in rows:
            cx, cy, bw, bh = position
            cx, cy = np.array([cx, cy]) + velocity * (start + row - anchor)
            side = max(int(round(_WINDOW_FACES * max(bw, bh))), 1)
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            window = np.zeros((side, side, 3), np.uint8)
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
            if xb > xa and yb > ya:
                window[ya - y0:yb - y0, xa - x0:xb - x0] = frames[row, ya:yb, xa:xb]
            x = torch.from_numpy(window).to(self.device).permute(2, 0, 1)[None].float()
            x = F.interpolate(x, size=(_WINDOW_PIXELS, _WINDOW_PIXELS), mode="bilinear",
                              antialias=side > _WINDOW_PIXELS, align_corners=False)
            windows.append(x[0].permute(1, 2, 0))
            origins.append((x0, y0, side / _WINDOW_PIXELS))
        mtcnn = self.mtcnn
        with torch.no_grad():
            found, _ = detect_face(torch.stack(windows), _WINDOW_MIN_FACE, mtcnn.pnet, mtcnn.rnet,
                                   mtcnn.onet, list(self.thresholds), mtcnn.factor, self.device)
        results = []
        for boxes, (x0, y0, scale) in zip(found, origins):
            boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
            boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
            xyxy = boxes[:, :4] * scale + np.array([x0, y0, x0, y0], np.float32)
            results.append((xyxy.astype(np.float32), boxes[:, 4].astype(np.float32)))
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

    # -------------------------------------------------------------- tracking

    def _track(self, index, boxes, probs):
        """Update the track with one detection frame; returns its _Key."""
        gap = index - self._prev_key.index if self._prev_key is not None else 1
        if self._track_box is not None:
            j = self._match(boxes, gap)
            if j is not None:
                continuous = self._lost == 0
                self._lost = 0
                return self._accept(index, boxes[j], probs[j], gap, continuous)
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
        return self._accept(index, boxes[j], probs[j], gap, continuous=False)

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
        expected = self._expected(gap)
        size = max(expected[2], expected[3], 1e-6)
        det = np.stack([_to_cxcywh(b) for b in np.asarray(boxes, np.float64)])
        distance = np.hypot(det[:, 0] - expected[0], det[:, 1] - expected[1]) / size
        reach = min(self.match_distance * np.sqrt(gap), 1.0)
        ratio = np.sqrt(np.maximum(det[:, 2] * det[:, 3], 1e-12) / max(expected[2] * expected[3], 1e-12))
        ok = (distance <= reach) & (ratio <= _MAX_SIZE_CHANGE) & (ratio >= 1 / _MAX_SIZE_CHANGE)
        if not ok.any():
            return None
        return int(np.argmin(np.where(ok, distance, np.inf)))

    def _accept(self, index, box, prob, gap, continuous):
        """Take a detection as the subject's; returns the smoothed _Key.

        Smoothing is an alpha-beta (constant velocity) filter on the box
        centre and an exponential average on its size: jitter is averaged
        out while a face moving steadily is followed without lag.
        """
        box = np.asarray(box, np.float64)
        self._track_box = box
        observed = _to_cxcywh(box)
        if continuous and self._state is not None:
            expected = self._expected(gap)
            residual = observed - expected
            alpha = 1 - self.smoothing ** gap  # the same time constant whatever detect_every is
            beta = alpha * alpha / (2 - alpha)  # critically damped
            position = expected + alpha * residual
            velocity = self._state[1] + beta * residual[:2] / gap
            self._state = (position, velocity)
        else:
            self._state = (observed, np.zeros(2))
        return _Key(index, _to_xyxy(self._state[0]), float(prob), self._segment)

    def _fill_rows(self, out, keys, start):
        """Write key results and interpolate between them into ``out`` rows."""
        for a, b in zip(keys, keys[1:] + [None]):
            if a.index >= start and a.box is not None:
                row = a.index - start
                out.boxes[row], out.probs[row], out.found[row] = a.box, a.prob, True
            if b is None or a.box is None or b.box is None or a.segment != b.segment:
                continue
            for index in range(max(a.index + 1, start), b.index):
                t = (index - a.index) / (b.index - a.index)
                row = index - start
                out.boxes[row] = (1 - t) * a.box + t * b.box
                out.probs[row] = (1 - t) * a.prob + t * b.prob
                out.found[row] = True

    # -------------------------------------------------------------- cropping

    def square_boxes(self, boxes):
        """Face boxes (m, 4) -> the square crop regions (m, 4) cut around them."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + self.margin) / 2
        return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)

    def crop(self, frames, boxes, rows=None):
        """Cut square crops around face boxes, resized to size x size.

        Args:
            frames: uint8 (n, H, W, 3), RGB.
            boxes: (m, 4) face boxes ``x1, y1, x2, y2`` in pixels, one per
                cropped frame; the crop is the square of side
                ``max(w, h) * (1 + margin)`` around each (see
                :meth:`square_boxes`), zero outside the frame.
            rows: which frames the boxes belong to, (m,) indices; default
                all n frames in order (then m == n).

        Returns:
            uint8 (m, size, size, 3).
        """
        frames = _check_frames(frames)
        rows = np.arange(len(frames)) if rows is None else np.asarray(rows, np.int64)
        squares = torch.as_tensor(self.square_boxes(boxes), dtype=torch.float32)
        if len(squares) != len(rows):
            raise ValueError(f"{len(squares)} boxes for {len(rows)} frames")
        if len(rows) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        h, w = frames.shape[1:3]
        chunk = max(1, _CROP_PIXEL_BUDGET // (h * w))
        crops = []
        for s in range(0, len(rows), chunk):
            x = torch.from_numpy(np.ascontiguousarray(frames[rows[s:s + chunk]])).to(self.device)
            x = x.permute(0, 3, 1, 2).float()
            regions = squares[s:s + chunk].to(self.device)
            index = torch.arange(len(regions), dtype=torch.float32, device=self.device)[:, None]
            # sampling_ratio=0: ceil(region / size) samples per output pixel,
            # i.e. averaging when shrinking (no aliasing), bilinear when growing.
            y = roi_align(x, torch.cat([index, regions], dim=1), output_size=self.size,
                          spatial_scale=1.0, sampling_ratio=0, aligned=True)
            crops.append(y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(crops)

    def _fill_missing(self, crops, found):
        """Fill no-face crops (in place) and remember the last good crop."""
        if self.fill == "zeros":
            if found.any():
                self._last_crop = crops[np.flatnonzero(found)[-1]].copy()
            return
        last = self._last_crop
        for i in range(len(found)):
            if found[i]:
                last = crops[i]
            elif last is not None:
                crops[i] = last
        self._last_crop = None if last is None else last.copy()


def _check_frames(frames):
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (n, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return frames


def crop_image(image, pipeline=None, **kwargs):
    """Crop the most prominent face of a still image.

    Args:
        image: uint8 array (H, W, 3) RGB, or the path of an image file
            (read with :func:`end2you_visual.video.read_image`).
        pipeline: a FacePipeline to use (reset first); if None one is made
            from ``kwargs`` (the FacePipeline arguments).

    Returns:
        FaceBatch of one row.
    """
    if isinstance(image, (str, os.PathLike)):
        from .video import read_image

        image = read_image(image)
    if pipeline is None:
        pipeline = FacePipeline(**kwargs)
    elif kwargs:
        raise TypeError("give either a pipeline or FacePipeline arguments, not both")
    return pipeline.process_image(image)


def resize_only(frames, size=150):
    """Resize frames that are already face crops (e.g. FER2013) to size x size.

    No detection. Non-square frames are first zero-padded to a square
    (centred), like the crops of :class:`FacePipeline`; resizing is bilinear
    with antialiasing (averaging when shrinking).

    Args:
        frames: uint8 (n, H, W) grey or (n, H, W, C) with C = 1 (grey),
            3 (RGB) or 4 (RGBA, alpha dropped).
        size: side of the output, in pixels.

    Returns:
        uint8 array (n, size, size, 3), RGB.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"frames must be (n, H, W) or (n, H, W, 1|3|4), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n, h, w = frames.shape[:3]
    x = torch.from_numpy(np.ascontiguousarray(frames[..., :3])).permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    side = max(h, w)
    if h != w:
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top))
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
