"""Load generators from NVIDIA's pickles, from our safe format, or from a Python factory.

Our safe format is a folder holding, for each network (``G``, ``G_ema``, ``D``), a pair

- ``<name>.safetensors``: the state dict under NVIDIA's names;
- ``<name>.json``: ``{"format": "squeeze-span-stylegan2", "version": 1,
  "class_name": "Generator", "init_args": [], "init_kwargs": {...}}``.

A converted teacher thus loads without any pickle. ``squeeze-span convert-gan`` writes it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from squeeze_span import assets
from squeeze_span.config import ARCHITECTURES
from squeeze_span.errors import CheckpointError, ConfigError
from squeeze_span.fileio import atomic_write
from squeeze_span.filekinds import GAN, GAN_FORMAT, GAN_NETWORK_NAMES, identify, wrong_kind
from squeeze_span.generators.safe_pickle import PickledModule, read_stylegan2_pkl
from squeeze_span.generators.stylegan2 import build_network
from squeeze_span.validation import Bounds, Choice

FORMAT = GAN_FORMAT
VERSION = 1
NETWORK_NAMES = GAN_NETWORK_NAMES
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# What a stored network's init kwargs (and the dicts nested in them) must hold: a bad value
# would fail deep in a constructor, or build a network that fails at its first call. The upper
# bounds lie far above NVIDIA's largest networks (1024 px, 512 channels, 32768 channel_base), and
# far below what would exhaust memory: a file that claims more is refused before anything is built.
INIT_KWARG_RULES: dict[str, tuple[type, Bounds | Choice]] = {
    "z_dim": (int, Bounds(min=1, max=4096)),
    "c_dim": (int, Bounds(min=0, max=1_000_000)),
    "w_dim": (int, Bounds(min=1, max=4096)),
    "img_resolution": (int, Bounds(min=4, max=2048, power_of_two=True)),
    "img_channels": (int, Bounds(min=1, max=16)),
    "channel_base": (int, Bounds(min=1, max=1 << 20)),
    "channel_max": (int, Bounds(min=1, max=4096)),
    "num_fp16_res": (int, Bounds(min=0, max=16)),
    "num_layers": (int, Bounds(min=1, max=64)),
    "architecture": (str, Choice(ARCHITECTURES)),
    "mbstd_group_size": (int, Bounds(min=1, max=4096)),
    "mbstd_num_channels": (int, Bounds(min=0, max=64)),
}
NULLABLE_INIT_KWARGS = frozenset({"mbstd_group_size"})  # None: the whole batch is one group


def init_kwargs_problem(init_kwargs: dict[str, Any], prefix: str = "") -> str | None:
    """What breaks :data:`INIT_KWARG_RULES` in ``init_kwargs`` (and the dicts nested in it), or None."""
    for key, value in init_kwargs.items():
        if isinstance(value, dict):
            problem = init_kwargs_problem(value, f"{prefix}{key}.")
            if problem:
                return problem
        if key not in INIT_KWARG_RULES or (value is None and key in NULLABLE_INIT_KWARGS):
            continue
        kind, rule = INIT_KWARG_RULES[key]
        if isinstance(value, bool) or not isinstance(value, kind) or not rule.admits(value):
            return f"{prefix}{key}={value!r} {rule.verdict}; it must be {rule.describe(kind is int)}"
    return None


def check_init_kwargs(source: str | os.PathLike[str], init_kwargs: dict[str, Any], prefix: str = "") -> None:
    """Refuse, naming ``source``, the key and the value, init kwargs that break :data:`INIT_KWARG_RULES`."""
    problem = init_kwargs_problem(init_kwargs, prefix)
    if problem:
        raise CheckpointError(f"{source}: init kwarg {problem}; fix the file, or convert the pickle again")


def load_stylegan2_pkl(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The networks ('G', 'D', 'G_ema') of a stylegan2-ada-pytorch pickle, built with our implementation.

    Nothing in the file is executed (see :mod:`squeeze_span.generators.safe_pickle`).
    Other entries (``training_set_kwargs``) come back as plain data; ``augment_pipe`` is
    dropped, since squeeze-span never trains with NVIDIA's augmentation pipeline.
    """
    networks: dict[str, Any] = {}
    for key, value in read_stylegan2_pkl(path).items():
        if key in NETWORK_NAMES and isinstance(value, PickledModule):
            check_init_kwargs(path, value.init_kwargs)
            networks[key] = build_network(
                value.class_name, value.init_kwargs, value.init_args, value.state_dict, f"{path} ({key})"
            )
        elif not isinstance(value, PickledModule):
            networks[key] = value
    return networks


def save_network(network: nn.Module, folder: str | os.PathLike[str], name: str) -> Path:
    """Write ``network`` as ``folder/name.safetensors`` and ``folder/name.json``; return the weights' path."""
    folder = Path(folder)
    description = {
        "format": FORMAT,
        "version": VERSION,
        "class_name": type(network).__name__,
        "init_args": [],
        "init_kwargs": network.init_kwargs,
    }
    tensors = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    weights = folder / f"{name}.safetensors"
    with atomic_write(weights) as temp:
        temp.write_bytes(save(tensors))  # through Python, so that a full disk is an OSError naming the file
    with atomic_write(folder / f"{name}.json") as temp:
        temp.write_text(json.dumps(description, indent=2) + "\n")
    return weights


