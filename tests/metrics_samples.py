"""Helpers for the monitoring tests: populated metrics and the dashboard's queries.

``populated_metrics()`` is shaped like a real run: three model label sets, dead letters,
drift, consumer statistics as librdkafka emits them (fields trimmed to the ones that
matter, values as observed on the local broker).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import WorkerMetrics

DASHBOARD = (
    Path(__file__).resolve().parents[1]
    / "deploy"
    / "grafana"
    / "dashboards"
    / "distillation-monitor.json"
)
THRESHOLD = 0.05
INPUT_TOPIC = "inference-records"
DEAD_LETTER_REASONS = ("invalid_json", "wrong_shape", "non_finite")


def consumer_stats(
    topic: str = INPUT_TOPIC,
    lags: dict[int, int] | None = None,
    *,
    state: str = "UP",
    disconnects: int = 0,
    rebalances: int = 1,
) -> str:
    """A consumer statistics JSON document in librdkafka's layout."""
    lags = {0: 12, 1: 14} if lags is None else lags
    partitions: dict[str, Any] = {
        str(p): {"partition": p, "consumer_lag": lag, "committed_offset": 3, "hi_offset": 15}
        for p, lag in lags.items()
    }
    partitions["-1"] = {"partition": -1, "consumer_lag": -1, "committed_offset": -1001}
    doc = {
        "name": "rdkafka#consumer-3",
        "client_id": "rdkafka",
        "type": "consumer",
        "ts": 504371267,
        "time": 1795812180,
        "brokers": {
            "127.0.0.1:19092/1": {
                "name": "127.0.0.1:19092/1",
                "nodeid": 1,
                "nodename": "127.0.0.1:19092",
                "source": "learned",
                "state": state,
                "connects": 1 + disconnects,
                "disconnects": disconnects,
            },
            "GroupCoordinator": {
                "name": "GroupCoordinator",
                "nodeid": -1,
                "nodename": "127.0.0.1:19092",
                "source": "logical",
                "state": "UP",
                "connects": 1,
                "disconnects": 0,
            },
        },
        "topics": {topic: {"topic": topic, "partitions": partitions}},
        "cgrp": {"state": "up", "join_state": "steady", "rebalance_cnt": rebalances},
    }
    return orjson.dumps(doc).decode()


def producer_stats() -> str:
    doc = {
        "name": "rdkafka#producer-1",
        "type": "producer",
        "time": 1795812181,
        "brokers": {
            "127.0.0.1:19092/1": {
                "nodeid": 1,
                "nodename": "127.0.0.1:19092",
                "source": "learned",
                "state": "UP",
                "connects": 1,
                "disconnects": 0,
            }
        },
        "topics": {
            "alerts": {"topic": "alerts", "partitions": {"0": {"partition": 0, "consumer_lag": -1}}}
        },
    }
    return orjson.dumps(doc).decode()


def populated_metrics(include_process: bool = True) -> WorkerMetrics:
    """Every WorkerMetrics method called at least once, on a fresh registry."""
    m = WorkerMetrics(
        CollectorRegistry(),
        input_topic=INPUT_TOPIC,
        detector_name="digits",
        threshold=THRESHOLD,
        dead_letter_reasons=DEAD_LETTER_REASONS,
        ignored_kinds=("tombstone",),
        include_process=include_process,
    )
    rng = np.random.default_rng(7)
    scores = rng.exponential(THRESHOLD / 4, size=3000)
    scores[::50] *= 20  # a few harmful ones
    labels = [("mlp", "3", "default"), ("cnn", "1", "default"), ("mlp", "4", "canary")]
    m.set_up(True)
    m.set_assigned_partitions(2)
    m.set_ready(True)
    m.set_detector(
        name="digits",
        version="2024-06-01",
        loss_type="kld",
        temperature=0.5,
        manifest_hash="9f2c1e",
        threshold=THRESHOLD,
    )
    m.records_consumed(3010)
    m.records_scored(scores, scores > THRESHOLD, [labels[i % 3] for i in range(scores.size)])
    m.records_scored(scores[:5], scores[:5] > THRESHOLD)
    m.records_dead_lettered("invalid_json", 4)
    m.records_ignored("tombstone")
    m.alerts_published(int(np.count_nonzero(scores > THRESHOLD)))
    m.alert_publish_failed()
    m.commit_succeeded()
    m.commit_failed()
    m.decoder_process_failed()
    m.transaction("committed")
    m.batch_processed(512, 0.02)
    m.end_to_end_latency(rng.uniform(0.01, 0.3, size=3000))
    m.last_record_timestamp(1795812179.5)
    m.detector_reloaded()
    m.detector_reload_failed()
    m.update_from_stats(consumer_stats())
    m.update_from_stats(producer_stats())
    m.broker_error("_TRANSPORT")
    m.set_drift(0.42, False)
    m.drift_event()
    return m


def exposition(m: WorkerMetrics) -> str:
    return generate_latest(m.registry).decode()


def sample_names(text: str) -> set[str]:
    """Every sample name (e.g. ``x_total``, ``x_bucket``) in a text exposition."""
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


# -- the dashboard's queries -------------------------------------------------------------

_QUERY_RESULT = re.compile(r"^query_result\((.*)\)$", re.S)
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.S)


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def variable_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """PromQL inside the query variables (label_values(...), query_result(...))."""
    out = []
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = _QUERY_RESULT.match(query) or _LABEL_VALUES.match(query)
        assert match, f"unexpected variable query {query!r}"
        out.append((f"${var['name']}", match.group(1)))
    return out


def grafana_to_promql(expr: str, interval: str = "1m") -> str:
    """Replace Grafana's variables by what Grafana would send (all jobs and instances)."""
    for var, value in {
        "$__rate_interval": interval,
        "$__interval": interval,
        "$job": ".*",
        "$instance": ".*",
    }.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr
