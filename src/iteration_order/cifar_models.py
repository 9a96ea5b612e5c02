"""The paper's convolutional networks for 32×32 images, with their width as a parameter.

``base_channels`` is the number of channels of the first stage (64 in the paper's ResNets and
VGG-19; later stages double it, as in the originals), so ``base_channels / 64`` is the width
multiplier. At 64 each network has exactly the parameters of the torchvision model with the usual
CIFAR adaptation (tested in ``tests/test_models.py``); below 64 the same family and depth is kept
— residual stages and BatchNorm for the ResNets, VGG's plain stack of 16 convolutions — and only
the channel counts shrink, which is what lets a CPU train them.

Adaptations to 32×32 CIFAR images (the torchvision models are ImageNet-shaped):

* ResNet-18 / ResNet-50: the 7×7 stride-2 stem becomes a 3×3 stride-1 convolution and the stem's
  max-pool is removed, so the last stage sees 4×4 maps instead of 1×1 (the usual CIFAR ResNet).
  The residual blocks are torchvision's own (`BasicBlock`, `Bottleneck`); this module only
  assembles them with the chosen widths, because torchvision's `ResNet` fixes them at 64–512.
* VGG-19 (no batch norm, as in Simonyan & Zisserman): after five pools a 32×32 input is 1×1×C,
  so the 7×7 adaptive pool and the 25088→4096→4096 classifier with dropout become a 1×1 pool and
  one linear layer 8·base_channels→classes. Dropout is dropped because the paper trains without
  regularisation. The convolutions are torchvision's `make_layers` with the widths scaled.
  ``vgg19_bn`` is the same stack with BatchNorm after every convolution (torchvision's
  ``vgg19_bn`` layout), still plain (no skip connections): the CPU stand-in of Figure 8 uses it
  because the 1/8-width plain stack barely leaves chance level in the steps a CPU affords.

Initialisation follows torchvision's: He-normal (fan-out) convolutions, BatchNorm weight 1 and
bias 0, and for VGG's linear layer N(0, 0.01²) with a zero bias.
"""
from __future__ import annotations

from torch import nn
from torchvision.models import vgg as tv_vgg
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = ["CONV_MODELS", "PAPER_CHANNELS", "build_conv"]

PAPER_CHANNELS = 64
# name -> (block, blocks per stage); VGG-19's layer list is its own
_RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}
_VGG19 = (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M")
CONV_MODELS = (*_RESNETS, "vgg19", "vgg19_bn")


class CifarResNet(nn.Module):
    """Stem (3×3 conv, BN, ReLU), four stages of residual blocks at c, 2c, 4c, 8c channels (the
    last three start with stride 2), global average pool, one linear layer."""

    def __init__(self, block, layers: tuple[int, ...], base: int, num_classes: int):
        super().__init__()
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, base, layers[0], 1)
        self.layer2 = self._stage(block, 2 * base, layers[1], 2)
        self.layer3 = self._stage(block, 4 * base, layers[2], 2)
        self.layer4 = self._stage(block, 8 * base, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * base * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _vgg19(base: int, num_classes: int, batch_norm: bool) -> nn.Module:
    layers = [v if v == "M" else v * base for v in _VGG19]
    net = tv_vgg.VGG(tv_vgg.make_layers(layers, batch_norm=batch_norm), num_classes=num_classes)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(8 * base, num_classes)
    nn.init.normal_(net.classifier.weight, 0, 0.01)
    nn.init.zeros_(net.classifier.bias)
    return net


def build_conv(name: str, base_channels: int, num_classes: int) -> nn.Module:
    """One of `CONV_MODELS` with ``base_channels`` channels in its first stage (the caller seeds)."""
    if name not in CONV_MODELS:
        raise ValueError(f"unknown convolutional model {name!r}; allowed: {', '.join(CONV_MODELS)}")
    if not isinstance(base_channels, int) or isinstance(base_channels, bool) or base_channels < 1:
        raise ValueError(f"base_channels must be an integer >= 1 (64 = the paper's width); got "
                         f"{base_channels!r}")
    if name.startswith("vgg19"):
        return _vgg19(base_channels, num_classes, batch_norm=name == "vgg19_bn")
    block, layers = _RESNETS[name]
    return CifarResNet(block, layers, base_channels, num_classes)
