"""The machine's limits for each stage of the worker, measured alone on the same data.

1. consume: confluent-kafka with the worker's consumer settings, messages discarded;
2. score: the worker's scoring step (``DetectorHandle.score``) on in-memory batches;
3. decode: the worker's ``RecordDecoder`` on the consumed messages; for JSON records the
   whole-batch path reads, also the two steps that path cannot avoid, timed alone on the
   same batches (``json_decode_floor``).

Each runs in this process, which has TensorFlow loaded like the worker has, with
``gc.freeze()`` applied by the caller after start-up like the worker does.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson
from confluent_kafka import Consumer, Message

from monitor.config import WorkerConfig
from monitor.stream import json_batch
from monitor.stream.formats import skeleton
from monitor.stream.records import InputSpec, RecordDecoder, RecordFormat
from monitor.stream.scoring import DetectorHandle

CONSUME_BATCH = 4096


@dataclass
class Consumed:
    records: int
    seconds: float
    sample: list[bytes]  # the first values, kept for the decode and scoring stages

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def consume_limit(topic: str, n: int, keep: int, bootstrap: str) -> Consumed:
    """Read ``n`` records as fast as possible; time from the first message to the last.

    The records of the first ``consume()`` call arrived before the clock started and are
    left out; calls ask for at most ``n / 20`` records so that part stays small.
    """
    conf = WorkerConfig(bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}")
    consumer = Consumer({**conf.consumer_conf(), "statistics.interval.ms": 0})
    consumer.subscribe([topic])
    per_call = max(1, min(CONSUME_BATCH, n // 20))
    sample: list[bytes] = []
    got = first = 0
    started = 0.0
    deadline = time.monotonic() + 120
    try:
        while got < n and time.monotonic() < deadline:
            # (never more than is left: consume() waits for its count or the timeout)
            messages = consumer.consume(num_messages=min(per_call, n - got), timeout=1.0)
            if messages and not got:
                started = time.perf_counter()
                first = len(messages)
            got += len(messages)
            if len(sample) < keep:
                sample.extend(m.value() or b"" for m in messages[: keep - len(sample)])
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    if got < n:
        raise RuntimeError(f"consumed only {got} of {n} records from {topic} in 120s")
    return Consumed(got - first, seconds, sample)


def as_messages(values: list[bytes], topic: str) -> list[Message]:
    return [
        Message(topic=topic, partition=0, offset=i, value=v, timestamp=(1, 0))
        for i, v in enumerate(values)
    ]


def decode_limit(
    messages: list[Message],
    shape: tuple[int, ...],
    batch: int,
    repeat: int = 3,
    fmt: RecordFormat = RecordFormat.JSON,
) -> tuple[float, np.ndarray]:
    """Best records/s of the record decoder over ``repeat`` passes; also the decoded rows."""
    decoder = RecordDecoder(InputSpec(shape=shape, n_classes=10), fmt)
    best = 0.0
    rows: list[np.ndarray] = []
    for attempt in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(messages), batch):
            decoded = decoder.decode(messages[i : i + batch])
            if decoded.dead:
                raise RuntimeError(f"unexpected dead letters: {decoded.dead[:3]}")
            if attempt == 0:
                rows.append(decoded.X)
        best = max(best, len(messages) / (time.perf_counter() - started))
    return best, np.concatenate(rows)


def json_decode_floor(
    values: list[bytes], shape: tuple[int, ...], batch: int, repeat: int = 3
) -> dict[str, float] | None:
    """Best records/s of the two steps every JSON batch of plain records needs, timed
    alone on the batches' instances cut out beforehand: simdjson parsing them into one
    float64 buffer (``parse``), and the skeleton check proving each one's shape
    (``check``; ``bytes.translate``, then a comparison). ``both`` is 1/(1/parse + 1/check):
    what decoding would reach if nothing else cost anything. None: the records are not
    plain ``{"id": ..., "instance": [...]}`` ones of a shape the whole-batch path reads."""
    if not json_batch.applies(InputSpec(shape=shape, n_classes=10)):
        return None
    instances = []
    for value in values:
        head = json_batch.HEAD.match(value)
        if head is None or not value.endswith(b"}"):
            return None
        instances.append(value[head.end() : -1])
    batches = [instances[i : i + batch] for i in range(0, len(instances), batch)]
    parse_texts = [b"[" + b",".join(b) + b"]" for b in batches]
    check_texts = [b"[" + json_batch.MARK.join(b) + b"]" for b in batches]
    one = skeleton(shape)
    expected = [b"[" + json_batch.MARK.join([one] * len(b)) + b"]" for b in batches]
    parser = simdjson.Parser()

    def parse() -> None:
        for text in parse_texts:
            doc: Any = parser.parse(text)
            np.frombuffer(doc.as_buffer(of_type="d"), dtype=np.float64)
            del doc  # the parser is reused: no proxy may outlive its document

    def check() -> None:
        for text, skeleton_text in zip(check_texts, expected, strict=True):
            if text.translate(None, json_batch.NUMBERS_AND_BLANKS) != skeleton_text:
                raise RuntimeError("a bench record is not of the detector's input shape")

    rates = {}
    for name, step in (("parse", parse), ("check", check)):
        best = 0.0
        for _ in range(repeat):
            started = time.perf_counter()
            step()
            best = max(best, len(values) / (time.perf_counter() - started))
        rates[name] = best
    rates["both"] = 1.0 / (1.0 / rates["parse"] + 1.0 / rates["check"])
    return rates


def score_limit(handle: DetectorHandle, X: np.ndarray, batch: int, seconds: float) -> float:
    """records/s of the worker's scoring step on batches of ``batch`` rows, for ~``seconds``."""
    batches = [X[i : i + batch] for i in range(0, len(X) - batch + 1, batch)] or [X[:batch]]
    handle.score(batches[0], None)  # warm
    done = 0
    started = time.perf_counter()
    i = 0
    while True:
        done += len(handle.score(batches[i % len(batches)], None).scores)
        i += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and i >= 3:
            return done / elapsed
