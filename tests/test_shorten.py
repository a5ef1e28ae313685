"""Outputs that always fit their topic: shortened dead letters and alerts, bounded keys."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message
from contract import check_outgoing

from monitor.stream.alerts import (
    DetectorIdentity,
    alert_payload,
    dead_letter_headers,
    source_fields,
)
from monitor.stream.events import ALERT_TYPE, alert_id, ce_headers, rfc3339, source_of
from monitor.stream.publisher import Outgoing, OutputLimits, Publisher
from monitor.stream.shorten import (
    MAX_HEADER_BYTES,
    MAX_KEY_BYTES,
    VALUE_PREFIX_BYTES,
    bounded_key,
    shortened,
    size_of,
)


class Producer:
    """Records what it is given; a delivery report carries no headers, like librdkafka's."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, Any, Any]] = []
        self.callbacks: list[Any] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, value, key, headers))
        self.callbacks.append((on_delivery, Message(topic=topic, value=value, key=key)))

    def poll(self, timeout: float) -> int:
        return 0


def dead_letter(value: bytes, key: bytes | None = b"k", original: Any = None) -> Outgoing:
    headers = dead_letter_headers(
        reason="invalid_json",
        detail="not JSON",
        topic="in",
        partition=3,
        offset=42,
        timestamp_ms=1700000000000,
        original=original,
    )
    return Outgoing("dead", value, key, headers, "dead_letter")


def test_a_dead_letter_too_large_for_its_topic_keeps_what_identifies_the_original() -> None:
    value = bytes(range(256)) * 8000  # 2 MB
    original = [("trace", b"t" * 100)] + [(f"h{i}", b"v" * 1000) for i in range(10)]
    big = dead_letter(value, key=b"K" * 10_000, original=original)

    short = shortened(big, 1_048_588)

    assert short.value == value[:VALUE_PREFIX_BYTES]
    assert short.key == b"K" * MAX_KEY_BYTES
    headers = dict(short.headers or [])
    assert headers["dmon.original.value_bytes"] == str(len(value)).encode()
    assert headers["dmon.original.value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["dmon.original.key_bytes"] == b"10000"
    assert headers["dmon.original.header_count"] == b"11"
    assert b"over the 1048588-byte limit" in headers["dmon.shortened"]
    # ours all there, once, and the original headers in order while they fit
    for name in ("reason", "error", "source.topic", "source.partition", "source.offset"):
        assert [n for n, _ in short.headers or []].count(f"dmon.{name}") == 1
    assert headers["dmon.source.offset"] == b"42"
    kept = [n for n, _ in short.headers or [] if not n.startswith("dmon.")]
    assert kept == ["trace", "h0", "h1", "h2"]
    assert sum(len(n) + len(v or b"") for n, v in short.headers or [] if n in kept) <= (
        MAX_HEADER_BYTES
    )
    assert size_of(short.value, short.key, short.headers) < 8 * 1024


def test_an_original_header_named_like_ours_stays_an_original_header() -> None:
    big = dead_letter(b"x" * 2_000_000, original=[("dmon.reason", b"from a replay")])
    headers = (shortened(big, 1_048_588).headers) or []
    reasons = [v for n, v in headers if n == "dmon.reason"]
    assert reasons == [b"from a replay", b"invalid_json"]


def test_a_shortened_alert_drops_its_context_says_why_and_keeps_its_contract() -> None:
    body = alert_payload(
        record_id="r1",
        score=3.0,
        detector=DetectorIdentity("d", "1", "kld", 1.0, "h" * 16, 0.1),
        classifier_class=1,
        distilled_class=2,
        source=source_fields("in", 0, 7, 0, None),
        scored_at=rfc3339(0),
        context={"note": "n" * 5000},
        model=None,
    )
    headers = ce_headers(
        event_type=ALERT_TYPE,
        event_id=alert_id("in", 0, 7, 0),
        source=source_of("g"),
        at=rfc3339(0),
        subject="r1",
    )
    short = shortened(Outgoing("alerts", body, b"r1", headers, "alert"), 2048)
    payload = check_outgoing(short)
    assert payload["id"] == "r1" and payload["score"] == 3.0
    assert "2048-byte limit" in payload["context"]["_shortened"]


def test_long_keys_become_their_sha256_and_short_ones_stay() -> None:
    long_key = b"k" * (MAX_KEY_BYTES + 1)
    assert bounded_key(long_key) == b"sha256:" + hashlib.sha256(long_key).hexdigest().encode()
    assert bounded_key(b"k" * MAX_KEY_BYTES) == b"k" * MAX_KEY_BYTES
    assert bounded_key(None) is None


def test_the_publisher_shortens_what_its_topic_cannot_take_and_counts_it() -> None:
    producer = Producer()
    counted: list[str] = []
    publisher = Publisher(
        producer,  # type: ignore[arg-type]
        OutputLimits({"dead": 100_000}),
        on_shortened=counted.append,
    )
    small, big = dead_letter(b"x" * 1000), dead_letter(b"y" * 200_000)
    publisher.produce(small)
    publisher.produce(big)
    assert producer.produced[0][1] == small.value
    assert producer.produced[1][1] == big.value[:VALUE_PREFIX_BYTES]
    assert counted == ["dead_letter"]


def test_a_broker_refusal_for_size_lowers_the_limit_so_the_retry_is_shortened() -> None:
    producer = Producer()
    publisher = Publisher(producer)  # type: ignore[arg-type]
    big = Outgoing("dead", b"z" * 500_000, b"k", None, "dead_letter")
    publisher.produce(big)
    on_delivery, report = producer.callbacks[0]
    on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "topic limit"), report)
    failed = publisher.flush(1.0)
    assert [f[0].value for f in failed] == [big.value]
    publisher.produce(failed[0][0])  # what a retry (or a replayed transaction) does
    assert producer.produced[-1][1] == big.value[:VALUE_PREFIX_BYTES]


def test_a_message_that_would_not_fit_even_shortened_is_left_whole_for_the_retry() -> None:
    """A topic limit of a few hundred bytes is a misconfiguration: the refusal holds the
    batch (and says so in the metrics) until the topic is fixed, and the alert is then
    delivered whole."""
    producer = Producer()
    counted: list[str] = []
    publisher = Publisher(
        producer,  # type: ignore[arg-type]
        OutputLimits({"alerts": 200}),
        on_shortened=counted.append,
    )
    alert = Outgoing("alerts", orjson.dumps({"id": "r", "context": {"a": 1}}), b"r", None, "alert")
    publisher.produce(alert)
    assert producer.produced == [("alerts", alert.value, b"r", None)]
    assert counted == []
