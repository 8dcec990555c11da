import math

import pytest
import torch

from squeeze_span.losses import covariance_loss, invariance_loss, simsiam_loss, variance_loss, vicreg_loss

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
    expected = 2.0 * (13 / 6) + 3.0 * (variance_loss(Z) + variance_loss(other)) + 5.0 * (covariance_loss(Z) + covariance_loss(other))
    assert terms["loss"].item() == pytest.approx(expected.item())
    assert terms["covariance"].item() == pytest.approx(4.0 + covariance_loss(other).item())


def test_simsiam_loss_by_hand_and_stops_the_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = simsiam_loss(p, z)
    assert loss.item() == pytest.approx(-0.5)  # cosines 1 and 0
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_collapsed_batch_is_penalised():
    collapsed = torch.ones(8, 4)
    assert variance_loss(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4))
    assert covariance_loss(collapsed).item() == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: variance_loss(torch.ones(4)), r"z must be \[batch, dim\], got shape \(4,\)"),
        (lambda: covariance_loss(torch.ones(1, 4)), "batch of at least 2"),
        (lambda: invariance_loss(torch.ones(3, 2), torch.ones(3, 4)), r"got \(3, 2\) and \(3, 4\)"),
    ],
)
def test_shape_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
