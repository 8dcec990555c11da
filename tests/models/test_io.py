"""The exported-backbone format: round trips, its metadata, and every way a file can be wrong."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from squeeze_span.errors import CheckpointError
from squeeze_span.models import (
    load_backbone,
    resnet18,
    resnet18_cifar,
    save_backbone,
)
from squeeze_span.models.preprocessing import Preprocessing
from tests.conftest import hostile, refused_or_loaded


@pytest.fixture(scope="module", autouse=True)
def loaded_once(tmp_path_factory):
    """One honest export and load before any measured one: the first load in a fresh process imports
    what it needs, tens of MB that tracemalloc would charge to whichever file is read first."""
    path = tmp_path_factory.mktemp("warm") / "b.safetensors"
    load_backbone(save_backbone(resnet18_cifar(width=4), path))


def _trained(model):
    """A model whose BN running statistics and counters are no longer the defaults."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, model.config["in_channels"], 32, 32))
    return model.eval()


def _metadata(path):
    with safe_open(path, framework="pt") as file:
        return file.metadata()


def _header(**changes):
    header = {
        "format": "squeeze-span-backbone",
        "version": 1,
        "arch": "resnet18_cifar",
        "in_channels": 3,
        "width": 8,
        "num_classes": 0,
    }
    header.update(changes)
    return {"squeeze_span": json.dumps(header)}


@pytest.mark.parametrize(("factory", "num_classes"), [(resnet18_cifar, 0), (resnet18, 10)])
def test_round_trip_gives_same_outputs(tmp_path, factory, num_classes):
    model = _trained(factory(in_channels=2, width=8, num_classes=num_classes))
    path = save_backbone(model, tmp_path / "backbone.safetensors")
    loaded = load_backbone(path)
    assert not loaded.training
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.state_dict()["bn1.num_batches_tracked"].item() == 2
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_metadata_is_recorded(tmp_path):
    path = save_backbone(resnet18(in_channels=1, width=16, num_classes=5), tmp_path / "b.safetensors")
    assert json.loads(_metadata(path)["squeeze_span"]) == {
        "format": "squeeze-span-backbone",
        "version": 1,
        "arch": "resnet18",
        "in_channels": 1,
        "width": 16,
        "num_classes": 5,
    }


def test_the_trained_image_size_is_recorded_and_read_back(tmp_path):
    path = save_backbone(resnet18_cifar(in_channels=1, width=8, image_size=24), tmp_path / "b.safetensors")
    assert json.loads(_metadata(path)["squeeze_span"])["image_size"] == 24
    assert load_backbone(path).config["image_size"] == 24
    again = save_backbone(load_backbone(path), tmp_path / "again.safetensors")  # kept through a re-export
    assert load_backbone(again).config["image_size"] == 24
    older = save_backbone(resnet18_cifar(in_channels=1, width=8), tmp_path / "older.safetensors")
    assert "image_size" not in load_backbone(older).config  # files without the record load as before


def test_the_input_normalisation_is_recorded_and_kept_on_the_loaded_model(tmp_path):
    model = resnet18_cifar(in_channels=1, width=8, image_size=32)
    model.preprocessing = Preprocessing(mean=(0.286,), std=(0.353,), image_size=32)
    path = save_backbone(model, tmp_path / "b.safetensors")
    assert json.loads(_metadata(path)["squeeze_span"])["mean"] == [0.286]
    loaded = load_backbone(path)
    assert loaded.preprocessing == model.preprocessing
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    unit = torch.nn.functional.interpolate(images / 255.0, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(loaded.preprocessing(images), (unit - 0.286) / 0.353, rtol=1e-5, atol=1e-5)


def test_an_export_from_before_the_normalisation_was_recorded_loads_and_says_so(tmp_path):
    path = tmp_path / "older.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(image_size=32))
    loaded = load_backbone(path)
    assert loaded.preprocessing == Preprocessing(mean=None, std=None, image_size=32)
    with pytest.raises(CheckpointError, match="does not record its input normalisation"):
        loaded.preprocessing(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "mean"),  # two values for three channels
        ({"mean": [0.5] * 3}, "std"),  # one without the other
        ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "std"),
        ({"mean": [0.5, "x", 0.5], "std": [0.2] * 3}, "mean"),
    ],
)
def test_bad_normalisation_in_metadata(tmp_path, changes, name):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(**changes))
    _expect(path, rf"has no valid '{name}' in its metadata \(found .*; it must be a list of 3 finite")


