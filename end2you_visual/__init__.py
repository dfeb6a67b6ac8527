"""end2you-visual: facial affect recognition in real-world video, End2You-style.

The data flows one way: video -> faces/labels -> HDF5 -> reader -> model ->
predictions -> metrics/post-processing. See ``docs/`` for the user guide.

The main entry points are importable from here (``e2y.load_pretrained``,
``e2y.GenerateSettings``, ``e2y.train``, ``e2y.predict_video``...), each imported
from its module on first use, so that ``import end2you_visual`` stays light
(no torch until a model is needed). ``dir(end2you_visual)`` lists them.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module (relative to this package) that defines it
_ENTRY_POINTS = {
    "load_pretrained": "zoo", "list_pretrained": "zoo", "get_weights": "zoo",
    "build_model": "models", "save_checkpoint": "models", "load_checkpoint": "models",
    "GenerateSettings": "generate",
    "SequenceFile": "data", "WindowDataset": "data",
    "TrainConfig": "training", "train": "training",
    "run_test": "testrun", "predict_sequence": "inference", "load_predictions": "predictions",
    "predict_video": "predict", "predict_videos": "predict",
    "Chain": "postprocess",
    "extract_features": "extract",
    "InputError": "errors",
}
# The modules a user reaches for (``e2y.zoo.fetch``, ``e2y.generate.generate``,
# ``e2y.ccc.ccc``...), also imported on first use. (A function named like its
# module is not an entry point: once the module is imported, the package
# attribute is the module.)
_SUBMODULES = ("audio", "ccc", "data", "errors", "generate", "inference", "metrics", "models",
               "plots", "postprocess", "predict", "training", "zoo")

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    # The entry points import torch models; keep `import end2you_visual` light.
    if name in _ENTRY_POINTS:
        module = importlib.import_module(f".{_ENTRY_POINTS[name]}", __name__)
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'end2you_visual' has no attribute {name!r}")


def __dir__() -> list[str]:
    # What notebook completion offers: the public API and the user-facing modules.
    return sorted({*__all__, *_SUBMODULES})
