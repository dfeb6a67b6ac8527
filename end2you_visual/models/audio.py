"""Raw-waveform audio models: a 1-D CNN front end, one vector per video frame.

:class:`AudioFrontEnd` maps each frame's window of samples (the ``audio``
windows of :mod:`end2you_visual.data`) to a feature vector with a few strided
1-D convolutions and pooling, in the spirit of End2You's raw-waveform audio
models (this is an independent implementation)::

    audio    (B, T, A)             A samples per frame (640 at 16 kHz, 25 fps)
    windows  (B*T, 1, A)
    conv k=K0, stride S0 -> BN -> ReLU -> max-pool 2     (channels[0])
    conv k=9,  stride 2  -> BN -> ReLU -> max-pool 2     (channels[1])
    conv k=5,  stride 2  -> BN -> ReLU ...               (channels[2:])
    mean and max over time, concatenated -> (B*T, 2 * channels[-1])
    features (B, T, F)             F = 2 * channels[-1]

:class:`AudioModel` (``build_model(modality="audio")``) adds the LSTM/GRU and
head of :class:`~end2you_visual.models.VisualModel`.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .temporal_head import TemporalHeadModel

__all__ = ["AudioFrontEnd", "AudioModel", "DEFAULT_AUDIO_CHANNELS"]

DEFAULT_AUDIO_CHANNELS = (64, 128, 256)
_LATER_KERNELS = (9, 5)


class AudioFrontEnd(nn.Module):
    """Per-frame raw-waveform encoder: (B, T, A) float -> (B, T, F).

    Args:
        channels: output channels of the convolutions (two or more).
        first_kernel, first_stride: of the first convolution (40 and 5:
            2.5 ms kernels every 0.3 ms at 16 kHz).
    """

    def __init__(self, channels: Sequence[int] = DEFAULT_AUDIO_CHANNELS, first_kernel: int = 40,
                 first_stride: int = 5) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        layers: list[nn.Module]
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"audio channels need two or more positive counts, got {channels}")
        layers, previous = [], 1
        for i, width in enumerate(channels):
            kernel = int(first_kernel) if i == 0 else _LATER_KERNELS[min(i - 1, 1)]
            stride = int(first_stride) if i == 0 else 2
            layers += [nn.Conv1d(previous, width, kernel, stride, padding=kernel // 2, bias=False),
                       nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool1d(2, ceil_mode=True))
            previous = width
        self.net = nn.Sequential(*layers)
        self.num_features = 2 * channels[-1]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3:
            raise ValueError(f"expected audio windows (B, T, samples), got {tuple(audio.shape)}")
        b, t, samples = audio.shape
        x = self.net(audio.reshape(b * t, 1, samples).float())
        x = torch.cat([x.mean(-1), x.amax(-1)], dim=1)
        return x.unflatten(0, (b, t))


class AudioModel(TemporalHeadModel):
    """Audio only: :class:`AudioFrontEnd` -> LSTM/GRU (or none) -> linear head.

    ``forward(audio)``: audio windows (B, T, A) -> raw outputs (B, T, outputs).
    ``build_model(**model.config)`` rebuilds it.
    """

    def __init__(self, head: str = "regression", outputs: int = 2, temporal: str = "lstm",
                 hidden_size: int = 256, num_layers: int = 2,
                 label_names: Sequence[str] | None = None, dropout: float = 0.0,
                 audio_channels: Sequence[int] = DEFAULT_AUDIO_CHANNELS, audio_kernel: int = 40,
                 audio_stride: int = 5, audio_rate: int = 16000) -> None:
        super().__init__()
        self.audio = AudioFrontEnd(audio_channels, audio_kernel, audio_stride)
        self.num_features = self.audio.num_features
        self.config = {"modality": "audio", **self._build_temporal_head(
            self.num_features, head, outputs, temporal, hidden_size, num_layers,
            label_names, dropout),
            "audio_channels": [int(c) for c in audio_channels],
            "audio_kernel": int(audio_kernel), "audio_stride": int(audio_stride),
            "audio_rate": int(audio_rate)}

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Per-frame audio embeddings (B, T, F)."""
        return self.audio(audio)

    def forward(self, audio: torch.Tensor, state: Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor], None] = None,
                return_state: bool = False, return_features: bool = False
                ) -> Union[torch.Tensor, tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None, ...]]:
        """Raw outputs (B, T, outputs); ``state`` / ``return_state`` /
        ``return_features`` as VisualModel's."""
        return self._temporal_head(self.features(audio), state, return_state, return_features)
