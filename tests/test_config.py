import dataclasses
import time
import tracemalloc
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from squeeze_span.cli import main
from squeeze_span.config import RULE, GanTrainingConfig, bounded, choice, describe_config, load_config, validate
from squeeze_span.errors import ConfigError
from squeeze_span.methods import SqueezeSpanConfig, load_training_config, method_configs
from squeeze_span.train import TrainingConfig
from tests.conftest import HOSTILE_EXAMPLES_SLOW, hostile, hostile_settings

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
        ("train.precision=fp8", "train.precision='fp8' is unknown; it must be one of auto, fp32, bf16, fp16"),
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


# ------------------------------------------------------------------ files that are not what they seem


# Seconds a refusal may take: it takes milliseconds, but a shared CI core can stall a test for a
# second; expanding any of the bombs below would take minutes and gigabytes.
QUICK = 10.0


def refused_quickly(path: Path, schema: type = TrainingConfig, names_file: bool = True) -> str:
    """The one line ``load_config`` refuses ``path`` with (naming it, unless a key's value is at fault);
    it must take little time and little memory."""
    variants = {"method": method_configs()} if schema is TrainingConfig else None
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path, [], schema, variants)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < QUICK
    assert peak < 64 * 2**20
    message = str(caught.value)
    assert "\n" not in message and (str(path) in message or not names_file)
    return message


def test_a_binary_config_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00" + bytes(range(256)))
    assert "is not UTF-8 text" in refused_quickly(path)


def test_a_config_with_nul_bytes_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"train:\n  batch_size: 8\x00\x00\n")
    assert "is not valid YAML" in refused_quickly(path)


def test_an_enormous_config_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "config.yaml"
    with path.open("wb") as file:
        file.truncate(2**31)  # sparse: 2 GiB that takes no disk
    assert "bytes, more than a config file's" in refused_quickly(path)


def yaml_bomb(levels: int, width: int) -> str:
    """Billion laughs: each level a list of ``width`` aliases of the one before, width**levels leaves."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_yaml_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml_bomb(10, 9))
    assert "expands to more than" in refused_quickly(path)


def test_a_yaml_bomb_in_a_sweep_plan_is_refused(tmp_path):
    from squeeze_span.experiments.plan import load_plan

    path = tmp_path / "plan.yaml"
    path.write_text(yaml_bomb(9, 10) + "entries: []\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_plan(path)
    assert time.perf_counter() - started < QUICK


def test_a_config_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("train: &loop\n  inner: *loop\n")
    assert "refers to itself" in refused_quickly(path)


def test_a_deeply_nested_config_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "nested more than" in refused_quickly(path)


def test_an_interpolation_in_a_config_file_is_refused(tmp_path):
    # ${a}${a} doubles a string at every level: 40 levels of it would be a terabyte.
    path = tmp_path / "config.yaml"
    path.write_text("output_dir: ${data.root}${data.root}\ndata:\n  root: x\n")
    assert "${...} interpolation" in refused_quickly(path)


@pytest.mark.parametrize(
    "text",
    [
        "method:\n  name: [squeeze_span]\n",  # a name that is not a string
        "method: 5\n",
        "train: [1, 2]\n",
        "? [1, 2]\n: 3\n",  # an unhashable key
        "2020-01-01: 1\n",  # a key OmegaConf cannot hold
        "output_dir: !!binary aGVsbG8=\n",
        "train:\n  batch_size: 2020-13-45\n",  # a timestamp that is no date
        "train:\n  batch_size: " + "9" * 5000 + "\n",  # more digits than Python converts
        "a: 1\n---\nb: 2\n",
        "a: *undefined\n",
    ],
)
def test_odd_yaml_is_one_config_error_line(text, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    refused_quickly(path, names_file=False)


def _load_or_refuse(path: Path, schema: type = TrainingConfig) -> None:
    """The property: the file loads, or load_config refuses it with one ConfigError line, fast."""
    variants = {"method": method_configs()} if schema is TrainingConfig else None
    started = time.perf_counter()
    try:
        load_config(path, [], schema, variants)
    except ConfigError as error:
        assert "\n" not in str(error)
    assert time.perf_counter() - started < QUICK


# No subnormal floats: a trainer test before these sets torch.set_flush_denormal(True) for the process.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_subnormal=False),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.dates(),
)
schema_keys = st.sampled_from(
    ["method", "name", "syn_ratio", "data", "train", "batch_size", "model", "width", "teacher", "path", "output_dir"]
)
yaml_trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(schema_keys | st.text(max_size=5), children),
    max_leaves=20,
)


@pytest.mark.parametrize("schema", [TrainingConfig, GanTrainingConfig])
@hostile(content=st.binary(max_size=300))
def test_any_bytes_load_or_give_one_config_error_line(schema, content, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    _load_or_refuse(path, schema)


@hostile(tree=yaml_trees)
def test_any_yaml_tree_loads_or_gives_one_config_error_line(tree, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.dump(tree, Dumper=yaml.Dumper))  # the full dumper: dates, binary and tags too
    _load_or_refuse(path)


@pytest.mark.slow
@hostile_settings(HOSTILE_EXAMPLES_SLOW)
@given(tree=yaml_trees, mutation=st.binary(max_size=4), at=st.integers(min_value=0))
def test_many_mutated_configs_load_or_give_one_config_error_line(tree, mutation, at, tmp_path):
    text = Path(CONFIG).read_bytes() + yaml.dump(tree).encode()
    at %= len(text)
    path = tmp_path / "config.yaml"
    path.write_bytes(text[:at] + mutation + text[at + len(mutation) :])
    _load_or_refuse(path)


@dataclasses.dataclass
class Inner:
    rate: float = bounded(0.5, min=0, below=1)
    mode: str = choice("fast", ("fast", "paper"))


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    steps: typing.Optional[int] = bounded(None, min=1)
    scale: float = 2.0
    name: str = "x"
    kwargs: typing.Dict[str, typing.Any] = dataclasses.field(default_factory=lambda: {"a": 1})


def test_describe_config_gives_each_key_its_value_type_and_bounds():
    assert describe_config(Outer(steps=3)) == [
        "key=value        type         accepts",
        "inner.rate=0.5   float        a finite number in [0, 1)",
        "inner.mode=fast  str          one of fast, paper",
        "steps=3          int or null  an integer >= 1 or null",
        "scale=2.0        float        a finite number",
        "name=x           str          -",
        'kwargs={"a": 1}  mapping      -',
    ]
