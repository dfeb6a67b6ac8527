"""What the parts of a :class:`~end2you_visual.training.Trainer` share: the
types of a device batch, of a loss and of the run's model, and
:class:`Stateful`, what a part that carries state over a resume provides
(``docs/development.md``, "The Trainer").
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional, Protocol

import torch

__all__ = ["Batch", "LossFn", "RunModel", "Stateful"]

# A device batch: (inputs by modality, labels (B, T, L), mask (B, T), labelled (B,) or None)
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, Optional[torch.Tensor]]
# A loss f(out (B, T, L), labels (B, T, L), mask (B, T)) -> scalar tensor
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# The run's model: a VisualModel, AudioModel or AudioVisualModel (a
# TemporalHeadModel with its settings in ``config``); Any until they are typed.
RunModel = Any


class Stateful(Protocol):
    """A part of a training run whose state a resume restores.

    ``last.pt``'s ``training`` dict is flat (one key per entry, the format
    of every ``last.pt`` written so far): :meth:`state_dict` returns the
    part's own entries of it, :meth:`load_state_dict` reads them back from
    the whole dict.
    """

    def state_dict(self) -> dict[str, Any]:
        """This part's entries of the checkpoint's ``training`` dict."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore this part from a checkpoint's ``training`` dict."""
        ...
