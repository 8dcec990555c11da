"""One typed config tree: dataclass defaults in code, a YAML file for what differs, key=value overrides.

The training config is :class:`TrainingConfig`, one dataclass per section; its
``method`` section is typed by the method its ``name`` picks (see
``squeeze_span.methods.registry``).

``load_config(path, overrides, schema, variants)`` merges, in order, the schema's
defaults, the YAML file and the ``key=value`` overrides, and returns the schema's
dataclass. A section whose fields depend on a choice (the ``method`` section, whose
``name`` picks the method) is typed by ``variants``. An unknown key, or a value of the
wrong type, raises :class:`~squeeze_span.errors.ConfigError` naming the key and the
closest valid one. Each field states the values it accepts next to its default
(:func:`bounded`, :func:`choice`; every float must be finite), and ``load_config`` checks
the whole resolved tree once (:func:`validate`), so a bad value stops with one line
naming the key, the value and what it must be, before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from squeeze_span.errors import ConfigError
from squeeze_span.runtime import PRECISIONS
from squeeze_span.validation import Bounds, Choice

# The config names the networks' options; the networks import these names from here, so that the
# config tree never imports a network.
ARCHITECTURES = ("orig", "skip", "resnet")  # of StyleGAN2's synthesis and discriminator blocks
NOISE_MODES = ("random", "const", "none")  # per-pixel noise: drawn afresh, the stored noise_const, or none

T = TypeVar("T")
RULE = "rule"  # the field metadata key that holds the Bounds or Choice a field's values must meet


def bounded(default: Any, **bounds: float | bool) -> Any:
    """A dataclass field with ``default`` whose values must meet ``Bounds(**bounds)`` (None passes where Optional)."""
    return field(default=default, metadata={RULE: Bounds(**bounds)})


def choice(default: str, options: Iterable[str]) -> Any:
    """A dataclass field with ``default`` whose value must be one of ``options``."""
    return field(default=default, metadata={RULE: Choice(tuple(options))})


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    root: Optional[str] = None  # None: the dataset's default (data/CIFAR10, ...)
    split: str = "train"  # STL-10 trains on train+unlabeled
    image_size: Optional[int] = bounded(None, min=1)  # None: the dataset's training size (32, or 96 for STL-10)
    on_device: bool = True  # keep the real images on the device as one uint8 tensor when they fit


@dataclass
class TeacherConfig:
    path: Optional[str] = None  # a StyleGAN2-ADA .pkl, a convert-gan folder, or package.module:factory
    features: str = r"synthesis\.b\d+$"  # the modules whose outputs are h^g(w); 'mapping$' taps w
    truncation_psi: float = 1.0
    noise_mode: str = choice("random", NOISE_MODES)  # the authors' code calls G(z, c) with NVIDIA's default
    # > 0: render this many samples once and draw from them (fresh augmentation each draw)
    pool_size: int = bounded(0, min=0)


@dataclass
class ModelConfig:
    backbone: str = "resnet18_cifar"
    width: int = bounded(64, min=1)  # base width of the ResNet; the CPU configs use 16
    zero_init_residual: bool = True
    proj_layers: int = bounded(5, min=1)  # linear layers in the projector: (Linear-BN-ReLU) x (n-1), then Linear
    proj_hidden: Optional[int] = bounded(None, min=1)  # None: the backbone's feature width, as the authors' code
    proj_dim: int = bounded(2048, min=1)


@dataclass
class OptimizerConfig:
    base_lr: float = bounded(0.03, above=0)  # the learning rate is base_lr * batch_size / 256
    momentum: float = bounded(0.9, min=0, below=1)
    weight_decay: float = bounded(5e-4, min=0)
    warmup_steps: int = bounded(0, min=0)  # linear warm-up before the cosine decay


@dataclass
class RunSettings:
    """What every trainer's ``train`` section holds: device, precision, seed, budget and cadence."""

    # Stop this invocation, with a checkpoint, after this wall time.
    max_seconds: Optional[float] = bounded(None, above=0)
    precision: str = choice("auto", PRECISIONS)  # auto: bf16 where the hardware has it, else fp32; fp16: GPU only
    device: str = "auto"  # checked where it is resolved: squeeze_span.runtime.resolve_device
    seed: int = bounded(0, min=0, max=2**32 - 1)
    log_every: int = bounded(10, min=1)  # steps
    checkpoint_every: int = bounded(100, min=1)  # steps between writes of checkpoints/last.pt
    progress: bool = True


