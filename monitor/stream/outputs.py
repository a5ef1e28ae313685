"""A processed batch's outgoing messages: alerts, drift events and dead letters (pure, no
Kafka client).

The worker publishes what these return; payload layouts live in ``alerts``, CloudEvents
headers in ``events``. Alerts are made from what the decoder read of each message
(``DecodedBatch.ids``, ``contexts``, ``model_labels``), so no message is parsed twice,
and keys are bounded (``shorten.bounded_key``) so an alert never repeats an
attacker-sized key. Alerts and drift events carry CloudEvents headers whose ``ce_id``
comes from the input record's coordinates; dead letters keep the record's own headers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from confluent_kafka import Message

from monitor.stream import events
from monitor.stream.alerts import (
    DetectorIdentity,
    Outgoing,
    alert_payload,
    dead_letter_headers,
    drift_payload,
    source_fields,
)
from monitor.stream.drift import DriftResult
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
    messages: Sequence[Message],
    decoded: DecodedBatch,
    scores: BatchScores,
    topic: str,
    ce_source: str,
    now: float | None = None,
) -> list[Outgoing]:
    """One alert per flagged row, in row order, from what the decoder read of each
    message (id, context, model): nothing is parsed again. The batch was scored at
    ``now`` (default: the current time)."""
    flagged = np.flatnonzero(scores.flagged)
    if not flagged.size:
        return []
    scored_at = events.rfc3339(time.time() if now is None else now)
    per_message = np.bincount(decoded.row_message, minlength=len(messages))
    # Plain Python values for the flagged rows, converted once: a numpy scalar per field
    # and alert cost more than the payload.
    rows = decoded.row_message[flagged]
    columns = zip(
        rows.tolist(),
        decoded.row_in_message[flagged].tolist(),
        (per_message[rows] > 1).tolist(),
        scores.scores[flagged].tolist(),
        scores.classifier_class[flagged].tolist(),
        scores.distilled_class[flagged].tolist(),
        strict=True,
    )
    ids, labels_of, contexts = decoded.ids, decoded.model_labels, decoded.contexts
    detector = scores.detector
    out: list[Outgoing] = []
    for index, row_in_message, several, score, classifier_class, distilled_class in columns:
        message = messages[index]
        topic_in, partition, offset = _coordinates(message)
        base = ids[index] if index < len(ids) else None
        if base is None:
            base = f"{topic_in}/{partition}/{offset}"
        record_id = f"{base}#{row_in_message}" if several else base
        labels = labels_of[index] if index < len(labels_of) else None
        payload = alert_payload(
            record_id=record_id,
            score=score,
            detector=detector,
            classifier_class=classifier_class,
            distilled_class=distilled_class,
            source=source_fields(topic_in, partition, offset, row_in_message, _timestamp(message)),
            scored_at=scored_at,
            context=contexts.get(index, {}),
            model=labels.as_dict() if labels is not None else None,
        )
        headers = events.ce_headers(
            event_type=events.ALERT_TYPE,
            event_id=events.alert_id(topic_in, partition, offset, row_in_message),
            source=ce_source,
            at=scored_at,
            subject=record_id,
        )
        key = message.key()
        out.append(
            Outgoing(
                topic, payload, bounded_key(key) if key else record_id.encode(), headers, "alert"
            )
        )
    return out


def drift_events(
    results: Sequence[DriftResult],
    messages: Sequence[Message],
    decoded: DecodedBatch,
    *,
    detector: DetectorIdentity,
    topic: str,
    ce_source: str,
    reference_size: int,
    p_value: float,
    now: float | None = None,
) -> list[Outgoing]:
    """An event for each drifted window of the batch, named after the record whose score
    completed it (``DriftResult.last``, a row of ``decoded``); keyed by the input topic,
    so one input's drift events stay in order on one partition."""
    out: list[Outgoing] = []
    for result in results:
        if not result.drifted:
            continue
        detected_at = events.rfc3339(time.time() if now is None else now)
        index = int(decoded.row_message[result.last])
        row = int(decoded.row_in_message[result.last])
        message = messages[index]
        topic_in, partition, offset = _coordinates(message)
        payload = drift_payload(
            detector=detector,
            source=source_fields(topic_in, partition, offset, row, _timestamp(message)),
            p_value=result.p_value,
            statistic=result.statistic,
            window=result.window,
            reference_size=reference_size,
            threshold_p_value=p_value,
            detected_at=detected_at,
        )
        headers = events.ce_headers(
            event_type=events.DRIFT_TYPE,
            event_id=events.drift_id(topic_in, partition, offset, row),
            source=ce_source,
            at=detected_at,
            subject=topic_in,
        )
        out.append(Outgoing(topic, payload, topic_in.encode(), headers, "drift"))
    return out


def _coordinates(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (always set on one)."""
    return message.topic() or "", message.partition() or 0, message.offset() or 0


def _timestamp(message: Message) -> str | None:
    ts_type, ts = message.timestamp()
    return events.rfc3339_ms(ts) if ts_type else None
