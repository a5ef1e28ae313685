"""A worker on the real broker reading v2-protobuf records: alerts and dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fixtures_kafka import consume_messages, produce_messages
from protobuf_corpus import request, response
from worker_harness import metric_sum, running_worker, scrape, wait_until, worker_config

from monitor import load_detector
from monitor.stream.protobuf_format import RESPONSE_HEADER

pytestmark = pytest.mark.kafka
P = "distillation_monitor_"


def test_worker_scores_protobuf_requests_and_dead_letters_the_bad_ones(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tiny_data: tuple[np.ndarray, np.ndarray],
) -> None:
    detector = load_detector(saved_detector_dir)
    x, _ = tiny_data
    far = (np.random.default_rng(3).normal(0, 1, (40, x.shape[1])) * 6).astype(np.float32)
    instances = np.concatenate([x[:60], far])
    scores = detector.score(instances)
    outputs = np.asarray(detector.model(instances))
    # Four rows per request; every other one typed, and half carry their response.
    records: list[Any] = []
    for start in range(0, len(instances), 4):
        rows = instances[start : start + 4]
        rid = f"req-{start}"
        value = request(rows, raw=start % 8 == 0, record_id=rid).SerializeToString()
        headers = []
        if start % 16 == 0:
            answer = response(outputs[start : start + 4], record_id=rid)
            headers.append((RESPONSE_HEADER, answer.SerializeToString()))
        records.append((rid.encode(), value, headers))
    bad = {
        b"bad-truncated": records[0][1][:-5],
        b"bad-length": request(instances[:1], shape=[1, x.shape[1] + 1]).SerializeToString(),
        b"bad-nan": request(np.full((1, x.shape[1]), np.nan)).SerializeToString(),
    }
    records[3:3] = [(k, v, []) for k, v in bad.items()]
    flagged = {
        f"req-{i - i % 4}#{i % 4}": float(s) for i, s in enumerate(scores) if s > detector.threshold
    }
    assert len(flagged) >= 10, "the test data must hold clear adversarials"

    inp, alerts, dlq = make_topic(2), make_topic(1, "alerts"), make_topic(1, "dlq")
    produce_messages(kafka_bootstrap, inp, records)
    cfg = worker_config(
        kafka_bootstrap,
        saved_detector_dir,
        inp,
        alerts,
        dlq,
        unique_group,
        record_format="v2-protobuf",
        use_record_output=True,
        max_batch_size=16,
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(records), 90, "all records processed")
        assert worker.metrics_port is not None
        metrics = scrape(worker.metrics_port)

    got = consume_messages(kafka_bootstrap, alerts, len(flagged), timeout=30)
    bodies = {orjson.loads(m.value)["id"]: orjson.loads(m.value) for m in got}
    assert set(bodies) == set(flagged)
    for rid, body in bodies.items():
        assert body["score"] == pytest.approx(flagged[rid], rel=1e-4, abs=1e-6)
        assert body["model"]["model_name"] == "digits"

    dead = consume_messages(kafka_bootstrap, dlq, len(bad), timeout=30)
    reasons = {m.key: dict(m.headers)["dmon.reason"] for m in dead}
    assert reasons == {
        b"bad-truncated": b"invalid_protobuf",
        b"bad-length": b"shape",
        b"bad-nan": b"non_finite",
    }
    assert all(m.value == bad[m.key] for m in dead), "dead letters carry the original bytes"
    assert metric_sum(metrics, P + "records_scored_total") == len(instances)
    assert metric_sum(metrics, P + "records_flagged_total") == len(flagged)