@dataclass
class TrainConfig(RunSettings):
    # Global: split over ranks, and between synthetic and real images; batch statistics need two.
    batch_size: int = bounded(512, min=2)
    epochs: int = bounded(800, min=1)  # an epoch is as many steps as the real train set holds batches
    max_steps: Optional[int] = bounded(None, min=1)  # stop (and end the schedule) after this many steps
    # A time budget for the whole run, in seconds, instead of a number of steps: the learning rate
    # follows the fraction of the budget spent, and the run ends when it is spent (resumes included).
    budget_seconds: Optional[float] = bounded(None, above=0)
    snapshot_every: int = bounded(0, min=0)  # steps between kept copies checkpoints/step_N.pt; 0: none
    knn_every: int = bounded(0, min=0)  # steps between kNN monitors on the test split; 0: only at the end
    knn_train_samples: int = bounded(10000, min=0)  # the kNN bank: this many labeled training images (0: all)
    knn_test_samples: int = bounded(2000, min=0)


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
    overwrite: bool = False  # true: start over in an output_dir that holds a run, deleting its checkpoints and logs


# ------------------------------------------------------------------ GAN training (squeeze-span train-gan)


@dataclass
class GanDataConfig:
    dataset: str = "fashion_mnist"
    root: Optional[str] = None  # None: the dataset's default folder
    split: str = "train"
    # None: the next power of two >= the image size (28 -> 32, zero-padded)
    resolution: Optional[int] = bounded(None, min=4, power_of_two=True)
    on_device: bool = True


@dataclass
class GanGeneratorConfig:
    """``squeeze_span.generators.stylegan2.Generator`` init kwargs (c_dim, resolution, channels come from the data)."""

    z_dim: int = bounded(128, min=1)
    w_dim: int = bounded(128, min=1)
    mapping_kwargs: Dict[str, Any] = field(default_factory=lambda: {"num_layers": 2})
    synthesis_kwargs: Dict[str, Any] = field(
        default_factory=lambda: {"channel_base": 2048, "channel_max": 64, "architecture": "skip", "conv_clamp": None}
    )
    noise_mode: str = choice("random", NOISE_MODES)  # per-pixel noise while training, as StyleGAN2


@dataclass
class GanDiscriminatorConfig:
    """``squeeze_span.generators.stylegan2.Discriminator`` init kwargs."""

    architecture: str = choice("resnet", ARCHITECTURES)
    channel_base: int = bounded(2048, min=1)
    channel_max: int = bounded(64, min=1)
    conv_clamp: Optional[float] = bounded(None, above=0)
    block_kwargs: Dict[str, Any] = field(default_factory=dict)
    epilogue_kwargs: Dict[str, Any] = field(default_factory=lambda: {"mbstd_group_size": 4})


@dataclass
class GanOptimizerConfig:
    """Adam for G and D: StyleGAN2-ADA's cifar recipe (lr 0.0025, betas (0, 0.99), eps 1e-8)."""

    g_lr: float = bounded(0.0025, above=0)
    d_lr: float = bounded(0.0025, above=0)
    beta1: float = bounded(0.0, min=0, below=1)
    beta2: float = bounded(0.99, min=0, below=1)
    eps: float = bounded(1e-8, above=0)


@dataclass
class GanLossConfig:
    r1_gamma: float = bounded(0.1, min=0)  # weight of (gamma / 2) * R1; NVIDIA's cifar recipe: 0.01
    r1_interval: int = bounded(16, min=1)  # lazy regularization: R1 every this many D steps (1: every step)
    # fp32: the R1 pass runs with autocast off; 'train': in train.precision
    r1_precision: str = choice("fp32", ("fp32", "train"))
    ema_kimg: float = bounded(10.0, min=0)  # G_ema half-life in thousands of images
    # Half-life at most this fraction of the images seen; None: off.
    ema_rampup: Optional[float] = bounded(0.05, above=0)


