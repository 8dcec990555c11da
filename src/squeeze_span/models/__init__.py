"""Backbones (ResNet-18 with torchvision's parameter names) and their safe export format."""

from squeeze_span.models.io import load_backbone, save_backbone
from squeeze_span.models.resnet import (
    BACKBONES,
    ResNet,
    build_backbone,
    resnet18,
    resnet18_cifar,
)

__all__ = ["BACKBONES", "ResNet", "build_backbone", "load_backbone", "resnet18", "resnet18_cifar", "save_backbone"]
