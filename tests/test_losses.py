import math

import pytest
import torch

from squeeze_span.losses import (
    covariance_loss,
    invariance_loss,
    negative_cosine,
    perceptual_distance,
    simsiam_loss,
    squeeze_loss,
    variance_loss,
    vicreg_loss,
    weighted_sum,
)

# A 3x2 batch small enough to work out by hand.
Z = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
# Column means (3, 2); centered columns (-2, 0, 2) and (0, -2, 2).
# Unbiased variances: 8/2 = 4 and 8/2 = 4; covariance: (0 + 0 + 4)/2 = 2.


def test_variance_loss_by_hand():
    # std = sqrt(4 + eps) ~ 2 > 1, so the hinge is zero.
    assert variance_loss(Z).item() == 0.0
    small = Z / 10  # variances 0.04: std = sqrt(0.04 + 1e-4)
    expected = 1 - math.sqrt(0.04 + 1e-4)
    assert variance_loss(small).item() == pytest.approx(expected, rel=1e-5)


def test_covariance_loss_by_hand():
    # Off-diagonal C_01 = C_10 = 2: (2^2 + 2^2) / D=2 = 4.
    assert covariance_loss(Z).item() == pytest.approx(4.0)


def test_invariance_loss_by_hand():
    other = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 4.0]])
    # Differences (0, 2), (0, 0), (3, 0): (4 + 9) / 6.
    assert invariance_loss(Z, other).item() == pytest.approx(13 / 6)


def test_vicreg_loss_weights_its_terms():
    other = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 4.0]])
    terms = vicreg_loss(Z, other, invariance_weight=2.0, variance_weight=3.0, covariance_weight=5.0)
    expected = (
        2.0 * (13 / 6)
        + 3.0 * (variance_loss(Z) + variance_loss(other))
        + 5.0 * (covariance_loss(Z) + covariance_loss(other))
    )
    assert terms["loss"].item() == pytest.approx(expected.item())
    assert terms["covariance"].item() == pytest.approx(4.0 + covariance_loss(other).item())


def test_weighted_sum_by_hand_and_refuses_terms_without_a_weight():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(-1.0)}
    result = weighted_sum(terms, {"a": 3.0, "b": 4.0})
    assert result["loss"].item() == 2.0 and result["a"].item() == 2.0  # 3 * 2 + 4 * -1
    with pytest.raises(ValueError, match=r"must name exactly the terms \['a', 'b'\]"):
        weighted_sum(terms, {"a": 3.0, "c": 4.0})


def test_squeeze_loss_by_hand_with_and_without_the_teacher_terms():
    teacher = Z / 10  # std ~0.2: the teacher's own variance term is 1 - sqrt(0.04 + 1e-4)
    # Differences 0.9 * Z: 0.81 * (1 + 4 + 9 + 0 + 25 + 16) / 6.
    invariance = 0.81 * 55 / 6
    terms = squeeze_loss(Z, teacher, invariance_weight=2.0, variance_weight=3.0, covariance_weight=5.0)
    # Z's variance term is 0 (std 2) and its covariance term 4.
    assert terms["loss"].item() == pytest.approx(2.0 * invariance + 5.0 * 4.0, rel=1e-6)
    regularized = squeeze_loss(Z, teacher, 2.0, 3.0, 5.0, teacher_regularization=True)
    extra = 3.0 * (1 - math.sqrt(0.04 + 1e-4)) + 5.0 * 4.0 / 100**2  # covariances / 100, squared
    assert regularized["loss"].item() == pytest.approx(terms["loss"].item() + extra, rel=1e-6)


def test_negative_cosine_by_hand():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    assert negative_cosine(p, z).item() == pytest.approx(-0.5)  # cosines 1 and 0


def test_simsiam_loss_by_hand_and_stops_the_gradient():
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    p2 = torch.tensor([[0.0, 2.0], [3.0, 4.0]], requires_grad=True)
    z1 = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = simsiam_loss(p1, p2, z1, z2)
    # D(p1, z2): cosines 1 and 0. D(p2, z1): cosines 2 / (2 sqrt 2) and -4 / 5. L = (D + D) / 2.
    expected = 0.5 * (-(1 + 0) / 2 - (1 / math.sqrt(2) - 0.8) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert z1.grad is None and z2.grad is None  # the targets are stopped
    # dL/dp2[0] = -(1/4) * (z1[0]/|z1[0]| - cos * p2[0]/|p2[0]|) / |p2[0]|: (-1/4)(1/sqrt2, 0) / 2
    torch.testing.assert_close(p2.grad[0], torch.tensor([-1 / (8 * math.sqrt(2)), 0.0]))


def test_collapsed_batch_is_penalised():
    collapsed = torch.ones(8, 4)
    assert variance_loss(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4))
    assert covariance_loss(collapsed).item() == 0.0