@dataclass
class GanAugmentConfig:
    diffaugment: bool = False  # translation + cutout on real and fake images before D (small data)
    translation: float = bounded(0.125, min=0, max=1)  # largest shift, as a fraction of the image size
    cutout: float = bounded(0.5, min=0, max=1)  # side of the zeroed square, as a fraction of the image size


@dataclass
class GanTrainConfig(RunSettings):
    """max_seconds also writes a snapshot when it stops."""

    batch_size: int = bounded(32, min=1)
    total_kimg: float = bounded(1000.0, above=0)  # stop after this many thousand real images
    log_every: int = bounded(50, min=1)  # steps
    checkpoint_every: int = bounded(500, min=1)  # steps between writes of checkpoints/last.pt
    snapshot_kimg: float = bounded(50.0, above=0)  # thousands of images between snapshots/network-snapshot-KIMG[.FFF]/
    grid_size: int = bounded(64, min=1)  # samples of G_ema on fixed latents in each snapshot's grid


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
    overwrite: bool = False  # true: start over in an output_dir that holds a run, deleting its checkpoints and logs


# What a config file may be. The largest in use (a sweep plan) is about 10 kB; these bounds leave
# room for plans ten times that, yet keep a hostile file (binary, a YAML bomb whose aliases expand
# to billions of values, thousands of nested brackets) from costing more than a few milliseconds.
MAX_CONFIG_BYTES = 1 << 17
MAX_CONFIG_VALUES = 100_000  # scalars, lists and mappings, each alias counted as what it expands to
MAX_CONFIG_DEPTH = 32
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: str | os.PathLike[str]) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; {_configs_beside(path)}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is {size} bytes, more than a config file's {MAX_CONFIG_BYTES}; pass a YAML config file"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); "
            "pass a YAML config file"
        ) from None
    try:
        _check_yaml_shape(path, text)
        content = yaml.load(text, Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    except ValueError as error:  # a scalar its tag cannot hold: an int of 5000 digits, a 13th month
        raise ConfigError(f"{path} holds a value YAML cannot read ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections, not a {type(content).__name__}")
    try:
        return OmegaConf.create(content)
    except OmegaConfBaseException as error:  # a key or value no config holds (a date, bytes)
        raise ConfigError(f"{path} holds what no config key takes: {str(error).splitlines()[0]}") from None


def _configs_beside(path: Path) -> str:
    """What to pass instead of the missing ``path``: the configs in its folder, the nearest names first."""
    folder = path.parent
    names = sorted(item.name for item in folder.glob("*.yaml")) if folder.is_dir() else []
    if not names:
        return "pass a YAML file such as configs/fashion_mnist/squeeze_span.yaml"
    nearest = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    rest = ", ".join(name for name in names if name not in nearest)
    listed = f"nearest: {', '.join(nearest)}; others: {rest}" if nearest else f"all: {rest}"
    return f"{folder}/ holds {len(names)} configs ({listed})"


def _check_yaml_shape(path: Path, text: str) -> None:
    """Refuse YAML that would cost far more to build than its size: too deep, too many values once its
    aliases are expanded (the "billion laughs"), an alias inside its own anchor, or a ``${...}``
    interpolation (``${a}${a}`` doubles a string at every level).

    It reads libyaml's event stream, which needs no recursion, before anything is built: the
    builders recurse in C, where a deep file crashes the process instead of raising.
    """
    values = 0
    anchors: dict[str, int] = {}  # anchor -> how many values it stands for
    open_collections: list[tuple[str | None, int]] = []  # (anchor, values before it began)
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor:
                anchors[event.anchor] = 1
            if "${" in event.value:
                raise ConfigError(
                    f"{path} uses ${{...}} interpolation ({event.value[:40]!r}), which config files do not "
                    "support; write the value out"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            open_collections.append((event.anchor, values))
            values += 1
            if len(open_collections) > MAX_CONFIG_DEPTH:
                raise ConfigError(f"{path} is nested more than {MAX_CONFIG_DEPTH} levels deep; a config needs 4")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_collections.pop()
            if anchor:
                anchors[anchor] = values - before
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_collections):
                raise ConfigError(f"{path}: the alias *{event.anchor} refers to itself; write the values out")
            values += anchors.get(event.anchor, 1)  # an undefined alias is the parser's to refuse
        if values > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{path} expands to more than {MAX_CONFIG_VALUES} values (through its aliases, or by size); "
                "a config needs a few dozen: write it without repeating aliases"
            )


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


