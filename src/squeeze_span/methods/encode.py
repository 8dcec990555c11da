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

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze_span.config import bounded, choice
from squeeze_span.data import center_view, gan_view, match_channels
from squeeze_span.data.stream import RealBatch
from squeeze_span.errors import ConfigError
from squeeze_span.generators import DiscriminatorFeatures, Teacher, load_gan
from squeeze_span.losses import perceptual_distance, weighted_sum
from squeeze_span.methods.base import Method, MethodContext, require_teacher, split_batch
from squeeze_span.models.heads import projector

PERCEPTUAL_TERMS = {"discriminator": "perceptual_d", "lpips": "lpips", "none": None}
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EncodeConfig:
    name: str = "encode"
    syn_ratio: float = bounded(1.0, min=0, max=1)  # the generated share of the batch and of the loss
    latent_loss_weight: float = bounded(1.0, min=0)  # on MSE(ŵ+, w+), generated images only
    perceptual: str = choice("discriminator", PERCEPTUAL_TERMS)  # the reconstruction's perceptual term
    perceptual_weight: float = bounded(1.0, min=0)


def discriminator_distance(teacher_path: str, device: torch.device) -> Distance:
    """LPIPS's distance in the block features bR ... b8 of the teacher's own D."""
    discriminator = load_gan(teacher_path)[1]
    if discriminator is None:
        raise ConfigError(
            f"method.perceptual=discriminator needs the teacher's discriminator D, and {teacher_path} holds none; "
            "use a model that keeps D (a train-gan snapshot, runs/.../snapshots/network-snapshot-*/, or a "
            "StyleGAN2-ADA .pkl), or set method.perceptual=none"
        )
    features = DiscriminatorFeatures(discriminator.to(device), "blocks")

    def distance(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_maps = features.tap_features(target, pool=False)
        return perceptual_distance(features.tap_features(reconstruction, pool=False), target_maps)

    return distance


def lpips_distance(device: torch.device) -> Distance:
    """The authors' LPIPS (AlexNet), on RGB images in [-1, 1]."""
    fix = "set method.perceptual=discriminator (the GAN's own D) or none"
    try:
        import lpips

        network = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False).to(device)
    except ImportError as error:
        raise ConfigError(f"method.perceptual=lpips needs the lpips package ({error}); install it, or {fix}") from None
    except (OSError, RuntimeError) as error:  # torchvision's AlexNet weights are a download
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"method.perceptual=lpips could not load LPIPS's AlexNet weights ({reason}); {fix}") from None
    return lambda reconstruction, target: network(match_channels(reconstruction, 3), match_channels(target, 3)).mean()


class Encode(Method):
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
