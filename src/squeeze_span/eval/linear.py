"""Linear probes on a frozen backbone.

Two protocols:

- ``fast`` (default): features of a center view are extracted once and standardized;
  a multinomial logistic regression is fitted with full-batch L-BFGS in float64, to
  convergence (checked, and reported in the result). The weight decay is chosen from
  1e-6..1 on a held-out 10% of train, fitting the decays from the strongest down, each
  from the previous solution; then the probe is refitted on all of train. Seconds on a
  CPU, and deterministic.
- ``paper``: the paper's protocol (SGD, momentum 0.9, lr 30 x batch/256, batch 256,
  90 epochs, cosine schedule, no weight decay, RandomResizedCrop and flip on train,
  a center view on test). Meant for a GPU.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.data import BatchAugmentation, ImageDataset
from squeeze_span.eval.features import extract_features
from squeeze_span.eval.metrics import topk_accuracy
from squeeze_span.runtime import autocast

WEIGHT_DECAY_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
GRADIENT_TOLERANCE = 1e-5  # on the objective's largest gradient entry, L-BFGS's own stopping test
MAX_ITERATIONS = 1000  # a bound, not a stopping rule: warm-started fits converge in far fewer
# L-BFGS's memory: every step of a warm-started fit (up to ~200), two classifier-sized vectors each.
# On 20000 x 128 features the whole grid then takes 791 evaluations, against 1239 with a memory of 20.
HISTORY_SIZE = 200


@dataclass
class ProbeResult:
    top1: float
    top5: float
    protocol: str
    weight_decay: float = 0.0
    validation_top1: dict[float, float] = field(default_factory=dict)
    # The fast protocol's checks: the largest gradient entry of the final fit, whether every fit
    # reached GRADIENT_TOLERANCE, and whether the chosen decay beat every inner value of its grid.
    gradient_norm: float | None = None
    converged: bool | None = None
    weight_decay_at_grid_edge: bool | None = None


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature to zero mean and unit variance, with statistics from `train` alone."""
    mean = train.mean(dim=0)
    std = train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def logistic_objective(
    classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor, weight_decay: float
) -> torch.Tensor:
    """Mean cross-entropy + weight_decay/2 * ||W||^2 (the bias is not decayed)."""
    return F.cross_entropy(classifier(features), labels) + 0.5 * weight_decay * classifier.weight.square().sum()


