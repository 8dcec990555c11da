"""One typed config tree: dataclass defaults in code, a YAML file for what differs, key=value overrides.

The training config is :class:`TrainingConfig`, one dataclass per section; its
``method`` section is typed by the method its ``name`` picks (see
``squeeze_span.methods.METHOD_CONFIGS``).

``load_config(path, overrides, schema, variants)`` merges, in order, the schema's
defaults, the YAML file and the ``key=value`` overrides, and returns the schema's
dataclass. A section whose fields depend on a choice (the ``method`` section, whose
``name`` picks the method) is typed by ``variants``. An unknown key, or a value of the
wrong type, raises :class:`~squeeze_span.errors.ConfigError` naming the key and the
closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from squeeze_span.errors import ConfigError

T = TypeVar("T")


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    root: Optional[str] = None  # None: the dataset's default (data/CIFAR10, ...)
    split: str = "train"  # STL-10 trains on train+unlabeled
    image_size: Optional[int] = None  # None: the dataset's training size (32, or 96 for STL-10)
    on_device: bool = True  # keep the real images on the device as one uint8 tensor when they fit


@dataclass
class TeacherConfig:
    path: Optional[str] = None  # a StyleGAN2-ADA .pkl, a convert-gan folder, or package.module:factory
    features: str = r"synthesis\.b\d+$"  # the modules whose outputs are h^g(w); 'mapping$' taps w
    truncation_psi: float = 1.0
    noise_mode: str = "random"  # the authors' code calls G(z, c) with NVIDIA's default, random noise
    pool_size: int = 0  # > 0: render this many samples once and draw from them (fresh augmentation each draw)


@dataclass
class ModelConfig:
    backbone: str = "resnet18_cifar"
    width: int = 64  # base width of the ResNet; the CPU configs use 16
    zero_init_residual: bool = True
    proj_layers: int = 5  # linear layers in the projector: (Linear-BN-ReLU) x (n-1), then Linear
    proj_hidden: Optional[int] = None  # None: the backbone's feature width, as the authors' code
    proj_dim: int = 2048


@dataclass
class OptimizerConfig:
    base_lr: float = 0.03  # the learning rate is base_lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0  # linear warm-up before the cosine decay


@dataclass
class RunSettings:
    """What every trainer's ``train`` section holds: device, precision, seed, budget and cadence."""

    max_seconds: Optional[float] = None  # stop this invocation, with a checkpoint, after this wall time
    precision: str = "bf16"  # fp32 | bf16 | fp16 (GPU only)
    device: str = "auto"
    seed: int = 0
    log_every: int = 10  # steps
    checkpoint_every: int = 100  # steps between writes of checkpoints/last.pt
    progress: bool = True


@dataclass
class TrainConfig(RunSettings):
    batch_size: int = 512  # global: split over ranks, and between synthetic and real images
    epochs: int = 800  # an epoch is as many steps as the real train set holds batches
    max_steps: Optional[int] = None  # stop (and end the schedule) after this many steps
    # A time budget for the whole run, in seconds, instead of a number of steps: the learning rate
    # follows the fraction of the budget spent, and the run ends when it is spent (resumes included).
    budget_seconds: Optional[float] = None
    snapshot_every: int = 0  # steps between kept copies checkpoints/step_N.pt; 0: none
    knn_every: int = 0  # steps between kNN monitors on the test split; 0: only at the end
    knn_train_samples: int = 10000  # the kNN bank: this many labeled training images (0: all)
    knn_test_samples: int = 2000


@dataclass
class TrainingConfig:
    method: Any = None  # replaced by the method's own dataclass
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    resume: Optional[str] = None  # 'auto': continue from output_dir/checkpoints/last.pt if it exists; or a path


# ------------------------------------------------------------------ GAN training (squeeze-span train-gan)


@dataclass
class GanDataConfig:
    dataset: str = "fashion_mnist"
    root: Optional[str] = None  # None: the dataset's default folder
    split: str = "train"
    resolution: Optional[int] = None  # None: the next power of two >= the image size (28 -> 32, zero-padded)
    on_device: bool = True


@dataclass
class GanGeneratorConfig:
    """``squeeze_span.generators.stylegan2.Generator`` init kwargs (c_dim, resolution, channels come from the data)."""

    z_dim: int = 128
    w_dim: int = 128
    mapping_kwargs: Dict[str, Any] = field(default_factory=lambda: {"num_layers": 2})
    synthesis_kwargs: Dict[str, Any] = field(
        default_factory=lambda: {"channel_base": 2048, "channel_max": 64, "architecture": "skip", "conv_clamp": None}
    )
    noise_mode: str = "random"  # per-pixel noise while training, as StyleGAN2


@dataclass
class GanDiscriminatorConfig:
    """``squeeze_span.generators.stylegan2.Discriminator`` init kwargs."""

    architecture: str = "resnet"  # orig | skip | resnet
    channel_base: int = 2048
    channel_max: int = 64
    conv_clamp: Optional[float] = None
    block_kwargs: Dict[str, Any] = field(default_factory=dict)
    epilogue_kwargs: Dict[str, Any] = field(default_factory=lambda: {"mbstd_group_size": 4})