def load_network(weights: str | os.PathLike[str]) -> nn.Module:
    """Load one network of our safe format from its ``.safetensors`` file (its ``.json`` lies beside it)."""
    weights = Path(weights)
    description_path = weights.with_suffix(".json")
    for path in (weights, description_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; convert the pickle with `squeeze-span convert-gan IN.pkl OUT_DIR`"
            )
    try:
        description = json.loads(description_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{description_path} is not valid JSON ({error}); convert the pickle again") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise CheckpointError(f"{description_path} is not a squeeze-span generator description (format {FORMAT!r})")
    if description.get("version") != VERSION:
        raise CheckpointError(
            f"{description_path} has format version {description.get('version')!r}; this squeeze-span reads {VERSION}"
        )
    if not isinstance(description.get("class_name"), str) or not isinstance(description.get("init_kwargs"), dict):
        raise CheckpointError(
            f"{description_path} lacks a class_name or an init_kwargs mapping; convert the pickle again"
        )
    check_init_kwargs(description_path, description.get("init_kwargs"))
    try:
        state_dict = load_file(weights)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is not a safetensors file or is corrupt ({error}); convert again") from None
    return build_network(
        description["class_name"], description["init_kwargs"], description.get("init_args", ()), state_dict, weights
    )


def load_networks(path: str | os.PathLike[str], wanted: str = "a GAN") -> dict[str, Any]:
    """Every network in a pickle, in a folder of our format, or in one ``.safetensors`` file of it.

    Another kind of file (a backbone, a run folder) is refused as not ``wanted``, naming what it is.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist; pass a StyleGAN2-ADA .pkl or a folder from `squeeze-span convert-gan`"
        )
    kind = identify(path)
    if kind is not None and kind.holds != GAN:
        raise CheckpointError(wrong_kind(path, kind, wanted))
    if path.is_dir():
        found = {
            name: load_network(path / f"{name}.safetensors")
            for name in NETWORK_NAMES
            if (path / f"{name}.safetensors").exists()
        }
        if not found:
            raise CheckpointError(
                f"{path} holds none of {', '.join(n + '.safetensors' for n in NETWORK_NAMES)}; "
                "make it with `squeeze-span convert-gan IN.pkl OUT_DIR`"
            )
        return found
    if path.suffix == ".safetensors":
        return {path.stem: load_network(path)}
    return load_stylegan2_pkl(path)


def load_generator(spec: str | os.PathLike[str]) -> nn.Module:
    """The generator a teacher uses: G_ema (else G) from a pickle or our format, or ``package.module:factory``.

    A factory is any importable callable returning a module with StyleGAN's call,
    ``G(z, c)``, and a ``z_dim`` attribute (``c_dim`` defaults to 0): AutoGAN- and
    BigGAN-style generators plug in unchanged.
    """
    return load_gan(spec)[0]


def load_gan(spec: str | os.PathLike[str]) -> tuple[nn.Module, nn.Module | None]:
    """The generator :func:`load_generator` returns, and the discriminator ``D`` beside it, if any.

    One read of the source gives both, so a large pickle is not parsed twice. A factory,
    and a source with no ``D`` (the shipped asset holds only ``G_ema``), give ``None``.
    """
    text = str(spec)
    if FACTORY_PATTERN.match(text) and not Path(text).exists() and not text.startswith(assets.PREFIX):
        return _generator_from_factory(text), None
    networks = load_networks(assets.resolve(spec), "a generator")
    discriminator = networks.get("D") if isinstance(networks.get("D"), nn.Module) else None
    for name in ("G_ema", "G"):
        if isinstance(networks.get(name), nn.Module):
            return networks[name], discriminator
    raise CheckpointError(f"{spec} holds no generator (G_ema or G), only: {', '.join(map(str, networks)) or 'nothing'}")


def load_discriminator(spec: str | os.PathLike[str]) -> nn.Module:
    """The discriminator ``D`` of a pickle, a folder of our format (convert-gan, a train-gan snapshot), or an asset."""
    discriminator = load_networks(assets.resolve(spec), "a discriminator").get("D")
    if not isinstance(discriminator, nn.Module):
        raise CheckpointError(
            f"{spec} holds no discriminator D; pass a train-gan snapshot (runs/.../snapshots/network-snapshot-*/, "
            "which keeps D), a StyleGAN2-ADA .pkl, or a convert-gan folder of one"
        )
    return discriminator


def _generator_from_factory(spec: str) -> nn.Module:
    module_name, factory_name = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"cannot import the generator factory {spec!r} ({error}); check the package.module:name path"
        ) from None
    generator = factory()
    if not isinstance(generator, nn.Module) or not isinstance(getattr(generator, "z_dim", None), int):
        raise ConfigError(f"{spec}() must return a torch module with an integer z_dim attribute and a (z, c) call")
    return generator
