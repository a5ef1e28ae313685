"""Make docs/dashboard.png from real data: worker, Prometheus, digits traffic, render.

Runs the digits demo detector in a real worker (``python -m monitor run``) against a
Kafka broker (default: the local one, ``make kafka-up``), a real Prometheus scraping it
every second with the project's alert rules, and a traffic generator in four phases:
clean digits; clean mixed with natural corruptions (severities 3-5); mixed with FGSM
attacks against the demo classifier; clean again. A few malformed records go along so
that dead letters show. Then ``render_snapshot.py`` draws the dashboard panels from
Prometheus, and everything started here is stopped.

    python deploy/grafana/snapshot_demo.py --seconds 100 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import render_snapshot

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# (share of the run, fraction corrupted, corruption kinds) per phase.
PHASES = (
    (0.25, 0.0, ()),
    (0.30, 0.3, ("natural",)),
    (0.25, 0.5, ("natural", "fgsm")),
    (0.20, 0.0, ()),
)
MALFORMED = (
    b"{not json",
    b'{"id": "short", "instance": [0.5, 0.5]}',
    b'{"id": "nan", "instance": [NaN]}',
    b"",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corrupted_pool(detector: Path, seed: int) -> dict[str, np.ndarray]:
    """Clean test digits, natural corruptions at severity 3-5, FGSM at two epsilons."""
    import keras

    from monitor.corruptions import NATURAL, fgsm
    from monitor.detector.demo import CLASSIFIER_FILE, load_digits_split

    _, _, x, y = load_digits_split(seed)
    rng = np.random.default_rng(seed)
    natural = [fn(x, sev, rng) for fn in NATURAL.values() for sev in (3, 4, 5)]
    classifier = keras.saving.load_model(detector / CLASSIFIER_FILE, safe_mode=True)
    attacks = [fgsm(classifier, x, y, eps) for eps in (0.1, 0.2)]
    return {
        "clean": x,
        "natural": np.concatenate(natural),
        "fgsm": np.concatenate(attacks),
    }


def create_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(timeout=30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": bootstrap}).delete_topics(names, operation_timeout=30)


def start_worker(args: argparse.Namespace, topics: list[str], port: int) -> subprocess.Popen[bytes]:
    inp, alerts, dlq = topics
    cmd = [
        sys.executable, "-m", "monitor", "run",
        "--bootstrap-servers", args.bootstrap_servers,
        "--detector", str(args.detector),
        "--input-topic", inp, "--alert-topic", alerts, "--dead-letter-topic", dlq,
        "--group-id", f"snapshot-{uuid.uuid4().hex[:8]}",
        "--metrics-port", str(port),
        "--stats-interval-ms", "1000",
        "--rate-window", "500",
        "--summary-interval-s", "0",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr)


def start_prometheus(workdir: Path, target: str) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("prometheus")
    if exe is None:
        raise SystemExit("prometheus not found: `make tools` installs the Debian package")
    port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        f"  - job_name: distillation-monitor\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, port


def wait_http(url: str, seconds: float, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s")


def stream(args: argparse.Namespace, topic: str, pool: dict[str, np.ndarray]) -> int:
    """Produce the phases at a steady rate; returns the number of records sent."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 20})
    rng = np.random.default_rng(args.seed)
    tick, sent = 0.1, 0
    per_tick = max(1, round(args.rate * tick))
    for share, corrupted, kinds in PHASES:
        until = time.monotonic() + share * args.seconds
        while time.monotonic() < until:
            started = time.monotonic()
            for _ in range(per_tick):
                kind = "clean"
                if kinds and rng.random() < corrupted:
                    kind = str(rng.choice(kinds))
                x = pool[kind][rng.integers(len(pool[kind]))]
                body = {"id": f"r{sent}", "instance": x.tolist(), "corruption": kind}
                producer.produce(topic, orjson.dumps(body))
                sent += 1
            if rng.random() < args.malformed_per_s * tick:
                producer.produce(topic, MALFORMED[rng.integers(len(MALFORMED))])
                sent += 1
            producer.poll(0)
            time.sleep(max(0.0, tick - (time.monotonic() - started)))
    if producer.flush(30):
        raise SystemExit("some demo records were not delivered")
    return sent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap-servers", default="127.0.0.1:19092")
    p.add_argument("--detector", type=Path, default=Path(tempfile.gettempdir()) / "dmon-digits")
    p.add_argument("--seconds", type=float, default=100.0, help="traffic duration")
    p.add_argument("--rate", type=float, default=200.0, help="records per second")
    p.add_argument("--malformed-per-s", type=float, default=0.5, help="malformed records/s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    p.add_argument(
        "--prometheus-dir",
        type=Path,
        help="keep Prometheus' config and data here (default: a temporary directory), "
        "to render again later with other options",
    )
    p.add_argument("--rate-interval", default="10s", help="rate() window of the rendered panels")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if not (args.detector / "demo.json").exists():
        from monitor.detector.demo import build_demo_detector

        print(f"building the demo detector in {args.detector} ...", file=sys.stderr)
        build_demo_detector(args.detector, seed=args.seed)
    pool = corrupted_pool(args.detector, args.seed)
    run = uuid.uuid4().hex[:8]
    topics = [f"snapshot-{run}-{name}" for name in ("records", "alerts", "dead-letters")]
    create_topics(args.bootstrap_servers, topics)
    with ExitStack() as stack:
        if args.prometheus_dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dmon-prom-"))
        else:
            tmp = str(args.prometheus_dir)
            args.prometheus_dir.mkdir(parents=True, exist_ok=True)
        stack.callback(delete_topics, args.bootstrap_servers, topics)
        metrics_port = free_port()
        worker = start_worker(args, topics, metrics_port)
        stack.callback(_stop, worker)
        wait_http(f"http://127.0.0.1:{metrics_port}/readyz", 120, worker, "the worker")
        prom, prom_port = start_prometheus(Path(tmp), f"127.0.0.1:{metrics_port}")
        stack.callback(_stop, prom)
        url = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{url}/-/ready", 60, prom, "prometheus")
        time.sleep(5)
        start = time.time() - 4
        sent = stream(args, topics[0], pool)
        print(f"sent {sent} records; letting Prometheus catch up", file=sys.stderr)
        time.sleep(8)
        render_args = [
            "--out", str(args.out),
            "--start", f"{start:.0f}",
            "--end", f"{time.time():.0f}",
            "--rate-interval", args.rate_interval,
            "--title", "distillation-monitor: digits demo, live worker on Kafka",
        ]  # fmt: skip
        print("render again: render_snapshot.py URL " + " ".join(render_args), file=sys.stderr)
        return render_snapshot.main([url, *render_args])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
