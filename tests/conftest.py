import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

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
        pytest.skip(f"the StyleGAN2-ADA fixture is absent ({FIXTURES}); these checks need ../shared beside the checkout")
    return FIXTURES
