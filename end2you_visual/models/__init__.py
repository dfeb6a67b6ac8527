"""Visual models: per-frame CNN feature extractor + recurrent layers + head.

* :func:`build_model` / :class:`VisualModel`: ResNet (2D or inflated 3D) ->
  LSTM/GRU (or none) -> linear head; frames (B, T, ...) -> (B, T, outputs).
* :func:`save_checkpoint` / :func:`load_checkpoint`: safe checkpoint files.
* :func:`quantize_state_dict` / :func:`dequantize_state_dict`: int8 weights.
* :func:`import_end2you`: weights from End2You visual checkpoints.
"""
from .checkpoint import (FORMAT, load_checkpoint, model_from_checkpoint, read_checkpoint,
                         safe_torch_load, save_checkpoint)
from .compact import dequantize_state_dict, is_quantized, quantize_state_dict
from .end2you_format import end2you_config, import_end2you
from .i3d import inflate_weight
from .transfer import TransferReport
from .visual import ARCHS, HEADS, TEMPORALS, VisualModel, build_model

__all__ = [
    "ARCHS", "HEADS", "TEMPORALS", "VisualModel", "build_model",
    "FORMAT", "save_checkpoint", "load_checkpoint", "read_checkpoint", "model_from_checkpoint",
    "safe_torch_load",
    "quantize_state_dict", "dequantize_state_dict", "is_quantized",
    "import_end2you", "end2you_config", "inflate_weight", "TransferReport",
]