def test_fc_saved_only_when_linear(tmp_path):
    without = save_backbone(resnet18_cifar(width=8), tmp_path / "without.safetensors")
    with_fc = save_backbone(resnet18_cifar(width=8, num_classes=3), tmp_path / "with.safetensors")
    with safe_open(without, framework="pt") as file:
        assert not [key for key in file.keys() if key.startswith("fc.")]
        assert len(list(file.keys())) == 120
    with safe_open(with_fc, framework="pt") as file:
        assert file.get_tensor("fc.weight").shape == (3, 64)


def test_channels_last_model_saves(tmp_path):
    model = resnet18_cifar(width=8).to(memory_format=torch.channels_last)
    loaded = load_backbone(save_backbone(model, tmp_path / "b.safetensors"))
    assert torch.equal(loaded.conv1.weight, model.conv1.weight)


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "nested" / "b.safetensors"
    save_backbone(resnet18_cifar(width=8), path)
    save_backbone(resnet18_cifar(width=4), path)
    assert load_backbone(path).config["width"] == 4
    assert [child.name for child in path.parent.iterdir()] == ["b.safetensors"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(self, data):
        self.open("wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken_write)  # tests/test_full_disk.py: on a real full disk
    with pytest.raises(OSError, match="disk full"):
        save_backbone(resnet18_cifar(width=8), tmp_path / "b.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_other_modules(tmp_path):
    with pytest.raises(TypeError, match="expects a squeeze_span ResNet, got Linear"):
        save_backbone(torch.nn.Linear(2, 2), tmp_path / "b.safetensors")


def test_plain_torchvision_state_dict_loads_with_arch(tmp_path):
    model = _trained(resnet18_cifar(in_channels=1, width=8, num_classes=7))
    path = tmp_path / "plain.safetensors"
    save_file(model.state_dict(), path)
    loaded = load_backbone(path, arch="resnet18_cifar")
    assert loaded.config == {"arch": "resnet18_cifar", "in_channels": 1, "width": 8, "num_classes": 7}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_plain_state_dict_with_wrong_arch_names_conv1(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path)
    message = (
        f"{path}: 'conv1.weight' has shape [8, 3, 3, 3] but resnet18 (in_channels=3, width=8) needs "
        "[8, 3, 7, 7]; check that it is a torchvision-named ResNet-18 state dict for arch='resnet18'"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        load_backbone(path, arch="resnet18")


# Error cases: each message names the file and the fix.


def _expect(path, pattern, **kwargs):
    with pytest.raises(CheckpointError) as caught:
        load_backbone(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert re.search(pattern, message), message
    return message


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.safetensors", r"does not exist; check the path, or make one with `squeeze-span export`")


def test_folder(tmp_path):
    _expect(
        tmp_path,
        r"is a folder without checkpoints/last\.pt; pass a run folder, a checkpoint or a \.safetensors backbone$",
    )


def test_garbage_is_not_safetensors(tmp_path):
    path = tmp_path / "b.safetensors"
    path.write_bytes(b"hello, this is not a safetensors file at all")
    _expect(path, r"is not a safetensors file or is corrupt \(.+\); make one with `squeeze-span export`$")


def test_empty_file_is_not_safetensors(tmp_path):
    path = tmp_path / "b.safetensors"
    path.write_bytes(b"")
    _expect(path, r"is not a safetensors file or is corrupt")


def test_truncated_file_is_corrupt(tmp_path):
    path = save_backbone(resnet18_cifar(width=8), tmp_path / "b.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    _expect(path, r"is not a safetensors file or is corrupt")


@pytest.mark.parametrize("name", ["last.pt", "model.pth", "epoch=3.ckpt"])
def test_a_torch_named_file_that_is_not_a_torch_archive_says_so(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"garbage")
    _expect(path, r"is not a torch checkpoint or is corrupt \(it is not a torch zip archive\); pass a run folder")


def test_a_foreign_torch_save_file_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"student": resnet18_cifar(width=4).state_dict()}, path)
    _expect(
        path, r"is a torch file but not a squeeze-span training checkpoint \(no 'backbone' entry\); pass a run folder"
    )


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ({"dataset": "stl10", "image_size": 64}, 64),
        ({"dataset": "stl10", "image_size": None}, 96),
        ({"dataset": "imagefolder", "image_size": None}, None),  # the folder's images decide
    ],
)
def test_an_older_checkpoint_gives_the_size_its_config_trained_at(tmp_path, data, size):
    """Checkpoints written before backbones recorded their size: the run's config says it."""
    model = resnet18_cifar(width=4)
    path = tmp_path / "last.pt"
    weights = {f"backbone.{key}": value for key, value in model.state_dict().items()}
    torch.save({"backbone": model.config, "method": weights, "config": {"data": data}}, path)
    assert load_backbone(path).config.get("image_size") == size


def test_a_torch_file_that_asks_for_code_is_refused_naming_the_global(tmp_path):
    from squeeze_span.errors import UnsafePickleError

    pwned = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    path = tmp_path / "evil.pt"
    torch.save({"backbone": Payload()}, path)
    with pytest.raises(UnsafePickleError, match=f"{re.escape(str(path))} asks for the global posix.system") as error:
        load_backbone(path)
    assert "weights_only" not in str(error.value) and not pwned.exists()


def test_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata={"format": "pt"})
    _expect(
        path,
        r"is a safetensors file but not a squeeze-span backbone \(no 'squeeze_span' metadata\); "
        r"make one with `squeeze-span export`, or pass arch= to load a torchvision-named",
    )


def test_unreadable_metadata(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata={"squeeze_span": "{not json"})
    _expect(path, r"has unreadable squeeze-span metadata")


def test_wrong_format(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(format="something-else"))
    _expect(path, r"is not a squeeze-span backbone \(metadata format is not 'squeeze-span-backbone'\)")


def test_newer_version(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(version=2))
    _expect(
        path,
        r"is backbone format version 2, but this squeeze-span reads version 1; "
        r"use the squeeze-span version that wrote it",
    )


def test_unknown_arch_in_metadata(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(arch="resnet50"))
    _expect(path, r"names unknown arch 'resnet50'; valid: resnet18, resnet18_cifar")


def test_bad_width_in_metadata(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(width="8"))
    _expect(path, r"has no valid 'width' in its metadata")


def test_impossible_width_in_metadata(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(width=0))
    _expect(path, r"has no valid 'width' in its metadata \(found 0; it must be an integer in \[1, 4096\]\)")


@pytest.mark.parametrize(
    ("size", "error"),
    [
        ("32", r"has no valid 'image_size' in its metadata"),
        (0, r"has no valid 'image_size' in its metadata \(found 0; it must be an integer in \[1, 4096\]\)"),
    ],
)
def test_bad_image_size_in_metadata(tmp_path, size, error):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8).state_dict(), path, metadata=_header(image_size=size))
    _expect(path, error)


