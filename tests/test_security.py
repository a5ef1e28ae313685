"""Security: SASL credentials from the environment, secrets kept out of the output, and
detector directories that are never unpickled, at start or on reload."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kafka as local_kafka  # deploy/local/kafka.py
import numpy as np
import pytest
from fault_scenarios import alert_ids, make_traffic, tiny_instances
from fixtures_kafka import produce_messages
from worker_harness import (
    ROOT,
    json_record,
    metric_sum,
    running_worker,
    scrape,
    wait_until,
    worker_config,
)

P = "distillation_monitor_"
WRONG_PASSWORD = "wrong-Pa55word-7c1e"


def sasl_env(password: str) -> dict[str, str]:
    """The SASL listener's settings as DMON_KAFKA_* variables, as a deployment sets them."""
    return {
        "DMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DMON_KAFKA_SASL_MECHANISM": local_kafka.SASL_MECHANISM,
        "DMON_KAFKA_SASL_USERNAME": local_kafka.SASL_USER,
        "DMON_KAFKA_SASL_PASSWORD": password,
    }


def run_worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", *args],
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def worker_args(inp: str, alerts: str, dlq: str, group: str, detector: Path) -> list[str]:
    return [
        "--bootstrap-servers", local_kafka.SASL_BOOTSTRAP, "--input-topic", inp,
        "--alert-topic", alerts, "--dead-letter-topic", dlq, "--group-id", group,
        "--detector", str(detector), "--metrics-port", "0", "--summary-interval-s", "0",
    ]  # fmt: skip


@pytest.mark.kafka
def test_worker_uses_sasl_credentials_from_the_environment_and_never_prints_them(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tmp_path: Path,
) -> None:
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    traffic = make_traffic(saved_detector_dir, tiny_instances(60, seed=9))
    produce_messages(kafka_bootstrap, inp, traffic.records())
    log = tmp_path / "worker.log"
    args = worker_args(inp, alerts, dlq, unique_group, saved_detector_dir)
    proc = run_worker(
        [*args, "--max-records", str(len(traffic))], sasl_env(local_kafka.SASL_PASSWORD), log
    )
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert set(alert_ids(kafka_bootstrap, alerts)) == traffic.flagged
    assert local_kafka.SASL_PASSWORD not in output
    assert "'sasl.password': '***'" in output, "the logged configuration hides the secret"


@pytest.mark.kafka
def test_a_wrong_password_fails_clearly_without_printing_it(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tmp_path: Path,
) -> None:
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    log = tmp_path / "worker.log"
    args = worker_args(inp, alerts, dlq, unique_group, saved_detector_dir)
    proc = run_worker(args, sasl_env(WRONG_PASSWORD), log)
    try:
        wait_until(
            lambda: (
                proc.poll() is not None
                or "Authentication failed" in log.read_text("utf-8", "replace")
            ),
            60,
            "the worker to exit or report the failed authentication",
        )
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)
    output = log.read_text(errors="replace")
    assert "Authentication failed" in output, output[-3000:]
    assert WRONG_PASSWORD not in output
    assert local_kafka.SASL_PASSWORD not in output


# -- detector directories that must never be unpickled --------------------------------------
class _Touch:
    """Unpickling this creates ``path``: proof that someone ran a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def pickled_detector_dir(root: Path, marker: Path) -> Path:
    """alibi-detect's legacy layout whose pickles would run code: no manifest, only dill."""
    root.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps({"threshold": 1.0, "hook": _Touch(marker)})
    (root / "meta.dill").write_bytes(payload)
    (root / "ModelDistillation.dill").write_bytes(payload)
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "model.pkl").write_bytes(payload)
    return root


