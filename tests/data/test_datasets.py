"""Every dataset format, built byte by byte in tmp_path and read back pixel-exactly."""

import dataclasses
import gzip
import io
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_span.cli import main
from squeeze_span.data import datasets
from squeeze_span.data.datasets import (
    DATASET_INFO,
    DATASETS,
    ConcatenatedImages,
    ImageDataset,
    dataset_info,
    load_dataset,
    split_validation,
)
from squeeze_span.errors import DatasetError, UnsafePickleError
from squeeze_span.fileio import RestrictedUnpickler

RNG = np.random.default_rng(0)


def random_images(count: int, channels: int, size: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(count, channels, size, size), dtype=np.uint8)


def assert_items_match(dataset: ImageDataset, images: np.ndarray, labels: np.ndarray) -> None:
    assert len(dataset) == len(images)
    for index in range(len(images)):
        image, label = dataset[index]
        assert image.dtype == torch.uint8 and image.is_contiguous()
        assert torch.equal(image, torch.from_numpy(images[index]))
        assert type(label) is int and label == labels[index]


# --------------------------------------------------------------------------- CIFAR


def write_pickle(path: Path, content: object) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_cifar10(root: Path, per_batch: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    splits = {}
    train_images, train_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = random_images(per_batch, 3, 32)
        labels = RNG.integers(0, 10, per_batch)
        # A row is the R plane, then G, then B, each row-major 32x32.
        rows = np.stack([np.concatenate([image[c].reshape(-1) for c in range(3)]) for image in images])
        write_pickle(folder / name, {b"batch_label": b"x", b"labels": labels.tolist(), b"data": rows})
        if name == "test_batch":
            splits["test"] = (images, labels)
        else:
            train_images.append(images)
            train_labels.append(labels)
    splits["train"] = (np.concatenate(train_images), np.concatenate(train_labels))
    names = [name.encode() for name in ["airplane", "automobile", "bird", "cat", "deer"] + list("fghij")]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return splits


def test_cifar10_train_and_test_pixels_and_labels(tmp_path):
    splits = write_cifar10(tmp_path)
    for split, (images, labels) in splits.items():
        dataset = load_dataset("cifar10", tmp_path, split)
        assert dataset.name == "cifar10" and dataset.classes[:2] == ["airplane", "automobile"]
        assert dataset.images.shape == (len(images), 3, 32, 32)
        assert dataset.labels.dtype == np.int64
        assert (dataset.num_channels, dataset.image_size) == (3, (32, 32))
        assert_items_match(dataset, images, labels)
    assert len(load_dataset("cifar10", tmp_path, "train")) == 10


def test_cifar_orientation_single_pixel(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1 * 1024 + 5 * 32 + 7] = 200  # G plane, row 5, column 7
    write_pickle(folder / "test_batch", {b"labels": [4], b"data": row})
    write_pickle(folder / "batches.meta", {b"label_names": [b"a"] * 10})
    image, label = load_dataset("cifar10", tmp_path, "test")[0]
    assert image[1, 5, 7] == 200 and int(image.sum()) == 200 and label == 4


def write_cifar100(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    expected = {}
    for split, count in [("train", 3), ("test", 2)]:
        images = random_images(count, 3, 32)
        fine = RNG.integers(0, 100, count)
        write_pickle(
            folder / split,
            {
                b"data": images.reshape(count, -1),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist(),
            },
        )
        expected[split] = (images, fine)
    names = [f"c{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": []})
    return expected


def test_cifar100_fine_labels(tmp_path):
    for split, (images, labels) in write_cifar100(tmp_path).items():
        dataset = load_dataset("cifar100", tmp_path, split)
        assert dataset.classes[99] == "c99" and len(dataset.classes) == 100
        assert_items_match(dataset, images, labels)


def test_cifar_missing_folder_and_file(tmp_path):
    with pytest.raises(DatasetError, match=f"^{tmp_path}/cifar-10-batches-py is missing; download CIFAR-10"):
        load_dataset("cifar10", tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    message = (
        f"{tmp_path}/cifar-10-batches-py/data_batch_3 is missing; "
        f"download CIFAR-10 (python version) and extract it into {tmp_path}/"
    )
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", tmp_path)
    assert str(error.value) == message


def test_cifar_default_root_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="^data/CIFAR100/cifar-100-python is missing; .* into data/CIFAR100/$"):
        load_dataset("cifar100")


def test_cifar_truncated_pickle(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(DatasetError, match=f"{path} is truncated"):
        load_dataset("cifar10", tmp_path)


def test_cifar_label_count_mismatch(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(path, {b"labels": [1, 2, 3], b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="2 images but 3 labels"):
        load_dataset("cifar10", tmp_path, "test")


@pytest.mark.parametrize(
    ("labels", "found"), [(["cat", "dog"], "'cat'"), ([3, 12], "12"), ([1, -1], "-1"), ([1.0, 2.0], "1.0")]
)
def test_cifar_labels_must_be_integers_in_range(tmp_path, labels, found):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(path, {b"labels": labels, b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", tmp_path, "test")
    assert str(error.value).startswith(f"{path} is corrupt: labels must be integers in [0, 10); found {found}; ")


def test_cifar_meta_must_name_every_class(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "batches.meta"
    write_pickle(path, {b"label_names": [b"a"] * 9})
    with pytest.raises(DatasetError, match=f"^{path} is truncated or corrupt \\(a list of 9 class names, not 10\\)"):
        load_dataset("cifar10", tmp_path, "test")


def test_cifar_probe_of_string_labels_is_one_line_and_status_2(tmp_path, capsys):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    write_pickle(path, {b"labels": [1, "cat"], b"data": np.zeros((2, 3072), np.uint8)})
    args = ["probe", "--random-init", "resnet18_cifar", "--width", "4", "--dataset", "cifar10", "--data", str(tmp_path)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"DatasetError: {path} is corrupt: labels must be integers in [0, 10); found 'cat'")


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes (BINSTRING), as the original CIFAR files hold them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes_as_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            header = pickle.SHORT_BINSTRING + bytes([len(obj)])
        else:
            header = pickle.BINSTRING + struct.pack("<i", len(obj))
        self.write(header + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_as_python2_str


def test_cifar_python2_style_pickle_with_numpy_core_names(tmp_path):
    splits = write_cifar10(tmp_path)
    images, labels = splits["test"]
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({b"labels": labels.tolist(), b"data": images.reshape(len(images), -1)})
    content = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" not in content and b"cnumpy.core.multiarray\n_reconstruct" in content
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    assert_items_match(load_dataset("cifar10", tmp_path, "test"), images, labels)


class RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_cifar_pickle_is_refused_not_run(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(path, {b"labels": [0], b"data": RunsShellCommand(f"touch {marker}")})
    with pytest.raises(UnsafePickleError, match=rf"^{path} asks for the global (posix|os|nt)\.system") as raised:
        load_dataset("cifar10", tmp_path, "test")
    message = str(raised.value)
    assert "refused and nothing from the file was executed" in message
    assert message.endswith("Use a file from a trusted source")
    assert not marker.exists()


def test_restricted_unpickler_allow_list_is_a_parameter(tmp_path):
    path = tmp_path / "x.pkl"
    write_pickle(path, OrderedDict(key=1))
    with pytest.raises(UnsafePickleError, match=f"^{path} asks for the global collections.OrderedDict"):
        datasets.load_pickle_safely(path)
    loaded = datasets.load_pickle_safely(path, {("collections", "OrderedDict"): OrderedDict})
    assert type(loaded) is OrderedDict and loaded == OrderedDict(key=1)

    class OrderedDictsOnly(RestrictedUnpickler):
        allowed: ClassVar = {("collections", "OrderedDict"): OrderedDict}

    with path.open("rb") as file:
        assert OrderedDictsOnly(file, source=path).load()["key"] == 1


def test_numpy_array_globals_allow_both_core_spellings_and_build_the_installed_numpys_arrays(tmp_path):
    allowed = datasets.numpy_array_globals("x.pkl", 1 << 20)
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        assert allowed[(core, "_reconstruct")] is allowed[("numpy._core.multiarray", "_reconstruct")]
        assert allowed[(core, "scalar")] is np.int64(7).__reduce__()[0]
    assert allowed[("numpy", "dtype")] is np.dtype and issubclass(allowed[("numpy", "ndarray")], np.ndarray)
    with pytest.raises(pickle.UnpicklingError, match="an array of 8000000 bytes, more than the 1048576 bytes left"):
        allowed[("numpy._core.multiarray", "_reconstruct")](allowed[("numpy", "ndarray")], (10**6,), "f8")


def test_numpy_scalars_and_arrays_unpickle(tmp_path):
    path = tmp_path / "arrays.pkl"
    content = {b"a": np.arange(6, dtype=np.float32).reshape(2, 3), b"s": np.int64(7)}
    write_pickle(path, content)
    loaded = datasets.load_pickle_safely(path)
    assert loaded[b"a"].dtype == np.float32 and np.array_equal(loaded[b"a"], content[b"a"])
    assert type(loaded[b"s"]) is np.int64 and loaded[b"s"] == 7


# --------------------------------------------------------------------------- STL-10


def write_stl_images(path: Path, images: np.ndarray) -> None:
    # On disk each channel is column-major.
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())


def write_stl10(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    splits = {}
    for part, count in [("train", 2), ("test", 3), ("unlabeled", 3)]:
        images = random_images(count, 3, 96)
        write_stl_images(folder / f"{part}_X.bin", images)
        if part == "unlabeled":
            labels = np.full(count, -1)
        else:
            labels = np.array([1, 10, 5][:count])
            (folder / f"{part}_y.bin").write_bytes(labels.astype(np.uint8).tobytes())
            labels = labels - 1
        splits[part] = (images, labels)
    class_names = ["airplane", "bird", "car", "cat", "deer"] + list("fghij")
    (folder / "class_names.txt").write_text("\n".join(class_names) + "\n")
    return splits


def test_stl10_splits_orientation_and_label_shift(tmp_path):
    splits = write_stl10(tmp_path)
    for split, (images, labels) in splits.items():
        dataset = load_dataset("stl10", tmp_path, split)
        assert dataset.classes[0] == "airplane" and len(dataset.classes) == 10
        assert (dataset.num_channels, dataset.image_size) == (3, (96, 96))
        assert isinstance(dataset.images, np.memmap)  # a view of the file, never read in whole
        assert_items_match(dataset, images, labels)
    assert load_dataset("stl10", tmp_path, "train").labels.tolist() == [0, 9]
    assert load_dataset("stl10", tmp_path, "unlabeled").labels.tolist() == [-1, -1, -1]


def test_stl10_single_pixel_column_major(tmp_path):
    write_stl10(tmp_path)
    raw = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    raw[0, 2, 7, 5] = 77  # disk order: channel, column, row
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(raw.tobytes())
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([3]))
    image, label = load_dataset("stl10", tmp_path, "test")[0]
    assert image[2, 5, 7] == 77 and int(image.sum()) == 77 and label == 2


def test_stl10_train_plus_unlabeled_across_the_boundary(tmp_path):
    splits = write_stl10(tmp_path)
    images = np.concatenate([splits["train"][0], splits["unlabeled"][0]])
    labels = np.concatenate([splits["train"][1], splits["unlabeled"][1]])
    dataset = load_dataset("stl10", tmp_path, "train+unlabeled")
    assert len(dataset) == 5 and dataset.labels.tolist() == [0, 9, -1, -1, -1]
    assert isinstance(dataset.images, ConcatenatedImages) and dataset.images.shape == (5, 3, 96, 96)
    assert_items_match(dataset, images, labels)
    assert torch.equal(dataset[-1][0], torch.from_numpy(images[-1]))
    batch_images, batch_labels = dataset.get_batch(torch.tensor([4, 1, 2, 0, 1]))
    assert batch_images.is_contiguous() and batch_images.dtype == torch.uint8
    assert torch.equal(batch_images, torch.from_numpy(images[[4, 1, 2, 0, 1]]))
    assert batch_labels.tolist() == [-1, 9, -1, 0, 9]
    assert np.array_equal(dataset.images[1:3], images[1:3])
    with pytest.raises(IndexError):
        dataset.images[np.array([5])]


def test_stl10_errors(tmp_path):
    with pytest.raises(DatasetError, match=f"^{tmp_path}/stl10_binary is missing; download STL-10"):
        load_dataset("stl10", tmp_path)
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-1])
    with pytest.raises(DatasetError, match=f"^{folder}/test_X.bin is truncated .*not a multiple of 27648"):
        load_dataset("stl10", tmp_path, "test")
    (folder / "train_y.bin").write_bytes(bytes([1]))
    with pytest.raises(DatasetError, match=f"^{folder}/train_y.bin is truncated .*1 labels for 2 images"):
        load_dataset("stl10", tmp_path, "train")
    (folder / "unlabeled_X.bin").unlink()
    with pytest.raises(DatasetError, match=f"^{folder}/unlabeled_X.bin is missing"):
        load_dataset("stl10", tmp_path, "unlabeled")


# --------------------------------------------------------------------------- Fashion-MNIST


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, compress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, prefix, count in [("train", "train", 4), ("test", "t10k", 3)]:
        images = random_images(count, 1, 28)
        labels = RNG.integers(0, 10, count)
        for stem, content in [
            (f"{prefix}-images-idx3-ubyte", idx_bytes(images[:, 0], 2051)),
            (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049)),
        ]:
            if compress:
                (root / f"{stem}.gz").write_bytes(gzip.compress(content))
            else:
                (root / stem).write_bytes(content)
        splits[split] = (images, labels)
    return splits


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_gzip_and_plain(tmp_path, compress):
    splits = write_fashion_mnist(tmp_path, compress)
    for split, (images, labels) in splits.items():
        dataset = load_dataset("fashion_mnist", tmp_path, split)
        assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"
        assert (dataset.num_channels, dataset.image_size) == (1, (28, 28))
        assert_items_match(dataset, images, labels)


def test_fashion_mnist_single_pixel(tmp_path):
    write_fashion_mnist(tmp_path, compress=False)
    pixels = np.zeros((1, 28, 28), np.uint8)
    pixels[0, 3, 20] = 9  # row 3, column 20
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(pixels, 2051))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([6]), 2049))
    image, label = load_dataset("fashion_mnist", tmp_path, "test")[0]
    assert image.shape == (1, 28, 28) and image[0, 3, 20] == 9 and int(image.sum()) == 9 and label == 6


def test_fashion_mnist_errors(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path, compress=False)
    images_path = tmp_path / "train-images-idx3-ubyte"
    content = images_path.read_bytes()
    images_path.write_bytes(content[:-5])
    with pytest.raises(DatasetError, match=f"^{images_path} is truncated .*of 3136 payload bytes"):
        load_dataset("fashion_mnist", tmp_path)
    images_path.write_bytes(content + b"\0")
    with pytest.raises(DatasetError, match=f"^{images_path} is truncated .*more than"):
        load_dataset("fashion_mnist", tmp_path)
    images_path.write_bytes(struct.pack(">I", 2049) + content[4:])
    with pytest.raises(DatasetError, match=f"^{images_path} has magic number 2049, not 2051"):
        load_dataset("fashion_mnist", tmp_path)
    images_path.write_bytes(content)
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    labels_path.write_bytes(idx_bytes(np.array([1, 2]), 2049))
    with pytest.raises(DatasetError, match=f"^{labels_path} is truncated .*2 labels for 4 images"):
        load_dataset("fashion_mnist", tmp_path)
    labels_path.unlink()
    with pytest.raises(DatasetError, match=f"^{labels_path}.gz is missing; download the four Fashion-MNIST"):
        load_dataset("fashion_mnist", tmp_path)


def test_fashion_mnist_truncated_gzip(tmp_path):
    write_fashion_mnist(tmp_path, compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=f"^{path} is truncated or corrupt"):
        load_dataset("fashion_mnist", tmp_path, "test")


def test_fashion_mnist_default_root_says_apt_get(tmp_path, monkeypatch):
    moved = dataclasses.replace(DATASET_INFO["fashion_mnist"], root=str(tmp_path / "fashion-mnist"))
    monkeypatch.setattr(datasets, "DATASET_INFO", {**DATASET_INFO, "fashion_mnist": moved})
    with pytest.raises(DatasetError, match="is missing; apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist")


REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not REAL_FASHION_MNIST.exists(), reason="apt-get install dataset-fashion-mnist to run this test")
def test_real_debian_fashion_mnist():
    for split, count in [("train", 60000), ("test", 10000)]:
        dataset = load_dataset("fashion_mnist", split=split)
        assert len(dataset) == count and dataset.images.shape == (count, 1, 28, 28)
        assert dataset[0][0].shape == (1, 28, 28)
        assert dataset.labels.min() == 0 and dataset.labels.max() == 9
        assert np.bincount(dataset.labels).tolist() == [count // 10] * 10


# --------------------------------------------------------------------------- image folder


def test_imagefolder_rgb_sorted_classes(tmp_path):
    images = random_images(3, 3, 8)
    (tmp_path / "zebra").mkdir()
    (tmp_path / "ant").mkdir()
    Image.fromarray(images[0].transpose(1, 2, 0)).save(tmp_path / "zebra" / "a.png")
    Image.fromarray(images[1].transpose(1, 2, 0)).save(tmp_path / "ant" / "b.png")
    Image.fromarray(images[2][0]).save(tmp_path / "ant" / "c.png")  # grayscale, converted to RGB
    Image.fromarray(images[0].transpose(1, 2, 0)).save(tmp_path / "ant" / "d.JPEG")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    dataset = load_dataset("imagefolder", tmp_path)
    assert dataset.classes == ["ant", "zebra"] and dataset.labels.tolist() == [0, 0, 0, 1]
    assert dataset.images.shape == (4, 3, 8, 8)
    gray = np.repeat(images[2][:1], 3, axis=0)
    # Files sort as ant/b, ant/c, ant/d.JPEG, zebra/a; the JPEG is lossy, so only its shape is checked.
    for index, expected in [(0, images[1]), (1, gray), (3, images[0])]:
        assert torch.equal(dataset[index][0], torch.from_numpy(expected))
    assert dataset[2][0].shape == (3, 8, 8)


def test_imagefolder_grayscale_keeps_one_channel(tmp_path):
    images = random_images(2, 1, 6)
    for index, image in enumerate(images):
        (tmp_path / f"class{index}").mkdir()
        Image.fromarray(image[0]).save(tmp_path / f"class{index}" / "x.png")
    dataset = load_dataset("imagefolder", tmp_path, "train")
    assert (dataset.num_channels, dataset.image_size) == (1, (6, 6))
    assert_items_match(dataset, images, [0, 1])


def test_imagefolder_16_bit_pngs_scale_to_8_bits(tmp_path):
    values = np.array([[0, 128, 129, 257], [300, 385, 386, 65535]], dtype=np.uint16)
    expected = np.array([[0, 0, 1, 1], [1, 1, 2, 255]], dtype=np.uint8)  # round(v / 257)
    sixteen_bit = Image.fromarray(values)
    assert sixteen_bit.mode == "I;16"
    (tmp_path / "a").mkdir()
    sixteen_bit.save(tmp_path / "a" / "1.png")
    Image.fromarray(expected).convert("LA").save(tmp_path / "a" / "2.png")  # 8-bit gray with alpha: still gray
    dataset = load_dataset("imagefolder", tmp_path)
    assert dataset.num_channels == 1
    assert_items_match(dataset, np.stack([expected[None], expected[None]]), [0, 0])
    Image.new("RGB", (4, 2), (9, 9, 9)).save(tmp_path / "a" / "3.png")  # one color image: all are read as RGB
    assert torch.equal(load_dataset("imagefolder", tmp_path)[0][0], torch.from_numpy(np.stack([expected] * 3)))


def test_pixels_beyond_16_bits_are_refused():
    with pytest.raises(DatasetError, match="^x.png holds I values -1..70000, outside 16 bits; save it as an 8- or 16"):
        datasets._read_pixels(Image.fromarray(np.array([[70000, -1]], np.int32)), Path("x.png"), 1)


def test_imagefolder_split_subfolders(tmp_path):
    images = random_images(3, 1, 6)
    for split, image in [("train", images[0]), ("train", images[1]), ("test", images[2])]:
        folder = tmp_path / split / "only_class"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / f"{len(list(folder.iterdir()))}.png")
    assert_items_match(load_dataset("imagefolder", tmp_path, "train"), images[:2], [0, 0])
    assert_items_match(load_dataset("imagefolder", tmp_path, "test"), images[2:], [0])


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="imagefolder has no default folder; pass --data"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetError, match=f"^{tmp_path}/missing is missing; pass --data"):
        load_dataset("imagefolder", tmp_path / "missing")
    with pytest.raises(DatasetError, match="holds no class_name"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'extra' for imagefolder; choose one of train, val, test"):
        load_dataset("imagefolder", tmp_path, "extra")
    with pytest.raises(DatasetError, match=f"^{tmp_path}/test is missing; give the test split as a folder"):
        load_dataset("imagefolder", tmp_path, "test")
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "1.png")
    Image.new("RGB", (8, 9)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DatasetError, match=f"^{tmp_path}/a/2.png is 8x9 but .*1.png is 8x8; resize all images"):
        load_dataset("imagefolder", tmp_path)


