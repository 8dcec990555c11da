import dataclasses
import typing
from pathlib import Path

import pytest

from squeeze_span.cli import main
from squeeze_span.config import RULE, GanTrainingConfig, load_config, validate
from squeeze_span.errors import ConfigError
from squeeze_span.methods import SqueezeSpanConfig, load_training_config, method_configs
from squeeze_span.train import TrainingConfig

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"
GAN_CONFIG = "configs/fashion_mnist/gan.yaml"
SHIPPED = sorted(Path("configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=str)
def test_every_shipped_config_and_its_defaults_pass_validation(path):
    if path.name == "gan.yaml":
        load_config(path, [], GanTrainingConfig)
    else:
        load_training_config(str(path), [])


def config_classes() -> list[type]:
    """Every dataclass of both config trees, the method sections included."""
    found, todo = [], [TrainingConfig, GanTrainingConfig, *method_configs().values()]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += [hint for hint in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(hint)]
    return found


def test_every_integer_field_states_its_range():
    unbounded = [
        f"{cls.__name__}.{spec.name}"
        for cls in config_classes()
        for spec in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[spec.name] in (int, typing.Optional[int]) and RULE not in spec.metadata
    ]
    assert len(config_classes()) == 19 and unbounded == []  # 6 training, 8 GAN and 5 method sections


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=1", "train.batch_size=1 is out of range; it must be an integer >= 2"),
        ("train.batch_size=0", "train.batch_size=0 is out of range; it must be an integer >= 2"),
        ("train.batch_size=-4", "train.batch_size=-4 is out of range; it must be an integer >= 2"),
        ("method.syn_ratio=1.5", "method.syn_ratio=1.5 is out of range; it must be a finite number in [0, 1]"),
        ("method.syn_ratio=-0.5", "method.syn_ratio=-0.5 is out of range; it must be a finite number in [0, 1]"),
        ("method.syn_ratio=nan", "method.syn_ratio=nan is out of range; it must be a finite number in [0, 1]"),
        ("method.a_depth=-1", "method.a_depth=-1 is out of range; it must be an integer >= 0"),
        ("method.a_hidden=0", "method.a_hidden=0 is out of range; it must be an integer >= 1"),
        ("method.variance_weight=-1", "method.variance_weight=-1.0 is out of range; it must be a finite number >= 0"),
        ("optimizer.base_lr=0", "optimizer.base_lr=0.0 is out of range; it must be a finite number > 0"),
        ("optimizer.base_lr=inf", "optimizer.base_lr=inf is out of range; it must be a finite number > 0"),
        ("optimizer.momentum=1", "optimizer.momentum=1.0 is out of range; it must be a finite number in [0, 1)"),
        (
            "optimizer.weight_decay=-1e-4",
            "optimizer.weight_decay=-0.0001 is out of range; it must be a finite number >= 0",
        ),
        ("train.log_every=0", "train.log_every=0 is out of range; it must be an integer >= 1"),
        ("train.checkpoint_every=0", "train.checkpoint_every=0 is out of range; it must be an integer >= 1"),
        ("train.snapshot_every=-1", "train.snapshot_every=-1 is out of range; it must be an integer >= 0"),
        ("train.knn_test_samples=-1", "train.knn_test_samples=-1 is out of range; it must be an integer >= 0"),
        ("train.epochs=0", "train.epochs=0 is out of range; it must be an integer >= 1"),
        ("train.max_steps=0", "train.max_steps=0 is out of range; it must be an integer >= 1 or null"),
        ("train.max_seconds=0", "train.max_seconds=0.0 is out of range; it must be a finite number > 0 or null"),
        ("train.precision=fp8", "train.precision='fp8' is unknown; it must be one of fp32, bf16, fp16"),
        ("teacher.truncation_psi=inf", "teacher.truncation_psi=inf is out of range; it must be a finite number"),
        ("teacher.noise_mode=fixed", "teacher.noise_mode='fixed' is unknown; it must be one of random, const, none"),
        ("teacher.pool_size=-1", "teacher.pool_size=-1 is out of range; it must be an integer >= 0"),
        ("model.width=0", "model.width=0 is out of range; it must be an integer >= 1"),
        ("model.proj_hidden=0", "model.proj_hidden=0 is out of range; it must be an integer >= 1 or null"),
        ("data.image_size=0", "data.image_size=0 is out of range; it must be an integer >= 1 or null"),
    ],
)
def test_a_training_value_out_of_range_names_key_value_and_range(override, message):
    with pytest.raises(ConfigError) as error:
        load_training_config(CONFIG, [override])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.crop_scale_min=0", "method.crop_scale_min=0.0 is out of range; it must be a finite number in (0, 1]"),
        (
            "method.label_smoothing=2",
            "method.label_smoothing=2.0 is out of range; it must be a finite number in [0, 1]",
        ),
    ],
)
def test_the_supervised_method_section_is_checked_too(override, message):
    with pytest.raises(ConfigError) as error:
        load_training_config("configs/fashion_mnist/classifier.yaml", [override])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        ("vicreg_mix", "method.data=both", "method.data='both' is unknown; it must be one of real, syn, mix"),
        (
            "simsiam_mix",
            "method.syn_ratio=1",
            "method.syn_ratio=1.0 is out of range; it must be a finite number in (0, 1)",
        ),
        ("simsiam_real", "method.pred_hidden=0", "method.pred_hidden=0 is out of range; it must be an integer >= 1"),
    ],
)
def test_the_two_view_method_sections_are_checked_too(config, override, message):
    with pytest.raises(ConfigError) as error:
        load_training_config(f"configs/fashion_mnist/{config}.yaml", [override])
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "train.batch_size=0 is out of range; it must be an integer >= 1"),
        ("train.total_kimg=0", "train.total_kimg=0.0 is out of range; it must be a finite number > 0"),
        ("train.snapshot_kimg=-1", "train.snapshot_kimg=-1.0 is out of range; it must be a finite number > 0"),
        ("train.grid_size=0", "train.grid_size=0 is out of range; it must be an integer >= 1"),
        ("train.log_every=0", "train.log_every=0 is out of range; it must be an integer >= 1"),
        ("optimizer.g_lr=0", "optimizer.g_lr=0.0 is out of range; it must be a finite number > 0"),
        ("optimizer.beta2=1", "optimizer.beta2=1.0 is out of range; it must be a finite number in [0, 1)"),
        ("loss.r1_interval=0", "loss.r1_interval=0 is out of range; it must be an integer >= 1"),
        ("loss.ema_kimg=nan", "loss.ema_kimg=nan is out of range; it must be a finite number >= 0"),
        ("loss.r1_precision=fp16", "loss.r1_precision='fp16' is unknown; it must be one of fp32, train"),
        ("data.resolution=48", "data.resolution=48 is out of range; it must be a power of two >= 4 or null"),
        ("generator.z_dim=0", "generator.z_dim=0 is out of range; it must be an integer >= 1"),
        (
            "discriminator.architecture=dense",
            "discriminator.architecture='dense' is unknown; it must be one of orig, skip, resnet",
        ),
    ],
)
def test_a_gan_value_out_of_range_names_key_value_and_range(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(GAN_CONFIG, [override], GanTrainingConfig)
    assert str(error.value) == message


def test_null_passes_only_where_a_field_is_optional():
    assert load_training_config(CONFIG, ["train.max_steps=null"]).train.max_steps is None
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_training_config(CONFIG, ["train.batch_size=null"])


def test_a_config_built_in_code_validates_the_same_way():
    config = TrainingConfig(method=SqueezeSpanConfig(syn_ratio=-0.5))
    with pytest.raises(ConfigError, match=r"^method.syn_ratio=-0.5 is out of range; it must be a finite number in"):
        validate(config)


@pytest.mark.parametrize(
    ("command", "override", "error"),
    [
        ("train", "train.batch_size=1", "ConfigError: train.batch_size=1 is out of range; it must be an integer >= 2"),
        (
            "train",
            "train.max_steps=0",
            "ConfigError: train.max_steps=0 is out of range; it must be an integer >= 1 or null",
        ),
        (
            "train-gan",
            "data.resolution=48",
            "ConfigError: data.resolution=48 is out of range; it must be a power of two >= 4 or null",
        ),
    ],
)
def test_a_bad_value_on_the_command_line_is_one_line_and_status_2(command, override, error, tmp_path, capsys):
    config = CONFIG if command == "train" else GAN_CONFIG
    assert main([command, config, override, f"output_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == error + "\n"
    assert not (tmp_path / "run").exists()  # refused before anything was built or written
