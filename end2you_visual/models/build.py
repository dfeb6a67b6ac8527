"""``build_model``: one entry point for the visual, audio and audiovisual models.

``build_model(**model.config)`` rebuilds any of them: the audio and
audiovisual models' configs carry ``modality``; a config without it (every
VisualModel's) is visual.
"""
from .audio import AudioModel
from .fusion import AudioVisualModel
from .visual import build_model as build_visual_model

__all__ = ["MODALITIES", "build_model", "model_inputs"]

from ..choices import MODALITIES


def build_model(*args, modality="visual", **kwargs):
    """A randomly initialised model of ``modality``.

    * ``"visual"`` (default): :class:`~end2you_visual.models.VisualModel`,
      arguments as :func:`end2you_visual.models.visual.build_model`.
    * ``"audio"``: :class:`~end2you_visual.models.audio.AudioModel`.
    * ``"audiovisual"``: :class:`~end2you_visual.models.fusion.AudioVisualModel`.
    """
    if modality == "visual":
        return build_visual_model(*args, **kwargs)
    if modality == "audio":
        return AudioModel(*args, **kwargs)
    if modality == "audiovisual":
        return AudioVisualModel(*args, **kwargs)
    raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")


def model_inputs(model):
    """What ``model`` (or its config dict) takes, by its modality:
    ``("frames",)``, ``("audio",)`` or ``("frames", "audio")``."""
    config = model if isinstance(model, dict) else model.config
    modality = config.get("modality", "visual")
    return {"visual": ("frames",), "audio": ("audio",)}.get(modality, ("frames", "audio"))