def test_perceptual_distance_by_hand():
    # Layer 1, one position: (3, 4) and (4, 3) are (0.6, 0.8) and (0.8, 0.6) on the unit circle: 0.04 + 0.04.
    layer1_a = torch.tensor([3.0, 4.0, 1.0, 1.0]).view(2, 2, 1, 1)  # image 2: (1, 1) on both sides
    layer1_b = torch.tensor([4.0, 3.0, 1.0, 1.0]).view(2, 2, 1, 1)
    # Layer 2, two positions: (1, 0) against (0, 1) is 2, (2, 0) against (5, 0) is 0 (only the direction
    # counts): 1 over space. Image 2 is equal on both sides.
    layer2_a = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]], [[[1.0, 1.0]], [[2.0, 2.0]]]])
    layer2_b = torch.tensor([[[[0.0, 5.0]], [[1.0, 0.0]]], [[[1.0, 1.0]], [[2.0, 2.0]]]])
    assert layer2_a.shape == (2, 2, 1, 2)
    # Image 1: 0.08 + 1; image 2: 0; the mean over the batch of 2.
    distance = perceptual_distance([layer1_a, layer2_a], [layer1_b, layer2_b])
    assert distance.item() == pytest.approx(1.08 / 2, rel=1e-6)
    assert perceptual_distance([layer1_a, layer2_a], [layer1_a, 3 * layer2_a]).item() == 0.0


def test_perceptual_distance_of_random_maps_matches_lpips_form():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 4, 2), torch.randn(3, 5, 4, 2)
    unit_a, unit_b = (x / x.square().sum(dim=1, keepdim=True).sqrt() for x in (a, b))
    expected = (unit_a - unit_b).square().sum(dim=1).mean(dim=(1, 2)).mean()
    torch.testing.assert_close(perceptual_distance([a], [b]), expected, atol=1e-6, rtol=1e-6)
    # The gradient reaches the first side through the normalisation.
    a.requires_grad_()
    perceptual_distance([a], [b]).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: perceptual_distance([torch.ones(2, 3, 4, 4)], [torch.ones(2, 3, 2, 2)]),
            r"layer 0's maps must both be \[batch, channels, height, width\], got \(2, 3, 4, 4\) and \(2, 3, 2, 2\)",
        ),
        (
            lambda: perceptual_distance([torch.ones(2, 3)], [torch.ones(2, 3)]),
            r"layer 0's maps must both be",
        ),
        (
            lambda: perceptual_distance([torch.ones(1, 1, 1, 1)], []),
            "one feature map per layer on both sides, got 1 and 0",
        ),
    ],
)
def test_perceptual_distance_shape_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: variance_loss(torch.ones(4)), r"z must be \[batch, dim\], got shape \(4,\)"),
        (lambda: covariance_loss(torch.ones(1, 4)), "batch of at least 2"),
        (lambda: invariance_loss(torch.ones(3, 2), torch.ones(3, 4)), r"got \(3, 2\) and \(3, 4\)"),
        (
            lambda: simsiam_loss(torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 2), torch.ones(2, 2)),
            r"of one shape, got \(3, 2\), \(3, 2\), \(3, 2\) and \(2, 2\)",
        ),
    ],
)
def test_shape_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_gan_logistic_losses_by_hand():
    from squeeze_span.losses import discriminator_logistic_loss, generator_logistic_loss

    real = torch.tensor([[0.0], [2.0]])
    fake = torch.tensor([[0.0], [-1.0], [math.log(3.0)]])

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    # G: softplus(-fake) = log 2, log(1 + e), log(4/3).
    expected_g = (math.log(2) + softplus(1.0) + math.log(4 / 3)) / 3
    assert generator_logistic_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)
    # D: mean softplus(fake) + mean softplus(-real) = (log 2 + log(1 + 1/e) + log 4) / 3 + (log 2 + log(1 + e^-2)) / 2.
    expected_d = (math.log(2) + softplus(-1.0) + math.log(4)) / 3 + (math.log(2) + softplus(-2.0)) / 2
    assert discriminator_logistic_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    from squeeze_span.losses import r1_penalty

    weight = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]], requires_grad=True)  # D(x) = sum(w * x)
    images = torch.randn(5, 1, 2, 2, requires_grad=True)
    logits = (images * weight).sum(dim=[1, 2, 3]).unsqueeze(1)
    penalty = r1_penalty(logits, images)
    assert penalty.item() == pytest.approx(1 + 4 + 0.25 + 9)
    penalty.backward()  # create_graph: the penalty's gradient reaches D's weights, d||w||^2/dw = 2w
    torch.testing.assert_close(weight.grad, 2 * weight.detach())


def test_gan_loss_shape_errors_name_the_problem():
    from squeeze_span.losses import discriminator_logistic_loss, r1_penalty

    with pytest.raises(ValueError, match=r"fake_logits must be \[batch\] or \[batch, 1\].*\(3, 2\)"):
        discriminator_logistic_loss(torch.zeros(3, 1), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="must require grad"):
        r1_penalty(torch.zeros(2, 1), torch.zeros(2, 1, 4, 4))
