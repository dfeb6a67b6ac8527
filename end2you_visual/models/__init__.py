"""Models: per-frame CNN feature extractor + recurrent layers + head.

* :class:`AudioModel` (raw-waveform 1-D CNN) and :class:`AudioVisualModel`
  (model-level fusion): ``build_model(modality="audio" / "audiovisual")``.
* :func:`build_model` / :class:`VisualModel`: ResNet (2D or inflated 3D) ->
  LSTM/GRU (or none) -> linear head; frames (B, T, ...) -> (B, T, outputs).
* :func:`save_checkpoint` / :func:`load_checkpoint`: safe checkpoint files.
* :func:`quantize_state_dict` / :func:`dequantize_state_dict`: int8 weights.
* :func:`import_end2you`: weights from End2You visual checkpoints.
"""
from .audio import AudioModel
from .build import MODALITIES, build_model
from .checkpoint import (FORMAT, load_checkpoint, model_from_checkpoint, read_checkpoint,
                         safe_torch_load, save_checkpoint, unwrap_model)
from .compact import dequantize_state_dict, quantize_state_dict
from .end2you_format import end2you_config, import_end2you
from .fusion import AudioVisualModel
from .i3d import inflate_weight
from .transfer import TransferReport
from .visual import ARCHS, HEADS, TEMPORALS, VisualModel

__all__ = [
    "ARCHS", "HEADS", "TEMPORALS", "VisualModel", "build_model",
    "MODALITIES", "AudioModel", "AudioVisualModel",
    "FORMAT", "save_checkpoint", "load_checkpoint", "read_checkpoint", "model_from_checkpoint",
    "safe_torch_load", "unwrap_model",
    "quantize_state_dict", "dequantize_state_dict",
    "import_end2you", "end2you_config", "inflate_weight", "TransferReport",
]
