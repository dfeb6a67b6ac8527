"""2D ResNet feature extractors: one image in, one feature vector out.

The real architectures come from torchvision's constructors
(``torchvision.models.resnet18/34/50(weights=None)``) with the classifier
replaced by ``nn.Identity``, so their parameter names are torchvision's
(``conv1.weight``, ``layer1.0.conv1.weight``, ...) and an ImageNet
``state_dict`` (minus ``fc.*``) loads into them as is. ``resnet18_half`` is
ResNet-18 with half the maps (32/64/128/256, 256 features, 2.8 M
parameters, about 4x faster on a CPU): a fast student for CPU `predict`.
``resnet_tiny`` is the same network with 8/16/32/64 maps and one block per
stage, for tests.

Shapes (ResNet-50, 150x150 input)::

    (N, 3, 150, 150) conv1 7x7/2  -> (N, 64, 75, 75)
                     maxpool 3x3/2 -> (N, 64, 38, 38)
                     layer1 (x3)   -> (N, 256, 38, 38)
                     layer2 (x4)   -> (N, 512, 19, 19)
                     layer3 (x6)   -> (N, 1024, 10, 10)
                     layer4 (x3)   -> (N, 2048, 5, 5)
                     avgpool       -> (N, 2048)

Any input size of at least 32x32 works (the pool is adaptive).

Stems (``build_resnet(arch, stem=...)``): ``"imagenet"`` is torchvision's
7x7 stride-2 convolution then a 3x3 stride-2 max-pool (a quarter of the side
before ``layer1``: 48 -> 12); ``"small"`` is a 3x3 stride-2 convolution and
no max-pool (half the side: 48 -> 24), for small face crops such as
FER2013's 48x48, where the ImageNet stem leaves ``layer4`` a 2x2 map;
``"small1"`` is a 3x3 stride-1 convolution and no max-pool (full side:
48 -> 48; about 4x the compute of ``"small"``); ``"nopool"`` keeps the
7x7 stride-2 convolution and drops the max-pool (48 -> 24): its weights are
exactly those of ``"imagenet"``, so a model trained with the ImageNet stem
can be continued with it. The stem's parameter names stay ``conv1``/``bn1``,
so only ``conv1.weight``'s shape differs between stems.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

from torch import nn
from torchvision.models import resnet as tv_resnet

from .. import choices

__all__ = ["ARCHS_2D", "STEMS", "build_resnet", "num_features", "set_stem"]

# stem name -> (kernel, stride, padding, max-pool kept)
STEMS = {"imagenet": (7, 2, 3, True), "nopool": (7, 2, 3, False), "small": (3, 2, 1, False),
         "small1": (3, 1, 1, False)}
assert tuple(STEMS) == choices.STEMS, "a stem is named in end2you_visual.choices"


class NarrowResNet(tv_resnet.ResNet):
    """torchvision's ResNet with configurable stage widths (``resnet_tiny``
    for tests, ``resnet18_half`` for fast CPU students).

    Same module names and forward as ``torchvision.models.ResNet``; only the
    numbers of maps differ.
    """

    def __init__(self, block: type[Union[tv_resnet.BasicBlock, tv_resnet.Bottleneck]],
                 layers: Sequence[int], widths: Sequence[int] = (8, 16, 32, 64)) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _tiny() -> NarrowResNet:
    return NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1])


def _half() -> NarrowResNet:
    return NarrowResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], widths=(32, 64, 128, 256))


# name -> (constructor returning a torchvision-style ResNet, features per frame)
ARCHS_2D: dict[str, tuple[Callable[[], tv_resnet.ResNet], int]] = {
    "resnet18": (lambda: tv_resnet.resnet18(weights=None), 512),
    "resnet34": (lambda: tv_resnet.resnet34(weights=None), 512),
    "resnet50": (lambda: tv_resnet.resnet50(weights=None), 2048),
    "resnet18_half": (_half, 256),
    "resnet_tiny": (_tiny, 64),
}
assert tuple(ARCHS_2D) == choices.ARCHS_2D, "a backbone is named in end2you_visual.choices"


def num_features(arch: str) -> int:
    """Features per frame of the 2D architecture ``arch``."""
    return ARCHS_2D[arch][1]


def set_stem(net: tv_resnet.ResNet, stem: str) -> tv_resnet.ResNet:
    """Give the torchvision-style ResNet ``net`` the stem ``stem`` (see the
    module doc), in place: a new randomly initialised ``conv1`` (same number
    of maps) and, for the small stems, no max-pool. Returns ``net``."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {sorted(STEMS)}")
    if stem == "imagenet":
        return net
    kernel, stride, padding, keep_pool = STEMS[stem]
    if (kernel, stride, padding) != STEMS["imagenet"][:3]:
        maps = net.conv1.out_channels
        net.conv1 = nn.Conv2d(3, maps, kernel_size=kernel, stride=stride, padding=padding,
                              bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not keep_pool:
        net.maxpool = nn.Identity()
    return net


def build_resnet(arch: str, stem: str = "imagenet") -> tv_resnet.ResNet:
    """A randomly initialised 2D ResNet ``arch`` with stem ``stem`` mapping
    (N, 3, H, W) -> (N, F)."""
    if arch not in ARCHS_2D:
        raise ValueError(f"unknown 2D architecture {arch!r}; choose one of {sorted(ARCHS_2D)}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {sorted(STEMS)}")
    net = ARCHS_2D[arch][0]()
    net.fc = nn.Identity()
    return set_stem(net, stem)
