"""The auxiliary DBP backbone zoo: ResNet-18 (timm), the small CIFAR ConvNet and a 4 x 1000 MLP.

:func:`build_classifier` turns the ``model`` section (:class:`ZooModelConfig`) and ``decor`` section into a
classifier ``(N, C, H, W) float -> (N, num_classes) logits``, with DBP on every nn.Conv2d and
nn.Linear (patch-wise for convolutions) or on the layers that ``decor.sites`` globs name.

Architectures (weights He-initialised, biases zero):

- ``resnet18``: ``timm.create_model("resnet18", pretrained=False, ...)`` (timm's own init is He,
  fan-out, for every conv). After :func:`mae_dbp.decor.fuse` its state dict loads strictly into a
  plain ``timm.create_model("resnet18", num_classes=N, in_chans=C)``.
- ``convnet``: the DBP paper's "small three-layer ConvNet" for CIFAR-10. The paper gives no widths
  or kernel sizes; ours has three weight layers: ``conv_channels`` convolutions (default 32 and 64
  channels, ``conv_kernel`` 5 x 5, 'same' padding), each followed by the activation and a 2 x 2 max
  pool, then an adaptive average pool to ``head_grid`` x ``head_grid`` and one linear classifier.
  The pool keeps the classifier's DBP matrix small (64 * 2 * 2 = 256 inputs) at any image size.
- ``mlp``: flatten, ``mlp_hidden`` fully connected layers (default four of 1000 units, as in the
  natural-gradient paper) each followed by the activation, then a linear classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.config import DecorConfig, require
from mae_dbp.errors import UserInputError

ARCHS = ("resnet18", "convnet", "mlp")
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

@dataclass
class ZooModelConfig:
    """The ``model`` section of a classify config (one of :data:`ARCHS`)."""

    arch: str = "convnet"  # one of ARCHS
    num_classes: Optional[int] = None  # null: the number of class sub-folders of the training data
    in_chans: int = 3
    img_size: int = 32  # side length in px fed to the network (square)
    activation: str = "relu"  # convnet / mlp: one of ACTIVATIONS
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])  # convnet: output channels per conv
    conv_kernel: int = 5  # convnet: kernel side in px (odd: 'same' padding)
    head_grid: int = 2  # convnet: average-pool the last feature map to this grid before the classifier
    mlp_hidden: list[int] = field(default_factory=lambda: [1000, 1000, 1000, 1000])  # mlp: hidden widths
    timm_args: dict[str, Any] = field(default_factory=dict)  # resnet18: extra timm.create_model kwargs

    def __post_init__(self) -> None:
        require(self.arch in ARCHS, "model.arch", f"one of {', '.join(ARCHS)}", self.arch)
        require(self.activation in ACTIVATIONS, "model.activation", f"one of {', '.join(ACTIVATIONS)}", self.activation)
        require(self.num_classes is None or self.num_classes >= 1, "model.num_classes", "null or an int >= 1",
                self.num_classes)
        require(self.in_chans >= 1, "model.in_chans", "an int >= 1", self.in_chans)
        require(self.img_size >= 1, "model.img_size", "an int >= 1", self.img_size)


def _he_init(model: nn.Module) -> None:
    """He (Kaiming normal, fan-in, ReLU gain) weights and zero biases for every Conv2d / Linear."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class ConvNet(nn.Module):
    """Convolution blocks (conv, activation, 2 x 2 max pool), average pool to a grid, linear head.

    Input (N, in_chans, H, W) with H, W >= 2 ** len(channels); output (N, num_classes).
    Module names: ``features.{3i}`` are the convolutions, ``classifier`` the linear head.
    """

    def __init__(self, in_chans: int, num_classes: int, channels: list[int], kernel: int,
                 head_grid: int, activation: type[nn.Module]) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise UserInputError(f"model.conv_kernel must be a positive odd number, got {kernel}")
        if not channels or head_grid < 1:
            raise UserInputError("model.conv_channels must list at least one width and model.head_grid be >= 1")
        layers: list[nn.Module] = []
        previous = in_chans
        for width in channels:
            layers += [nn.Conv2d(previous, int(width), kernel, padding=kernel // 2), activation(), nn.MaxPool2d(2)]
            previous = int(width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(head_grid)
        self.classifier = nn.Linear(previous * head_grid * head_grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MLP(nn.Module):
    """Flatten (N, C, H, W) to (N, C*H*W), hidden Linear + activation layers, a linear classifier.

    Module names: ``hidden.{2i}`` are the hidden Linear layers, ``classifier`` the output layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], activation: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, int(width)), activation()]
            previous = int(width)
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(x.flatten(1)))


def input_size(cfg: ZooModelConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images the classifier of a ``model`` section takes (timm's ``input_size``
    convention): the one reader of ``model.in_chans`` / ``model.img_size``, for the builder and the
    data pipeline alike."""
    return cfg.in_chans, cfg.img_size, cfg.img_size


def build_backbone(cfg: ZooModelConfig) -> nn.Module:
    """The plain (no DBP) classifier of a ``model`` section; ``num_classes`` must be set."""
    if cfg.num_classes is None:
        raise UserInputError("model.num_classes: expected an int >= 1, got None")
    channels, height, width = input_size(cfg)
    if cfg.arch == "resnet18":
        import timm

        return timm.create_model("resnet18", pretrained=False, num_classes=cfg.num_classes, in_chans=channels,
                                 **dict(cfg.timm_args))
    activation = ACTIVATIONS[cfg.activation]
    if cfg.arch == "convnet":
        model: nn.Module = ConvNet(channels, cfg.num_classes, list(cfg.conv_channels), cfg.conv_kernel,
                                   cfg.head_grid, activation)
    else:
        model = MLP(channels * height * width, cfg.num_classes, list(cfg.mlp_hidden), activation)
    _he_init(model)
    return model


def build_classifier(cfg: ZooModelConfig, decor_cfg: DecorConfig | None = None) -> nn.Module:
    """The classifier of a ``model`` section, with DBP on ``decor_cfg.sites`` when it is enabled.

    ``sites`` are globs over module names (``["*"]``: every Conv2d and Linear); the wrapped layers
    are listed by :func:`mae_dbp.decor.decor_modules`.
    """
    model = build_backbone(cfg)
    if decor_cfg is not None and decor_cfg.enabled:
        decor.apply(model, list(decor_cfg.sites), **decor_cfg.layer_settings())
    return model
