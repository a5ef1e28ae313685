"""Alert, drift and dead-letter payloads."""

from __future__ import annotations

import numpy as np
import orjson

from monitor.stream.alerts import DetectorIdentity, alert_payload, dead_letter_headers
from monitor.stream.drift import DriftWindow
from monitor.stream.records import cap_context

IDENT = DetectorIdentity("digits", "3", "kld", 0.5, "abcd", 0.25)


def test_alert_carries_identity_source_and_classes() -> None:
    body = orjson.loads(
        alert_payload(
            record_id="r1",
            score=0.9,
            detector=IDENT,
            classifier_class=3,
            distilled_class=5,
            source_topic="in",
            source_partition=2,
            source_offset=41,
            source_timestamp_ms=1000,
            row=0,
            context={"user": "u"},
            model={"model_name": "m"},
            scored_at=5.0,
        )
    )
    assert body["id"] == "r1"
    assert body["threshold"] == 0.25
    assert body["detector"]["manifest_hash"] == "abcd"
    assert (body["classifier_class"], body["distilled_class"]) == (3, 5)
    assert body["source"] == {
        "topic": "in",
        "partition": 2,
        "offset": 41,
        "timestamp_ms": 1000,
        "row": 0,
    }
    assert body["context"] == {"user": "u"}


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
    shifted = window.add(rng.normal(1.0, 1, 400))
    assert len(shifted) == 2 and all(r.drifted for r in shifted)
