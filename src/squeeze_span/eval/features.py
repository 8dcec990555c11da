"""Frozen-backbone features of a whole dataset, computed once for the probes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.data import ImageDataset, center_view
from squeeze_span.runtime import autocast


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
