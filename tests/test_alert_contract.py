"""The alert topic as a contract: schemas, CloudEvents ids that survive re-delivery, and
``distillation-monitor alerts``, the subscriber, against the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from contract import CHECKED
from fixtures_kafka import consume_messages, produce_messages
from jsonschema import Draft202012Validator
from worker_harness import (
    committed_offsets,
    json_record,
    running_worker,
    wait_until,
    worker_config,
)

from monitor.alert_events import NotAnEvent, Seen, json_line, read_event, text_line
from monitor.detector.persistence import load_detector
from monitor.schemas import FILES, schema
from monitor.stream.alerts import DetectorIdentity, alert_payload, source_fields
from monitor.stream.events import ALERT_TYPE, alert_id, ce_headers, rfc3339, source_of

ROOT = Path(__file__).resolve().parents[1]
IDENT = DetectorIdentity("d", "1", "kld", 1.0, "h" * 16, 0.5)


def _alert(offset: int, group: str = "g") -> tuple[list[tuple[str, Any]], bytes]:
    value = alert_payload(
        record_id=f"r{offset}",
        score=2.0,
        detector=IDENT,
        classifier_class=1,
        distilled_class=2,
        source=source_fields("in", 0, offset, 0, None),
        scored_at=rfc3339(10.0),
        context={"user": "u"},
        model={"model_name": "m"},
    )
    headers = ce_headers(
        event_type=ALERT_TYPE,
        event_id=alert_id("in", 0, offset, 0),
        source=source_of(group),
        at=rfc3339(10.0),
        subject=f"r{offset}",
    )
    return headers, value


# -- pure parts ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_schemas_are_draft_2020_12_and_published_unchanged_in_docs(kind: str) -> None:
    Draft202012Validator.check_schema(schema(kind))
    published = ROOT / "docs" / "schemas" / FILES[kind]
    assert json.loads(published.read_text()) == schema(kind), f"{published} differs"


def test_the_subscriber_reads_an_event_checks_it_and_knows_a_repeat() -> None:
    headers, value = _alert(5)
    event = read_event(headers, value, "alerts", 0, 9)
    assert event.is_alert and event.key == ("/distillation-monitor/g", "in/0/5/0")
    seen = Seen(window=2)
    assert seen.first(event) and not seen.first(event)
    for other in (6, 7, 8):  # the window forgets the oldest
        seen.first(read_event(*_alert(other), "alerts", 0, other))
    assert seen.first(event)
    line = text_line(event)
    assert "ALERT  score 2 > 0.5  record r5" in line and "in[0]@5 row 0" in line
    structured = json.loads(json_line(event))
    assert structured["type"] == ALERT_TYPE and structured["data"]["id"] == "r5"
    assert structured["specversion"] == "1.0" and structured["id"] == "in/0/5/0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, v: ([], v), "not a CloudEvent"),
        (lambda h, v: ([(n, b"x.y.v9" if n == "ce_type" else x) for n, x in h], v), "not one"),
        (lambda h, v: (h, v.replace(b'"score":2.0', b'"score":"high"')), "score"),
        (lambda h, v: (h, v[:-1]), "not JSON"),
        (lambda h, v: (h, v.replace(b'"context"', b'"is_adversarial":true,"context"')), "is_adv"),
    ],
)
def test_a_message_that_breaks_the_contract_is_refused_saying_why(
    change: Any, message: str
) -> None:
    headers, value = change(*_alert(1))
    with pytest.raises(NotAnEvent, match=message):
        read_event(headers, value, "alerts", 0, 0)


# -- against the broker ----------------------------------------------------------------
class Lines:
    """A subprocess's output lines, read as they come (for conditions on them)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the output was not closed"