# --------------------------------------------------------------------------- shared


def test_get_batch_equals_stacked_items_for_any_index_type(tmp_path):
    write_cifar10(tmp_path)
    dataset = load_dataset("cifar10", tmp_path)
    order = [7, 0, 3, 3, 9]
    stacked = torch.stack([dataset[i][0] for i in order])
    for indices in (order, np.array(order), torch.tensor(order)):
        images, labels = dataset.get_batch(indices)
        assert images.shape == (5, 3, 32, 32) and images.is_contiguous() and images.dtype == torch.uint8
        assert labels.dtype == torch.int64 and labels.tolist() == [dataset[i][1] for i in order]
        assert torch.equal(images, stacked)


def test_unknown_dataset_and_split():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'; choose one of cifar10, cifar100, stl10"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="unknown split 'val' for cifar10; choose one of train, test"):
        load_dataset("cifar10", split="val")


# Each dataset's facts, written out once more: (root, channels, classes, view size, splits).
FACTS = {
    "cifar10": ("data/CIFAR10", 3, 10, 32, ("train", "test")),
    "cifar100": ("data/CIFAR100", 3, 100, 32, ("train", "test")),
    "stl10": ("data/STL10", 3, 10, 96, ("train", "test", "unlabeled", "train+unlabeled")),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", 1, 10, 32, ("train", "test")),
    "imagefolder": (None, None, None, None, ("train", "val", "test")),  # the folder's images decide
}


