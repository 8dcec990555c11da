"""Differentiable augmentation for GAN training on small data: translation and cutout.

After DiffAugment (Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient
GAN Training", NeurIPS 2020): the same random transforms are applied to real *and* generated
images before the discriminator sees them, and they are differentiable, so the generator
learns through them. D then cannot overfit the few real images, and G is not pushed to
produce augmented-looking images, because the transforms are drawn from the same
distribution on both sides.

- translation: each image is shifted by an integer (dy, dx), each drawn uniformly from
  ``[-round(ratio * size), round(ratio * size)]`` (ratio 1/8 by default), and the pixels
  shifted in are zeros (mid-grey in [-1, 1]);
- cutout: in each image a square of ``round(ratio * size)`` pixels (half the size by default)
  centred at a uniformly drawn pixel is zeroed; it may hang over the border.

Both run on the whole batch at once (index arithmetic, no loop over images), on the
images' device, and draw every random number from the ``torch.Generator`` they are given.
"""

from __future__ import annotations

import torch


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")


def translate(images: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) of at most ``round(ratio * size)`` pixels, zero fill."""
    _check_images(images)
    batch, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if shift_y == 0 and shift_x == 0:
        return images
    device = images.device
    dy = torch.randint(-shift_y, shift_y + 1, (batch, 1, 1), generator=generator, device=device)
    dx = torch.randint(-shift_x, shift_x + 1, (batch, 1, 1), generator=generator, device=device)
    # Output pixel (y, x) reads input pixel (y - dy, x - dx) of the zero-padded image.
    rows = torch.arange(height, device=device).view(1, height, 1) - dy + shift_y
    cols = torch.arange(width, device=device).view(1, 1, width) - dx + shift_x
    padded = torch.nn.functional.pad(images, (shift_x, shift_x, shift_y, shift_y))
    index = torch.arange(batch, device=device).view(batch, 1, 1)
    # Advanced indexing [N, H, W] -> [N, H, W, C]; its backward scatters the gradient back.
    shifted = padded.permute(0, 2, 3, 1)[index, rows, cols]
    return shifted.permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``round(ratio * size)`` square per image, centred at a uniformly random pixel."""
    _check_images(images)
    batch, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if size_y == 0 or size_x == 0:
        return images
    device = images.device
    centre_y = torch.randint(0, height, (batch, 1, 1), generator=generator, device=device)
    centre_x = torch.randint(0, width, (batch, 1, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1) - (centre_y - size_y // 2)
    cols = torch.arange(width, device=device).view(1, 1, width) - (centre_x - size_x // 2)
    keep = ~((rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x))
    return images * keep.unsqueeze(1).to(images.dtype)


class DiffAugment:
    """translation then cutout, each switched off by a ratio of 0; ``enabled=False`` is the identity."""

    def __init__(self, enabled: bool = True, translation: float = 0.125, cutout: float = 0.5) -> None:
        for name, value in (("translation", translation), ("cutout", cutout)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"DiffAugment {name} ratio must be in [0, 1], got {value}")
        self.enabled = enabled
        self.translation = translation
        self.cutout = cutout

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.enabled:
            return images
        if self.translation > 0:
            images = translate(images, self.translation, generator)
        if self.cutout > 0:
            images = cutout(images, self.cutout, generator)
        return images

    def __repr__(self) -> str:
        return f"DiffAugment(enabled={self.enabled}, translation={self.translation}, cutout={self.cutout})"
