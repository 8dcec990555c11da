"""Squeeze and Span (Yang et al., NeurIPS 2022).

Each step splits the batch B into B_s = round(alpha B) synthetic and B_r = B - B_s real
images (alpha = ``syn_ratio``):

- squeeze: the teacher renders x_s = G(w) with features h; T_phi squeezes them into
  Z_g = T_phi(h); the student sees a[x_s] and gives Z_f. L_squeeze = lambda MSE(Z_f, Z_g)
  + mu L_var(Z_f) + nu L_cov(Z_f);
- span: VICReg between two augmented views of each real image;
- L = alpha L_squeeze + (1 - alpha) L_span.

``teacher_regularization`` adds mu L_var(Z_g) + nu L_cov(Z_g), as the paper's equation
writes; the authors' code, whose numbers the paper reports, leaves it out, so it is off
by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze_span.config import bounded
from squeeze_span.data import center_view
from squeeze_span.data.stream import RealBatch
from squeeze_span.losses import squeeze_loss, vicreg_loss
from squeeze_span.methods.base import Method, MethodContext, require_teacher, split_batch
from squeeze_span.models.heads import SqueezeModule, projector
from squeeze_span.runtime import full_precision


@dataclass
class SqueezeSpanConfig:
    name: str = "squeeze_span"
    syn_ratio: float = bounded(0.5, min=0, max=1)  # alpha: the synthetic share of the batch and of the loss
    invariance_weight: float = bounded(25.0, min=0)  # lambda
    variance_weight: float = bounded(25.0, min=0)  # mu
    covariance_weight: float = bounded(1.0, min=0)  # nu
    teacher_regularization: bool = False  # also mu L_var(Z_g) + nu L_cov(Z_g)
    augment_syn: bool = True  # augment the generated images (off: a center view)
    a_depth: int = bounded(3, min=0)  # T_phi's layers after the laterals; 0: concatenated pooled features
    a_hidden: int = bounded(2048, min=1)  # T_phi's hidden width


class SqueezeSpan(Method):
    name = "squeeze_span"
    config_class = SqueezeSpanConfig

    def __init__(self, config: SqueezeSpanConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(backbone, context)
        self.config = config
        model = context.model
        if config.syn_ratio > 0:
            require_teacher(context, "method squeeze_span with syn_ratio > 0")
            feature_dims = [shape[0] for shape in context.teacher.feature_shapes]
            self.squeeze_module = SqueezeModule(feature_dims, config.a_depth, config.a_hidden, model.proj_dim)
            out_dim = self.squeeze_module.out_dim  # with a_depth 0 the projector matches the concatenation
        else:
            out_dim = model.proj_dim
        self.projector = projector(backbone.feature_dim, model.proj_hidden, out_dim, model.proj_layers)

    def split(self, batch_size: int) -> tuple[int, int]:
        return split_batch(batch_size, self.config.syn_ratio)

    def squeeze_loss(self, num_synthetic: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """L_squeeze's terms on ``num_synthetic`` teacher samples, and the student's Z_f."""
        context, config = self.context, self.config
        sample = self.draw_synthetic(num_synthetic)
        if config.augment_syn:
            views = self.augment(sample.images)
        else:
            augmentation = context.augmentation
            views = center_view(sample.images, augmentation.size, augmentation.mean, augmentation.std)
        z_student = self.embed(views)
        z_teacher = context.gather(self.squeeze_module(sample.features).float())
        with full_precision(context.device):
            terms = squeeze_loss(
                z_student,
                z_teacher,
                config.invariance_weight,
                config.variance_weight,
                config.covariance_weight,
                config.teacher_regularization,
            )
        return terms, z_student

    def span_loss(self, real_images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """VICReg's terms between two augmented views of the real images, and the first view's Z."""
        z1 = self.embed(self.augment(real_images))
        z2 = self.embed(self.augment(real_images))
        config = self.config
        with full_precision(self.context.device):
            return vicreg_loss(z1, z2, config.invariance_weight, config.variance_weight, config.covariance_weight), z1

    def forward(self, real: RealBatch, num_synthetic: int) -> dict[str, torch.Tensor]:
        real_images = real.images
        alpha = self.config.syn_ratio
        logs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.context.device)
        for branch, weight, active in (
            ("squeeze", alpha, num_synthetic > 0),
            ("span", 1 - alpha, len(real_images) > 0),
        ):
            if not active:
                continue
            terms, z = self.squeeze_loss(num_synthetic) if branch == "squeeze" else self.span_loss(real_images)
            total = total + weight * terms["loss"]
            logs[f"std/{branch}"] = z.detach().std(dim=0).mean()  # falls to 0 when the representation collapses
            logs[f"loss/{branch}"] = terms.pop("loss")
            logs.update({f"loss/{branch}/{name}": value for name, value in terms.items()})
        logs["loss"] = total
        return logs
