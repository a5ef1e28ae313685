"""Harmful drift in the worker: KS windows against the manifest's reference scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fixtures_kafka import consume_messages, produce_messages
from worker_harness import (
    json_record,
    metric_sum,
    running_worker,
    scrape,
    wait_until,
    worker_config,
)

from monitor.detector.persistence import read_manifest

pytestmark = pytest.mark.kafka

P = "distillation_monitor_"


def test_a_window_of_far_off_records_publishes_one_drift_event_per_drifted_window(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tiny_data: tuple[np.ndarray, np.ndarray],
) -> None:
    inp, alerts, dlq, drift = (
        make_topic(1),
        make_topic(1, "alerts"),
        make_topic(1, "dlq"),
        make_topic(1, "drift"),
    )
    assert len(read_manifest(saved_detector_dir).reference_scores) >= 50
    x, _ = tiny_data
    clean = x[200:300]  # one window of clean rows
    far = (np.random.default_rng(3).normal(0, 1, (100, x.shape[1])) * 6).astype(np.float32)
    records = [(None, json_record(f"c{i}", row)) for i, row in enumerate(clean)]
    records += [(None, json_record(f"f{i}", row)) for i, row in enumerate(far)]
    produce_messages(kafka_bootstrap, inp, records)
    cfg = worker_config(
        kafka_bootstrap,
        saved_detector_dir,
        inp,
        alerts,
        dlq,
        unique_group,
        drift_window=100,
        drift_p_value=0.001,
        drift_topic=drift,
        max_batch_size=50,
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= 200, 60, "both windows processed")
        metrics = scrape(worker.metrics_port or 0)
        flagged = worker.summary.flagged
    events = consume_messages(kafka_bootstrap, drift, 1, timeout=30)
    later = consume_messages(kafka_bootstrap, drift, 2, timeout=3, strict=False)
    assert len(later) == 1, "only the far-off window drifts; the clean one does not"
    body = orjson.loads(events[0].value)  # its headers and schema checked on the way
    headers = dict(events[0].headers)
    assert headers["ce_type"] == b"distillation-monitor.drift.v2"
    assert body["p_value"] < 0.001 and body["window"] == 100
    # named after the record whose score completed the window: the last far-off one
    assert body["source"]["offset"] == 199 and body["source"]["topic"] == inp
    assert headers["ce_id"] == f"drift/{inp}/0/199/0".encode()
    assert events[0].key == inp.encode()
    on_alerts = consume_messages(kafka_bootstrap, alerts, flagged, timeout=30)
    assert flagged > 0, "the far-off rows are flagged too"
    assert {dict(m.headers)["ce_type"] for m in on_alerts} == {b"distillation-monitor.alert.v2"}
    assert metric_sum(metrics, P + "drift_events_total") == 1
    assert metric_sum(metrics, P + "drift_detected") == 1
    assert metric_sum(metrics, P + "drift_p_value") < 0.001