def _subscriber(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "alerts", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _rewind(bootstrap: str, group: str, topic: str) -> None:
    """Move the (stopped) group back to the start: the next worker processes every
    record again, as one would after a crash before its commit."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()


@pytest.mark.kafka
def test_re_delivered_alerts_keep_their_ids_and_the_subscriber_prints_each_once(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tiny_data: tuple[np.ndarray, np.ndarray],
) -> None:
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    detector = load_detector(saved_detector_dir)
    x, _ = tiny_data
    far = (np.random.default_rng(11).normal(0, 1, (200, x.shape[1])) * 6).astype(np.float32)
    pool = np.concatenate([x[:200], far])
    scores = detector.score(pool)
    # rows far from the threshold either way, so every run flags the same ones
    flagged = pool[scores > 1.5 * detector.threshold][:30]
    clean = pool[scores < 0.5 * detector.threshold][:30]
    assert len(flagged) >= 10 and len(clean) >= 10
    first = [(None, json_record(f"a{i}", row)) for i, row in enumerate(flagged[:-5])]
    first += [(None, json_record(f"c{i}", row)) for i, row in enumerate(clean)]
    produce_messages(kafka_bootstrap, inp, first)
    cfg = worker_config(kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group)
    with running_worker(cfg):
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [len(first)],
            90,
            "the first records committed",
        )
    n_first = len(flagged) - 5
    originals = consume_messages(kafka_bootstrap, alerts, n_first, timeout=30)

    follower = _subscriber("--bootstrap-servers", kafka_bootstrap, "--alert-topic", alerts,
                           "--follow", "--json")  # fmt: skip
    out, err = Lines(follower.stdout), Lines(follower.stderr)  # type: ignore[arg-type]
    try:
        wait_until(lambda: len(out.lines) >= n_first, 60, "the follower printing the alerts")
        # the same records again (a crash before the commit), then 5 new flagged ones
        _rewind(kafka_bootstrap, unique_group, inp)
        more = [(None, json_record(f"a{n_first + i}", row)) for i, row in enumerate(flagged[-5:])]
        produce_messages(kafka_bootstrap, inp, more)
        total = len(first) + len(more)
        with running_worker(cfg) as worker:
            wait_until(lambda: worker.summary.consumed >= total, 90, "everything again")
        wait_until(lambda: len(out.lines) >= n_first + 5, 60, "the follower printing new ones")
    finally:
        follower.send_signal(signal.SIGTERM)
        code = follower.wait(30)
        out.join()
        err.join()
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
    assert code == 0, err.lines[-5:]

    every = consume_messages(kafka_bootstrap, alerts, 2 * n_first + 5, timeout=30)
    ids = [dict(m.headers)["ce_id"] for m in every]
    again = ids[n_first : 2 * n_first]
    assert ids[:n_first] == [dict(m.headers)["ce_id"] for m in originals]
    assert sorted(again) == sorted(ids[:n_first]), "a re-sent alert keeps its ce_id"
    assert len(set(ids)) == n_first + 5
    assert {dict(m.headers)["ce_source"] for m in every} == {source_of(unique_group).encode()}

    printed = [json.loads(line) for line in out.lines]
    assert [p["id"] for p in printed] == [i.decode() for i in ids[:n_first] + ids[2 * n_first :]]
    assert {p["data"]["id"] for p in printed} == {f"a{i}" for i in range(n_first + 5)}
    assert f"printed {n_first + 5}, dropped {n_first} duplicates, 0 broke" in err.lines[-1]

    done = subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "--bootstrap-servers", kafka_bootstrap,
         "--alert-topic", alerts],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == n_first + 5 and all("  ALERT  score " in line for line in lines)
    assert sorted(line.split("record ")[1].split()[0] for line in lines) == sorted(
        f"a{i}" for i in range(n_first + 5)
    )
    assert CHECKED.get(ALERT_TYPE, 0) >= 2 * n_first + 5, "every alert read was validated"


@pytest.mark.kafka
def test_the_subscriber_reports_messages_that_break_the_contract_and_exits_1(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    topic = make_topic(1, "alerts")
    headers, value = _alert(3)
    produce_messages(kafka_bootstrap, topic, [(None, b'{"id": "x"}'), (None, value, headers)])
    env = {**os.environ, "DMON_ALERT_TOPIC": topic, "DMON_BOOTSTRAP_SERVERS": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "alerts", "--log-level", "warning"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 1 and "record r3" in done.stdout
    assert f"skipped {topic}[0]@0: no ce_specversion" in done.stderr
    assert "printed 1" not in done.stderr, "--log-level warning hides the summary"
