"""Dataset files whose headers lie, as a hostile user would write them: each loads pixel-exactly,
or is refused with one DatasetError line, fast, before memory is spent on what the header claims."""

import gzip
import io
import math
import pickle
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from squeeze_span.data import load_dataset
from squeeze_span.errors import DatasetError, UnsafePickleError
from tests.conftest import HOSTILE_EXAMPLES_SLOW, hostile, hostile_settings, refused_or_loaded

# Every header field of an IDX file is a big-endian u32: the lies worth telling are the edges.
header_fields = st.one_of(
    st.sampled_from([0, 1, 2, 3, 27, 28, 29, 2049, 2051, 2**16, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(min_value=0, max_value=2**32 - 1),
)


def _idx_file(magic: int, shape: list[int], payload: bytes, compress: bool) -> bytes:
    content = struct.pack(f">{1 + len(shape)}I", magic, *shape) + payload
    return gzip.compress(content) if compress else content


def _fashion_mnist(tmp_path, compress, image_header, label_header, image_payload, label_payload):
    suffix = ".gz" if compress else ""
    (tmp_path / f"t10k-images-idx3-ubyte{suffix}").write_bytes(
        _idx_file(image_header[0], image_header[1:], image_payload, compress)
    )
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(
        _idx_file(label_header[0], label_header[1:], label_payload, compress)
    )


def _check_idx(tmp_path, compress, image_header, label_header, image_payload, label_payload):
    _fashion_mnist(tmp_path, compress, image_header, label_header, image_payload, label_payload)
    dataset = refused_or_loaded(lambda: load_dataset("fashion_mnist", tmp_path, "test"), DatasetError)
    count, rows, columns = image_header[1:]
    honest = (
        image_header[0] == 2051
        and label_header == [2049, count]
        and count * rows * columns > 0
        and len(image_payload) == count * rows * columns
        and len(label_payload) == count
        and max(label_payload, default=0) < 10
    )
    assert (dataset is not None) == honest
    if dataset is not None:
        images = np.frombuffer(image_payload, np.uint8).reshape(count, 1, rows, columns)
        assert np.array_equal(dataset.images, images)
        assert dataset.labels.tolist() == list(label_payload)


# Real images of 2 x 3 x 2, then a header that may lie about any field.
IMAGES = bytes(range(12))
LABELS = bytes([3, 9])


@hostile(
    compress=st.booleans(),
    field=st.integers(min_value=0, max_value=5),
    value=header_fields,
    cut=st.integers(min_value=-3, max_value=3),
)
def test_an_idx_header_that_lies_about_one_field_loads_exactly_or_is_one_line(compress, field, value, cut, tmp_path):
    headers = [2051, 2, 3, 2, 2049, 2]
    headers[field] = value
    images = IMAGES[:cut] if cut < 0 else IMAGES + bytes(cut)
    _check_idx(tmp_path, compress, headers[:4], headers[4:], images, LABELS)


@pytest.mark.parametrize("compress", [True, False])
def test_an_idx_header_that_claims_terabytes_allocates_nothing(compress, tmp_path):
    _check_idx(tmp_path, compress, [2051, 2**32 - 1, 2**32 - 1, 2**32 - 1], [2049, 2], IMAGES, LABELS)
    _check_idx(tmp_path, compress, [2051, 60000, 28, 28], [2049, 60000], IMAGES, LABELS)  # 47 MB claimed, 12 held


@pytest.mark.slow
@hostile_settings(HOSTILE_EXAMPLES_SLOW)
@given(
    compress=st.booleans(),
    image_header=st.lists(header_fields, min_size=4, max_size=4),
    label_header=st.lists(header_fields, min_size=2, max_size=2),
    image_payload=st.binary(max_size=64),
    label_payload=st.binary(max_size=8),
)
def test_many_idx_files_load_exactly_or_are_one_line(
    compress, image_header, label_header, image_payload, label_payload, tmp_path
):
    _check_idx(tmp_path, compress, image_header, label_header, image_payload, label_payload)


# --------------------------------------------------------------------------- CIFAR pickles


class Reduces:
    """Pickles as ``function(*args)``, then ``__setstate__(state)`` where a state is given: numpy's own recipe
    for an array, with every value of it the test's to choose."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, under the installed numpy's name
# Shapes a pickle may claim: honest ones, and ones of 10**12 and 2**124 bytes.
claimed_shapes = st.sampled_from([(0,), (1,), (2, 3072), (3, 3072), (6144,), (10**6, 10**6), (2**62, 2**62)])
claimed_dtypes = st.sampled_from([np.uint8, np.int64, np.float32, object, "V3072", ("u1", (3072,))])


def _cifar_test_batch(tmp_path, data, labels, names) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))


PIXELS = bytes(range(256)) * 24  # two images of 3072 bytes
NAMES = [f"class {index}".encode() for index in range(10)]
# Two images as numpy pickles them: an empty array, then its shape, dtype and bytes.
HONEST_ARRAY = Reduces(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2, 3072), np.dtype(np.uint8), False, PIXELS))


@hostile(
    reconstructed=claimed_shapes,
    shape=claimed_shapes,
    dtype=claimed_dtypes,
    payload=st.sampled_from([PIXELS, PIXELS[:-1], PIXELS + b"\0", [0] * 6144, PIXELS[:1]]),
    version=st.sampled_from([1, 0, None]),
    labels=st.sampled_from([[3, 9], [3], [3, 10], [3, -1], [3, "9"], [3, 2**70], [3, [[9]]]]),
)
def test_a_cifar_array_that_lies_about_its_shape_loads_exactly_or_is_one_line(
    reconstructed, shape, dtype, payload, version, labels, tmp_path
):
    state = (shape, np.dtype(dtype), False, payload)
    array = Reduces(RECONSTRUCT, (np.ndarray, reconstructed, b"b"), state if version is None else (version, *state))
    _cifar_test_batch(tmp_path, array, labels, NAMES)
    dataset = refused_or_loaded(lambda: load_dataset("cifar10", tmp_path, "test"), DatasetError)
    honest = (
        math.prod(reconstructed) <= 1
        and shape == (2, 3072)
        and np.dtype(dtype) == np.uint8
        and payload == PIXELS
        and version in (1, None)
        and labels == [3, 9]
    )
    assert (dataset is not None) == honest
    if dataset is not None:
        assert np.array_equal(dataset.images, np.frombuffer(PIXELS, np.uint8).reshape(2, 3, 32, 32))
        assert dataset.labels.tolist() == labels and dataset.classes[1] == "class 1"


@pytest.mark.parametrize(
    "data",
    [
        Reduces(np.ndarray, ((2**62, 2**62),)),  # numpy.ndarray(shape): terabytes if it were built
        Reduces(np.ndarray, ((2**20, 3072),)),
        Reduces(RECONSTRUCT, (np.ndarray, (2**40,), b"b")),
        Reduces(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2**40,), np.dtype(object), False, [1, 2])),
        Reduces(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (10**6, 3072), np.dtype(np.uint8), False, PIXELS)),
        Reduces(RECONSTRUCT, (Reduces, (0,), b"b")),
    ],
)
def test_a_cifar_pickle_that_claims_terabytes_allocates_nothing(data, tmp_path):
    _cifar_test_batch(tmp_path, data, [3, 9], NAMES)
    assert (
        refused_or_loaded(lambda: load_dataset("cifar10", tmp_path, "test"), (DatasetError, UnsafePickleError)) is None
    )


@pytest.mark.parametrize(
    "claim",
    [
        b"\x8e" + struct.pack("<Q", 2**60),  # BINBYTES8: a bytes object of 2**60 bytes follows
        b"\x8d" + struct.pack("<Q", 2**40),  # BINUNICODE8
        b"\x95" + struct.pack("<Q", 2**40),  # FRAME
        b"N" + b"r" + struct.pack("<I", 2**31 - 1),  # LONG_BINPUT: a memo of 2**31 entries
        b"\x8a" + b"\xff",  # LONG1 of 255 bytes, in a file of 6
    ],
)
def test_a_pickle_whose_lengths_lie_is_refused_before_python_allocates_them(claim, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _cifar_test_batch(tmp_path, PIXELS, [3, 9], NAMES)
    (folder / "test_batch").write_bytes(b"\x80\x04" + claim + b".")
    assert refused_or_loaded(lambda: load_dataset("cifar10", tmp_path, "test"), DatasetError) is None


@hostile(
    names=st.one_of(
        st.lists(
            st.one_of(st.binary(min_size=1, max_size=8), st.text(max_size=8), st.integers(), st.none()), max_size=12
        ),
        st.sampled_from([7, b"ten names", None, {b"a": 1}]),
    )
)
def test_cifar_class_names_are_text_or_one_line(names, tmp_path):
    _cifar_test_batch(tmp_path, HONEST_ARRAY, [3, 9], names)
    dataset = refused_or_loaded(lambda: load_dataset("cifar10", tmp_path, "test"), DatasetError)

    def text(name):
        try:
            return name.decode() if isinstance(name, bytes) else name
        except UnicodeDecodeError:
            return None

    honest = isinstance(names, list) and len(names) == 10 and all(isinstance(text(name), str) for name in names)
    assert (dataset is not None) == honest
    if dataset is not None:
        assert dataset.classes == [text(name) for name in names]


def test_cifar_class_names_nested_past_the_recursion_limit_are_one_line(tmp_path):
    _cifar_test_batch(tmp_path, HONEST_ARRAY, [3, 9], NAMES)
    # A list in a list, 100,000 deep (which pickle.dumps itself cannot write): EMPTY_LIST many times, APPEND as often.
    nested = b"]" * 100_000 + b"a" * 99_999
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(b"\x80\x03}C\x0blabel_names" + nested + b"s.")
    with pytest.raises(DatasetError, match="is truncated or corrupt \\(a list of 1 class names"):
        load_dataset("cifar10", tmp_path, "test")


# --------------------------------------------------------------------------- STL-10


def _stl10_test_split(tmp_path, labels: bytes, names: bytes) -> np.ndarray:
    folder = tmp_path / "stl10_binary"
    folder.mkdir(exist_ok=True)
    images = np.arange(2 * 3 * 96 * 96, dtype=np.uint64).astype(np.uint8).reshape(2, 3, 96, 96)
    (folder / "test_X.bin").write_bytes(images.tobytes())
    (folder / "test_y.bin").write_bytes(labels)
    (folder / "class_names.txt").write_bytes(names)
    return images.transpose(0, 1, 3, 2)  # each channel is stored column-major


STL_NAMES = "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n"


@hostile(labels=st.binary(max_size=6), names=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
def test_stl10_labels_and_class_names_load_exactly_or_are_one_line(labels, names, tmp_path):
    images = _stl10_test_split(tmp_path, labels, names)
    dataset = refused_or_loaded(lambda: load_dataset("stl10", tmp_path, "test"), DatasetError)
    try:
        lines = [line.strip() for line in names.decode().splitlines() if line.strip()]
    except UnicodeDecodeError:
        lines = []
    honest = len(labels) == 2 and all(1 <= label <= 10 for label in labels) and len(lines) == 10
    assert (dataset is not None) == honest
    if dataset is not None:
        assert np.array_equal(dataset.images, images) and dataset.labels.tolist() == [label - 1 for label in labels]
        assert dataset.classes == lines


def test_stl10_files_far_larger_than_their_images_are_not_read(tmp_path):
    _stl10_test_split(tmp_path, bytes([1, 2]), STL_NAMES.encode())
    with open(tmp_path / "stl10_binary" / "test_y.bin", "r+b") as file:
        file.truncate(2**36)  # sparse: 64 GiB of labels for 2 images, no disk spent
    assert refused_or_loaded(lambda: load_dataset("stl10", tmp_path, "test"), DatasetError) is None
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, 2]))
    with open(tmp_path / "stl10_binary" / "class_names.txt", "r+b") as file:
        file.truncate(2**36)
    assert refused_or_loaded(lambda: load_dataset("stl10", tmp_path, "test"), DatasetError) is None


# --------------------------------------------------------------------------- image folders


def _png(width: int, height: int, mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), 7).save(buffer, "PNG")
    return buffer.getvalue()


# The 13 bytes of a PNG's IHDR chunk after its length and type: width, height, bit depth, color type,
# compression, filter, interlace. Its CRC is rewritten, so a lie is one a careful writer could tell.
ihdr_fields = st.tuples(
    st.one_of(st.sampled_from([0, 1, 2, 3, 4, 2**16, 2**24, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    st.one_of(st.sampled_from([0, 1, 2, 3, 4, 2**16, 2**24, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1)),
    st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]),
    st.sampled_from([0, 2, 3, 4, 6, 1, 255]),
    st.sampled_from([0, 1]),
    st.sampled_from([0, 1]),
    st.sampled_from([0, 1, 2]),
)


def _lying_png(fields: tuple[int, ...], honest: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", *fields)
    chunk = b"IHDR" + header
    return honest[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + honest[33:]


@hostile(fields=ihdr_fields, cut=st.integers(min_value=-40, max_value=0))
def test_a_png_whose_header_lies_loads_exactly_or_is_one_line(fields, cut, tmp_path):
    honest = _png(3, 2)
    (tmp_path / "a").mkdir(exist_ok=True)
    content = _lying_png(fields, honest)
    (tmp_path / "a" / "0.png").write_bytes(content[: len(content) + cut] if cut else content)
    dataset = refused_or_loaded(lambda: load_dataset("imagefolder", tmp_path), DatasetError)
    if fields == (3, 2, 8, 0, 0, 0, 0) and cut == 0:
        assert dataset is not None and np.array_equal(dataset.images, np.full((1, 1, 2, 3), 7, np.uint8))
    elif dataset is not None:  # a lie Pillow decodes anyway (a bit depth, a filter) is bounded all the same
        assert dataset.images.shape[2:] == (fields[1], fields[0]) and fields[0] * fields[1] <= 1 << 26


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (_lying_png((9000, 9000, 8, 0, 0, 0, 0), _png(3, 2)), "claims 9000x9000 pixels, more than its file"),
        (_lying_png((2**16, 2**16, 8, 0, 0, 0, 0), _png(3, 2)), "is a decompression bomb"),  # to Pillow too
        (_lying_png((2000, 2000, 8, 0, 0, 0, 0), _png(3, 2)), "claims 2000x2000 pixels, more than its file"),
        (b"GIF89a" + bytes(20), "is not a readable PNG or JPEG image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "is not a readable PNG or JPEG image"),
    ],
    ids=["header-of-81-megapixels", "header-of-4-gigapixels", "header-of-4-megapixels", "a-gif-named-png", "garbage"],
)
def test_an_image_that_claims_more_than_its_file_holds_is_refused_before_decoding(content, refusal, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(content)
    assert refused_or_loaded(lambda: load_dataset("imagefolder", tmp_path), DatasetError) is None
    with pytest.raises(DatasetError, match=f"^{tmp_path}/a/0.png {refusal}"):
        load_dataset("imagefolder", tmp_path)


def test_pillows_decompression_bomb_error_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2)  # Pillow refuses above twice this: 3x2 is a bomb to it
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(_png(3, 2))
    with pytest.raises(DatasetError, match=f"^{tmp_path}/a/0.png is a decompression bomb"):
        load_dataset("imagefolder", tmp_path)
