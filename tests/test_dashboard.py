"""The Grafana dashboard and the alert rules query only what the worker really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from metrics_samples import (
    DASHBOARD,
    exposition,
    grafana_to_promql,
    panel_exprs,
    panels,
    populated_metrics,
    sample_names,
    variable_exprs,
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
RULES = DEPLOY / "prometheus" / "alerts.yml"

OUR_METRIC = re.compile(r"\bdistillation_monitor_[A-Za-z0-9_]+")
RECORDED = re.compile(r"\bdistillation_monitor:[A-Za-z0-9_:]+")
# A metric name directly followed by a label matcher or a range: `name{...}`, `name[5m]`.
SELECTOR = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*[{\[]")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return sample_names(exposition(populated_metrics(include_process=False)))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


# -- names -------------------------------------------------------------------------------


def test_every_dashboard_query_names_only_exported_metrics(
    dashboard: dict[str, Any], exported: set[str]
) -> None:
    queries = panel_exprs(dashboard) + variable_exprs(dashboard)
    assert len(queries) >= 30
    for title, expr in queries:
        names = set(OUR_METRIC.findall(expr))
        assert names, f"{title}: {expr!r} queries none of the worker's metrics"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"
        assert not RECORDED.search(expr), f"{title}: uses a recording rule, not an exported metric"
        foreign = {n for n in SELECTOR.findall(expr) if not n.startswith("distillation_monitor_")}
        assert not foreign, f"{title}: queries other metrics {foreign}"


def test_every_rule_names_only_exported_metrics_or_its_own_settings(exported: set[str]) -> None:
    recorded = {name for name, _ in rule_exprs() if name.startswith("distillation_monitor:")}
    for name, expr in rule_exprs():
        assert set(OUR_METRIC.findall(expr)) <= exported, name
        assert set(RECORDED.findall(expr)) <= recorded, name
        foreign = {n for n in SELECTOR.findall(expr) if not n.startswith("distillation_monitor")}
        assert foreign <= {"up"}, f"{name}: {foreign}"


def test_the_dashboard_covers_what_an_operator_needs(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(e for _, e in panel_exprs(dashboard))
    for needed in (
        "rate(distillation_monitor_records_consumed_total",
        "rate(distillation_monitor_records_flagged_total",
        "distillation_monitor_adversarial_ratio",
        "histogram_quantile(0.99, sum by (le) (rate(distillation_monitor_instance_score_bucket",
        "distillation_monitor_detector_threshold",
        "sum by (reason) (rate(distillation_monitor_records_dead_lettered_total",
        "max by (topic, partition) (distillation_monitor_consumer_lag",
        "rate(distillation_monitor_batch_duration_seconds_bucket",
        "rate(distillation_monitor_end_to_end_latency_seconds_bucket",
        "distillation_monitor_detector_info",
        "distillation_monitor_drift_p_value",
    ):
        assert needed in exprs, needed


def test_score_heatmap_reads_the_histogram_buckets_with_the_threshold_in_view(
    dashboard: dict[str, Any],
) -> None:
    (heatmap,) = [p for p in panels(dashboard) if p["type"] == "heatmap"]
    (target,) = heatmap["targets"]
    assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}"
    assert "distillation_monitor_instance_score_bucket" in target["expr"]
    assert "$threshold" in heatmap["title"]
    quantiles = [
        p
        for p in panels(dashboard)
        if "threshold" in p["title"].lower() and p["type"] == "timeseries"
    ]
    assert any(
        "distillation_monitor_detector_threshold" in t["expr"]
        for p in quantiles
        for t in p["targets"]
    )


# -- syntax ------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_parses_every_dashboard_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Grafana variables replaced by typical values, each query becomes a recording rule."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: `make tools` installs the Debian package prometheus"
    queries = panel_exprs(dashboard) + variable_exprs(dashboard)
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
        for i, (_, e) in enumerate(queries)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


# -- layout and provisioning -------------------------------------------------------------


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    boxes = [(p["title"], p["gridPos"]) for p in all_panels]
    for title, g in boxes:
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, title
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1 :]:
            overlap_x = ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
            overlap_y = ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]
            assert not (overlap_x and overlap_y), f"{a!r} overlaps {b!r}"


def test_every_query_uses_the_datasource_variable_defaulting_to_the_provisioned_one(
    dashboard: dict[str, Any],
) -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (ds,) = provisioned["datasources"]
    (var,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert var["query"] == ds["type"] == "prometheus"
    assert var["current"]["value"] == ds["uid"]
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_datasource_interval_matches_the_scrape_interval() -> None:
    (ds,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert ds["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]


def test_dashboard_provider_loads_the_dashboard_directory(dashboard: dict[str, Any]) -> None:
    (provider,) = yaml.safe_load(
        (PROVISIONING / "dashboards" / "distillation-monitor.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert dashboard["uid"] == "distillation-monitor"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
