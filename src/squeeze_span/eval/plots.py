"""Pictures: image grids of generated or real samples."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from squeeze_span.data import to_unit_range
from squeeze_span.fileio import atomic_write


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile [N, C, H, W] images (uint8, or float in [-1, 1]) into one uint8 [rows*H, columns*W, C] array."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid needs [N, 1 or 3, H, W] images, got {tuple(images.shape)}")
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = (to_unit_range(images.detach().cpu()) * 255).round().to(torch.uint8)
    # Pad each image on its right and bottom, fill the last row with blanks, then tile by reshaping.
    pixels = F.pad(pixels, (0, padding, 0, padding))
    pixels = torch.cat([pixels, pixels.new_zeros(rows * columns - count, *pixels.shape[1:])])
    tiles = pixels.view(rows, columns, channels, height + padding, width + padding)
    grid = tiles.permute(2, 0, 3, 1, 4).reshape(channels, rows * (height + padding), columns * (width + padding))
    grid = F.pad(grid, (padding, 0, padding, 0))
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str | os.PathLike[str], columns: int | None = None) -> Path:
    """Write ``image_grid(images)`` as a PNG, atomically."""
    from PIL import Image

    grid = image_grid(images, columns)
    path = Path(path)
    with atomic_write(path) as temp:
        Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(temp, format="PNG")
    return path
