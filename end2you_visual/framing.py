"""How the face crops a model was trained on were framed: :class:`Framing`.

A model is sensitive to how much forehead and background its crops hold:
one trained on tight faces (FER2013's) gives other answers on crops with a
border around the face. As torchvision's weights carry their transforms, a
checkpoint and a zoo entry carry the framing of their training crops, and
`predict` and `extract` (of videos) cut their crops the same way unless told
otherwise::

    from end2you_visual.framing import model_framing
    model_framing(model)   # Framing(margin=0.0, square='max-side', size=48, grey=True,
                           #         source='whole-image', crop='box'), or None (older
                           #         checkpoints)

`train` reads it from the training files (:func:`data_framing`), stores it
in the checkpoint (the ``"framing"`` entry, beside the ``config`` that holds
the input size) and ``zoo export`` copies it into the registry entry. A
model without one (older checkpoints, models trained on End2You files)
keeps the default face settings.

The framed settings (:data:`FRAMED_SETTINGS`) are the margin and the crop
kind (``"box"`` or ``"aligned"``, :mod:`end2you_visual.crops`): a model
trained on aligned crops predicts on aligned crops unless told otherwise.
Each is taken from the framing only when not given. A framing of box crops
is stored without its ``crop`` (as before it existed), so such checkpoints
and registry entries stay as they were, readable by older versions.
"""
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from .choices import CROP_KINDS
from .errors import InputError

if TYPE_CHECKING:
    from .face_settings import FaceSettings

__all__ = ["Framing", "SQUARE_RULES", "SOURCES", "FRAMED_SETTINGS", "file_framing",
           "data_framing", "model_framing", "resolve_face_settings", "model_face_settings",
           "with_model"]

# The crop is the square of side max(w, h) * (1 + margin) centred on the face
# box (FacePipeline), or a whole image zero-padded to a square of its longer
# side (generate --skip-detection): the only rule the toolkit cuts by.
SQUARE_RULES = ("max-side",)
# "detected": MTCNN boxes plus the margin (generate on videos or images);
# "whole-image": images packed whole with --skip-detection, taken to be
# tight face crops (FER2013's are), so recorded as margin 0.
SOURCES = ("detected", "whole-image")
# The FaceSettings fields a model's framing gives a default to (the crop size
# is the model's input size already; grey is done by the model itself).
FRAMED_SETTINGS = ("margin", "crop")
_DESCRIBED = {"detected": "{detector} face boxes plus the margin",
              "whole-image": "whole face images packed with generate --skip-detection, "
                             "taken as tight faces",
              "aligned": "{detector}'s five landmarks aligned on a face template, "
                         "plus the margin"}


