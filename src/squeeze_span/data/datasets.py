"""Image datasets read from their real on-disk formats, pixel-exact.

``load_dataset(name, root, split)`` returns an :class:`ImageDataset`: every image as
one uint8 array ``[N, C, H, W]`` plus int64 labels ``[N]`` (-1 where there is none).
A batch is an index array: :meth:`ImageDataset.get_batch` gathers it with one numpy
fancy-indexing call, so the data path needs no Python loop over images.

Formats (``root`` holds):

- ``cifar10``: ``cifar-10-batches-py/`` (Python pickles; splits train, test)
- ``cifar100``: ``cifar-100-python/`` (Python pickles, fine labels; splits train, test)
- ``stl10``: ``stl10_binary/`` (raw column-major .bin files, memory-mapped;
  splits train, test, unlabeled, train+unlabeled)
- ``fashion_mnist``: the four IDX files, gzipped or not (splits train, test)
- ``imagefolder``: ``class_name/*.png|*.jpg|*.jpeg``; a split is the sub-folder
  ``root/<split>/`` when there is one (``train/``, ``val/``, ``test/``), else the
  folder itself is the train split. The images have one channel when every image is
  grayscale (8 or 16 bits, alpha dropped), else three (grayscale images replicated);
  16-bit values v become round(v / 257)

Downloaded pickles are untrusted: :func:`load_pickle_safely` reads them with the
project's one :class:`~squeeze_span.fileio.RestrictedUnpickler`, which resolves only
the numpy globals of :func:`numpy_array_globals` (arrays no larger, together, than the file)
and refuses every other global with :class:`~squeeze_span.errors.UnsafePickleError` instead
of running it.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import math
import os
import pickle
import reprlib
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset

from squeeze_span.errors import DatasetError
from squeeze_span.fileio import RestrictedUnpickler

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]


@dataclass(frozen=True)
class DatasetInfo:
    """The facts of one dataset, from :func:`dataset_info`.

    An image folder's facts that its images decide (channels, classes, view size) are None here.
    """

    name: str
    root: str | None  # the default folder; None: it has none, the user names it
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    splits: tuple[str, ...]
    view_size: int | None  # the side of the views a backbone trains and is probed on
    image_side: int | None  # the side of the stored images; None: an image folder's own
    num_classes: int | None
    channels: int | None
    class_names: tuple[str, ...] | None  # where known without the files (figures name pseudo-labels by them)
    read: Callable[[Path, str], ImageDataset] = field(repr=False, compare=False)

    def training_size(self, image_side: int) -> int:
        """The side of the views of this dataset: ``view_size``, or, for an image folder, its images' ``image_side``."""
        return self.view_size or image_side


FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# --------------------------------------------------------------------------- pickles


class _ArrayBudget:
    """The bytes the arrays of one pickle may take in all: what its file holds. Each array is charged
    before numpy allocates it, so a shape of 10**12 in a 1 kB file is refused, not attempted."""

    def __init__(self, source: str | os.PathLike, limit: int) -> None:
        self.source, self.left = source, limit

    def charge(self, shape: Any, dtype: Any) -> None:
        """Take the bytes of a ``shape`` array of ``dtype`` from the budget; raise ``pickle.UnpicklingError``
        where the claim is malformed or exceeds what is left."""
        if not isinstance(shape, tuple) or not all(type(side) is int and side >= 0 for side in shape):
            raise pickle.UnpicklingError(f"an array's shape is {reprlib.repr(shape)}, not a tuple of sizes")
        dtype = np.dtype(dtype)
        # numpy rebuilds an object array from a list, and crashes where the list is shorter than its shape.
        if dtype.hasobject:
            raise pickle.UnpicklingError("an array holds Python objects, which a dataset's arrays never do")
        size = math.prod(shape) * dtype.itemsize
        if size > self.left:
            raise pickle.UnpicklingError(f"an array of {size} bytes, more than the {self.left} bytes left in the file")
        self.left -= size


