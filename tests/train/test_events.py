"""dlkit.train.events: TensorBoard scalar files written without tensorboardX, read back by dlkit
and by tensorboardX's own protobufs (the format TensorBoard reads)."""

import struct
import subprocess
import sys

import numpy as np

from dlkit.train import events


def test_crc32c_matches_the_standard_check_value_and_tensorboardx():
    from tensorboardX.crc32c import crc32c

    assert events.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert events.crc32c(data) == crc32c(data)


def test_written_scalars_read_back_with_dlkit_and_tensorboardx(tmp_path):
    from tensorboardX.proto import event_pb2

    writer = events.ScalarEvents(tmp_path)
    writer.add(0, {"loss": 2.5, "accuracy": 0.125})
    writer.add(2**40, {"loss": float("1e-7")})  # a step beyond 32 bits
    writer.add(3, {})  # nothing to write
    writer.close()
    want = [(0, "loss", 2.5), (0, "accuracy", 0.125), (2**40, "loss", np.float32(1e-7))]
    assert events.read_scalars(writer.path) == want
    raw, pos, parsed = writer.path.read_bytes(), 0, []
    while pos < len(raw):
        (n,) = struct.unpack("<Q", raw[pos : pos + 8])
        payload = raw[pos + 12 : pos + 12 + n]
        crcs = raw[pos + 8 : pos + 12], raw[pos + 12 + n : pos + 16 + n]
        assert crcs == (events._masked(raw[pos : pos + 8]), events._masked(payload))
        parsed.append(event_pb2.Event.FromString(payload))
        pos += 16 + n
    assert parsed[0].file_version == "brain.Event:2"
    got = [(e.step, v.tag, v.simple_value) for e in parsed[1:] for v in e.summary.value]
    assert got == want


def test_a_run_imports_neither_tensorboardx_nor_torch(tmp_path):
    """Writing a run's events imports no tensorboardX, so no PyTorch through it (seconds)."""
    code = f"""
import sys
from dlkit.train.metrics import MetricWriter
w = MetricWriter({str(tmp_path)!r}, start_step=0)
w.write(1, {{"loss": 1.0}}, echo=False)
w.close()
print(sorted(m for m in ("tensorboardX", "torch") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
