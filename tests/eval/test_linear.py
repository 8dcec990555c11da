import pytest
import torch
import torch.nn.functional as F

from squeeze_span.eval import linear_probe_fast, topk_accuracy
from squeeze_span.eval.linear import (
    GRADIENT_TOLERANCE,
    WEIGHT_DECAY_GRID,
    fit_logistic_regression,
    gradient_norm,
    standardize,
)


def clusters(n_per_class, num_classes, dim, spread, generator):
    centers = 5 * torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat(n_per_class)
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def test_separable_clusters_probe_to_100_percent():
    generator = torch.Generator().manual_seed(0)
    x, y = clusters(100, 5, 16, 0.5, generator)
    test_x, test_y = clusters(40, 5, 16, 0.5, torch.Generator().manual_seed(0))
    result = linear_probe_fast(x, y, test_x, test_y, num_classes=5)
    assert result.top1 == 100.0
    assert result.top5 == 100.0
    assert list(result.validation_top1) == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0] == list(WEIGHT_DECAY_GRID)
    assert result.converged and result.gradient_norm <= GRADIENT_TOLERANCE
    assert not result.weight_decay_at_grid_edge  # 1e-6 is chosen, but inner decays tie with it


@pytest.mark.parametrize("progress", [True, False])
def test_the_fast_probe_shows_a_bar_over_its_weight_decays(progress, capsys):
    x, y = clusters(20, 3, 8, 0.5, torch.Generator().manual_seed(0))
    linear_probe_fast(x, y, x, y, num_classes=3, weight_decays=(1e-3, 1e-2, 1e-1), progress=progress)
    error = capsys.readouterr().err
    assert ("linear probe (fast): 100%" in error and "3/3" in error) == progress and (error == "") != progress


def test_shuffled_labels_probe_at_chance():
    generator = torch.Generator().manual_seed(1)
    x, y = clusters(300, 4, 16, 0.5, generator)
    test_x, test_y = clusters(500, 4, 16, 0.5, generator)
    shuffled = y[torch.randperm(len(y), generator=generator)]
    # Test labels independent of the features too: with the clusters' own labels, every point of a
    # cluster gets one prediction, and the accuracy jumps in steps of a cluster (25 points).
    test_shuffled = test_y[torch.randperm(len(test_y), generator=generator)]
    result = linear_probe_fast(x, shuffled, test_x, test_shuffled, num_classes=4)
    assert 18.0 < result.top1 < 32.0  # chance is 25%; 2000 independent test labels give a std of ~1%


def test_unlabeled_training_images_are_left_out():
    generator = torch.Generator().manual_seed(2)
    x, y = clusters(50, 3, 8, 0.5, generator)
    noisy_y = y.clone()
    noisy_y[::2] = -1  # half the train set is unlabeled: it must not be read as a class
    result = linear_probe_fast(x, noisy_y, x, y, num_classes=3)
    assert result.top1 == 100.0


def test_logistic_regression_reaches_the_regularised_optimum():
    generator = torch.Generator().manual_seed(3)
    x, y = clusters(40, 3, 6, 3.0, generator)
    (x,) = standardize(x)
    weight_decay = 1e-2
    classifier = fit_logistic_regression(x, y, 3, weight_decay)
    loss = F.cross_entropy(classifier(x), y) + 0.5 * weight_decay * classifier.weight.square().sum()
    gradients = torch.autograd.grad(loss, list(classifier.parameters()))
    assert max(g.abs().max().item() for g in gradients) < 1e-4


def test_standardize_uses_train_statistics_only():
    train = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    test = torch.tensor([[1.0, 20.0]])
    train_z, test_z = standardize(train, test)
    torch.testing.assert_close(test_z, torch.zeros(1, 2))
    torch.testing.assert_close(train_z.std(dim=0), torch.ones(2))


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    accuracy = topk_accuracy(scores, labels, ks=(1, 2))
    assert accuracy == pytest.approx({"top1": 100 / 3, "top2": 200 / 3})


def correlated_clusters(n_per_class, num_classes, latent, dim, noise, generator):
    """Clusters in ``latent`` dimensions mixed into ``dim`` nearly collinear features: an ill-conditioned fit."""
    labels = torch.arange(num_classes).repeat(n_per_class)
    centers = 3 * torch.randn(num_classes, latent, generator=generator)
    z = centers[labels] + 3 * torch.randn(len(labels), latent, generator=generator)
    mixed = z @ torch.randn(latent, dim, generator=generator)
    return mixed + noise * torch.randn(len(labels), dim, generator=generator), labels


def test_a_weak_decay_fit_runs_to_convergence():
    x, y = correlated_clusters(100, 10, 8, 32, 0.1, torch.Generator().manual_seed(1))
    (x,) = standardize(x.double())
    # 300 float32 L-BFGS iterations with a memory of 20 stopped here at a gradient of 2.5e-4.
    assert gradient_norm(fit_logistic_regression(x, y, 10, 1e-6), x, y, 1e-6) <= GRADIENT_TOLERANCE


def test_a_winning_grid_edge_is_reported(capsys):
    generator = torch.Generator().manual_seed(6)
    # Noise stretched along the mean difference: a fitted direction undoes it, a strongly decayed one cannot.
    labels = torch.arange(2).repeat(1000)
    noise = torch.randn(2000, 2, generator=generator) * torch.tensor([3.0, 0.3])
    x = noise @ torch.tensor([[0.8, 0.6], [-0.6, 0.8]]) + labels[:, None] * torch.tensor([1.0, 0.5])
    result = linear_probe_fast(x[:1000], labels[:1000], x[1000:], labels[1000:], 2, weight_decays=(1e-2, 1e-1, 1, 10))
    assert result.weight_decay == 1e-2 and result.weight_decay_at_grid_edge
    assert result.validation_top1[1e-2] > max(result.validation_top1[decay] for decay in (1e-1, 1))
    assert capsys.readouterr().err == (
        "warning: linear probe: weight decay 0.01, the weakest of the grid 0.01..10, beat every inner value; "
        "a decay beyond the grid may probe better\n"
    )
