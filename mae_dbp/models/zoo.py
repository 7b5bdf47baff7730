"""The auxiliary DBP backbone zoo: ResNet-18 (timm), the small CIFAR ConvNet and a 4 x 1000 MLP.

:func:`build_classifier` turns the ``model`` and ``decor`` sections of a classify config into a
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

from typing import Any

import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.errors import UserInputError

ARCHS = ("resnet18", "convnet", "mlp")
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

MODEL_DEFAULTS: dict[str, Any] = {
    "arch": "convnet",  # one of ARCHS
    "num_classes": None,  # null: the number of class sub-folders of the training data
    "in_chans": 3,
    "img_size": 32,  # side length in px fed to the network (square)
    "activation": "relu",  # convnet / mlp: one of ACTIVATIONS
    "conv_channels": [32, 64],  # convnet: output channels of its convolutions
    "conv_kernel": 5,  # convnet: kernel side in px (odd: 'same' padding)
    "head_grid": 2,  # convnet: average-pool the last feature map to this grid before the classifier
    "mlp_hidden": [1000, 1000, 1000, 1000],  # mlp: hidden layer widths
    "timm_args": {},  # resnet18: extra timm.create_model kwargs (e.g. drop_rate)
}


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


def build_backbone(model_cfg: dict) -> nn.Module:
    """The plain (no DBP) classifier of ``model_cfg`` (keys of :data:`MODEL_DEFAULTS`)."""
    cfg = {**MODEL_DEFAULTS, **model_cfg}
    arch, num_classes, in_chans = cfg["arch"], cfg["num_classes"], int(cfg["in_chans"])
    if arch not in ARCHS:
        raise UserInputError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"model.num_classes must be a positive integer, got {num_classes!r}")
    if arch == "resnet18":
        import timm

        return timm.create_model("resnet18", pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                 **(cfg["timm_args"] or {}))
    if cfg["activation"] not in ACTIVATIONS:
        raise UserInputError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {cfg['activation']!r}")
    activation = ACTIVATIONS[cfg["activation"]]
    if arch == "convnet":
        model: nn.Module = ConvNet(in_chans, num_classes, list(cfg["conv_channels"]), int(cfg["conv_kernel"]),
                                   int(cfg["head_grid"]), activation)
    else:
        size = int(cfg["img_size"])
        model = MLP(in_chans * size * size, num_classes, list(cfg["mlp_hidden"]), activation)
    _he_init(model)
    return model


def build_classifier(cfg: dict) -> nn.Module:
    """The classifier of ``cfg["model"]`` with DBP as ``cfg["decor"]`` says.

    ``cfg["decor"]`` (optional; absent or ``enabled: false`` gives a plain model): ``sites`` globs
    over module names (default ``["*"]``: every Conv2d and Linear), and the DecorSettings fields
    ``kappa``, ``lr``, ``sample_frac``, ``variant``, ``rank``, ``seed``. The wrapped layers are
    listed by :func:`mae_dbp.decor.decor_modules`.
    """
    model = build_backbone(cfg["model"])
    decor_cfg = cfg.get("decor") or {}
    if decor_cfg.get("enabled", False):
        settings = {k: decor_cfg[k] for k in ("kappa", "lr", "sample_frac", "variant", "rank", "seed") if k in decor_cfg}
        decor.apply(model, decor_cfg.get("sites") or ["*"], **settings)
    return model
