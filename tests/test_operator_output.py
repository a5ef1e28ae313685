"""What an operator reads: log levels everywhere, JSON log lines with fields, and no raw
librdkafka or TensorFlow line on the terminal."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest
from confluent_kafka import Consumer, Producer
from fixtures_kafka import produce_messages
from raw_lines import RAW
from worker_harness import metric_sum, scrape, wait_until

from monitor.cli import build_parser
from monitor.config import load_config
from monitor.kafka_properties import for_client

ROOT = Path(__file__).resolve().parents[1]
P = "distillation_monitor_"


def test_the_raw_line_pattern_knows_the_lines_it_must_catch() -> None:
    for line in [
        "%4|1796184108.823|CONFWARN|rdkafka#producer-1| [thrd:app]: Configuration property",
        "%6|1796184028.187|BGQUEUE|rdkafka#producer-6| [thrd:background]: Purging 1",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796184098.641944   25962 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796184107.459515   25962 cuda_platform.cc:52] failed call to cuInit",
    ]:
        assert RAW.search(line), line
    assert not RAW.search('{"level": "WARNING", "logger": "monitor.kafka.producer"}')


# -- log levels ------------------------------------------------------------------------
def test_every_command_takes_log_level_after_its_name() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands and {"run", "alerts", "demo", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        flags = [a for a in sub._actions if "--log-level" in a.option_strings]
        assert len(flags) == 1 and flags[0].choices == ("DEBUG", "INFO", "WARNING", "ERROR"), name


def test_log_level_comes_from_the_flag_either_side_of_the_command_then_env_then_toml(
    tmp_path: Path, saved_detector_dir: Path
) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text(f'detector = "{saved_detector_dir}"\nlog-level = "error"\n')
    parse = build_parser().parse_args
    assert load_config(parse(["run", "--config", str(toml)]), environ={}).log_level == "ERROR"
    env = {"DMON_LOG_LEVEL": "debug"}
    assert load_config(parse(["run", "--config", str(toml)]), environ=env).log_level == "DEBUG"
    after = parse(["run", "--config", str(toml), "--log-level", "warning"])
    assert load_config(after, environ=env).log_level == "WARNING"
    before = parse(["--log-level", "info", "run", "--config", str(toml)])
    assert load_config(before, environ=env).log_level == "INFO"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_log_level_is_one_line_naming_the_choices(saved_detector_dir: Path) -> None:
    flag = _cli("info", str(saved_detector_dir), "--log-level", "verbose")
    assert flag.returncode == 2 and "Traceback" not in flag.stderr
    errors = [line for line in flag.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "DEBUG" in errors[0] and "verbose" in errors[0].lower()
    env = _cli("info", str(saved_detector_dir), env={"DMON_LOG_LEVEL": "verbose"})
    assert env.returncode == 1
    assert env.stderr.splitlines() == [
        "distillation-monitor: error: invalid log_level (from environment DMON_LOG_LEVEL): "
        "'VERBOSE' is not one of DEBUG, INFO, WARNING, ERROR"
    ]


# -- Kafka clients ---------------------------------------------------------------------
def test_kafka_options_are_split_by_the_client_they_apply_to() -> None:
    given = {"fetch.wait.max.ms": "100", "linger.ms": "10", "security.protocol": "PLAINTEXT"}
    assert for_client("consumer", given) == {
        "fetch.wait.max.ms": "100",
        "security.protocol": "PLAINTEXT",
    }
    assert for_client("producer", given) == {"linger.ms": "10", "security.protocol": "PLAINTEXT"}
    assert for_client("admin", given) == {"security.protocol": "PLAINTEXT"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.kafka
def test_clients_made_from_the_config_log_through_python_and_warn_about_nothing(
    kafka_bootstrap: str, tmp_path: Path, saved_detector_dir: Path
) -> None:
    options = ["fetch.wait.max.ms=100", "linger.ms=10", "socket.keepalive.enable=true"]
    argv = ["run", "--detector", str(saved_detector_dir), "--bootstrap-servers", kafka_bootstrap]
    for option in options:
        argv += ["--kafka-option", option]
    config = load_config(build_parser().parse_args(argv), environ={})
    seen = Records()
    kafka = logging.getLogger("monitor.kafka")
    kafka.addHandler(seen)
    level = kafka.level
    kafka.setLevel(logging.DEBUG)
    try:
        producer = Producer({**config.producer_conf(), "debug": "conf"})
        producer.poll(1.0)
        consumer = Consumer({**config.consumer_conf(), "debug": "conf"})
        consumer.consume(timeout=1.0)
        consumer.close()
        producer.flush(5)
    finally:
        kafka.removeHandler(seen)
        kafka.setLevel(level)
    facilities = {r.args[0] for r in seen.records if isinstance(r.args, tuple) and r.args}
    assert facilities, "librdkafka's lines (debug=conf) reach Python logging"
    assert "CONFWARN" not in facilities
    assert {r.name for r in seen.records} <= {"monitor.kafka.producer", "monitor.kafka.consumer"}


# -- a worker and its traffic, as an operator runs them -----------------------------------
class Output:
    """A process's stdout and stderr lines, read as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(s, lines), daemon=True)
            for s, lines in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: IO[bytes] | None, lines: list[str]) -> None:
        assert stream is not None
        for raw in stream:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(30)
        for thread in self._threads:
            thread.join(30)
        return code

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.err) if line.startswith("{")]


