import pytest
import torch
from torch import nn

from squeeze_span.errors import ConfigError
from squeeze_span.generators import LATENT_FEATURES, SampleSource, Teacher, TeacherPool, load_stylegan2_pkl
from squeeze_span.generators.stylegan2 import Generator


@pytest.fixture
def tiny_teacher_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        synthesis_kwargs={"channel_base": 256, "channel_max": 32},
    )


def test_block_features_are_nvidias_block_outputs(stylegan2_fixture):
    expected = torch.load(stylegan2_fixture / "tiny_uncond_expected.pt", weights_only=True)
    teacher = Teacher(load_stylegan2_pkl(stylegan2_fixture / "tiny_uncond.pkl")["G_ema"])
    assert teacher.feature_names == ["synthesis.b4", "synthesis.b8", "synthesis.b16", "synthesis.b32"]
    generator = torch.Generator().manual_seed(0)  # the fixture's z is randn([4, 32]) with seed 0
    sample = teacher.sample(4, generator)
    for name, feature in zip(expected["block_names"], sample.features):
        torch.testing.assert_close(feature, expected[f"block_{name}"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sample.images, expected["img_const"].clamp(-1, 1), atol=1e-4, rtol=1e-4)


def test_shapes_ranges_and_latent_taps(tiny_teacher_generator):
    teacher = Teacher(tiny_teacher_generator)
    assert teacher.feature_shapes == [(32, 4, 4), (32, 8, 8), (16, 16, 16)]
    assert teacher.image_shape == (3, 16, 16)
    sample = teacher.sample(5)
    assert sample.images.shape == (5, 3, 16, 16) and sample.images.dtype == torch.float32
    assert sample.images.min() >= -1 and sample.images.max() <= 1
    assert [tuple(f.shape) for f in sample.features] == [(5, 32, 4, 4), (5, 32, 8, 8), (5, 16, 16, 16)]
    latent = Teacher(tiny_teacher_generator, LATENT_FEATURES)
    assert latent.feature_names == ["mapping"] and latent.feature_shapes == [(8,)]


def test_latents_render_the_samples_images_and_pass_gradients_to_w_only(tiny_teacher_generator):
    teacher = Teacher(tiny_teacher_generator, noise_mode="const")
    assert teacher.latent_shape == (tiny_teacher_generator.num_ws, 8)
    ws, images = teacher.sample_latents(3, torch.Generator().manual_seed(1))
    assert ws.shape == (3, tiny_teacher_generator.num_ws, 8) and images.shape == (3, 3, 16, 16)
    # The same latents z as sample() draws, so the same images (sample() clamps them to [-1, 1]).
    sample = teacher.sample(3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(images.clamp(-1, 1), sample.images, atol=1e-5, rtol=1e-5)
    predicted = ws.clone().requires_grad_()
    teacher.synthesize(predicted).square().sum().backward()
    assert predicted.grad is not None and predicted.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.network.parameters())
    assert teacher.taps._recorded == {}  # a render's features are dropped with the graph they hold


def test_looking_at_shapes_does_not_shift_the_latent_stream(tiny_teacher_generator):
    first = Teacher(tiny_teacher_generator, seed=3)
    second = Teacher(tiny_teacher_generator, seed=3)
    _ = first.feature_shapes
    torch.testing.assert_close(first.sample(2).images, second.sample(2).images, atol=0, rtol=0)


def test_conditional_generator_samples_classes_uniformly():
    torch.manual_seed(0)
    generator = Generator(
        z_dim=8,
        c_dim=4,
        w_dim=8,
        img_resolution=8,
        img_channels=1,
        synthesis_kwargs={"channel_base": 64, "channel_max": 16},
    )
    sample = Teacher(generator).sample(4000, return_labels=True)
    counts = torch.bincount(sample.labels, minlength=4)
    assert sample.images.shape == (4000, 1, 8, 8)
    assert ((counts - 1000).abs() < 120).all()  # 4 std of a binomial(4000, 1/4)


class TinyDCGAN(nn.Module):
    """Not a StyleGAN: a teacher through the same regex hooks."""

    z_dim = 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8 * 4 * 4)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1), nn.Tanh())

    def forward(self, z, c):
        return self.up(self.fc(z).view(-1, 8, 4, 4))


def test_any_generator_is_a_teacher_through_regex_hooks():
    teacher = Teacher(TinyDCGAN(), r"^(fc|up\.1)$")
    sample = teacher.sample(2)
    assert [tuple(f.shape) for f in sample.features] == [(2, 128), (2, 3, 8, 8)]
    assert teacher.latent_shape is None  # no w+ to render from
    with pytest.raises(ConfigError, match=r"feature regex 'synthesis\\\\.b\\\\d\+\$' matches no module"):
        Teacher(TinyDCGAN())


def test_a_pool_holds_rendered_samples_with_pooled_features(tiny_teacher_generator):
    rendered = Teacher(tiny_teacher_generator, noise_mode="const", seed=5).sample(7)
    teacher = Teacher(tiny_teacher_generator, noise_mode="const", seed=5)
    pool = TeacherPool(teacher, 7)
    assert isinstance(teacher, SampleSource) and isinstance(pool, SampleSource)  # what a method is handed
    assert not isinstance(tiny_teacher_generator, SampleSource)
    assert len(pool) == 7 and pool.image_shape == (3, 16, 16)
    assert pool.feature_shapes == [(32,), (32,), (16,)]  # what T_phi reads: one number per channel
    torch.testing.assert_close(pool.images.float(), rendered.images, atol=1e-3, rtol=0)
    torch.testing.assert_close(pool.features[2], rendered.features[2].mean(dim=(2, 3)))
    draw = pool.sample(50, torch.Generator().manual_seed(0))
    assert draw.images.shape == (50, 3, 16, 16) and draw.images.dtype == torch.float32
    index = torch.randint(7, (50,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draw.features[0], pool.features[0][index], atol=0, rtol=0)


def test_an_empty_pool_is_a_config_error(tiny_teacher_generator):
    with pytest.raises(ConfigError, match="teacher.pool_size must be positive"):
        TeacherPool(Teacher(tiny_teacher_generator), 0)
