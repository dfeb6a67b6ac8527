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

:class:`FacePipeline` is a composition of three parts, each built from its
own slice of :class:`FaceSettings` (:data:`~end2you_visual.face_settings.PARTS`)
and checking it:

* the detector (:attr:`FacePipeline.face_detector`, an
  :class:`~end2you_visual.detectors.MTCNNDetector`: the cascade and its
  O-Net refinement behind :class:`~end2you_visual.detectors.FaceDetector`'s
  small interface);
* the tracker (:attr:`FacePipeline.tracker`, a
  :class:`~end2you_visual.tracking.FaceTracker`: the main subject's
  :class:`~end2you_visual.tracking.SubjectTracking`, steps 1-4, or with
  ``faces="all"`` every person's :class:`~end2you_visual.people.PeopleTracker`);
* the cropper (:attr:`FacePipeline.cropper`, a
  :class:`~end2you_visual.crops.FaceCropper`, steps 5-6).

This module holds the batch-by-batch orchestration: the tracker on one
thread, then the cropper on each face it follows.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .crops import FaceCropper, _check_frames, resize_only
from .detectors import Detections, FaceDetector, MTCNNDetector
from .devices import one_cpu_thread, resolve_device
from .face_batch import FaceBatch
from .face_settings import FaceSettings, check_frame_size
from .ranges import check_number
from .people import Person, PeopleTracker
from .tracking import MAIN, FaceTracker, SubjectTracker, SubjectTracking

__all__ = ["FaceBatch", "FacePipeline", "FaceSettings", "check_frame_size", "crop_image",
           "resize_only"]


class FacePipeline:
    """Detect, track and crop the main face of a video (or, with
    ``faces="all"``, every person's), batch by batch.

    The object is stateful across the batches of one video (track, smoothing,
    last crop, frame counter); call :meth:`reset` (or make a new one) before
    the next video. Its settings are :attr:`settings`, a
    :class:`FaceSettings`; its parts :attr:`face_detector`,
    :attr:`tracker` and :attr:`cropper` (see the module docstring).

    Args:
        size: side of the square output crops, in pixels.
        margin: extra border around the face box: the crop's side is
            ``max(w, h) * (1 + margin)``; for aligned crops, around the
            template's 112 x 112 frame (see :mod:`end2you_visual.crops`).
        crop: ``"box"`` (the default: the square around the box) or
            ``"aligned"`` (the face warped so that its landmarks fall on a
            canonical template, eyes level).
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
        fps: the video's frame rate, for the defaults given in seconds.
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
        faces: ``"main"`` (the default: the main subject, :meth:`process`)
            or ``"all"`` (every person, :meth:`track` and :meth:`people`;
            see :class:`~end2you_visual.people.PeopleTracker`).
        min_duration, max_gap: with ``faces="all"``, seconds a person must
            be seen to be kept, and may be missing and keep their track.

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
        self, size: int = 150, margin: float = 0.2, device: Union[str, torch.device] = "cpu",
        detect_every: int = 1, min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7), smoothing: float = 0.5,
        fill: str = "last", max_lost: Optional[int] = None, fps: Optional[float] = None,
        detect_scale: Optional[float] = None, batch_size: int = 16,
        match_distance: float = 0.5, acquire_prob: float = 0.9, detector: str = "tracked",
        refresh_every: Optional[int] = None, crop: str = "box",
        search_every: Optional[int] = None, faces: str = "main", min_duration: float = 0.5,
        max_gap: float = 1.0,
    ):
        device = resolve_device(device)
        self.settings = FaceSettings(
            size=size, margin=margin, crop=crop, device=str(device), batch_size=batch_size,
            detect_every=detect_every, detect_scale=detect_scale, min_face_size=min_face_size,
            smoothing=smoothing, fill=fill, detector=detector, faces=faces,
            min_duration=min_duration, max_gap=max_gap)
        if fps is not None:
            fps = check_number("fps", fps, 0, min_open=True)
        self.fps = fps
        self.cropper = FaceCropper(**{**self.settings.part("cropper"), "device": device})
        self._face_detector: FaceDetector = MTCNNDetector(
            **{**self.settings.part("detector"), "device": device}, thresholds=thresholds)
        self.tracker: FaceTracker = self._make_tracker(
            thresholds, max_lost, match_distance, acquire_prob, refresh_every, search_every)

    @classmethod
    def from_settings(cls, settings: FaceSettings, fps: Optional[float] = None,
                      size: Optional[int] = None,
                      device: Union[str, torch.device, None] = None,
                      faces: Optional[str] = None) -> FacePipeline:
        """The pipeline of ``settings`` (a :class:`FaceSettings`, or a
        dataclass extending it: its face settings) for a video at ``fps``;
        ``size``, ``device`` and ``faces`` override the settings' (e.g. a
        model's input size): the main subject's, or with ``faces="all"``
        every person's."""
        args: Dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(FaceSettings)}
        args.update({k: v for k, v in (("size", size), ("device", device), ("faces", faces))
                     if v is not None})
        return cls(fps=fps, **args)

    def _make_tracker(self, thresholds: Sequence[float], max_lost: Optional[int],
                      match_distance: float, acquire_prob: float,
                      refresh_every: Optional[int], search_every: Optional[int]) -> FaceTracker:
        """The tracker part of :attr:`settings` (``faces``): the main subject's or
        every person's; the durations in frames of ``fps``."""
        fps = self.fps
        if refresh_every is None:  # at least every 2 frames, whatever the frame rate
            refresh_every = 2 * max(1, round(fps)) if fps else 50
        if search_every is None:
            search_every = max(1, round(0.2 * fps)) if fps else 5
        tracker = self.settings.part("tracker")
        if tracker["faces"] == "all":
            return PeopleTracker(
                self._face_detector, fps=fps or 25.0, smoothing=tracker["smoothing"],
                detect_every=tracker["detect_every"], min_duration=tracker["min_duration"],
                max_gap=tracker["max_gap"], search_every=search_every,
                match_distance=match_distance, acquire_prob=acquire_prob,
                refresh_every=refresh_every)
        if max_lost is None:
            max_lost = round(fps) if fps else 25
        subject = SubjectTracker(max_lost, match_distance, acquire_prob, tracker["smoothing"])
        return SubjectTracking(
            self._face_detector, subject, detector=tracker["detector"],
            detect_every=tracker["detect_every"], refresh_every=refresh_every,
            search_every=search_every, batch_size=self.settings.batch_size,
            refine_threshold=thresholds[2])

    # ---------------------------------------------------------------- parts
    @property
    def face_detector(self) -> FaceDetector:
        """The detector part (the tracker's too: setting it sets both)."""
        return self._face_detector

    @face_detector.setter
    def face_detector(self, detector: FaceDetector) -> None:
        self._face_detector = detector
        self.tracker.face_detector = detector

    @property
    def mtcnn(self) -> Any:
        """facenet-pytorch's MTCNN of :attr:`face_detector`."""
        # MTCNNDetector's attribute, not part of the FaceDetector interface
        return getattr(self._face_detector, "mtcnn")

    @property
    def size(self) -> int:
        """Side of the crops, pixels."""
        return self.cropper.size

    @property
    def device(self) -> torch.device:
        """Where the crops are cut (and faces detected)."""
        return self.cropper.device

    @property
    def full_detections(self) -> int:
        """Frames of this video searched whole by the detector (a statistic)."""
        return self.tracker.full_detections

    # ------------------------------------------------------------------ API
    def reset(self) -> None:
        """Forget the current video: tracks, smoothing, last crops, frame count."""
        self.tracker.reset()
        self.cropper.reset()

    def check_frame_size(self, width: int, height: int,
                         path: Union[str, os.PathLike[str], None] = None) -> None:
        """See :func:`check_frame_size` (the detector's settings)."""
        self._face_detector.check_frame_size(width, height, path)

    def track(self, frames: np.ndarray) -> Dict[int, FaceBatch]:
        """Detect, track and crop every face followed on the next frames of
        the video: ``{face id: FaceBatch of n rows}``. The main subject's id
        is 0 (:data:`~end2you_visual.tracking.MAIN`); with ``faces="all"``,
        every person known so far (1, 2...; rows where one is not in view
        are no-face rows; :meth:`people` says which to keep).

        Args:
            frames: uint8 array (n, H, W, 3), RGB, the frames following those
                of the previous call (same video, same size).
        """
        frames = _check_frames(frames)
        with one_cpu_thread(self.device):  # detection and tracking: see the module docstring
            batches = self.tracker.track(frames)
        # Crops: each output pixel is one thread's weighted sum, the same
        # whatever the thread count, so they use the caller's threads.
        for face, batch in batches.items():
            self.cropper.cut_batch(frames, batch, face)
        return batches

    def process(self, frames: np.ndarray) -> FaceBatch:
        """Detect, track and crop the main subject's face on the next frames.

        Args:
            frames: uint8 array (n, H, W, 3), RGB, the frames following those
                of the previous call (same video, same size).

        Returns:
            FaceBatch with exactly n rows, in order (the same whatever
            torch's thread count: see the module docstring).
        """
        if self.settings.faces != "main":
            raise ValueError('process follows the main subject; with faces="all" use track')
        return self.track(frames)[MAIN]

    def people(self) -> List[Person]:
        """With ``faces="all"``: the people kept so far (seen on at least
        ``min_duration``), a list of :class:`~end2you_visual.people.Person`."""
        if not isinstance(self.tracker, PeopleTracker):
            raise ValueError('people are followed with faces="all"')
        return self.tracker.finish()

    def process_image(self, image: np.ndarray) -> FaceBatch:
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

    def detect(self, frames: np.ndarray, landmarks: bool = False) -> list:
        """Run the detector on frames; no tracking, no state.

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
            results: List[Detections] = self._face_detector.detect(frames)
        return results if landmarks else [r[:2] for r in results]

    # The cropper's, for callers of the pipeline (see FaceCropper).
    def crop(self, frames: np.ndarray, boxes: np.ndarray,
             rows: Optional[np.ndarray] = None) -> np.ndarray:
        """:meth:`FaceCropper.crop <end2you_visual.crops.FaceCropper.crop>`."""
        return self.cropper.crop(frames, boxes, rows)

    def align(self, frames: np.ndarray, landmarks: np.ndarray,
              rows: Optional[np.ndarray] = None) -> np.ndarray:
        """:meth:`FaceCropper.align <end2you_visual.crops.FaceCropper.align>`."""
        return self.cropper.align(frames, landmarks, rows)

    def cut(self, frames: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
            rows: Optional[np.ndarray] = None) -> np.ndarray:
        """:meth:`FaceCropper.cut <end2you_visual.crops.FaceCropper.cut>`."""
        return self.cropper.cut(frames, boxes, landmarks, rows)

    def square_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """:meth:`FaceCropper.square_boxes <end2you_visual.crops.FaceCropper.square_boxes>`."""
        return self.cropper.square_boxes(boxes)


def crop_image(image: Union[np.ndarray, str, os.PathLike[str]],
               pipeline: Optional[FacePipeline] = None, **kwargs: Any) -> FaceBatch:
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
