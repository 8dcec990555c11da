import pytest
import torch

from squeeze_span import assets
from squeeze_span.errors import CheckpointError, ConfigError
from squeeze_span.generators import DiscriminatorFeatures, load_discriminator, load_gan, load_networks, save_network
from squeeze_span.generators.stylegan2 import Discriminator
from squeeze_span.generators.teacher import FeatureTaps


def tiny_discriminator(**overrides) -> Discriminator:
    torch.manual_seed(0)
    kwargs = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    kwargs.update(overrides)
    return Discriminator(**kwargs)


def test_fixture_taps_have_the_documented_shapes(stylegan2_fixture):
    discriminator = load_networks(stylegan2_fixture / "tiny_uncond.pkl")["D"]
    multi = DiscriminatorFeatures(discriminator, "multi")
    single = DiscriminatorFeatures(discriminator, "single")
    # The README's D: 32 px, channels 32 (b32's input), 64 after every block, b4.fc of 64.
    assert multi.tap_names == ["b32", "b16", "b8", "b4.fc"]
    assert multi.tap_shapes == [(64, 16, 16), (64, 8, 8), (64, 4, 4), (64,)]
    assert (multi.feature_dim, single.feature_dim) == (256, 64) and single.tap_names == ["b4.fc"]
    images = torch.rand(10, 3, 32, 32) * 2 - 1  # 10: D's own minibatch group of 4 would refuse it
    maps = multi.tap_features(images, pool=False)
    assert [tuple(f.shape) for f in maps] == [(10, 64, 16, 16), (10, 64, 8, 8), (10, 64, 4, 4), (10, 64)]
    pooled = multi(images)
    assert pooled.shape == (10, 256)
    torch.testing.assert_close(pooled[:, :64], maps[0].mean(dim=(2, 3)))
    torch.testing.assert_close(pooled[:, 192:], single(images), atol=1e-6, rtol=1e-6)
    # The caller's D is left as it was: its group of 4, and no hook of ours.
    assert discriminator.b4.mbstd.group_size == 4
    assert not any(module._forward_hooks for module in discriminator.modules())


def test_multi_taps_every_block_of_a_larger_discriminator():
    features = DiscriminatorFeatures(tiny_discriminator(img_resolution=64, channel_base=256, channel_max=8))
    assert features.tap_names == ["b64", "b32", "b16", "b8", "b4.fc"]
    assert features.feature_dim == 5 * 8


def test_a_conditional_discriminator_needs_no_labels():
    discriminator = tiny_discriminator(c_dim=3)
    images = torch.rand(4, 3, 16, 16) * 2 - 1  # 4 = D's group: its mbstd then sees the whole batch too
    features = DiscriminatorFeatures(discriminator)(images)
    taps = FeatureTaps(discriminator, r"^(b16|b8|b4\.fc)$")
    discriminator(images, torch.eye(3)[[0, 1, 2, 0]])
    with_labels = torch.cat([f.mean(dim=(2, 3)) if f.dim() == 4 else f for f in taps.take()], dim=1)
    assert features.shape == (4, 16 + 16 + 16)
    torch.testing.assert_close(features, with_labels, atol=1e-6, rtol=1e-6)


def test_smaller_images_are_padded_with_minus_one_and_gray_copied_to_rgb():
    features = DiscriminatorFeatures(tiny_discriminator())
    images = torch.rand(2, 1, 12, 12) * 2 - 1
    fitted = features.fit(images)
    assert fitted.shape == (2, 3, 16, 16)
    assert torch.equal(fitted[:, :, 2:14, 2:14], images.expand(-1, 3, -1, -1))
    border = torch.ones(16, 16, dtype=torch.bool)
    border[2:14, 2:14] = False
    assert fitted[:, :, border].eq(-1).all()
    larger = torch.full((2, 3, 32, 32), 0.3)  # resized: a flat image stays flat
    torch.testing.assert_close(features.fit(larger), torch.full((2, 3, 16, 16), 0.3), atol=1e-6, rtol=0)


def test_gradients_reach_the_images_and_never_the_discriminator():
    features = DiscriminatorFeatures(tiny_discriminator())
    images = (torch.rand(3, 3, 16, 16) * 2 - 1).requires_grad_()
    sum(f.square().sum() for f in features.tap_features(images, pool=False)).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in features.parameters())


def test_unknown_features_are_a_config_error():
    with pytest.raises(ConfigError, match="'all' are unknown; use one of multi, single"):
        DiscriminatorFeatures(tiny_discriminator(), "all")


def test_an_asset_folder_with_a_discriminator_loads_it_as_it_loads_g_ema(tiny_teacher, tmp_path, monkeypatch):
    discriminator = tiny_discriminator()
    asset = tmp_path / "assets" / "fashion_mnist_stylegan2"
    asset.mkdir(parents=True)
    for name in ("G_ema.safetensors", "G_ema.json"):
        (asset / name).write_bytes((tiny_teacher / name).read_bytes())
    save_network(discriminator, asset, "D")
    monkeypatch.setattr(assets, "ASSETS", tmp_path / "assets")
    loaded = load_discriminator("asset:fashion_mnist_stylegan2")
    assert isinstance(loaded, Discriminator) and load_gan("asset:fashion_mnist_stylegan2")[1] is not None
    for key, value in discriminator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_model_without_a_discriminator_says_how_to_get_one(tiny_teacher):
    with pytest.raises(CheckpointError, match="holds no discriminator D; pass a train-gan snapshot"):
        load_discriminator(tiny_teacher)
