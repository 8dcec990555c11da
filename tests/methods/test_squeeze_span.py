import json
from pathlib import Path

import pytest
import torch

from squeeze_span.data import augmentation_for
from squeeze_span.data.stream import RealBatch
from squeeze_span.generators import LATENT_FEATURES, Teacher, load_generator
from squeeze_span.methods import METHODS, load_training_config
from squeeze_span.methods.base import MethodContext, split_batch
from squeeze_span.models import build_backbone
from squeeze_span.models.heads import SqueezeModule
from tests.conftest import tiny_run_overrides

GAN_CONFIGS = sorted(Path("configs").glob("*/gan.yaml"))
CONFIGS = sorted(set(Path("configs").glob("*/*.yaml")) - set(GAN_CONFIGS))


@pytest.mark.parametrize(
    "total, ratio, expected",
    [(512, 0.5, (256, 256)), (512, 1.0, (512, 0)), (512, 0.0, (0, 512)), (10, 0.25, (2, 8)), (7, 0.5, (4, 3))],
)
def test_split_batch(total, ratio, expected):
    assert split_batch(total, ratio) == expected


@pytest.mark.parametrize(
    "regex, pooled_dims",
    [(r"synthesis\.b\d+$", [16, 16, 8]), (LATENT_FEATURES, [8]), (r"synthesis\.b(4|16)$", [16, 8])],
)
def test_squeeze_module_shapes_for_each_feature_regex(tiny_teacher, regex, pooled_dims):
    teacher = Teacher(load_generator(tiny_teacher), regex)
    dims = [shape[0] for shape in teacher.feature_shapes]
    assert dims == pooled_dims
    features = teacher.sample(5).features
    squeezed = SqueezeModule(dims, depth=3, hidden_dim=32, out_dim=24)
    assert squeezed(features).shape == (5, 24)
    vanilla = SqueezeModule(dims, depth=0)
    assert vanilla.out_dim == sum(dims) and vanilla(features).shape == (5, sum(dims))
    assert not list(vanilla.parameters())
    # depth 3: three linear layers after the laterals' sum, as the authors' CompactRepr
    assert sum(isinstance(m, torch.nn.Linear) for m in squeezed.mlp) == 3


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_every_config_builds_its_method(path, tiny_gan):
    overrides = ["model.width=4", "model.proj_dim=16"]
    text = path.read_text()
    if "name: supervised" not in text:
        overrides.append(f"teacher.path={tiny_gan}")
    if "name: squeeze_span" in text:
        overrides.append("method.a_hidden=16")
    if "perceptual: lpips" in text:
        # The paper's LPIPS needs a package and a download these machines lack (its one-line refusal is
        # tested in tests/methods/test_encode.py); the same method builds with D's features instead.
        overrides.append("method.perceptual=discriminator")
    config = load_training_config(path, overrides)
    channels = 1 if config.data.dataset == "fashion_mnist" else 3
    teacher = Teacher(load_generator(config.teacher.path), config.teacher.features) if config.teacher.path else None
    backbone = build_backbone(config.model.backbone, in_channels=channels, width=config.model.width)
    context = MethodContext(
        torch.device("cpu"),
        channels,
        10,
        augmentation_for(config.data.dataset, config.data.image_size),
        torch.Generator(),
        config.model,
        teacher,
        config.teacher.path,  # encode's perceptual term reads the GAN's D from there
    )
    method = METHODS[config.method.name](config.method, backbone, context)
    synthetic, real = method.split(8)
    size = context.augmentation.size
    images = torch.randint(0, 256, (real, channels, size, size), dtype=torch.uint8)
    logs = method(RealBatch(images, torch.zeros(real, dtype=torch.long)), synthetic)
    assert torch.isfinite(logs["loss"])
    if config.method.name == "squeeze_span" and config.method.syn_ratio > 0:
        assert method.projector[-1].out_features == method.squeeze_module.out_dim  # Z_f and Z_g have the same width


@pytest.mark.parametrize("path", GAN_CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in GAN_CONFIGS])
def test_every_gan_config_builds_its_networks(path):
    from squeeze_span.config import GanTrainingConfig, load_config
    from squeeze_span.generators.stylegan2 import Discriminator, Generator

    config = load_config(path, [], GanTrainingConfig)
    G = Generator(
        z_dim=config.generator.z_dim,
        c_dim=0,
        w_dim=config.generator.w_dim,
        img_resolution=32,
        img_channels=1,
        mapping_kwargs=config.generator.mapping_kwargs,
        synthesis_kwargs=config.generator.synthesis_kwargs,
    )
    D = Discriminator(
        c_dim=0,
        img_resolution=32,
        img_channels=1,
        architecture=config.discriminator.architecture,
        channel_base=config.discriminator.channel_base,
        channel_max=config.discriminator.channel_max,
        epilogue_kwargs=config.discriminator.epilogue_kwargs,
    )
    images = G(torch.randn(4, config.generator.z_dim), None)
    assert images.shape == (4, 1, 32, 32) and D(images, None).shape == (4, 1)


def run_squeeze(config: str, data, teacher, out) -> list[float]:
    overrides = tiny_run_overrides(
        data,
        teacher,
        out,
        **{
            "train.max_steps": 60,
            "train.log_every": 10,
            "train.batch_size": 64,
            "optimizer.base_lr": 0.3,
            "train.checkpoint_every": 1000,
        },
    )
    config = load_training_config(config, overrides)
    from squeeze_span.train import Trainer

    Trainer(config, METHODS["squeeze_span"]).fit()
    return [json.loads(line)["std/squeeze"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two 60-step runs on the real Fashion-MNIST: about 13 s on a quiet machine
def test_without_variance_and_covariance_the_representation_collapses(tiny_teacher, tmp_path):
    data = "/usr/share/datasets/fashion-mnist"
    if not Path(data).exists():
        pytest.skip("needs Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    collapsing = run_squeeze("configs/fashion_mnist/kd_squeeze_novar_nocov.yaml", data, tiny_teacher, tmp_path / "c")
    regularised = run_squeeze("configs/fashion_mnist/squeeze.yaml", data, tiny_teacher, tmp_path / "e")
    assert collapsing[-1] < 0.5 * collapsing[0]  # Table 3 row c: the std of Z_f falls
    assert regularised[-1] > 4 * collapsing[-1]  # row e: L_var and L_cov hold it up
    assert regularised[-1] >= regularised[0]