@dataclass
class GanOptimizerConfig:
    """Adam for G and D: StyleGAN2-ADA's cifar recipe (lr 0.0025, betas (0, 0.99), eps 1e-8)."""

    g_lr: float = 0.0025
    d_lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    eps: float = 1e-8


@dataclass
class GanLossConfig:
    r1_gamma: float = 0.1  # weight of (gamma / 2) * R1; NVIDIA's cifar recipe: 0.01
    r1_interval: int = 16  # lazy regularization: R1 every this many D steps (1: every step)
    r1_precision: str = "fp32"  # fp32: the R1 pass runs with autocast off; 'train': in train.precision
    ema_kimg: float = 10.0  # G_ema half-life in thousands of images
    ema_rampup: Optional[float] = 0.05  # half-life at most this fraction of the images seen; None: off


@dataclass
class GanAugmentConfig:
    diffaugment: bool = False  # translation + cutout on real and fake images before D (small data)
    translation: float = 0.125  # largest shift, as a fraction of the image size
    cutout: float = 0.5  # side of the zeroed square, as a fraction of the image size


@dataclass
class GanTrainConfig(RunSettings):
    """max_seconds also writes a snapshot when it stops."""

    batch_size: int = 32
    total_kimg: float = 1000.0  # stop after this many thousand real images
    log_every: int = 50  # steps
    checkpoint_every: int = 500  # steps between writes of checkpoints/last.pt
    snapshot_kimg: float = 50.0  # thousands of images between snapshots/network-snapshot-KIMG/
    grid_size: int = 64  # samples of G_ema on fixed latents in each snapshot's grid


@dataclass
class GanTrainingConfig:
    data: GanDataConfig = field(default_factory=GanDataConfig)
    generator: GanGeneratorConfig = field(default_factory=GanGeneratorConfig)
    discriminator: GanDiscriminatorConfig = field(default_factory=GanDiscriminatorConfig)
    optimizer: GanOptimizerConfig = field(default_factory=GanOptimizerConfig)
    loss: GanLossConfig = field(default_factory=GanLossConfig)
    augment: GanAugmentConfig = field(default_factory=GanAugmentConfig)
    train: GanTrainConfig = field(default_factory=GanTrainConfig)
    output_dir: str = "runs/gan"
    resume: Optional[str] = None  # 'auto': continue from output_dir/checkpoints/last.pt if it exists; or a path


def _read_yaml(path: str | os.PathLike[str]) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pass a YAML file such as configs/fashion_mnist/squeeze_span.yaml"
        )
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections, not a {type(content).__name__}")
    return OmegaConf.create(content)


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not key=value (for example train.max_steps=30)")
    # The YAML parser types the values (30 -> int, null -> None, [1,2] -> list), as in the files.
    pairs = [item.split("=", 1) for item in overrides]
    values = {}
    for key, text in pairs:
        try:
            values[key] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            values[key] = text
    config = OmegaConf.create()
    for key, value in values.items():
        OmegaConf.update(config, key, value, force_add=True)
    return config


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            full = f"{prefix}{key}"
            keys.append(full)
            keys.extend(_valid_keys(node._get_node(key), f"{full}."))
    return keys


def _user_error(error: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    if isinstance(error, ConfigKeyError):
        close = difflib.get_close_matches(key, _valid_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config key {key!r} in {source}{hint}")
    message = str(error).splitlines()[0]
    return ConfigError(f"bad value for config key {key!r} in {source}: {message}")


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str],
    schema: type[T],
    variants: Mapping[str, Mapping[str, type]] | None = None,
) -> T:
    """Defaults of ``schema``, then the YAML at ``path``, then ``overrides``; validated and typed.

    ``variants`` maps a section name to ``{choice: dataclass}``: the section's ``name``
    key (from the overrides, else the file, else the default) picks its dataclass.
    """
    file_config = _read_yaml(path) if path is not None else OmegaConf.create()
    override_config = _parse_overrides(overrides)
    base = OmegaConf.structured(schema)
    for section, choices in (variants or {}).items():
        name = OmegaConf.select(override_config, f"{section}.name") or OmegaConf.select(file_config, f"{section}.name")
        if name is None:
            name = getattr(getattr(schema(), section), "name", None)
        if name not in choices:
            raise ConfigError(f"{section}.name={name!r} is unknown; choose one of {', '.join(sorted(choices))}")
        base[section] = OmegaConf.structured(choices[name])
    merged = base
    for source, layer in ((str(path), file_config), ("the command line", override_config)):
        try:
            merged = OmegaConf.merge(merged, layer)
        except (ConfigKeyError, ValidationError) as error:
            raise _user_error(error, base, source) from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise _user_error(error, base, "the config") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (for checkpoints, JSON and YAML)."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
