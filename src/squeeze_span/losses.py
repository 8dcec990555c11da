"""Losses: pure, typed functions of tensors. They import nothing from this project.

VICReg's terms (Bardes, Ponce, LeCun, ICLR 2022), which Squeeze and Span (Yang et al.,
NeurIPS 2022) reuses both for distilling the generator and for the real images:

- invariance: mean squared error between two representations;
- variance: a hinge keeping every dimension's standard deviation at 1 or above;
- covariance: the squared off-diagonal covariances, pushing dimensions apart.

And SimSiam's negative cosine similarity with stop-gradient (Chen and He, CVPR 2021).

And LPIPS's form of a perceptual distance, in any network's features (Zhang et al., CVPR 2018).

And the GAN losses of StyleGAN2: the non-saturating logistic loss and the R1 penalty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_batch(z: torch.Tensor, name: str = "z") -> None:
    if z.dim() != 2:
        raise ValueError(f"{name} must be [batch, dim], got shape {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"{name} needs a batch of at least 2 to estimate variances, got {z.shape[0]}")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"the two representations must both be [batch, dim], got {tuple(a.shape)} and {tuple(b.shape)}"
        )


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


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """L = sum_k w_k * terms[k]: the terms, unweighted, plus their weighted total under ``loss``.

    Every method's loss is such a sum; the unweighted terms are what a trainer logs. ``weights``
    must name exactly the terms, so that a term is never left out of the total by a typo.
    """
    if set(terms) != set(weights) or "loss" in terms:
        raise ValueError(f"weights {sorted(weights)} must name exactly the terms {sorted(terms)} (and no 'loss')")
    total = sum(weights[name] * value for name, value in terms.items())
    return {**terms, "loss": total}


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
    weights = {"invariance": invariance_weight, "variance": variance_weight, "covariance": covariance_weight}
    return weighted_sum(terms, weights)


def squeeze_loss(
    z_student: torch.Tensor,
    z_teacher: torch.Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    teacher_regularization: bool = False,
) -> dict[str, torch.Tensor]:
    """Squeeze (Yang et al., NeurIPS 2022, eq. 3): λ MSE(Z_f, Z_g) + μ v(Z_f) + ν c(Z_f).

    ``z_student`` is Z_f = S(a[G(w)]) and ``z_teacher`` is Z_g = T_phi(h^g(w)); the teacher's
    side is not detached, since T_phi learns through the invariance term. With
    ``teacher_regularization`` the variance and covariance terms also cover Z_g, as the paper's
    equation writes (the authors' code leaves them out). Returns the weighted total under
    ``loss`` and the unweighted terms.
    """
    _check_pair(z_student, z_teacher)
    terms = {
        "invariance": invariance_loss(z_student, z_teacher),
        "variance": variance_loss(z_student),
        "covariance": covariance_loss(z_student),
    }
    if teacher_regularization:
        terms["variance"] = terms["variance"] + variance_loss(z_teacher)
        terms["covariance"] = terms["covariance"] + covariance_loss(z_teacher)
    weights = {"invariance": invariance_weight, "variance": variance_weight, "covariance": covariance_weight}
    return weighted_sum(terms, weights)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -(1 / N) * sum_n cos(p_n, stopgrad(z_n)): SimSiam's negative cosine similarity, eq. (1).

    The gradient flows into the predictions ``p`` only; the targets ``z`` are constants.
    """
    _check_pair(p, z)
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """L = D(p1, z2) / 2 + D(p2, z1) / 2: SimSiam's symmetrized loss with stop-gradient (Chen and He, 2021, sec. 3).

    ``z1``, ``z2`` are the projector's outputs for two views of the same images and ``p1``, ``p2``
    the predictor's outputs from them; each view's prediction chases the other view's stopped
    projection. All four are [batch, dim].
    """
    if not p1.shape == p2.shape == z1.shape == z2.shape:
        raise ValueError(
            "p1, p2, z1 and z2 must all be [batch, dim] of one shape, got "
            f"{tuple(p1.shape)}, {tuple(p2.shape)}, {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


def perceptual_distance(
    features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor], eps: float = 1e-10
) -> torch.Tensor:
    """d(a, b) = (1 / N) sum_n sum_l (1 / (H_l W_l)) sum_{h,w} || â_l[n,:,h,w] - b̂_l[n,:,h,w] ||^2.

    LPIPS's distance (Zhang et al., CVPR 2018, eq. 1) with unit weights: each layer's feature
    vector at each position is divided by its norm over the channels (plus ``eps``, as LPIPS's
    ``normalize_tensor``), the squared difference is summed over channels, averaged over space,
    summed over layers and averaged over the batch. ``features_a`` and ``features_b`` hold one
    ``[N, C_l, H_l, W_l]`` map per layer, of one shape layer by layer. With LPIPS's learned
    channel weights all 1 this is its "lin=False" variant; any frozen network's maps serve.
    """
    if len(features_a) != len(features_b) or not features_a:
        raise ValueError(f"need one feature map per layer on both sides, got {len(features_a)} and {len(features_b)}")
    total = None
    for layer, (a, b) in enumerate(zip(features_a, features_b)):
        if a.shape != b.shape or a.dim() != 4:
            raise ValueError(
                f"layer {layer}'s maps must both be [batch, channels, height, width], "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        a_unit = a / (a.norm(dim=1, keepdim=True) + eps)
        b_unit = b / (b.norm(dim=1, keepdim=True) + eps)
        distance = (a_unit - b_unit).square().sum(dim=1).mean()  # the mean over batch and space
        total = distance if total is None else total + distance
    return total


# ---------------------------------------------------------------------------------------------
# GAN losses: StyleGAN2's non-saturating logistic loss and the R1 penalty (Goodfellow et al.,
# NeurIPS 2014, section 3; Mescheder, Geiger, Nowozin, ICML 2018, eq. 9; Karras et al., CVPR 2020).


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if logits.dim() not in (1, 2) or (logits.dim() == 2 and logits.shape[1] != 1) or logits.shape[0] < 1:
        raise ValueError(f"{name} must be [batch] or [batch, 1] discriminator outputs, got shape {tuple(logits.shape)}")


def generator_logistic_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_G = E_z[softplus(-D(G(z)))] = E_z[-log sigmoid(D(G(z)))]: the non-saturating generator loss.

    Goodfellow et al. (2014), section 3, as used by StyleGAN2 (Karras et al., 2020). Computed
    in float32 whatever the logits' dtype.
    """
    _check_logits(fake_logits, "fake_logits")
    return F.softplus(-fake_logits.float()).mean()


def discriminator_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = E_z[softplus(D(G(z)))] + E_x[softplus(-D(x))]: the logistic discriminator loss.

    Equal to -E[log(1 - sigmoid(D(G(z))))] - E[log sigmoid(D(x))], i.e. binary cross-entropy
    with fakes labelled 0 and reals 1 (Goodfellow et al., 2014, eq. 1). The two batches may
    differ in size. Computed in float32.
    """
    _check_logits(real_logits, "real_logits")
    _check_logits(fake_logits, "fake_logits")
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = E_x[ ||grad_x D(x)||^2 ]: the squared gradient norm of D at the real images.

    Mescheder et al. (2018), eq. 9, without the gamma / 2 factor (the caller applies it, and
    the lazy-regularization interval: StyleGAN2 adds (gamma / 2) * R1 * interval every
    ``interval`` steps). ``real_images`` must require grad and ``real_logits`` must be
    computed from it; the gradient is taken with ``create_graph=True`` so that the penalty
    itself can be backpropagated into D's weights. Each image's squared norm sums over all
    its pixels and channels; the mean is over the batch.
    """
    _check_logits(real_logits, "real_logits")
    if real_images.dim() < 2 or real_images.shape[0] != real_logits.shape[0]:
        raise ValueError(
            f"real_images must be [batch, ...] with the logits' batch {real_logits.shape[0]}, "
            f"got {tuple(real_images.shape)}"
        )
    if not real_images.requires_grad:
        raise ValueError(
            "real_images must require grad (x.detach().requires_grad_()) and be D's input, to differentiate D at it"
        )
    (gradients,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradients.float().square().flatten(1).sum(dim=1).mean()
