"""A real Prometheus scraping a real worker that scores real Kafka traffic.

Every dashboard query (after Grafana's variable substitution) must have data, every rule
expression must be valid and healthy, and Prometheus' totals must equal what the test
produced and what the detector flags offline, down to dead letters per reason.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from fixtures_kafka import produce_messages
from metrics_samples import DASHBOARD, grafana_to_promql, panel_exprs, variable_exprs
from prometheus_harness import ALERTS, Prometheus, running_prometheus
from worker_harness import json_record, running_worker, wait_until, worker_config

from monitor import load_detector

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus]

P = "distillation_monitor_"
ROOT = Path(__file__).resolve().parents[1]
# Malformed records and the dead-letter reason each must be counted under.
MALFORMED: list[tuple[bytes, bytes, str]] = [
    (b"bad-json-1", b"{not json", "invalid_json"),
    (b"bad-json-2", b'{"id": "x", "instance": [1, 2,', "invalid_json"),
    (b"bad-shape", orjson.dumps({"id": "bad-shape", "instance": [1.0, 2.0]}), "shape"),
    (b"bad-nan", b'{"id": "bad-nan", "instance": [NaN, 1, 1, 1, 1, 1, 1, 1]}', "non_finite"),
    (b"bad-empty", b"", "empty"),
]
RESPONSE_HEADERS = [
    ("ce_id", b"evt-1"),
    ("ce_type", b"org.kubeflow.serving.inference.response"),
    ("ce_specversion", b"1.0"),
]
WAVES = 4  # traffic arrives in waves so that the rates have a shape, not one step


@pytest.fixture(scope="module")
def traffic(saved_detector_dir: Path, tiny_data: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Clean rows, far-off rows the detector flags, and the detector's offline verdict."""
    detector = load_detector(saved_detector_dir)
    assert detector.threshold is not None
    threshold = float(detector.threshold)
    x, _ = tiny_data
    rng = np.random.default_rng(11)
    clean = x[:160]
    far = (rng.normal(0, 1, (80, x.shape[1])) * 6).astype(np.float32)
    instances = np.concatenate([clean, far])
    order = rng.permutation(len(instances))
    scores = np.asarray(detector.score(instances[order]), dtype=np.float64)
    flagged = int(np.count_nonzero(scores > threshold))
    assert flagged >= 20, "the traffic must contain clearly flagged records"
    assert flagged < len(scores) - 100, "and plenty of clean ones"
    return {
        "instances": instances[order],
        "scores": scores,
        "flagged": flagged,
        "threshold": threshold,
    }


def test_prometheus_sees_the_workers_real_counts_and_every_query_is_valid_with_data(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    traffic: dict[str, Any],
    tmp_path: Path,
) -> None:
    inp, alerts, dlq = make_topic(2), make_topic(1, "alerts"), make_topic(1, "dlq")
    good = [
        (f"r-{i}".encode(), json_record(f"r-{i}", row))
        for i, row in enumerate(traffic["instances"])
    ]
    bad = [(key, value) for key, value, _ in MALFORMED]
    response = [(b"resp", orjson.dumps({"id": "resp", "outputs": []}), RESPONSE_HEADERS)]
    waves = [list(w) for w in np.array_split(np.arange(len(good)), WAVES)]
    n_messages = len(good) + len(bad) + len(response)
    n_good, n_flagged = len(good), traffic["flagged"]
    reasons = [reason for *_, reason in MALFORMED]
    want_dead = {reason: float(reasons.count(reason)) for reason in reasons}

    cfg = worker_config(
        kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group, max_batch_size=32
    )
    with (
        running_worker(cfg) as worker,
        running_prometheus(tmp_path / "prom", [f"127.0.0.1:{worker.metrics_port}"]) as prom,
    ):
        prom.wait_for_samples(count=3, timeout=30)
        started = time.time()
        for k, wave in enumerate(waves):
            extra = bad if k == 1 else response if k == 2 else []
            produce_messages(kafka_bootstrap, inp, [good[i] for i in wave] + extra)
            time.sleep(1.0)
        wait_until(lambda: worker.summary.consumed >= n_messages, 30, "all records processed")
        summary = worker.summary

        # Totals: Prometheus == what was produced == the worker's own summary == offline.
        totals = {
            "consumed": (f"sum({P}records_consumed_total)", n_messages),
            "scored": (f"sum({P}records_scored_total)", n_good),
            "flagged": (f"sum({P}records_flagged_total)", n_flagged),
            "alerts": (f"sum({P}alerts_published_total)", n_flagged),
            "dead letters": (f"sum({P}records_dead_lettered_total)", len(bad)),
            "ignored": (f"sum({P}records_ignored_total)", len(response)),
            "score count": (f"sum({P}instance_score_count)", n_good),
            "not flagged": (
                f'sum({P}instance_score_bucket{{le="{_le(traffic["threshold"])}"}})',
                n_good - n_flagged,
            ),
            "latency count": (f"sum({P}end_to_end_latency_seconds_count)", n_messages),
        }
        assert _wait_for_values(prom, totals) == {k: float(v) for k, (_, v) in totals.items()}
        assert (summary.consumed, summary.scored, summary.flagged) == (
            n_messages,
            n_good,
            n_flagged,
        )
        assert summary.dead_lettered == len(bad) and summary.ignored == len(response)
        by_reason = {
            s["metric"]["reason"]: float(s["value"][1])
            for s in prom.query(f"sum by (reason) ({P}records_dead_lettered_total) > 0")
        }
        assert by_reason == want_dead
        ratio = prom.value(f"sum({P}adversarial_ratio)")
        assert ratio == pytest.approx(n_flagged / n_good)
        assert prom.value('sum(up{job="distillation-monitor"})') == 1.0
        assert prom.value(f"sum({P}up)") == 1.0

        _assert_dashboard_queries_have_data(prom)
        _assert_rules_are_valid_and_healthy(prom)
        _assert_dead_letter_alert_fires_per_reason(prom, set(want_dead))
        _assert_snapshot_renders_the_same_counts(
            prom, tmp_path, started, f"{n_messages} consumed, {n_flagged} flagged, {len(bad)} dead"
        )


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it in the ``le`` label."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))


