#!/usr/bin/env python3
"""Profile the worker in-process on a fresh backlog of digits records (cProfile).

    .venv/bin/python bench/profile_worker.py [--records 100000] [--exactly-once] [--top 35]

Prints the worker's throughput over the run and the functions with the most own time
(``--sort cumulative`` for the call tree's heavy branches). For native frames and
threads use py-spy on ``python -m monitor run`` instead.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import detectors, prepare  # noqa: E402
from bench.kafkautil import BOOTSTRAP, admin, create_topic, delete_topics  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--exactly-once", action="store_true")
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--sort", default="tottime")
    p.add_argument("--no-profile", action="store_true", help="time only")
    args = p.parse_args()

    from monitor.config import WorkerConfig
    from monitor.stream.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    det = detectors.digits(ROOT / ".local" / "bench")
    tag = uuid.uuid4().hex[:6]
    topic, alerts = f"bench-profile-{tag}", f"bench-alerts-profile-{tag}"
    prepare.write_topic(topic, det.pool, args.records, 4)
    client = admin()
    create_topic(client, alerts, 4)
    config = WorkerConfig(
        bootstrap_servers=BOOTSTRAP,
        input_topic=topic,
        alert_topic=alerts,
        dead_letter_topic=f"{alerts}-dlq",
        group_id=f"bench-profile-{tag}",
        detector=str(det.path),
        metrics_port=0,
        summary_interval_s=0,
        exactly_once=args.exactly_once,
        transactional_id=f"bench-profile-{tag}",
    )
    worker = Worker(config, handle_signals=False)
    profiler = None if args.no_profile else cProfile.Profile()
    started = time.perf_counter()
    try:
        if profiler is not None:
            profiler.enable()
        summary = worker.run(max_records=args.records)
        if profiler is not None:
            profiler.disable()
    finally:
        delete_topics(client, [topic, alerts, f"{alerts}-dlq"])
    seconds = time.perf_counter() - started
    print(
        f"{summary.consumed:,} records in {seconds:.1f} s (with start-up): "
        f"{summary.consumed / seconds:,.0f} records/s"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