def gradient_norm(classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor, weight_decay: float) -> float:
    """The largest entry of the objective's gradient (its infinity norm): 0 at the optimum."""
    objective = logistic_objective(classifier, features, labels, weight_decay)
    return max(
        gradient.abs().max().item() for gradient in torch.autograd.grad(objective, list(classifier.parameters()))
    )


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    start: nn.Linear | None = None,
    max_iter: int = MAX_ITERATIONS,
) -> nn.Linear:
    """Minimise :func:`logistic_objective` with full-batch L-BFGS, from ``start``'s weights (zeros when None).

    The objective is convex, so the result does not depend on the start or on batch order:
    the probe measures the features, not the optimiser's luck. A start near the optimum (the
    solution at a neighbouring weight decay) only makes it converge in fewer iterations. The
    classifier has the features' dtype: in float64 the loss resolves the small steps that the
    last digits of the gradient need, which float32 rounds away.
    """
    classifier = nn.Linear(features.shape[1], num_classes, device=features.device, dtype=features.dtype)
    with torch.no_grad():
        if start is None:
            classifier.weight.zero_()
            classifier.bias.zero_()
        else:
            classifier.load_state_dict(start.state_dict())
    optimizer = torch.optim.LBFGS(
        classifier.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=HISTORY_SIZE,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=1e-15,  # stop on the gradient, not on a stalled float32-sized loss change
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        objective = logistic_objective(classifier, features, labels, weight_decay)
        objective.backward()
        return objective

    optimizer.step(closure)
    return classifier


def linear_probe_fast(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAY_GRID,
    validation_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> ProbeResult:
    """Choose the weight decay on a held-out part of train, refit on all of train, score on test.

    The decays are fitted from the strongest down, each starting from the previous solution;
    ``progress`` shows a bar over them (the fits take most of a probe's time).
    A warning line goes to stderr when a fit stops short of convergence, or when an edge of
    the grid beats every inner decay (the best value may lie beyond the grid).
    """
    labeled = train_labels >= 0
    train_features, train_labels = train_features[labeled], train_labels[labeled]
    if train_features.shape[0] < 2:
        raise ValueError("the linear probe needs at least 2 labeled training images")
    order = torch.randperm(train_features.shape[0], generator=torch.Generator().manual_seed(seed))
    held_out = max(1, int(round(validation_fraction * train_features.shape[0])))
    fit_index, val_index = order[held_out:].to(train_features.device), order[:held_out].to(train_features.device)

    fit_x, val_x = standardize(train_features[fit_index].double(), train_features[val_index].double())
    fit_y, val_y = train_labels[fit_index], train_labels[val_index]
    fits: dict[float, nn.Linear] = {}
    gradient_norms = []
    previous = None
    bar = tqdm(sorted(weight_decays, reverse=True), desc="linear probe (fast)", unit="decay", disable=not progress)
    for weight_decay in bar:
        previous = fits[weight_decay] = fit_logistic_regression(fit_x, fit_y, num_classes, weight_decay, previous)
        gradient_norms.append(gradient_norm(previous, fit_x, fit_y, weight_decay))
    with torch.no_grad():
        validation_top1 = {
            weight_decay: topk_accuracy(fits[weight_decay](val_x), val_y, ks=(1,))["top1"]
            for weight_decay in sorted(weight_decays)
        }
    best = max(validation_top1, key=validation_top1.get)  # the weakest decay of a tie
    decays = list(validation_top1)
    inner = [validation_top1[weight_decay] for weight_decay in decays[1:-1]]
    at_edge = bool(inner) and best in (decays[0], decays[-1]) and max(inner) < validation_top1[best]

    train_x, test_x = standardize(train_features.double(), test_features.double())
    classifier = fit_logistic_regression(train_x, train_labels, num_classes, best, fits[best])
    gradient_norms.append(gradient_norm(classifier, train_x, train_labels, best))
    converged = max(gradient_norms) <= GRADIENT_TOLERANCE
    if not converged:
        _warn(
            f"a logistic-regression fit stopped at gradient {max(gradient_norms):.1e}, above the tolerance "
            f"{GRADIENT_TOLERANCE:.0e}; the accuracy may be underestimated"
        )
    if at_edge:
        side = "strongest" if best == decays[-1] else "weakest"
        _warn(
            f"weight decay {best:g}, the {side} of the grid {decays[0]:g}..{decays[-1]:g}, beat every inner value; "
            "a decay beyond the grid may probe better"
        )
    with torch.no_grad():
        accuracy = topk_accuracy(classifier(test_x), test_labels)
    return ProbeResult(
        accuracy["top1"], accuracy["top5"], "fast", best, validation_top1, gradient_norms[-1], converged, at_edge
    )


def _warn(message: str) -> None:
    print(f"warning: linear probe: {message}", file=sys.stderr, flush=True)


def linear_probe_paper(
    backbone: nn.Module,
    train_set: ImageDataset,
    test_set: ImageDataset,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    epochs: int = 90,
    batch_size: int = 256,
    base_lr: float = 30.0,
    seed: int = 0,
    progress: bool = True,
) -> ProbeResult:
    """The paper's linear evaluation: a linear layer trained by SGD on augmented views of frozen features."""
    generator = torch.Generator().manual_seed(seed)
    backbone.eval()
    augmentation = BatchAugmentation(
        size, mean, std, scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.5
    )
    labeled = torch.from_numpy(train_set.labels >= 0).nonzero().squeeze(1)
    steps_per_epoch = math.ceil(len(labeled) / batch_size)
    total_steps = epochs * steps_per_epoch
    classifier = nn.Linear(backbone.feature_dim, num_classes, device=device)
    lr = base_lr * batch_size / 256
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )

    bar = tqdm(total=total_steps, desc="linear probe (paper)", unit="step", disable=not progress)
    for _ in range(epochs):
        for index in labeled[torch.randperm(len(labeled), generator=generator)].split(batch_size):
            images, labels = train_set.get_batch(index)
            views = augmentation(images.to(device), generator=generator)
            with torch.no_grad(), autocast(device, precision):
                features = backbone(views.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(classifier(features.float()), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()

    test_features, test_labels = extract_features(
        backbone, test_set, size=size, mean=mean, std=std, device=device, precision=precision, progress=progress
    )
    with torch.no_grad():
        accuracy = topk_accuracy(classifier(test_features), test_labels)
    return ProbeResult(accuracy["top1"], accuracy["top5"], "paper")
