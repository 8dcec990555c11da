"""Accuracy from class scores."""

from __future__ import annotations

import torch


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{'top1': ..., 'top5': ...} in percent; a k above the number of classes counts every prediction.

    A class scored -inf is never a prediction, so it is never a hit (a kNN class without votes).
    """
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"scores must be [N, K] and labels [N], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    top_scores, ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1)
    hits = (ranked == labels.to(ranked.device).view(-1, 1)) & (top_scores > float("-inf"))
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}
