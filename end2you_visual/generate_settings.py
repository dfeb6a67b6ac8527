"""The settings of `generate` (:class:`GenerateSettings`): the face
pipeline's (:class:`~end2you_visual.face_settings.FaceSettings`) and how
labels, images, shards, compression and audio are handled. No torch here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from .audio import audio_settings
from .choices import COMPRESSIONS
from .errors import InputError
from .face_settings import FaceSettings
from .labels import ALIGN_MODES, INTERPOLATIONS
from .ranges import COUNT, NON_NEGATIVE, POSITIVE

__all__ = ["GenerateSettings"]


@dataclass
class GenerateSettings(FaceSettings):
    """How `generate` turns inputs into crops; stored in every output file.

    The face pipeline's settings (size, margin, crop, device, batch_size,
    detect_every, detect_scale, min_face_size, smoothing, fill, detector) are those of
    :class:`~end2you_visual.faces.FaceSettings`; then:

    Attributes:
        align: output frame rate: "video" (every frame) or "labels" (a frame per label row).
        interpolation: label value at a frame time: "previous", "nearest", "linear".
        tolerance: seconds labels may start late / end early or late vs. the video.
        time_column / label_columns: which label CSV columns to use (None: first / rest).
        subject_pattern: a regular expression finding each item's subject in
            its path (see :func:`~end2you_visual.inputs.assign_subjects`), for
            ``train --split-by subject``; an input CSV's subject column wins.
        skip_detection: inputs are already face crops (e.g. FER2013): only resize.
        image_fps: frame rate recorded for image sequences.
        shard_size: images or image sequences per shard file.
        compression: HDF5 compression of the frames (None, "gzip", "lzf").
        audio: also store each video's audio track (:mod:`end2you_visual.audio`):
            None (no), "required" (a video without one fails) or "optional"
            (its absence is recorded). Image inputs have no audio.
        audio_rate: sample rate of the stored audio, Hz.

    A setting out of its range (``margin < 0``, ``detect_scale`` outside
    (0, 1], ``size < 1``...) raises :class:`~end2you_visual.errors.InputError`
    naming the command-line option, at construction and again when
    :func:`generate` starts.
    """

    align: str = "video"
    interpolation: str = "previous"
    tolerance: float = 1.0
    time_column: Optional[str] = None
    label_columns: Optional[List[str]] = None
    subject_pattern: Optional[str] = None
    skip_detection: bool = False
    image_fps: float = 30.0
    shard_size: int = 5000
    compression: Optional[str] = None
    audio: Optional[str] = None
    audio_rate: int = 16000

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> GenerateSettings:
        """Raise InputError, naming its option, for the first setting out of range."""
        self.check_faces()
        self.tolerance = NON_NEGATIVE.check("--tolerance", self.tolerance)
        if self.subject_pattern is not None:
            try:
                re.compile(self.subject_pattern)
            except re.error as err:
                raise InputError("--subject-pattern", f"not a regular expression: {err}") from None
        self.image_fps = POSITIVE.check("--image-fps", self.image_fps)
        self.shard_size = int(COUNT.check("--shard-size", self.shard_size))
        self.audio_rate = audio_settings(self.audio, self.audio_rate)
        for option, value, choices in (("--align", self.align, ALIGN_MODES),
                                       ("--interpolation", self.interpolation, INTERPOLATIONS),
                                       ("--compression", self.compression,
                                        (None, *COMPRESSIONS))):
            if value not in choices:
                raise InputError(option, f"must be one of {list(choices)}, got {value!r}")
        return self
