"""Import weights from End2You (github end2you/end2you) visual checkpoints.

End2You's trainer saves ``{"epoch", "state_dict", "optim_dict",
"validation_score", "metric_name", "loss_name"}`` with ``torch.save``. For
its visual model the ``state_dict`` keys are (optionally behind a
``module.`` prefix from ``nn.DataParallel``)::

    visual_model.model.N.*   a torchvision ResNet without its classifier, as
                             an nn.Sequential: 0 conv1, 1 bn1, 2 relu,
                             3 maxpool, 4..7 layer1..layer4, 8 avgpool
    rnn.rnn.*                nn.LSTM / nn.GRU (End2You's visual default:
                             GRU, 256 hidden, 2 layers, batch_first)
    linear.*                 the output layer

These map to this package's ``extractor.*``, ``temporal.*`` and ``head.*``.
End2You feeds frames in [0, 1] without normalisation (ImageNet mean/std
only when it started from ImageNet weights), usually 96x96 crops.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import torch

from ..errors import InputError
from .checkpoint import safe_torch_load, unwrap_model
from .transfer import TransferReport, fits, load_matching

if TYPE_CHECKING:
    from .visual import VisualModel

__all__ = ["import_end2you", "end2you_config", "end2you_state_dict"]

# A checkpoint file, the dict End2You saves, or its state_dict.
PathOrState = Union[str, "os.PathLike[str]", Mapping[str, Any]]

CNN_PREFIX = "visual_model.model."
RNN_PREFIX = "rnn.rnn."
HEAD_PREFIX = "linear."
# End2You's nn.Sequential index -> torchvision ResNet child name
SEQUENTIAL_NAMES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                    "7": "layer4"}
# (bottleneck?, blocks per stage) -> arch
KNOWN_ARCHS: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
}


def end2you_state_dict(path_or_state: PathOrState) -> dict[str, torch.Tensor]:
    """The model ``state_dict`` of an End2You checkpoint, without ``module.`` prefixes.

    Args:
        path_or_state: a checkpoint file, the dict End2You saves, or its
            ``state_dict`` itself.
    """
    path = path_or_state if isinstance(path_or_state, (str, Path)) else None
    ckpt = safe_torch_load(path) if path is not None else path_or_state
    if not isinstance(ckpt, dict):
        raise InputError(path, f"expected an End2You checkpoint dict, got {type(ckpt).__name__}")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        key = str(key)
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = tensor
    if not any(k.startswith(CNN_PREFIX) for k in out):
        raise InputError(path, f"no '{CNN_PREFIX}*' weights: "
                               "not an End2You visual model checkpoint")
    return out


def _rnn_shape(state: Mapping[str, torch.Tensor]) -> tuple[str | None, int, int, int] | None:
    """(kind, hidden_size, num_layers, input_size) of the End2You RNN, or None."""
    hh = state.get(RNN_PREFIX + "weight_hh_l0")
    if hh is None or hh.dim() != 2:
        return None
    hidden = hh.shape[1]
    gates = hh.shape[0] // hidden
    kind = {4: "lstm", 3: "gru"}.get(gates)
    layers = sum(1 for k in state if k.startswith(RNN_PREFIX + "weight_ih_l") and k[-1].isdigit())
    return kind, hidden, layers, state[RNN_PREFIX + "weight_ih_l0"].shape[1]


def end2you_config(path_or_state: PathOrState, head: str = "regression",
                   label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`build_model` arguments that fit an End2You visual checkpoint.

    Infers ``arch`` (resnet18/34/50), ``temporal``, ``hidden_size``,
    ``num_layers`` and ``outputs``; ``mean``/``std`` are (0, 0, 0)/(1, 1, 1)
    and ``input_size`` 96, End2You's defaults. ``head`` cannot be inferred.
    """
    state = end2you_state_dict(path_or_state)
    bottleneck = any(k.startswith(CNN_PREFIX + "4.0.conv3.") for k in state)
    blocks = tuple(len({k.split(".")[3] for k in state if k.startswith(f"{CNN_PREFIX}{i}.")})
                   for i in (4, 5, 6, 7))
    arch = KNOWN_ARCHS.get((bottleneck, blocks))
    if arch is None:
        raise ValueError(f"End2You CNN with {'bottleneck' if bottleneck else 'basic'} blocks "
                         f"{blocks} is not one of {sorted(KNOWN_ARCHS.values())}")
    rnn = _rnn_shape(state)
    head_w = state.get(HEAD_PREFIX + "weight")
    config: dict[str, Any] = {"arch": arch, "head": head, "temporal": "none", "mean": [0.0, 0.0, 0.0],
              "std": [1.0, 1.0, 1.0], "input_size": 96, "label_names": label_names}
    if rnn is not None and rnn[0] is not None:
        config.update(temporal=rnn[0], hidden_size=int(rnn[1]), num_layers=int(rnn[2]))
    if head_w is not None:
        config["outputs"] = int(head_w.shape[0])
    return config