def _start(args: list[str]) -> Output:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "DMON_"))}
    env["DMON_LOCAL_KAFKA_PORT"] = os.environ.get("DMON_LOCAL_KAFKA_PORT", "19092")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Output(proc)


def _port(worker: Output) -> int | None:
    for event in worker.events():
        if event.get("event") == "metrics":
            return int(event["port"])
    return None


@pytest.mark.kafka
@pytest.mark.slow
def test_demo_traffic_leaves_no_raw_library_line_and_json_logs_carry_fields(
    kafka_bootstrap: str, make_topic: Any, unique_group: str, demo_detector_dir: Path
) -> None:
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    both = ["--kafka-option", "fetch.wait.max.ms=100", "--kafka-option", "linger.ms=10"]
    worker = _start(
        ["run", "--bootstrap-servers", kafka_bootstrap, "--input-topic", inp,
         "--alert-topic", alerts, "--dead-letter-topic", dlq, "--group-id", unique_group,
         "--detector", str(demo_detector_dir), "--metrics-port", "0", "--log-format", "json",
         "--summary-interval-s", "1", "--kafka-option", "socket.keepalive.enable=true", *both]
    )  # fmt: skip
    traffic = _start(
        ["produce-demo", "--bootstrap-servers", kafka_bootstrap, "--topic", inp,
         "--detector", str(demo_detector_dir), "--rate", "100", "--duration", "3600",
         "--malformed", "0", *both]
    )  # fmt: skip
    try:
        produce_messages(kafka_bootstrap, inp, [(None, b"{not json"), (None, b'{"id": 1}')])
        wait_until(
            lambda: _port(worker) is not None or worker.proc.poll() is not None, 120, "metrics"
        )
        port = _port(worker)
        assert port is not None, "\n".join(worker.err[-20:])

        def busy() -> bool:
            metrics = scrape(port)
            return (
                metric_sum(metrics, P + "alerts_published_total") >= 20
                and metric_sum(metrics, P + "records_dead_lettered_total") >= 2
                and any(e.get("event") == "progress" for e in worker.events())
            )

        wait_until(busy, 120, "alerts, dead letters and a progress line")
    finally:
        traffic_code = traffic.stop(signal.SIGINT)
        worker_code = worker.stop(signal.SIGTERM)
    assert worker_code == 0, "\n".join(worker.err[-20:])
    assert traffic_code in (0, 130), "\n".join(traffic.err[-20:])

    for name, lines in [
        ("worker stdout", worker.out),
        ("worker stderr", worker.err),
        ("traffic stdout", traffic.out),
        ("traffic stderr", traffic.err),
    ]:
        raw = [line for line in lines if RAW.search(line)]
        assert not raw, f"{name} has lines no logger formatted: {raw[:5]}"
    assert not worker.out, "the worker writes logs to stderr only"
    events = worker.events()
    assert len(events) == len(worker.err), "every worker line is a JSON object"
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in events)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(str(event.get("event")), []).append(event)
    ready = by_kind["ready"]
    assert len(ready) == 1 and 0 < ready[0]["startup_s"] < 600
    started = by_kind["started"][0]
    assert started["topic"] == inp and started["group"] == unique_group
    assert started["output_topics"] == [alerts, dlq]
    progress = by_kind["progress"][-1]
    assert progress["consumed"] > 0 and {"records_per_s", "lag", "elapsed_s"} <= set(progress)
    assert by_kind["finished"][0]["dead_lettered"] >= 2
    assert not [e for e in by_kind.get("kafka", []) if e.get("facility") == "CONFWARN"]
