"""The exported-backbone format: one ``.safetensors`` file, no pickle.

The file holds the backbone's state dict under torchvision's names, and its safetensors
metadata holds, under the key ``squeeze_span``, a JSON object::

    {"format": "squeeze-span-backbone", "version": 1,
     "arch": "resnet18_cifar", "in_channels": 3, "width": 64, "num_classes": 0,
     "image_size": 32, "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}

from which :func:`load_backbone` rebuilds the model. ``image_size``, the side of the images
the backbone was trained on, is there when its run recorded it; ``squeeze-span probe``
shows the backbone images of that size. ``mean`` and ``std``, the per-channel normalisation
of its training images, are there in files exported since they were recorded (older readers
ignore them). The loaded model keeps all three as ``model.preprocessing``, None where the
file does not say. A plain torchvision-named state dict in safetensors (timm's ResNet-18
files, for example) loads too when the caller names ``arch``; the other arguments are read
off the tensor shapes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from squeeze_span import assets
from squeeze_span.data import DATASET_INFO
from squeeze_span.errors import CheckpointError, ConfigError
from squeeze_span.fileio import atomic_write, build_for_weights, is_torch_archive, load_torch_file, weights_misfit
from squeeze_span.filekinds import (
    BACKBONE,
    BACKBONE_FORMAT,
    BACKBONE_METADATA_KEY,
    RUN_CHECKPOINT,
    identify,
    wrong_kind,
)
from squeeze_span.models.preprocessing import Preprocessing
from squeeze_span.models.resnet import BACKBONES, ResNet, build_backbone
from squeeze_span.validation import Bounds

FORMAT = BACKBONE_FORMAT
VERSION = 1
METADATA_KEY = BACKBONE_METADATA_KEY
EXPORT_HINT = "make one with `squeeze-span export`"
SUFFIX = ".safetensors"
BACKBONE_PREFIX = "backbone."  # the backbone's weights in a training checkpoint's method state dict
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


def save_backbone(model: ResNet, path: str | os.PathLike[str], *, dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s state dict, build arguments and preprocessing to ``path`` (a ``.safetensors`` file);
    return the path.

    ``dtype`` (torch.bfloat16, say) stores the floating-point tensors in that type: half the size,
    and ``load_backbone`` returns them in the model's own float32. Another suffix than ``.safetensors``
    is refused: readers take a ``.pt`` for a torch checkpoint.

    The file is written next to its destination and then renamed into place, so a crash
    never leaves a half-written backbone under the final name.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"save_backbone expects a squeeze_span ResNet, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != SUFFIX:
        raise CheckpointError(
            f"{path}: a backbone is written as safetensors, which readers know by its suffix; "
            f"name it {path.with_suffix(SUFFIX).name}"
        )
    # safetensors wants contiguous CPU tensors; channels_last weights are not contiguous.
    tensors = {
        key: value.detach()
        .cpu()
        .to(dtype if dtype is not None and value.is_floating_point() else value.dtype)
        .contiguous()
        for key, value in model.state_dict().items()
    }
    header = {"format": FORMAT, "version": VERSION, **model.config}
    if model.preprocessing.mean is not None:
        header.update(mean=list(model.preprocessing.mean), std=list(model.preprocessing.std))
    with atomic_write(path) as temp:
        # Serialised in memory, then written by Python: a full disk is an OSError that names the file,
        # where safetensors' own writer raises its own error type.
        temp.write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(header)}))
    return path


def load_backbone(path: str | os.PathLike[str], *, arch: str | None = None) -> ResNet:
    """Rebuild the backbone saved at ``path`` (an export, a run folder or its checkpoint) and return it in eval mode.

    ``arch`` is needed only for a safetensors file without squeeze-span metadata (a plain
    torchvision-named state dict); for an exported backbone it must agree with the file.
    The model's ``preprocessing`` holds the image size and normalisation its file or run
    records. Every problem with the file raises :class:`~squeeze_span.errors.CheckpointError`.
    """
    path = assets.resolve(path)
    kind = identify(path)
    if kind is not None and kind.holds != BACKBONE:
        raise CheckpointError(wrong_kind(path, kind, "a backbone"))
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        path = path / RUN_CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; check the path, or {EXPORT_HINT}")
    if not path.is_file():
        raise CheckpointError(
            f"{path} is a folder without {RUN_CHECKPOINT}; pass a run folder, a checkpoint or a .safetensors backbone"
        )
    if is_torch_archive(path):
        return _backbone_from_training_checkpoint(path)
    if path.suffix in TORCH_SUFFIXES:  # named as a torch file, so a safetensors complaint would mislead
        raise CheckpointError(
            f"{path} is not a torch checkpoint or is corrupt (it is not a torch zip archive); "
            f"pass a run folder or its {RUN_CHECKPOINT}, copy the file again, or {EXPORT_HINT}"
        )
    metadata, tensors = _read_safetensors(path)
    header = _read_header(path, metadata)
    config = _backbone_config(path, header, tensors, arch)
    if header is not None:
        fix = "the weights do not match the file's metadata; re-export it with `squeeze-span export`"
    else:
        fix = f"check that it is a torchvision-named ResNet-18 state dict for arch={arch!r}"
    model = _build_holding(path, config, tensors, fix)
    mean, std = _recorded_normalization(path, header or {}, config["in_channels"])
    model.preprocessing = Preprocessing(mean, std, config.get("image_size"))
    return model


def _build_holding(path: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], fix: str) -> ResNet:
    """The backbone ``config`` describes, holding ``tensors``; nothing is allocated until they fit it."""
    config = dict(config)
    arch = config.pop("arch")
    try:
        model = build_for_weights(
            lambda: build_backbone(arch, **config), lambda model: _check_keys(path, model, tensors, fix), tensors
        )
    except ConfigError as error:
        raise CheckpointError(f"{path} describes a backbone that cannot be built ({error}); {EXPORT_HINT}") from error
    return model.eval()


def _backbone_from_training_checkpoint(path: Path) -> ResNet:
    """The backbone inside a training checkpoint: its build arguments under 'backbone', and its
    weights in the method's state dict ('method') under the prefix 'backbone.'."""
    state = load_torch_file(path, what="squeeze-span training checkpoint")
    try:
        config = dict(state["backbone"])
        weights = {
            key[len(BACKBONE_PREFIX) :]: value
            for key, value in state["method"].items()
            if key.startswith(BACKBONE_PREFIX)
        }
    except KeyError as error:
        raise CheckpointError(
            f"{path} is a torch file but not a squeeze-span training checkpoint (no {error} entry); "
            "pass a run folder, its checkpoints/last.pt, or an exported .safetensors backbone"
        ) from None
    except (TypeError, ValueError, AttributeError) as error:  # a torch file of another shape
        raise CheckpointError(f"{path} is not a squeeze-span training checkpoint ({error})") from None
    data = _data_section(state.get("config"))
    if "image_size" not in config:
        config["image_size"] = _configured_size(data)
    config = _checked_config(path, config, "its 'backbone' entry")
    model = _build_holding(path, config, weights, "the checkpoint does not hold this backbone's weights")
    # The run normalised its images by its dataset's statistics (train/builder.py, augmentation_for).
    model.preprocessing = Preprocessing.of_dataset(data.get("dataset"), config["in_channels"], config["image_size"])
    return model


