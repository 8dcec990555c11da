import numpy as np
import pytest
import scipy.linalg
import torch

from squeeze_span.eval.frechet import (
    BackboneFeatures,
    FeatureStatistics,
    frechet_distance,
)
from squeeze_span.models import resnet18_cifar


def reference_fd(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y).real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(s_x + s_y - 2 * root))


def test_fd_matches_the_textbook_formula():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=generator, dtype=torch.float64)
    y = (
        torch.randn(300, 6, generator=generator, dtype=torch.float64)
        @ torch.randn(6, 6, generator=generator, dtype=torch.float64)
        + 0.5
    )
    assert frechet_distance(FeatureStatistics.of(x), FeatureStatistics.of(y)) == pytest.approx(
        reference_fd(x.numpy(), y.numpy()), rel=1e-6
    )


def test_fd_is_zero_for_a_set_against_itself_and_grows_with_a_shift():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    stats = FeatureStatistics.of(x)
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-8)
    distances = [frechet_distance(stats, FeatureStatistics.of(x + shift)) for shift in (0.1, 0.5, 1.0)]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert distances[2] == pytest.approx(8 * 1.0**2, rel=1e-6)  # a pure shift adds ||delta||^2


def test_backbone_features_take_generated_and_real_images():
    torch.manual_seed(0)
    extractor = BackboneFeatures(resnet18_cifar(in_channels=1, width=4), 32, (0.5,), (0.5,))
    real = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    generated = torch.rand(5, 3, 32, 32) * 2 - 1  # an RGB generator: converted to one channel
    assert extractor(real).shape == (5, 32) and extractor(generated).shape == (5, 32)
    # uint8 v and float 2v/255 - 1 are the same picture, hence the same features
    same = real.float() / 255 * 2 - 1
    torch.testing.assert_close(extractor(same), extractor(real), atol=1e-5, rtol=1e-5)


def test_generator_fd_is_small_for_the_data_and_large_for_noise(learnable_fashion_mnist):
    from squeeze_span.data import load_dataset
    from squeeze_span.eval.frechet import generator_fd, real_statistics

    class Replay(torch.nn.Module):
        """A 'generator' that replays real images (or noise), with StyleGAN's (z, c) call."""

        z_dim = 1

        def __init__(self, images):
            super().__init__()
            self.images, self.next = images, 0

        def forward(self, z, c):
            batch = self.images[self.next : self.next + len(z)]
            self.next += len(z)
            return batch

    torch.manual_seed(0)
    data = load_dataset("fashion_mnist", learnable_fashion_mnist, "train")
    extractor = BackboneFeatures(resnet18_cifar(in_channels=1, width=4), 32, (0.5,), (0.5,))
    real_as_float = torch.from_numpy(data.images).float() / 127.5 - 1
    noise = torch.rand_like(real_as_float) * 2 - 1
    same = generator_fd(Replay(real_as_float), data, extractor, count=len(data), batch_size=40, progress=False)
    different = generator_fd(Replay(noise), data, extractor, count=len(data), batch_size=40, progress=False)
    assert same == pytest.approx(0.0, abs=1e-3)
    assert different > 100 * max(same, 1e-6)
    # The real statistics, computed once for a sweep of generators, give the same distance.
    cached = real_statistics(data, extractor, count=len(data), batch_size=40, progress=False)
    assert cached.count == len(data)
    again = generator_fd(Replay(noise), cached, extractor, count=len(data), batch_size=40, progress=False)
    assert again == pytest.approx(different, rel=1e-4)
