"""The visual model: per-frame CNN -> recurrent layers -> linear head.

Paper model (:func:`~end2you_visual.models.build_model` defaults): ResNet-50
on 150x150 face crops, 2048 features per frame, a 2-layer LSTM over time,
and a fully connected output layer. Shapes::

    frames   (B, T, 3, H, W)  or  (B, T, H, W, 3) uint8
    CNN      (B*T, 3, H, W) -> (B*T, F)         2D ResNet, frame by frame
             (B, 3, T, H, W) -> (B, F, T)       I3D ResNet, whole clip
    features (B, T, F)                          F = 512 / 2048 / 64 (tiny)
    LSTM/GRU (B, T, F) -> (B, T, hidden_size)   skipped when temporal="none"
    head     (B, T, outputs)                    raw: logits for classification
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..choices import ARCHS, I3D_PREFIX
from .i3d import inflate_resnet
from .resnet import STEMS, build_resnet, num_features
from .temporal_head import HEADS, TEMPORALS, TemporalHeadModel, _check_head, default_label_names
from .transfer import TransferReport, load_matching

__all__ = ["VisualModel", "ARCHS", "HEADS", "STEMS", "TEMPORALS", "default_label_names"]

def _triple(values: Sequence[float], what: str) -> List[float]:
    values = [float(v) for v in values]
    if len(values) != 3:
        raise ValueError(f"{what} needs 3 values (R, G, B), got {values}")
    return values


def _is_channels_last(x: torch.Tensor) -> bool:
    """(B, T, H, W, 3) frames: uint8 with 3 last, or 3 last and not 3 at dim 2."""
    return x.shape[-1] == 3 and (x.dtype == torch.uint8 or x.shape[2] != 3)


class VisualModel(TemporalHeadModel):
    """CNN feature extractor + optional LSTM/GRU + linear head.

    Build it with :func:`end2you_visual.models.build_model` (its arguments are
    this class's, documented there); ``build_model(**model.config)`` makes an
    identical (untrained) model.

    Input frames, always 5D with batch B and time T:

    * ``(B, T, 3, H, W)`` float in [0, 1] (as ``torchvision`` ``ToTensor``
      gives) or uint8 in 0..255;
    * ``(B, T, H, W, 3)`` channels-last frames as the HDF5 reader returns
      them. Recognised when the last dimension is 3 and the dtype is uint8
      (or, for float input, when dimension 2 is not 3). Channels-last input is
      permuted without a copy, so the CNN sees a ``channels_last`` tensor.

    uint8 is scaled by 1/255; then the per-channel ``mean``/``std`` stored in
    the model (buffers, also in ``config``) are applied, so callers never
    normalise.

    Attributes:
        extractor: the CNN (2D: (N, 3, H, W) -> (N, F); I3D: (B, 3, T, H, W) -> (B, F, T)).
        temporal: ``nn.LSTM``/``nn.GRU`` (batch_first) or ``None``.
        head: ``nn.Linear``.
        num_features: F, CNN features per frame.
        config: plain dict of the ``build_model`` arguments.
    """

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor
    luma: torch.Tensor

    def __init__(self, arch: str = "resnet50", head: str = "regression", outputs: int = 2,
                 temporal: str = "lstm", hidden_size: int = 256, num_layers: int = 2,
                 label_names: Optional[Sequence[str]] = None,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 input_size: int = 150, dropout: float = 0.0, grey: bool = False,
                 stem: str = "imagenet") -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {sorted(STEMS)}")
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
        if temporal not in TEMPORALS:
            raise ValueError(f"unknown temporal {temporal!r}; choose one of {TEMPORALS}")
        names = _check_head(head, outputs, label_names)
        mean, std = _triple(mean, "mean"), _triple(std, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.is_3d = arch.startswith(I3D_PREFIX)
        arch2d = arch[len(I3D_PREFIX):] if self.is_3d else arch
        cnn = build_resnet(arch2d, stem)
        self.extractor = inflate_resnet(cnn) if self.is_3d else cnn
        self.num_features = num_features(arch2d)
        head_config = self._build_temporal_head(self.num_features, head, outputs, temporal,
                                                hidden_size, num_layers, names, dropout)
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
        # ITU-R BT.601 luma, as PIL's convert("L") computes it.
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1),
                             persistent=False)
        self.grey = bool(grey)
        self.config = {
            "arch": arch, **{k: head_config[k] for k in ("head", "outputs", "temporal",
                                                         "hidden_size", "num_layers",
                                                         "label_names")},
            "mean": mean, "std": std, "input_size": int(input_size),
            "dropout": head_config["dropout"], "grey": self.grey, "stem": stem,
        }

    def to(self, *args: Any, **kwargs: Any) -> "VisualModel":
        """``nn.Module.to``; ``memory_format=torch.channels_last`` also works for I3D.

        An I3D model's kernels are 5D, so channels-last there means
        ``torch.channels_last_3d``; the two are swapped to fit the model.
        """
        wanted = kwargs.get("memory_format")
        if wanted in (torch.channels_last, torch.channels_last_3d):
            kwargs["memory_format"] = torch.channels_last_3d if self.is_3d else torch.channels_last
        return super().to(*args, **kwargs)

    def _normalise(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """5D frames -> (B*T, 3, H, W) normalised float (layout kept), plus B, T."""
        if x.dim() != 5:
            raise ValueError("expected frames (B, T, 3, H, W) or (B, T, H, W, 3), "
                             f"got shape {tuple(x.shape)}")
        if _is_channels_last(x):
            x = x.permute(0, 1, 4, 2, 3)  # no copy: a channels_last view
        if x.shape[2] != 3:
            raise ValueError(f"expected 3 colour channels, got frames of shape {tuple(x.shape)}")
        b, t = x.shape[:2]
        is_uint8 = x.dtype == torch.uint8
        x = x.flatten(0, 1).to(dtype=self.mean.dtype)
        if is_uint8:
            x = x / 255.0
        if self.grey:  # a model trained on grey images sees colour video as grey
            x = (x * self.luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std, b, t

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame CNN embeddings (B, T, F) of frames ``x`` (see class doc)."""
        x, b, t = self._normalise(x)
        if self.is_3d:
            clip = x.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, H, W)
            return self.extractor(clip).transpose(1, 2)  # (B, T, F)
        return self.extractor(x).unflatten(0, (b, t))  # (B, T, F)

    def forward(self, x: torch.Tensor, state: Any = None, return_state: bool = False,
                return_features: bool = False) -> Any:
        """Raw outputs (B, T, outputs) of frames ``x``.

        Args:
            x: frames, see the class doc.
            state: recurrent state returned by an earlier call with
                ``return_state=True`` (LSTM: ``(h, c)``, GRU: ``h``, each
                (num_layers, B, hidden_size)); continues a long sequence
                window after window. ``None``: start from zeros. With a 2D
                CNN, windows with carried state give the same outputs as one
                pass over the whole sequence; an I3D CNN also looks one frame
                across each window edge, so there it is close, not equal.
            return_state: also return the new state (``None`` when
                ``temporal="none"``). Detach it before carrying it across
                optimiser steps.
            return_features: also return the per-frame CNN embeddings (B, T,
                F) the recurrent layers saw (:meth:`features`; distillation's
                feature matching), computed once.

        Returns:
            ``out``, ``(out, state)``, ``(out, features)`` or ``(out, state,
            features)``; ``out`` holds logits for classification heads (see
            :meth:`activate`).
        """
        return self._temporal_head(self.features(x), state, return_state, return_features)

    def with_stem(self, stem: str) -> "VisualModel":
        """A new model like this one with the CNN stem ``stem`` (see
        :func:`end2you_visual.models.build_model`), holding this model's
        weights wherever their shapes still fit: all of them between
        ``imagenet`` and ``nopool`` (only the max-pool differs), all but the
        stem convolution otherwise (a new random one). This one is left
        unchanged."""
        model = VisualModel(**{**self.config, "stem": stem})
        fresh = model.state_dict()
        state = {key: value if value.shape == fresh[key].shape else fresh[key]
                 for key, value in self.state_dict().items()}
        model.load_state_dict(state)
        return model.to(self.head.weight.device).train(self.training)

    def inflate_from_2d(self, source: Union[nn.Module, Mapping[str, torch.Tensor]]
                        ) -> TransferReport:
        """Load 2D weights into this I3D model, inflating kernels over time.

        Args:
            source: a 2D :class:`VisualModel`, its ``state_dict``, or a bare
                torchvision ResNet ``state_dict`` (``conv1.weight``...,
                ``fc.*`` ignored).

        Returns:
            A :class:`~end2you_visual.models.transfer.TransferReport`.
            Recurrent and head weights are copied too where shapes match.
        """
        state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
        bare = not any(k.startswith("extractor.") for k in state)
        mapped, unmapped = {}, []
        for key, tensor in state.items():
            if bare and key.startswith("fc."):
                unmapped.append((key, "classifier of a bare ResNet"))
                continue
            mapped["extractor." + key if bare else key] = (key, tensor)
        return load_matching(self, mapped, unmapped)
