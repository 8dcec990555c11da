"""Probe a frozen backbone on a labeled dataset: the numbers every method is judged by."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.data import ImageDataset, load_dataset, normalization_stats, split_validation
from squeeze_span.errors import ConfigError
from squeeze_span.eval.features import OWN_SIZE, SIZE_GIVEN, extract_features, view_size
from squeeze_span.eval.few_labels import DRAWS, few_label_probe
from squeeze_span.eval.knn import knn_accuracy
from squeeze_span.eval.linear import linear_probe_fast, linear_probe_paper
from squeeze_span.runtime import machine_description

PROTOCOLS = ("fast", "paper")
EVALUATION_SPLITS = ("test", "validation")  # validation: held out of train, for tuning without seeing test
VIEWS = ("backbone", "gan")


class RawPixels(nn.Module):
    """The floor of Table 2: the normalized pixels of the view, flattened, as features."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float()


def probe_backbone(
    backbone: nn.Module,
    dataset: str,
    root: str | os.PathLike | None = None,
    *,
    protocol: str = "fast",
    split: str = "test",
    knn_ks: Sequence[int] = (),
    labels_per_class: Sequence[int] = (),
    draws: int | Mapping[int, int] = DRAWS,
    linear: bool = True,
    size: int | None = None,
    view: str = "backbone",
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
    progress: bool = True,
) -> dict:
    """Linear-probe (and optionally kNN-probe) `backbone` on the train/test splits of `dataset`.

    The protocols: the linear probe on every label (``protocol``; ``linear=False`` skips it),
    the weighted kNN for each k in ``knn_ks``, and the linear probe on N labelled images per
    class for each N in ``labels_per_class``, over ``draws`` fixed draws (``few_label_probe``; a mapping
    gives each N its own count).
    All of them share one extraction of the features.

    With ``split="validation"`` the probe fits on five sixths of train and scores the held-out
    sixth (``split_validation``); the test split is not read at all. The backbone sees views of
    ``size``, else of the size it was trained at, else of the dataset's view size (``view_size``).

    ``view`` is how `backbone` sees the images: ``"backbone"``, at that size, normalized by the
    dataset's statistics, as our backbones train; ``"gan"``, at ``size``, else at their own size,
    with pixels in [-1, 1], as a GAN's discriminator sees them (it fits them to its input).

    Returns a JSON-ready dict: {"linear": {"top1", "top5", ...}, "knn": {"20": {"top1", "top5"}, ...},
    "few_labels": {"10": {"top1" (mean over draws), "std", "draws", "weight_decays"}, ...}, "image_size",
    "image_size_source" ("--size", "trained size", "dataset default" or "own size"), "seconds", ...}.
    """
    for value, known, name in (
        (protocol, PROTOCOLS, "protocol"),
        (view, VIEWS, "view"),
        (split, EVALUATION_SPLITS, "split"),
    ):
        if value not in known:
            raise ConfigError(f"{name}={value!r} is unknown; use one of {', '.join(known)}")
    started = time.perf_counter()
    train_set, test_set = evaluation_sets(dataset, root, split)
    size, size_source, mean, std = view_settings(backbone, dataset, train_set, size, view)
    num_classes = len(train_set.classes)
    backbone = backbone.to(device).to(memory_format=torch.channels_last).eval()
    settings = dict(size=size, mean=mean, std=std, device=device, precision=precision)
    result: dict = {
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "image_size": size,
        "image_size_source": size_source,
    }
    if linear and protocol == "paper":
        paper = linear_probe_paper(
            backbone, train_set, test_set, num_classes=num_classes, progress=progress, **settings
        )
        result["linear"] = asdict(paper)
    if (linear and protocol == "fast") or knn_ks or labels_per_class:
        extract = dict(batch_size=batch_size, progress=progress, **settings)
        train = extract_features(backbone, train_set, desc="features (train)", **extract)
        test = extract_features(backbone, test_set, desc=f"features ({split})", **extract)
        fast = linear and protocol == "fast"
        result.update(score_features(train, test, num_classes, fast, knn_ks, labels_per_class, draws, progress))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_description(device)
    return result


def evaluation_sets(dataset: str, root: str | os.PathLike | None, split: str) -> tuple[ImageDataset, ImageDataset]:
    """(the images a probe fits on, those it scores): train and test, or 5/6 of train and the held-out 1/6."""
    train_set = load_dataset(dataset, root, "train")
    if split == "validation":
        return split_validation(train_set)
    return train_set, load_dataset(dataset, root, "test")


def view_settings(
    backbone: nn.Module, dataset: str, train_set: ImageDataset, size: int | None, view: str
) -> tuple[int, str, tuple[float, ...], tuple[float, ...]]:
    """The size of the views, why that size, and the normalization's mean and std (see probe_backbone)."""
    if view == "gan":
        size, size_source = (size, SIZE_GIVEN) if size is not None else (train_set.image_size[0], OWN_SIZE)
        return size, size_source, (0.5,) * train_set.num_channels, (0.5,) * train_set.num_channels
    size, size_source = view_size(backbone, dataset, train_set.image_size[0], size)
    mean, std = normalization_stats(dataset, train_set.num_channels)
    return size, size_source, tuple(mean), tuple(std)


def score_features(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    fast_linear: bool,
    knn_ks: Sequence[int],
    labels_per_class: Sequence[int],
    draws: int | Mapping[int, int],
    progress: bool,
) -> dict:
    """Every protocol that works on extracted (features, labels): the fast linear probe, kNN, few labels."""
    (train_x, train_y), (test_x, test_y) = train, test
    result: dict = {}
    if fast_linear:
        result["linear"] = asdict(linear_probe_fast(train_x, train_y, test_x, test_y, num_classes, progress=progress))
    labeled = train_y >= 0
    if knn_ks:
        result["knn"] = {
            str(k): knn_accuracy(train_x[labeled], train_y[labeled], test_x, test_y, num_classes, k=k) for k in knn_ks
        }
    if labels_per_class:
        fits = tqdm(labels_per_class, desc="few-label probes", unit="N", disable=not progress)
        result["few_labels"] = {
            str(n): asdict(
                few_label_probe(
                    train_x, train_y, test_x, test_y, num_classes, n, draws if isinstance(draws, int) else draws[n]
                )
            )
            for n in fits
        }
    return result
