"""Perceptual distances between a generator's reconstructions and their targets (the encode method's term).

LPIPS (Zhang et al., 2018) compares unit-normalised deep features; its AlexNet weights are a
download, so the default here takes the same distance in the features of the GAN's own
discriminator, and says so in its name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from squeeze_span.data import match_channels
from squeeze_span.errors import ConfigError
from squeeze_span.generators.discriminator import DiscriminatorFeatures
from squeeze_span.generators.loading import load_gan
from squeeze_span.losses import perceptual_distance

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (reconstruction, target) -> a scalar


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
