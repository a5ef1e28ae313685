"""Exactly-once mode against the real broker: transactions, aborts and fencing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from fault_scenarios import alert_ids, read_to_end
from fixtures_kafka import produce_messages
from worker_harness import (
    committed_offsets,
    joined,
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

pytestmark = pytest.mark.kafka

P = "distillation_monitor_"
BAD = [(b"bad-json", b"{not json"), (b"bad-empty", b"")]


@pytest.fixture(scope="module")
def traffic(saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Clean rows and far-off rows, with the ids the detector flags offline."""
    detector = load_detector(saved_detector_dir)
    x, _labels = tiny_data
    far = (np.random.default_rng(11).normal(0, 1, (60, x.shape[1])) * 6).astype(np.float32)
    instances = np.concatenate([x[:90], far])
    ids = [f"r-{i}" for i in range(len(instances))]
    scores = detector.score(instances)
    flagged = {rid for rid, s in zip(ids, scores, strict=True) if s > detector.threshold}
    assert len(flagged) >= 20
    return {"ids": ids, "instances": instances, "flagged": flagged}


def records(traffic: dict[str, Any], prefix: str = "") -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}{rid}".encode(), json_record(f"{prefix}{rid}", inst))
        for rid, inst in zip(traffic["ids"], traffic["instances"], strict=True)
    ]


def eos_config(bootstrap: str, detector: Path, topics: tuple[str, str, str], group: str, **kw: Any):  # type: ignore[no-untyped-def]
    inp, alerts, dlq = topics
    return worker_config(
        bootstrap,
        detector,
        inp,
        alerts,
        dlq,
        group,
        exactly_once=True,
        transactional_id=kw.pop("transactional_id", f"txn-{uuid.uuid4().hex[:8]}"),
        **kw,
    )


