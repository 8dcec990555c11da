"""A TensorBoard scalar writer with no dependency: TFRecord framing and a hand-encoded Event protobuf.

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of records, each
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
where ``data`` is a serialized ``tensorflow.Event``. Scalars need only a few of its
fields (Event: wall_time=1 double, step=2 int64, file_version=3 string, summary=5;
Summary: value=1; Summary.Value: tag=1 string, simple_value=2 float), so they are
encoded here rather than pulling in TensorFlow's protobuf stack.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from squeeze_span.fileio import append_line


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def encode_event(
    wall_time: float, step: int, *, tag: str | None = None, value: float | None = None, file_version: str | None = None
) -> bytes:
    """A serialized Event holding one scalar (or the file-version header)."""
    event = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        event += _length_delimited(3, file_version.encode())
    if tag is not None:
        summary_value = _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
        event += _length_delimited(5, _length_delimited(1, summary_value))
    return event


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class EventWriter:
    """Appends scalars to a new ``events.out.tfevents.<time>.<host>`` file in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._file = self.path.open("ab")
        # Every write is flushed at once, so that closing never has a write of its own to fail.
        append_line(self._file, self.path, frame_record(encode_event(time.time(), 0, file_version="brain.Event:2")))

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        now = time.time()
        events = (encode_event(now, step, tag=tag, value=float(value)) for tag, value in scalars.items())
        append_line(self._file, self.path, b"".join(frame_record(event) for event in events))

    def close(self) -> None:
        self._file.close()
