"""Encoding (Table 1): the student maps images to the teacher's w+, which the frozen G renders back."""

import json
import sys
import types
import urllib.error

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.methods import METHODS, load_training_config
from squeeze_span.train import Trainer
from tests.conftest import tiny_run_overrides


def make_trainer(config: str, data, teacher, output_dir, **extra) -> Trainer:
    overrides = tiny_run_overrides(data, teacher, output_dir, method="encode", **extra)
    loaded = load_training_config(f"configs/fashion_mnist/{config}.yaml", overrides)
    return Trainer(loaded, METHODS[loaded.method.name], command=["test"])


# The authors' encode.py (yangyu12/squeeze-and-span) as its Table 1 scripts run it: its defaults
# --lr 0.01 (a base rate: setup_env multiplies it by batch / 256, as our trainer does base_lr), -b 128,
# --momentum 0.9, --wd 5e-4, --num-proj-layers 2; --epochs 800 and -a resnet18cifar from the scripts.
AUTHORS_ENCODE = {"base_lr": 0.01, "batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4, "proj_layers": 2}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize(("config", "syn_ratio"), [("encode_w_syn", 1.0), ("encode_w_syn_real", 0.5)])
def test_the_papers_encode_configs_hold_the_authors_settings(dataset, config, syn_ratio):
    loaded = load_training_config(f"configs/{dataset}/{config}.yaml", [])
    settings = {
        "base_lr": loaded.optimizer.base_lr,
        "batch_size": loaded.train.batch_size,
        "momentum": loaded.optimizer.momentum,
        "weight_decay": loaded.optimizer.weight_decay,
        "proj_layers": loaded.model.proj_layers,
    }
    assert settings == pytest.approx(AUTHORS_ENCODE, rel=1e-12)
    assert (loaded.method.syn_ratio, loaded.train.epochs, loaded.model.backbone) == (syn_ratio, 800, "resnet18_cifar")
    assert loaded.data.dataset == dataset
    assert loaded.method.perceptual == "lpips"  # the paper's objective; Fashion-MNIST's keep D's features


def test_the_fashion_mnist_encode_configs_keep_the_discriminator_term():
    for config in ("encode_w_syn", "encode_w_syn_real"):
        assert load_training_config(f"configs/fashion_mnist/{config}.yaml", []).method.perceptual == "discriminator"


@pytest.mark.parametrize("config", ["encode_w_syn", "encode_w_syn_real"])
def test_encoding_trains_and_its_loss_falls(learnable_fashion_mnist, tiny_gan, tmp_path, config):
    run = tmp_path / "run"
    settings = {"train.max_steps": 12, "optimizer.base_lr": 2.0}
    trainer = make_trainer(config, learnable_fashion_mnist, tiny_gan, run, **settings)
    assert (trainer.synthetic, trainer.real) == ((16, 0) if config == "encode_w_syn" else (8, 8))
    trainer.fit()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 13))
    branches = ["syn"] if config == "encode_w_syn" else ["syn", "real"]
    expected = {f"loss/{b}/{term}" for b in branches for term in ("l1", "perceptual_d")} | {"loss/syn/latent"}
    assert expected <= set(lines[0]) and "knn/top1" in lines[-1]
    for key in ("loss", "loss/syn/latent"):  # the total, and how far the student's w+ is from G's
        first, last = sum(line[key] for line in lines[:3]), sum(line[key] for line in lines[-3:])
        assert last < first, key


def test_the_reconstruction_trains_the_student_and_never_the_teacher(learnable_fashion_mnist, tiny_gan, tmp_path):
    # Without the latent term the gradient reaches the student through G.synthesis and D alone.
    trainer = make_trainer(
        "encode_w_syn_real", learnable_fashion_mnist, tiny_gan, tmp_path / "run", **{"method.latent_loss_weight": 0.0}
    )
    method, teacher = trainer.method, trainer.teacher
    real = trainer.stream.next(trainer.real)
    assert method.encode(real.images).shape == (8, teacher.network.num_ws, teacher.network.w_dim)
    logs = trainer.model(real, trainer.synthetic)
    logs["loss"].backward()
    student = list(method.backbone.parameters()) + list(method.projector.parameters())
    assert all(p.grad is not None for p in student) and method.projector[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.network.parameters())
    # The frozen networks stay out of the optimizer and the checkpoints.
    assert {id(p) for group in trainer.optimizer.param_groups for p in group["params"]} == {id(p) for p in student}
    assert all(key.startswith(("backbone.", "projector.")) for key in method.state_dict())