def test_read_committed_subscriber_sees_each_alert_and_dead_letter_exactly_once(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    topics = (make_topic(2), make_topic(1, "alerts"), make_topic(1, "dlq"))
    recs = records(traffic)
    recs[40:40] = BAD
    produce_messages(kafka_bootstrap, topics[0], recs)
    cfg = eos_config(kafka_bootstrap, saved_detector_dir, topics, unique_group, max_batch_size=16)
    with running_worker(cfg) as worker:
        wait_until(lambda: worker.summary.consumed >= len(recs), 90, "all records processed")
        metrics = scrape(worker.metrics_port or 0)
    assert sum(committed_offsets(kafka_bootstrap, unique_group, topics[0], 2)) == len(recs)
    seen = alert_ids(kafka_bootstrap, topics[1])
    assert set(seen) == traffic["flagged"]
    assert max(seen.values()) == 1
    dead = read_to_end(kafka_bootstrap, topics[2])
    assert sorted(m.key for m in dead) == sorted(k for k, _ in BAD)
    assert metric_sum(metrics, P + "transactions_total", outcome="committed") >= 2
    assert metric_sum(metrics, P + "transactions_total", outcome="aborted") == 0
    assert metric_sum(metrics, P + "alerts_published_total") == len(traffic["flagged"])


BIG_BAD = (b"bad-big", b"{not json" + b" " * 400)  # larger than the unwritable topic allows


@pytest.mark.parametrize("unwritable", ["alerts", "dead letters"])
def test_a_failed_delivery_aborts_the_transaction_and_the_batch_is_processed_again(
    kafka_bootstrap: str,
    make_topic: Any,
    kafka_admin: AdminClient,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
    unwritable: str,
) -> None:
    """A message the broker refuses aborts the batch's transaction; nothing of it is seen
    by read_committed subscribers, nothing is committed, and once the topic accepts the
    messages again the batch commits exactly once. With the dead-letter topic refusing,
    the producer also refuses the batch's later alerts: the worker must not crash."""
    small = {"max.message.bytes": "200"}  # every alert and the big dead letter are larger
    inp = make_topic(1)
    alerts = make_topic(1, "alerts", config=small if unwritable == "alerts" else None)
    dlq = make_topic(1, "dlq", config=small if unwritable == "dead letters" else None)
    # One batch: the dead letters go out first, then (after scoring) many alerts, by
    # which time the broker has refused the big dead letter (no linger).
    many = [r for copy in range(8) for r in records(traffic, f"c{copy}-")]
    recs = [BIG_BAD, *many[:300], *BAD, *many[300:]]
    produce_messages(kafka_bootstrap, inp, recs)
    flagged = {f"c{c}-{rid}" for c in range(8) for rid in traffic["flagged"]}
    cfg = eos_config(
        kafka_bootstrap,
        saved_detector_dir,
        (inp, alerts, dlq),
        unique_group,
        max_batch_size=2048,
        max_batch_wait_ms=1000,
        kafka={"linger.ms": "0"},
    )
    with running_worker(cfg) as worker:
        port = worker.metrics_port or 0
        wait_until(
            lambda: metric_sum(scrape(port), P + "transactions_total", outcome="aborted") >= 2,
            60,
            "transactions aborted",
        )
        assert committed_offsets(kafka_bootstrap, unique_group, inp, 1)[0] < 0
        # Whatever the aborted attempts wrote stays invisible to read_committed readers.
        assert read_to_end(kafka_bootstrap, alerts) == []
        assert read_to_end(kafka_bootstrap, dlq) == []
        if unwritable == "alerts":
            written = read_to_end(kafka_bootstrap, dlq, read_committed=False)
            assert len(written) >= 2 * 3, "each aborted attempt wrote its dead letters"
        topic = alerts if unwritable == "alerts" else dlq
        resource = ConfigResource("topic", topic, set_config={"max.message.bytes": "1000000"})
        for future in kafka_admin.alter_configs([resource]).values():
            future.result()
        wait_until(
            lambda: worker.summary.consumed >= len(recs), 90, "batch committed after recovery"
        )
        metrics = scrape(port)
    assert committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [len(recs)]
    seen = alert_ids(kafka_bootstrap, alerts)
    assert set(seen) == flagged and max(seen.values()) == 1
    dead = read_to_end(kafka_bootstrap, dlq)
    assert sorted(m.key for m in dead) == sorted(k for k, _ in [BIG_BAD, *BAD])
    # Counted once, when the batch finally committed, not once per attempt.
    assert metric_sum(metrics, P + "alerts_published_total") == len(flagged)
    assert metric_sum(metrics, P + "records_dead_lettered_total") == 3


def test_a_zombie_with_the_same_transactional_id_is_fenced_and_stops(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
) -> None:
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    txn = f"zombie-{uuid.uuid4().hex[:8]}"
    first = records(traffic, "a")
    produce_messages(kafka_bootstrap, inp, first)
    args = [
        "--bootstrap-servers", kafka_bootstrap, "--input-topic", inp, "--alert-topic", alerts,
        "--dead-letter-topic", dlq, "--group-id", unique_group, "--detector", str(saved_detector_dir),
        "--metrics-port", "0", "--exactly-once", "--transactional-id", txn,
        "--max-batch-size", "16", "--summary-interval-s", "0",
    ]  # fmt: skip
    zombie = start_worker_process(args)
    try:
        wait_until(
            lambda: (
                committed_offsets(kafka_bootstrap, unique_group, inp, 1)[0] == len(first)
                or zombie.poll() is not None
            ),
            90,
            "the first worker processed the first wave",
        )
        assert zombie.poll() is None
        cfg = eos_config(
            kafka_bootstrap,
            saved_detector_dir,
            (inp, alerts, dlq),
            unique_group,
            transactional_id=txn,
        )
        with running_worker(cfg) as successor:
            # The successor's init_transactions fenced the zombie; its next batch must fail.
            # (Wait until it has joined: records sent before that may still be committed
            # by the zombie, which would then have nothing left to fail on.)
            wait_until(lambda: joined(successor), 60, "the successor to join the group")
            second = records(traffic, "b")
            produce_messages(kafka_bootstrap, inp, second)
            wait_until(lambda: zombie.poll() is not None, 60, "the zombie to stop")
            wait_until(
                lambda: (
                    committed_offsets(kafka_bootstrap, unique_group, inp, 1)[0]
                    == len(first) + len(second)
                ),
                90,
                "the successor processed the second wave",
            )
            assert successor.summary.consumed >= 1
    finally:
        if zombie.poll() is None:
            zombie.kill()
    code, output = stop_process(zombie)
    assert code != 0, output[-3000:]
    assert "fenced" in output.lower(), output[-3000:]
    want = {f"a{r}" for r in traffic["flagged"]} | {f"b{r}" for r in traffic["flagged"]}
    seen = alert_ids(kafka_bootstrap, alerts)
    assert set(seen) == want and max(seen.values()) == 1
