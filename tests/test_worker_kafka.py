"""The streaming worker end to end against the real local broker."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from fixtures_kafka import consume_messages, produce_messages
from worker_harness import (
    assigned_partitions,
    committed_offsets,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    start_worker_process,
    stop_process,
    wait_until,
    worker_config,
)

from monitor import load_detector
from monitor.stream.worker import Worker

pytestmark = pytest.mark.kafka

P = "distillation_monitor_"


@pytest.fixture(scope="module")
def traffic(saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Clean rows, far-off rows that the detector flags, and the offline truth."""
    detector = load_detector(saved_detector_dir)
    x, _labels = tiny_data
    rng = np.random.default_rng(7)
    clean = x[:120]
    far = (rng.normal(0, 1, (80, x.shape[1])) * 6).astype(np.float32)
    instances = np.concatenate([clean, far])
    ids = [f"c-{i}" for i in range(len(clean))] + [f"a-{i}" for i in range(len(far))]
    scores = detector.score(instances)
    flagged = {i: float(s) for i, s in zip(ids, scores, strict=True) if s > detector.threshold}
    assert sum(1 for i in flagged if i.startswith("a-")) >= 10, (
        "test data must contain clear adversarials"
    )
    return {
        "ids": ids,
        "instances": instances,
        "scores": scores,
        "flagged": flagged,
        "detector": detector,
    }


BAD = [
    (b"bad-json", b"{not json"),
    (b"bad-shape", orjson.dumps({"id": "bad-shape", "instance": [1.0, 2.0]})),
    (b"bad-nan", b'{"id": "bad-nan", "instance": [NaN, 1, 1, 1, 1, 1, 1, 1]}'),
    (b"bad-empty", b""),
]


