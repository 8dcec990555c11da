"""The evaluation jobs that the CLI and the sweep both run, each built here once.

- :func:`untrained_backbone`: the random-init floor, as a training config builds the backbone;
- :func:`discriminator_features`: a GAN's discriminator as a backbone (Table 1's D rows);
- :class:`GeneratorFD`: the Frechet distance of a generator's samples to the real train images
  (Figure 4), with the real side's statistics computed once per extractor;
- raw pixels, the other floor, are :class:`squeeze_span.eval.probe.RawPixels`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from squeeze_span.data import load_dataset
from squeeze_span.eval.frechet import fd_extractor, generator_fd, real_statistics
from squeeze_span.generators import DiscriminatorFeatures, load_discriminator, load_generator
from squeeze_span.models import build_backbone


def untrained_backbone(
    arch: str, dataset: str, root: str | os.PathLike[str] | None, *, width: int, seed: int
) -> nn.Module:
    """``arch`` at ``width`` with the initial weights of ``seed``, for the dataset's channels."""
    torch.manual_seed(seed)
    channels = load_dataset(dataset, root, "test").num_channels
    return build_backbone(arch, in_channels=channels, width=width)


def discriminator_features(model: str | os.PathLike[str], features: str) -> DiscriminatorFeatures:
    """The pooled features of ``model``'s discriminator: ``multi`` (every block and the fc) or ``single``."""
    return DiscriminatorFeatures(load_discriminator(model), features)


@dataclass
class GeneratorFD:
    """FD of generators against one dataset's train images; the real side is computed once per metric."""

    dataset: str
    root: str | os.PathLike[str] | None = None
    count: int = 10000
    device: torch.device = torch.device("cpu")
    progress: bool = True
    classifier: str | None = None
    inception: str | None = None
    _statistics: dict[str, Any] = field(default_factory=dict, repr=False)

    def __call__(self, model: str | os.PathLike[str]) -> tuple[float, str]:
        """(the FD of ``model``'s samples, the metric's name: FID or FD-<dataset>-classifier)."""
        real = load_dataset(self.dataset, self.root, "train")
        extractor, metric = fd_extractor(
            real, self.dataset, classifier=self.classifier, inception=self.inception, device=self.device
        )
        if metric not in self._statistics:
            self._statistics[metric] = real_statistics(real, extractor, count=self.count, progress=self.progress)
        generator = load_generator(model)
        settings = dict(count=self.count, device=self.device, progress=self.progress)
        return generator_fd(generator, self._statistics[metric], extractor, **settings), metric
