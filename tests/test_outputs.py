"""Alerts built from what the decoder read agree with a thorough re-read of each record."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Message
from contract import check_outgoing

from monitor.stream.alerts import DetectorIdentity
from monitor.stream.drift import DriftResult
from monitor.stream.events import source_of
from monitor.stream.outputs import alerts, drift_events
from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat, record_identity
from monitor.stream.scoring import BatchScores

SPEC = InputSpec((4,), 3, max_context_bytes=256)
ROW = [0.25, 0.5, 0.75, 1.0]
CE = [("ce_id", b"evt-9"), ("ce_type", b"request"), ("ce_inferenceservicename", b"iris")]


def v2(rows: int, **extra: Any) -> bytes:
    tensor = {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": ROW * rows}
    return json.dumps({"inputs": [tensor], **extra}).encode()


BODIES: list[tuple[bytes, Any]] = [
    (json.dumps({"id": "plain", "instance": ROW}).encode(), None),
    (json.dumps({"instance": ROW}).encode(), None),
    (json.dumps({"id": 42, "instance": ROW, "tenant": "a", "note": [1, 2]}).encode(), None),
    (json.dumps({"id": "big", "instance": ROW, "blob": "x" * 1000, "small": 1}).encode(), None),
    (json.dumps({"instance": ROW, "model_name": "m", "model_version": "2"}).encode(), None),
    (json.dumps({"instance": ROW}).encode(), CE),
    (json.dumps({"id": "body-wins", "instance": ROW}).encode(), CE),
    (v2(1, id="req-1"), None),
    (v2(3, id="req-3", parameters={"k": "v"}), None),
    (v2(2), CE),
    (v2(2), None),
    (json.dumps({"instances": [ROW, ROW], "id": "v1"}).encode(), None),
    (json.dumps({"data": {"ndarray": [ROW]}, "meta": {"x": 1}}).encode(), None),
]


@pytest.mark.parametrize("fmt", [RecordFormat.AUTO])
def test_alerts_carry_the_same_identity_as_a_thorough_reading_of_each_record(
    fmt: RecordFormat,
) -> None:
    messages = [
        Message(topic="in", partition=1, offset=i, value=body, key=b"k%d" % i, headers=headers)
        for i, (body, headers) in enumerate(BODIES)
    ]
    decoded = RecordDecoder(SPEC, fmt).decode(messages)
    assert not decoded.dead
    rows = len(decoded.X)
    identity = DetectorIdentity("d", "1", "kld", 1.0, "h" * 16, 0.1)
    scores = BatchScores(
        np.ones(rows, np.float32), np.ones(rows, bool), np.zeros(rows), np.zeros(rows), identity
    )
    outs = alerts(messages, decoded, scores, "alerts", source_of("g"))
    made = [check_outgoing(out) for out in outs]
    assert len(made) == rows
    for row, (alert, out) in enumerate(zip(made, outs, strict=True)):
        headers = dict(out.headers or [])
        assert headers["ce_id"] == (
            f"in/1/{alert['source']['offset']}/{alert['source']['row']}".encode()
        )
        message = messages[int(decoded.row_message[row])]
        want = record_identity(message, fmt, int(decoded.row_in_message[row]), 256)
        assert alert["id"] == want.id
        assert alert["context"] == want.context
        assert alert.get("model") == (want.model.as_dict() if want.model else None)
        assert alert["source"]["offset"] == want.offset


def test_a_drift_event_names_the_record_that_completed_its_window() -> None:
    messages = [
        Message(topic="in", partition=0, offset=10 + i, value=body, key=None, timestamp=(1, 5000))
        for i, (body, _) in enumerate(BODIES[7:10])  # 1, 3 and 2 rows
    ]
    decoded = RecordDecoder(SPEC, RecordFormat.AUTO).decode(messages)
    identity = DetectorIdentity("d", "1", "kld", 1.0, "h" * 16, 0.1)
    results = [
        DriftResult(0.5, 0.1, False, 3, last=2),
        DriftResult(1e-6, 0.9, True, 3, last=4),  # row 4: the first row of offset 12
    ]
    outs = drift_events(
        results,
        messages,
        decoded,
        detector=identity,
        topic="drift",
        ce_source=source_of("g"),
        reference_size=100,
        p_value=0.01,
        now=0.0,
    )
    assert len(outs) == 1, "only a drifted window makes an event"
    body = check_outgoing(outs[0])
    assert body["source"] == {
        "topic": "in",
        "partition": 0,
        "offset": 12,
        "row": 0,
        "timestamp": "1970-01-01T00:00:05.000Z",
    }
    headers = dict(outs[0].headers or [])
    assert headers["ce_id"] == b"drift/in/0/12/0"
    assert headers["ce_subject"] == b"in" and outs[0].key == b"in" and outs[0].topic == "drift"
    assert (body["window"], body["p_value_threshold"], body["reference_size"]) == (3, 0.01, 100)
