"""The recurrent layers and output head shared by the visual, audio and audiovisual models.

:class:`TemporalHeadModel` is a base class: a subclass computes per-frame
features (B, T, F) and this class runs dropout, the LSTM/GRU (or none) and
the linear head over them (submodules ``dropout``, ``temporal``, ``head``),
and gives ``activate``, ``replace_head``, ``set_label_names``,
``label_names`` and ``head_kind``. ``HEADS``, ``TEMPORALS`` and
``default_label_names`` live here (re-exported by ``models.visual``).
"""
from __future__ import annotations

import operator
from typing import Any, Dict, Iterable, List, Optional, Tuple, TypeVar, Union, cast

import torch
from torch import nn

from ..choices import HEADS, TEMPORALS

__all__ = ["TemporalHeadModel", "HEADS", "TEMPORALS", "default_label_names"]

# A recurrent layer's state: an LSTM's (h, c) or a GRU's h.
_State = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
_Model = TypeVar("_Model", bound="TemporalHeadModel")


def default_label_names(outputs: int) -> List[str]:
    """``["output_0", "output_1", ...]``: names used when none are given."""
    return [f"output_{i}" for i in range(outputs)]


def _check_head(head: str, outputs: Any, label_names: Optional[Iterable[Any]]) -> List[str]:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    try:
        count = operator.index(outputs)
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"outputs must be a positive int, got {outputs!r}")
    outputs = count
    if head == "multiclass" and outputs < 2:
        raise ValueError("a multiclass head needs at least 2 outputs")
    names = default_label_names(outputs) if label_names is None else [str(n) for n in label_names]
    if len(names) != outputs:
        raise ValueError(f"{len(names)} label names {names} for {outputs} outputs")
    return names


class TemporalHeadModel(nn.Module):
    """Base: ``dropout -> LSTM/GRU (or none) -> dropout -> Linear`` over features."""

    #: The model's ``build_model`` arguments (each subclass's ``__init__`` sets it).
    config: Dict[str, Any]
    temporal: Optional[nn.RNNBase]
    #: An nn.Linear (an audiovisual model's visual branch holds an nn.Identity).
    head: nn.Module

    def _build_temporal_head(self, in_features: int, head: str, outputs: int, temporal: str,
                             hidden_size: int, num_layers: int,
                             label_names: Optional[Iterable[Any]],
                             dropout: float) -> Dict[str, Any]:
        if temporal not in TEMPORALS:
            raise ValueError(f"unknown temporal {temporal!r}; choose one of {TEMPORALS}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
        names = _check_head(head, outputs, label_names)
        self.dropout = nn.Dropout(float(dropout))
        if temporal == "none":
            self.temporal, head_in = None, int(in_features)
        else:
            rnn = nn.LSTM if temporal == "lstm" else nn.GRU
            self.temporal = rnn(int(in_features), int(hidden_size), int(num_layers),
                                batch_first=True,
                                dropout=float(dropout) if int(num_layers) > 1 else 0.0)
            head_in = int(hidden_size)
        self.head = nn.Linear(head_in, int(outputs))
        return {"head": head, "outputs": int(outputs), "temporal": temporal,
                "hidden_size": int(hidden_size), "num_layers": int(num_layers),
                "label_names": names, "dropout": float(dropout)}

    def _temporal_head(self, features: torch.Tensor, state: Optional[_State] = None,
                       return_state: bool = False, return_features: bool = False
                       ) -> Union[torch.Tensor, Tuple[Union[torch.Tensor, _State, None], ...]]:
        h = self.dropout(features)
        if self.temporal is not None:
            h, state = self.temporal(h, state)
            h = self.dropout(h)
        else:
            state = None
        out = self.head(h)
        extra = (state,) * return_state + (features,) * return_features
        return (out, *extra) if extra else out

    @property
    def label_names(self) -> List[str]:
        """Names of the outputs, in order."""
        return list(self.config["label_names"])

    @property
    def head_kind(self) -> str:
        """``"regression"``, ``"multilabel"`` or ``"multiclass"``."""
        return self.config["head"]

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs -> predictions: sigmoid (multilabel), softmax (multiclass) or as is."""
        if self.head_kind == "multilabel":
            return torch.sigmoid(out)
        if self.head_kind == "multiclass":
            return torch.softmax(out, dim=-1)
        return out

    def replace_head(self: _Model, head: Optional[str] = None, outputs: Optional[int] = None,
                     label_names: Optional[Iterable[Any]] = None) -> _Model:
        """A new, randomly initialised head; the feature and recurrent weights stay.

        Args:
            head: head kind (default: keep).
            outputs: number of outputs (default: keep).
            label_names: output names (default: keep when ``outputs`` is
                unchanged, else ``output_i``).

        Returns:
            ``self``, for chaining.
        """
        head = self.head_kind if head is None else head
        outputs = self.config["outputs"] if outputs is None else int(outputs)
        if label_names is None and outputs == self.config["outputs"]:
            label_names = self.label_names
        names = _check_head(head, outputs, label_names)
        old = cast(nn.Linear, self.head)
        self.head = nn.Linear(old.in_features, outputs).to(device=old.weight.device,
                                                           dtype=old.weight.dtype)
        self.config.update(head=head, outputs=outputs, label_names=names)
        return self

    def set_label_names(self: _Model, label_names: Iterable[Any]) -> _Model:
        """Rename the outputs (one name per output); the weights stay."""
        self.config["label_names"] = _check_head(self.head_kind, self.config["outputs"],
                                                 label_names)
        return self
