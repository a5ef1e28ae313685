"""The worker's metric set: what each call exports, bucket choice, bounds, lag from statistics."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from fixtures_kafka import produce_messages
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_samples import (
    DEAD_LETTER_REASONS,
    consumer_stats,
    exposition,
    populated_metrics,
    producer_stats,
)
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import PREFIX, VectorHistogram, WorkerMetrics, default_score_buckets
from monitor.metrics.window import FlagWindow

P = PREFIX
UNKNOWN3 = {"model_name": "unknown", "model_version": "unknown", "namespace": "unknown"}


def make(**kwargs: object) -> WorkerMetrics:
    args: dict = {"input_topic": "in", "detector_name": "det", "threshold": 0.1}
    args.update(kwargs)
    return WorkerMetrics(CollectorRegistry(), **args)


def value(m: WorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


# -- buckets -----------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0123456, 1.0, 3.7e-5, 250.0])
def test_default_score_buckets_span_two_decades_each_side_and_contain_the_threshold(
    threshold: float,
) -> None:
    b = default_score_buckets(threshold)
    assert threshold in b
    assert all(x < y for x, y in itertools.pairwise(b))
    assert b[0] == pytest.approx(threshold / 100, rel=0.01)
    assert b[-1] == pytest.approx(threshold * 100, rel=0.01)
    near = [x for x in b if 0.8 * threshold <= x <= 1.25 * threshold]
    assert len(near) >= 7  # dense where flagging decisions are made
    # nothing crowds the threshold after rounding
    assert all(x == threshold or abs(x - threshold) > 0.02 * threshold for x in b)


@pytest.mark.parametrize("threshold", [0.0, -1.0, math.nan, math.inf])
def test_default_score_buckets_fall_back_when_the_threshold_cannot_anchor_them(
    threshold: float,
) -> None:
    b = default_score_buckets(threshold)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(100.0)


def test_threshold_bucket_counts_exactly_the_records_not_flagged() -> None:
    m = make(threshold=0.1)
    scores = np.array([0.05, 0.1, 0.1000001, 0.2, 0.0999, 7.0])
    m.records_scored(scores, scores > 0.1)
    le = {**UNKNOWN3, "le": "0.1"}
    assert value(m, f"{P}instance_score_bucket", le) == 3
    assert value(m, f"{P}records_flagged_total", UNKNOWN3) == 3


# -- the vectorised histogram ------------------------------------------------------------


def _client_histogram(bounds: tuple[float, ...], values: np.ndarray) -> dict[str, float]:
    reg = CollectorRegistry()
    h = Histogram("h", "reference", buckets=bounds, registry=reg)
    for v in values:
        h.observe(float(v))
    return _buckets(reg, "h")


def _buckets(reg: CollectorRegistry, name: str, **labels: str) -> dict[str, float]:
    out = {}
    for fam in reg.collect():
        for s in fam.samples:
            if s.name in (f"{name}_bucket", f"{name}_count", f"{name}_sum") and all(
                s.labels.get(k) == v for k, v in labels.items()
            ):
                out[s.name + s.labels.get("le", "")] = s.value
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 2.0]),  # exactly on bounds
            st.floats(-1.0, 5.0, allow_nan=False),
        ),
        max_size=200,
    )
)
def test_vector_histogram_matches_prometheus_client_histogram(values: list[float]) -> None:
    bounds = (0.01, 0.1, 0.5, 1.0, 2.0)
    reg = CollectorRegistry()
    h = VectorHistogram("h", "vectorised", bounds)
    reg.register(h)
    arr = np.asarray(values, dtype=np.float64)
    h.observe(arr)
    got, want = _buckets(reg, "h"), _client_histogram(bounds, arr)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_grouped_observation_equals_one_observation_per_group() -> None:
    rng = np.random.default_rng(1)
    values = rng.exponential(1.0, 1000)
    codes = rng.integers(0, 3, 1000)
    keys = [("a",), ("b",), ("c",)]
    grouped, single = (
        VectorHistogram("g", "d", (0.5, 1, 2), ["k"]),
        VectorHistogram("g", "d", (0.5, 1, 2), ["k"]),
    )
    grouped.observe_grouped(values, codes, keys)
    for g, key in enumerate(keys):
        single.observe(values[codes == g], key)
    a, b = grouped.snapshot(), single.snapshot()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        assert a[key][1] == pytest.approx(b[key][1])


def test_non_finite_scores_are_counted_but_kept_out_of_the_sum() -> None:
    h = VectorHistogram("h", "d", (1.0, 2.0))
    h.observe(np.array([0.5, np.nan, np.inf, -np.inf, 1.5]))
    (cumulative, total) = h.snapshot()[()]
    assert cumulative.tolist() == [2, 3, 5]  # -inf in the first bucket; nan and +inf in +Inf
    assert total == pytest.approx(2.0)


def test_histogram_rejects_unsorted_or_infinite_bounds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        VectorHistogram("h", "d", (1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        VectorHistogram("h", "d", (1.0, math.nan))


# -- records -----------------------------------------------------------------------------


def test_scored_and_flagged_counters_follow_each_rows_model_labels() -> None:
    m = make(threshold=0.5)
    scores = np.array([0.1, 0.9, 0.7, 0.2, 0.6])
    labels = [
        ("a", "1", "ns"),
        ("a", "1", "ns"),
        ("b", "2", "ns"),
        ("b", "2", "ns"),
        ("a", "1", "ns"),
    ]
    m.records_scored(scores, scores > 0.5, labels)
    a = {"model_name": "a", "model_version": "1", "namespace": "ns"}
    b = {"model_name": "b", "model_version": "2", "namespace": "ns"}
    assert value(m, f"{P}records_scored_total", a) == 3
    assert value(m, f"{P}records_flagged_total", a) == 2
    assert value(m, f"{P}records_scored_total", b) == 2
    assert value(m, f"{P}records_flagged_total", b) == 1
    assert value(m, f"{P}instance_score_count", a) == 3
    assert value(m, f"{P}instance_score_sum", b) == pytest.approx(0.9)


def test_records_without_model_metadata_count_as_unknown() -> None:
    m = make()
    m.records_scored(np.array([0.0, 1.0]), np.array([False, True]))
    assert value(m, f"{P}records_scored_total", UNKNOWN3) == 2
    assert value(m, f"{P}records_flagged_total", UNKNOWN3) == 1


def test_empty_label_values_become_unknown_and_long_ones_are_truncated() -> None:
    m = make()
    m.records_scored(np.array([0.0]), np.array([False]), [("", "x" * 500, "ns")])
    labels = {"model_name": "unknown", "model_version": "x" * 100, "namespace": "ns"}
    assert value(m, f"{P}records_scored_total", labels) == 1


def test_model_label_sets_beyond_the_limit_collapse_to_other() -> None:
    m = make(max_label_values=2)
    labels = [("m1", "1", "n"), ("m2", "1", "n"), ("m3", "1", "n"), ("m4", "1", "n")]
    m.records_scored(np.zeros(4), np.zeros(4, dtype=bool), labels)
    m.records_scored(np.zeros(1), np.zeros(1, dtype=bool), [("m1", "1", "n")])
    other = {"model_name": "other", "model_version": "other", "namespace": "other"}
    assert value(m, f"{P}records_scored_total", other) == 2
    assert (
        value(
            m,
            f"{P}records_scored_total",
            {"model_name": "m1", "model_version": "1", "namespace": "n"},
        )
        == 2
    )
    names = {
        s.labels.get("model_name")
        for f in m.registry.collect()
        for s in f.samples
        if s.name == f"{P}records_scored_total"
    }
    assert len(names) == 3  # two admitted + other


def test_mismatched_lengths_are_refused() -> None:
    m = make()
    with pytest.raises(ValueError, match="flags"):
        m.records_scored(np.zeros(3), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="label"):
        m.records_scored(np.zeros(2), np.zeros(2, dtype=bool), [("a", "b", "c")])


def test_known_dead_letter_reasons_are_exported_at_zero_before_any_dead_letter() -> None:
    m = make(dead_letter_reasons=DEAD_LETTER_REASONS)
    for reason in DEAD_LETTER_REASONS:
        assert value(m, f"{P}records_dead_lettered_total", {"reason": reason}) == 0
    m.records_dead_lettered("wrong_shape", 3)
    m.records_dead_lettered("wrong_shape")
    assert value(m, f"{P}records_dead_lettered_total", {"reason": "wrong_shape"}) == 4


def test_unforeseen_reasons_beyond_the_limit_count_as_other() -> None:
    m = make(max_label_values=2, dead_letter_reasons=("a", "b"))
    m.records_dead_lettered("c")
    m.records_ignored("x")
    assert value(m, f"{P}records_dead_lettered_total", {"reason": "other"}) == 1
    assert value(m, f"{P}records_ignored_total", {"kind": "x"}) == 1


def test_counters_of_side_effects_and_failures() -> None:
    m = make()
    m.records_consumed(10)
    m.records_consumed(0)
    m.alerts_published(3)
    m.alert_publish_failed()
    m.commit_succeeded()
    m.commit_succeeded()
    m.commit_failed()
    m.detector_reloaded()
    m.detector_reload_failed()
    m.drift_event()
    m.broker_error("_TRANSPORT")
    m.broker_error("_MSG_TIMED_OUT")
    m.transaction("aborted")
    expected = {
        "records_consumed_total": 10,
        "alerts_published_total": 3,
        "alert_publish_failures_total": 1,
        "commits_total": 2,
        "commit_failures_total": 1,
        "detector_reloads_total": 1,
        "detector_reload_failures_total": 1,
        "drift_events_total": 1,
    }
    for name, want in expected.items():
        assert value(m, P + name) == want, name
    assert value(m, f"{P}broker_errors_total", {"code": "_TRANSPORT"}) == 1
    assert value(m, f"{P}broker_errors_total", {"code": "_ALL_BROKERS_DOWN"}) == 0
    assert value(m, f"{P}broker_errors_total", {"code": "_MSG_TIMED_OUT"}) == 1
    assert value(m, f"{P}transactions_total", {"outcome": "aborted"}) == 1
    assert value(m, f"{P}transactions_total", {"outcome": "committed"}) == 0


def test_unknown_transaction_outcome_is_a_bug() -> None:
    with pytest.raises(ValueError, match="outcome"):
        make().transaction("maybe")


def test_batch_and_latency_histograms() -> None:
    m = make()
    m.batch_processed(512, 0.03)
    m.end_to_end_latency(np.array([0.02, -0.5, 3.0]))  # clock skew counts as 0
    assert value(m, f"{P}batch_size_bucket", {"le": "512.0"}) == 1
    assert value(m, f"{P}batch_size_bucket", {"le": "256.0"}) == 0
    assert value(m, f"{P}batch_duration_seconds_sum") == pytest.approx(0.03)
    assert value(m, f"{P}end_to_end_latency_seconds_bucket", {"le": "0.005"}) == 1
    assert value(m, f"{P}end_to_end_latency_seconds_count") == 3
    assert value(m, f"{P}end_to_end_latency_seconds_sum") == pytest.approx(3.02)
    assert value(m, f"{P}last_batch_timestamp_seconds") == pytest.approx(time.time(), abs=60)


def test_state_gauges() -> None:
    m = make()
    m.set_up(True)
    m.set_ready(False)
    m.set_assigned_partitions(3)
    m.last_record_timestamp(1.7e9)
    assert value(m, f"{P}up") == 1
    assert value(m, f"{P}ready") == 0
    assert value(m, f"{P}assigned_partitions") == 3
    assert value(m, f"{P}last_record_timestamp_seconds") == 1.7e9
    m.set_up(False)
    assert value(m, f"{P}up") == 0


# -- adversarial ratio -------------------------------------------------------------------


def test_adversarial_ratio_covers_only_the_last_window_of_records() -> None:
    m = make(rate_window=10)
    assert value(m, f"{P}adversarial_window_records") == 0
    m.records_scored(np.ones(4), np.ones(4, dtype=bool))
    assert value(m, f"{P}adversarial_ratio") == 1.0
    assert value(m, f"{P}adversarial_window_records") == 4
    m.records_scored(np.zeros(8), np.zeros(8, dtype=bool))  # pushes 2 of the 4 out
    assert value(m, f"{P}adversarial_ratio") == pytest.approx(0.2)
    m.records_scored(np.zeros(25), np.zeros(25, dtype=bool))
    assert value(m, f"{P}adversarial_ratio") == 0.0
    assert value(m, f"{P}adversarial_window_records") == 10


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 20), st.lists(st.lists(st.booleans(), max_size=30), max_size=12))
def test_flag_window_equals_a_deque_of_the_last_n_flags(
    size: int, batches: list[list[bool]]
) -> None:
    window, ref = FlagWindow(size), deque(maxlen=size)
    for batch in batches:
        ratio, filled = window.add(np.asarray(batch, dtype=bool))
        ref.extend(batch)
        assert filled == len(ref)
        assert ratio == pytest.approx(sum(ref) / len(ref) if ref else 0.0)


# -- detector and drift ------------------------------------------------------------------


def _detector_infos(m: WorkerMetrics) -> list[dict[str, str]]:
    return [
        s.labels for f in m.registry.collect() for s in f.samples if s.name == f"{P}detector_info"
    ]


def test_detector_info_is_replaced_on_reload_not_accumulated() -> None:
    m = make(detector_name="digits", threshold=0.1)
    assert _detector_infos(m) == [
        {
            "name": "digits",
            "version": "unknown",
            "loss_type": "unknown",
            "temperature": "unknown",
            "manifest_hash": "unknown",
        }
    ]
    assert value(m, f"{P}detector_threshold") == 0.1
    m.set_detector(
        name="digits",
        version="2",
        loss_type="xent",
        temperature=0.5,
        manifest_hash="abc",
        threshold=0.2,
    )
    assert _detector_infos(m) == [
        {
            "name": "digits",
            "version": "2",
            "loss_type": "xent",
            "temperature": "0.5",
            "manifest_hash": "abc",
        }
    ]
    assert value(m, f"{P}detector_threshold") == 0.2


def test_drift_p_value_is_nan_until_the_first_window() -> None:
    m = make()
    assert math.isnan(value(m, f"{P}drift_p_value") or 0.0)
    assert value(m, f"{P}drift_detected") == 0
    m.set_drift(0.001, True)
    assert value(m, f"{P}drift_p_value") == 0.001
    assert value(m, f"{P}drift_detected") == 1


def test_worker_info_names_the_input_topic() -> None:
    m = make(input_topic="scores-in")
    (sample,) = [s for f in m.registry.collect() for s in f.samples if s.name == f"{P}worker_info"]
    assert sample.labels["input_topic"] == "scores-in"


# -- librdkafka statistics ---------------------------------------------------------------


def test_consumer_lag_per_partition_skips_the_internal_partition_and_unknown_lag() -> None:
    m = make()
    m.update_from_stats(consumer_stats("t", {0: 12, 1: 14, 2: -1}))
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "0"}) == 12
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "1"}) == 14
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "2"}) is None
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "-1"}) is None


def test_revoked_partitions_disappear_with_the_next_statistics() -> None:
    m = make()
    m.update_from_stats(consumer_stats("t", {0: 5, 1: 6}))
    m.update_from_stats(consumer_stats("t", {1: 2}))
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "0"}) is None
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "1"}) == 2


def test_producer_statistics_do_not_erase_the_consumers_lag() -> None:
    m = make()
    m.update_from_stats(consumer_stats("t", {0: 5}))
    m.update_from_stats(producer_stats())
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "0"}) == 5
    assert value(m, f"{P}broker_up", {"client": "producer", "broker": "127.0.0.1:19092"}) == 1


def test_broker_state_and_restarts_from_statistics() -> None:
    m = make()
    m.update_from_stats(consumer_stats(state="UP"))
    broker = {"client": "consumer", "broker": "127.0.0.1:19092"}
    assert value(m, f"{P}broker_up", broker) == 1
    m.update_from_stats(consumer_stats(state="CONNECT", disconnects=1, rebalances=2))
    assert value(m, f"{P}broker_up", broker) == 0
    assert value(m, f"{P}broker_disconnects_total", broker) == 1
    assert value(m, f"{P}broker_connects_total", broker) == 2
    assert value(m, f"{P}consumer_rebalances_total") == 2
    # the logical GroupCoordinator entry is not a broker
    brokers = {
        s.labels["broker"]
        for f in m.registry.collect()
        for s in f.samples
        if s.name == f"{P}broker_up"
    }
    assert brokers == {"127.0.0.1:19092"}


@pytest.mark.parametrize(
    "bad",
    ["", "not json", "[1, 2]", '{"topics": {"t": {"partitions": {"x": {"partition": "y"}}}}}'],
)
def test_unusable_statistics_are_ignored_and_the_last_good_ones_kept(bad: str) -> None:
    m = make()
    m.update_from_stats(consumer_stats("t", {0: 9}))
    m.update_from_stats(bad)  # inside librdkafka's callback: must not raise
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "0"}) == 9


def test_no_lag_or_broker_series_before_the_first_statistics() -> None:
    names = {f.name for f in make().registry.collect()}
    assert f"{P}consumer_lag" not in names and f"{P}broker_up" not in names


@pytest.mark.kafka
def test_lag_from_a_real_consumers_statistics_matches_its_commits(
    kafka_bootstrap: str, make_topic, unique_group: str
) -> None:
    topic = make_topic(partitions=2)
    for p in (0, 1):
        produce_messages(kafka_bootstrap, topic, [(None, b"x")] * 15, partition=p)
    m = make(input_topic=topic)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "statistics.interval.ms": 100,
            "stats_cb": m.update_from_stats,
        }
    )
    want = {"0": 12, "1": 14}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.1)
        consumer.commit(
            offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 1)], asynchronous=False
        )
        got: dict[str, float | None] = {}
        while got != want and time.monotonic() < deadline:
            consumer.poll(0.1)
            got = {p: value(m, f"{P}consumer_lag", {"topic": topic, "partition": p}) for p in want}
    finally:
        consumer.close()
    assert got == want
    up = [s for f in m.registry.collect() for s in f.samples if s.name == f"{P}broker_up"]
    assert up and all(s.value == 1 and s.labels["client"] == "consumer" for s in up)


# -- the whole set -----------------------------------------------------------------------


def test_every_family_is_prefixed_and_counters_end_in_total() -> None:
    text = exposition(populated_metrics(include_process=False))
    families = list(text_string_to_metric_families(text))
    assert families
    for fam in families:
        assert fam.name.startswith(P), fam.name
        for s in fam.samples:
            if fam.type == "counter" and not s.name.endswith("_created"):
                assert s.name.endswith("_total"), s.name


def test_process_collectors_only_when_asked() -> None:
    with_process = {f.name for f in populated_metrics(include_process=True).registry.collect()}
    without = {f.name for f in populated_metrics(include_process=False).registry.collect()}
    assert "process_cpu_seconds" in with_process and "python_info" in with_process
    assert not any(n.startswith(("process_", "python_")) for n in without)


def test_concurrent_batches_and_scrapes_lose_no_counts() -> None:
    m = make(threshold=0.5)
    scores = np.linspace(0, 1, 1000)
    labels = [("a", "1", "n"), ("b", "1", "n")] * 500

    def work() -> None:
        for _ in range(50):
            m.records_scored(scores, scores > 0.5, labels)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        exposition(m)
    for t in threads:
        t.join()
    a = {"model_name": "a", "model_version": "1", "namespace": "n"}
    assert value(m, f"{P}records_scored_total", a) == 4 * 50 * 500
    assert value(m, f"{P}instance_score_count", a) == 4 * 50 * 500
    assert value(m, f"{P}instance_score_bucket", {**a, "le": "+Inf"}) == 4 * 50 * 500


def test_stats_json_may_be_bytes() -> None:
    m = make()
    m.update_from_stats(
        orjson.dumps(
            {
                "type": "consumer",
                "topics": {"t": {"partitions": {"0": {"partition": 0, "consumer_lag": 3}}}},
            }
        )
    )
    assert value(m, f"{P}consumer_lag", {"topic": "t", "partition": "0"}) == 3