class _PickledArray(np.ndarray):
    """What a pickle gets for ``numpy.ndarray``: an array numpy's rebuilder makes empty, and that takes
    its shape and bytes (``__setstate__``) only once its budget allows them."""

    budget: _ArrayBudget

    def __new__(cls, *args: Any, **kwargs: Any) -> _PickledArray:
        # A pickle could call numpy.ndarray(shape) itself; numpy's own pickles never do.
        raise pickle.UnpicklingError("a pickle may build an array only the way numpy pickles one")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError(f"an array's state is {reprlib.repr(state)}, not numpy's")
        self.budget.charge(*state[-4:-2])
        super().__setstate__(state)


def numpy_array_globals(source: str | os.PathLike, limit: int) -> Mapping[tuple[str, str], Any]:
    """What unpickling numpy arrays needs, for one pickle whose arrays may take ``limit`` bytes in all.

    numpy 2 renamed numpy.core to numpy._core, and pickles carry whichever name wrote them, so both
    spellings are allowed. Python 3 writes bytes in pickle protocol 2 as _codecs.encode(str, "latin1"):
    a pure function, needed to read arrays and bytes keys pickled by Python 3. A scalar's bytes are
    in the file (numpy checks their length), so ``scalar`` needs no budget.
    """
    budget = _ArrayBudget(source, limit)

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> _PickledArray:
        if subtype is not _PickledArray:
            raise pickle.UnpicklingError(f"an array of type {reprlib.repr(subtype)}, not numpy.ndarray")
        budget.charge(shape, dtype)
        array = _multiarray._reconstruct(_PickledArray, shape, dtype)
        array.budget = budget
        return array

    return MappingProxyType(
        {
            **{
                (module, name): function
                for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                for name, function in (("_reconstruct", reconstruct), ("scalar", _multiarray.scalar))
            },
            ("numpy", "ndarray"): _PickledArray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,
        }
    )


def load_pickle_safely(
    path: str | os.PathLike,
    allowed: Mapping[tuple[str, str], Any] | None = None,
    encoding: str = "bytes",
) -> Any:
    """Unpickle ``path`` with :class:`~squeeze_span.fileio.RestrictedUnpickler`, resolving only ``allowed``
    (by default :func:`numpy_array_globals`, with the file's size as the budget of its arrays).

    ``encoding="bytes"`` keeps the Python 2 ``str`` keys and data of CIFAR pickles as
    bytes. A global outside ``allowed`` raises :class:`UnsafePickleError`; other
    errors (a truncated file) propagate.
    """
    with open(path, "rb") as file:
        if allowed is None:
            allowed = numpy_array_globals(path, os.fstat(file.fileno()).st_size)
        return RestrictedUnpickler(file, source=path, allowed=allowed, encoding=encoding).load()


# --------------------------------------------------------------------------- dataset


