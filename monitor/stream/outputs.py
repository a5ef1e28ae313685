"""A processed batch's outgoing messages: alerts and dead letters (pure, no Kafka client).

The worker publishes what these return; payload layouts live in ``alerts``. Alerts are
made from what the decoder read of each message (``DecodedBatch.ids``, ``contexts``,
``model_labels``), so no message is parsed twice, and keys are bounded
(``shorten.bounded_key``) so an alert never repeats an attacker-sized key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from confluent_kafka import Message

from monitor.stream.alerts import Outgoing, alert_payload, dead_letter_headers
from monitor.stream.records import DecodedBatch
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
    messages: Sequence[Message], decoded: DecodedBatch, scores: BatchScores, topic: str
) -> list[Outgoing]:
    """One alert per flagged row, in row order, from what the decoder read of each
    message (id, context, model): nothing is parsed again."""
    flagged = np.flatnonzero(scores.flagged)
    if not flagged.size:
        return []
    per_message = np.bincount(decoded.row_message, minlength=len(messages))
    out: list[Outgoing] = []
    for row in flagged.tolist():
        index = int(decoded.row_message[row])
        message = messages[index]
        row_in_message = int(decoded.row_in_message[row])
        base = decoded.ids[index] if index < len(decoded.ids) else None
        if base is None:
            base = f"{message.topic()}/{message.partition()}/{message.offset()}"
        record_id = f"{base}#{row_in_message}" if per_message[index] > 1 else base
        labels = decoded.model_labels[index] if index < len(decoded.model_labels) else None
        ts_type, ts = message.timestamp()
        payload = alert_payload(
            record_id=record_id,
            score=float(scores.scores[row]),
            detector=scores.detector,
            classifier_class=int(scores.classifier_class[row]),
            distilled_class=int(scores.distilled_class[row]),
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            source_timestamp_ms=ts if ts_type else None,
            row=row_in_message,
            context=decoded.contexts.get(index, {}),
            model=labels.as_dict() if labels is not None else None,
        )
        key = message.key()
        out.append(
            Outgoing(topic, payload, bounded_key(key) if key else record_id.encode(), None, "alert")
        )
    return out
