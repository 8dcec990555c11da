"""Weighted k-nearest-neighbour classification on frozen features.

The monitor of InstDisc (Wu et al., 2018), used by solo-learn and lightly: cosine
similarity, the k most similar training features vote for their class with weight
exp(similarity / temperature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from squeeze_span.eval.metrics import topk_accuracy


def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores [Q, num_classes]: score_c(q) = sum over the k nearest x_i with y_i = c of exp(cos(q, x_i) / T).

    A class that none of the k nearest votes for scores -inf, so that it is never predicted
    (not even in a top-5 when fewer than 5 classes got votes). Queries are processed in
    chunks so that the [Q, N] similarity matrix never exists whole.
    """
    if train_features.ndim != 2 or query_features.ndim != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"knn_scores needs [N, D] train and [Q, D] query features, got {tuple(train_features.shape)} "
            f"and {tuple(query_features.shape)}"
        )
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(f"train_labels must have shape [{train_features.shape[0]}], got {tuple(train_labels.shape)}")
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].float(), dim=1)
        similarity, index = (query @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        chunk_scores = torch.zeros(query.shape[0], num_classes, device=query.device)
        chunk_scores.scatter_add_(1, labels[index], weights)
        # From the votes, not from a zero sum: exp(cos / T) may underflow to 0 at a small T.
        voted = torch.zeros_like(chunk_scores, dtype=torch.bool).scatter_(1, labels[index], True)
        scores.append(chunk_scores.masked_fill_(~voted, float("-inf")))
    return torch.cat(scores)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) of the weighted kNN classifier."""
    scores = knn_scores(train_features, train_labels, test_features, num_classes, k, temperature)
    return topk_accuracy(scores, test_labels)
