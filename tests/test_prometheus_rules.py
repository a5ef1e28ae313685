"""Prometheus' own checker on our config, rules, rule unit tests and real /metrics output."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from metrics_samples import (
    DASHBOARD,
    consumer_stats,
    grafana_to_promql,
    panel_exprs,
    populated_metrics,
    variable_exprs,
)
from prometheus_harness import Prometheus, running_prometheus

from monitor.http import DEFAULT_METRICS_PORT, HealthServer
from monitor.metrics import WorkerMetrics

pytestmark = pytest.mark.prometheus

PROM_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found: `make tools` installs the Debian package prometheus", pytrace=False
        )
    return subprocess.run(
        [exe, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=PROM_DIR,
        timeout=120,
        check=False,
    )


def rule_list() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rule_list() if "alert" in r]


def test_promtool_accepts_the_rules() -> None:
    r = promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    r = promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_accepts_the_prometheus_config_and_the_rules_it_loads() -> None:
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "alerts.yml" in r.stdout


def test_scrape_job_targets_the_workers_default_metrics_port() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "distillation-monitor"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"monitor:{DEFAULT_METRICS_PORT}"]
    assert config["rule_files"] == ["alerts.yml"]


def test_every_alert_has_a_severity_summary_and_description() -> None:
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 8, rule["alert"]


def test_every_alert_is_unit_tested_both_firing_and_not_firing() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [c for t in tests["tests"] for c in t.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} never shown quiet"
        for case in mine:
            for alert in case["exp_alerts"]:
                assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
                assert set(alert["exp_annotations"]) == {"summary", "description"}


def test_promtool_finds_no_problem_in_a_real_scrape_of_populated_metrics() -> None:
    registry = populated_metrics(include_process=True).registry
    server = HealthServer(registry, "127.0.0.1", 0, lambda: (True, "ready"))
    port = server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read()
    finally:
        server.stop()
    assert b"distillation_monitor_instance_score_bucket" in body
    assert b"distillation_monitor_consumer_lag" in body
    r = promtool("check", "metrics", stdin=body)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip() == ""  # no lint warnings either


# -- a real Prometheus scraping a live metrics server ------------------------------------


@pytest.mark.slow
def test_a_real_prometheus_evaluates_every_rule_and_dashboard_query_with_data(
    tmp_path: Path,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    metrics = populated_metrics(include_process=False)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(metrics, stop), daemon=True)
    server = HealthServer(metrics.registry, "127.0.0.1", 0, lambda: (True, "ready"))
    target_port = server.start()
    try:
        with running_prometheus(tmp_path, [f"127.0.0.1:{target_port}"]) as prom:
            feeder.start()
            prom.wait_for_samples()
            empty = []
            for title, expr in panel_exprs(dashboard) + variable_exprs(dashboard):
                if not prom.query(grafana_to_promql(expr, "10s")):
                    empty.append(f"{title}: {expr}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            assert len(rules) == len(rule_list())
            assert all(r["health"] == "ok" for r in rules), [
                (r["name"], r.get("lastError")) for r in rules
            ]
            # Once traffic stops, Prometheus' totals equal the worker's, record for record.
            stop.set()
            feeder.join(timeout=10)
            _wait_for_equal_totals(prom, metrics)
    finally:
        stop.set()
        server.stop()
        feeder.join(timeout=5)


TOTALS = (
    "distillation_monitor_records_consumed_total",
    "distillation_monitor_records_scored_total",
    "distillation_monitor_records_flagged_total",
    "distillation_monitor_records_dead_lettered_total",
)


def _wait_for_equal_totals(prom: Prometheus, metrics: WorkerMetrics) -> None:
    def exported(name: str) -> float:
        return sum(s.value for f in metrics.registry.collect() for s in f.samples if s.name == name)

    want = {name: exported(name) for name in TOTALS}
    assert all(want.values())
    got: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while got != want and time.monotonic() < deadline:
        time.sleep(0.5)
        for name in TOTALS:
            value = prom.value(f"sum({name})")
            got[name] = -1.0 if value is None else value
    assert got == want


def _feed(m: WorkerMetrics, stop: threading.Event) -> None:
    """Traffic while Prometheus scrapes, so that every rate has something to show."""
    rng = np.random.default_rng(3)
    while not stop.is_set():
        scores = rng.exponential(0.02, 256)
        m.records_consumed(260)
        m.records_scored(scores, scores > 0.05, [("mlp", "3", "default")] * 256)
        m.records_dead_lettered("invalid_json", 2)
        m.records_ignored("tombstone")
        m.alerts_published(int((scores > 0.05).sum()))
        m.alert_publish_failed()
        m.commit_succeeded()
        m.transaction("committed")
        m.batch_processed(256, float(rng.uniform(0.005, 0.05)))
        m.end_to_end_latency(rng.uniform(0.01, 0.5, 256))
        m.last_record_timestamp(time.time())
        m.update_from_stats(consumer_stats())
        m.drift_event()
        m.detector_reloaded()
        stop.wait(0.2)
