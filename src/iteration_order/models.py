"""The paper's networks, built from explicit seeds and never from downloaded weights.

Adaptations to 32×32 CIFAR images (the torchvision models are ImageNet-shaped):

* ResNet-18 / ResNet-50: the 7×7 stride-2 stem becomes a 3×3 stride-1 convolution and the stem's
  max-pool is removed, so the last stage sees 4×4 maps instead of 1×1 (the usual CIFAR ResNet).
* VGG-19 (no batch norm, as in Simonyan & Zisserman): after five pools a 32×32 input is 1×1×512,
  so the 7×7 adaptive pool and the 25088→4096→4096 classifier with dropout become a 1×1 pool and
  one linear layer 512→classes. Dropout is dropped because the paper trains without regularisation.

The MLP uses ReLU: the paper gives depth × width ("5 layers of 500 neurons") but not the activation
nor the initialisation. ``init="torch"`` keeps PyTorch's layer default (uniform, variance
1/(3·fan_in)); ``init="he"`` draws weights from N(0, 2/fan_in) with zero biases, which keeps the
activation variance of a deep ReLU stack. With PyTorch's default a 5×500 MLP barely leaves chance
level in 2,000 SGD steps at h = 0.001 on FashionMNIST, so the FashionMNIST pages use ``he``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision import models as tv

from .seeding import seeded

__all__ = ["MLP", "build_model", "MODEL_NAMES"]


class MLP(nn.Sequential):
    """``depth`` hidden layers of ``width`` ReLU units, then a linear output layer.

    ``in_features`` is the flattened input size (1 for the synthetic regressions, 784 for
    FashionMNIST); inputs of any shape ``[batch, ...]`` are flattened first.
    """

    def __init__(self, depth: int, width: int, in_features: int, out_features: int):
        for name, value in (("depth", depth), ("width", width), ("in_features", in_features),
                            ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MLP {name} must be an integer >= 1; got {value!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        sizes = [in_features] + [width] * depth
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)


def _cifar_resnet(builder, num_classes: int) -> nn.Module:
    net = builder(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    return net


def _cifar_vgg19(num_classes: int) -> nn.Module:
    net = tv.vgg19(weights=None, num_classes=num_classes)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(512, num_classes)
    nn.init.normal_(net.classifier.weight, 0, 0.01)
    nn.init.zeros_(net.classifier.bias)
    return net


MODEL_NAMES = ("mlp", "resnet18", "resnet50", "vgg19")
INITS = ("torch", "he")


def _he_init(model: nn.Module) -> None:
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def build_model(name: str, input_shape: tuple[int, ...], num_outputs: int, seed: int,
                depth: int = 5, width: int = 500, init: str = "torch") -> nn.Module:
    """Build one of `MODEL_NAMES` with initial weights drawn from the seed's "init" stream.

    ``depth``, ``width`` and ``init`` apply to the MLP only (the convolutional models keep
    torchvision's initialisation, already He-normal for their convolutions); they need 3-channel
    images.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    if name != "mlp" and (len(input_shape) != 3 or input_shape[0] != 3):
        raise ValueError(f"model {name!r} needs 3-channel images [3, H, W]; the data set has "
                         f"inputs of shape {list(input_shape)}")
    with seeded(seed, "init"):
        if name == "mlp":
            mlp = MLP(depth, width, math.prod(input_shape), num_outputs)
            if init == "he":
                _he_init(mlp)
            return mlp
        if name == "resnet18":
            return _cifar_resnet(tv.resnet18, num_outputs)
        if name == "resnet50":
            return _cifar_resnet(tv.resnet50, num_outputs)
        return _cifar_vgg19(num_outputs)
