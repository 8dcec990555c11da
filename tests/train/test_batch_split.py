"""A global batch so small that a process, or one kind of image in the mix, gets a single image is
refused where the trainer is built, in one line naming the smallest batch that works."""

from types import SimpleNamespace

import pytest

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.methods.base import check_batch_split, split_batch
from tests.conftest import tiny_run_overrides


@pytest.mark.parametrize(
    ("config", "method", "extra", "batch", "parts", "smallest"),
    [
        ("squeeze_span.yaml", "squeeze_span", {"method.syn_ratio": 0.5}, 3, "2 generated and 1 real", 4),
        ("squeeze_span.yaml", "squeeze_span", {"method.syn_ratio": 0.25}, 4, "1 generated and 3 real", 6),
        ("squeeze_span.yaml", "squeeze_span", {"method.syn_ratio": 0.75}, 5, "4 generated and 1 real", 6),
        ("squeeze_span.yaml", "squeeze_span", {"method.syn_ratio": 0.01}, 60, "1 generated and 59 real", 150),
        ("vicreg_mix.yaml", "vicreg", {"method.syn_ratio": 0.5}, 3, "2 generated and 1 real", 4),
        ("simsiam_mix.yaml", "simsiam", {"method.syn_ratio": 0.5}, 3, "2 generated and 1 real", 4),
        (
            "encode_w_syn_real.yaml",
            "encode",
            {"method.syn_ratio": 0.5, "method.perceptual": "none"},
            3,
            "2 generated and 1 real",
            4,
        ),
    ],
)
def test_a_batch_too_small_for_the_method_is_one_line_naming_the_smallest_that_works(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys, config, method, extra, batch, parts, smallest
):
    overrides = tiny_run_overrides(
        learnable_fashion_mnist, tiny_teacher, tmp_path / "run", method=method, **extra, **{"train.batch_size": batch}
    )
    assert main(["train", f"configs/fashion_mnist/{config}", *overrides]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"ConfigError: train.batch_size={batch} gives {method} (")
    assert f"{parts} images over 1 process;" in error
    assert error.strip().endswith(f"the smallest that works is train.batch_size={smallest}")
    assert not (tmp_path / "run" / "checkpoints").exists()


class _Split:
    """A method as check_batch_split sees it: a config and a split."""

    def __init__(self, name: str, ratio: float | None) -> None:
        self.config = SimpleNamespace(name=name) if ratio is None else SimpleNamespace(name=name, syn_ratio=ratio)
        self.ratio = ratio

    def split(self, batch_size: int) -> tuple[int, int]:
        return (0, batch_size) if self.ratio is None else split_batch(batch_size, self.ratio)


@pytest.mark.parametrize(
    ("name", "ratio", "batch", "world", "smallest"),
    [
        ("supervised", None, 2, 2, 4),  # one image per process
        ("supervised", None, 6, 4, 8),  # 4 processes cannot share 6 evenly
        ("vicreg", None, 3, 2, 4),
        ("squeeze_span", 0.5, 4, 2, 8),  # 2 generated and 2 real: one of each per process
        ("squeeze_span", 0.5, 6, 2, 8),  # 3 and 3 cannot be shared by 2
        ("squeeze_span", 1.0, 6, 4, 8),
        ("squeeze_span", 0.25, 8, 2, 14),  # round(3.5) = 4 generated and 10 real
    ],
)
def test_every_process_needs_two_images_of_every_kind_it_gets(name, ratio, batch, world, smallest):
    method = _Split(name, ratio)
    with pytest.raises(ConfigError) as caught:
        check_batch_split(method, batch, world)  # type: ignore[arg-type]
    assert str(caught.value).endswith(
        f"over {world} processes; each process needs the same number of each kind, "
        f"and at least 2 of any kind it gets (BatchNorm and the variance are undefined "
        f"over one): the smallest that works is train.batch_size={smallest}"
    )
    assert check_batch_split(method, smallest, world) == method.split(smallest)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ratio", "batch", "world"), [(None, 2, 1), (0.5, 4, 1), (0.5, 8, 2), (0.0, 2, 1), (1.0, 8, 4)]
)
def test_a_batch_that_every_process_can_share_passes(ratio, batch, world):
    method = _Split("squeeze_span", ratio)
    assert check_batch_split(method, batch, world) == method.split(batch)  # type: ignore[arg-type]
