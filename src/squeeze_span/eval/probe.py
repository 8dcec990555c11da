"""Probe a frozen backbone on a labeled dataset: the numbers every method is judged by."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.data import load_dataset, normalization_stats, split_validation
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
    draws: int = DRAWS,
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
    class for each N in ``labels_per_class``, over ``draws`` fixed draws (``few_label_probe``).
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
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is unknown; use one of {', '.join(PROTOCOLS)}")
    if view not in VIEWS:
        raise ConfigError(f"view={view!r} is unknown; use one of {', '.join(VIEWS)}")
    if split not in EVALUATION_SPLITS:
        raise ConfigError(f"split={split!r} is unknown; use one of {', '.join(EVALUATION_SPLITS)}")
    started = time.perf_counter()
    train_set = load_dataset(dataset, root, "train")
    if split == "validation":
        train_set, test_set = split_validation(train_set)
    else:
        test_set = load_dataset(dataset, root, "test")
    if view == "gan":
        size, size_source = (size, SIZE_GIVEN) if size is not None else (train_set.image_size[0], OWN_SIZE)
        mean = std = (0.5,) * train_set.num_channels
    else:
        size, size_source = view_size(backbone, dataset, train_set.image_size[0], size)
        mean, std = normalization_stats(dataset, train_set.num_channels)
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
    needs_features = (linear and protocol == "fast") or knn_ks or labels_per_class
    if needs_features:
        train_x, train_y = extract_features(
            backbone, train_set, batch_size=batch_size, progress=progress, desc="features (train)", **settings
        )
        test_x, test_y = extract_features(
            backbone, test_set, batch_size=batch_size, progress=progress, desc=f"features ({split})", **settings
        )
    if linear and protocol == "fast":
        result["linear"] = asdict(linear_probe_fast(train_x, train_y, test_x, test_y, num_classes))
    elif linear:
        paper = linear_probe_paper(
            backbone, train_set, test_set, num_classes=num_classes, progress=progress, **settings
        )
        result["linear"] = asdict(paper)
    if knn_ks:
        labeled = train_y >= 0
        result["knn"] = {
            str(k): knn_accuracy(train_x[labeled], train_y[labeled], test_x, test_y, num_classes, k=k) for k in knn_ks
        }
    if labels_per_class:
        fits = tqdm(labels_per_class, desc="few-label probes", unit="N", disable=not progress)
        result["few_labels"] = {
            str(n): asdict(few_label_probe(train_x, train_y, test_x, test_y, num_classes, n, draws)) for n in fits
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_description(device)
    return result
