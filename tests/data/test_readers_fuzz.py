"""Dataset files whose headers lie, as a hostile user would write them: each loads pixel-exactly,
or is refused with one DatasetError line, fast, before memory is spent on what the header claims."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeeze_span.data import load_dataset
from squeeze_span.errors import DatasetError
from tests.conftest import refused_or_loaded

hostile = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
hostile_slow = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

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


@hostile
@given(
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
@hostile_slow
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
