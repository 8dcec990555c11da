"""Each kind of file squeeze-span reads is recognised, and a reader given the wrong kind names it in one line."""

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from squeeze_span import filekinds
from squeeze_span.cli import main
from squeeze_span.config import to_yaml
from squeeze_span.methods import load_training_config
from squeeze_span.models import resnet18_cifar, save_backbone

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


@pytest.fixture
def gan_pickle(tmp_path, monkeypatch) -> Path:
    """A pickle that names NVIDIA's persistence module, as every StyleGAN2-ADA network pickle does."""

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("nothing may unpickle it")

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)

    class Network:
        def __reduce__(self):
            return (_reconstruct_persistent_obj, ({"type": "class", "class_name": "training.networks.Generator"},))

    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"training_set_kwargs": {}, "G": Network()}, protocol=4))
    return path


def run_folder(path: Path, *, checkpoint: bool) -> Path:
    """A run folder as training leaves it: its resolved config, and a checkpoint once one was written."""
    path.mkdir()
    (path / "config.yaml").write_text(to_yaml(load_training_config(CONFIG, [f"output_dir={path}"])))
    if checkpoint:
        (path / "checkpoints").mkdir()
        torch.save({"backbone": {}, "method": {}}, path / "checkpoints" / "last.pt")
    return path


def test_each_kind_is_recognised(gan_pickle, tiny_gan, tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("G_ema.json", "G_ema.safetensors", "D.json", "D.safetensors"):
        (snapshot / name).write_bytes((tiny_gan / name).read_bytes())
    (snapshot / "snapshot.json").write_text(json.dumps({"kimg": 1.0}))
    gan_run = tmp_path / "gan_run"
    gan_run.mkdir()
    (gan_run / "config.yaml").write_text("data:\n  dataset: fashion_mnist\ngenerator: {}\n")
    checkpoint = tmp_path / "last.pt"
    torch.save({"backbone": {}}, checkpoint)
    plain = tmp_path / "plain.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, plain)
    kinds = {
        gan_pickle: filekinds.GAN_PICKLE,
        tiny_gan: filekinds.GAN_FOLDER,
        tiny_gan / "G_ema.safetensors": filekinds.GAN_NETWORK,
        snapshot: filekinds.GAN_SNAPSHOT,
        gan_run: filekinds.GAN_RUN,
        run_folder(tmp_path / "run", checkpoint=True): filekinds.RUN_FOLDER,
        run_folder(tmp_path / "new_run", checkpoint=False): filekinds.EMPTY_RUN_FOLDER,
        checkpoint: filekinds.TRAINING_CHECKPOINT,
        save_backbone(resnet18_cifar(width=4), tmp_path / "b.safetensors"): filekinds.EXPORTED_BACKBONE,
        "asset:fashion_mnist_stylegan2": filekinds.GAN_FOLDER,
        "asset:fashion_mnist_classifier.safetensors": filekinds.EXPORTED_BACKBONE,
        plain: None,  # a foreign state dict: the reader decides (load_backbone with arch=)
        tmp_path / "missing": None,
    }
    assert {str(path): filekinds.identify(path) for path in kinds} == {str(path): kind for path, kind in kinds.items()}


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    return error.rstrip("\n")


def test_a_gan_pickle_given_to_probe_is_named_and_pointed_at_probe_discriminator(gan_pickle, capsys):
    assert main(["probe", str(gan_pickle), "--dataset", "fashion_mnist"]) == 2
    assert one_error_line(capsys) == (
        f"CheckpointError: {gan_pickle} is a StyleGAN2-ADA network pickle (a GAN), not a backbone; "
        "teacher.path, sample-gan, fd and probe-discriminator take it, as does convert-gan"
    )


@pytest.mark.parametrize("kind", ["export", "run folder"])
def test_a_backbone_given_to_sample_gan_is_not_a_generator(kind, tmp_path, capsys):
    if kind == "export":
        path = save_backbone(resnet18_cifar(width=4), tmp_path / "b.safetensors")
        what = "an exported backbone (.safetensors)"
    else:
        path = run_folder(tmp_path / "run", checkpoint=True)
        what = "a run folder (a trained backbone)"
    assert main(["sample-gan", str(path), "--out", str(tmp_path / "grid.png")]) == 2
    assert one_error_line(capsys) == (
        f"CheckpointError: {path} is {what}, not a generator; `squeeze-span probe`, `export` and load_backbone take it"
    )
    assert not (tmp_path / "grid.png").exists()


def test_a_backbone_given_as_teacher_path_is_not_a_generator(learnable_fashion_mnist, tmp_path, capsys):
    from tests.conftest import tiny_run_overrides

    backbone = save_backbone(resnet18_cifar(width=4), tmp_path / "b.safetensors")
    overrides = tiny_run_overrides(learnable_fashion_mnist, backbone, tmp_path / "run")
    assert main(["train", CONFIG, *overrides]) == 2
    assert one_error_line(capsys).startswith(
        f"CheckpointError: {backbone} is an exported backbone (.safetensors), not a generator; "
    )


def test_a_missing_config_lists_the_configs_of_its_folder_nearest_first(capsys):
    assert main(["train", "configs/fashion_mnist/vicreg.yaml"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(
        "ConfigError: config file configs/fashion_mnist/vicreg.yaml does not exist; configs/fashion_mnist/ holds "
    )
    nearest = line.split("nearest: ")[1].split("; ")[0].split(", ")
    assert sorted(nearest) == ["vicreg_mix.yaml", "vicreg_real.yaml", "vicreg_syn.yaml"]
    assert all(f"{path.name}" in line for path in Path("configs/fashion_mnist").glob("*.yaml"))
