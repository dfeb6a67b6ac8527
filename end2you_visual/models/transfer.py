"""Copy weights into a model by name and shape, and report what happened.

Used for End2You imports and for inflating 2D weights into an I3D model:
a source tensor is copied when its target has the same shape, inflated over
time when the target is the 3D version of a 2D kernel, and otherwise skipped
with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .i3d import inflate_weight

__all__ = ["TransferReport", "fits", "load_matching"]


@dataclass
class TransferReport:
    """What :func:`load_matching` did.

    Attributes:
        loaded: target keys that received a source tensor.
        inflated: the subset of ``loaded`` that was inflated 2D -> 3D.
        skipped: ``(source key, reason)`` for each source tensor not used.
        missing: target keys that received nothing (they keep their values).
    """

    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        """Plain-type form (JSON-serialisable)."""
        return {"loaded": list(self.loaded), "inflated": list(self.inflated),
                "skipped": [list(s) for s in self.skipped], "missing": list(self.missing)}

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors ({len(self.inflated)} inflated to 3D), "
                 f"skipped {len(self.skipped)}, left unchanged {len(self.missing)}"]
        lines += [f"  skipped {key}: {reason}" for key, reason in self.skipped]
        lines += [f"  unchanged {key}" for key in self.missing]
        return "\n".join(lines)


def fits(source: torch.Tensor, target: torch.Tensor) -> str:
    """'copy', 'inflate' or a reason why ``source`` cannot go into ``target``."""
    if source.shape == target.shape:
        return "copy"
    if (source.dim() == 4 and target.dim() == 5
            and source.shape[:2] == target.shape[:2] and source.shape[2:] == target.shape[3:]):
        return "inflate"
    return f"shape {tuple(source.shape)} does not fit {tuple(target.shape)}"


def load_matching(model: nn.Module, mapped: Mapping[str, tuple[str, torch.Tensor]],
                  unmapped: Iterable[tuple[str, str]] = ()) -> TransferReport:
    """Copy ``mapped`` (target key -> (source key, tensor)) into ``model``.

    Args:
        model: the module receiving the weights (its state is changed in place).
        mapped: dict target key -> (source key, tensor).
        unmapped: ``(source key, reason)`` pairs the caller could not map;
            added to the report's ``skipped``.

    Returns:
        A :class:`TransferReport`.
    """
    report = TransferReport(skipped=list(unmapped))
    own = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    for target_key, (source_key, tensor) in mapped.items():
        if target_key not in own:
            report.skipped.append((source_key, f"no {target_key} in this model"))
            continue
        target = own[target_key]
        how = fits(tensor, target)
        if how == "inflate":
            tensor = inflate_weight(tensor, target.shape[2])
            report.inflated.append(target_key)
        elif how != "copy":
            report.skipped.append((source_key, how))
            continue
        updates[target_key] = tensor.to(dtype=target.dtype)
        report.loaded.append(target_key)
    with torch.no_grad():
        for key, tensor in updates.items():
            own[key].copy_(tensor)
    report.missing = [k for k in own if k not in updates]
    return report