def decoding_children() -> list[int]:
    """This process's children running the decoding process."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:  # exited meanwhile
                continue
            if b"monitor.stream.decode_process" in cmdline:
                found.append(int(pid))
    return found


def topics(make_topic: Any, partitions: int = 1) -> tuple[str, str, str]:
    return make_topic(partitions), make_topic(1, "alerts"), make_topic(1, "dlq")


def test_worker_alerts_exactly_the_records_above_threshold_and_dead_letters_the_bad_ones(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic, partitions=2)
    records = [
        (rid.encode(), json_record(rid, inst, user="u1"))
        for rid, inst in zip(traffic["ids"], traffic["instances"], strict=True)
    ]
    records[50:50] = BAD
    produce_messages(kafka_bootstrap, inp, records)
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, max_batch_size=32
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(records), 90, "all records processed")
        assert worker.metrics_port is not None
        metrics = scrape(worker.metrics_port)
        ready = requests.get(f"http://127.0.0.1:{worker.metrics_port}/readyz", timeout=5)
        assert ready.status_code == 200
        assert len(decoding_children()) == 2, "records are decoded in two child processes"
    assert sum(committed_offsets(kafka_bootstrap, unique_group, inp, 2)) == len(records)
    assert not decoding_children(), "a stopped worker leaves no decoding process behind"
    assert gc.get_freeze_count() == 0, "a stopped worker leaves nothing frozen (it can be freed)"

    got = consume_messages(kafka_bootstrap, alerts, len(traffic["flagged"]), timeout=30)
    extra = consume_messages(kafka_bootstrap, alerts, 1, timeout=2, strict=False, group=None)
    bodies = {orjson.loads(m.value)["id"]: orjson.loads(m.value) for m in got}
    assert set(bodies) == set(traffic["flagged"])
    assert len(got) == len(traffic["flagged"]) and len(extra) <= 1
    for rid, body in bodies.items():
        assert body["score"] == pytest.approx(traffic["flagged"][rid], rel=1e-4, abs=1e-6)
        assert body["detector"]["threshold"] == pytest.approx(traffic["detector"].threshold)
        assert body["context"] == {"user": "u1"}
        assert body["source"]["topic"] == inp
    assert {m.key for m in got} == {rid.encode() for rid in traffic["flagged"]}

    dead = consume_messages(kafka_bootstrap, dlq, len(BAD), timeout=30)
    assert sorted(m.key for m in dead) == sorted(k for k, _ in BAD)
    for m in dead:
        headers = dict(m.headers or [])
        assert headers["dmon.source.topic"] == inp.encode()
        assert m.value == dict(BAD)[m.key], "dead letters carry the original bytes unchanged"
        assert headers["dmon.reason"]

    assert metric_sum(metrics, P + "records_consumed_total") == len(records)
    assert metric_sum(metrics, P + "records_scored_total") == len(traffic["ids"])
    assert metric_sum(metrics, P + "records_flagged_total") == len(traffic["flagged"])
    assert metric_sum(metrics, P + "records_dead_lettered_total") == len(BAD)
    assert metric_sum(metrics, P + "alerts_published_total") == len(traffic["flagged"])


def test_batches_close_at_max_size_and_a_trickle_closes_on_time(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic)
    n = 100
    produce_messages(
        kafka_bootstrap,
        inp,
        [(None, json_record(f"r{i}", traffic["instances"][i])) for i in range(n)],
    )
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, max_batch_size=16
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= n, 60, "backlog processed")
        backlog_batches = worker.summary.batches
        # Three records never fill a batch of 16: only the age rule can close it.
        produce_messages(
            kafka_bootstrap,
            inp,
            [(None, json_record(f"t{i}", traffic["instances"][i])) for i in range(3)],
        )
        wait_until(lambda: worker.summary.consumed >= n + 3, 30, "trickle processed")
        metrics = scrape(worker.metrics_port or 0)
    assert backlog_batches >= n // 16
    assert metric_sum(metrics, P + "batch_size_bucket", le="16.0") == metric_sum(
        metrics, P + "batch_size_count"
    )
    assert committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [n + 3]


def test_batches_of_large_records_close_at_max_batch_bytes(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic)
    n = 100
    records = [json_record(f"r{i:03d}", traffic["instances"][i]) for i in range(n)]
    produce_messages(kafka_bootstrap, inp, [(None, r) for r in records])
    cfg = worker_config(
        kafka_bootstrap,
        saved_detector_dir,
        inp,
        alerts,
        dlq,
        unique_group,
        max_batch_size=1000,
        max_batch_bytes=10 * max(map(len, records)),  # at most 10 records a batch
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= n, 60, "backlog processed")
        metrics = scrape(worker.metrics_port or 0)
    assert worker.summary.batches >= n // 10
    assert metric_sum(metrics, P + "batch_size_bucket", le="16.0") == metric_sum(
        metrics, P + "batch_size_count"
    )
    assert committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [n]


def test_logged_classifier_output_gives_the_same_scores_as_recomputation(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic)
    detector = traffic["detector"]
    outputs = np.asarray(detector.model(traffic["instances"]))
    produce_messages(
        kafka_bootstrap,
        inp,
        [
            (None, orjson.dumps({"id": rid, "instance": inst.tolist(), "output": out.tolist()}))
            for rid, inst, out in zip(traffic["ids"], traffic["instances"], outputs, strict=True)
        ],
    )
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, use_record_output=True
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(traffic["ids"]), 60, "records processed")
    got = consume_messages(kafka_bootstrap, alerts, len(traffic["flagged"]), timeout=30)
    scores = {orjson.loads(m.value)["id"]: orjson.loads(m.value)["score"] for m in got}
    assert set(scores) == set(traffic["flagged"])
    for rid, score in scores.items():
        assert score == pytest.approx(traffic["flagged"][rid], rel=1e-4, abs=1e-6)


def test_v2_requests_and_cloudevents_headers_are_scored_and_responses_only_counted(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic)
    flagged_rows = [i for i, rid in enumerate(traffic["ids"]) if rid in traffic["flagged"]]
    far = traffic["instances"][flagged_rows[-2:]]  # two rows the detector flags
    v2 = {
        "id": "req-1",
        "inputs": [
            {
                "name": "x",
                "shape": [2, far.shape[1]],
                "datatype": "FP32",
                "data": far.ravel().tolist(),
            }
        ],
    }
    ce_headers = [
        ("ce_id", b"evt-9"),
        ("ce_type", b"org.kubeflow.serving.inference.request"),
        ("ce_source", b"http://m"),
        ("ce_specversion", b"1.0"),
        ("ce_inferenceservicename", b"digits"),
        ("ce_namespace", b"prod"),
    ]
    response_headers = [
        ("ce_id", b"evt-9"),
        ("ce_type", b"org.kubeflow.serving.inference.response"),
        ("ce_specversion", b"1.0"),
    ]
    response = {
        "id": "req-1",
        "outputs": [{"name": "p", "shape": [1, 3], "datatype": "FP32", "data": [1, 0, 0]}],
    }
    produce_messages(
        kafka_bootstrap,
        inp,
        [
            (None, orjson.dumps(v2)),
            (None, orjson.dumps({"instances": [far[0].tolist()]}), ce_headers),
            (None, orjson.dumps(response), response_headers),
        ],
    )
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, record_format="auto"
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= 3, 60, "records processed")
        metrics = scrape(worker.metrics_port or 0)
    got = [orjson.loads(m.value) for m in consume_messages(kafka_bootstrap, alerts, 3, timeout=30)]
    assert len([b for b in got if b["id"].startswith("req-1")]) == 2
    ce = [b for b in got if b["id"] == "evt-9"]
    assert len(ce) == 1
    assert ce[0]["model"]["model_name"] == "digits"
    assert ce[0]["model"]["namespace"] == "prod"
    assert metric_sum(metrics, P + "records_ignored_total") == 1
    assert (
        metric_sum(metrics, P + "records_scored_total", model_name="digits", namespace="prod") == 1
    )


def test_unwritable_alert_topic_holds_the_commit_until_alerts_are_delivered(
    kafka_bootstrap: str,
    make_topic: Any,
    kafka_admin: AdminClient,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp = make_topic(1)
    dlq = make_topic(1, "dlq")
    alerts = make_topic(1, "alerts", config={"max.message.bytes": "200"})  # every alert is larger
    ids = [rid for rid in traffic["ids"] if rid in traffic["flagged"]][:10]
    index = {rid: i for i, rid in enumerate(traffic["ids"])}
    produce_messages(
        kafka_bootstrap, inp, [(None, json_record(r, traffic["instances"][index[r]])) for r in ids]
    )
    cfg = worker_config(kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group)
    with running_worker(cfg) as worker:
        wait_until(
            lambda: (
                metric_sum(scrape(worker.metrics_port or 0), P + "alert_publish_failures_total")
                >= 2
            ),
            60,
            "alert delivery failing",
        )
        assert committed_offsets(kafka_bootstrap, unique_group, inp, 1)[0] < 0, (
            "nothing may be committed yet"
        )
        resource = ConfigResource("topic", alerts, set_config={"max.message.bytes": "1000000"})
        for future in kafka_admin.alter_configs([resource]).values():
            future.result()
        wait_until(
            lambda: worker.summary.consumed >= len(ids), 60, "batch committed after recovery"
        )
    assert committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [len(ids)]
    got = consume_messages(kafka_bootstrap, alerts, len(ids), timeout=30)
    assert {orjson.loads(m.value)["id"] for m in got} == set(ids)


class FailsFatallyAfter:
    """A real producer that fails fatally after ``n`` messages, as an idempotent producer
    does when librdkafka cannot repair a sequence gap: it reports the error through
    ``error_cb`` and refuses every later message."""

    def __init__(self, inner: Producer, n: int, error_cb: Any) -> None:
        self.inner, self.n, self.error_cb = inner, n, error_cb
        self.produced = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if self.produced >= self.n:
            if self.produced == self.n:
                self.produced += 1
                self.error_cb(FATAL)
            raise KafkaException(FATAL)
        self.produced += 1
        self.inner.produce(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


FATAL = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap", fatal=True)


def test_a_producer_that_fails_fatally_is_replaced_and_no_alert_is_lost(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At-least-once: the worker swaps in a new producer and processes again the batches
    not committed, instead of stopping; alerts may repeat, none may be missing."""
    inp, alerts, dlq = topics(make_topic, partitions=2)
    records = [
        (rid.encode(), json_record(rid, inst))
        for rid, inst in zip(traffic["ids"], traffic["instances"], strict=True)
    ]
    produce_messages(kafka_bootstrap, inp, records)
    made: list[Producer] = []
    real_new_producer = Worker._new_producer

    def new_producer(worker: Worker) -> Any:
        made.append(real_new_producer(worker))
        if len(made) == 1:
            return FailsFatallyAfter(made[0], 5, worker._on_producer_error)
        return made[-1]

    monkeypatch.setattr(Worker, "_new_producer", new_producer)
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, max_batch_size=16
    )
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(records), 90, "all records processed")
        assert len(made) == 2, "one new producer replaced the broken one"
        assert worker.summary.rewound_batches >= 1, "the batches not committed came back"
        metrics = scrape(worker.metrics_port or 0)
    assert sum(committed_offsets(kafka_bootstrap, unique_group, inp, 2)) == len(records)
    assert metric_sum(metrics, P + "broker_errors_total", code="OUT_OF_ORDER_SEQUENCE_NUMBER") == 1
    got = consume_messages(
        kafka_bootstrap, alerts, len(traffic["flagged"]) + 50, timeout=10, strict=False
    )
    ids = [orjson.loads(m.value)["id"] for m in got]
    assert set(ids) == set(traffic["flagged"]), "every flagged record has its alert"
    assert len(ids) - len(set(ids)) <= 5, "only alerts of the batches in flight repeat"


