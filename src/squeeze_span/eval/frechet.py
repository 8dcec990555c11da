"""The Frechet distance between two sets of images, in the feature space of any extractor.

FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))  (Heusel et al., 2017).

FID is this distance in the features of the 2015 Inception network, whose weights
cannot be downloaded on our machines. So the extractor is pluggable:

- :class:`BackboneFeatures`: a classifier's pooled features; with the project's own
  Fashion-MNIST classifier the metric is called ``FD-FashionMNIST-classifier``, never FID;
- :class:`InceptionFeatures`: NVIDIA's TorchScript ``pt_inception-2015-12-05`` file, when the
  user has it: then the number is FID, comparable with the literature.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from squeeze_span.data import ImageDataset, center_view, match_channels, to_unit_range
from squeeze_span.errors import CheckpointError
from squeeze_span.runtime import autocast

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # images (uint8, or float in [-1, 1]) -> [N, D]


@dataclass
class FeatureStatistics:
    mean: torch.Tensor  # [D], float64
    covariance: torch.Tensor  # [D, D], float64
    count: int

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStatistics:
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"feature statistics need [N >= 2, D] features, got {tuple(features.shape)}")
        features = features.double()
        return cls(features.mean(dim=0), torch.cov(features.T), features.shape[0])


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """FD between two Gaussians fitted to features.

    Tr((S_a S_b)^(1/2)) is computed as Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), a symmetric
    positive semi-definite matrix whose eigenvalues are real: no complex square root.
    """
    root_a = _sqrt_psd(a.covariance)
    middle = root_a @ b.covariance @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (a.mean - b.mean).square().sum() + a.covariance.trace() + b.covariance.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


class BackboneFeatures(nn.Module):
    """The pooled features of a (frozen) backbone, on the center view its training used."""

    def __init__(
        self, backbone: nn.Module, size: int, mean: Sequence[float], std: Sequence[float], precision: str = "fp32"
    ) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.size, self.mean, self.std, self.precision = size, tuple(mean), tuple(std), precision

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.backbone.parameters()).device
        images = match_channels(images.to(device), len(self.mean))
        view = center_view(images, self.size, self.mean, self.std).contiguous(memory_format=torch.channels_last)
        with autocast(device, self.precision):
            return self.backbone.forward_features(view).float()


class InceptionFeatures(nn.Module):
    """The 2048 pool features of NVIDIA's ``pt_inception-2015-12-05-6726825d.pth`` (TorchScript).

    That file takes uint8-range RGB images and resizes them to 299x299 itself.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; FID needs pt_inception-2015-12-05-6726825d.pth (else use the classifier FD)"
            )
        try:
            self.network = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as error:
            raise CheckpointError(
                f"{path} is not a TorchScript Inception network ({str(error).splitlines()[0]})"
            ) from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (to_unit_range(match_channels(images, 3)) * 255).round()
        return self.network(pixels, return_features=True).float()


def statistics_of(extractor: FeatureExtractor, batches: Iterator[torch.Tensor]) -> FeatureStatistics:
    """Feature statistics of every image the batches yield."""
    return FeatureStatistics.of(torch.cat([extractor(images).cpu() for images in batches]))


def real_statistics(
    real: ImageDataset,
    extractor: FeatureExtractor,
    *,
    count: int = 10000,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
) -> FeatureStatistics:
    """Feature statistics of ``count`` real images (all if fewer), drawn without replacement by ``seed``.

    They depend only on the data and the extractor, so a sweep over generators computes them once.
    """
    from tqdm.auto import tqdm

    count = min(count, len(real))
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    batches = (real.get_batch(index)[0] for index in order.split(batch_size))
    return statistics_of(
        extractor, tqdm(batches, desc="FD: real", total=len(order.split(batch_size)), disable=not progress)
    )


def generated_statistics(
    generator: nn.Module,
    extractor: FeatureExtractor,
    *,
    count: int = 10000,
    batch_size: int = 250,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    progress: bool = True,
) -> FeatureStatistics:
    """Feature statistics of ``count`` samples of ``generator`` (latents seeded by ``seed``)."""
    from tqdm.auto import tqdm

    from squeeze_span.generators import Teacher

    teacher = Teacher(generator, None, device=device, seed=seed)
    sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    batches = (teacher.sample(size).images for size in sizes)
    return statistics_of(extractor, tqdm(batches, desc="FD: generated", total=len(sizes), disable=not progress))


def generator_fd(
    generator: nn.Module,
    real: ImageDataset | FeatureStatistics,
    extractor: FeatureExtractor,
    *,
    count: int = 10000,
    batch_size: int = 250,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    progress: bool = True,
) -> float:
    """FD between ``count`` samples of ``generator`` and ``count`` real images (all if fewer).

    ``real`` is the dataset, or its :func:`real_statistics` computed before with this extractor.
    """
    settings = dict(count=count, batch_size=batch_size, seed=seed, progress=progress)
    if not isinstance(real, FeatureStatistics):
        real = real_statistics(real, extractor, **settings)
    return frechet_distance(real, generated_statistics(generator, extractor, device=device, **settings))


def fd_extractor(
    real: ImageDataset,
    dataset: str,
    *,
    classifier: str | None = None,
    inception: str | None = None,
    device: torch.device = torch.device("cpu"),
) -> tuple[FeatureExtractor, str]:
    """The feature extractor of an FD on ``dataset`` and the metric's honest name.

    ``inception`` (NVIDIA's pt_inception-2015-12-05 weights) gives FID; otherwise the features
    of ``classifier``, a backbone trained on the dataset (Fashion-MNIST defaults to the shipped
    one), give ``FD-<dataset>-classifier``; the classifier sees images at the size it was trained
    at, else at the dataset's training size, or the size of ``real``'s images for a dataset
    without one (an image folder).
    """
    from squeeze_span.assets import FASHION_MNIST_CLASSIFIER
    from squeeze_span.data import normalization_stats
    from squeeze_span.errors import ConfigError
    from squeeze_span.eval.features import view_size
    from squeeze_span.models import load_backbone

    if inception:
        return InceptionFeatures(inception).to(device), "FID"
    if classifier is None and dataset != "fashion_mnist":
        raise ConfigError(f"fd on {dataset} needs --classifier BACKBONE (trained on it) or --inception PT")
    backbone = load_backbone(classifier or FASHION_MNIST_CLASSIFIER).to(device)
    mean, std = normalization_stats(dataset, backbone.config["in_channels"])
    size, _ = view_size(backbone, dataset, real.image_size[0])
    return BackboneFeatures(backbone, size, mean, std), f"FD-{dataset}-classifier"