@pytest.mark.parametrize("name", FACTS)
def test_every_dataset_has_one_registry_entry(name):
    info = dataset_info(name)
    root, channels, classes, size, splits = FACTS[name]
    assert (info.name, info.root, info.channels, info.num_classes, info.view_size, info.splits) == (
        name,
        root,
        channels,
        classes,
        size,
        splits,
    )
    assert len(info.mean) == len(info.std) == (channels or 3)  # an image folder's statistics are ImageNet's
    assert all(0 < value < 1 for value in info.mean + info.std)
    assert info.class_names is None or len(info.class_names) == classes
    assert info.training_size(17) == (size or 17)  # an image folder's views keep its images' side
    assert DATASETS == tuple(FACTS)


WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "stl10": write_stl10,
    "fashion_mnist": lambda root: write_fashion_mnist(root, compress=True),
}


@pytest.mark.parametrize("name", WRITERS)
def test_each_registry_entry_agrees_with_what_its_reader_reads(name, tmp_path):
    WRITERS[name](tmp_path)
    info = dataset_info(name)
    for split in info.splits:
        dataset = load_dataset(name, tmp_path, split)
        assert (dataset.num_channels, len(dataset.classes)) == (info.channels, info.num_classes)
        assert len(info.mean) == dataset.num_channels