def test_shape_mismatch_names_first_key(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=16).state_dict(), path, metadata=_header(width=8))
    _expect(
        path,
        r": 'conv1\.weight' has shape \[16, 3, 3, 3\] but resnet18_cifar \(in_channels=3, width=8\) "
        r"needs \[8, 3, 3, 3\]; the weights do not match the file's metadata",
    )


def test_missing_key_is_named(tmp_path):
    path = tmp_path / "b.safetensors"
    state = resnet18_cifar(width=8).state_dict()
    del state["layer3.0.downsample.1.running_var"]
    save_file(state, path, metadata=_header())
    _expect(path, r"lacks 'layer3\.0\.downsample\.1\.running_var', which resnet18_cifar")


def test_unexpected_key_is_named(tmp_path):
    path = tmp_path / "b.safetensors"
    state = resnet18_cifar(width=8).state_dict()
    state["projector.weight"] = torch.zeros(2, 2)
    save_file(state, path, metadata=_header())
    _expect(path, r"has unexpected key 'projector\.weight', which resnet18_cifar .* lacks")


def test_fc_without_num_classes_is_unexpected(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=8, num_classes=3).state_dict(), path, metadata=_header(num_classes=0))
    _expect(path, r"has unexpected key 'fc\.bias'")


def test_arch_disagreeing_with_metadata(tmp_path):
    path = save_backbone(resnet18_cifar(width=8), tmp_path / "b.safetensors")
    _expect(
        path,
        r"holds a resnet18_cifar backbone, not resnet18; pass arch='resnet18_cifar' or leave it out",
        arch="resnet18",
    )


