"""Data of the paper's figures.

Figure 2 of "Distilling Representations from GAN Generator via Squeeze and Span" maps
generated images three ways, each point coloured by the class a classifier gives the image
(its pseudo-label): by the latent w ("Latent"), by the generator's features ("G features":
each synthesis block's output, averaged over space and concatenated) and, when the
discriminator is at hand, by its features ("D features": its blocks' outputs and the
epilogue's fc, :class:`DiscriminatorFeatures`' "multi" taps). The authors used
50,000 images of a CIFAR-10 StyleGAN2-ADA and UMAP, our default (:mod:`squeeze_span.eval.embedding`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from squeeze_span.data import dataset_info, normalization_stats
from squeeze_span.errors import ConfigError
from squeeze_span.eval.embedding import embed_2d
from squeeze_span.eval.features import view_size
from squeeze_span.eval.frechet import BackboneFeatures
from squeeze_span.generators.discriminator import DiscriminatorFeatures
from squeeze_span.generators.teacher import DEFAULT_FEATURES, LATENT_FEATURES, Teacher, pooled
from squeeze_span.models import ResNet

LATENT_PANEL, GENERATOR_PANEL, DISCRIMINATOR_PANEL = "Latent", "G features", "D features"
# The generator's modules each panel taps, and how to name them to someone whose generator lacks them.
GENERATOR_TAPS = {
    LATENT_FEATURES: "a 'mapping' module (for the latent panel)",
    DEFAULT_FEATURES: "'synthesis.b<R>' blocks (for the G-features panel)",
}


@dataclass
class GeneratedFeatures:
    """Features of the same N generated images, by panel, with the classifier's pseudo-labels."""

    features: dict[str, torch.Tensor]  # panel name -> [N, D] float32 on the CPU, in the figure's order
    labels: torch.Tensor  # [N] int64: the class the classifier predicts for each image
    class_names: list[str]

    @property
    def histogram(self) -> torch.Tensor:
        """[K] images per pseudo-label: how the generator covers the classes."""
        return torch.bincount(self.labels, minlength=len(self.class_names))


def class_names_for(dataset: str, count: int) -> list[str]:
    """The dataset's class names when it has ``count`` classes, else "0" ... "count-1"."""
    names = dataset_info(dataset).class_names or ()
    return list(names) if len(names) == count else [str(index) for index in range(count)]


def balanced_concat(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``[N, D_k]`` blocks after scaling each to a root-mean-square spread of 1 about its mean.

    Block outputs differ in scale by orders of magnitude across resolutions; unscaled, the
    largest would decide every distance, and the map would show one block, not the network.
    """
    scaled = []
    for block in blocks:
        spread = (block - block.mean(dim=0)).square().sum(dim=1).mean().sqrt()
        scaled.append(block / spread.clamp_min(1e-12))
    return torch.cat(scaled, dim=1)


@torch.no_grad()
def generated_features(
    generator: nn.Module,
    classifier: ResNet,
    dataset: str,
    *,
    discriminator: nn.Module | None = None,
    count: int = 5000,
    batch_size: int = 500,
    image_size: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> GeneratedFeatures:
    """Latent, generator (and discriminator) features of ``count`` generated images, and their pseudo-labels.

    ``classifier`` is a backbone with a classification head trained on ``dataset``; it sees
    each image as it saw the dataset: its channels, its ``image_size`` (default: the size
    it was trained at, else the dataset's training size), its mean and std. The latent panel
    needs a ``mapping`` module (StyleGAN's), the generator panel ``synthesis.b<R>`` blocks.
    """
    from tqdm.auto import tqdm

    dataset_info(dataset)  # an unknown name stops here, before minutes of sampling
    num_classes = int(classifier.config.get("num_classes", 0))
    if num_classes < 2:
        raise ConfigError(
            f"the classifier has no classification head (num_classes {num_classes}); pass a backbone "
            "trained with labels, e.g. one from configs/fashion_mnist/classifier.yaml"
        )
    if count < 4 or batch_size < 1:
        raise ConfigError(f"figure 2 needs at least 4 images in batches of at least 1, got {count} and {batch_size}")
    names = [name for name, _ in generator.named_modules()]
    missing = [taps for regex, taps in GENERATOR_TAPS.items() if not any(re.search(regex, name) for name in names)]
    if missing:
        raise ConfigError(
            f"figure 2 taps StyleGAN's modules, and this {type(generator).__name__} lacks {' and '.join(missing)}; "
            "use a StyleGAN2 generator (a .pkl, a convert-gan folder or a factory returning one)"
        )
    device = torch.device(device)
    teacher = Teacher(generator, "|".join(GENERATOR_TAPS), device=device, seed=seed)
    latent_names = {name for name in teacher.feature_names if re.search(LATENT_FEATURES, name)}
    mean, std = normalization_stats(dataset, classifier.config["in_channels"])
    size, _ = view_size(classifier, dataset, teacher.image_shape[-1], image_size)
    classifier_features = BackboneFeatures(classifier.to(device), size, mean, std)
    discriminator_features = DiscriminatorFeatures(discriminator).to(device) if discriminator is not None else None

    blocks: dict[str, list[list[torch.Tensor]]] = {LATENT_PANEL: [], GENERATOR_PANEL: [], DISCRIMINATOR_PANEL: []}
    labels = []
    for start in tqdm(range(0, count, batch_size), desc="figure 2: sampling", disable=not progress):
        sample = teacher.sample(min(batch_size, count - start))
        features = dict(zip(teacher.feature_names, pooled(sample.features)))
        blocks[LATENT_PANEL].append([f.cpu() for name, f in features.items() if name in latent_names])
        blocks[GENERATOR_PANEL].append([f.cpu() for name, f in features.items() if name not in latent_names])
        labels.append(classifier.fc(classifier_features(sample.images)).argmax(dim=1).cpu())
        if discriminator_features is not None:
            blocks[DISCRIMINATOR_PANEL].append([f.cpu() for f in discriminator_features.tap_features(sample.images)])
    panels = {}
    for panel, batches in blocks.items():
        if batches and batches[0]:
            panels[panel] = balanced_concat([torch.cat(parts) for parts in zip(*batches)])
    return GeneratedFeatures(panels, torch.cat(labels), class_names_for(dataset, num_classes))


def embed_panels(
    features: dict[str, torch.Tensor], method: str = "umap", *, seed: int = 0, progress: bool = False
) -> dict[str, torch.Tensor]:
    """Each panel's ``[N, D]`` features as ``[N, 2]`` CPU map coordinates (see :func:`embed_2d`)."""
    from tqdm.auto import tqdm

    panels = tqdm(features.items(), desc=f"figure 2: {method} maps", disable=not progress)
    return {panel: embed_2d(values, method, seed=seed) for panel, values in panels}
