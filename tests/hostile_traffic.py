"""Mixed traffic from whoever can write to the input topic, each record with a known outcome.

Shared by ``tests/test_hostile_traffic.py`` (one cycle of every class) and
``bench/soak.py`` (minutes of it at a steady rate). ``HostileTraffic.record(i)`` is a pure
function of the seed and the index: normal records (clean rows and corrupted rows the
detector flags, chosen from a pool scored offline by the same detector, as the fault
scenarios do) with, every ``every``-th record, one hostile record. The hostile classes
cycle: near-1 MB invalid values, values and headers over ``--max-message-bytes``, huge
keys, huge contexts, many headers, declared-shape bombs, many-row messages, a response
body the worker ignores, and the whole poison corpus. Each record says what the worker
must do with it: score it (and which alert ids the detector flags), dead-letter it with a
reason (and whether that dead letter has to be shortened), or ignore it.

``HostileProducer`` sends them (lz4, paced by a token bucket when given a rate) and keeps
what the checks need; ``check_outputs`` compares the alert and dead-letter topics with it.
Memory stays small over long runs: only hostile records' offsets are kept, and their
bytes are rebuilt from the index when a dead letter is checked.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from fault_scenarios import make_traffic, tiny_instances
from fixtures_kafka import Consumed
from poison_corpus import Poison, poison_corpus
from worker_harness import ROOT, committed_offsets

if str(ROOT) not in sys.path:  # bench/workers.py: worker processes and their peak RSS
    sys.path.insert(0, str(ROOT))

from bench.workers import WorkerProcess, children_of
from monitor.stream.records import InputSpec

Headers = list[tuple[str, bytes]]

# The worker's defaults these records are built around.
MAX_MESSAGE_BYTES = 1_048_576  # --max-message-bytes
MAX_ROWS = 1024  # --max-rows-per-message
# What a shortened output keeps of the original.
SHORT_VALUE = 1024
SHORT_KEY = 256
SHORT_HEADERS = 4096
# A dead letter larger than the output topic's max.message.bytes (the broker's default,
# 1,048,588) must be shortened; one that fits librdkafka's default message.max.bytes
# (1,000,000) with room to spare for the dmon.* headers must not be; in between it
# depends on the producer's limit, and either is right.
TOPIC_LIMIT = 1_048_588
MUST_FIT_BELOW = 1_000_000 - 2048
# The names of the dmon.* headers every dead letter carries (their values add more).
DMON_NAMES = sum(
    len(f"dmon.{n}")
    for n in ("reason", "error", "source.topic", "source.partition", "source.offset")
)
# An alert's payload is bounded (id and context capped): far below this.
MAX_ALERT_BYTES = 16_384

SCORED = "scored"
DEAD = "dead_letter"
IGNORED = "ignored"


@dataclass(frozen=True)
class Planned:
    """One record to produce and what the worker must do with it."""

    index: int
    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    outcome: str
    reason: str | None = None
    #: alert id -> the alert's expected key, for every row the detector flags offline
    alerts: dict[str, bytes] = field(default_factory=dict)
    rows: int = 0
    #: dead letters: True (must be shortened), False (must be whole) or None (either)
    shortened: bool | None = False

    @property
    def hostile(self) -> bool:
        return self.kind != "normal"

    @property
    def headers_bytes(self) -> int:
        return headers_size(self.headers)


def headers_size(headers: Iterable[tuple[str, bytes | None]] | None) -> int:
    """Header bytes as the contract counts them: names plus values."""
    return sum(len(k.encode()) + len(v or b"") for k, v in headers or ())


def alert_key(key: bytes | None, record_id: str) -> bytes:
    """The key an alert must carry: the record's key (its id without one), hashed when long."""
    if key is None:
        return record_id.encode()
    if len(key) > SHORT_KEY:
        return b"sha256:" + hashlib.sha256(key).hexdigest().encode()
    return key


