"""The offline W&B run-file reader used by the W&B tests: records spanning 32 KiB blocks."""

from __future__ import annotations

import struct
import zlib

import pytest
from wandb.proto import wandb_internal_pb2

from tests.helpers.wandb_records import history_keys, read_record_payloads, read_records

BLOCK = 32 * 1024


def _write_log(path, payloads: list[bytes]) -> None:
    """A run file laid out as the format says: header, then chunks that never cross a block."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        rest, first = payload, True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < 7:
                out += b"\0" * room
                room = BLOCK
            take = rest[: room - 7]
            rest = rest[len(take) :]
            kind = (1 if not rest else 2) if first else (4 if not rest else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + take), len(take), kind) + take
            first = False
            if not rest:
                break
    path.write_bytes(bytes(out))


def _history(key: str, value: str) -> bytes:
    record = wandb_internal_pb2.Record()
    item = record.history.item.add()
    item.key, item.value_json = key, value
    return record.SerializeToString()


def test_records_across_blocks_are_reassembled(tmp_path):
    big = "[" + ",".join(["0.123456789"] * 9000) + "]"  # ~108 KB: spans 4 blocks
    payloads = [_history(f"geo/key_{i}", "1.0") for i in range(500)] + [_history("geo/big", big)]
    payloads += [_history("geo/line_ratio_mean", "0.9")]
    path = tmp_path / "run-x.wandb"
    _write_log(path, payloads)
    assert path.stat().st_size > 3 * BLOCK
    assert read_record_payloads(str(path)) == payloads
    keys = history_keys(read_records(str(path)))
    assert {"geo/big", "geo/line_ratio_mean", "geo/key_0", "geo/key_499"} <= keys
    # a file cut inside its last record yields the complete records before it
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    assert read_record_payloads(str(path)) == payloads[:-1]


def test_corrupt_and_foreign_files_are_errors(tmp_path):
    path = tmp_path / "run-x.wandb"
    _write_log(path, [_history("a", "1")])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad CRC"):
        read_record_payloads(str(path))
    path.write_bytes(b"PK\x03\x04 not a run file")
    with pytest.raises(ValueError, match="not a W&B run file"):
        read_record_payloads(str(path))
