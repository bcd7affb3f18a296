"""De-aggregation of KPL-aggregated Kinesis records, without a protobuf dependency.

An aggregated record is the magic prefix, a protobuf `AggregatedRecord`, and the MD5 of that
protobuf. The message has three fields (partition key table, explicit hash key table, records)
and each record three that matter here (partition key index, explicit hash key index, data), so a
small wire-format reader is enough. A record that does not check out (bad digest, truncated) is delivered as it is, as
the Kinesis Client Library does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16


@dataclass(frozen=True, slots=True)
class SubRecord:
    partition_key: str
    data: bytes
    explicit_hash_key: str | None = None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) for every field; varints as int, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            out.append((number, buf[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def deaggregate(data: bytes) -> list[SubRecord] | None:
    """Sub-records of a KPL-aggregated payload, or None if `data` is not one."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
        return None
    body, digest = data[len(MAGIC) : -_DIGEST], data[-_DIGEST:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        return None
    try:
        keys: list[str] = []
        hash_keys: list[str] = []
        records: list[SubRecord] = []
        raw_records: list[bytes] = []
        for number, value in _fields(body):
            if number == 1 and isinstance(value, bytes):
                keys.append(value.decode())
            elif number == 2 and isinstance(value, bytes):
                hash_keys.append(value.decode())
            elif number == 3 and isinstance(value, bytes):
                raw_records.append(value)
        for raw in raw_records:
            key_index, hash_index, payload = 0, None, b""
            for number, value in _fields(raw):
                if number == 1 and isinstance(value, int):
                    key_index = value
                elif number == 2 and isinstance(value, int):
                    hash_index = value
                elif number == 3 and isinstance(value, bytes):
                    payload = value
            hash_key = None if hash_index is None else hash_keys[hash_index]
            records.append(SubRecord(keys[key_index], payload, hash_key))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return records