def test_run_refuses_a_pickled_detector_directory_before_touching_kafka(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    det = pickled_detector_dir(tmp_path / "det", marker)
    started = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--detector", str(det),
         "--bootstrap-servers", "127.0.0.1:1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode != 0
    assert "manifest" in started.stderr + started.stdout
    assert "Traceback" not in started.stderr
    assert not marker.exists()


@pytest.mark.kafka
def test_reload_refuses_a_directory_of_pickles_and_keeps_scoring(
    kafka_bootstrap: str,
    make_topic: Any,
    unique_group: str,
    saved_detector_dir: Path,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    det = tmp_path / "det"
    shutil.copytree(saved_detector_dir, det)
    inp, alerts, dlq = make_topic(1), make_topic(1, "alerts"), make_topic(1, "dlq")
    cfg = worker_config(kafka_bootstrap, det, inp, alerts, dlq, unique_group)
    with running_worker(cfg) as worker:
        port = worker.metrics_port or 0
        shutil.rmtree(det)
        pickled_detector_dir(det, marker)
        worker.request_reload()
        wait_until(
            lambda: metric_sum(scrape(port), P + "detector_reload_failures_total") == 1,
            30,
            "the reload to be refused",
        )
        far = np.full((1, 8), 40.0, dtype=np.float32)  # far from every training blob
        produce_messages(kafka_bootstrap, inp, [(None, json_record("after", far[0]))])
        wait_until(lambda: worker.summary.consumed >= 1, 30, "still scoring")
    assert not marker.exists(), "a pickle from the detector directory was executed"
    assert set(alert_ids(kafka_bootstrap, alerts)) == {"after"}


def test_a_keras_model_with_a_lambda_layer_is_refused_even_with_a_matching_manifest(
    saved_detector_dir: Path, tmp_path: Path
) -> None:
    """An attacker who controls the directory can rewrite the manifest's hashes too: Keras'
    safe mode must still refuse the bytecode a Lambda layer carries (the reload path uses
    the same loader, so the running detector is kept)."""
    import hashlib

    import keras

    from monitor import load_detector
    from monitor.errors import DetectorFormatError

    marker = tmp_path / "pwned"
    det = tmp_path / "det"
    shutil.copytree(saved_detector_dir, det)
    inputs = keras.Input(shape=(8,))
    # Bytecode that creates the marker whenever the layer runs (the path is a constant).
    touch = eval(f"lambda t: __import__('pathlib').Path({str(marker)!r}).touch() or t")
    hidden = keras.layers.Lambda(touch, output_shape=(8,))(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    keras.Model(inputs, outputs).save(det / "distilled_model.keras")
    manifest = json.loads((det / "manifest.json").read_text())
    digest = hashlib.sha256((det / "distilled_model.keras").read_bytes()).hexdigest()
    manifest["files"]["distilled_model.keras"] = digest
    (det / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DetectorFormatError, match=r"distilled_model\.keras.*Lambda"):
        load_detector(det)
    assert not marker.exists()


def child_environ(pid: int) -> dict[str, str]:
    """The environment a child process was started with, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {name.decode(): value.decode(errors="replace") for name, _, value in pairs}


def test_the_decoding_child_inherits_no_kafka_settings_or_other_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import Message
    from poison_corpus import good_record

    from monitor.stream.decode_process import DecodeProcess
    from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat

    monkeypatch.setenv("DMON_KAFKA_SASL_PASSWORD", WRONG_PASSWORD)
    monkeypatch.setenv("DMON_KAFKA_SSL_KEY_PASSWORD", WRONG_PASSWORD + "-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_PASSWORD + "-aws")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = InputSpec((8,), 3, max_message_bytes=4096)
    messages = [Message(value=good_record(spec, seed)) for seed in range(5)]
    decoder = DecodeProcess(spec, RecordFormat.JSON, timeout_s=30, restart_backoff_s=0)
    decoder.start()
    try:
        assert decoder.pid is not None
        decoded = decoder.decode(messages)
        assert decoder.fallbacks == 0, "the child decoded the batch itself"
        # Read once the child has answered: Popen returns when exec closes its pipe,
        # before the kernel has set up the new environment (/proc reads it as empty).
        env = child_environ(decoder.pid)
    finally:
        decoder.close()
    np.testing.assert_array_equal(decoded.X, RecordDecoder(spec).decode(messages).X)
    assert not [name for name in env if name.startswith("DMON_") or "SECRET" in name]
    assert not [value for value in env.values() if WRONG_PASSWORD in value]
    assert "PATH" in env, f"no environment read from the child: {env}"
    assert env["OMP_NUM_THREADS"] == "1"  # thread settings still reach the child
