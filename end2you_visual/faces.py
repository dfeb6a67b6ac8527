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
   default), once a face is tracked only MTCNN's last stage (O-Net) runs,
   on where the face is expected (batched over frames); the whole frame is
   searched again when O-Net does not confirm the face, at shot cuts and
   every ``refresh_every`` frames. ``detector="full"`` searches every whole
   frame.
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
   is followed without lag; a loss restarts it. The subject's five
   landmarks (MTCNN's: eyes, nose tip, mouth corners; O-Net gives them on
   the tracked frames too) follow the centre's filter, each point on its own, and
   are interpolated with the box.
5. Cropping (``crop``): ``"box"`` (the default), a square of side
   ``max(w, h) * (1 + margin)`` centred on the box, zero outside the frame,
   resized to ``size`` x ``size`` as ``torchvision.ops.roi_align`` resizes
   (averaging when it shrinks; computed axis by axis,
   :func:`~end2you_visual.crops.roi_align_weights`); ``"aligned"``, the frame warped by the
   similarity transform that maps the smoothed landmarks onto ArcFace's
   five-point template (eyes level), framed with the margin
   (:mod:`end2you_visual.crops`).
6. No-face frames get ``found=False``, a NaN box and landmarks, probability
   0 and, as crop, the last good crop (``fill="last"``, zeros before any
   face) or zeros (``fill="zeros"``), whatever the crop kind.

