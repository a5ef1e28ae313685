"""A processed batch's outgoing messages: alerts and dead letters (pure, no Kafka client).

The worker publishes what these return; payload layouts live in ``alerts``. A message
with several flagged rows is read once for all of them (``message_identity``), and keys
are bounded (``shorten.bounded_key``) so an alert never repeats an attacker-sized key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from confluent_kafka import Message

from monitor.stream.alerts import Outgoing, alert_payload, dead_letter_headers
from monitor.stream.records import DecodedBatch, MessageIdentity, RecordFormat, message_identity
from monitor.stream.scoring import BatchScores
from monitor.stream.shorten import bounded_key


def dead_letter(message: Message, reason: str, detail: str, topic: str) -> Outgoing:
    """The record unchanged (value, key, headers), with why and where in ``dmon.*``."""
    ts_type, ts = message.timestamp()
    try:
        original = message.headers()
    except Exception:  # unreadable and not replaced by guard_headers: never expected
        original = None
    headers = dead_letter_headers(
        reason=reason,
        detail=detail,
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp_ms=ts if ts_type else None,
        original=original,
    )
    return Outgoing(topic, message.value() or b"", message.key(), headers, "dead_letter")


def alerts(
    messages: Sequence[Message],
    decoded: DecodedBatch,
    scores: BatchScores,
    fmt: RecordFormat,
    topic: str,
    max_context_bytes: int,
) -> list[Outgoing]:
    """One alert per flagged row, in row order."""
    identities: dict[int, MessageIdentity] = {}
    out: list[Outgoing] = []
    for row in np.flatnonzero(scores.flagged).tolist():
        index = int(decoded.row_message[row])
        message = messages[index]
        known = identities.get(index)
        if known is None:
            known = identities[index] = message_identity(message, fmt, max_context_bytes)
        row_in_message = int(decoded.row_in_message[row])
        ident = known.row(row_in_message)
        payload = alert_payload(
            record_id=ident.id,
            score=float(scores.scores[row]),
            detector=scores.detector,
            classifier_class=int(scores.classifier_class[row]),
            distilled_class=int(scores.distilled_class[row]),
            source_topic=ident.topic,
            source_partition=ident.partition,
            source_offset=ident.offset,
            source_timestamp_ms=ident.timestamp_ms,
            row=row_in_message,
            context=ident.context,
            model=ident.model.as_dict() if ident.model is not None else None,
        )
        key = bounded_key(ident.key) if ident.key is not None else ident.id.encode()
        out.append(Outgoing(topic, payload, key, None, "alert"))
    return out
