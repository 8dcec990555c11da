"""Files shipped inside the package: the embedded default's teacher and classifier.

A config or command names one as ``asset:NAME`` (for example
``teacher.path=asset:fashion_mnist_stylegan2``); :func:`resolve` turns that into its path.
Nothing here is downloaded: the files are part of the install.
"""

from __future__ import annotations

import os
from pathlib import Path

from squeeze_span.errors import CheckpointError

ASSETS = Path(__file__).resolve().parent
PREFIX = "asset:"

FASHION_MNIST_TEACHER = "asset:fashion_mnist_stylegan2"  # StyleGAN2 G_ema, safetensors + JSON
FASHION_MNIST_CLASSIFIER = "asset:fashion_mnist_classifier.safetensors"  # supervised ResNet-18, width 16


def resolve(spec: str | os.PathLike[str]) -> Path:
    """``asset:NAME`` -> the shipped file or folder; any other path is returned as it is."""
    text = str(spec)
    if not text.startswith(PREFIX):
        return Path(spec)
    path = ASSETS / text[len(PREFIX) :]
    if not path.exists():
        shipped = sorted(p.name for p in ASSETS.iterdir() if not p.name.startswith(("_", ".")))
        raise CheckpointError(
            f"{text} is not shipped with this install (shipped: {', '.join(shipped) or 'nothing'}); "
            "reinstall squeeze-span from a full checkout, or pass a file path"
        )
    return path