On a CPU, detection and tracking always run on one torch thread (the
pipeline sets ``torch.set_num_threads(1)`` for them and restores the
caller's count after; the crops, whose pixels are each one thread's sum,
use the caller's threads): float sums split over threads round differently, and
the tracker amplifies a 1e-5 px difference into boxes pixels apart, so
otherwise the output would depend on the thread count (and on `generate
--workers`, which divides the cores among processes). MTCNN's many small
convolutions gain little from more threads anyway, and on a busy machine
spinning OpenMP threads can slow it ten times. Parallelise over videos
instead (``generate --workers``).

Boxes are ``x1, y1, x2, y2`` and landmarks ``x, y`` in pixels of the frames
given (source pixels, whatever ``detect_scale`` is). Crops are uint8 RGB,
(n, size, size, 3).

:class:`FacePipeline` is composed of a face detector
(:attr:`FacePipeline.face_detector`, an
:class:`~end2you_visual.detectors.MTCNNDetector`: the cascade and its O-Net
refinement behind :class:`~end2you_visual.detectors.FaceDetector`'s small
interface), the tracker and track-guided detection of
:mod:`end2you_visual.tracking` (steps 1-4) and the cropping of
:mod:`end2you_visual.crops` (steps 5-6); this module holds the
batch-by-batch orchestration.
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .choices import CROP_KINDS, DETECTORS, FILLS
from .crops import FaceCropper, _check_frames, resize_only
from .detectors import MTCNNDetector
from .devices import resolve_device
from .errors import InputError
from .face_settings import MAX_BATCH, MAX_MARGIN, MAX_SIZE, FaceSettings, check_frame_size
from .ranges import check_number
from .tracking import SubjectTracker, TrackGuidedDetection

__all__ = ["FaceBatch", "FacePipeline", "FaceSettings", "check_frame_size", "crop_image",
           "resize_only"]

# MTCNN's smallest window is 12 px: asking for smaller faces upsamples the image.
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
    landmarks: np.ndarray = None

    def __len__(self):
        return len(self.found)


@contextmanager
def one_cpu_thread(device):
    """Run the body on one torch thread when ``device`` is the CPU (restored
    after): the same float rounding whatever the caller's thread count."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def _empty_batch(n, size):
    return FaceBatch(
        crops=np.zeros((n, size, size, 3), np.uint8),
        boxes=np.full((n, 4), np.nan, np.float32),
        found=np.zeros(n, bool),
        probs=np.zeros(n, np.float32),
        landmarks=np.full((n, 5, 2), np.nan, np.float32),
    )


class FacePipeline(SubjectTracker, TrackGuidedDetection, FaceCropper):
    """Detect, track and crop the main face of a video, batch by batch.

    The object is stateful across the batches of one video (track, smoothing,
    last crop, frame counter); call :meth:`reset` (or make a new one) before
    the next video. All settings are plain attributes fixed at construction.

    Args:
        size: side of the square output crops, in pixels.
        margin: extra border around the face box: the crop's side is
            ``max(w, h) * (1 + margin)``; for aligned crops, around the
            template's 112 x 112 frame (see :mod:`end2you_visual.crops`).
        crop: ``"box"`` (the default: the square around the box) or
            ``"aligned"`` (the face warped so that its landmarks fall on a
            canonical template, eyes level). Kept as ``crop_kind`` (``crop``
            is the box-cropping method).
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
            detection frames, only MTCNN's last stage runs: O-Net on the box
            where the face is expected (the track moved by its velocity, at
            three sizes, batched over frames), as MTCNN runs it on R-Net's
            candidates; it gives the probability, the refined box and the
            landmarks (:mod:`end2you_visual.mtcnn`). A frame is detected in
            full when O-Net does not confirm the tracked face (no match, or
            a probability below 0.95), at a shot cut (found from colour
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
        search_every: with ``detector="tracked"``, while no face is in view
            (none tracked, or the tracked one lost), the whole frame is
            searched only every this many detection frames, at every shot
            cut and on the last frame of each :meth:`process` call; once a
            search finds a face, the frames skipped since the last search
            are searched too, so the face is found from the frame it appears
            in: the face / no-face marks are full detection's. Default: 0.2 s
            of frames (``round(0.2 * fps)``), 5 if ``fps`` is not given.

    A number out of its range (a negative ``margin``, ``detect_scale``
    outside (0, 1], a ``size`` below 1...), an unknown ``fill`` or ``crop``
    or an unusable ``device`` raises :class:`~end2you_visual.errors.InputError`
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
        detector="tracked", refresh_every=None, crop="box", search_every=None,
    ):
        if fill not in FILLS:
            raise InputError("--fill", f'must be "last" or "zeros", got {fill!r}')
        # Every number in its range (InputError naming the option): a negative
        # margin, for one, would crop nothing and flag the black crops as faces.
        self.size = check_number("--size", size, 1, MAX_SIZE, integer=True)
        self.margin = check_number("--margin", margin, 0, MAX_MARGIN)
        self.device = resolve_device(device)
        self.detect_every = check_number("--detect-every", detect_every, 1, integer=True)
        self.min_face_size = check_number("--min-face-size", min_face_size, 1)
        self.thresholds = tuple(check_number("thresholds", t, 0, 1) for t in thresholds)
        self.smoothing = check_number("smoothing", smoothing, 0, 1, max_open=True)
        self.fill = fill
        if crop not in CROP_KINDS:
            raise InputError("--crop", f"must be one of {list(CROP_KINDS)}, got {crop!r}")
        self.crop_kind = crop
        if max_lost is None:
            max_lost = round(fps) if fps else 25
        self.max_lost = check_number("max_lost", max_lost, 0, integer=True)
        if detect_scale is not None:
            detect_scale = check_number("--detect-scale", detect_scale, 0, 1, min_open=True)
        self.detect_scale = None if detect_scale in (None, 1.0) else detect_scale
        self.batch_size = check_number("--batch-size", batch_size, 1, MAX_BATCH, integer=True)
        self.match_distance = check_number("match_distance", match_distance, 0, min_open=True)
        self.acquire_prob = check_number("acquire_prob", acquire_prob, 0, 1)
        if detector not in DETECTORS:
            raise InputError("--detector", f'must be "tracked" or "full", got {detector!r}')
        self.detector = detector
        if refresh_every is None:
            refresh_every = 2 * round(fps) if fps else 50
        self.refresh_every = check_number("refresh_every", refresh_every, 1, integer=True)
        if search_every is None:
            search_every = max(1, round(0.2 * fps)) if fps else 5
        self.search_every = check_number("search_every", search_every, 1, integer=True)

        self.face_detector = MTCNNDetector(self.device, self.min_face_size, self.detect_scale,
                                           self.thresholds, self.batch_size)
        self.reset()

    @property
    def mtcnn(self):
        """facenet-pytorch's MTCNN of :attr:`face_detector`."""
        return self.face_detector.mtcnn

    def reset(self):
        """Forget the current video: track, smoothing, last crop, frame count."""
        self._next_index = 0  # video index of the next frame given to process
        self._track_box = None  # last raw detection of the subject, (4,)
        self._segment = -1  # id of the current continuous track segment
        self._lost = 0  # frames since the subject was last seen
        self._state = None  # filter state ((cx, cy, w, h), (vx, vy) per frame) or None
        self._points_state = None  # landmark filter state ((5, 2), (5, 2) per frame) or None
        self._prev_key = None  # last detection frame, a _Key
        self._last_crop = None  # last good crop, (size, size, 3)
        self._last_thumb = None  # thumbnail of the last frame given, for cut detection
        self._last_full = None  # index of the last frame detected in full
        # Expected boxes are placed from the track as it was at a frame:
        # (group, frame index, centre-size, velocity); kept for a group of
        # _REFINE_GROUP frames (of the video, whatever the batches) or until
        # a full detection.
        self._anchor = None
        self.full_detections = 0  # frames of this video detected in full (a statistic)
        self._untracked = 0  # frames detected in full in a row without a tracked face
        self._last_search = None  # index of the last frame searched while nothing was tracked

    # ------------------------------------------------------------------ API

    def check_frame_size(self, width, height, path=None):
        """See :func:`check_frame_size` (the pipeline's settings)."""
        check_frame_size(width, height, self.min_face_size, self.detect_scale, path)

    def process(self, frames):
        """Detect, track and crop the faces of the next frames of the video.

        Args:
            frames: uint8 array (n, H, W, 3), RGB, the frames following those
                of the previous call (same video, same size).

        Returns:
            FaceBatch with exactly n rows, in order (the same whatever
            torch's thread count: see the module docstring).
        """
        frames = _check_frames(frames)
        with one_cpu_thread(self.device):  # detection and tracking: see the module docstring
            out = self._track_faces(frames)
        # Crops: each output pixel is one thread's weighted sum, the same
        # whatever the thread count, so they use the caller's threads.
        rows = np.flatnonzero(out.found)
        if len(rows):
            out.crops[rows] = self.cut(frames, out.boxes[rows], out.landmarks[rows], rows=rows)
        self._fill_missing(out.crops, out.found)
        return out

    def _track_faces(self, frames):
        """Detection and tracking of :meth:`process`: its FaceBatch, crops not cut yet."""
        self.check_frame_size(frames.shape[2], frames.shape[1])
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
            detections = self.detect(frames if len(key_rows) == n else frames[key_rows],
                                     landmarks=True)
            for row, (boxes, probs, points) in zip(key_rows, detections):
                self._prev_key = self._track(start + row, boxes, probs, points)
                keys.append(self._prev_key)
            self.full_detections += len(key_rows)
        else:
            cuts = self._cuts(frames)
            key_rows = sorted(set(key_rows) | set(np.flatnonzero(cuts).tolist()))
            self._track_guided(frames, key_rows, cuts, start, keys)
        self._fill_rows(out, keys, start)
        self._next_index = start + n
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

    def detect(self, frames, landmarks=False):
        """Run MTCNN on frames; no tracking, no state.

        Args:
            frames: uint8 array (n, H, W, 3), RGB.
            landmarks: also return each face's five landmarks.

        Returns:
            A list of n pairs ``(boxes, probs)``: float32 (k, 4) boxes
            ``x1, y1, x2, y2`` in source pixels and float32 (k,) face
            probabilities, k >= 0 faces per frame, most probable first.
            With ``landmarks=True``, triples ``(boxes, probs, points)``,
            ``points`` float32 (k, 5, 2) ``x, y`` in source pixels (see
            :class:`FaceBatch`).
        """
        frames = _check_frames(frames)
        with one_cpu_thread(self.device):
            results = self._detect(frames)
        return results if landmarks else [r[:2] for r in results]

    def _detect(self, frames):
        return self.face_detector.detect(frames)  # which checks the frame size


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