def _select(config: DictConfig, key: str) -> Any:
    """``OmegaConf.select``, or None where a section on the way is not a mapping (the merge then says so)."""
    try:
        return OmegaConf.select(config, key)
    except OmegaConfBaseException:
        return None


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
        name = _select(override_config, f"{section}.name") or _select(file_config, f"{section}.name")
        if name is None:
            name = getattr(getattr(schema(), section), "name", None)
        if not isinstance(name, str) or name not in choices:
            raise ConfigError(f"{section}.name={name!r} is unknown; choose one of {', '.join(sorted(choices))}")
        base[section] = OmegaConf.structured(choices[name])
    merged = base
    for source, layer in ((str(path), file_config), ("the command line", override_config)):
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as error:
            raise _user_error(error, base, source) from None
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _user_error(error, base, "the config") from None
    validate(config)
    return config  # type: ignore[return-value]


def validate(config: Any, prefix: str = "") -> None:
    """Check every field of a config dataclass tree against its rule; a float without one must be finite.

    The types are OmegaConf's to enforce (None, too, passes only where a field is Optional);
    this checks the ranges and choices, and raises :class:`ConfigError` at the first miss.
    """
    hints = typing.get_type_hints(type(config))
    for spec in dataclasses.fields(config):
        key, value = f"{prefix}{spec.name}", getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{key}.")
            continue
        if isinstance(value, list):  # a list of sections, e.g. a sweep plan's entries
            for index, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    validate(item, f"{key}[{index}].")
            continue
        rule = _rule(spec, hints[spec.name])
        if value is None or rule is None or rule.admits(value):
            continue
        raise ConfigError(f"{key}={value!r} {rule.verdict}; it must be {_accepts(rule, hints[spec.name])}")


def _rule(spec: dataclasses.Field, hint: Any) -> Bounds | Choice | None:
    """The rule a field's values meet: its own, else any finite number for a float field."""
    return spec.metadata.get(RULE, Bounds() if float in (hint, *typing.get_args(hint)) else None)


def _accepts(rule: Bounds | Choice, hint: Any) -> str:
    """What ``rule`` admits for a field typed ``hint``, e.g. 'an integer >= 1 or null'."""
    nullable = type(None) in typing.get_args(hint)
    return rule.describe(int in (hint, *typing.get_args(hint))) + (" or null" if nullable else "")


def _type_name(hint: Any) -> str:
    """A field's type as a config file writes it: 'int', 'float or null', 'mapping'."""
    if typing.get_origin(hint) is typing.Union:
        return " or ".join("null" if arg is type(None) else _type_name(arg) for arg in typing.get_args(hint))
    names = {dict: "mapping", list: "list", typing.Any: "any"}
    return names.get(typing.get_origin(hint) or hint, getattr(hint, "__name__", str(hint)))


def describe_config(config: Any) -> list[str]:
    """One aligned line per key of a config dataclass tree: key=value (as an override writes it), its type,
    and the values it accepts (its bounds or choices; '-' where any value of its type goes)."""
    rows = [("key=value", "type", "accepts")]

    def walk(node: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(node))
        for spec in dataclasses.fields(node):
            key, value, hint = f"{prefix}{spec.name}", getattr(node, spec.name), hints[spec.name]
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
                continue
            rule = _rule(spec, hint)
            text = value if isinstance(value, str) else json.dumps(value)  # YAML reads JSON: null, true, {...}
            rows.append((f"{key}={text}", _type_name(hint), _accepts(rule, hint) if rule else "-"))

    walk(config, "")
    # A long value (a mapping of kwargs) overflows its own line rather than pushing every column right.
    widths = [min(max(len(row[column]) for row in rows), 48) for column in range(2)]
    return [f"{key:<{widths[0]}}  {kind:<{widths[1]}}  {accepts}" for key, kind, accepts in rows]


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (for checkpoints, JSON and YAML)."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
