"""``build_model``: one entry point for the visual, audio and audiovisual models.

``build_model(**model.config)`` rebuilds any of them: the audio and
audiovisual models' configs carry ``modality``; a config without it (every
VisualModel's) is visual.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple, Union, cast

from torch import nn

from ..choices import MODALITIES
from .audio import AudioModel
from .fusion import AudioVisualModel
from .visual import VisualModel

__all__ = ["MODALITIES", "build_model", "model_inputs"]


def build_model(*args: Any, modality: str = "visual", **kwargs: Any) -> nn.Module:
    """A randomly initialised model of ``modality``.

    * ``"visual"`` (default): a :class:`~end2you_visual.models.VisualModel`,
      arguments below.
    * ``"audio"``: :class:`~end2you_visual.models.audio.AudioModel`.
    * ``"audiovisual"``: :class:`~end2you_visual.models.fusion.AudioVisualModel`.

    The visual model's arguments (in this order; all have defaults, the
    paper's model):

    Args:
        arch: CNN: ``resnet18``, ``resnet34``, ``resnet50`` (default),
            ``i3d_resnet18``, ``i3d_resnet50`` (any 2D arch with the ``i3d_``
            prefix), ``resnet18_half`` (half the maps: a fast CPU student), or
            ``resnet_tiny`` / ``i3d_resnet_tiny`` (8-64 maps, for tests).
        head: ``regression`` (identity), ``multilabel`` (sigmoid) or
            ``multiclass`` (softmax); the model returns raw outputs.
        outputs: number of outputs (2 for arousal/valence, 8 emotions...).
        temporal: ``lstm``, ``gru`` or ``none`` (frame-level: the head on each
            frame's CNN features, e.g. for image datasets).
        hidden_size, num_layers: of the recurrent layers (256, 2).
        label_names: output names (default ``output_i``).
        mean, std: per-channel normalisation of [0, 1] RGB input.
        input_size: side of the square face crops the model expects
            (informational: the pool is adaptive).
        dropout: on CNN features, between recurrent layers and before the head.
        grey: convert RGB input to grey (BT.601 luma, copied to the 3 channels)
            before normalising: for models trained on grey images (FER2013),
            so that colour video is seen as they were trained.
        stem: the CNN's first layers: ``imagenet`` (torchvision's 7x7
            stride-2 convolution + max-pool: 48 px -> 12 px before the
            residual stages), ``small`` (3x3 stride 2, no max-pool: 48 -> 24),
            ``small1`` (3x3 stride 1, no max-pool: 48 -> 48) or ``nopool``
            (the ImageNet 7x7 stride-2 convolution, no max-pool: 48 -> 24;
            same weights as ``imagenet``, to continue such a model), for
            small face crops. A config without ``stem`` (older checkpoints) means
            ``imagenet``.

    Raises:
        ValueError: an unknown modality, arch, head, temporal layer or stem.
    """
    if modality == "visual":
        return VisualModel(*args, **kwargs)
    if modality == "audio":
        return AudioModel(*args, **kwargs)
    if modality == "audiovisual":
        return AudioVisualModel(*args, **kwargs)
    raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")


def model_inputs(model: Union[nn.Module, Dict[str, Any]]) -> Tuple[str, ...]:
    """What ``model`` (or its config dict) takes, by its modality:
    ``("frames",)``, ``("audio",)`` or ``("frames", "audio")``."""
    config = model if isinstance(model, dict) else cast(Dict[str, Any], model.config)
    modality = config.get("modality", "visual")
    return {"visual": ("frames",), "audio": ("audio",)}.get(modality, ("frames", "audio"))
