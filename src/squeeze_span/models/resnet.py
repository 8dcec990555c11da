"""ResNet-18 with torchvision's parameter names, a width multiplier and two stems.

The state-dict keys (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``, BN buffers included) are exactly torchvision's ``resnet18``, so a backbone with
the ImageNet stem, width 64 and 3 channels loads into torchvision's or timm's ``resnet18``
unchanged; the CIFAR stem, other widths and channels keep the names but not the shapes. Two stems:

- ``resnet18``: 7x7 stride-2 conv and a 3x3 stride-2 max-pool (He et al., 2016), for
  STL-10 at 64 or 96 px;
- ``resnet18_cifar``: one 3x3 stride-1 conv and no max-pool, the usual choice for 32x32
  images, where the ImageNet stem would throw away three quarters of the pixels at once.

Stage widths are ``width, 2*width, 4*width, 8*width``; ``width=64`` is torchvision's.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
from torch import nn

from squeeze_span.errors import ConfigError
from squeeze_span.models.preprocessing import Preprocessing

STAGE_BLOCKS = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; a 1x1 conv projects the shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet-18 backbone; ``forward`` returns ``[N, feature_dim]`` features, or logits when ``num_classes > 0``.

    ``arch`` and ``config`` record how the model was built, so an exported file can
    rebuild it (see :mod:`squeeze_span.models.io`). ``image_size``, when given, records the
    side of the images it is trained on (the probe shows it images of that size); the
    network itself takes any size. ``preprocessing`` is the view its input must be, as far as
    it is known: :func:`~squeeze_span.models.load_backbone` fills in the normalisation.
    """

    def __init__(
        self,
        *,
        arch: str,
        cifar_stem: bool,
        in_channels: int = 3,
        width: int = 64,
        zero_init_residual: bool = False,
        num_classes: int = 0,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        limits = [("in_channels", in_channels, 1), ("width", width, 1), ("num_classes", num_classes, 0)]
        if image_size is not None:
            limits.append(("image_size", image_size, 1))
        for name, value, least in limits:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{arch}: {name} must be an integer >= {least}, got {value!r}")
        self.arch = arch
        self.config: dict[str, Any] = {
            "arch": arch,
            "in_channels": in_channels,
            "width": width,
            "num_classes": num_classes,
        }
        if image_size is not None:  # a backbone without the record keeps the older files' config
            self.config["image_size"] = image_size
        self.preprocessing = Preprocessing(image_size=image_size)
        self.feature_dim = 8 * width

        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        self.layer1 = self._make_stage(width, width, STAGE_BLOCKS[0], stride=1)
        self.layer2 = self._make_stage(width, 2 * width, STAGE_BLOCKS[1], stride=2)
        self.layer3 = self._make_stage(2 * width, 4 * width, STAGE_BLOCKS[2], stride=2)
        self.layer4 = self._make_stage(4 * width, 8 * width, STAGE_BLOCKS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()

        # torchvision's initialisation, so a from-scratch run starts where theirs does.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al., 2017).
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    @staticmethod
    def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``[N, feature_dim]``, whatever ``fc`` is."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh linear classifier ``fc`` for ``num_classes`` (0: none, forward gives the features)."""
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.config["num_classes"] = num_classes


def resnet18(
    in_channels: int = 3,
    width: int = 64,
    zero_init_residual: bool = False,
    num_classes: int = 0,
    image_size: int | None = None,
) -> ResNet:
    """ResNet-18 with the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool), for 64-96 px images."""
    return ResNet(
        arch="resnet18",
        cifar_stem=False,
        in_channels=in_channels,
        width=width,
        zero_init_residual=zero_init_residual,
        num_classes=num_classes,
        image_size=image_size,
    )


def resnet18_cifar(
    in_channels: int = 3,
    width: int = 64,
    zero_init_residual: bool = False,
    num_classes: int = 0,
    image_size: int | None = None,
) -> ResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), for 32x32 images."""
    return ResNet(
        arch="resnet18_cifar",
        cifar_stem=True,
        in_channels=in_channels,
        width=width,
        zero_init_residual=zero_init_residual,
        num_classes=num_classes,
        image_size=image_size,
    )


BACKBONES: dict[str, Callable[..., ResNet]] = {"resnet18": resnet18, "resnet18_cifar": resnet18_cifar}


def build_backbone(name: str, **kwargs: Any) -> ResNet:
    """Build the backbone called ``name`` (a key of :data:`BACKBONES`) with the factory's keyword arguments."""
    if name not in BACKBONES:
        valid = ", ".join(sorted(BACKBONES))
        close = difflib.get_close_matches(str(name), BACKBONES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown backbone {name!r}; {hint}valid backbones: {valid}")
    return BACKBONES[name](**kwargs)
