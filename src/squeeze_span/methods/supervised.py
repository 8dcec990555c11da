"""Supervised classification on the real labels: the project's own feature extractor for
the Frechet distance (FD) of generated images, and the labeller of Figure 2.

Cross-entropy on a light augmentation (RandomResizedCrop with scale 0.5..1 and
horizontal flip): the classifier should see images like the test set's, not the
heavy views of self-supervised learning. The classifier is the backbone's ``fc``, so
``squeeze-span export`` writes it with the backbone under torchvision's names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze_span.config import bounded
from squeeze_span.data import BatchAugmentation
from squeeze_span.data.stream import RealBatch
from squeeze_span.errors import ConfigError
from squeeze_span.methods.base import Method, MethodContext
from squeeze_span.runtime import full_precision


@dataclass
class SupervisedConfig:
    name: str = "supervised"
    crop_scale_min: float = bounded(0.5, above=0, max=1)  # the smallest crop, as a fraction of the image area
    label_smoothing: float = bounded(0.0, min=0, max=1)


class Supervised(Method):
    name = "supervised"
    config_class = SupervisedConfig

    def __init__(self, config: SupervisedConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(backbone, context)
        if context.num_classes < 2:
            raise ConfigError("method supervised needs a labeled dataset with at least 2 classes")
        self.config = config
        backbone.reset_classifier(context.num_classes)
        base = context.augmentation
        self.augmentation = BatchAugmentation(
            base.size,
            base.mean,
            base.std,
            scale=(config.crop_scale_min, 1.0),
            jitter_prob=0.0,
            grayscale_prob=0.0,
            blur_prob=0.0,
        )

    def forward(self, real: RealBatch, num_synthetic: int) -> dict[str, torch.Tensor]:
        labeled = real.labels >= 0
        views = self.augmentation(real.images[labeled], self.context.generator)
        logits = self.backbone(views.contiguous(memory_format=self.memory_format))
        labels = real.labels[labeled]
        with full_precision(self.context.device):
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        accuracy = (logits.argmax(dim=1) == labels).float().mean() * 100
        return {"loss": loss, "loss/cross_entropy": loss.detach(), "accuracy/train": accuracy}
