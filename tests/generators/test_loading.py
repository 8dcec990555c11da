import json

import pytest
import torch

from squeeze_span.errors import CheckpointError, ConfigError
from squeeze_span.generators import (
    load_generator,
    load_networks,
    load_stylegan2_pkl,
    save_network,
)
from squeeze_span.generators.stylegan2 import Discriminator, Generator
from tests.conftest import refused_or_loaded

TINY_SYNTHESIS = {"channel_base": 256, "channel_max": 32}


def tiny_generator(**overrides) -> Generator:
    kwargs = dict(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs=dict(TINY_SYNTHESIS),
    )
    kwargs.update(overrides)
    return Generator(**kwargs)


def test_pickle_loads_as_our_networks_and_matches_nvidia(stylegan2_fixture):
    networks = load_stylegan2_pkl(stylegan2_fixture / "tiny_uncond.pkl")
    expected = torch.load(stylegan2_fixture / "tiny_uncond_expected.pt", weights_only=True)
    assert set(networks) == {"G", "D", "G_ema", "training_set_kwargs"}
    assert networks["training_set_kwargs"]["path"] == "cifar10.zip"
    image = networks["G_ema"](expected["z"], expected["c"], noise_mode="const")
    torch.testing.assert_close(image, expected["img_const"], atol=1e-4, rtol=1e-4)


def test_converted_pickle_reloads_without_pickle_and_gives_the_same_images(stylegan2_fixture, tmp_path):
    networks = load_stylegan2_pkl(stylegan2_fixture / "tiny_uncond.pkl")
    for name in ("G", "G_ema", "D"):
        save_network(networks[name], tmp_path, name)
    description = json.loads((tmp_path / "G_ema.json").read_text())
    assert description["class_name"] == "Generator"
    assert description["init_kwargs"] == networks["G_ema"].init_kwargs
    reloaded = load_networks(tmp_path)
    assert set(reloaded) == {"G", "G_ema", "D"}
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    c = torch.zeros(2, 0)
    torch.testing.assert_close(reloaded["G_ema"](z, c), networks["G_ema"](z, c), atol=0, rtol=0)
    assert load_generator(tmp_path) is not None and isinstance(load_generator(tmp_path), Generator)


@pytest.mark.parametrize(
    "overrides",
    [
        {"c_dim": 10},
        {"img_resolution": 32, "synthesis_kwargs": {**TINY_SYNTHESIS, "architecture": "orig"}},
        {"synthesis_kwargs": {**TINY_SYNTHESIS, "architecture": "resnet", "conv_clamp": None}},
        {"mapping_kwargs": {"num_layers": 4}},
    ],
    ids=["conditional", "orig-32px", "resnet-no-clamp", "mapping-4"],
)
def test_other_generator_configurations_round_trip_our_format(overrides, tmp_path):
    torch.manual_seed(0)
    generator = tiny_generator(**overrides)
    weights = save_network(generator, tmp_path, "G")
    reloaded = load_network_file(weights)
    z = torch.randn(3, 8)
    c = torch.nn.functional.one_hot(torch.arange(3), generator.c_dim).float() if generator.c_dim else torch.zeros(3, 0)
    torch.testing.assert_close(reloaded(z, c), generator(z, c), atol=0, rtol=0)
    assert reloaded.init_kwargs == generator.init_kwargs


def load_network_file(weights):
    (network,) = load_networks(weights).values()
    return network


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_discriminators_round_trip_our_format(architecture, tmp_path):
    torch.manual_seed(0)
    discriminator = Discriminator(
        c_dim=4, img_resolution=16, img_channels=3, architecture=architecture, channel_base=256, channel_max=32
    )
    reloaded = load_network_file(save_network(discriminator, tmp_path, "D"))
    images, c = torch.randn(4, 3, 16, 16), torch.eye(4)
    torch.testing.assert_close(reloaded(images, c), discriminator(images, c), atol=0, rtol=0)


