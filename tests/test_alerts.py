"""Alert, drift and dead-letter payloads."""

from __future__ import annotations

import numpy as np
from contract import check_outgoing

from monitor.stream.alerts import (
    DetectorIdentity,
    Outgoing,
    alert_payload,
    dead_letter_headers,
    source_fields,
)
from monitor.stream.drift import DriftWindow
from monitor.stream.events import (
    ALERT_TYPE,
    alert_id,
    ce_headers,
    drift_id,
    rfc3339,
    source_of,
)
from monitor.stream.records import cap_context

IDENT = DetectorIdentity("digits", "3", "kld", 0.5, "abcd", 0.25)


def test_alert_carries_identity_source_and_classes_and_nothing_that_says_nothing() -> None:
    body = check_outgoing(
        Outgoing(
            "alerts",
            alert_payload(
                record_id="r1",
                score=0.9,
                detector=IDENT,
                classifier_class=3,
                distilled_class=5,
                source=source_fields("in", 2, 41, 0, rfc3339(1.0)),
                scored_at=rfc3339(5.0),
                context={"user": "u"},
                model={"model_name": "m"},
            ),
            b"r1",
            ce_headers(
                event_type=ALERT_TYPE,
                event_id=alert_id("in", 2, 41, 0),
                source=source_of("g"),
                at=rfc3339(5.0),
                subject="r1",
            ),
            "alert",
        )
    )
    assert body["id"] == "r1"
    assert body["detector"]["manifest_hash"] == "abcd"
    assert body["detector"]["threshold"] == 0.25
    assert (body["classifier_class"], body["distilled_class"]) == (3, 5)
    assert body["source"] == {
        "topic": "in",
        "partition": 2,
        "offset": 41,
        "row": 0,
        "timestamp": "1970-01-01T00:00:01.000Z",
    }
    assert body["scored_at"] == "1970-01-01T00:00:05.000Z"
    assert body["context"] == {"user": "u"}
    assert "is_adversarial" not in body and "threshold" not in body


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    assert rfc3339(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
    assert rfc3339(1_700_000_000.9996) == "2023-11-14T22:13:21.000Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_event_ids_come_from_the_record_coordinates_and_sources_from_the_group() -> None:
    assert alert_id("in", 2, 41, 3) == "in/2/41/3"
    assert drift_id("in", 2, 41, 3) == "drift/in/2/41/3"
    assert source_of("team a/monitor") == "/distillation-monitor/team%20a%2Fmonitor"


def test_context_is_capped_whole_fields_and_says_how_many_were_dropped() -> None:
    ctx = {"a": "x" * 10, "b": "y" * 500, "c": 1}
    capped = cap_context(ctx, 64)
    assert capped == {"a": "x" * 10, "c": 1, "_dropped_fields": 1}
    assert cap_context(ctx, 0) == {}


def test_dead_letter_headers_keep_the_originals_and_say_why() -> None:
    headers = dict(
        dead_letter_headers(
            reason="shape",
            detail="expected 64 values",
            topic="in",
            partition=1,
            offset=7,
            timestamp_ms=None,
            original=[("ce_id", b"e1"), ("empty", None)],
        )
    )
    assert headers["ce_id"] == b"e1"
    assert headers["empty"] == b""
    assert headers["dmon.reason"] == b"shape"
    assert headers["dmon.source.offset"] == b"7"
    assert "dmon.source.timestamp_ms" not in headers


def test_drift_window_tests_each_full_window_once() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 2000)
    window = DriftWindow(reference, size=200, p_value=0.01)
    assert window.add(rng.normal(0, 1, 150)) == []
    same = window.add(rng.normal(0, 1, 50))
    assert len(same) == 1 and not same[0].drifted
    assert same[0].last == 49, "the 50th score of that batch completed the window"
    shifted = window.add(rng.normal(1.0, 1, 400))
    assert len(shifted) == 2 and all(r.drifted for r in shifted)
    assert [r.last for r in shifted] == [199, 399]