def must_shorten(key: bytes | None, value: bytes | None, headers: Headers | None) -> bool | None:
    """Whether the dead letter of this record must be shortened (None: either is right)."""
    size = len(key or b"") + len(value or b"") + headers_size(headers) + DMON_NAMES
    if size > TOPIC_LIMIT:
        return True
    if size < MUST_FIT_BELOW:
        return False
    return None


class HostileTraffic:
    """``record(i)``: normal records with every ``every``-th one hostile, classes in turn.

    The rows come from a pool of ``pool_size`` rows for the tests' tiny 8-feature
    detector, scored offline; rows too close to the threshold to call are left out.
    """

    def __init__(
        self,
        detector_dir: Path,
        seed: int = 0,
        every: int = 5,
        pool_size: int = 6000,
        n_classes: int = 3,
    ) -> None:
        self.seed = seed
        self.every = every
        self.prefix = f"h{seed}"
        pool = make_traffic(detector_dir, tiny_instances(pool_size, seed=seed), prefix="pool")
        self.rows = np.asarray(pool.instances, dtype=np.float32)
        self.flagged = np.array([rid in pool.flagged for rid in pool.ids], dtype=bool)
        self.flagged_rows = np.flatnonzero(self.flagged)
        self.clean_rows = np.flatnonzero(~self.flagged)
        if len(self.flagged_rows) < 10 or len(self.clean_rows) < 10:
            raise ValueError("the pool needs flagged and clean rows")
        self.features = self.rows.shape[1]
        spec = InputSpec(
            shape=(self.features,), n_classes=n_classes, max_message_bytes=MAX_MESSAGE_BYTES
        )
        self.poison: list[Poison] = poison_corpus(spec)
        builders: list[tuple[str, Callable[[int, str, int], Planned]]] = [
            ("invalid_1mb", self._invalid_1mb),
            ("invalid_990kb", self._invalid_990kb),
            ("too_large_1_5mb", self._too_large),
            ("huge_key_scored", self._huge_key_scored),
            ("huge_key_invalid", self._huge_key_invalid),
            ("huge_context", self._huge_context),
            ("headers_2mb", self._headers_2mb),
            ("many_small_headers", self._many_small_headers),
            ("value_plus_headers_over", self._value_plus_headers),
            ("v2_rows_bomb", self._v2_rows_bomb),
            ("v2_shape_mismatch", self._v2_shape_mismatch),
            ("v2_wide_bomb", self._v2_wide_bomb),
            ("seldon_rows_bomb", self._seldon_rows_bomb),
            ("v2_1000_rows", self._v2_1000_rows),
            ("v2_2000_rows", self._v2_2000_rows),
            ("v1_1025_rows", self._v1_1025_rows),
            ("response_only", self._response_only),
        ]
        builders += [(f"poison:{c.name}", self._poison_builder(c)) for c in self.poison]
        self._builders = builders

    # -- the schedule ----------------------------------------------------------------------
    @property
    def kinds(self) -> list[str]:
        """The hostile classes, in the order they take turns."""
        return [name for name, _ in self._builders]

    @property
    def cycle(self) -> int:
        """Records in which every hostile class appears once."""
        return self.every * len(self._builders)

    def is_hostile(self, index: int) -> bool:
        return index % self.every == self.every - 1

    def kind_of(self, index: int) -> str:
        if not self.is_hostile(index):
            return "normal"
        return self._builders[(index // self.every) % len(self._builders)][0]

    def record(self, index: int) -> Planned:
        rid = f"{self.prefix}-{index}"
        if not self.is_hostile(index):
            return self._normal(index, rid)
        turn = index // self.every
        kind, build = self._builders[turn % len(self._builders)]
        planned = build(index, rid, turn // len(self._builders))
        assert planned.kind == kind
        return planned

    # -- rows ------------------------------------------------------------------------------
    def _row(self, index: int, flagged: bool | None = None) -> int:
        """A pool row for this index, flagged or clean when asked (deterministic)."""
        mix = (index * 2654435761 + self.seed * 40503) % (1 << 32)
        if flagged is None:
            return mix % len(self.rows)
        pick = self.flagged_rows if flagged else self.clean_rows
        return int(pick[mix % len(pick)])

    def _json(self, rid: str, row: int, **extra: Any) -> bytes:
        return orjson.dumps({"id": rid, "instance": self.rows[row].tolist(), **extra})

    def _scored(
        self,
        index: int,
        kind: str,
        rid: str,
        row: int,
        value: bytes,
        key: bytes | None,
        headers: Headers | None = None,
    ) -> Planned:
        alerts = {rid: alert_key(key, rid)} if self.flagged[row] else {}
        return Planned(index, kind, key, value, headers, SCORED, alerts=alerts, rows=1)

    def _dead(
        self,
        index: int,
        kind: str,
        reason: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None = None,
    ) -> Planned:
        shortened = must_shorten(key, value, headers)
        return Planned(index, kind, key, value, headers, DEAD, reason, shortened=shortened)

    def _normal(self, index: int, rid: str) -> Planned:
        row = self._row(index)
        return self._scored(index, "normal", rid, row, self._json(rid, row), rid.encode())

    # -- the hostile classes ---------------------------------------------------------------
    def _not_json(self, rid: str, size: int, truncated: bool) -> bytes:
        """``size`` bytes that are not JSON (plain text or a truncated array); compress well."""
        if truncated:
            head = b'{"id": "' + rid.encode() + b'", "instance": ['
            return (head + b"0.5, " * (size // 5))[:size]
        return (b"not json " * (size // 9 + 1))[:size]

    def _invalid_1mb(self, index: int, rid: str, lap: int) -> Planned:
        """Over librdkafka's default message.max.bytes: its dead letter may be shortened."""
        value = self._not_json(rid, 1_030_000 + (lap % 3) * 5000, truncated=lap % 2 == 1)
        return self._dead(index, "invalid_1mb", "invalid_json", value, rid.encode())

    def _invalid_990kb(self, index: int, rid: str, lap: int) -> Planned:
        """Just under it: the dead letter fits, and must be the record unchanged."""
        value = self._not_json(rid, 990_000, truncated=lap % 2 == 0)
        return self._dead(index, "invalid_990kb", "invalid_json", value, rid.encode())

    def _too_large(self, index: int, rid: str, lap: int) -> Planned:
        value = self._json(rid, self._row(index), pad="z" * 1_500_000)
        return self._dead(index, "too_large_1_5mb", "too_large", value, rid.encode())

    def _huge_key_scored(self, index: int, rid: str, lap: int) -> Planned:
        """A valid record with a 500 KB key: scored; when flagged, its alert's key is hashed."""
        key = rid.encode() + b"|" + b"k" * 500_000
        row = self._row(index, flagged=lap % 3 != 2)
        return self._scored(index, "huge_key_scored", rid, row, self._json(rid, row), key)

    def _huge_key_invalid(self, index: int, rid: str, lap: int) -> Planned:
        """Invalid JSON under a 700 KB key: the key does not count towards the size limit,
        but the dead letter (1.1 MB) has to be shortened, key and all."""
        key = rid.encode() + b"|" + b"q" * 700_000
        value = (b"nope " * 80_000)[:400_000]
        return self._dead(index, "huge_key_invalid", "invalid_json", value, key)

    def _huge_context(self, index: int, rid: str, lap: int) -> Planned:
        """A flagged record with a 300 KB context field: the alert stays small."""
        row = self._row(index, flagged=True)
        value = self._json(rid, row, note="n" * 300_000, user=f"u{lap}")
        return self._scored(index, "huge_context", rid, row, value, rid.encode())

    def _headers_2mb(self, index: int, rid: str, lap: int) -> Planned:
        """A small valid value under ~2 MB of headers: too large, counted with its headers."""
        headers: Headers = [(f"x-small-{i}", b"s" * 500) for i in range(3)]
        headers += [(f"x-big-{i:02d}", bytes([65 + i % 26]) * 65_536) for i in range(32)]
        value = self._json(rid, self._row(index))
        return self._dead(index, "headers_2mb", "too_large", value, rid.encode(), headers)

    def _many_small_headers(self, index: int, rid: str, lap: int) -> Planned:
        headers: Headers = [(f"x-h-{i:04d}", f"v-{i:04d}".encode()) for i in range(1000)]
        row = self._row(index, flagged=lap % 2 == 0)
        value = self._json(rid, row)
        return self._scored(index, "many_small_headers", rid, row, value, rid.encode(), headers)

    def _value_plus_headers(self, index: int, rid: str, lap: int) -> Planned:
        """600 KB of valid value and 600 KB of headers: each under the limit, not together."""
        value = self._json(rid, self._row(index), pad="p" * 600_000)
        headers: Headers = [("x-pad-0", b"h" * 300_000), ("x-pad-1", b"i" * 300_000)]
        return self._dead(
            index, "value_plus_headers_over", "too_large", value, rid.encode(), headers
        )

    def _v2(self, rid: str, shape: list[int], data: list[float]) -> bytes:
        tensor = {"name": "x", "shape": shape, "datatype": "FP32", "data": data}
        return orjson.dumps({"id": rid, "inputs": [tensor]})

    def _v2_rows_bomb(self, index: int, rid: str, lap: int) -> Planned:
        """91 bytes declaring ten million rows, holding one."""
        row = self.rows[self._row(index)].tolist()
        value = self._v2(rid, [10_000_000, self.features], row)
        return self._dead(index, "v2_rows_bomb", "too_many_rows", value, rid.encode())

    def _v2_shape_mismatch(self, index: int, rid: str, lap: int) -> Planned:
        row = self.rows[self._row(index)].tolist()
        value = self._v2(rid, [1000, self.features], row)
        return self._dead(index, "v2_shape_mismatch", "shape", value, rid.encode())

    def _v2_wide_bomb(self, index: int, rid: str, lap: int) -> Planned:
        """One row declared ten million numbers wide, holding the detector's eight."""
        row = self.rows[self._row(index)].tolist()
        value = self._v2(rid, [1, 10_000_000], row)
        return self._dead(index, "v2_wide_bomb", "shape", value, rid.encode())

    def _seldon_rows_bomb(self, index: int, rid: str, lap: int) -> Planned:
        row = self.rows[self._row(index)].tolist()
        tensor = {"shape": [10_000_000, self.features], "values": row}
        value = orjson.dumps({"id": rid, "data": {"tensor": tensor}})
        return self._dead(index, "seldon_rows_bomb", "too_many_rows", value, rid.encode())

    def _many_rows(self, index: int, n: int, flagged_share: float) -> np.ndarray:
        """``n`` pool rows for this index, about ``flagged_share`` of them flagged."""
        rng = np.random.default_rng([self.seed, index])
        flagged = rng.random(n) < flagged_share
        return np.where(
            flagged,
            rng.choice(self.flagged_rows, n),
            rng.choice(self.clean_rows, n),
        )

    def _v2_1000_rows(self, index: int, rid: str, lap: int) -> Planned:
        """1,000 rows, most of them flagged: one alert per flagged row, ``<id>#<row>``."""
        picks = self._many_rows(index, 1000, 0.9)
        value = self._v2(rid, [1000, self.features], self.rows[picks].ravel().tolist())
        key = rid.encode()
        alerts = {f"{rid}#{r}": key for r, p in enumerate(picks) if self.flagged[p]}
        return Planned(
            index, "v2_1000_rows", key, value, None, SCORED, alerts=alerts, rows=len(picks)
        )

    def _v2_2000_rows(self, index: int, rid: str, lap: int) -> Planned:
        picks = self._many_rows(index, 2000, 0.9)
        value = self._v2(rid, [2000, self.features], self.rows[picks].ravel().tolist())
        return self._dead(index, "v2_2000_rows", "too_many_rows", value, rid.encode())

    def _v1_1025_rows(self, index: int, rid: str, lap: int) -> Planned:
        picks = self._many_rows(index, MAX_ROWS + 1, 0.5)
        value = orjson.dumps({"id": rid, "instances": self.rows[picks].tolist()})
        return self._dead(index, "v1_1025_rows", "too_many_rows", value, rid.encode())

    def _response_only(self, index: int, rid: str, lap: int) -> Planned:
        """A v2 response logged on its own: counted as ignored, neither scored nor dead."""
        out = {
            "name": "probabilities",
            "shape": [1, 3],
            "datatype": "FP32",
            "data": [0.1, 0.2, 0.7],
        }
        value = orjson.dumps({"id": rid, "model_name": "hostile", "outputs": [out]})
        return Planned(index, "response_only", rid.encode(), value, None, IGNORED)

    def _poison_builder(self, case: Poison) -> Callable[[int, str, int], Planned]:
        def build(index: int, rid: str, lap: int) -> Planned:
            key = f"{rid}:{case.name}".encode()
            headers = [(k, v) for k, v in case.headers] if case.headers else None
            return self._dead(
                index, f"poison:{case.name}", str(case.reason), case.value, key, headers
            )

        return build


# -- producing -----------------------------------------------------------------------------
@dataclass
class Expected:
    """What the records produced so far require, kept small enough for long runs."""

    alerts: dict[str, bytes] = field(default_factory=dict)
    #: (partition, offset) -> (index, outcome), for hostile records only
    hostile: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    must_shorten: int = 0
    ignored: int = 0
    scored_rows: int = 0
    sent: int = 0
    hostile_sent: int = 0
    #: bytes of values, keys and headers produced (uncompressed)
    bytes_sent: int = 0


class HostileProducer:
    """Produces ``traffic.record(i)`` for i = 0, 1, ... and keeps what the checks need.

    ``rate`` (records/s, None = as fast as it goes) is held by a token bucket. lz4
    batches and a raised ``message.max.bytes``: the records of several MB reach the
    broker as small compressed batches, which it accepts under its default limit.
    """

    def __init__(
        self, bootstrap: str, topic: str, traffic: HostileTraffic, rate: float | None = None
    ) -> None:
        self.traffic = traffic
        self.topic = topic
        self.rate = rate
        self.expected = Expected()
        self.errors: list[KafkaError] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": "lz4",
                "message.max.bytes": 8_000_000,
                "linger.ms": 5,
                "enable.idempotence": True,
                "message.timeout.ms": 120_000,
            }
        )

    def produce(self, count: int) -> Expected:
        """Produce records ``0 .. count-1`` and wait until the broker has them all."""
        self._run(count)
        self.flush()
        return self.expected

    def start(self, seconds: float) -> HostileProducer:
        """Produce from a thread for ``seconds`` (or until ``stop()``)."""
        deadline = time.monotonic() + seconds
        self._thread = threading.Thread(
            target=self._run, args=(None, deadline), name="hostile-producer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def finish(self, timeout: float = 300.0) -> Expected:
        """Wait for the producing thread to end and every record to be acknowledged."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError("the producer did not stop")
        self.flush(timeout)
        return self.expected

    def flush(self, timeout: float = 300.0) -> None:
        left = self.producer.flush(timeout)
        if left or self.errors:
            raise AssertionError(f"input: {left} undelivered, errors {self.errors[:3]}")

    def _run(self, count: int | None, deadline: float | None = None) -> None:
        rate = self.rate
        burst = max(1.0, (rate or 0) / 20)
        tokens, last = burst, time.monotonic()
        index = self.expected.sent
        while not self._stop.is_set():
            if count is not None and index >= count:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if rate is not None:
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
                if tokens < 1.0:
                    self.producer.poll(0)
                    time.sleep((1.0 - tokens) / rate)
                    continue
                tokens -= 1.0
            self._send(self.traffic.record(index))
            index += 1

    def _send(self, p: Planned) -> None:
        e = self.expected
        on_delivery = self._hostile_delivered(p) if p.hostile else self._delivered
        kwargs: dict[str, Any] = {"key": p.key, "value": p.value, "on_delivery": on_delivery}
        if p.headers:
            kwargs["headers"] = p.headers
        while True:
            try:
                self.producer.produce(self.topic, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        with self._lock:
            e.sent += 1
            e.bytes_sent += len(p.key or b"") + len(p.value or b"") + p.headers_bytes
            e.alerts.update(p.alerts)
            if p.outcome == SCORED:
                e.scored_rows += p.rows
            if p.hostile:
                e.hostile_sent += 1
                e.kinds[p.kind] += 1
                if p.outcome == DEAD:
                    e.dead_reasons[p.reason or ""] += 1
                    e.must_shorten += p.shortened is True
                elif p.outcome == IGNORED:
                    e.ignored += 1

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.errors.append(err)

    def _hostile_delivered(self, p: Planned) -> Callable[[KafkaError | None, Any], None]:
        index, outcome = p.index, p.outcome  # (the closure must not keep the bytes)

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                self.errors.append(err)
            else:
                with self._lock:
                    self.expected.hostile[(msg.partition(), msg.offset())] = (index, outcome)

        return delivered


# -- the worker ----------------------------------------------------------------------------
def worker_args(
    bootstrap: str,
    detector: Path,
    input_topic: str,
    alert_topic: str,
    dead_letter_topic: str,
    group: str,
    exactly_once: bool,
) -> list[str]:
    """Default settings, any record format, a free metrics port."""
    args = [
        "--bootstrap-servers", bootstrap, "--input-topic", input_topic,
        "--alert-topic", alert_topic, "--dead-letter-topic", dead_letter_topic,
        "--group-id", group, "--detector", str(detector), "--metrics-port", "0",
        "--record-format", "auto",
    ]  # fmt: skip
    return [*args, "--exactly-once"] if exactly_once else args


def log_tail(worker: WorkerProcess, lines: int = 40) -> str:
    return f"worker log ({worker.log}), last lines:\n{worker.tail(lines)}"


def check_alive(worker: WorkerProcess, what: str) -> None:
    """Fail with the worker's log tail when it is gone."""
    if worker.exited():
        raise AssertionError(
            f"the worker exited ({worker.proc.returncode}) {what}\n{log_tail(worker)}"
        )


def wait_ready(worker: WorkerProcess, input_topic: str, timeout: float = 120.0) -> int:
    """Wait until the worker serves metrics and owns partitions; returns its metrics port."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"metrics on http://[^:]+:(\d+)/metrics")
    while time.monotonic() < deadline:
        check_alive(worker, "while starting")
        text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
        port = pattern.search(text)
        if port is not None and f"assigned {input_topic}[" in text:
            return int(port.group(1))
        time.sleep(0.1)
    raise AssertionError(f"the worker was not ready in {timeout}s\n{log_tail(worker)}")


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hostile-watermarks"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def wait_committed_to_end(
    worker: WorkerProcess,
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    timeout: float,
) -> list[int]:
    """Wait until the group's committed offsets reach the topic's end, the worker alive."""
    ends = end_offsets(bootstrap, topic, partitions)
    deadline = time.monotonic() + timeout
    committed: list[int] = []
    while time.monotonic() < deadline:
        check_alive(worker, "before committing the whole topic")
        try:
            committed = committed_offsets(bootstrap, group, topic, partitions)
        except KafkaException:  # an open transaction holds the offsets for a moment
            committed = []
        if committed == ends:
            return ends
        time.sleep(0.25)
    raise AssertionError(
        f"committed {committed}, end {ends} after {timeout:.0f}s\n{log_tail(worker)}"
    )


def rss_mb(pid: int) -> float:
    """Resident memory now of a process and its children (VmRSS), in MB."""
    total = 0.0
    for p in [pid, *children_of(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += float(line.split()[1])
        except (OSError, ValueError):
            pass
    return total / 1024.0


# -- checking ------------------------------------------------------------------------------
@dataclass
class Verdict:
    """What the output topics hold against what the records require."""

    alerts_expected: int = 0
    alerts_seen: int = 0
    alert_messages: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated_alerts: int = 0
    wrong_alert_keys: list[str] = field(default_factory=list)
    oversized_alerts: list[str] = field(default_factory=list)
    dead_expected: int = 0
    dead_seen: int = 0
    dead_missing: list[str] = field(default_factory=list)
    dead_unexpected: list[str] = field(default_factory=list)
    duplicated_dead: int = 0
    wrong_reasons: list[str] = field(default_factory=list)
    bad_dead_letters: list[str] = field(default_factory=list)
    shortened: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)

    def problems(self, exactly_once: bool) -> list[str]:
        """Each failed check, one line each (empty: all good)."""
        out = []

        def some(items: list[str], what: str) -> None:
            if items:
                out.append(f"{len(items)} {what}: {items[:5]}")

        some(self.missing, "flagged ids never alerted")
        some(self.unexpected, "alerts for ids the detector does not flag")
        some(self.wrong_alert_keys, "alerts with the wrong key")
        some(self.oversized_alerts, f"alerts over {MAX_ALERT_BYTES} bytes")
        some(self.dead_missing, "hostile records not dead-lettered")
        some(self.dead_unexpected, "dead letters of records that should not be")
        some(self.wrong_reasons, "dead letters with the wrong reason")
        some(self.bad_dead_letters, "dead letters not as the contract says")
        if exactly_once and self.duplicated_alerts:
            out.append(f"{self.duplicated_alerts} duplicated alerts in exactly-once mode")
        if exactly_once and self.duplicated_dead:
            out.append(f"{self.duplicated_dead} duplicated dead letters in exactly-once mode")
        return out


def check_outputs(
    traffic: HostileTraffic,
    expected: Expected,
    input_topic: str,
    alerts: Iterable[Consumed],
    dead_letters: Iterable[Consumed],
) -> Verdict:
    """Alerts by id (and key, and size); dead letters by source offset (reason, bytes)."""
    v = Verdict(alerts_expected=len(expected.alerts))
    seen: Counter[str] = Counter()
    for m in alerts:
        body = orjson.loads(m.value or b"{}")
        rid = str(body.get("id"))
        seen[rid] += 1
        want = expected.alerts.get(rid)
        if want is not None and m.key != want and len(v.wrong_alert_keys) < 100:
            v.wrong_alert_keys.append(f"{rid}: {(m.key or b'')[:80]!r}")
        if len(m.value or b"") > MAX_ALERT_BYTES:
            v.oversized_alerts.append(f"{rid[:80]}: {len(m.value or b'')} bytes")
    v.alert_messages = sum(seen.values())
    v.alerts_seen = len(seen)
    v.missing = sorted(set(expected.alerts) - set(seen))
    v.unexpected = sorted(set(seen) - set(expected.alerts))
    v.duplicated_alerts = v.alert_messages - v.alerts_seen

    dead_wanted = {pos: i for pos, (i, outcome) in expected.hostile.items() if outcome == DEAD}
    v.dead_expected = len(dead_wanted)
    got: Counter[tuple[int, int]] = Counter()
    for m in dead_letters:
        h = dict(m.headers)
        try:
            pos = (int(h["dmon.source.partition"] or b""), int(h["dmon.source.offset"] or b""))
        except (KeyError, ValueError):
            v.bad_dead_letters.append(f"no source offset: {m.headers[-6:]}")
            continue
        got[pos] += 1
        if got[pos] > 1:
            continue
        reason = (h.get("dmon.reason") or b"").decode()
        v.dead_by_reason[reason] += 1
        index = dead_wanted.get(pos)
        if index is None:
            known = expected.hostile.get(pos)
            v.dead_unexpected.append(f"{pos} ({reason}; {known or 'a normal record'})")
            continue
        p = traffic.record(index)
        if reason != p.reason:
            v.wrong_reasons.append(f"{p.kind}: {reason!r}, expected {p.reason!r}")
        v.bad_dead_letters += dead_letter_problems(p, m, input_topic)
        v.shortened += "dmon.shortened" in h
    v.dead_seen = len(got)
    v.duplicated_dead = sum(got.values()) - len(got)
    v.dead_missing = sorted(
        f"{traffic.kind_of(i)}@{pos}" for pos, i in dead_wanted.items() if pos not in got
    )
    return v


#: What a dead letter adds to the original headers (an input header may be ``dmon.``
#: too: ``dmon.response`` carries a v2-protobuf record's model output).
DEAD_LETTER_HEADERS = (
    "dmon.reason",
    "dmon.error",
    "dmon.source.",
    "dmon.shortened",
    "dmon.original.",
)


def dead_letter_problems(p: Planned, m: Consumed, input_topic: str) -> list[str]:
    """What is wrong with dead letter ``m`` of record ``p`` (whole, or shortened)."""
    problems: list[str] = []
    h = dict(m.headers)
    ours = [(k, v) for k, v in m.headers if k.startswith(DEAD_LETTER_HEADERS)]
    theirs = [(k, v) for k, v in m.headers if not k.startswith(DEAD_LETTER_HEADERS)]
    original = [(k, v) for k, v in p.headers or ()]
    value = p.value or b""

    def bad(what: str) -> None:
        problems.append(f"{p.kind}: {what}")

    for name in ("dmon.reason", "dmon.error"):
        if not h.get(name):
            bad(f"no {name}")
    if (h.get("dmon.source.topic") or b"").decode() != input_topic:
        bad(f"dmon.source.topic {h.get('dmon.source.topic')!r}")
    shortened = "dmon.shortened" in h
    if p.shortened is True and not shortened:
        bad(f"not shortened ({len(value)} value bytes, {p.headers_bytes} header bytes)")
    if p.shortened is False and shortened:
        bad(f"shortened though it fits ({h.get('dmon.shortened')!r})")
    if not shortened:
        if (m.value or b"") != value:
            bad(f"value changed ({len(m.value or b'')} of {len(value)} bytes)")
        if m.key != p.key:
            bad("key changed")
        if theirs != original:
            bad(f"original headers changed ({len(theirs)} of {len(original)})")
        return problems
    if not h.get("dmon.shortened"):
        bad("dmon.shortened says nothing")
    if (m.value or b"") != value[:SHORT_VALUE]:
        bad(f"value is not the first {SHORT_VALUE} bytes ({len(m.value or b'')} bytes)")
    if (m.key or b"") != (p.key or b"")[:SHORT_KEY]:
        bad(f"key is not the first {SHORT_KEY} bytes ({len(m.key or b'')} bytes)")
    facts = {
        "dmon.original.value_bytes": str(len(value)).encode(),
        "dmon.original.value_sha256": hashlib.sha256(value).hexdigest().encode(),
        "dmon.original.key_bytes": str(len(p.key or b"")).encode(),
        "dmon.original.headers_bytes": str(p.headers_bytes).encode(),
    }
    for name, want in facts.items():
        if h.get(name) != want:
            bad(f"{name} = {h.get(name)!r}, expected {want!r}")
    if theirs != original[: len(theirs)]:
        bad("kept headers are not the original ones in order")
    elif headers_size(theirs) > SHORT_HEADERS:
        bad(f"kept {headers_size(theirs)} bytes of headers")
    elif len(theirs) < len(original) and headers_size(original[: len(theirs) + 1]) <= SHORT_HEADERS:
        bad(f"dropped headers that fit ({len(theirs)} of {len(original)} kept)")
    if len(ours) + len(theirs) != len(m.headers):
        bad("headers out of place")
    return problems


def metrics_summary(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The worker's counters the checks use, by label."""
    out: dict[str, dict[str, float]] = {
        "dead_lettered": {},
        "shortened": {},
        "ignored": {},
        "scored": {},
    }
    names = {
        "distillation_monitor_records_dead_lettered_total": ("dead_lettered", "reason"),
        "distillation_monitor_outputs_shortened_total": ("shortened", "kind"),
        "distillation_monitor_records_ignored_total": ("ignored", "kind"),
        "distillation_monitor_records_scored_total": ("scored", ""),
    }
    for sample, value in metrics.items():
        base, _, labels = sample.partition("{")
        if base not in names:
            continue
        group, label = names[base]
        found = re.search(rf'{label}="([^"]*)"', labels) if label else None
        name = found.group(1) if found else "all"
        out[group][name] = out[group].get(name, 0.0) + value
    return out
