"""Encoding (Table 1's "Encoding" rows): the student learns to invert the teacher, image to w+.

The student (backbone and projector) maps a center view of an image, without augmentation, to
w_dim x num_ws numbers, read as a w+ ``[B, num_ws, w_dim]``; the frozen G renders it back, and
the gradient of the reconstruction reaches the student through G.synthesis, never G.

- syn: w+ = G.mapping(z), x = G.synthesis(w+); L_syn = latent_loss_weight MSE(ŵ+, w+)
  + L1(G.synthesis(ŵ+), x) + perceptual_weight P(G.synthesis(ŵ+), x);
- real (syn_ratio < 1): L_real = L1 + perceptual_weight P, against the real image in G's channels
  and resolution (:func:`~squeeze_span.data.gan_view`);
- L = syn_ratio L_syn + (1 - syn_ratio) L_real, over round(syn_ratio B) generated and the rest
  real images.

As the authors' encode.py, with two departures. P is LPIPS (AlexNet) there, whose weights are
a download; ``perceptual=discriminator`` (the default) takes LPIPS's distance in the features of
the same GAN's D (:func:`~squeeze_span.losses.perceptual_distance`, logged as ``perceptual_d``),
``lpips`` the original (with the ``lpips`` package and its weights), ``none`` nothing. And the
student's views are normalised by the dataset's statistics, as our kNN monitor and probes show
them, where the authors trained on mean 0.5 and std 0.5 (and monitored with ImageNet's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze_span.config import bounded, choice
from squeeze_span.data import center_view, gan_view, match_channels
from squeeze_span.data.stream import RealBatch
from squeeze_span.errors import ConfigError
from squeeze_span.generators import Teacher
from squeeze_span.generators.perceptual import discriminator_distance, lpips_distance
from squeeze_span.losses import weighted_sum
from squeeze_span.methods.base import Method, MethodContext, require_teacher, split_batch
from squeeze_span.models.heads import projector

PERCEPTUAL_TERMS = {"discriminator": "perceptual_d", "lpips": "lpips", "none": None}


@dataclass
class EncodeConfig:
    name: str = "encode"
    syn_ratio: float = bounded(1.0, min=0, max=1)  # the generated share of the batch and of the loss
    latent_loss_weight: float = bounded(1.0, min=0)  # on MSE(ŵ+, w+), generated images only
    perceptual: str = choice("discriminator", PERCEPTUAL_TERMS)  # the reconstruction's perceptual term
    perceptual_weight: float = bounded(1.0, min=0)


class Encode(Method):
    name = "encode"
    config_class = EncodeConfig

    def __init__(self, config: EncodeConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(backbone, context)
        self.config = config
        require_teacher(context, "method encode")
        teacher = context.teacher
        if not isinstance(teacher, Teacher) or teacher.latent_shape is None:
            raise ConfigError(
                "method encode renders w+ with a StyleGAN2 teacher's synthesis network; "
                "use a StyleGAN2 teacher, rendered at each step (teacher.pool_size=0)"
            )
        self.num_ws, self.w_dim = teacher.latent_shape
        self.gan_channels, self.gan_size = teacher.image_shape[0], teacher.image_shape[-1]  # real targets' shape
        model = context.model
        self.projector = projector(backbone.feature_dim, model.proj_hidden, self.num_ws * self.w_dim, model.proj_layers)
        # A closure, not a submodule: the frozen network stays out of the optimizer and the checkpoints.
        self.perceptual_term = PERCEPTUAL_TERMS[config.perceptual]
        if config.perceptual == "discriminator":
            self.perceptual = discriminator_distance(context.teacher_path, context.device)
        elif config.perceptual == "lpips":
            self.perceptual = lpips_distance(context.device)

    def split(self, batch_size: int) -> tuple[int, int]:
        return split_batch(batch_size, self.config.syn_ratio)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """ŵ+ ``[B, num_ws, w_dim]`` of images (uint8, or float in [-1, 1]) in the data's channels."""
        augmentation = self.context.augmentation
        views = center_view(images, augmentation.size, augmentation.mean, augmentation.std)
        return self.project(views).float().reshape(len(images), self.num_ws, self.w_dim)

    def reconstruction_terms(self, latents: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1 and the perceptual term between G.synthesis(``latents``) and ``target``, in G's shape."""
        reconstruction = self.context.teacher.synthesize(latents)
        terms = {"l1": F.l1_loss(reconstruction, target)}
        if self.perceptual_term is not None:
            terms[self.perceptual_term] = self.perceptual(reconstruction, target)
        return terms

    def forward(self, real: RealBatch, num_synthetic: int) -> dict[str, torch.Tensor]:
        config, teacher = self.config, self.context.teacher
        weights = {"l1": 1.0}
        if self.perceptual_term is not None:
            weights[self.perceptual_term] = config.perceptual_weight
        branches = {}
        if num_synthetic:
            latents, images = teacher.sample_latents(num_synthetic)
            predicted = self.encode(match_channels(images, self.context.image_channels))
            terms = {"latent": F.mse_loss(predicted, latents), **self.reconstruction_terms(predicted, images)}
            branches["syn"] = (config.syn_ratio, weighted_sum(terms, {"latent": config.latent_loss_weight, **weights}))
        if len(real.images):
            target = gan_view(real.images, self.gan_channels, self.gan_size)
            terms = self.reconstruction_terms(self.encode(real.images), target)
            branches["real"] = (1 - config.syn_ratio, weighted_sum(terms, weights))
        logs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.context.device)
        for branch, (weight, terms) in branches.items():
            total = total + weight * terms["loss"]
            logs[f"loss/{branch}"] = terms.pop("loss").detach()
            logs.update({f"loss/{branch}/{name}": value.detach() for name, value in terms.items()})
        return {"loss": total, **logs}