def test_a_teacher_without_a_discriminator_is_one_line(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    overrides = tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, tmp_path / "run", method="encode")
    assert main(["train", "configs/fashion_mnist/encode_w_syn.yaml", *overrides]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(
        f"ConfigError: method.perceptual=discriminator needs the teacher's discriminator D, and {tiny_teacher} "
        "holds none; use a model that keeps D (a train-gan snapshot"
    )
    assert error.rstrip().endswith("or set method.perceptual=none")
    trainer = make_trainer(
        "encode_w_syn", learnable_fashion_mnist, tiny_teacher, tmp_path / "none", **{"method.perceptual": "none"}
    )
    logs = trainer.model(trainer.stream.next(trainer.real), trainer.synthetic)
    assert {"loss/syn/latent", "loss/syn/l1"} <= set(logs) and "loss/syn/perceptual_d" not in logs


def fake_lpips(error: Exception) -> types.ModuleType:
    module = types.ModuleType("lpips")

    def unloadable(**kwargs):
        raise error

    module.LPIPS = unloadable
    return module


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (None, r"method.perceptual=lpips needs the lpips package \(.*\); install it, or set method.perceptual="),
        (
            fake_lpips(urllib.error.URLError("no route to host")),
            r"could not load LPIPS's AlexNet weights \(<urlopen error no route to host>\); set method.perceptual=",
        ),
    ],
    ids=["no package", "no weights"],
)
def test_lpips_without_its_package_or_weights_is_a_config_error(
    learnable_fashion_mnist, tiny_gan, tmp_path, monkeypatch, module, message
):
    monkeypatch.setitem(sys.modules, "lpips", module)  # None: `import lpips` raises ImportError
    with pytest.raises(ConfigError, match=message + r"discriminator \(the GAN's own D\) or none$"):
        make_trainer(
            "encode_w_syn", learnable_fashion_mnist, tiny_gan, tmp_path / "run", **{"method.perceptual": "lpips"}
        )


def test_lpips_takes_rgb_images_in_minus_one_to_one(learnable_fashion_mnist, tiny_gan, tmp_path, monkeypatch):
    seen = []

    class RecordingLPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            assert net == "alex"

        def forward(self, reconstruction, target):
            seen.append((tuple(reconstruction.shape), tuple(target.shape)))
            return (reconstruction - target).abs().mean(dim=(1, 2, 3), keepdim=True)

    module = types.ModuleType("lpips")
    module.LPIPS = RecordingLPIPS
    monkeypatch.setitem(sys.modules, "lpips", module)
    trainer = make_trainer(
        "encode_w_syn_real", learnable_fashion_mnist, tiny_gan, tmp_path / "run", **{"method.perceptual": "lpips"}
    )
    logs = trainer.model(trainer.stream.next(trainer.real), trainer.synthetic)
    assert seen == [((8, 3, 16, 16), (8, 3, 16, 16))] * 2 and "loss/real/lpips" in logs


def test_a_teacher_pool_is_refused(learnable_fashion_mnist, tiny_gan, tmp_path):
    with pytest.raises(ConfigError, match=r"StyleGAN2 teacher, rendered at each step \(teacher.pool_size=0\)$"):
        make_trainer("encode_w_syn", learnable_fashion_mnist, tiny_gan, tmp_path / "run", **{"teacher.pool_size": 8})


def test_the_discriminator_of_an_nvidia_pickle_serves(learnable_fashion_mnist, stylegan2_fixture, tmp_path):
    teacher = stylegan2_fixture / "tiny_uncond.pkl"  # G, D and G_ema, 32 px RGB, w+ of 8 x 32
    trainer = make_trainer("encode_w_syn_real", learnable_fashion_mnist, teacher, tmp_path / "run")
    real = trainer.stream.next(trainer.real)
    assert trainer.method.encode(real.images).shape == (8, 8, 32)
    logs = trainer.model(real, trainer.synthetic)
    assert logs["loss/real/perceptual_d"] > 0 and torch.isfinite(logs["loss"])
