"""The decoding child process: the same answers as decoding in-process, and no batch lost
when the child dies or hangs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Message
from poison_corpus import for_format, good_record, poison_corpus

from monitor.stream.decode_process import DecodeProcess
from monitor.stream.records import DecodedBatch, InputSpec, RecordDecoder, RecordFormat

SPEC = InputSpec((8, 8), 10, max_message_bytes=4096)
LABELS = [("ce_type", b"org.kubeflow.serving.inference.request"), ("ce_namespace", b"fraud")]


def msg(value: bytes | None, headers: object = None) -> Message:
    return Message(topic="records", partition=0, offset=0, value=value, headers=headers)


def mixed_batch() -> list[Message]:
    """Good records (some with headers), the whole poison corpus, and a response event."""
    messages = [msg(good_record(SPEC, seed), LABELS if seed % 2 else None) for seed in range(20)]
    messages += [
        msg(case.value, case.headers) for case in for_format(poison_corpus(SPEC), RecordFormat.JSON)
    ]
    messages.append(msg(good_record(SPEC, 99), [("ce_type", b"inference.response")]))
    return messages


def assert_same(got: DecodedBatch, want: DecodedBatch) -> None:
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.row_message, want.row_message)
    np.testing.assert_array_equal(got.row_in_message, want.row_in_message)
    np.testing.assert_array_equal(got.has_output, want.has_output)
    assert [asdict(d) for d in got.dead] == [asdict(d) for d in want.dead]
    assert got.ignored == want.ignored
    assert got.model_labels == want.model_labels


@pytest.fixture
def process() -> Iterator[DecodeProcess]:
    decoder = DecodeProcess(SPEC, RecordFormat.JSON, timeout_s=5, restart_backoff_s=0)
    decoder.start()
    yield decoder
    decoder.close()


def test_child_decodes_exactly_as_the_worker_would(process: DecodeProcess) -> None:
    messages = mixed_batch()
    want = RecordDecoder(SPEC, RecordFormat.JSON).decode(messages)
    assert want.dead and want.ignored and any(want.model_labels)  # the batch covers them
    for _ in range(3):  # and keeps doing so batch after batch
        assert_same(process.decode(messages), want)
    assert process.fallbacks == 0


def test_a_batch_without_rows_comes_back_as_one(process: DecodeProcess) -> None:
    messages = [msg(b"{"), msg(None), msg(good_record(SPEC, 1), [("ce_type", b"x.response")])]
    got = process.decode(messages)
    assert got.X.shape == (0, 8, 8) and got.X.dtype == np.float32
    assert_same(got, RecordDecoder(SPEC, RecordFormat.JSON).decode(messages))
    assert process.fallbacks == 0


def test_a_killed_child_costs_no_batch_and_is_replaced(process: DecodeProcess) -> None:
    failures: list[None] = []
    process.on_failure = lambda: failures.append(None)
    messages = mixed_batch()
    want = RecordDecoder(SPEC, RecordFormat.JSON).decode(messages)
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert_same(process.decode(messages), want)  # decoded here instead
    assert process.fallbacks == 1
    assert_same(process.decode(messages), want)  # by a new child
    assert process.pid not in (None, first)
    assert process.fallbacks == 1
    assert len(failures) == 1, "the failure is reported once (a metric counts it)"


def test_a_hung_child_is_killed_after_the_timeout(process: DecodeProcess) -> None:
    process.timeout_s = 0.5
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    batch = process.decode([msg(good_record(SPEC, 1))])
    assert batch.X.shape == (1, 8, 8)
    assert process.fallbacks == 1
    assert process.pid != pid


def test_closing_ends_the_child_cleanly() -> None:
    decoder = DecodeProcess(SPEC)
    decoder.start()
    child = decoder._process
    assert child is not None
    decoder.close()
    assert child.returncode == 0
    assert decoder.pid is None


def test_the_child_starts_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing importable here: the child must find this package
    monkeypatch.delenv("PYTHONPATH", raising=False)
    decoder = DecodeProcess(SPEC)
    try:
        batch = decoder.decode([msg(good_record(SPEC, 3))])
    finally:
        decoder.close()
    assert batch.X.shape == (1, 8, 8)
    assert decoder.fallbacks == 0, "decoded by the child, not in-process"