def test_unknown_arch_argument(tmp_path):
    path = save_backbone(resnet18_cifar(width=8), tmp_path / "b.safetensors")
    _expect(path, r"unknown arch 'resnet19' for .*; valid: resnet18, resnet18_cifar", arch="resnet19")


# ------------------------------------------------------------------ files whose metadata lie

# No subnormal floats: a trainer test before these sets torch.set_flush_denormal(True) for the process.
metadata_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 3, 4, 8, 16, 10**9, 2**63]),
    st.floats(allow_subnormal=False),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
metadata_keys = st.sampled_from(["arch", "in_channels", "width", "num_classes", "image_size", "format", "version"])


@hostile(changes=st.dictionaries(metadata_keys, metadata_values, max_size=3))
def test_metadata_that_lies_loads_the_same_weights_or_is_refused_before_building(changes, tmp_path):
    model = resnet18_cifar(width=4)
    path = tmp_path / "b.safetensors"
    save_file(model.state_dict(), path, metadata=_header(**{"width": 4, **changes}))
    loaded = refused_or_loaded(lambda: load_backbone(path), CheckpointError, peak_bytes=4 * 2**20)
    if loaded is not None:
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name", ["width", "in_channels", "num_classes", "image_size"])
def test_an_absurd_size_in_metadata_is_refused_before_a_network_is_built(name, tmp_path):
    path = tmp_path / "b.safetensors"
    save_file(resnet18_cifar(width=4).state_dict(), path, metadata=_header(**{"width": 4, name: 10**9}))
    refused_or_loaded(lambda: _expect(path, rf"has no valid '{name}' in its metadata"), CheckpointError, 0.5, 2**20)


def test_a_width_the_weights_cannot_fill_is_refused_before_a_network_is_built(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file({"conv1.weight": torch.zeros(4096, 3, 3, 3)}, path, metadata=_header(width=4096))
    # A ResNet-18 of width 4096 is 45 billion parameters: it is compared on the meta device, never allocated.
    refused_or_loaded(lambda: _expect(path, r"lacks 'bn1\.weight'"), CheckpointError, 0.5, 2**20)


@hostile(backbone=st.dictionaries(metadata_keys, metadata_values, max_size=5) | metadata_values)
def test_a_training_checkpoint_whose_backbone_entry_lies_is_refused_before_building(backbone, tmp_path):
    model = resnet18_cifar(width=4)
    path = tmp_path / "last.pt"
    method = {f"backbone.{key}": value for key, value in model.state_dict().items()}
    torch.save({"format": "squeeze-span-checkpoint", "version": 1, "backbone": backbone, "method": method}, path)
    loaded = refused_or_loaded(lambda: load_backbone(path), CheckpointError, peak_bytes=4 * 2**20)
    if loaded is not None:
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())
