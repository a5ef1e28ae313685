"""The worker against whoever can write to its input topic.

One worker process with the default settings (``--record-format auto``) takes a full
cycle of ``tests/hostile_traffic.py``: normal records between near-1 MB invalid values,
values and headers over the size limit, huge keys and contexts, a thousand headers,
declared-shape bombs, many-row messages and the poison corpus. It must stay alive,
commit the whole topic, alert exactly the rows the detector flags offline, dead-letter
every hostile record with its reason (shortened, with the original's size and sha256,
when it is too large to publish whole), count them in its metrics, and keep its peak
RSS bounded.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_scenarios import EOS, MODES, read_to_end
from fixtures_kafka import produce_messages
from hostile_traffic import (
    DEAD,
    HostileProducer,
    HostileTraffic,
    WorkerProcess,
    check_alive,
    check_outputs,
    log_tail,
    metrics_summary,
    wait_committed_to_end,
    wait_ready,
    worker_args,
)
from worker_harness import (
    committed_offsets,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    wait_until,
    worker_config,
)

from monitor import load_detector

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.slow]

P = "distillation_monitor_"
KCAT = [b"kcat", b"-P", b"-b"]
WARM_UP = 200
NOT_UTF8 = b"n\xff\xfeme=v"  # a header named n, 0xff, 0xfe, me
PARTITIONS = 2
PEAK_RSS_LIMIT_MB = 2500.0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_a_worker_with_default_settings_withstands_hostile_traffic(
    kafka_bootstrap: str,
    make_topic: Any,
    saved_detector_dir: Path,
    tmp_path: Path,
    mode: str,
) -> None:
    eos = mode == EOS
    input_topic = make_topic(PARTITIONS)
    alert_topic = make_topic(PARTITIONS, "alerts")
    dead_topic = make_topic(1, "dlq")
    group = f"hostile-{mode}-{uuid.uuid4().hex[:8]}"
    traffic = HostileTraffic(saved_detector_dir, seed=11)
    args = worker_args(
        kafka_bootstrap, saved_detector_dir, input_topic, alert_topic, dead_topic, group, eos
    )
    worker = WorkerProcess.start(args, tmp_path / "worker.log")
    try:
        port = wait_ready(worker, input_topic)
        expected = HostileProducer(kafka_bootstrap, input_topic, traffic).produce(traffic.cycle)
        wait_committed_to_end(worker, kafka_bootstrap, group, input_topic, PARTITIONS, 600)
        metrics = metrics_summary(scrape(port))
        check_alive(worker, "after committing everything")
        alerts = read_to_end(kafka_bootstrap, alert_topic)
        dead_letters = read_to_end(kafka_bootstrap, dead_topic)
        code = worker.stop()
        assert code == 0, f"the worker exited {code} on SIGTERM\n{log_tail(worker)}"
    finally:
        if not worker.exited():
            worker.proc.kill()
            worker.proc.wait(30)

    verdict = check_outputs(traffic, expected, input_topic, alerts, dead_letters)
    peak = worker.peak_rss_mb or 0.0
    print(
        f"\n{mode}: {expected.sent} records ({expected.hostile_sent} hostile, "
        f"{expected.bytes_sent / 1e6:.1f} MB uncompressed), {verdict.alerts_expected} alerts "
        f"expected, {verdict.alerts_seen} ids seen in {verdict.alert_messages} alerts, "
        f"{len(verdict.missing)} missing, {len(verdict.unexpected)} unexpected; "
        f"{verdict.dead_seen} dead letters of {verdict.dead_expected} expected, "
        f"{verdict.shortened} shortened ({expected.must_shorten} had to be); "
        f"peak RSS (worker + children, VmHWM) {peak:.0f} MB"
    )
    print(f"  metrics: {metrics}")
    problems = verdict.problems(exactly_once=eos)
    assert not problems, "\n".join(problems)
    assert verdict.dead_seen == verdict.dead_expected
    assert verdict.shortened >= expected.must_shorten

    counted = {reason: n for reason, n in metrics["dead_lettered"].items() if n}
    assert counted == {reason: float(n) for reason, n in expected.dead_reasons.items()}
    shortened_metric = metrics["shortened"].get("dead_letter")
    assert shortened_metric is not None, "no outputs_shortened_total{kind=dead_letter}"
    if eos:
        assert shortened_metric == verdict.shortened
    else:
        assert shortened_metric >= verdict.shortened
    assert "alert" in metrics["shortened"], "no outputs_shortened_total{kind=alert}"
    assert metrics["ignored"].get("response", 0.0) == expected.ignored
    assert metrics["scored"].get("all", 0.0) == expected.scored_rows

    assert peak > 0, "the worker's peak RSS was never read"
    assert peak < PEAK_RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"


def test_one_cycle_of_hostile_traffic_holds_every_class(saved_detector_dir: Path) -> None:
    """The generator itself: every class once per cycle, unique alert ids, pure in the index."""
    traffic = HostileTraffic(saved_detector_dir, seed=3, every=4)
    records = [traffic.record(i) for i in range(traffic.cycle)]
    kinds = Counter(p.kind for p in records if p.hostile)
    assert set(kinds) == set(traffic.kinds) and set(kinds.values()) == {1}
    ids = [rid for p in records for rid in p.alerts]
    assert len(ids) == len(set(ids))
    assert all(p.outcome == DEAD and p.reason for p in records if p.kind.startswith("poison:"))
    assert traffic.record(123) == HostileTraffic(saved_detector_dir, seed=3, every=4).record(123)
    assert sum(len(p.alerts) for p in records if p.kind == "v2_1000_rows") > 500


def test_a_record_whose_header_name_is_not_utf8_is_dead_lettered_and_the_rest_scored(
    kafka_bootstrap: str, make_topic: Any, saved_detector_dir: Path, unique_group: str
) -> None:
    """The Kafka client cannot even build such a record's headers (it raises), so the
    decoder and the dead-letter path must both get by without them. Python's client
    always writes UTF-8 names: kcat writes the raw bytes."""
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    good = json_record("good-0", np.zeros(saved_detector_input_size(saved_detector_dir)))
    # Records with headers first: once the call site that reads headers is warm, CPython
    # runs it specialised, and a failure to read them no longer raised there.
    warm = [(b"g%d" % i, good, [("trace", b"t")]) for i in range(WARM_UP)]
    produce_messages(kafka_bootstrap, inp, warm)
    subprocess.run(
        [*KCAT, kafka_bootstrap.encode(), b"-t", inp.encode(), b"-k", b"bad", b"-H", NOT_UTF8],
        input=b"{not even json",
        check=True,
        timeout=60,
    )
    produce_messages(kafka_bootstrap, inp, [(b"last", good)])
    config = worker_config(kafka_bootstrap, saved_detector_dir, inp, alerts, dlq, unique_group)
    with running_worker(config) as worker:
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, unique_group, inp, 1) == [WARM_UP + 2],
            120,
            "every record committed",
        )
        assert worker.summary.scored == WARM_UP + 1
        dead = metric_sum(scrape(worker.metrics_port or 0), P + "records_dead_lettered_total")
    letters = read_to_end(kafka_bootstrap, dlq)
    assert [m.key for m in letters] == [b"bad"]
    headers = dict(letters[0].headers or [])
    assert headers["dmon.reason"] == b"not_utf8"
    assert headers["dmon.source.offset"] == str(WARM_UP).encode()
    assert "dmon.original.headers_unreadable" in headers
    assert letters[0].value == b"{not even json"
    assert dead == 1


def saved_detector_input_size(detector_dir: Path) -> int:
    return int(np.prod(load_detector(detector_dir).input_shape))
