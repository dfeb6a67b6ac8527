"""The face pipeline's settings (:class:`FaceSettings`), their ranges and
the check of a video's frame size against them; no torch here, so the
command line builds its options from these fields at once.

:mod:`end2you_visual.faces` builds the pipeline from them
(:meth:`FacePipeline.from_settings <end2you_visual.faces.FacePipeline.from_settings>`).
"""
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Sequence, Union

from .choices import CROP_KINDS, DETECTORS, FACES, FILLS
from .errors import InputError
from .ranges import Range


#: The settings of every person's tracker (``faces="all"``); extract's
#: record of the face settings leaves them out (:meth:`FaceSettings.face_settings`).
PEOPLE_SETTINGS = ("faces", "min_duration", "max_gap")
#: Which settings each part of the face pipeline is built from
#: (:meth:`FaceSettings.part`): the detector
#: (:class:`~end2you_visual.detectors.MTCNNDetector`), the tracker (the
#: main subject's :class:`~end2you_visual.tracking.SubjectTracking` or every
#: person's :class:`~end2you_visual.people.PeopleTracker`; ``detector`` is
#: its detection schedule, ``"tracked"`` or ``"full"``) and the cropper
#: (:class:`~end2you_visual.crops.FaceCropper`). ``device`` goes to all three.
PARTS = {
    "detector": ("device", "min_face_size", "detect_scale", "batch_size"),
    "tracker": ("detect_every", "smoothing", "detector", "faces", "min_duration", "max_gap"),
    "cropper": ("size", "margin", "crop", "fill", "device"),
}

__all__ = ["NUMERIC_SETTINGS", "PARTS", "PEOPLE_SETTINGS", "FaceSettings", "check_setting", "settings_record", "check_frame_size", "detector_min_face",
           "MAX_SIZE", "MAX_MARGIN", "MAX_BATCH", "MTCNN_MIN_WINDOW"]

MTCNN_MIN_WINDOW = 12.0
# Upper bounds of the settings whose size grows memory: a crop's side, the
# border around a face (the square read is (1 + margin) faces wide: 11 at
# most) and the frames decoded and detected together.
MAX_SIZE = 2048
MAX_MARGIN = 10.0
MAX_BATCH = 4096


def detector_min_face(min_face_size: float, detect_scale: Optional[float]) -> float:
    """The smallest face MTCNN is asked for, in the pixels it searches."""
    if detect_scale is None:
        return min_face_size
    return max(min_face_size * detect_scale, MTCNN_MIN_WINDOW)


def check_frame_size(width: int, height: int, min_face_size: float = 20,
                     detect_scale: Optional[float] = None,
                     path: Union[str, "os.PathLike[str]", None] = None) -> None:
    """Raise InputError (naming ``path``, else "frames") when no face can be
    searched for in frames of ``width`` x ``height`` pixels: a
    ``min_face_size`` larger than the frame, or a ``detect_scale`` that
    shrinks it below MTCNN's smallest window (12 px)."""
    scale = detect_scale or 1.0
    side = min(width, height)
    scaled = max(1, round(side * scale))
    smallest = detector_min_face(min_face_size, detect_scale)
    if min_face_size > side:
        problem = (f"--min-face-size {min_face_size:g} is larger than its {width}x{height} "
                   "frames: no face can be found; use a smaller one")
    elif scaled < smallest:
        problem = (f"--detect-scale {scale:g} shrinks its {width}x{height} frames to {scaled} px "
                   f"on their short side, smaller than the faces searched for ({smallest:g} px: "
                   "MTCNN's smallest window is 12 px); use a larger --detect-scale or none")
    else:
        return
    raise InputError(path if path is not None else "frames", problem)


def settings_record(settings: "FaceSettings", face_detector: Optional[str] = None
                    ) -> Dict[str, Any]:
    """What an output records of the settings that made it: the fields of
    ``settings`` (a FaceSettings or a dataclass extending it) and, when
    faces were detected, the name of the detector (``face_detector``,
    e.g. ``"mtcnn"``) as ``"face_detector"``."""
    from dataclasses import asdict

    record = asdict(settings)
    if face_detector is not None:
        record["face_detector"] = face_detector
    return record


def check_setting(name: str, value: Any) -> Any:
    """``value`` if it is a valid value of the FaceSettings field ``name``
    (a number as its field's type), else InputError naming its option. The
    one check of each face setting: FaceSettings and the pipeline's parts
    (:class:`~end2you_visual.crops.FaceCropper`...) call it."""
    meta = _FIELDS[name].metadata
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise InputError(meta["option"], f"must be one of {list(meta['choices'])}, "
                                             f"got {value!r}")
        return value
    if name in NUMERIC_SETTINGS and value is not None:
        return meta["range"].check(meta["option"], value)
    return value