def _data_section(run_config: Any) -> dict[str, Any]:
    """The ``data`` section of a checkpoint's run config; {} where it has none."""
    data = run_config.get("data") if isinstance(run_config, dict) else None
    return data if isinstance(data, dict) else {}


def _configured_size(data: dict[str, Any]) -> int | None:
    """The view size a run's ``data`` config trains at, for checkpoints written before backbones recorded it:
    ``data.image_size``, else its dataset's (None for an image folder, whose images decide)."""
    size = data.get("image_size")
    if size is None and data.get("dataset") in DATASET_INFO:
        size = DATASET_INFO[data["dataset"]].view_size
    return size


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a safetensors file or is corrupt ({reason}); {EXPORT_HINT}") from error
    return metadata, tensors


def _read_header(path: Path, metadata: dict[str, str]) -> dict[str, Any] | None:
    """The file's squeeze-span metadata, checked for format and version; None for a file without it."""
    if METADATA_KEY not in metadata:
        return None
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} has unreadable squeeze-span metadata ({error}); {EXPORT_HINT}") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a squeeze-span backbone (metadata format is not {FORMAT!r}); {EXPORT_HINT}"
        )
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is backbone format version {header.get('version')!r}, but this squeeze-span reads "
            f"version {VERSION}; use the squeeze-span version that wrote it, or re-export it"
        )
    return header


