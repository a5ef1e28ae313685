"""``--start-from``: where a new consumer group starts, against the real local broker.

Records logged before the worker's first start are scored with the default (earliest)
and skipped with latest; the librdkafka key it replaces is refused with its name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fixtures_kafka import produce_messages
from worker_harness import (
    committed_offsets,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    wait_until,
    worker_config,
)

from monitor.config import WorkerConfig, load_config
from monitor.errors import ConfigError

P = "distillation_monitor_"


def _rows(
    tiny_data: tuple[np.ndarray, np.ndarray], prefix: str, n: int
) -> list[tuple[bytes, bytes]]:
    x, _ = tiny_data
    return [(f"{prefix}-{i}".encode(), json_record(f"{prefix}-{i}", x[i])) for i in range(n)]


def _consumed(port: int) -> float:
    return metric_sum(scrape(port), P + "records_consumed_total")


def test_default_is_earliest_and_the_librdkafka_key_is_refused(saved_detector_dir: Path) -> None:
    config = load_config(environ={"DMON_DETECTOR": str(saved_detector_dir)})
    assert config.start_from == "earliest"
    assert config.consumer_conf()["auto.offset.reset"] == "earliest"
    latest = load_config(
        environ={"DMON_DETECTOR": str(saved_detector_dir), "DMON_START_FROM": "latest"}
    )
    assert latest.consumer_conf()["auto.offset.reset"] == "latest"
    with pytest.raises(ConfigError, match="--start-from"):
        load_config(
            environ={
                "DMON_DETECTOR": str(saved_detector_dir),
                "DMON_KAFKA_AUTO_OFFSET_RESET": "latest",
            }
        )
    with pytest.raises(ConfigError, match="not one of earliest, latest"):
        load_config(environ={"DMON_DETECTOR": str(saved_detector_dir), "DMON_START_FROM": "now"})


@pytest.mark.kafka
@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_a_new_group_starts_where_start_from_says(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    saved_detector_dir: Path,
    tiny_data: tuple[np.ndarray, np.ndarray],
    start_from: str,
) -> None:
    topic, alerts, dlq = make_topic(), make_topic(), make_topic()
    old = 40
    produce_messages(kafka_bootstrap, topic, _rows(tiny_data, "old", old))
    config: WorkerConfig = worker_config(
        kafka_bootstrap, saved_detector_dir, topic, alerts, dlq, unique_group, start_from=start_from
    )
    with running_worker(config) as worker:
        port = worker.metrics_port
        assert port is not None
        if start_from == "earliest":
            wait_until(lambda: _consumed(port) >= old, 60, "the old records")
            assert _consumed(port) == old
            return
        # latest: the position is taken when the partition is first fetched, which may be
        # after the worker joined, so new records are sent until the worker reads some.
        sent = 0
        for round_ in itertools.count():
            produce_messages(kafka_bootstrap, topic, _rows(tiny_data, f"new{round_}", 5))
            sent += 5
            if _wait_for_any(port):
                break
            assert round_ < 60, "the worker read none of the new records"
        end = old + sent
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, unique_group, topic, 1) == [end],
            60,
            "the worker to commit the end of the topic",
        )
        # Whatever position latest took, it was past every old record: the worker read
        # some new records and nothing before them (it reads in offset order, so any old
        # record read would have brought the rest of the topic after it).
        assert 0 < _consumed(port) <= sent


def _wait_for_any(port: int) -> bool:
    try:
        wait_until(lambda: _consumed(port) > 0, 1.0, "a record")
    except AssertionError:
        return False
    return True
