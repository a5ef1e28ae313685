#!/usr/bin/env python3
"""The fault scenarios of tests/test_faults.py at a larger scale, as a table by mode.

Against the local broker (it is restarted once, in the broker-restart scenario: other
clients of it see that outage too). For each scenario and delivery mode: faults
injected, records produced, records scored (committed and not dead-lettered), flagged
records (scored offline by the same detector), alerts a ``read_committed`` subscriber
received, flagged records missing from them, and duplicated alerts. Then a backlog of
``--backlog`` records worked off by a worker process in each mode: records/s and peak
RSS, which give the cost of exactly-once.

    .venv/bin/python bench/faults.py [--quick] [--kills N] [--backlog N] [--markdown FILE]

Writes JSON to bench/results/faults-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests", ROOT / "deploy" / "local"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kafka as local_kafka  # noqa: E402  (deploy/local/kafka.py)
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from fault_scenarios import (  # noqa: E402
    ALO,
    EOS,
    MODES,
    FaultReport,
    Pace,
    Setup,
    Workers,
    alert_topic_outage,
    broker_restart,
    kill_and_restart,
    make_traffic,
    poison_flood,
    survivor_takes_over,
    table,
    tiny_instances,
)
from fixtures_kafka import create_topic, delete_topics  # noqa: E402

from bench.workers import children_of, peak_rss_kb  # noqa: E402

CACHE = ROOT / ".local" / "bench"
RESULTS = ROOT / "bench" / "results"


def tiny_detector(path: Path) -> Path:
    """The tests' tiny 8-feature detector, built once (seconds) and cached."""
    if (path / "manifest.json").is_file():
        return path
    from fixtures_models import make_tiny_classifier, make_tiny_data, make_tiny_distilled

    from monitor import ModelDistillation, save_detector

    x, labels = make_tiny_data()
    detector = ModelDistillation(
        distilled_model=make_tiny_distilled(),
        model=make_tiny_classifier(x, labels),
        loss_type="kld",
        temperature=0.5,
        data_type="tabular",
    )
    detector.fit(x[:400], epochs=5, batch_size=64, verbose=False)
    detector.infer_threshold(x[400:], threshold_perc=95.0)
    save_detector(detector, path, name="tiny", version="bench")
    return path


class Topics:
    """Per-scenario topics, deleted at the end unless kept as the evidence of a loss."""

    def __init__(self, admin: AdminClient) -> None:
        self.admin = admin
        self.made: list[str] = []

    def setup(self, detector: Path, mode: str, partitions: int, batch: int = 16) -> Setup:
        tag = uuid.uuid4().hex[:8]
        names = [f"faultbench-{role}-{tag}" for role in ("in", "alerts", "dlq")]
        for name, parts in zip(names, (partitions, partitions, 1), strict=True):
            create_topic(self.admin, name, parts)
            self.made.append(name)
        input_topic, alert_topic, dead_letter_topic = names
        return Setup(
            local_kafka.BOOTSTRAP,
            detector,
            input_topic,
            alert_topic,
            dead_letter_topic,
            group=f"faultbench-{mode}-{tag}",
            partitions=partitions,
            mode=mode,
            batch_size=batch,
        )

    def keep(self, setup: Setup) -> list[str]:
        """Leave a setup's topics in place (a scenario lost records: they show where)."""
        kept = [setup.input_topic, setup.alert_topic, setup.dead_letter_topic]
        self.made = [t for t in self.made if t not in kept]
        return kept

    def cleanup(self) -> None:
        delete_topics(self.admin, self.made)


def backlog(setup: Setup, n: int, log_dir: Path) -> dict[str, float]:
    """A worker process (default batch settings) works off ``n`` queued records."""
    traffic = make_traffic(setup.detector, tiny_instances(n, seed=11))
    _produce_fast(setup.bootstrap, setup.input_topic, traffic.records())
    n = len(traffic)
    args = setup.args()
    size = args.index("--max-batch-size")
    del args[size : size + 4]  # the defaults for --max-batch-size and --max-batch-wait-ms
    pace = Pace()
    with Workers(log_dir) as workers:
        worker = workers.start(args, f"backlog-{setup.mode}")
        pace.started(worker, worker.spawned, "the backlog worker", [worker])
        first_at, first = time.monotonic(), setup.committed()
        pace.progress(setup.committed, n, "the backlog worked off", [worker])
        took = time.monotonic() - first_at
        pid = worker.proc.pid
        peak_kb = sum(peak_rss_kb(p) for p in [pid, *children_of(pid)])
        workers.stop(worker)
    return {
        "records": float(n),
        "records_per_s": round((n - first) / max(took, 1e-9)),
        "peak_rss_mb": round(peak_kb / 1024),
    }