def _setting(default: Any, option: str, help: str, low: Optional[float] = None,
             high: Optional[float] = None, *, integer: bool = False, low_open: bool = False,
             high_open: bool = False, choices: Optional[Sequence[str]] = None) -> Any:
    """A :class:`FaceSettings` field: its default, command-line option, help and
    range (a :class:`~end2you_visual.ranges.Range`) or choices."""
    return field(default=default, metadata={
        "option": option, "help": help,
        "range": Range(low, high, integer=integer, low_open=low_open, high_open=high_open),
        "choices": choices})


@dataclass
class FaceSettings:
    """The face pipeline's settings, one definition for `generate` and
    `predict` (their command-line options are made from these fields:
    ``metadata["option"]``, ``["help"]``, ``["range"]``, ``["choices"]``).

    A number out of its range raises :class:`~end2you_visual.errors.InputError`
    naming the option, at construction.
    :meth:`FacePipeline.from_settings <end2you_visual.faces.FacePipeline.from_settings>`
    builds the pipeline of these settings.
    """

    size: int = _setting(150, "--size", "Side of the square crops.", 1, MAX_SIZE, integer=True)
    margin: float = _setting(0.2, "--margin",
                             "Border around the face box, as a fraction of its side.", 0,
                             MAX_MARGIN)
    crop: str = _setting("box", "--crop", "box: a square around the face box; aligned: the "
                         "face turned and scaled so that its five landmarks (eyes, nose, "
                         "mouth corners) fall on a fixed template, eyes level (--margin "
                         "widens it as it widens a box).", choices=CROP_KINDS)
    device: str = _setting("cpu", "--device", "auto, cpu, cuda, cuda:1...")
    batch_size: int = _setting(16, "--batch-size",
                               "Frames decoded and detected together (64 or more on a GPU).",
                               1, MAX_BATCH, integer=True)
    detect_every: int = _setting(1, "--detect-every", "Detect on every k-th frame and "
                                 "interpolate the track in between.", 1, integer=True)
    detect_scale: Optional[float] = _setting(None, "--detect-scale", "Detect on frames scaled by this "
                                   "factor (e.g. 0.5 for 1080p).", 0, 1, low_open=True)
    min_face_size: int = _setting(20, "--min-face-size", "Smallest face searched for, in "
                                  "pixels.", 1, integer=True)
    smoothing: float = _setting(0.5, "--smoothing", "Box smoothing strength over time "
                                "(0: none).", 0, 1, high_open=True)
    fill: str = _setting("last", "--fill", "What a frame without a face holds (its mask says "
                         "no face either way).", choices=FILLS)
    detector: str = _setting("tracked", "--detector", "tracked: between full-frame detections, "
                             "refine the tracked face where it is expected with MTCNN's "
                             "last stage (several times faster); full: MTCNN on every "
                             "whole frame.", choices=DETECTORS)

    faces: str = _setting("main", "--faces", "main: follow the main subject (one sequence "
                          "per video); all: every person seen for --min-duration, each "
                          "followed with a stable id (one sequence per person).",
                          choices=FACES)
    min_duration: float = _setting(0.5, "--min-duration", "With --faces all: seconds a "
                                   "person must be seen to be kept.", 0, 3600)
    max_gap: float = _setting(1.0, "--max-gap", "With --faces all: seconds a person may be "
                              "missing and keep the track (longer: re-identified by "
                              "appearance).", 0, 3600)

    def __post_init__(self) -> None:
        self.check_faces()

    def check_faces(self) -> "FaceSettings":
        """Raise InputError, naming its option, for the first face setting out of range."""
        for f in fields(FaceSettings):
            setattr(self, f.name, check_setting(f.name, getattr(self, f.name)))
        return self

    def check_frame_size(self, width: int, height: int,
                         path: Union[str, "os.PathLike[str]", None] = None) -> None:
        """Raise InputError naming ``path`` when these settings can search no
        face in its ``width`` x ``height`` frames (see :func:`check_frame_size`)."""
        check_frame_size(width, height, self.min_face_size, self.detect_scale, path)

    def face_settings(self) -> Dict[str, Any]:
        """The face settings but the people tracker's (``faces``,
        ``min_duration``, ``max_gap``), as a dict: what extract records."""
        return {f.name: getattr(self, f.name) for f in fields(FaceSettings)
                if f.name not in PEOPLE_SETTINGS}

    def part(self, name: str) -> Dict[str, Any]:
        """The settings of one part of the face pipeline, as a dict of its
        constructor's arguments: ``"detector"``, ``"tracker"`` or
        ``"cropper"`` (:data:`PARTS`)."""
        return {key: getattr(self, key) for key in PARTS[name]}



_FIELDS = {f.name: f for f in fields(FaceSettings)}
#: The numeric settings: those with a range (bounded on a side).
NUMERIC_SETTINGS = {name for name, f in _FIELDS.items() if f.metadata["choices"] is None
            and (f.metadata["range"].low is not None or f.metadata["range"].high is not None)}
