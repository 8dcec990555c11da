"""What a backbone's input must be: the images' side and the per-channel normalisation it was trained with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from squeeze_span.data import DATASET_INFO, center_view, normalization_stats
from squeeze_span.data.augment import normalize, to_unit_range
from squeeze_span.errors import CheckpointError


@dataclass(frozen=True)
class Preprocessing:
    """The view a backbone was trained on, to apply before it: ``backbone(backbone.preprocessing(images))``.

    ``mean`` and ``std`` are per channel, in [0, 1] pixel units; ``image_size`` is the side the
    images are resized to. Each is None where the backbone's file did not record it (exports
    written before squeeze-span recorded them, models built in code).
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None

    @classmethod
    def of_dataset(cls, dataset: str | None, channels: int, image_size: int | None) -> Preprocessing:
        """The normalisation training on ``dataset`` (a registry name) applies to ``channels``-channel images;
        None values for a dataset this install does not know."""
        if dataset not in DATASET_INFO:
            return cls(image_size=image_size)
        mean, std = normalization_stats(dataset, channels)
        return cls(mean, std, image_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ([N, C, H, W], uint8 in 0..255 or float in [-1, 1]) as the backbone saw them in training:
        resized (antialiased bilinear) to ``image_size`` when it is known, then normalised."""
        if self.mean is None or self.std is None:
            raise CheckpointError(
                "this backbone's file does not record its input normalisation (it was exported before "
                "squeeze-span recorded it); export it again from its run folder with `squeeze-span export`"
            )
        if self.image_size is None:
            return normalize(to_unit_range(images), self.mean, self.std)
        return center_view(images, self.image_size, self.mean, self.std)

    def describe(self) -> str:
        """In words, for a person: ``32x32 images, normalised by mean (0.286,) std (0.353,)``."""
        size = f"{self.image_size}x{self.image_size} images" if self.image_size else "images of any size"
        if self.mean is None or self.std is None:
            return f"{size}, normalisation not recorded"
        mean = ", ".join(f"{value:.4f}" for value in self.mean)
        std = ", ".join(f"{value:.4f}" for value in self.std)
        return f"{size}, normalised by mean ({mean}) and std ({std})"