def _backbone_config(
    path: Path, header: dict[str, Any] | None, tensors: dict[str, torch.Tensor], arch: str | None
) -> dict[str, Any]:
    """The ``build_backbone`` arguments, from the file's metadata or, failing that, from ``arch`` and the shapes."""
    if arch is not None and arch not in BACKBONES:
        raise CheckpointError(f"unknown arch {arch!r} for {path}; valid: {', '.join(sorted(BACKBONES))}")
    if header is None:
        if arch is None:
            raise CheckpointError(
                f"{path} is a safetensors file but not a squeeze-span backbone (no {METADATA_KEY!r} metadata); "
                f"{EXPORT_HINT}, or pass arch= to load a torchvision-named ResNet-18 state dict"
            )
        return _config_from_shapes(path, tensors, arch)
    config = {name: header.get(name) for name in ("arch", "in_channels", "width", "num_classes")}
    if "image_size" in header:  # absent from files of runs that did not record it
        config["image_size"] = header["image_size"]
    config = _checked_config(path, config, "its metadata")
    if arch is not None and arch != config["arch"]:
        raise CheckpointError(
            f"{path} holds a {config['arch']} backbone, not {arch}; pass arch={config['arch']!r} or leave it out"
        )
    return config


def _recorded_normalization(
    path: Path, header: dict[str, Any], channels: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The per-channel ``mean`` and ``std`` the header records, checked; (None, None) where it records neither
    (files exported before they were recorded)."""
    if "mean" not in header and "std" not in header:
        return None, None
    values = {name: header.get(name) for name in ("mean", "std")}
    for name, value in values.items():
        if not (
            isinstance(value, list)
            and len(value) == channels
            and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value)
            and all(math.isfinite(item) and (name == "mean" or item > 0) for item in value)
        ):
            sign = "positive " if name == "std" else ""
            raise CheckpointError(
                f"{path} has no valid {name!r} in its metadata (found {value!r}; it must be a list of "
                f"{channels} finite {sign}numbers, one per input channel); {EXPORT_HINT}"
            )
    return tuple(map(float, values["mean"])), tuple(map(float, values["std"]))


# What a file may say of its backbone: far above anything this project trains (width 64, 96 px
# images), far below what would exhaust memory; its weights must then agree.
BACKBONE_RULES = {
    "in_channels": Bounds(min=1, max=64),
    "width": Bounds(min=1, max=4096),
    "num_classes": Bounds(min=0, max=1_000_000),
    "image_size": Bounds(min=1, max=4096),
}


def _checked_config(path: Path, config: Any, where: str) -> dict[str, Any]:
    """``config`` (a file's account of its backbone) checked value by value, before anything is built from
    it: a width of 10**9 is refused, not allocated. :func:`_build_holding` then holds it to the weights."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: {where} is a {type(config).__name__}, not a mapping; {EXPORT_HINT}")
    unknown = sorted(map(str, set(config) - {"arch", *BACKBONE_RULES}))
    if unknown:
        raise CheckpointError(f"{path}: {where} has unknown key {unknown[0]!r}; {EXPORT_HINT}")
    if not isinstance(config.get("arch"), str) or config["arch"] not in BACKBONES:
        raise CheckpointError(
            f"{path} names unknown arch {config.get('arch')!r}; valid: {', '.join(sorted(BACKBONES))}; {EXPORT_HINT}"
        )
    for name, rule in BACKBONE_RULES.items():
        value = config.get(name)
        if name == "image_size" and value is None:  # older files did not record it
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not rule.admits(value):
            raise CheckpointError(
                f"{path} has no valid {name!r} in {where} (found {value!r}; it must be {rule.describe(True)}); "
                f"{EXPORT_HINT}"
            )
    return config


def _config_from_shapes(path: Path, tensors: dict[str, torch.Tensor], arch: str) -> dict[str, Any]:
    conv1 = tensors.get("conv1.weight")
    if conv1 is None or conv1.dim() != 4:
        raise CheckpointError(
            f"{path} has no 4-d 'conv1.weight', so it is not a torchvision-named ResNet-18 state dict; {EXPORT_HINT}"
        )
    fc = tensors.get("fc.weight")
    return {
        "arch": arch,
        "in_channels": conv1.shape[1],
        "width": conv1.shape[0],
        "num_classes": 0 if fc is None else fc.shape[0],
    }


def _check_keys(path: Path, model: ResNet, tensors: dict[str, torch.Tensor], fix: str) -> None:
    """Name the first key that does not fit, rather than the list ``load_state_dict`` would print."""
    config = model.config
    misfit = weights_misfit(
        model, tensors, path, f"{model.arch} (in_channels={config['in_channels']}, width={config['width']})"
    )
    if misfit:
        raise CheckpointError(f"{misfit}; {fix}")
