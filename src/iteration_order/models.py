"""The paper's networks, built from explicit seeds and never from downloaded weights.

The convolutional networks (ResNet-18, ResNet-50, VGG-19) and their CIFAR adaptations live in
`cifar_models`, which only the runs of those models depend on (their fingerprint adds it).

The MLP uses ReLU: the paper gives depth × width ("5 layers of 500 neurons") but not the activation
nor the initialisation. ``init="torch"`` keeps PyTorch's layer default (uniform, variance
1/(3·fan_in)); ``init="he"`` draws weights from N(0, 2/fan_in) with zero biases, which keeps the
activation variance of a deep ReLU stack. With PyTorch's default a 5×500 MLP barely leaves chance
level in 2,000 SGD steps at h = 0.001 on FashionMNIST, so the FashionMNIST pages use ``he``.
"""
from __future__ import annotations

import math

from torch import nn

from .cifar_models import CONV_MODELS, PAPER_CHANNELS, build_conv
from .seeding import seeded

__all__ = ["MLP", "build_model", "MODEL_NAMES", "CONV_MODELS"]


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


MODEL_NAMES = ("mlp", *CONV_MODELS)
INITS = ("torch", "he")


def _he_init(model: nn.Module) -> None:
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def build_model(name: str, input_shape: tuple[int, ...], num_outputs: int, seed: int,
                depth: int = 5, width: int = 500, init: str = "torch",
                base_channels: int = PAPER_CHANNELS) -> nn.Module:
    """Build one of `MODEL_NAMES` with initial weights drawn from the seed's "init" stream.

    ``depth``, ``width`` and ``init`` apply to the MLP only; ``base_channels`` (the first stage's
    channels, 64 = the paper's width) to the convolutional models only, which need 3-channel
    images (`cifar_models`).
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
        return build_conv(name, base_channels, num_outputs)
