"""Fault tests: crashes, a lost group member, unwritable outputs, poison and a broker restart.

Every test checks by id what a ``read_committed`` subscriber of the alert topic sees:
nothing missing, nothing unexpected, no duplicates in exactly-once mode, and in
at-least-once mode only the duplicates the crashed batches can explain (their count is
printed). The broker restart touches the shared broker, so it is short and runs last.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fault_scenarios
import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource
from fault_scenarios import (
    ALO,
    EOS,
    MODES,
    READY,
    FaultReport,
    P,
    Pace,
    Setup,
    alert_topic_outage,
    broker_restart,
    kill_and_restart,
    make_traffic,
    poison_flood,
    run_many,
    survivor_takes_over,
    tiny_instances,
)
from fixtures_kafka import produce_messages
from worker_harness import assigned_partitions, metric_sum, running_worker, scrape

from monitor.metrics.worker import WorkerMetrics
from monitor.stream.checkpoint import MAX_UNACKED_BATCHES
from monitor.stream.worker import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

BATCH = 16  # small batches: many commits, so kills land at varied points


def setup_for(
    bootstrap: str, make_topic: Any, group: str, detector: Path, mode: str, partitions: int
) -> Setup:
    return Setup(
        bootstrap=bootstrap,
        detector=detector,
        input_topic=make_topic(partitions),
        alert_topic=make_topic(partitions, "alerts"),
        dead_letter_topic=make_topic(1, "dlq"),
        group=group,
        partitions=partitions,
        mode=mode,
        batch_size=BATCH,
    )


def check_delivery(report: FaultReport, lost_partitions: bool = False) -> None:
    """Nothing lost; duplicates only in at-least-once mode, and only of records that were
    in flight (past the committed offset) when a worker died. When an outage made workers
    lose their partitions (``lost_partitions``), at-least-once duplicates of the batches
    in flight then are expected too, and only counted."""
    print(
        f"\n{report.scenario} [{report.mode}]: {report.faults} faults, {report.produced} "
        f"records, {report.expected_flagged} flagged, {report.delivered} alerts, "
        f"{len(report.missing)} missing, {report.duplicated} duplicated "
        f"({report.in_crash_windows} records were in flight at the crashes)"
    )
    assert report.missing == [], f"{len(report.missing)} flagged records never alerted"
    assert report.unexpected == []
    assert report.scored == report.produced
    if report.mode == EOS:
        assert report.duplicated == 0
    elif not lost_partitions:
        assert report.unexplained_duplicates == []


def test_sigkill_at_random_points_then_restart_loses_nothing(
    kafka_bootstrap: str,
    make_topic: Any,
    saved_detector_dir: Path,
    tmp_path: Path,
) -> None:
    """Both modes side by side (separate topics and groups), three kills each."""
    kills = 3
    pool = make_traffic(saved_detector_dir, tiny_instances(2000, seed=3))
    jobs = []
    for mode in MODES:
        group = f"kills-{mode}-{uuid.uuid4().hex[:8]}"
        setup = setup_for(kafka_bootstrap, make_topic, group, saved_detector_dir, mode, 2)
        jobs.append(
            functools.partial(
                kill_and_restart, setup, pool, kills, random.Random(mode), tmp_path / mode
            )
        )
    for report in run_many(jobs):
        check_delivery(report)


def test_survivor_takes_over_the_partitions_of_a_sigkilled_worker(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tmp_path: Path,
) -> None:
    setup = setup_for(kafka_bootstrap, make_topic, unique_group, saved_detector_dir, EOS, 4)
    pool = make_traffic(saved_detector_dir, tiny_instances(2000, seed=4))
    report = survivor_takes_over(setup, pool, random.Random(4), tmp_path)
    check_delivery(report)
    print(f"  {report.extra}")
    assert report.extra["taken_over"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_deleted_alert_topic_holds_the_commit_until_it_is_back(
    kafka_bootstrap: str,
    make_topic: Any,
    kafka_admin: AdminClient,
    unique_group: str,
    saved_detector_dir: Path,
    mode: str,
) -> None:
    setup = setup_for(kafka_bootstrap, make_topic, unique_group, saved_detector_dir, mode, 1)
    traffic = make_traffic(saved_detector_dir, tiny_instances(120, seed=5))
    report = alert_topic_outage(setup, traffic, kafka_admin)
    check_delivery(report)
    assert report.extra["held"] == 1, "offsets moved while alerts could not be delivered"
    assert report.extra["failures"] >= 1


@pytest.mark.parametrize("mode", MODES)
def test_poison_corpus_is_dead_lettered_with_reasons_and_every_good_neighbour_is_scored(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    mode: str,
) -> None:
    setup = setup_for(kafka_bootstrap, make_topic, unique_group, saved_detector_dir, mode, 2)
    report = poison_flood(setup)
    check_delivery(report)  # every good record scored, its alert delivered, none extra
    print(f"  {report.extra}")
    assert report.extra["dead_letters"] == report.faults, "each bad message dead-lettered once"
    assert report.extra["wrong_reasons"] == 0
    assert report.extra["without_error"] == 0, "every dead letter says why"
    assert report.extra["metric_scored"] == report.produced
    assert report.extra["metric_dead_lettered"] == report.faults


def test_a_backlog_is_worked_off_with_bounded_queues(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's prefetch queue, the open batch and the records awaiting acknowledgement
    stay within their configured bounds however large the backlog (a smaller version of
    the million-record backlog in bench/faults.py)."""
    n, batch, queue_kb, fetch_kb = 20_000, 64, 256, 64
    setup = setup_for(kafka_bootstrap, make_topic, unique_group, saved_detector_dir, ALO, 2)
    traffic = make_traffic(saved_detector_dir, tiny_instances(n, seed=7))
    n = len(traffic)  # (rows too close to the threshold to call were dropped)
    # Small record batches: a fetch returns at least one whole batch, whatever its size.
    produce_messages(
        kafka_bootstrap, setup.input_topic, traffic.records(), config={"batch.size": 16_384}
    )
    config = setup.config(
        max_batch_size=batch,
        stats_interval_ms=100,
        kafka={
            "queued.max.messages.kbytes": str(queue_kb),
            "max.partition.fetch.bytes": str(fetch_kb * 1024),
        },
    )
    worker = Worker(config, handle_signals=False)
    peaks = Counter[str]()
    on_stats = WorkerMetrics.update_from_stats

    def sample(metrics: WorkerMetrics, stats_json: str | bytes) -> None:  # librdkafka's view
        stats = orjson.loads(stats_json)
        # Each partition's fetch queue is forwarded to the one consumer queue, and every
        # partition reports that queue's size: take one, not the sum.
        queued = max(
            (
                part.get("fetchq_size", 0)
                for topic in stats.get("topics", {}).values()
                for part in topic.get("partitions", {}).values()
            ),
            default=0,
        )
        peaks["fetch_queue_bytes"] = max(peaks["fetch_queue_bytes"], queued)
        on_stats(metrics, stats_json)

    # (the only worker in this process: its consumer's stats callback is this method)
    monkeypatch.setattr(WorkerMetrics, "update_from_stats", sample)
    thread = threading.Thread(target=worker.run, kwargs={"max_records": n}, daemon=True)
    pace, since = Pace(), time.monotonic()
    thread.start()
    done, moved = 0, since
    while thread.is_alive():  # the worker's own queues
        now = time.monotonic()
        if worker.summary.consumed != done:  # as long as it takes, while it moves
            if pace.startup is None:
                pace.startup = now - since
            done, moved = worker.summary.consumed, now
        elif now - moved > pace.wait:
            break
        intake = getattr(worker, "intake", None)
        if intake is not None:
            peaks["open_batch"] = max(peaks["open_batch"], len(intake.batcher))
        publisher = getattr(worker, "publisher", None)
        if publisher is not None:
            peaks["unacknowledged"] = max(peaks["unacknowledged"], publisher.in_flight)
        time.sleep(0.001)
    assert not thread.is_alive(), (
        f"the backlog stalled at {done} of {n} records for {pace.wait:.0f}s {pace.note()}"
    )
    print(f"\nbacklog of {n}: peaks {dict(peaks)}")
    assert worker.summary.consumed == n and worker.summary.scored == n
    assert setup.committed() == n
    assert peaks["fetch_queue_bytes"] > 0, "statistics were sampled while records queued"
    # One fetch per partition may land on top of a nearly full queue.
    assert peaks["fetch_queue_bytes"] <= (queue_kb + setup.partitions * fetch_kb) * 1024
    assert peaks["open_batch"] <= batch
    assert peaks["unacknowledged"] <= MAX_UNACKED_BATCHES * batch