class ConcatenatedImages:
    """Several ``[N_i, C, H, W]`` image arrays read as one, without copying them.

    Used where the parts are too big to concatenate (STL-10 train+unlabeled: the
    unlabeled part is a 2.8 GB memory map). It has ``shape``, ``dtype``, ``ndim`` and
    ``len``; ``images[i]`` returns a view of one image, and ``images[indices]`` (an
    index array, list or slice) gathers a new ``[B, C, H, W]`` array with one fancy
    index per part. It deliberately has no ``__array__``: turning it into one array
    would read every part into memory.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        shapes = {part.shape[1:] for part in parts}
        dtypes = {part.dtype for part in parts}
        if not parts or len(shapes) != 1 or len(dtypes) != 1:
            raise ValueError(f"parts must share image shape and dtype, got {shapes} and {dtypes}")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.dtype = dtypes.pop()
        self.shape = (int(self.offsets[-1]), *shapes.pop())
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            position = int(index) + len(self) if index < 0 else int(index)
            if not 0 <= position < len(self):
                raise IndexError(f"index {index} is out of range for {len(self)} images")
            part = int(np.searchsorted(self.offsets, position, side="right")) - 1
            return self.parts[part][position - self.offsets[part]]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        positions = np.asarray(index, dtype=np.int64).reshape(-1)
        positions = np.where(positions < 0, positions + len(self), positions)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"indices out of range for {len(self)} images")
        part_of = np.searchsorted(self.offsets, positions, side="right") - 1
        out = np.empty((len(positions), *self.shape[1:]), dtype=self.dtype)
        for part, (images, offset) in enumerate(zip(self.parts, self.offsets)):
            selected = part_of == part
            if selected.any():
                out[selected] = images[positions[selected] - offset]
        return out


class ImageDataset(Dataset):
    """Images ``[N, C, H, W]`` uint8 and labels ``[N]`` int64, indexable one by one or in batches.

    ``images`` is a numpy array (possibly a non-contiguous view of a memory map) or,
    for datasets made of parts too big to join, a :class:`ConcatenatedImages`.
    An item is ``(image, label)``: a contiguous uint8 tensor ``[C, H, W]`` and an int
    (-1 for unlabeled images).
    """

    def __init__(
        self,
        images: np.ndarray | ConcatenatedImages,
        labels: np.ndarray,
        classes: Sequence[str],
        name: str,
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.classes = list(classes)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = np.array(self.images[index], dtype=np.uint8, order="C")
        return torch.from_numpy(image), int(self.labels[index])

    def get_batch(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather images ``[B, C, H, W]`` (uint8, contiguous) and labels ``[B]`` (int64)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        indices = np.asarray(indices, dtype=np.int64)
        images = np.ascontiguousarray(self.images[indices])
        return torch.from_numpy(images), torch.from_numpy(self.labels[indices])

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int], name: str | None = None) -> ImageDataset:
        """These images and labels, copied into memory, as a dataset of their own."""
        images, labels = self.get_batch(indices)
        return ImageDataset(images.numpy(), labels.numpy(), self.classes, name or self.name)

    @property
    def num_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __repr__(self) -> str:
        height, width = self.image_size
        shape = f"{self.num_channels}x{height}x{width}"
        return f"ImageDataset({self.name!r}, {len(self)} images {shape}, {len(self.classes)} classes)"


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train") -> ImageDataset:
    """Load ``split`` of dataset ``name`` from ``root`` (the dataset's default folder when None)."""
    info = dataset_info(name)
    if split not in info.splits:
        raise DatasetError(f"unknown split {split!r} for {name}; choose one of {', '.join(info.splits)}")
    if root is None:
        root = info.root
        if root is None:
            raise DatasetError(f"{name} has no default folder; pass --data with {_IMAGEFOLDER_LAYOUT}")
    return info.read(Path(root), split)


VALIDATION_FRACTION = 1 / 6  # 10,000 of Fashion-MNIST's 60,000 training images, as MNIST's classic 50k/10k


def split_validation(
    dataset: ImageDataset, fraction: float = VALIDATION_FRACTION, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """``(fit, validation)``: a seeded random ``fraction`` of ``dataset`` held out, the rest to fit on.

    Choices made on the validation part (hyperparameters, schedules) never see the test split.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    held_out = int(round(fraction * len(dataset)))
    if not 0 < held_out < len(dataset):
        raise DatasetError(f"{dataset!r} is too small to hold out a validation split of {fraction:.0%}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    fit, validation = np.sort(order[held_out:]), np.sort(order[:held_out])
    return dataset.subset(fit, f"{dataset.name}[fit]"), dataset.subset(validation, f"{dataset.name}[validation]")


# --------------------------------------------------------------------------- helpers


def _require(path: Path, fix: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} is missing; {fix}")
    return path


def _truncated(path: Path, detail: str, fix: str) -> DatasetError:
    return DatasetError(f"{path} is truncated or corrupt ({detail}); {fix}")


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarLayout:
    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: bytes
    meta_file: str
    names_key: bytes


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        label_key=b"labels",
        meta_file="batches.meta",
        names_key=b"label_names",
    ),
    "cifar100": _CifarLayout(
        title="CIFAR-100",
        folder="cifar-100-python",
        files={"train": ("train",), "test": ("test",)},
        label_key=b"fine_labels",
        meta_file="meta",
        names_key=b"fine_label_names",
    ),
}


def _load_cifar_pickle(path: Path, keys: tuple[bytes, ...], fix: str) -> dict[bytes, Any]:
    _require(path, fix)
    try:
        content = load_pickle_safely(path)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise _truncated(path, f"{type(error).__name__}: {str(error).partition(chr(10))[0]}", fix) from None
    except (MemoryError, RecursionError) as error:  # what the checks above missed must still be one line
        raise _truncated(path, f"{type(error).__name__} while reading it", fix) from None
    if not isinstance(content, dict) or any(key not in content for key in keys):
        raise _truncated(path, f"expected a dict with keys {[key.decode() for key in keys]}", fix)
    return content


def _class_labels(path: Path, values: Any, num_classes: int, fix: str) -> np.ndarray:
    """``values`` as int64 labels, after checking that each is an integer in [0, num_classes)."""
    items = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    for item in items:
        value = item.item() if isinstance(item, np.generic) else item
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
            raise DatasetError(
                f"{path} is corrupt: labels must be integers in [0, {num_classes}); found {reprlib.repr(value)}; {fix}"
            )
    return np.asarray(items, dtype=np.int64)


def _class_names(path: Path, key: bytes, num_classes: int, fix: str) -> list[str]:
    """The ``num_classes`` names under ``key`` in the meta pickle ``path``, each UTF-8 bytes or a string."""
    names = _load_cifar_pickle(path, (key,), fix)[key]
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        found = f" of {len(names)} class names" if isinstance(names, (list, tuple)) else ""
        raise _truncated(path, f"a {type(names).__name__}{found}, not {num_classes}", fix)
    classes = []
    for name in names:
        try:
            text = name.decode() if isinstance(name, bytes) else name
        except UnicodeDecodeError:
            text = None
        if not isinstance(text, str):
            raise _truncated(path, f"class name {reprlib.repr(name)} is not UTF-8 text", fix)
        classes.append(text)
    return classes


def _read_cifar(name: str, root: Path, split: str) -> ImageDataset:
    layout, num_classes = _CIFAR_LAYOUTS[name], dataset_info(name).num_classes
    fix = f"download {layout.title} (python version) and extract it into {root}/"
    folder = _require(root / layout.folder, fix)
    images, labels = [], []
    for file_name in layout.files[split]:
        path = folder / file_name
        batch = _load_cifar_pickle(path, (b"data", layout.label_key), fix)
        data = batch[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise _truncated(path, "data is not a uint8 array of rows of 3072 pixels", fix)
        batch_labels = _class_labels(path, batch[layout.label_key], num_classes, fix)
        if batch_labels.shape != (len(data),):
            raise _truncated(path, f"{len(data)} images but {batch_labels.size} labels", fix)
        images.append(data.view(np.ndarray))  # a plain array, no longer the unpickler's
        labels.append(batch_labels)
    classes = _class_names(folder / layout.meta_file, layout.names_key, num_classes, fix)
    # A row holds the R plane, then G, then B, each row-major 32x32: a plain reshape.
    data = images[0] if len(images) == 1 else np.concatenate(images)
    return ImageDataset(data.reshape(-1, 3, 32, 32), np.concatenate(labels), classes, name)


# --------------------------------------------------------------------------- STL-10

_STL_SIZE = 96


def _memmap_stl_images(path: Path, fix: str) -> np.ndarray:
    image_bytes = 3 * _STL_SIZE * _STL_SIZE
    size = _require(path, fix).stat().st_size
    if size == 0 or size % image_bytes:
        raise _truncated(path, f"{size} bytes is not a multiple of {image_bytes}, one 3x96x96 image", fix)
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // image_bytes, 3, _STL_SIZE, _STL_SIZE))
    # Each channel is stored column-major; swapping the axes is a view, not a copy.
    return images.transpose(0, 1, 3, 2)


def _read_stl_labels(path: Path, count: int, fix: str) -> np.ndarray:
    size = _require(path, fix).stat().st_size  # before reading: the file may be far larger than its images
    if size != count:
        raise _truncated(path, f"{size} labels for {count} images", fix)
    labels = np.fromfile(path, dtype=np.uint8)
    if count and (labels.min() < 1 or labels.max() > 10):
        raise _truncated(path, f"labels must be 1..10, found {labels.min()}..{labels.max()}", fix)
    return labels.astype(np.int64) - 1


def _read_stl_part(folder: Path, part: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    images = _memmap_stl_images(folder / f"{part}_X.bin", fix)
    if part == "unlabeled":
        return images, np.full(len(images), -1, dtype=np.int64)
    return images, _read_stl_labels(folder / f"{part}_y.bin", len(images), fix)


# STL-10's class_names.txt is 61 bytes; a longer one is not a list of ten names.
_MAX_CLASS_NAMES_BYTES = 4096


def _read_stl_class_names(path: Path, fix: str) -> list[str]:
    """The ten non-empty lines of ``path``, checked for size and UTF-8 before it is read."""
    num_classes = dataset_info("stl10").num_classes
    size = _require(path, fix).stat().st_size
    if size > _MAX_CLASS_NAMES_BYTES:
        raise _truncated(
            path, f"{size} bytes, but {num_classes} class names take at most {_MAX_CLASS_NAMES_BYTES}", fix
        )
    try:
        lines = path.read_bytes().decode().splitlines()
    except UnicodeDecodeError as error:
        raise _truncated(path, f"not UTF-8 text: {error.reason} at byte {error.start}", fix) from None
    classes = [line.strip() for line in lines if line.strip()]
    if len(classes) != num_classes:
        raise _truncated(path, f"{len(classes)} class names, not {num_classes}", fix)
    return classes


def _read_stl10(root: Path, split: str) -> ImageDataset:
    fix = f"download STL-10 (binary version) and extract it into {root}/"
    folder = _require(root / "stl10_binary", fix)
    classes = _read_stl_class_names(folder / "class_names.txt", fix)
    parts = [_read_stl_part(folder, part, fix) for part in split.split("+")]
    if len(parts) == 1:
        images, labels = parts[0]
        return ImageDataset(images, labels, classes, "stl10")
    images = ConcatenatedImages([images for images, _ in parts])
    return ImageDataset(images, np.concatenate([labels for _, labels in parts]), classes, "stl10")


# --------------------------------------------------------------------------- Fashion-MNIST

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC = 2051, 2049
_READ_CHUNK = 1 << 20


# An IDX header can claim up to 2**96 bytes; no dataset read here comes near this many.
_MAX_IDX_PAYLOAD = 1 << 32


def _read_at_most(file: BinaryIO, count: int) -> bytearray:
    """Up to ``count`` bytes of ``file``, read in chunks: memory grows with what the file really holds,
    not with what its header claims (a gzip stream's length is unknown until it is read)."""
    data = bytearray()
    while len(data) < count:
        chunk = file.read(min(_READ_CHUNK, count - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_idx(path: Path, magic: int, fix: str) -> np.ndarray:
    dims = 3 if magic == _IDX_IMAGES_MAGIC else 1
    opener: Callable[..., BinaryIO] = gzip.open if path.suffix == ".gz" else open  # type: ignore[assignment]
    try:
        with opener(path, "rb") as file:
            header = file.read(4 * (1 + dims))
            if len(header) < 4 * (1 + dims):
                raise _truncated(path, f"header of {len(header)} bytes", fix)
            found, *shape = struct.unpack(f">{1 + dims}I", header)
            if found != magic:
                kind = "image" if dims == 3 else "label"
                raise DatasetError(f"{path} has magic number {found}, not {magic} (IDX {kind} file); {fix}")
            size = math.prod(shape)
            if not 0 < size <= _MAX_IDX_PAYLOAD:
                claim = "x".join(map(str, shape))
                raise _truncated(
                    path, f"its header claims a {claim} array, {size} bytes; at most {_MAX_IDX_PAYLOAD}", fix
                )
            payload = _read_at_most(file, size + 1)
            if len(payload) < size:
                raise _truncated(path, f"{len(payload)} of {size} payload bytes", fix)
            if len(payload) > size:
                raise _truncated(path, f"more than the {size} payload bytes its header gives", fix)
    except (EOFError, OSError, zlib.error) as error:
        raise _truncated(path, f"{type(error).__name__}: {error}", fix) from None
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _find_idx(root: Path, stem: str, fix: str) -> Path:
    for path in (root / f"{stem}.gz", root / stem):
        if path.exists():
            return path
    raise DatasetError(f"{root / stem}.gz is missing; {fix}")


def _read_fashion_mnist(root: Path, split: str) -> ImageDataset:
    if str(root) == str(Path(dataset_info("fashion_mnist").root or "")):
        fix = "apt-get install dataset-fashion-mnist (or pass --data)"
    else:
        fix = f"download the four Fashion-MNIST IDX files into {root}/ (or pass --data)"
    _require(root, fix)
    image_stem, label_stem = _IDX_FILES[split]
    image_path = _find_idx(root, image_stem, fix)
    images = _read_idx(image_path, _IDX_IMAGES_MAGIC, fix)
    label_path = _find_idx(root, label_stem, fix)
    labels = _read_idx(label_path, _IDX_LABELS_MAGIC, fix)
    if len(labels) != len(images):
        raise _truncated(label_path, f"{len(labels)} labels for {len(images)} images in {image_path.name}", fix)
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise _truncated(label_path, f"label {labels.max()} is not in 0..9", fix)
    return ImageDataset(images[:, None], labels.astype(np.int64), FASHION_MNIST_CLASSES, "fashion_mnist")


# --------------------------------------------------------------------------- image folder

_IMAGEFOLDER_LAYOUT = "a folder holding one sub-folder of .png/.jpg images per class"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


# Pillow's modes of one-channel images: bilevel, 8-bit (with alpha, which is dropped), and
# 16-bit ("I;16..."; older Pillows open a 16-bit grayscale PNG as 32-bit "I"). Pillow reads
# a 16-bit color PNG as "RGB" by its high bytes, floor(v / 256): within 1 of round(v / 257).
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_GRAYSCALE_MODES = {"1", "L", "LA", "La"} | _SIXTEEN_BIT_MODES


def _read_pixels(image: Any, path: Path, channels: int) -> np.ndarray:
    """``image`` as uint8 ``[channels, H, W]``; 16-bit values v are scaled to round(v / 257)."""
    if image.mode not in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    # Pillow's convert() clips 16-bit values above 255 instead of scaling them.
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        found = f"{values.min()}..{values.max()}"
        raise DatasetError(f"{path} holds {image.mode} values {found}, outside 16 bits; save it as an 8- or 16-bit PNG")
    gray = ((values + 128) // 257).astype(np.uint8)  # round(v / 257); v / 257 is never a half
    return np.broadcast_to(gray, (channels, *gray.shape))


# What an image may claim in its header, checked before its pixels are decoded or given memory: 64
# megapixels (far above any image a backbone here trains on), and 16,384 pixels per byte of its file.
# Deflate packs at most 1,032 bytes into one, and a PNG pixel takes a bit or more (8 per byte): an
# honest PNG stays under 8,256; a JPEG's flat 8x8 blocks take a few bits each.
_MAX_IMAGE_PIXELS = 1 << 26
_MAX_PIXELS_PER_BYTE = 1 << 14
_IMAGE_FORMATS = ("PNG", "JPEG")  # what the suffixes promise; no other Pillow decoder is tried
# What Pillow raises for a file it cannot decode: besides OSError, its decoders' own errors.
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Any]:
    """``path`` opened by Pillow as a PNG or a JPEG whose size its file could hold; any failure, now or while
    its pixels are read in the ``with`` block, is one :class:`DatasetError` line naming ``path``."""
    from PIL import Image

    fix = "remove or replace it"
    try:
        with warnings.catch_warnings():  # Pillow warns of a size our own limit refuses below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=_IMAGE_FORMATS)
        with opened as image:
            width, height = image.size
            limit = min(_MAX_IMAGE_PIXELS, _MAX_PIXELS_PER_BYTE * path.stat().st_size)
            if width * height > limit:
                raise DatasetError(
                    f"{path} claims {width}x{height} pixels, more than its file could hold or the {limit} "
                    f"allowed; {fix}"
                )
            yield image
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{path} is a decompression bomb ({error}); {fix}") from None
    except _PILLOW_ERRORS as error:
        reason = str(error).partition("\n")[0] or type(error).__name__
        raise DatasetError(f"{path} is not a readable PNG or JPEG image ({reason}); {fix}") from None


def _read_imagefolder(root: Path, split: str) -> ImageDataset:
    fix = f"pass --data with {_IMAGEFOLDER_LAYOUT}"
    _require(root, fix)
    if (root / split).is_dir():
        root = root / split
    elif split != "train":
        raise DatasetError(f"{root / split} is missing; give the {split} split as {_IMAGEFOLDER_LAYOUT}")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()
    ]
    if not files:
        raise DatasetError(f"{root} holds no class_name/*.png or *.jpg images; {fix}")

    modes, first_size = [], None
    for path, _ in files:  # opening reads only the header: mode and size
        with _open_image(path) as image:
            modes.append(image.mode)
            size = image.size
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DatasetError(
                f"{path} is {size[0]}x{size[1]} but {files[0][0]} is {first_size[0]}x{first_size[1]}; "
                f"resize all images in {root} to one size"
            )
    channels = 1 if all(mode in _GRAYSCALE_MODES for mode in modes) else 3
    width, height = first_size
    images = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for index, (path, _) in enumerate(files):
        with _open_image(path) as image:
            images[index] = _read_pixels(image, path, channels)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return ImageDataset(images, labels, classes, "imagefolder")


# Roots follow the original project's data/ layout; Fashion-MNIST comes from the Debian package
# dataset-fashion-mnist. Statistics are per-channel (mean, std); an image folder uses ImageNet's (their
# luma when it is grayscale: squeeze_span.data.augment.normalization_stats picks them by channel count).
# CIFAR-100's 100 class names come from its meta file only.
_INFO = (
    DatasetInfo(
        name="cifar10",
        root="data/CIFAR10",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        splits=("train", "test"),
        view_size=32,
        image_side=32,
        num_classes=10,
        channels=3,
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        read=partial(_read_cifar, "cifar10"),
    ),
    DatasetInfo(
        name="cifar100",
        root="data/CIFAR100",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        splits=("train", "test"),
        view_size=32,
        image_side=32,
        num_classes=100,
        channels=3,
        class_names=None,
        read=partial(_read_cifar, "cifar100"),
    ),
    DatasetInfo(
        name="stl10",
        root="data/STL10",
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        splits=("train", "test", "unlabeled", "train+unlabeled"),
        view_size=96,
        image_side=96,
        num_classes=10,
        channels=3,
        class_names=("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
        read=_read_stl10,
    ),
    DatasetInfo(
        name="fashion_mnist",
        root="/usr/share/datasets/fashion-mnist",
        mean=(0.2860,),
        std=(0.3530,),
        splits=("train", "test"),
        view_size=32,  # the 28x28 images are resized to the CIFAR backbones' 32
        image_side=28,
        num_classes=10,
        channels=1,
        class_names=FASHION_MNIST_CLASSES,
        read=_read_fashion_mnist,
    ),
    DatasetInfo(
        name="imagefolder",
        root=None,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        splits=("train", "val", "test"),
        view_size=None,
        image_side=None,
        num_classes=None,
        channels=None,
        class_names=None,
        read=_read_imagefolder,
    ),
)
DATASET_INFO: Mapping[str, DatasetInfo] = MappingProxyType({info.name: info for info in _INFO})
DATASETS: tuple[str, ...] = tuple(DATASET_INFO)


def dataset_info(name: str) -> DatasetInfo:
    """The facts of dataset ``name``; an unknown name is a :class:`DatasetError` that lists the known ones."""
    try:
        return DATASET_INFO[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