def test_an_unknown_dataset_names_the_known_ones(learnable_fashion_mnist, tmp_path, capsys):
    with pytest.raises(DatasetError) as error:
        dataset_info("mnist")
    known = "cifar10, cifar100, stl10, fashion_mnist, imagefolder"
    assert str(error.value) == f"unknown dataset 'mnist'; choose one of {known}"
    config = "configs/fashion_mnist/squeeze_span.yaml"
    run = ["train", config, f"data.root={learnable_fashion_mnist}", f"output_dir={tmp_path / 'run'}"]
    assert main([*run, "data.dataset=mnist"]) == 2
    assert capsys.readouterr().err == f"DatasetError: unknown dataset 'mnist'; choose one of {known}\n"
    assert not (tmp_path / "run").exists()


def test_validation_split_holds_out_a_seeded_disjoint_sixth():
    images = np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1)
    dataset = ImageDataset(images, np.arange(60) % 10, [str(c) for c in range(10)], "toy")
    fit, validation = split_validation(dataset)
    assert (len(fit), len(validation)) == (50, 10)
    fit_ids, validation_ids = set(fit.images.ravel().tolist()), set(validation.images.ravel().tolist())
    assert fit_ids.isdisjoint(validation_ids) and fit_ids | validation_ids == set(range(60))
    assert np.array_equal(validation.labels, validation.images.ravel() % 10)  # labels travel with their images
    again = split_validation(dataset)[1]
    assert np.array_equal(again.images, validation.images) and validation.name == "toy[validation]"
    assert not np.array_equal(split_validation(dataset, seed=1)[1].images, validation.images)


def test_validation_split_of_a_tiny_set_is_an_error():
    dataset = ImageDataset(np.zeros((2, 1, 1, 1), np.uint8), np.zeros(2), ["a"], "toy")
    with pytest.raises(DatasetError, match="too small to hold out a validation split"):
        split_validation(dataset)
