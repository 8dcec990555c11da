import math

import pytest
import torch

from squeeze_span.errors import ConfigError
from squeeze_span.eval.few_labels import draw_labelled, few_label_probe, folds_of


def two_gaussians(count: int, seed: int, dims: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes 0 and 1 at -1 and +1 on the first axis, unit variance; other axes pure noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    features = torch.randn(count, dims, generator=generator)
    features[:, 0] += 2.0 * labels - 1.0
    return features, labels


def test_the_draws_are_stratified_and_the_same_for_any_backbone():
    labels = torch.arange(1000) % 10
    labels[::7] = -1  # unlabelled images are never drawn
    first = draw_labelled(labels, 10, draw=3)
    assert torch.equal(first, draw_labelled(labels, 10, draw=3))  # depends on the labels and the draw alone
    assert not torch.equal(first, draw_labelled(labels, 10, draw=4))
    assert len(first) == 100 and len(set(first.tolist())) == 100
    assert torch.bincount(labels[first], minlength=10).tolist() == [10] * 10
    assert (labels[first] >= 0).all()
    # picked pick by pick, so that folds_of gives stratified folds: 2 images of every class in each of 5
    fold_of = folds_of(len(first), labels_per_class=10)
    for fold in range(5):
        assert torch.bincount(labels[first[fold_of == fold]], minlength=10).tolist() == [2] * 10
    three = draw_labelled(labels, 3, draw=0)  # fewer picks than folds: one fold a pick
    assert torch.bincount(labels[three[folds_of(len(three), 3) == 2]], minlength=10).tolist() == [1] * 10


def test_few_labels_reach_the_bayes_rate_of_two_gaussians():
    # One informative axis with means -1 and +1 and unit variance: the best any classifier can do
    # is Phi(1) = 84.13% top-1. 100 labels a class get there within sampling error.
    train_x, train_y = two_gaussians(4000, seed=0)
    test_x, test_y = two_gaussians(20000, seed=1)
    result = few_label_probe(train_x, train_y, test_x, test_y, num_classes=2, labels_per_class=100)
    bayes = 100 * 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert len(result.draws) == 5 and len(result.weight_decays) == 5
    assert abs(result.top1 - bayes) < 1.0
    assert all(top1 <= bayes + 1.0 for top1 in result.draws)  # nothing scores above the Bayes rate
    assert result.std == pytest.approx(torch.tensor(result.draws).double().std().item(), rel=1e-4)


def test_fewer_labels_and_noise_axes_cost_accuracy_and_the_decay_is_chosen_without_test():
    train_x, train_y = two_gaussians(4000, seed=0, dims=50)
    test_x, test_y = two_gaussians(4000, seed=1, dims=50)
    ten = few_label_probe(train_x, train_y, test_x, test_y, num_classes=2, labels_per_class=10, draws=3)
    hundred = few_label_probe(train_x, train_y, test_x, test_y, num_classes=2, labels_per_class=100, draws=3)
    assert ten.top1 < hundred.top1 - 2  # 49 noise axes overfit 20 labels more than 200
    shuffled = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))]
    blind = few_label_probe(train_x, train_y, test_x, shuffled, num_classes=2, labels_per_class=10, draws=3)
    assert blind.weight_decays == ten.weight_decays  # test labels never reach the choice
    assert abs(blind.top1 - 50) < 5


def test_too_few_images_or_labels_is_one_clear_error():
    features, labels = two_gaussians(30, seed=0)
    with pytest.raises(ConfigError, match="class 0 has only 15 labelled train images"):
        few_label_probe(features, labels, features, labels, num_classes=2, labels_per_class=20)
    with pytest.raises(ConfigError, match="needs at least 2"):
        few_label_probe(features, labels, features, labels, num_classes=2, labels_per_class=1)
