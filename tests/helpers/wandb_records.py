"""Read the records of an offline W&B run file (``run-*.wandb``) for tests.

The file is W&B's datastore: a 7-byte header (``:W&B``, a 2-byte magic, a version byte), then a
LevelDB-style log of 32 KiB blocks. Each record is stored as one or more chunks, each with a 7-byte
header (CRC32, little-endian length, type: full, first, middle or last), and a chunk never
straddles a block; a block's tail shorter than a header is padding. So a key name can be cut in
two by a block boundary; reassembling the records first avoids that.

W&B's writer (a separate service process) may still be appending when ``run.finish()`` returns:
a test that read the file at once saw it cut short in about 1 run of 20. The run's last record
is its ``exit`` record, so :func:`wait_for_exit_record` polls until it is there.
"""

from __future__ import annotations

import struct
import time
import zlib

from wandb.proto import wandb_internal_pb2

_FILE_HEADER = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_record_payloads(path: str) -> list[bytes]:
    """The payload of every record in the file, in order (CRC-checked)."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {data[:4]!r})")
    payloads: list[bytes] = []
    pending: list[bytes] = []
    pos = _FILE_HEADER
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # padding at the block's end
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEADER])
        if length == 0 and kind == 0:  # zero fill: the rest of the block
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        if len(chunk) < length:  # a record still being written
            break
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad CRC in the chunk at byte {pos}")
        pos += _CHUNK_HEADER + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = [chunk]
        elif kind == _MIDDLE:
            pending.append(chunk)
        elif kind == _LAST:
            payloads.append(b"".join(pending + [chunk]))
            pending = []
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {pos}")
    return payloads


def read_records(path: str) -> list[wandb_internal_pb2.Record]:
    """Every record in the file, parsed."""
    records = []
    for payload in read_record_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wait_for_exit_record(path: str, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The file's records once its ``exit`` record has been written (polling every 0.1 s).

    Raises:
        TimeoutError: no ``exit`` record after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in records]
            raise TimeoutError(f"{path}: no exit record after {timeout} s; records: {kinds}")
        time.sleep(0.1)


def history_keys(records: list[wandb_internal_pb2.Record]) -> set[str]:
    """Every key logged to the run's history (``wandb.log``), nested keys joined with ``/``."""
    keys: set[str] = set()
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                keys.add(item.key or "/".join(item.nested_key))
    return keys


def history_rows(records: list[wandb_internal_pb2.Record]) -> list[dict[str, object]]:
    """Each ``history`` record as a dict of its keys (nested keys joined with ``/``) to their
    JSON-decoded values, ``_step`` included, in file order."""
    import json

    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
