"""Frozen-backbone features of a whole dataset, computed once for the probes, and the size of the views."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.data import ImageDataset, center_view, dataset_info
from squeeze_span.runtime import autocast

# Why a backbone sees views of the size it does (see view_size).
SIZE_GIVEN, TRAINED_SIZE, DATASET_DEFAULT = "--size", "trained size", "dataset default"
OWN_SIZE = "own size"  # the images' own: a discriminator fits them to its input itself


def view_size(backbone: nn.Module, dataset: str, image_side: int, size: int | None = None) -> tuple[int, str]:
    """The side of the views ``backbone`` is shown of ``dataset``'s images, and why.

    ``size`` when given; else the size the backbone was trained at, when its config records it
    (:class:`~squeeze_span.models.ResNet`'s ``image_size``); else the dataset's view size, which
    for an image folder is its images' own ``image_side``.
    """
    if size is not None:
        return size, SIZE_GIVEN
    trained = getattr(backbone, "config", {}).get("image_size")
    if trained is not None:
        return trained, TRAINED_SIZE
    return dataset_info(dataset).training_size(image_side), DATASET_DEFAULT


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: ImageDataset,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
    progress: bool = True,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (float32, on `device`) and labels [N] of the center view of every image.

    The backbone runs in eval mode, so BatchNorm uses its running statistics and the
    features do not depend on the batch. A backbone with a classifier gives its
    ``forward_features``, the pooled features before the classifier.
    """
    embed = getattr(backbone, "forward_features", backbone)
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", disable=not progress):
            index = torch.arange(start, min(start + batch_size, len(dataset)))
            images, batch_labels = dataset.get_batch(index)
            view = center_view(images.to(device, non_blocking=True), size, mean, std)
            with autocast(device, precision):
                output = embed(view.contiguous(memory_format=torch.channels_last))
            features.append(output.float())
            labels.append(batch_labels.to(device))
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels)
