"""Inflated 3D ResNets (I3D): a 2D ResNet whose kernels are stretched over time.

:func:`inflate_resnet` turns a 2D ResNet from :mod:`.resnet` into a
:class:`ResNet3d` with the *same parameter names*, replacing

* every ``Conv2d`` (kh x kw) by a :class:`TemporalConv3d` (kt x kh x kw) whose
  kernel is the 2D kernel repeated ``kt`` times over time and divided by
  ``kt`` (:func:`inflate_weight`). ``kt = 3`` for the stem ``conv1`` and for
  the first conv of every residual block (3x3x3 in a BasicBlock, 3x1x1 in a
  Bottleneck), ``kt = 1`` elsewhere;
* ``BatchNorm2d`` by ``BatchNorm3d`` (same statistics), ``MaxPool2d`` 3x3/2
  by ``MaxPool3d`` 1x3x3/(1,2,2), and the global pool by a spatial-only pool.

Time is never strided and is padded by repeating the edge frames, so T is
kept and a clip of T identical frames gives, frame for frame, exactly the
2D network's features: the inflated network starts where the 2D one is.

Shapes: (B, 3, T, H, W) -> (B, F, T).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TemporalConv3d", "ResNet3d", "inflate_weight", "inflate_resnet"]

TEMPORAL_KERNEL = 3


def inflate_weight(weight2d: torch.Tensor, kt: int) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, kt, kh, kw): repeated over time, divided by ``kt``."""
    return weight2d.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt


class TemporalConv3d(nn.Conv3d):
    """A Conv3d that pads time by repeating edge frames (space: zero padding).

    ``padding`` holds only the spatial padding (its time entry is 0); the
    temporal padding ``kt // 2`` on each side is applied in :meth:`forward`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_t = self.kernel_size[0] // 2
        if pad_t:
            x = F.pad(x, (0, 0, 0, 0, pad_t, pad_t), mode="replicate")
        return super().forward(x)


def _inflate_conv(conv: nn.Conv2d, kt: int) -> TemporalConv3d:
    conv3d = TemporalConv3d(
        conv.in_channels, conv.out_channels, (kt, conv.kernel_size[0], conv.kernel_size[1]),
        stride=(1, conv.stride[0], conv.stride[1]), padding=(0, *conv.padding),
        dilation=(1, conv.dilation[0], conv.dilation[1]), groups=conv.groups, bias=conv.bias is not None,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        conv3d.weight.copy_(inflate_weight(conv.weight, kt))
        if conv.bias is not None and conv3d.bias is not None:  # both or neither
            conv3d.bias.copy_(conv.bias)
    return conv3d


def _inflate_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    bn3d = nn.BatchNorm3d(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                          affine=bn.affine, track_running_stats=bn.track_running_stats)
    bn3d.load_state_dict(bn.state_dict())
    return bn3d.to(device=bn.weight.device if bn.affine else None)


def _inflate_pool(pool: nn.MaxPool2d) -> nn.MaxPool3d:
    def triple(v: Union[int, Sequence[int]]) -> tuple[int, ...]:
        return (v, v) if isinstance(v, int) else tuple(v)

    return nn.MaxPool3d((1, *triple(pool.kernel_size)), stride=(1, *triple(pool.stride)),
                        padding=(0, *triple(pool.padding)))


def _temporal_kt(qualname: str) -> int:
    # stem conv1 and the first conv of each residual block: layerN.M.conv1
    parts = qualname.split(".")
    first_in_block = len(parts) == 3 and parts[0].startswith("layer") and parts[2] == "conv1"
    if qualname == "conv1" or first_in_block:
        return TEMPORAL_KERNEL
    return 1


def _inflate_children(module: nn.Module, prefix: str = "") -> None:
    for name, child in module.named_children():
        qualname = f"{prefix}{name}"
        if isinstance(child, nn.Conv2d):
            setattr(module, name, _inflate_conv(child, _temporal_kt(qualname)))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _inflate_bn(child))
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, _inflate_pool(child))
        else:
            _inflate_children(child, qualname + ".")


class ResNet3d(nn.Module):
    """The 3D stages of an inflated ResNet: (B, 3, T, H, W) -> (B, F, T).

    Built by :func:`inflate_resnet`; holds ``conv1, bn1, relu, maxpool,
    layer1..layer4`` under the 2D names (torchvision's residual blocks work on
    5D tensors unchanged).
    """

    conv1: nn.Module
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module

    def __init__(self, resnet2d: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet2d, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, C, T, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, F, T, h, w)
        return x.mean(dim=(3, 4))  # (B, F, T)


def inflate_resnet(resnet2d: nn.Module) -> ResNet3d:
    """A :class:`ResNet3d` inflated from a 2D torchvision-style ResNet (consumed)."""
    _inflate_children(resnet2d)
    return ResNet3d(resnet2d)