@dataclass(frozen=True)
class Framing:
    """How a model's training crops were cut.

    Attributes:
        margin: the border around the face box, as a fraction of its side
            (:class:`~end2you_visual.faces.FaceSettings`'s ``margin``).
        square: how the box was made square (``"max-side"``: a square of
            side ``max(w, h) * (1 + margin)`` centred on it).
        size: side of the crops, in pixels (the model's ``input_size``).
        grey: whether the model sees its crops as grey (its ``grey`` setting).
        source: ``"detected"`` (MTCNN boxes plus margin) or ``"whole-image"``
            (images packed whole, taken as tight faces: margin 0).
        crop: ``"box"`` (the square around the box, or the whole image) or
            ``"aligned"`` (the face's landmarks warped onto a template,
            :class:`~end2you_visual.faces.FaceSettings`'s ``crop``).
        detector: the face detector whose boxes (and landmarks) the crops
            were cut around (its ``name``: ``"mtcnn"``,
            :class:`~end2you_visual.detectors.MTCNNDetector`); None for
            whole images. Files and checkpoints written before it was
            recorded were all made by MTCNN.
    """

    margin: float
    square: str = "max-side"
    size: Optional[int] = None
    grey: bool = False
    source: str = "detected"
    crop: str = "box"
    detector: Optional[str] = "mtcnn"

    def __post_init__(self) -> None:
        if self.source == "whole-image":  # nothing was detected
            object.__setattr__(self, "detector", None)

    def as_dict(self) -> Dict[str, Any]:
        """Plain values, as checkpoints and registry entries store it (``crop``
        only when not ``"box"``, ``detector`` only when not MTCNN's: older
        versions then read it too)."""
        raw = asdict(self)
        if raw["crop"] == "box":
            del raw["crop"]
        if raw["detector"] in ("mtcnn", None):
            del raw["detector"]
        return raw

    @classmethod
    def from_dict(cls, raw: Any, where: Union[str, "os.PathLike[str]", None]) -> "Framing":
        """The Framing of a stored dict; InputError naming ``where`` if it is not one."""
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or "margin" not in raw or set(raw) - known:
            raise InputError(where, f"framing must be an object with a margin and only "
                                    f"{sorted(known)}, got {raw!r}")
        margin = raw["margin"]
        if (isinstance(margin, bool) or not isinstance(margin, (int, float))
                or not math.isfinite(margin) or margin < 0):
            raise InputError(where, f"framing margin must be a number >= 0, got {margin!r}")
        size = raw.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise InputError(where, f"framing size must be a whole number >= 1, got {size!r}")
        framing = cls(**{**raw, "margin": float(margin), "grey": bool(raw.get("grey", False))})
        if framing.square not in SQUARE_RULES:
            raise InputError(where, f"framing square rule {framing.square!r} is not one of "
                                    f"{list(SQUARE_RULES)}")
        if framing.source not in SOURCES:
            raise InputError(where, f"framing source {framing.source!r} is not one of "
                                    f"{list(SOURCES)}")
        if framing.detector is not None and not isinstance(framing.detector, str):
            raise InputError(where, f"framing detector must be a name, got {framing.detector!r}")
        if framing.crop not in CROP_KINDS:
            raise InputError(where, f"framing crop {framing.crop!r} is not one of "
                                    f"{list(CROP_KINDS)}")
        return framing

    def same_crops(self, other: Optional["Framing"]) -> bool:
        """Whether ``other`` cuts faces the same way (margin, square rule, crop kind)."""
        return (other is not None and self.margin == other.margin
                and self.square == other.square and self.crop == other.crop
                and self.detector == other.detector)

    def describe(self) -> str:
        """``"margin 0.0 (whole face images ..., taken as tight faces)"``."""
        kind = "aligned" if self.crop == "aligned" else self.source
        detector = (self.detector or "").upper()
        return f"margin {float(self.margin)} ({_DESCRIBED[kind].format(detector=detector)})"


def file_framing(seqfile: Any) -> Optional[Framing]:
    """The :class:`Framing` of one :class:`~end2you_visual.data.SequenceFile`'s
    crops, from the settings `generate` stored in it; None when it does not
    say (End2You files, files written by other tools)."""
    settings = getattr(seqfile, "settings", None) or {}
    if settings.get("skip_detection"):
        # Nothing was detected: each image was taken whole (zero-padded to a
        # square) as the face crop. Face datasets packed this way (FER2013)
        # hold tight faces, so margin 0 is the honest record; what the images
        # hold beyond that, the file cannot say.
        return Framing(margin=0.0, size=int(seqfile.frame_size), source="whole-image")
    margin = settings.get("margin")
    if margin is None:
        return None
    # Files written before --crop existed hold box crops.
    # ... and were all cut around MTCNN's boxes before the detector was recorded.
    return Framing.from_dict({"margin": margin, "size": int(seqfile.frame_size),
                              "crop": settings.get("crop", "box"),
                              "detector": settings.get("face_detector", "mtcnn")}, seqfile.path)


