"""The linear probe with few labels: N labelled train images per class, over several fixed draws.

With every label, a linear probe on Fashion-MNIST scores raw pixels at 84.75 and a supervised
network at 88.52, so every representation lands in a few points. With 10 or 100 labels per class
the representation has to do more of the work, and the semi-supervised literature scores it so.

Each draw d picks N train images of each class with a generator seeded by d alone, so every
backbone probed on one dataset sees the same labelled images: two backbones' scores can be
compared draw by draw. The weight decay is chosen by stratified k-fold cross-validation inside
the labelled subset (the test split is never looked at), then the probe is refitted on the whole
subset and scored on test. The features are standardized with the statistics of every train
image, labelled or not, as an unlabelled train set is at hand in this setting.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from squeeze_span.errors import ConfigError
from squeeze_span.eval.linear import WEIGHT_DECAY_GRID, fit_logistic_regression, standardize
from squeeze_span.eval.metrics import topk_accuracy

DRAWS = 5
FOLDS = 5


@dataclass
class FewLabelResult:
    labels_per_class: int
    top1: float  # the mean over the draws
    std: float  # over the draws
    draws: list[float]  # top-1 of each draw, in draw order: for comparisons draw by draw
    weight_decays: list[float]  # the decay cross-validation chose in each draw


def draw_labelled(labels: torch.Tensor, labels_per_class: int, draw: int) -> torch.Tensor:
    """Indices of ``labels_per_class`` images of each class in ``labels`` (-1: unlabelled), the same for a
    given draw and labels.

    Ordered pick by pick (the first pick of every class, then the second, ...): the pick number
    of position i is i // classes, and pick number modulo k gives k stratified folds.
    """
    generator = torch.Generator().manual_seed(draw)
    picks = []
    for label in labels[labels >= 0].unique().tolist():
        pool = (labels == label).nonzero().squeeze(1)
        if len(pool) < labels_per_class:
            raise ConfigError(
                f"labels per class {labels_per_class}: class {label} has only {len(pool)} labelled train images; "
                "ask for fewer"
            )
        picks.append(pool[torch.randperm(len(pool), generator=generator)[:labels_per_class]])
    return torch.stack(picks, dim=1).reshape(-1)


def folds_of(count: int, labels_per_class: int, folds: int = FOLDS, device: torch.device | str = "cpu") -> torch.Tensor:
    """The cross-validation fold (0..k-1, k = min(folds, labels_per_class)) of each of the ``count`` images that
    draw_labelled picked, in its order: stratified, each fold holding the same picks of every class."""
    pick = torch.arange(count, device=device) // (count // labels_per_class)
    return pick % min(folds, labels_per_class)


def cross_validated_decay(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    fold_of: torch.Tensor,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
) -> float:
    """The decay with the best mean held-out top-1 over the folds that ``fold_of`` (0..k-1) assigns."""
    scores = cross_validation_scores(features, labels, num_classes, fold_of, weight_decays)
    return max(scores, key=scores.get)  # the weakest decay of a tie


def cross_validation_scores(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    fold_of: torch.Tensor,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
) -> dict[float, float]:
    """Each decay's mean held-out top-1 over the folds that ``fold_of`` (0..k-1) assigns, weakest decay first."""
    folds = int(fold_of.max()) + 1
    scores = dict.fromkeys(sorted(weight_decays), 0.0)
    for fold in range(folds):
        fit, held_out = fold_of != fold, fold_of == fold
        previous = None
        for weight_decay in sorted(weight_decays, reverse=True):  # strongest first, each from the last
            previous = fit_logistic_regression(features[fit], labels[fit], num_classes, weight_decay, previous)
            with torch.no_grad():
                accuracy = topk_accuracy(previous(features[held_out]), labels[held_out], ks=(1,))["top1"]
            scores[weight_decay] += accuracy / folds
    return scores


def few_label_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    labels_per_class: int,
    draws: int = DRAWS,
    folds: int = FOLDS,
) -> FewLabelResult:
    """Fit on ``labels_per_class`` labelled images per class, score on test; ``draws`` times."""
    if labels_per_class < 2:
        raise ConfigError(
            f"labels per class {labels_per_class}: the weight decay is cross-validated, which needs at least 2"
        )
    if draws < 1:
        raise ConfigError(f"draws {draws}: at least one draw is needed")
    train_x, test_x = standardize(train_features.double(), test_features.double())
    scores, decays = [], []
    for draw in range(draws):
        chosen = draw_labelled(train_labels, labels_per_class, draw).to(train_x.device)
        x, y = train_x[chosen], train_labels[chosen]
        decay = cross_validated_decay(x, y, num_classes, folds_of(len(chosen), labels_per_class, folds, y.device))
        classifier = fit_logistic_regression(x, y, num_classes, decay)
        with torch.no_grad():
            scores.append(topk_accuracy(classifier(test_x), test_labels, ks=(1,))["top1"])
        decays.append(decay)
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return FewLabelResult(labels_per_class, statistics.fmean(scores), spread, scores, decays)
