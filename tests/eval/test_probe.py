import json

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_span.cli import main
from squeeze_span.data import dataset_info, load_dataset
from squeeze_span.errors import ConfigError, DatasetError
from squeeze_span.eval import linear_probe_paper
from squeeze_span.eval.probe import probe_backbone
from squeeze_span.models import resnet18_cifar, save_backbone
from tests.conftest import tiny_run_overrides
from tests.train.test_gan import CONFIG as GAN_CONFIG
from tests.train.test_gan import tiny_overrides as tiny_gan_overrides


def test_paper_protocol_learns_a_separable_set(learnable_fashion_mnist):
    torch.manual_seed(0)
    info = dataset_info("fashion_mnist")
    result = linear_probe_paper(
        resnet18_cifar(in_channels=1, width=4),
        load_dataset("fashion_mnist", learnable_fashion_mnist, "train"),
        load_dataset("fashion_mnist", learnable_fashion_mnist, "test"),
        size=32,
        mean=info.mean,
        std=info.std,
        num_classes=10,
        device=torch.device("cpu"),
        epochs=3,
        batch_size=32,
        base_lr=1.0,
        progress=False,
    )
    assert result.protocol == "paper"
    assert result.top1 > 90.0


def test_unknown_protocol_is_a_config_error(learnable_fashion_mnist):
    with pytest.raises(ConfigError, match="protocol='best' is unknown; use one of fast, paper"):
        probe_backbone(
            resnet18_cifar(in_channels=1, width=4),
            "fashion_mnist",
            learnable_fashion_mnist,
            protocol="best",
            device=torch.device("cpu"),
        )


def test_the_validation_split_never_reads_test(learnable_fashion_mnist):
    for test_file in learnable_fashion_mnist.glob("t10k-*"):
        test_file.unlink()
    torch.manual_seed(0)
    result = probe_backbone(
        resnet18_cifar(in_channels=1, width=4),
        "fashion_mnist",
        learnable_fashion_mnist,
        split="validation",
        device=torch.device("cpu"),
        progress=False,
    )
    assert result["split"] == "validation" and result["linear"]["top1"] > 90.0
    with pytest.raises(DatasetError, match="t10k-images"):
        probe_backbone(
            resnet18_cifar(in_channels=1, width=4),
            "fashion_mnist",
            learnable_fashion_mnist,
            device=torch.device("cpu"),
            progress=False,
        )


def write_learnable_image_folder(root, mode):
    """train/ and test/ of two classes that differ in brightness, as 16x16 PNGs in ``mode``."""
    rng = np.random.default_rng(0)
    for split, count in [("train", 48), ("test", 16)]:
        for label in range(2):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count // 2):
                pixels = (rng.integers(0, 96, (16, 16)) + 150 * label).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(folder / f"{index}.png")


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
def test_an_image_folder_trains_and_probes(mode, channels, tiny_teacher, tmp_path):
    data, run = tmp_path / "images", tmp_path / "run"
    write_learnable_image_folder(data, mode)
    overrides = tiny_run_overrides(data, tiny_teacher, run, **{"data.dataset": "imagefolder", "train.max_steps": 2})
    assert main(["train", "configs/fashion_mnist/squeeze_span.yaml", *overrides]) == 0
    out = tmp_path / "probe.json"
    probe = ["probe", str(run), "--dataset", "imagefolder", "--data", str(data), "--precision", "fp32"]
    assert main([*probe, "--json", str(out), "--no-progress"]) == 0
    assert load_dataset("imagefolder", data).num_channels == channels
    result = json.loads(out.read_text())
    assert result["image_size"] == 16 and result["linear"]["top1"] > 90.0


def test_the_probe_shows_a_backbone_the_size_it_was_trained_at(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    run, exported = tmp_path / "run", tmp_path / "backbone.safetensors"
    overrides = tiny_run_overrides(
        learnable_fashion_mnist, tiny_teacher, run, **{"data.image_size": 24, "train.max_steps": 2}
    )
    assert main(["train", "configs/fashion_mnist/squeeze_span.yaml", *overrides]) == 0
    assert main(["export", str(run), str(exported)]) == 0
    probe = ["--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist), "--precision", "fp32"]

    def probed(backbone, *extra):
        out = tmp_path / "probe.json"
        capsys.readouterr()
        assert main(["probe", str(backbone), *probe, *extra, "--json", str(out), "--no-progress"]) == 0
        result = json.loads(out.read_text())
        assert f"{result['image_size']} px ({result['image_size_source']})" in capsys.readouterr().out
        return result["image_size"], result["image_size_source"]

    assert probed(exported) == (24, "trained size")  # Fashion-MNIST's default would be 32
    assert probed(run) == (24, "trained size")  # the run folder's checkpoint records it too
    assert probed(exported, "--size", "40") == (40, "--size")
    untrained = save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "untrained.safetensors")
    assert probed(untrained) == (32, "dataset default")


@pytest.mark.parametrize(
    ("features", "taps", "dim"), [("multi", ["b32", "b16", "b8", "b4.fc"], 256), ("single", ["b4.fc"], 64)]
)
def test_probe_discriminator_on_the_fixture_pickle_writes_the_probe_json(
    features, taps, dim, stylegan2_fixture, learnable_fashion_mnist, tmp_path
):
    out = tmp_path / "d.json"
    args = ["probe-discriminator", str(stylegan2_fixture / "tiny_uncond.pkl"), "--dataset", "fashion_mnist"]
    args += ["--data", str(learnable_fashion_mnist), "--features", features, "--precision", "fp32"]
    assert main([*args, "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    # The 1-channel 28 px images reach the 3-channel 32 px D copied to RGB and padded.
    assert (result["features"], result["taps"], result["feature_dim"]) == (features, taps, dim)
    assert (result["image_size"], result["image_size_source"], result["discriminator_resolution"]) == (
        28,
        "own size",
        32,
    )
    assert result["protocol"] == "fast" and result["linear"]["top1"] > 90.0


def test_probe_discriminator_of_a_model_without_d_is_one_line_and_status_2(tiny_teacher, capsys):
    assert main(["probe-discriminator", str(tiny_teacher), "--dataset", "fashion_mnist"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"CheckpointError: {tiny_teacher} holds no discriminator D; pass a train-gan snapshot")


def test_probe_discriminator_of_a_train_gan_snapshot(learnable_fashion_mnist, tmp_path):
    run = tmp_path / "gan"
    overrides = tiny_gan_overrides(learnable_fashion_mnist, run, **{"train.max_seconds": 1e-9})
    assert main(["train-gan", GAN_CONFIG, *overrides]) == 0
    (snapshot,) = (run / "snapshots").iterdir()
    out = tmp_path / "d.json"
    args = ["probe-discriminator", str(snapshot), "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main([*args, "--protocol", "paper", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["taps"] == ["b32", "b16", "b8", "b4.fc"] and result["linear"]["protocol"] == "paper"
