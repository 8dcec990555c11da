"""What a method is to the trainer.

A method is an ``nn.Module`` that owns only what makes it different: its heads and its
loss. The trainer owns the rest (devices, precision, DDP, optimizer, schedule,
checkpoints, logging) and knows a method only through this interface:

- it is built as ``Method(config, backbone, context)``;
- ``split(batch_size)`` says how many of a step's images are synthetic and how many real;
- ``forward(real, num_synthetic)`` is one training step on a batch of real images and
  labels (a ``RealBatch``); the method draws its synthetic images from the teacher itself.
  It returns a dict with the total
  ``loss`` and every logged term by name (``loss/span/variance``, ...). It is
  ``forward`` so that DDP sees the step;
- ``backbone`` is the network that is exported and probed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from squeeze_span.config import ModelConfig
from squeeze_span.data import BatchAugmentation
from squeeze_span.generators import SampleSource


@dataclass
class MethodContext:
    """What the trainer hands every method."""

    device: torch.device
    image_channels: int  # the real data's channels; teacher images are converted to them
    num_classes: int  # classes of the real data's labels (for supervised methods)
    augmentation: BatchAugmentation  # the paper's augmentation, for real and synthetic images
    generator: torch.Generator  # draws augmentation parameters; checkpointed by the trainer
    model: ModelConfig
    teacher: SampleSource | None = None  # a Teacher, or a TeacherPool of its samples
    # Concatenates a tensor over all ranks, with gradients (identity on one process), so that
    # batch statistics (variance, covariance) cover the global batch.
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor


def split_batch(batch_size: int, syn_ratio: float) -> tuple[int, int]:
    """B_s = round(alpha * B) synthetic and B_r = B - B_s real images."""
    if not 0.0 <= syn_ratio <= 1.0:
        raise ValueError(f"syn_ratio must be in [0, 1], got {syn_ratio}")
    synthetic = round(syn_ratio * batch_size)
    return synthetic, batch_size - synthetic


class Method(nn.Module):
    """Base class: holds the backbone and the context; subclasses add heads and ``forward``."""

    def __init__(self, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__()
        self.backbone = backbone
        self.context = context

    def split(self, batch_size: int) -> tuple[int, int]:
        """(synthetic, real) images in a batch of ``batch_size``; real only by default."""
        return 0, batch_size