def data_framing(files: Iterable[Any]) -> Tuple[Optional[Framing], Optional[str]]:
    """``(Framing or None, note or None)`` of the training files: their
    common framing; None, with a note saying why, when one does not say or
    they differ."""
    found = [(f, file_framing(f)) for f in files]
    unknown = [str(f.path) for f, framing in found if framing is None]
    if unknown:
        return None, (f"no face framing recorded (not in {unknown[0]}"
                      + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "") + ")")
    framed = [(f, x) for f, x in found if x is not None]  # all of them, now
    first = framed[0][1]
    differ = [(f, x) for f, x in framed if not first.same_crops(x) or x.source != first.source]
    if differ:
        return None, (f"no face framing recorded: {framed[0][0].path} holds crops of "
                      f"{first.describe()}, {differ[0][0].path} of {differ[0][1].describe()}")
    return first, None


def model_framing(model: Any) -> Optional[Framing]:
    """The :class:`Framing` a model carries (from its checkpoint or zoo entry),
    or None (a model built in Python, an older checkpoint)."""
    base = getattr(model, "_orig_mod", model)
    return getattr(base, "framing", None)


def resolve_face_settings(faces: Mapping[str, Any],
                          framing: Optional[Framing]) -> Tuple["FaceSettings", Optional[str]]:
    """FaceSettings arguments with the model's framing filling those not given.

    Args:
        faces: face settings as given (a dict; a setting of
            :data:`FRAMED_SETTINGS` that is None or absent was not given).
        framing: the model's :class:`Framing`, or None.

    Returns:
        ``(settings, line)``: the :class:`~end2you_visual.faces.FaceSettings`
        to run with, and the line to tell the user: the given settings that
        differ from the framing, or that the framing is used (when nothing
        was given, or a setting not given came from it other than its
        default); None when there is nothing to say (no framing, or the
        settings given match it and the rest are defaults).
    """
    from .face_settings import FaceSettings

    faces = dict(faces)
    given = {k: faces[k] for k in FRAMED_SETTINGS if faces.get(k) is not None}
    for key in FRAMED_SETTINGS:
        if faces.get(key) is None:
            faces.pop(key, None)
            if framing is not None:
                faces[key] = getattr(framing, key)
    settings = FaceSettings(**faces)
    if framing is None:
        return settings, None
    differ = [key for key in given if getattr(settings, key) != getattr(framing, key)]
    if differ:
        ran = ", ".join(f"margin {float(settings.margin)}" if key == "margin"
                        else f"{settings.crop} crops" for key in differ)
        return settings, f"{ran} as given; the model's framing is {framing.describe()}"
    defaults = {f.name: f.default for f in fields(FaceSettings)}
    taken = [key for key in FRAMED_SETTINGS
             if key not in given and getattr(framing, key) != defaults[key]]
    if given and not taken:
        return settings, None
    overrides = "--margin (margin=) overrides" if framing.crop == "box" else \
        "--margin (margin=) and --crop (crop=) override"
    return settings, f"using the model's framing: {framing.describe()}; {overrides}"


def model_face_settings(faces: Mapping[str, Any], framing: Optional[Framing], size: int,
                        device: object,
                        announce: Optional[Callable[[str], object]] = None) -> "FaceSettings":
    """The face settings a model's video crops are cut with (`predict`,
    `extract`): ``faces`` with the model's ``framing`` filling the margin and
    crop kind not given (:func:`resolve_face_settings`), the crop ``size``
    the model's input size, on ``device``. The line about the framing, when
    there is one, is given to ``announce`` (e.g. ``print``; None: not told)."""
    settings, line = resolve_face_settings(faces, framing)
    if line and announce is not None:
        announce(line)
    return replace(settings, size=int(size), device=str(device))


def with_model(framing: Optional[Framing], config: Mapping[str, Any]) -> Optional[Framing]:
    """``framing`` with the size and grey of a model ``config`` (None stays None,
    and so does a model that sees no frames: an audio model)."""
    if framing is None or "input_size" not in config:
        return None
    return replace(framing, size=int(config["input_size"]), grey=bool(config.get("grey", False)))
