"""Pretraining augmentation on the device, batched: resize, random crop, flip, colour.

The paper resizes 150x150 crops to 170x170, takes a random 150x150 crop and
changes brightness and saturation at random. Here the crop is the data's
frame size S and the resize ``round(S * 170 / 150)`` (150 -> 170, 48 -> 54),
unless given.

Each *window* (sequence) draws one crop offset, one brightness and one
saturation factor (and, when ``hflip > 0``, whether it is mirrored left to
right), shared by all its frames, so the augmentation does not flicker over
time. The paper does not mirror (``hflip = 0``, the default); the FER2013
recipes do, with probability 0.5. Factors are uniform in ``[1 - x, 1 + x]``;
brightness multiplies the pixels, saturation blends each pixel with its grey value
(0.299 R + 0.587 G + 0.114 B), each followed by clipping to [0, 1], as
torchvision's ``adjust_brightness`` / ``adjust_saturation`` do.

The random numbers come from the augmenter's own CPU generator, seeded, so a
resumed run continues the same draws (its state is in the checkpoint).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Augmenter", "default_resize"]

GREY = (0.299, 0.587, 0.114)


def default_resize(size: int) -> int:
    """The paper's 170 for 150, scaled: ``round(size * 170 / 150)``."""
    return int(round(size * 170 / 150))


class Augmenter:
    """Callable: uint8 frames (B, T, S, S, 3) on the device -> float (B, T, 3, S, S).

    The output is in [0, 1] (the model scales uint8 by 1/255 and float as is,
    so validation on raw uint8 sees the same range) and laid out channels-last
    in memory.
    """

    def __init__(self, size: int, resize: int | None = None, brightness: float = 0.2,
                 saturation: float = 0.2, seed: int = 0, hflip: float = 0.0) -> None:
        self.size = int(size)
        self.resize = default_resize(size) if resize is None else int(resize)
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least the crop size ({self.size})")
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.hflip = float(hflip)
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
        self.generator = torch.Generator().manual_seed(int(seed))
        self._grey_weights: dict[torch.device, torch.Tensor] = {}

    def _grey(self, device: torch.device) -> torch.Tensor:
        if device not in self._grey_weights:
            self._grey_weights[device] = torch.tensor(GREY, device=device)
        return self._grey_weights[device]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, s, _, c = frames.shape
        r, out = self.resize, self.size
        # A fifth number only when mirroring, so runs without it draw as before.
        u = torch.rand(b, 5 if self.hflip > 0 else 4, generator=self.generator)
        if frames.device.type == "cuda":
            u = u.pin_memory()  # a pageable copy would wait for the GPU to finish
        u = u.to(frames.device, non_blocking=True)
        x = frames.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0)   # (N, 3, S, S)
        if r != s:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
        x = x.permute(0, 2, 3, 1).reshape(b, t, r * r, c)                  # channels last
        span = r - out + 1
        oy = (u[:, 0] * span).long().clamp(max=span - 1)
        ox = (u[:, 1] * span).long().clamp(max=span - 1)
        steps = torch.arange(out, device=frames.device)
        rows = (oy[:, None] + steps) * r                                     # (B, S)
        cols = steps.expand(b, out)
        if self.hflip > 0:
            mirrored = (u[:, 4] < self.hflip)[:, None]
            cols = torch.where(mirrored, out - 1 - steps, steps)             # (B, S)
        index = (rows[:, :, None] + (ox[:, None] + cols)[:, None, :]).reshape(b, 1, out * out, 1)
        x = x.gather(2, index.expand(b, t, out * out, c)).view(b, t, out, out, c)
        bright = 1.0 + (2.0 * u[:, 2] - 1.0) * self.brightness
        sat = 1.0 + (2.0 * u[:, 3] - 1.0) * self.saturation
        x = (x * bright.view(b, 1, 1, 1, 1)).clamp_(0.0, 1.0)
        grey = (x * self._grey(x.device)).sum(dim=-1, keepdim=True)
        x = (grey + sat.view(b, 1, 1, 1, 1) * (x - grey)).clamp_(0.0, 1.0)
        return x.permute(0, 1, 4, 2, 3)