def test_missing_and_broken_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; pass a StyleGAN2-ADA .pkl"):
        load_generator(tmp_path / "absent.pkl")
    with pytest.raises(CheckpointError, match="holds none of G_ema.safetensors, G.safetensors, D.safetensors"):
        load_networks(tmp_path)
    save_network(tiny_generator(), tmp_path, "G")
    (tmp_path / "G.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="G.json is not valid JSON"):
        load_networks(tmp_path)
    (tmp_path / "G.json").unlink()
    with pytest.raises(CheckpointError, match="G.json is missing; convert the pickle"):
        load_networks(tmp_path)


def make_tiny_generator():
    """A factory for the package.module:factory test."""
    return tiny_generator()


def test_a_factory_import_path_names_a_generator():
    generator = load_generator("tests.generators.test_loading:make_tiny_generator")
    assert isinstance(generator, Generator) and generator.z_dim == 8
    with pytest.raises(ConfigError, match="cannot import the generator factory 'no_such_package.module:make'"):
        load_generator("no_such_package.module:make")


@pytest.mark.parametrize(
    ("key", "value", "refusal"),
    [
        ("img_channels", -3, "img_channels=-3 is out of range; it must be an integer in [1, 16]"),
        ("img_resolution", 24, "img_resolution=24 is out of range; it must be a power of two in [4, 2048]"),
        ("z_dim", 8.0, "z_dim=8.0 is out of range; it must be an integer in [1, 4096]"),
        ("w_dim", True, "w_dim=True is out of range; it must be an integer in [1, 4096]"),
        (
            "mapping_kwargs",
            {"num_layers": 0},
            "mapping_kwargs.num_layers=0 is out of range; it must be an integer in [1, 64]",
        ),
        # Absurd sizes, refused before a network of terabytes is built:
        ("img_resolution", 2**30, "img_resolution=1073741824 is out of range; it must be a power of two in [4, 2048]"),
        ("img_channels", 10**6, "img_channels=1000000 is out of range; it must be an integer in [1, 16]"),
        ("w_dim", 10**9, "w_dim=1000000000 is out of range; it must be an integer in [1, 4096]"),
        (
            "synthesis_kwargs",
            {**TINY_SYNTHESIS, "channel_max": 10**9},
            "synthesis_kwargs.channel_max=1000000000 is out of range; it must be an integer in [1, 4096]",
        ),
        (
            "synthesis_kwargs",
            {**TINY_SYNTHESIS, "architecture": "dense"},
            "synthesis_kwargs.architecture='dense' is unknown; it must be one of orig, skip, resnet",
        ),
    ],
)
def test_bad_init_kwargs_in_a_description_name_the_file_key_and_value(key, value, refusal, tmp_path):
    save_network(tiny_generator(), tmp_path, "G")
    description_path = tmp_path / "G.json"
    description = json.loads(description_path.read_text())
    description["init_kwargs"][key] = value
    description_path.write_text(json.dumps(description))
    with pytest.raises(CheckpointError) as error:
        load_networks(tmp_path)
    assert str(error.value) == f"{description_path}: init kwarg {refusal}; fix the file, or convert the pickle again"


def test_bad_init_kwargs_in_a_pickle_name_the_pickle(tmp_path, monkeypatch):
    from squeeze_span.generators import loading
    from squeeze_span.generators.safe_pickle import PickledModule

    kwargs = {**tiny_generator().init_kwargs, "img_channels": 0}
    network = PickledModule("training.networks.Generator", (), kwargs, {}, {})
    monkeypatch.setattr(loading, "read_stylegan2_pkl", lambda path: {"G_ema": network})
    with pytest.raises(CheckpointError, match=r"^\S+G\.pkl: init kwarg img_channels=0 is out of range; it must be"):
        load_stylegan2_pkl(tmp_path / "G.pkl")


# Init kwargs within their bounds that describe some 700 MB of float32 (1024 px, 1024 channels at every
# resolution): built before the weights were compared, they were allocated and filled with noise first.
HUGE_SYNTHESIS = {"channel_base": 1 << 20, "channel_max": 1024}


def refusal(load) -> str:
    with pytest.raises(CheckpointError) as caught:
        load()
    return str(caught.value)


def test_a_description_that_claims_a_huge_generator_for_small_weights_is_refused_before_building(tiny_teacher):
    honest = refused_or_loaded(lambda: load_networks(tiny_teacher), CheckpointError, peak_bytes=2**20)["G_ema"]
    description_path = tiny_teacher / "G_ema.json"
    description = json.loads(description_path.read_text())
    description["init_kwargs"].update(img_resolution=1024, synthesis_kwargs=HUGE_SYNTHESIS)
    description_path.write_text(json.dumps(description))
    message = refused_or_loaded(lambda: refusal(lambda: load_networks(tiny_teacher)), CheckpointError, 1.0, 2**20)
    assert message.startswith(
        f"{tiny_teacher / 'G_ema.safetensors'}: 'synthesis.b4.const' has shape [16, 4, 4] but Generator({{"
    )
    assert "needs [1024, 4, 4]; the file's init kwargs and weights disagree" in message
    assert honest.img_resolution == 16


def test_a_pickle_that_claims_a_huge_discriminator_for_small_weights_is_refused_before_building(
    tiny_gan, tmp_path, monkeypatch
):
    from squeeze_span.generators import loading
    from squeeze_span.generators.safe_pickle import PickledModule

    honest = load_networks(tiny_gan)["D"]
    kwargs = {**honest.init_kwargs, "img_resolution": 1024, **HUGE_SYNTHESIS}
    network = PickledModule("training.networks.Discriminator", (), kwargs, honest.state_dict(), {})
    monkeypatch.setattr(loading, "read_stylegan2_pkl", lambda path: {"D": network})
    message = refused_or_loaded(lambda: refusal(lambda: load_stylegan2_pkl(tmp_path / "D.pkl")), CheckpointError)
    assert message.startswith(f"{tmp_path / 'D.pkl'} (D) lacks 'b1024.resample_filter', which Discriminator({{")
