import json

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.models import resnet18_cifar, save_backbone


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "probe" in capsys.readouterr().out


def test_probe_random_init_on_real_format_data(learnable_fashion_mnist, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--random-init", "resnet18_cifar", "--width", "4", "--dataset", "fashion_mnist"]
    code = main([*args, "--data", str(learnable_fashion_mnist), "--knn", "--json", str(out), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["linear"]["top1"] > 95.0
    assert result["knn"]["top1"] > 95.0
    assert result["image_size"] == 32 and result["protocol"] == "fast"
    printed = capsys.readouterr().out
    assert "linear" in printed and f"{result['linear']['top1']:.2f}" in printed


def test_probe_an_exported_backbone(learnable_fashion_mnist, tmp_path):
    torch.manual_seed(0)
    path = save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "backbone.safetensors")
    out = tmp_path / "probe.json"
    args = ["probe", str(path), "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main([*args, "--json", str(out), "--no-progress", "--precision", "fp32"]) == 0
    assert json.loads(out.read_text())["linear"]["top1"] > 95.0


def test_missing_dataset_is_one_line_and_status_2(tmp_path, capsys):
    args = ["probe", "--random-init", "resnet18_cifar", "--dataset", "cifar10", "--data", str(tmp_path / "nowhere")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"DatasetError: {tmp_path}/nowhere/cifar-10-batches-py is missing; download CIFAR-10")


def test_missing_checkpoint_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "none.safetensors"), "--dataset", "fashion_mnist"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("CheckpointError:")


def test_convert_gan_then_sample_gan_writes_a_grid(stylegan2_fixture, tmp_path, capsys):
    out_dir = tmp_path / "teacher"
    assert main(["convert-gan", str(stylegan2_fixture / "tiny_uncond.pkl"), str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "D.json",
        "D.safetensors",
        "G.json",
        "G.safetensors",
        "G_ema.json",
        "G_ema.safetensors",
    ]
    grid = tmp_path / "grid.png"
    assert main(["sample-gan", str(out_dir), "--n", "6", "--columns", "3", "--out", str(grid)]) == 0
    from PIL import Image

    with Image.open(grid) as image:
        assert image.size == (3 * 34 + 2, 2 * 34 + 2) and image.mode == "RGB"


def test_convert_gan_refuses_an_unsafe_pickle_in_one_line(tmp_path, capsys):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G": Payload()}))
    assert main(["convert-gan", str(evil), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("UnsafePickleError:") and "posix.system" in error and error.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


def test_train_then_export_a_backbone_with_torchvision_names(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    from squeeze_span.models import load_backbone
    from tests.conftest import tiny_run_overrides

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "configs/fashion_mnist/squeeze_span.yaml",
                *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run),
            ]
        )
        == 0
    )
    assert "step 4: loss" in capsys.readouterr().out
    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(run), str(out)]) == 0
    exported = load_backbone(out)
    assert "layer4.1.bn2.running_var" in exported.state_dict() and exported.config["in_channels"] == 1
    for name, value in load_backbone(run).state_dict().items():
        assert torch.equal(value, exported.state_dict()[name])


def test_fd_names_its_metric_honestly(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    torch.manual_seed(0)
    classifier = save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "classifier.safetensors")
    args = [
        "fd",
        str(tiny_teacher),
        "--dataset",
        "fashion_mnist",
        "--data",
        str(learnable_fashion_mnist),
        "--classifier",
        str(classifier),
        "--n",
        "40",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith(f"FD-fashion_mnist-classifier of {tiny_teacher} against fashion_mnist train")
        and "FID" not in out
    )
    assert main([*args[:-5], "--inception", str(tmp_path / "missing.pth"), "--no-progress"]) == 2
    assert "missing.pth is missing; FID needs pt_inception-2015-12-05" in capsys.readouterr().err