def test_sigterm_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic)
    records = [
        (rid.encode(), json_record(rid, inst))
        for rid, inst in zip(traffic["ids"], traffic["instances"], strict=True)
    ] * 5
    produce_messages(kafka_bootstrap, inp, records)
    args = [
        "--bootstrap-servers", kafka_bootstrap, "--input-topic", inp, "--alert-topic", alerts,
        "--dead-letter-topic", dlq, "--group-id", unique_group, "--detector", str(saved_detector_dir),
        "--metrics-port", "0", "--max-batch-size", "8",
    ]  # fmt: skip
    proc = start_worker_process(args)
    wait_until(
        lambda: (
            sum(max(o, 0) for o in committed_offsets(kafka_bootstrap, unique_group, inp, 1)) > 0
            or proc.poll() is not None
        ),
        90,
        "first commit",
    )
    code, output = stop_process(proc)
    assert code == 0, output[-3000:]
    assert "SIGTERM received" in output
    first = committed_offsets(kafka_bootstrap, unique_group, inp, 1)[0]
    assert 0 < first <= len(records)
    cfg = worker_config(kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group)
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(records) - first, 90, "rest processed")
    assert committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [len(records)]
    want = 5 * len(traffic["flagged"])
    got = consume_messages(kafka_bootstrap, alerts, want, timeout=30, strict=False)
    assert len(got) >= want
    assert {orjson.loads(m.value)["id"] for m in got} == set(traffic["flagged"])


