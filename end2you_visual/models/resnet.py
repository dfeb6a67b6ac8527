"""2D ResNet feature extractors: one image in, one feature vector out.

The real architectures come from torchvision's constructors
(``torchvision.models.resnet18/34/50(weights=None)``) with the classifier
replaced by ``nn.Identity``, so their parameter names are torchvision's
(``conv1.weight``, ``layer1.0.conv1.weight``, ...) and an ImageNet
``state_dict`` (minus ``fc.*``) loads into them as is. ``resnet_tiny`` is the
same network with 8/16/32/64 maps and one block per stage, for tests.

Shapes (ResNet-50, 150x150 input)::

    (N, 3, 150, 150) conv1 7x7/2  -> (N, 64, 75, 75)
                     maxpool 3x3/2 -> (N, 64, 38, 38)
                     layer1 (x3)   -> (N, 256, 38, 38)
                     layer2 (x4)   -> (N, 512, 19, 19)
                     layer3 (x6)   -> (N, 1024, 10, 10)
                     layer4 (x3)   -> (N, 2048, 5, 5)
                     avgpool       -> (N, 2048)

Any input size of at least 32x32 works (the pool is adaptive).
"""
from torch import nn
from torchvision.models import resnet as tv_resnet

__all__ = ["ARCHS_2D", "build_resnet", "num_features"]


class TinyResNet(tv_resnet.ResNet):
    """torchvision's ResNet with configurable stage widths (tests only).

    Same module names and forward as ``torchvision.models.ResNet``; only the
    numbers of maps differ.
    """

    def __init__(self, block, layers, widths=(8, 16, 32, 64)):
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


def _tiny():
    return TinyResNet(tv_resnet.BasicBlock, [1, 1, 1, 1])


# name -> (constructor returning a torchvision-style ResNet, features per frame)
ARCHS_2D = {
    "resnet18": (lambda: tv_resnet.resnet18(weights=None), 512),
    "resnet34": (lambda: tv_resnet.resnet34(weights=None), 512),
    "resnet50": (lambda: tv_resnet.resnet50(weights=None), 2048),
    "resnet_tiny": (_tiny, 64),
}


def num_features(arch):
    """Features per frame of the 2D architecture ``arch``."""
    return ARCHS_2D[arch][1]


def build_resnet(arch):
    """A randomly initialised 2D ResNet ``arch`` mapping (N, 3, H, W) -> (N, F)."""
    if arch not in ARCHS_2D:
        raise ValueError(f"unknown 2D architecture {arch!r}; choose one of {sorted(ARCHS_2D)}")
    net = ARCHS_2D[arch][0]()
    net.fc = nn.Identity()
    return net