def _wait_for_values(
    prom: Prometheus, want: dict[str, tuple[str, int]], timeout: float = 20
) -> dict[str, float | None]:
    """{name: value of its query}, queried until all equal the wanted ones (scrapes lag)."""
    expected = {k: float(v) for k, (_, v) in want.items()}
    got: dict[str, float | None] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {name: prom.value(query) for name, (query, _) in want.items()}
        if got == expected:
            break
        time.sleep(0.5)
    return got


def _assert_dashboard_queries_have_data(prom: Prometheus) -> None:
    """Each panel and variable query, as Grafana sends it, returns at least one series.

    Series that appear with the first scored record (labelled counters) need two scrapes
    before ``rate()`` has a value, hence the short retry.
    """
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        (title, grafana_to_promql(expr, "1m"))
        for title, expr in panel_exprs(dashboard) + variable_exprs(dashboard)
    ]
    assert len(queries) >= 30
    empty: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        empty = [f"{title}: {q}" for title, q in queries if not prom.query(q)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    # The flagged rate is not merely present: the detector flagged records in the last minute.
    flagged_rate = prom.value(f"sum(rate({P}records_flagged_total[1m]))")
    assert flagged_rate is not None and flagged_rate > 0


def _assert_rules_are_valid_and_healthy(prom: Prometheus) -> None:
    """Every rule's expression parses and evaluates; the server evaluated each without error."""
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        result = prom.query(rule["expr"])  # raises with Prometheus' message if invalid
        if "record" in rule:
            assert result, f"record rule {rule['record']} has no value"
            assert math.isfinite(float(result[0]["value"][1]))
    loaded: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        loaded = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        if loaded and all(r.get("lastEvaluation", "").startswith("2") for r in loaded):
            break
        time.sleep(0.5)
    assert len(loaded) == len(rules)
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in loaded] == [
        (r.get("record") or r["alert"], "ok", "") for r in rules
    ]


def _assert_dead_letter_alert_fires_per_reason(prom: Prometheus, reasons: set[str]) -> None:
    firing: set[str] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        firing = {
            a["labels"]["reason"]
            for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "DistillationMonitorDeadLetters"
            and a["state"] == "firing"
        }
        if firing == reasons:
            break
        time.sleep(0.5)
    assert firing == reasons


def _assert_snapshot_renders_the_same_counts(
    prom: Prometheus, tmp_path: Path, since: float, counts: str
) -> None:
    """deploy/grafana/render_snapshot.py draws the dashboard from this Prometheus."""
    out = tmp_path / "dashboard.png"
    script = ROOT / "deploy" / "grafana" / "render_snapshot.py"
    args = [
        prom.url,
        "--out",
        str(out),
        "--start",
        f"{since - 1:.3f}",
        "--end",
        f"{time.time():.3f}",
    ]
    r = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts in r.stdout, r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