def _map_keys(state: Mapping[str, torch.Tensor], model: VisualModel
              ) -> tuple[dict[str, tuple[str, torch.Tensor]], list[tuple[str, str]]]:
    """End2You key -> our key; returns (mapped, unmapped with reasons)."""
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    unmapped: list[tuple[str, str]] = []
    rnn = _rnn_shape(state)
    ours = None if model.temporal is None else model.config["temporal"]
    for key, tensor in state.items():
        if key.startswith(CNN_PREFIX):
            index, _, rest = key[len(CNN_PREFIX):].partition(".")
            if index in SEQUENTIAL_NAMES:
                mapped[f"extractor.{SEQUENTIAL_NAMES[index]}.{rest}"] = (key, tensor)
            else:
                unmapped.append((key, f"no weights expected at End2You CNN index {index}"))
        elif key.startswith(RNN_PREFIX):
            if ours is None:
                unmapped.append((key, "this model has no recurrent layers (temporal='none')"))
            elif rnn is None or rnn[0] != ours:
                theirs = rnn[0] if rnn else "unknown"
                unmapped.append((key, f"End2You recurrent layers are {theirs}, "
                                      f"this model's are {ours}"))
            else:
                mapped["temporal." + key[len(RNN_PREFIX):]] = (key, tensor)
        elif key.startswith(HEAD_PREFIX):
            mapped["head." + key[len(HEAD_PREFIX):]] = (key, tensor)
        else:
            unmapped.append((key, "not part of an End2You visual model"))
    return mapped, unmapped


def import_end2you(path_or_state: PathOrState, model: VisualModel) -> TransferReport:
    """Load an End2You visual checkpoint into ``model`` where it fits.

    The CNN is loaded (2D kernels are inflated for an I3D ``model``); the
    recurrent layers and the head where kind and shapes match. Nothing is
    loaded unless the checkpoint's CNN fills ``model``'s exactly.

    Args:
        path_or_state: checkpoint file, End2You's saved dict, or its ``state_dict``.
        model: a :class:`VisualModel`, changed in place.

    Returns:
        A :class:`~end2you_visual.models.transfer.TransferReport`: ``loaded``
        (our keys), ``skipped`` (End2You key, reason), ``missing`` (our keys
        left as they were).

    Raises:
        InputError: the file is unreadable or unsafe, is not an End2You visual
            checkpoint, or its CNN does not fit ``model``'s (other arch).
    """
    path = path_or_state if isinstance(path_or_state, (str, Path)) else None
    state = end2you_state_dict(path_or_state)
    model = unwrap_model(model)
    mapped, unmapped = _map_keys(state, model)
    problems = _cnn_problems(mapped, model.state_dict())
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        shown = "; ".join(problems[:3]) + more
        raise InputError(path, f"the End2You CNN does not fit this model's {model.config['arch']} "
                               f"(the checkpoint looks like {_guess_arch(state)}): {shown}")
    return load_matching(model, mapped, unmapped)


def _cnn_problems(mapped: Mapping[str, tuple[str, torch.Tensor]],
                  own: Mapping[str, torch.Tensor]) -> list[str]:
    """Why the mapped End2You CNN cannot fill ``own``'s extractor exactly (empty: it can)."""
    problems = []
    for target, (source, tensor) in mapped.items():
        if not target.startswith("extractor."):
            continue
        if target not in own:
            problems.append(f"{source} has no place in this model")
            continue
        how = fits(tensor, own[target])
        if how not in ("copy", "inflate"):
            problems.append(f"{source}: {how}")
    problems += [f"{k} is not in the checkpoint" for k in own
                 if k.startswith("extractor.") and k not in mapped]
    return problems


def _guess_arch(state: Mapping[str, torch.Tensor]) -> str:
    try:
        return end2you_config(state)["arch"]
    except (ValueError, InputError):
        return "an unsupported architecture"
