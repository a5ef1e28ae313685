"""Prometheus' own checker on our config, rules, rule unit tests and real /metrics output."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from metrics_samples import populated_metrics

from monitor.http import DEFAULT_METRICS_PORT, HealthServer

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


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


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
