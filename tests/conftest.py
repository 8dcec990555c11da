import functools
import gzip
import inspect
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def learnable_fashion_mnist(tmp_path: Path) -> Path:
    """A tiny Fashion-MNIST in the real IDX format whose two classes differ in brightness.

    Any backbone, even an untrained one, separates them: a probe must score near 100%.
    """
    rng = np.random.default_rng(0)
    for prefix, count in [("train", 160), ("t10k", 80)]:
        labels = np.arange(count) % 2
        images = rng.integers(0, 96, (count, 28, 28)) + 150 * labels[:, None, None]
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return tmp_path


FIXTURES = SHARED / "fixtures" / "stylegan2_ada"


@pytest.fixture
def stylegan2_fixture() -> Path:
    """NVIDIA's reference pickle and outputs, from ../shared beside the checkout."""
    if not (FIXTURES / "tiny_uncond.pkl").exists():
        pytest.skip(
            f"the StyleGAN2-ADA fixture is absent ({FIXTURES}); these checks need ../shared beside the checkout"
        )
    return FIXTURES


@pytest.fixture
def tiny_teacher(tmp_path: Path) -> Path:
    """A random 16x16 RGB StyleGAN2 generator in our safe format: a teacher in milliseconds."""
    import torch

    from squeeze_span.generators import save_network
    from squeeze_span.generators.stylegan2 import Generator

    torch.manual_seed(0)
    generator = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=16,
        img_channels=3,
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
    )
    folder = tmp_path / "teacher"
    save_network(generator, folder, "G_ema")
    return folder


@pytest.fixture
def tiny_gan(tiny_teacher: Path) -> Path:
    """The tiny teacher with a 16x16 RGB discriminator D beside it, as a convert-gan folder holds them."""
    import torch

    from squeeze_span.generators import save_network
    from squeeze_span.generators.stylegan2 import Discriminator

    torch.manual_seed(1)
    discriminator = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    save_network(discriminator, tiny_teacher, "D")
    return tiny_teacher


def tiny_run_overrides(
    data: Path, teacher: Path | None, output_dir: Path, *, method: str = "squeeze_span", **extra: object
) -> list[str]:
    """key=value overrides that shrink configs/fashion_mnist/<method>*.yaml to a seconds-long run."""
    settings = {
        "data.root": data,
        "teacher.path": teacher,
        "output_dir": output_dir,
        "model.width": 4,
        "model.proj_dim": 16,
        "model.proj_layers": 2,
        "train.batch_size": 16,
        "train.max_steps": 4,
        "train.precision": "fp32",
        "train.progress": False,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        "train.knn_train_samples": 64,
        "train.knn_test_samples": 32,
    }
    if method == "squeeze_span":
        settings["method.a_hidden"] = 16
    if method == "simsiam":
        settings["method.pred_hidden"] = 8
    settings.update(extra)
    return [f"{key}={'null' if value is None else value}" for key, value in settings.items()]


class TorchBytes(TorchDispatchMode):
    """Counts the bytes of the tensors torch allocates off the meta device while active, which
    tracemalloc never sees: torch's CPU allocator bypasses Python's. Views and in-place results
    alias a tensor already there, so only the others count; temporaries count too, so the sum
    bounds the peak from above."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        if not any(output.alias_info for output in func._schema.returns):
            self.bytes += sum(
                leaf.untyped_storage().nbytes()
                for leaf in tree_leaves(result)
                if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta"
            )
        return result


def refused_or_loaded(load, error: type[Exception], seconds: float = 30.0, peak_bytes: int = 64 * 2**20):
    """``load()``'s result, or None where it raised ``error`` in one line; either way within ``seconds``
    and with an allocation peak under ``peak_bytes`` (Python's, traced, plus every tensor torch made):
    a hostile file's header is checked before memory is spent on what it claims. The memory bound is
    the sharp test; the time bound only catches work on the scale of what a lying header claims
    (minutes), so it leaves room for a loaded machine and a fresh process's first load (5-6 s of
    imports under tracemalloc)."""
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with TorchBytes() as tensors:
            result = load()
    except error as refusal:
        assert "\n" not in str(refusal), str(refusal)
        result = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < seconds
    assert peak + tensors.bytes < peak_bytes, f"{peak} bytes allocated by Python, {tensors.bytes} by torch"
    return result


HOSTILE_EXAMPLES = 30  # each property test of a reader, in the default run
HOSTILE_EXAMPLES_SLOW = 1000  # and again under `pytest -m slow`, outside CI


def hostile_settings(max_examples: int) -> settings:
    """Hypothesis settings for feeding a reader hostile files: no deadline, since a file's first read
    is slower than the rest, and a function-scoped ``tmp_path`` shared by the examples (:func:`hostile`
    gives each example a folder of its own inside it)."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


def hostile(**strategies: SearchStrategy[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``@given(**strategies)`` registered over two example counts, as the parameter ``examples``:
    :data:`HOSTILE_EXAMPLES` in the default run, and :data:`HOSTILE_EXAMPLES_SLOW` marked ``slow``.

    Hypothesis fixes a test's settings when it is decorated, so each count gets its own ``@given``
    test around the one body, and the count pytest passes picks which of them runs.
    """

    def register(test: Callable[..., None]) -> Callable[..., None]:
        def example(*args: Any, **kwargs: Any) -> None:
            # Each example gets its own folder inside the test's tmp_path: files one example wrote (a .gz
            # beside a plain file) would otherwise be read by the next, which then fails only sometimes.
            if "tmp_path" in kwargs:
                kwargs["tmp_path"] = Path(tempfile.mkdtemp(dir=kwargs["tmp_path"]))
            test(*args, **kwargs)

        runs = {}
        for count in (HOSTILE_EXAMPLES, HOSTILE_EXAMPLES_SLOW):
            # A fresh function per count: @settings refuses to decorate the same function twice.
            body = functools.wraps(test)(lambda *args, **kwargs: example(*args, **kwargs))
            runs[count] = given(**strategies)(hostile_settings(count)(body))

        @functools.wraps(test)
        def run(*args: Any, examples: int, **kwargs: Any) -> None:
            runs[examples](*args, **kwargs)

        # What pytest reads for the fixtures to pass: the test's own, less those @given fills, plus the count.
        fixtures = inspect.signature(runs[HOSTILE_EXAMPLES]).parameters.values()
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*fixtures, inspect.Parameter("examples", inspect.Parameter.KEYWORD_ONLY)]
        )
        counts = [HOSTILE_EXAMPLES, pytest.param(HOSTILE_EXAMPLES_SLOW, marks=pytest.mark.slow)]
        return pytest.mark.parametrize("examples", counts)(run)

    return register
