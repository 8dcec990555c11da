"""A frozen StyleGAN2 discriminator as a feature extractor: the paper's Table 1 rows "discriminator
single / multi feature".

The authors (``eval_discriminator.py``, with ``PretrainedDiscriminator`` in
``src/models/discriminator.py``) hook the modules of their 32 px D whose names match
``b32|b16|b8|b4.fc$`` in full: the outputs x of the blocks b32, b16 and b8, and the epilogue's
fc. For a D of resolution R those are the blocks bR ... b8 and b4.fc (:data:`TAPS`). "multi"
averages each over space and concatenates them; "single" is b4.fc alone. "blocks" is bR ... b8
without b4.fc, whose minibatch-stddev input depends on the rest of the batch: the taps of a
per-image perceptual distance (``method.perceptual=discriminator`` of ``encode``).

Choices, and why:

* Minibatch stddev. The authors set the mbstd group to their batch size, so that b4.fc sees one
  statistic of the whole batch; so does this wrapper. With the hundreds of images a probe's
  batch holds, that statistic is close to the dataset's own; and any batch size works, where
  D's group of 4 would refuse a batch of 10. A batch of one sees a spread of 0.
* Labels. Every tap precedes the projection on the label embedding, so a conditional D gives the
  same features whatever the label: it runs with zero labels, and needs none.
* Images. Float, in [-1, 1] as the GAN's, of any size and channels (:func:`~squeeze_span.data.gan_view`):
  channels are matched; smaller images are padded with -1 in the centre, as ``train-gan``
  showed its D the 28 px Fashion-MNIST in 32 px; larger ones are resized (antialiased bilinear).
* The wrapper holds its own copy of D, so the caller's D keeps its group size and gets no hooks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from squeeze_span.data import gan_view
from squeeze_span.errors import ConfigError
from squeeze_span.generators.stylegan2 import Discriminator
from squeeze_span.generators.teacher import FeatureTaps, pooled

# By the regex on D's module names: the block outputs bR ... b8 (b4 itself is the score), and b4.fc.
TAPS = {"multi": r"^(b\d+(?<!b4)|b4\.fc)$", "single": r"^b4\.fc$", "blocks": r"^b\d+(?<!b4)$"}


class DiscriminatorFeatures(nn.Module):
    """``forward(images)`` -> ``[N, feature_dim]``: the pooled taps of a frozen D, concatenated.

    ``tap_features(images, pool=False)`` gives each tap on its own (:attr:`tap_names`), as a
    perceptual distance needs; gradients reach the images, never D.
    """

    def __init__(self, discriminator: Discriminator, features: str = "multi") -> None:
        super().__init__()
        if features not in TAPS:
            raise ConfigError(f"discriminator features {features!r} are unknown; use one of {', '.join(TAPS)}")
        self.features = features
        self.discriminator = copy.deepcopy(discriminator).eval().requires_grad_(False)
        if self.discriminator.b4.mbstd is not None:
            self.discriminator.b4.mbstd.group_size = None  # the whole batch
        self.taps = FeatureTaps(self.discriminator, TAPS[features])
        channels, resolution = self.discriminator.img_channels, self.discriminator.img_resolution
        probe = torch.zeros(1, channels, resolution, resolution, device=self.discriminator.b4.fc.weight.device)
        with torch.no_grad():
            self.tap_shapes = [tuple(f.shape[1:]) for f in self.tap_features(probe, pool=False)]
        self.feature_dim = sum(shape[0] for shape in self.tap_shapes)

    @property
    def tap_names(self) -> list[str]:
        return self.taps.names

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` images in [-1, 1] as D takes them: its channels, its resolution."""
        return gan_view(images, self.discriminator.img_channels, self.discriminator.img_resolution)

    def tap_features(self, images: torch.Tensor, pool: bool = True) -> list[torch.Tensor]:
        """One float32 tensor per tap, in :attr:`tap_names`' order: ``[N, C, H, W]`` maps (b4.fc: ``[N, C]``),
        or with ``pool`` each ``[N, C]``, maps averaged over space."""
        images = self.fit(images)
        labels = torch.zeros(len(images), self.discriminator.c_dim, device=images.device)
        self.discriminator(images, labels)
        features = self.taps.take()
        return pooled(features) if pool else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.tap_features(images), dim=1)

    def extra_repr(self) -> str:
        return f"features={self.features}, taps={self.tap_names}, feature_dim={self.feature_dim}"