def test_two_workers_split_four_partitions_and_the_survivor_takes_over(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = topics(make_topic, partitions=4)
    first = [
        (f"k{i}".encode(), json_record(f"x{i}", traffic["instances"][i % 200])) for i in range(400)
    ]
    produce_messages(kafka_bootstrap, inp, first)
    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, max_batch_size=16
    )
    with running_worker(cfg) as a, running_worker(cfg) as b:
        wait_until(lambda: a.summary.consumed + b.summary.consumed >= 400, 90, "first wave")
        wait_until(
            lambda: len(assigned_partitions(a)) == 2 and len(assigned_partitions(b)) == 2,
            60,
            "partitions split 2/2",
        )
        scored_first = a.summary.scored + b.summary.scored
        assert scored_first == 400, "each record scored exactly once without crashes"
        a.request_stop()
        wait_until(lambda: len(assigned_partitions(b)) == 4, 60, "survivor owns all partitions")
        second = [
            (f"k{i}".encode(), json_record(f"y{i}", traffic["instances"][i % 200]))
            for i in range(400)
        ]
        produce_messages(kafka_bootstrap, inp, second)
        wait_until(lambda: a.summary.consumed + b.summary.consumed >= 800, 90, "second wave")
    assert sum(committed_offsets(kafka_bootstrap, unique_group, inp, 4)) == 800
    assert a.summary.scored + b.summary.scored == 800


def test_reload_keeps_the_old_detector_when_the_new_one_is_invalid(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
    tmp_path: Path,
) -> None:
    inp, alerts, dlq = topics(make_topic)
    det = tmp_path / "det"
    shutil.copytree(saved_detector_dir, det)
    cfg = worker_config(kafka_bootstrap, det, inp, alerts, dlq, unique_group)
    with running_worker(cfg) as worker:
        port = worker.metrics_port or 0
        (det / "manifest.json").write_text("{broken")
        worker.request_reload()
        wait_until(
            lambda: metric_sum(scrape(port), P + "detector_reload_failures_total") == 1,
            30,
            "failed reload",
        )
        produce_messages(
            kafka_bootstrap, inp, [(None, json_record("after", traffic["instances"][-1]))]
        )
        wait_until(lambda: worker.summary.consumed >= 1, 30, "still scoring")
        shutil.rmtree(det)
        shutil.copytree(saved_detector_dir, det)
        worker.request_reload()
        wait_until(
            lambda: metric_sum(scrape(port), P + "detector_reloads_total") == 1, 60, "good reload"
        )
    got = consume_messages(kafka_bootstrap, alerts, 1, timeout=30)
    assert orjson.loads(got[0].value)["id"] == "after"
