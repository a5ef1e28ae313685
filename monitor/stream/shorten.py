"""Outgoing messages that always fit: bounded keys, and shortened copies of those too large.

Whoever writes to the input topic chooses a record's size, key and headers, and a dead
letter carries them on. A dead letter the producer or the dead-letter topic refuses
would hold back its batch's commit for ever (at-least-once retries it; exactly-once
aborts and replays it), so one record could stop the worker. Instead, a message larger
than its topic accepts is produced shortened: what identifies the original (its size
and sha256, where it came from, why it was dead-lettered) and bounded prefixes of it.

Pure: no Kafka client. Sizes are estimated the way Kafka counts a record (key, value,
header names and values), with ``RECORD_OVERHEAD`` bytes to spare for the framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import orjson

from monitor.stream.alerts import HeaderList, Outgoing

#: Longest key an output keeps as it is; a longer alert key becomes its sha256.
MAX_KEY_BYTES = 256
#: Bytes of the original value a shortened dead letter keeps.
VALUE_PREFIX_BYTES = 1024
#: Bytes of original headers (names and values) a shortened dead letter keeps.
MAX_HEADER_BYTES = 4096
#: Bytes a record needs in a produce request beyond key, value and headers (record and
#: batch framing are well under this).
RECORD_OVERHEAD = 512


PREFIX = "dmon."
SHORTENED = PREFIX + "shortened"
#: The headers a dead letter gets from us (``alerts.dead_letter_headers``), appended last.
OWN_HEADERS = frozenset(
    PREFIX + name
    for name in (
        "reason",
        "error",
        "source.topic",
        "source.partition",
        "source.offset",
        "source.timestamp_ms",
    )
)


def header_size(headers: Iterable[tuple[str, str | bytes | None]] | None) -> int:
    return sum([len(name) + len(value or b"") for name, value in headers or ()])


def size_of(value: bytes, key: bytes | None, headers: HeaderList | None) -> int:
    """Bytes Kafka counts for a record, framing included (generously)."""
    size = len(value) + RECORD_OVERHEAD
    if key is not None:
        size += len(key)
    if headers:
        size += header_size(headers)
    return size


def bounded_key(key: bytes | None) -> bytes | None:
    """``key``, or ``sha256:<hex>`` of it when longer than ``MAX_KEY_BYTES``: still one
    key per original key (so one partition per key), never an attacker-sized one."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def shortened(out: Outgoing, limit: int) -> Outgoing:
    """A copy of ``out`` that fits ``limit`` bytes: for a dead letter, a bounded prefix of
    the original with its size and sha256; for an alert, its context dropped."""
    why = (
        f"{size_of(out.value, out.key, out.headers)} bytes with key and headers, over the "
        f"{limit}-byte limit for {out.topic[:200]}"
    )
    if out.kind == "dead_letter":
        return _shortened_dead_letter(out, why)
    if out.kind == "alert":
        return _shortened_alert(out, why)
    return out  # drift events are small and made by us


def _shortened_dead_letter(out: Outgoing, why: str) -> Outgoing:
    original, own = _split_headers(out.headers or [])
    kept: list[tuple[str, str | bytes | None]] = []
    room = MAX_HEADER_BYTES
    for name, value in original:
        size = len(name) + len(value or b"")
        if size <= room:
            kept.append((name, value))
            room -= size
    key = out.key
    headers = [
        *kept,
        *own,
        (SHORTENED, why.encode()),
        (PREFIX + "original.value_bytes", str(len(out.value)).encode()),
        (PREFIX + "original.value_sha256", hashlib.sha256(out.value).hexdigest().encode()),
        (PREFIX + "original.key_bytes", str(len(key) if key is not None else 0).encode()),
        (PREFIX + "original.headers_bytes", str(header_size(original)).encode()),
        (PREFIX + "original.header_count", str(len(original)).encode()),
    ]
    return Outgoing(
        out.topic,
        out.value[:VALUE_PREFIX_BYTES],
        key[:MAX_KEY_BYTES] if key is not None else None,
        headers,
        out.kind,
    )


def _split_headers(
    headers: HeaderList,
) -> tuple[list[tuple[str, str | bytes | None]], list[tuple[str, str | bytes | None]]]:
    """(the original record's headers, ours): ours are the trailing ``dmon.*`` ones, each
    name once (an original header may bear one of our names too, say in a replay)."""
    pairs = list(headers)
    own: list[tuple[str, str | bytes | None]] = []
    seen: set[str] = set()
    while pairs and pairs[-1][0] in OWN_HEADERS and pairs[-1][0] not in seen:
        seen.add(pairs[-1][0])
        own.insert(0, pairs.pop())
    return pairs, own


def _shortened_alert(out: Outgoing, why: str) -> Outgoing:
    """Alert payloads are bounded already (id, context, labels); only a topic limit
    below a few KiB can refuse one. Its context goes, and the payload says so."""
    try:
        body = orjson.loads(out.value)
    except orjson.JSONDecodeError:
        return out
    if isinstance(body, dict):
        body["context"] = {"_shortened": why}
    return Outgoing(out.topic, orjson.dumps(body), bounded_key(out.key), out.headers, out.kind)