def _produce_fast(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    failed: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(300) or failed:
        raise RuntimeError(f"backlog not produced: {failed[:3]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer kills, smaller backlog")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs per mode (5; quick 3)")
    parser.add_argument("--rate", type=float, default=None, help="records/s while faults run")
    parser.add_argument(
        "--backlog", type=int, default=None, help="backlog records (1,000,000; quick 100,000)"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated: kill,survivor,outage,poison,restart,backlog"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args(argv)
    kills = args.kills or (3 if args.quick else 5)
    rate = args.rate or (300.0 if args.quick else 500.0)
    backlog_n = args.backlog if args.backlog is not None else (100_000 if args.quick else 1_000_000)
    skip = set(filter(None, args.skip.split(",")))

    local_kafka.ensure_up()
    detector = tiny_detector(CACHE / "tiny-detector")
    topics = Topics(AdminClient({"bootstrap.servers": local_kafka.BOOTSTRAP}))
    run_dir = CACHE / f"faults-{time.strftime('%Y%m%d-%H%M%S')}"
    reports: list[FaultReport] = []
    started = time.monotonic()

    def record(got: list[FaultReport], since: float, *setups: Setup) -> None:
        reports.extend(got)
        for r, setup in zip(got, setups, strict=True):
            took = time.monotonic() - since
            print(f"{r.scenario} [{r.mode}]: {len(r.missing)} missing, {r.duplicated} "
                  f"duplicated ({took:.0f}s) {r.extra or ''}", flush=True)  # fmt: skip
            if r.missing or r.unexpected or (r.mode == EOS and r.duplicated):
                print(f"  missing {r.missing[:5]}, unexpected {r.unexpected[:5]}; topics "
                      f"kept, group {setup.group}: {topics.keep(setup)}; worker logs under "
                      f"{run_dir}", flush=True)  # fmt: skip

    # Streamed scenarios cycle through this pool with fresh ids, for as long as they run.
    pool = make_traffic(detector, tiny_instances(20_000, seed=3))
    throughput: dict[str, dict[str, float]] = {}
    try:
        for mode in MODES:
            if "kill" not in skip:
                t0, setup = time.monotonic(), topics.setup(detector, mode, 4)
                rng = random.Random(mode)
                log_dir = run_dir / f"kill-{mode}"
                record([kill_and_restart(setup, pool, kills, rng, log_dir, rate=rate)], t0, setup)
            if "survivor" not in skip:
                t0, setup = time.monotonic(), topics.setup(detector, mode, 4)
                log_dir = run_dir / f"survivor-{mode}"
                record(
                    [survivor_takes_over(setup, pool, random.Random(mode), log_dir, rate)],
                    t0,
                    setup,
                )
            if "outage" not in skip:
                t0, setup = time.monotonic(), topics.setup(detector, mode, 2)
                small = make_traffic(detector, tiny_instances(4_000, seed=5))
                record([alert_topic_outage(setup, small, topics.admin)], t0, setup)
            if "poison" not in skip:
                t0, setup = time.monotonic(), topics.setup(detector, mode, 2)
                record([poison_flood(setup, copies=10)], t0, setup)
        if "restart" not in skip:
            t0 = time.monotonic()
            setups = [topics.setup(detector, mode, 4) for mode in MODES]
            record(
                broker_restart(setups, pool, local_kafka.restart, rate, after_s=10.0), t0, *setups
            )
        if "backlog" not in skip and backlog_n > 0:
            for mode in MODES:
                setup = topics.setup(detector, mode, 4)
                throughput[mode] = backlog(setup, backlog_n, run_dir / f"backlog-{mode}")
                print(f"backlog [{mode}]: {throughput[mode]}", flush=True)
    finally:
        topics.cleanup()

    command = "make kafka-up && .venv/bin/python bench/faults.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    faults_table = table(reports)
    lines = [faults_table, ""]
    if throughput:
        lines += [
            "| mode | backlog records | records/s | peak RSS (MB) |",
            "| --- | --- | --- | --- |",
            *(
                f"| {mode} | {int(t['records']):,} | {int(t['records_per_s']):,} | {int(t['peak_rss_mb'])} |"
                for mode, t in throughput.items()
            ),
        ]
        if ALO in throughput and EOS in throughput:
            ratio = throughput[EOS]["records_per_s"] / max(throughput[ALO]["records_per_s"], 1)
            lines.append(f"\nexactly-once / at-least-once throughput: {ratio:.2f}")
    lines.append(f"\n({time.monotonic() - started:.0f} s; {command.strip()})")
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"faults-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "command": command,
                "reports": [_summary(r) for r in reports],
                "backlog": throughput,
                "seconds": round(time.monotonic() - started),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")
    bad = [r for r in reports if r.missing or r.unexpected or (r.mode == EOS and r.duplicated)]
    return 1 if bad else 0


def _summary(r: FaultReport) -> dict[str, Any]:
    out = asdict(r)
    out["missing"] = len(r.missing)
    out["unexpected"] = len(r.unexpected)
    out["unexplained_duplicates"] = len(r.unexplained_duplicates)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