@pytest.mark.parametrize("mode", MODES)
def test_partitions_taken_away_and_given_back_while_stuck_are_processed(
    kafka_bootstrap: str,
    make_topic: Any,
    kafka_admin: AdminClient,
    unique_group: str,
    saved_detector_dir: Path,
    mode: str,
) -> None:
    """A stuck worker pauses its partitions (to stay in the group without taking records);
    librdkafka keeps that pause across a revocation and re-assignment, so partitions that
    a rebalance takes away and gives back meanwhile must be resumed, or they stall for
    good. A second member joins and leaves the group while alerts cannot be delivered."""
    setup = Setup(
        kafka_bootstrap,
        saved_detector_dir,
        make_topic(4),
        make_topic(1, "alerts", config={"max.message.bytes": "200"}),
        make_topic(1, "dlq"),
        unique_group,
        4,
        mode,
        BATCH,
    )
    traffic = make_traffic(saved_detector_dir, tiny_instances(200, seed=10))
    produce_messages(kafka_bootstrap, setup.input_topic, traffic.records())
    pace, since = Pace(), time.monotonic()
    with running_worker(setup.config(), start_timeout=pace.first_start) as worker:
        pace.started(worker, since, "the worker", metric=READY)
        port = worker.metrics_port or 0
        failures = "transactions_total" if mode == EOS else "alert_publish_failures_total"
        pace.until(lambda: metric_sum(scrape(port), P + failures) >= 2, "alert delivery failing")
        time.sleep(2.0)  # the worker has been stuck long enough to pause its partitions
        other = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": unique_group,
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "session.timeout.ms": 6000,
            }
        )
        other.subscribe([setup.input_topic])
        pace.until(lambda: (other.consume(1, 0.2), len(other.assignment()))[1] > 0, "a share")
        pace.until(lambda: len(assigned_partitions(worker)) < 4, "partitions taken from the worker")
        other.close()  # leaves the group: its partitions go back to the worker
        pace.until(lambda: len(assigned_partitions(worker)) == 4, "partitions given back")
        resource = ConfigResource(
            "topic", setup.alert_topic, set_config={"max.message.bytes": "1000000"}
        )
        for future in kafka_admin.alter_configs([resource]).values():
            future.result()
        pace.progress(setup.committed, len(traffic), "every partition processed")
    check_delivery(fault_scenarios.report(setup, "rebalance while stuck", 1, traffic))


# Keep this test last: it restarts the broker every other test shares.
def test_workers_ride_out_a_broker_restart_and_report_it(
    kafka_bootstrap: str,
    make_topic: Any,
    saved_detector_dir: Path,
    restart_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setups = [
        setup_for(
            kafka_bootstrap,
            make_topic,
            f"restart-{mode}-{uuid.uuid4().hex[:8]}",
            saved_detector_dir,
            mode,
            2,
        )
        for mode in MODES
    ]
    pool = make_traffic(saved_detector_dir, tiny_instances(2000, seed=8))
    caplog.set_level(logging.WARNING, logger="monitor")
    reports = broker_restart(setups, pool, restart_broker)
    for report in reports:
        check_delivery(report, lost_partitions=True)
        print(f"  {report.mode}: {report.extra}")
        assert report.extra["broker_disconnects"] + report.extra["broker_errors"] > 0
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("monitor"))
    assert "Kafka: " in logged or "consumer error" in logged, "the outage was not logged"
