"""Model-level audio-visual fusion (as in Schoneveld et al. 2021, DeepFEVER).

Per frame, the visual CNN embedding (the ResNet of
:class:`~end2you_visual.models.VisualModel`, trained or frozen) and the audio
embedding (:class:`~end2you_visual.models.audio.AudioFrontEnd`) are each
optionally projected by a linear layer + ReLU, concatenated, and fed to the
2-layer LSTM/GRU and the head::

    frames (B, T, ...) -> visual.features -> (B, T, Fv) [-> Linear+ReLU -> (B, T, P)]
    audio  (B, T, A)   -> audio           -> (B, T, Fa) [-> Linear+ReLU -> (B, T, P)]
    concat (B, T, Fv + Fa  or  2P) -> LSTM/GRU -> head (B, T, outputs)

State-dict names: ``visual.extractor.*`` (the ResNet, named as a
VisualModel's ``extractor.*``), ``audio.*``, ``visual_proj.*`` /
``audio_proj.*`` (with ``projection``), ``temporal.*``, ``head.*``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence, Union

import torch
from torch import nn

from .audio import DEFAULT_AUDIO_CHANNELS, AudioFrontEnd
from .temporal_head import TemporalHeadModel
from .transfer import TransferReport, load_matching
from .visual import VisualModel

__all__ = ["AudioVisualModel"]

if TYPE_CHECKING:
    from typing_extensions import Self


class AudioVisualModel(TemporalHeadModel):
    """Visual + audio per-frame embeddings, concatenated -> LSTM/GRU -> head.

    Args:
        arch, mean, std, grey, stem, input_size: the visual branch, as for
            :func:`~end2you_visual.models.build_model`.
        head, outputs, temporal, hidden_size, num_layers, label_names,
            dropout: the recurrent layers and head, as for VisualModel.
        projection: size P of the linear + ReLU projection of each modality
            before concatenation; 0: none (concatenate the raw embeddings).
        freeze_visual: keep the visual CNN's weights and batch-norm
            statistics fixed (no gradients, always in eval mode).
        audio_channels, audio_kernel, audio_stride: the audio front end.
        audio_rate: the sample rate the model expects (informational).

    ``forward(frames, audio)``: frames as VisualModel takes them, audio
    windows (B, T, A); returns raw outputs (B, T, outputs).
    """

    def __init__(self, arch: str = "resnet50", head: str = "regression", outputs: int = 2,
                 temporal: str = "lstm", hidden_size: int = 256, num_layers: int = 2,
                 label_names: Sequence[str] | None = None,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 input_size: int = 150, dropout: float = 0.0, grey: bool = False,
                 stem: str = "imagenet", projection: int = 0, freeze_visual: bool = False,
                 audio_channels: Sequence[int] = DEFAULT_AUDIO_CHANNELS, audio_kernel: int = 40,
                 audio_stride: int = 5, audio_rate: int = 16000) -> None:
        super().__init__()
        self.visual = VisualModel(arch=arch, temporal="none", outputs=1, mean=mean, std=std,
                                  input_size=input_size, grey=grey, stem=stem)
        self.visual.head = nn.Identity()  # only its features are used
        self.audio = AudioFrontEnd(audio_channels, audio_kernel, audio_stride)
        projection = int(projection)
        self.visual_proj: nn.Module | None
        self.audio_proj: nn.Module | None
        if projection < 0:
            raise ValueError(f"projection must be 0 (none) or positive, got {projection}")
        if projection:
            self.visual_proj = nn.Sequential(nn.Linear(self.visual.num_features, projection),
                                             nn.ReLU(inplace=True))
            self.audio_proj = nn.Sequential(nn.Linear(self.audio.num_features, projection),
                                            nn.ReLU(inplace=True))
            fused = 2 * projection
        else:
            self.visual_proj = self.audio_proj = None
            fused = self.visual.num_features + self.audio.num_features
        self.num_features = fused
        self.freeze_visual = bool(freeze_visual)
        if self.freeze_visual:
            self.visual.requires_grad_(False)
        visual_config = self.visual.config
        self.config = {
            "modality": "audiovisual", "arch": arch,
            **self._build_temporal_head(fused, head, outputs, temporal, hidden_size, num_layers,
                                        label_names, dropout),
            "mean": visual_config["mean"], "std": visual_config["std"],
            "input_size": int(input_size), "grey": bool(grey), "stem": stem,
            "projection": projection, "freeze_visual": self.freeze_visual,
            "audio_channels": [int(c) for c in audio_channels],
            "audio_kernel": int(audio_kernel), "audio_stride": int(audio_stride),
            "audio_rate": int(audio_rate),
        }

    def train(self, mode: bool = True) -> Self:
        """As ``nn.Module.train``; a frozen visual branch stays in eval mode."""
        super().train(mode)
        if self.freeze_visual:
            self.visual.eval()
        return self

    def visual_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame visual CNN embeddings (B, T, Fv), before any projection."""
        if self.freeze_visual:
            with torch.no_grad():
                return self.visual.features(frames)
        return self.visual.features(frames)

    def features(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Fused per-frame features (B, T, F): the recurrent layers' input."""
        v = self.visual_features(frames)
        a = self.audio(audio.to(v.dtype))
        if a.shape[:2] != v.shape[:2]:
            raise ValueError(f"frames give {tuple(v.shape[:2])} (B, T) but audio "
                             f"{tuple(a.shape[:2])}")
        if self.visual_proj is not None and self.audio_proj is not None:  # both or neither
            v, a = self.visual_proj(v), self.audio_proj(a)
        return torch.cat([v, a], dim=-1)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, state: Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None] = None,
                return_state: bool = False, return_features: bool = False
                ) -> Union[torch.Tensor, tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None, ...]]:
        """Raw outputs (B, T, outputs); ``state`` / ``return_state`` /
        ``return_features`` (the fused features) as VisualModel's."""
        return self._temporal_head(self.features(frames, audio), state, return_state,
                                   return_features)

    def init_visual(self, source: nn.Module | Mapping[str, torch.Tensor]) -> TransferReport:
        """Copy a visual model's CNN into the visual branch.

        Args:
            source: a :class:`VisualModel` (e.g. from
                :func:`end2you_visual.zoo.load_pretrained`) or its state dict.

        Returns:
            A :class:`~end2you_visual.models.transfer.TransferReport`; only
            ``extractor.*`` tensors are used (its recurrent layers and head
            were trained on other inputs).
        """
        state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
        mapped = {"visual." + k: (k, v) for k, v in state.items() if k.startswith("extractor.")}
        unmapped = [(k, "not the CNN") for k in state if not k.startswith("extractor.")]
        report = load_matching(self, mapped, unmapped)
        report.missing = [k for k in report.missing if k.startswith("visual.")]
        return report
