"""What the worker writes: alert, drift-event and dead-letter payloads (pure, no Kafka).

Alerts are JSON, one per flagged instance, so any subscriber can act on them without
our code; their layout is ``monitor/schemas/alert.v2.schema.json`` (drift events:
``drift.v2.schema.json``), and every field says something (no constant flags, no copies
of the detector's threshold outside ``detector``). Times are RFC 3339 strings
(``events.rfc3339``), as in the CloudEvents headers. Dead letters carry the original
bytes unchanged; why and where they came from travels in headers, so the original record
can be replayed as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import orjson

from monitor.stream.events import ALERT_SCHEMA, DRIFT_SCHEMA
from monitor.stream.headers import Headers, HeaderValue

DEAD_LETTER_PREFIX = "dmon."

#: Headers as the worker writes them: a list of pairs, in order.
HeaderList = list[tuple[str, HeaderValue]]


class Outgoing(NamedTuple):
    """One message to produce; ``kind`` is alert, dead_letter or drift (for metrics).

    A named tuple: one is made per alert, and a frozen dataclass cost three times as much.
    """

    topic: str
    value: bytes
    key: bytes | None
    headers: HeaderList | None
    kind: str


@dataclass(frozen=True)
class DetectorIdentity:
    """Which detector judged a record: copied into every alert and the info metric."""

    name: str
    version: str
    loss_type: str
    temperature: float
    manifest_hash: str
    threshold: float

    @cached_property
    def fields(self) -> dict[str, Any]:
        """``as_dict()`` made once and shared by every payload: never change it."""
        return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "loss_type": self.loss_type,
            "temperature": self.temperature,
            "manifest_hash": self.manifest_hash,
            "threshold": self.threshold,
        }


def alert_payload(
    *,
    record_id: str,
    score: float,
    detector: DetectorIdentity,
    classifier_class: int,
    distilled_class: int,
    source: dict[str, Any],
    scored_at: str,
    context: dict[str, Any],
    model: dict[str, str] | None,
) -> bytes:
    """``source`` is ``source_fields(...)``; ``scored_at`` an ``events.rfc3339`` time."""
    body: dict[str, Any] = {
        "schema": ALERT_SCHEMA,
        "id": record_id,
        "score": score,
        "detector": detector.fields,
        "classifier_class": classifier_class,
        "distilled_class": distilled_class,
        "source": source,
        "scored_at": scored_at,
        "context": context,
    }
    if model:
        body["model"] = model
    return orjson.dumps(body)


def source_fields(
    topic: str, partition: int, offset: int, row: int, timestamp: str | None
) -> dict[str, Any]:
    """Where a record is, and which of its rows: the ``source`` of alerts and drift events."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "row": row,
        "timestamp": timestamp,
    }


def drift_payload(
    *,
    detector: DetectorIdentity,
    source: dict[str, Any],
    p_value: float,
    statistic: float,
    window: int,
    reference_size: int,
    threshold_p_value: float,
    detected_at: str,
) -> bytes:
    """``source`` is the record whose score completed the window."""
    return orjson.dumps(
        {
            "schema": DRIFT_SCHEMA,
            "detector": detector.fields,
            "source": source,
            "window": window,
            "reference_size": reference_size,
            "statistic": statistic,
            "p_value": p_value,
            "p_value_threshold": threshold_p_value,
            "detected_at": detected_at,
        }
    )


def dead_letter_headers(
    *,
    reason: str,
    detail: str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    timestamp_ms: int | None,
    original: Headers | None,
) -> HeaderList:
    """The original headers, then ours under the ``dmon.`` prefix."""
    pairs = original.items() if isinstance(original, Mapping) else (original or [])
    headers: HeaderList = [(k, v if v is not None else b"") for k, v in pairs]
    headers += [
        (DEAD_LETTER_PREFIX + "reason", reason.encode()),
        (DEAD_LETTER_PREFIX + "error", detail.encode("utf-8", "replace")[:1024]),
        (DEAD_LETTER_PREFIX + "source.topic", (topic or "").encode()),
        (DEAD_LETTER_PREFIX + "source.partition", str(partition).encode()),
        (DEAD_LETTER_PREFIX + "source.offset", str(offset).encode()),
    ]
    if timestamp_ms is not None:
        headers.append((DEAD_LETTER_PREFIX + "source.timestamp_ms", str(timestamp_ms).encode()))
    return headers
