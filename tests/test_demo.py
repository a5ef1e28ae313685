"""The one-command demo and its traffic generator, against the real local broker.

The end-to-end test runs ``distillation-monitor demo`` as a user would and then checks
its printed verdict against the topics themselves, read independently: the input topic
says what was really sent, the alert and dead-letter topics what the worker did.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import kafka as local_kafka  # deploy/local/kafka.py, on pytest's pythonpath
import numpy as np
import orjson
import pytest
from confluent_kafka.admin import AdminClient
from fixtures_kafka import consume_messages, delete_topics
from raw_lines import raw_lines

from monitor.cli import main
from monitor.demo.broker import LOCAL_BOOTSTRAP
from monitor.demo.pacing import SentLog
from monitor.demo.session import earlier_run_topics
from monitor.demo.status import parse_metrics
from monitor.demo.summary import DemoSummary
from monitor.demo.traffic import CLEAN, MALFORMED, DemoRecord, TrafficSpec, malformed_positions
from monitor.errors import DemoError

ROOT = Path(__file__).resolve().parents[1]


def _record(record_id: str, kind: str, harmful: bool | None) -> DemoRecord:
    return DemoRecord(record_id, b"{}", kind, harmful)


def _alert(record_id: str) -> bytes:
    return orjson.dumps({"id": record_id, "score": 2.0})


def _good_records(values: list[bytes]) -> dict[str, dict[str, Any]]:
    """Input records that parse as complete 8x8 instances, by id."""
    good = {}
    for value in values:
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        inst = body.get("instance")
        if isinstance(inst, list) and np.shape(inst) == (8, 8) and "1e999" not in value.decode():
            good[body["id"]] = body
    return good


# -- pure parts ----------------------------------------------------------------------------
def test_malformed_records_are_spread_over_the_run_and_never_more_than_sent() -> None:
    assert malformed_positions(100, 4) == {12, 37, 62, 87}
    assert malformed_positions(3, 10) == {0, 1, 2}
    assert malformed_positions(50, 0) == set()


def test_unknown_corruption_is_a_one_line_error() -> None:
    with pytest.raises(DemoError, match="unknown corruption"):
        TrafficSpec(corruptions=("gaussian_noise", "rain"))


def test_summary_counts_each_flagged_id_once_and_keeps_foreign_alerts_apart() -> None:
    sent = SentLog()
    for record in [
        _record("c1", CLEAN, None),
        _record("c2", CLEAN, None),
        _record("h1", "fgsm", True),
        _record("h2", "blur", True),
        _record("n1", "blur", False),
        _record("x1", "blur", None),
        _record("m1", MALFORMED, None),
    ]:
        sent.add(record)
    alerts = [_alert(i) for i in ("h1", "h1", "h2", "c2", "other-run-7")]
    summary = DemoSummary.tally(sent, alerts, dead_letters=1)
    assert (summary.harmful.sent, summary.harmful.flagged) == (2, 2)
    assert (summary.harmless.sent, summary.harmless.flagged) == (1, 0)
    assert (summary.clean.sent, summary.clean.flagged) == (2, 1)
    assert (summary.neither.sent, summary.neither.flagged) == (1, 0)
    assert summary.flagged == 3
    assert (summary.duplicate_alerts, summary.unknown_alerts) == (1, 1)
    assert summary.harmful_by_kind["blur"].flagged == 1
    assert (summary.malformed_sent, summary.dead_letters) == (1, 1)


def test_status_numbers_are_summed_over_the_metric_labels() -> None:
    text = (
        "# TYPE distillation_monitor_records_flagged counter\n"
        'distillation_monitor_records_flagged_total{model_name="a"} 3.0\n'
        'distillation_monitor_records_flagged_total{model_name="b"} 4.0\n'
        "# TYPE distillation_monitor_records_consumed counter\n"
        "distillation_monitor_records_consumed_total 70.0\n"
        "# TYPE distillation_monitor_adversarial_ratio gauge\n"
        "distillation_monitor_adversarial_ratio 0.1\n"
    )
    snap = parse_metrics(text)
    assert (snap.flagged, snap.consumed, snap.adversarial_ratio) == (7.0, 70.0, 0.1)


def test_only_topics_of_earlier_runs_with_the_same_prefix_are_removed() -> None:
    names = {
        "dmon-demo-20250101-120000-ab12-records",
        "dmon-demo-20250101-120000-ab12-alerts",
        "dmon-demo-20250101-120000-ab12-dead-letters",
        "dmon-demo-mine",
        "other-20250101-120000-ab12-records",
        "dmon-demo-20250101-120000-ab12-records-copy",
    }
    assert earlier_run_topics(names, "dmon-demo") == [
        "dmon-demo-20250101-120000-ab12-alerts",
        "dmon-demo-20250101-120000-ab12-dead-letters",
        "dmon-demo-20250101-120000-ab12-records",
    ]


def test_demo_default_bootstrap_is_the_local_brokers() -> None:
    assert local_kafka.BOOTSTRAP == LOCAL_BOOTSTRAP


# -- against the broker --------------------------------------------------------------------
@pytest.mark.kafka
def test_produce_demo_labels_match_what_the_classifier_says_about_the_sent_numbers(
    kafka_bootstrap: str,
    make_topic: Any,
    demo_detector_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from monitor.detector.demo import CLASSIFIER_FILE
    from monitor.detector.persistence import load_keras_model

    topic = make_topic()
    argv = ["produce-demo", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    argv += ["--detector", str(demo_detector_dir), "--count", "300", "--rate", "2000"]
    argv += ["--corrupt-fraction", "0.6", "--malformed", "4", "--seed", "3"]
    assert main(argv) == 0
    assert "done: 300 records" in capsys.readouterr().out

    values = [m.value or b"" for m in consume_messages(kafka_bootstrap, topic, 300)]
    good = _good_records(values)
    assert len(good) == 296
    ids = [_sent_id(v) for v in values]
    assert len(set(ids)) == len(ids) == 300

    classifier = load_keras_model(demo_detector_dir / CLASSIFIER_FILE)
    bodies = list(good.values())
    x = np.array([b["instance"] for b in bodies], dtype=np.float32)
    predicted = np.asarray(classifier(x, training=False)).argmax(axis=1)
    labels = np.array([b["label"] for b in bodies])
    harmful = np.array([b["harmful"] is True for b in bodies])
    harmless = np.array([b["harmful"] is False for b in bodies])
    clean = np.array([b["corruption"] == CLEAN for b in bodies])
    assert (predicted[harmful] != labels[harmful]).all()
    assert (predicted[harmless] == labels[harmless]).all()
    assert harmful.sum() > 20 and harmless.sum() > 20
    assert not (clean & (harmful | harmless)).any()
    assert all(("severity" in b) != ("epsilon" in b) for b in bodies if b["corruption"] != CLEAN)
    assert {b["corruption"] for b in bodies} >= {CLEAN, "fgsm", "pgd", "occlusion"}
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.kafka
def test_demo_verdict_agrees_with_the_topics_it_names(
    kafka_bootstrap: str, kafka_admin: AdminClient, demo_detector_dir: Path, tmp_path: Path
) -> None:
    prefix = f"test-demo-{uuid.uuid4().hex[:8]}"
    summary_file = tmp_path / "summary.json"
    command = [sys.executable, "-m", "monitor", "demo", "--detector", str(demo_detector_dir)]
    command += ["--duration", "8", "--rate", "100", "--corrupt-fraction", "0.5"]
    command += ["--metrics-port", "0", "--topic-prefix", prefix]
    command += ["--worker-log", str(tmp_path / "worker.log"), "--summary-json", str(summary_file)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "harmful corrupted records flagged" in done.stdout
    assert not raw_lines(done.stdout + done.stderr), "a library wrote to the terminal itself"
    result = json.loads(summary_file.read_text())
    names = result["topics"]
    try:
        sent = [m.value or b"" for m in consume_messages(kafka_bootstrap, names["input"], 800)]
        alerts = consume_messages(kafka_bootstrap, names["alerts"], result["alerts_read"])
        dead = consume_messages(kafka_bootstrap, names["dead_letters"], 5)
    finally:
        delete_topics(kafka_admin, list(names.values()))

    good = _good_records(sent)
    assert result["sent"]["total"] == len(sent) == 800
    assert result["worker"]["consumed"] == 800
    flagged = {orjson.loads(m.value or b"")["id"] for m in alerts}
    assert flagged <= set(good), "an alert names a record that was never sent"
    assert len(flagged) == result["flagged"] > 0

    def tally(pick: Any) -> dict[str, Any]:
        members = [i for i, b in good.items() if pick(b)]
        hits = sum(i in flagged for i in members)
        return {"sent": len(members), "flagged": hits, "rate": hits / len(members)}

    groups = {
        "harmful": tally(lambda b: b["harmful"] is True),
        "harmless": tally(lambda b: b["harmful"] is False),
        "clean": tally(lambda b: b["corruption"] == CLEAN),
    }
    for name, expected in groups.items():
        assert result[name] == pytest.approx(expected), name
    assert groups["harmful"]["sent"] > 50
    assert groups["harmful"]["rate"] > groups["clean"]["rate"] + 0.25

    dead_values = sorted(m.value or b"" for m in dead)
    broken = sorted(v for v in sent if _sent_id(v) not in good)
    assert result["malformed_sent"] == result["dead_letters"] == len(broken) == 5
    assert dead_values == broken, "the dead letters are not exactly the malformed records"


def _sent_id(value: bytes) -> str:
    """The id of any record sent, malformed ones included (they all start with it)."""
    found = re.match(rb'\{"id":"([^"]+)"', value)
    assert found is not None, value[:80]
    return found.group(1).decode()
