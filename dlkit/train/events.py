"""TensorBoard scalar event files, written and read without tensorboardX (whose import pulls in
PyTorch when it is installed: seconds at every run start).

A file is TFRecord framing (length, CRC-32C of the length, payload, CRC-32C of the payload, each
CRC masked) around `tensorflow.Event` protobufs: the first holds `file_version`, each later one a
step and a `Summary` of (tag, simple_value) pairs. Only the fields a scalar needs are encoded.
"""

import pathlib
import socket
import struct
import time


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    c = crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(payload: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
    length = struct.pack("<Q", len(payload))
    return length + _masked(length) + payload + _masked(payload)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # int64 fields are two's complement on the wire
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, *, version: str = "", scalars: dict | None = None):
    """An Event message: wall_time (1), step (2), file_version (3), summary (5)."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if version:
        out += _field(3, version.encode())
    if scalars:
        values = b"".join(
            _field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        out += _field(5, values)
    return out


class ScalarEvents:
    """An events.out.tfevents.* file in `directory`: `add(step, {tag: value})`, flushed per call."""

    def __init__(self, directory):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}"
        self.path = directory / name
        self._file = open(self.path, "ab")
        self._file.write(record(event(now, version="brain.Event:2")))
        self._file.flush()

    def add(self, step: int, scalars: dict) -> None:
        if scalars:
            self._file.write(record(event(time.time(), step, scalars=scalars)))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message (varint, 64/32-bit, bytes)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _read_varint(buf, pos)
        elif kind == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif kind == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif kind == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {kind} is not read here")
        yield number, kind, value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return result, pos


def read_scalars(path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every simple_value scalar in one event file."""
    raw, pos, out = pathlib.Path(path).read_bytes(), 0, []
    while pos + 12 <= len(raw):
        (length,) = struct.unpack("<Q", raw[pos : pos + 8])
        step, values = 0, []
        for number, _, value in _fields(raw[pos + 12 : pos + 12 + length]):
            if number == 2:
                step = value
            elif number == 5:
                values += [v for n, _, v in _fields(value) if n == 1]
        for v in values:
            tag, scalar = "", None
            for n, kind, x in _fields(v):
                if n == 1:
                    tag = x.decode()
                elif n == 2 and kind == 5:
                    (scalar,) = struct.unpack("<f", x)
            if scalar is not None:
                out.append((step, tag, scalar))
        pos += 12 + length + 4
    return out
