#!/usr/bin/env python3
"""Soak: one worker with default settings under mixed normal and hostile traffic for minutes.

Long runs find what a test's one cycle cannot: memory that creeps up record by record,
a crash on the thousandth shape bomb, offsets that stop short. The traffic is
``tests/hostile_traffic.py`` (every ``--every``-th record hostile, the classes in turn,
the poison corpus among them) at a steady ``--rate`` through a token-bucket producer,
into one ``monitor run`` process (default settings, ``--record-format auto``). Its RSS
(worker plus decoding children) is sampled every few seconds. At the end the worker must
commit the whole topic, and then: no crash, alerts exactly the set the detector flags
offline, every hostile record dead-lettered with its reason, and RSS at the end within
10% of RSS after the warm-up.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 2000] [--exactly-once]

Prints a markdown table and writes JSON to .local/soak/soak-<time>.json; exits 1 on any
failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests", ROOT / "deploy" / "local"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kafka as local_kafka  # noqa: E402  (deploy/local/kafka.py)
from confluent_kafka.admin import AdminClient  # noqa: E402
from fault_scenarios import ALO, EOS, read_to_end  # noqa: E402
from hostile_traffic import (  # noqa: E402
    HostileProducer,
    HostileTraffic,
    WorkerProcess,
    check_alive,
    check_outputs,
    log_tail,
    metrics_summary,
    rss_mb,
    wait_committed_to_end,
    wait_ready,
    worker_args,
)
from worker_harness import scrape  # noqa: E402

from bench.faults import CACHE, Topics, tiny_detector  # noqa: E402

OUT = ROOT / ".local" / "soak"
PARTITIONS = 2
SAMPLE_S = 5.0
RSS_GROWTH_LIMIT = 1.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="producing time (10)")
    parser.add_argument("--rate", type=float, default=2000.0, help="records/s (2000)")
    parser.add_argument("--every", type=int, default=50, help="one record in N is hostile (50)")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds before the RSS baseline"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exactly-once", action="store_true", help="run the worker exactly-once")
    args = parser.parse_args(argv)
    mode = EOS if args.exactly_once else ALO

    local_kafka.ensure_up()
    detector = tiny_detector(CACHE / "tiny-detector")
    traffic = HostileTraffic(detector, seed=args.seed, every=args.every)
    topics = Topics(AdminClient({"bootstrap.servers": local_kafka.BOOTSTRAP}))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        setup = topics.setup(detector, mode, PARTITIONS)
        group = f"soak-{uuid.uuid4().hex[:8]}"
        cmd = worker_args(
            setup.bootstrap,
            detector,
            setup.input_topic,
            setup.alert_topic,
            setup.dead_letter_topic,
            group,
            args.exactly_once,
        )
        result = soak(setup, group, cmd, traffic, args, OUT / f"soak-{stamp}.log")
    finally:
        topics.cleanup()
    result["command"] = "make soak  # .venv/bin/python bench/soak.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print("\n" + table(result))
    out = OUT / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out}")
    if result["failures"]:
        print("FAILED:\n  " + "\n  ".join(result["failures"]))
        return 1
    return 0


def soak(
    setup: Any,
    group: str,
    cmd: list[str],
    traffic: HostileTraffic,
    args: argparse.Namespace,
    log: Path,
) -> dict[str, Any]:
    """Run the worker through the traffic; every number the table shows."""
    failures: list[str] = []
    crashes = 0
    committed = False
    metrics: dict[str, dict[str, float]] = {}
    samples: list[tuple[float, float]] = []
    producer = HostileProducer(setup.bootstrap, setup.input_topic, traffic, args.rate)
    worker = WorkerProcess.start(cmd, log)
    started = time.monotonic()
    produced_s = 0.0
    try:
        port = wait_ready(worker, setup.input_topic)
        started = time.monotonic()
        producer.start(args.minutes * 60.0)
        next_sample = started
        while producer.alive():
            now = time.monotonic()
            if now >= next_sample:
                check_alive(worker, f"after {now - started:.0f}s of traffic")
                samples.append((round(now - started, 1), round(rss_mb(worker.proc.pid), 1)))
                next_sample += SAMPLE_S
                if len(samples) % 12 == 0:
                    e = producer.expected
                    print(
                        f"{now - started:5.0f}s: {e.sent:,} sent ({e.hostile_sent:,} hostile), "
                        f"RSS {samples[-1][1]:.0f} MB",
                        flush=True,
                    )
            time.sleep(0.2)
        produced_s = time.monotonic() - started
        producer.finish()
        wait_committed_to_end(
            worker, setup.bootstrap, group, setup.input_topic, PARTITIONS, timeout=600
        )
        committed = True
        samples.append((round(time.monotonic() - started, 1), round(rss_mb(worker.proc.pid), 1)))
        metrics = metrics_summary(scrape(port))
        check_alive(worker, "after committing everything")
    except AssertionError as exc:
        print(exc, flush=True)
        failures.append(str(exc).splitlines()[0])
        crashes = int(worker.exited())
        produced_s = produced_s or time.monotonic() - started
        producer.stop()
        try:
            producer.finish(60)
        except AssertionError as late:
            failures.append(str(late))
    finally:
        producer.stop()
        if not worker.exited():
            code = worker.stop()
            if code != 0:
                failures.append(f"the worker exited {code} on SIGTERM")
    expected = producer.expected
    alerts = read_to_end(setup.bootstrap, setup.alert_topic, timeout=600)
    dead = read_to_end(setup.bootstrap, setup.dead_letter_topic, timeout=600)
    verdict = check_outputs(traffic, expected, setup.input_topic, alerts, dead)
    del alerts, dead
    failures += verdict.problems(exactly_once=args.exactly_once)
    if crashes:
        failures.append(f"the worker crashed; {log_tail(worker, 15)}")
    after_warmup = next((rss for t, rss in samples if t >= args.warmup), None)
    at_end = samples[-1][1] if samples else None
    ratio = at_end / after_warmup if after_warmup and at_end else None
    if ratio is None:
        failures.append(f"no RSS sample after the {args.warmup:.0f}s warm-up")
    elif ratio > RSS_GROWTH_LIMIT:
        failures.append(f"RSS grew {ratio:.2f}x ({after_warmup:.0f} -> {at_end:.0f} MB)")
    return {
        "mode": EOS if args.exactly_once else ALO,
        "minutes": args.minutes,
        "rate_target": args.rate,
        "every": args.every,
        "duration_s": round(produced_s, 1),
        "records_sent": expected.sent,
        "hostile_records": expected.hostile_sent,
        "records_per_s": round(expected.sent / produced_s) if produced_s else 0,
        "megabytes_sent": round(expected.bytes_sent / 1e6, 1),
        "crashes": crashes,
        "committed_to_end": committed,
        "alerts_expected": verdict.alerts_expected,
        "alerts_seen": verdict.alerts_seen,
        "alert_messages": verdict.alert_messages,
        "alerts_missing": len(verdict.missing),
        "alerts_unexpected": len(verdict.unexpected),
        "dead_letters_expected": verdict.dead_expected,
        "dead_letters_seen": verdict.dead_seen,
        "dead_letters_by_reason": dict(sorted(verdict.dead_by_reason.items())),
        "dead_letters_by_reason_metric": metrics.get("dead_lettered", {}),
        "shortened": verdict.shortened,
        "shortened_metric": metrics.get("shortened", {}),
        "rss_after_warmup_mb": after_warmup,
        "rss_end_mb": at_end,
        "rss_ratio": round(ratio, 3) if ratio else None,
        "peak_rss_mb": round(worker.peak_rss_mb or 0.0, 1),
        "rss_samples": samples,
        "failures": failures,
    }


def table(r: dict[str, Any]) -> str:
    """The run as a small markdown table."""
    reasons = ", ".join(f"{k} {v}" for k, v in r["dead_letters_by_reason"].items())
    rows = [
        ("mode", r["mode"]),
        ("duration", f"{r['duration_s']:.0f} s"),
        ("records sent", f"{r['records_sent']:,} ({r['megabytes_sent']:,} MB)"),
        ("hostile records", f"{r['hostile_records']:,}"),
        ("records/s", f"{r['records_per_s']:,} (target {r['rate_target']:,.0f})"),
        ("crashes", r["crashes"]),
        ("committed to end", "yes" if r["committed_to_end"] else "no"),
        (
            "alerts expected / seen / missing / unexpected",
            f"{r['alerts_expected']:,} / {r['alerts_seen']:,} / {r['alerts_missing']:,} / "
            f"{r['alerts_unexpected']:,} ({r['alert_messages']:,} messages)",
        ),
        (
            "dead letters",
            f"{r['dead_letters_seen']:,} of {r['dead_letters_expected']:,}: {reasons}",
        ),
        ("shortened", f"{r['shortened']:,} (metric {r['shortened_metric']})"),
        ("RSS after warm-up", f"{r['rss_after_warmup_mb']} MB"),
        ("RSS at end", f"{r['rss_end_mb']} MB (peak {r['peak_rss_mb']} MB)"),
        (
            "ratio",
            f"{r['rss_ratio']} ({'within' if r['rss_ratio'] and r['rss_ratio'] <= RSS_GROWTH_LIMIT else 'not within'} 10%)",
        ),
    ]
    lines = ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
