"""Teachers: pretrained generators (StyleGAN2-ADA and others), loaded safely, with feature taps."""

from squeeze_span.errors import UnsafePickleError
from squeeze_span.generators.discriminator import DiscriminatorFeatures
from squeeze_span.generators.loading import (
    load_discriminator,
    load_gan,
    load_generator,
    load_networks,
    load_stylegan2_pkl,
    save_network,
)
from squeeze_span.generators.teacher import (
    DEFAULT_FEATURES,
    LATENT_FEATURES,
    SampleSource,
    Teacher,
    TeacherPool,
    TeacherSample,
)

__all__ = [
    "DEFAULT_FEATURES",
    "DiscriminatorFeatures",
    "LATENT_FEATURES",
    "SampleSource",
    "Teacher",
    "TeacherPool",
    "TeacherSample",
    "UnsafePickleError",
    "load_discriminator",
    "load_gan",
    "load_generator",
    "load_networks",
    "load_stylegan2_pkl",
    "save_network",
]
