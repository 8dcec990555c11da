"""Losses: pure, typed functions of tensors. They import nothing from this project.

VICReg's terms (Bardes, Ponce, LeCun, ICLR 2022), which Squeeze and Span (Yang et al.,
NeurIPS 2022) reuses both for distilling the generator and for the real images:

- invariance: mean squared error between two representations;
- variance: a hinge keeping every dimension's standard deviation at 1 or above;
- covariance: the squared off-diagonal covariances, pushing dimensions apart.

And SimSiam's negative cosine similarity with stop-gradient (Chen and He, CVPR 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_batch(z: torch.Tensor, name: str = "z") -> None:
    if z.dim() != 2:
        raise ValueError(f"{name} must be [batch, dim], got shape {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"{name} needs a batch of at least 2 to estimate variances, got {z.shape[0]}")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"the two representations must both be [batch, dim], got {tuple(a.shape)} and {tuple(b.shape)}")


def invariance_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s(a, b) = (1 / (N D)) * sum_{n, j} (a_nj - b_nj)^2: VICReg's invariance term, eq. (5)."""
    _check_pair(a, b)
    return F.mse_loss(a, b)


def variance_loss(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = (1 / D) * sum_j relu(1 - sqrt(Var(z_j) + eps)): VICReg's variance term, eq. (1).

    Var is the unbiased variance over the batch; the hinge target 1 is VICReg's gamma.
    """
    _check_batch(z)
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = (1 / D) * sum_{i != j} C(Z)_ij^2 with C(Z) = (Z - mean)^T (Z - mean) / (N - 1): VICReg eq. (3)."""
    _check_batch(z)
    n, d = z.shape
    centered = z - z.mean(dim=0)
    covariance = centered.T @ centered / (n - 1)
    off_diagonal = covariance - torch.diag_embed(torch.diagonal(covariance))
    return off_diagonal.square().sum() / d


def vicreg_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """VICReg between two views: λ s(a, b) + μ (v(a) + v(b)) + ν (c(a) + c(b)).

    Returns the weighted total under ``loss`` and each unweighted term under
    ``invariance``, ``variance`` and ``covariance`` (the latter two summed over both
    views), so a trainer can log them.
    """
    _check_pair(a, b)
    terms = {
        "invariance": invariance_loss(a, b),
        "variance": variance_loss(a) + variance_loss(b),
        "covariance": covariance_loss(a) + covariance_loss(b),
    }
    terms["loss"] = (
        invariance_weight * terms["invariance"]
        + variance_weight * terms["variance"]
        + covariance_weight * terms["covariance"]
    )
    return terms


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -mean_n cos(p_n, stopgrad(z_n)): SimSiam's negative cosine similarity, eq. (1).

    The symmetric loss is 0.5 * (simsiam_loss(p1, z2) + simsiam_loss(p2, z1)).
    """
    _check_pair(p, z)
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()
