"""Records built to exhaust the decoder: each ends as one dead letter, at a bounded cost."""

from __future__ import annotations

import json
import sys
import tracemalloc
from typing import Any

import pytest

from monitor.stream import headers as header_module
from monitor.stream.headers import decoder_facts
from monitor.stream.records import DecodedBatch, InputSpec, Reason, RecordDecoder, RecordFormat

SPEC = InputSpec((8,), 3, max_message_bytes=1_048_576)


def _decode_measured(decoder: RecordDecoder, record: bytes) -> tuple[DecodedBatch, int]:
    """The decoded batch of one record, and the peak bytes Python allocated for it."""
    tracemalloc.start()
    try:
        decoded = decoder.decode_values([record])
        return decoded, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _v2(shape: list[int], rows: int = 1) -> bytes:
    data = [0.5] * (8 * rows)
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}
    return json.dumps(body).encode()


@pytest.mark.parametrize("fmt", [RecordFormat.V2, RecordFormat.AUTO])
def test_a_declared_shape_far_beyond_its_data_is_refused_without_building_it(
    fmt: RecordFormat,
) -> None:
    # A row cap this high lets the declared rows through, so only the count check can
    # refuse the record before a skeleton of the declared shape (10 MB of "[,,,,,,,]")
    # is built.
    decoder = RecordDecoder(InputSpec((8,), 3, max_rows=10_000_000), fmt)
    bomb = _v2([1_000_000, 8])
    decoded, peak = _decode_measured(decoder, bomb)
    assert [(d.index, d.reason) for d in decoded.dead] == [(0, Reason.SHAPE)]
    assert peak < 64 * 1024, f"decoding a {len(bomb)}-byte record took {peak} bytes"


def test_a_declared_row_count_beyond_the_cap_is_too_many_rows_at_no_cost() -> None:
    decoder = RecordDecoder(SPEC, RecordFormat.AUTO)
    decoded, peak = _decode_measured(decoder, _v2([10_000_000, 8]))
    assert [d.reason for d in decoded.dead] == [Reason.TOO_MANY_ROWS]
    assert "10000000 rows" in decoded.dead[0].detail
    assert peak < 64 * 1024


def test_the_row_cap_is_the_specs_and_a_message_at_the_cap_is_scored() -> None:
    spec = InputSpec((8,), 3, max_rows=4)
    decoder = RecordDecoder(spec, RecordFormat.V2)
    decoded = decoder.decode_values([_v2([4, 8], rows=4), _v2([5, 8], rows=5)])
    assert len(decoded.X) == 4
    assert [(d.index, d.reason) for d in decoded.dead] == [(1, Reason.TOO_MANY_ROWS)]


def test_headers_count_against_the_message_size_limit() -> None:
    spec = InputSpec((8,), 3, max_message_bytes=4096)
    decoder = RecordDecoder(spec, RecordFormat.JSON)
    record = json.dumps({"id": "a", "instance": [0.5] * 8}).encode()
    small = [("trace", b"x" * 100)]
    large = [("trace", b"x" * 3000), ("more", b"y" * 3000)]
    decoded = decoder.decode_values([record, record], [small, large])
    assert len(decoded.X) == 1
    assert [(d.index, d.reason) for d in decoded.dead] == [(1, Reason.TOO_LARGE)]
    assert "with its headers" in decoded.dead[0].detail


def test_header_caches_keep_no_attacker_sized_value() -> None:
    header_module._FACTS_CACHE.clear()
    header_module._FIELD_CACHE.clear()
    for i in range(50):
        huge_value = bytes([65 + i % 26]) * (2 * 1024 * 1024)
        huge_name = "x" * (1024 * 1024) + str(i)
        decoder_facts([("ce_modelid", huge_value), (huge_name, b"v"), ("ce_type", huge_value)])
    kept = sum(sys.getsizeof(text) for key in header_module._FACTS_CACHE for _f, text in key) + sum(
        sys.getsizeof(name) for name in header_module._FIELD_CACHE
    )
    assert kept < 1024 * 1024, f"the header caches hold {kept} bytes"


def test_a_repeated_header_reads_as_its_first_value_whatever_follows() -> None:
    many = [("ce_type", b"request")] + [("ce_type", b"response")] * 10_000
    labels, response = decoder_facts(many)
    assert response is False
    assert labels is None


def test_a_batch_counts_keys_and_headers_so_large_headers_close_it_early() -> None:
    from confluent_kafka import Message

    from monitor.stream.batcher import Batcher
    from monitor.stream.worker import _message_bytes

    plain = Message(topic="t", value=b"v" * 100, key=b"k" * 10)
    heavy = Message(topic="t", value=b"v", key=None, headers=[("h", b"x" * 2_000_000)])
    assert _message_bytes([plain]) == 110
    assert _message_bytes(iter([plain, heavy])) == 110 + 1 + 1 + 2_000_000

    batcher: Batcher[Message] = Batcher(
        2048, 10.0, max_bytes=16 * 1024 * 1024, bytes_of=_message_bytes
    )
    batcher.add([heavy] * 20)
    assert len(batcher.take()) < 10


def test_headers_the_client_cannot_read_are_replaced_once_and_dead_lettered_not_utf8() -> None:
    from monitor.stream.headers import UNREADABLE, guard_headers

    class Unreadable:
        """Like confluent-kafka's Message for a header name that isn't UTF-8: the first
        headers() raises, later ones return a broken list (here: a sentinel)."""

        def __init__(self) -> None:
            self._headers: Any = None
            self.calls = 0

        def headers(self) -> Any:
            self.calls += 1
            if self._headers is None:
                self._headers = "broken"
                raise SystemError("returned a result with an exception set")
            return self._headers

        def set_headers(self, headers: Any) -> None:
            self._headers = headers

    bad = Unreadable()
    guard_headers([bad])
    assert bad.headers() == [(UNREADABLE, b"a header name of the record is not UTF-8")]
    record = json.dumps({"id": "a", "instance": [0.5] * 8}).encode()
    decoded = RecordDecoder(SPEC, RecordFormat.JSON).decode_values([record], [bad.headers()])
    assert [(d.reason, d.detail) for d in decoded.dead] == [
        (Reason.NOT_UTF8, "its headers cannot be read (a header name that is not UTF-8)")
    ]


def test_alerts_of_a_many_row_message_parse_nothing_again() -> None:
    """Each flagged row's alert needs the message's id and context: the decoder reads
    them with the rows, so alerts parse nothing (a 1 MiB message of 1,000 flagged rows
    was parsed 1,000 times on the scoring thread)."""
    import numpy as np
    from confluent_kafka import Message
    from contract import check_outgoing

    from monitor.stream.alerts import DetectorIdentity
    from monitor.stream.events import source_of
    from monitor.stream.outputs import alerts
    from monitor.stream.scoring import BatchScores

    rows = 1000
    body = json.dumps(
        {
            "id": "req-7",
            "inputs": [
                {"name": "x", "shape": [rows, 8], "datatype": "FP32", "data": [0.5] * 8 * rows}
            ],
            "parameters": {"tenant": "a"},
        }
    ).encode()

    class Counting(Message):  # type: ignore[misc]
        reads = 0

        def value(self, *args: Any) -> Any:
            Counting.reads += 1
            return super().value(*args)

    message = Counting(topic="in", partition=0, offset=5, value=body, key=b"k" * 1000)
    decoded = RecordDecoder(SPEC, RecordFormat.V2).decode([message])
    identity = DetectorIdentity("d", "1", "kld", 1.0, "h" * 16, 0.1)
    scores = BatchScores(
        np.ones(rows, np.float32), np.ones(rows, bool), np.zeros(rows), np.zeros(rows), identity
    )
    Counting.reads = 0
    published = alerts([message], decoded, scores, "alerts", source_of("g"))
    assert len(published) == rows
    assert Counting.reads == 0, "the decoder read id and context already"
    assert check_outgoing(published[-1])["id"] == f"req-7#{rows - 1}"
    assert json.loads(published[0].value)["context"] == {"parameters": {"tenant": "a"}}
    assert published[0].key.startswith(b"sha256:")  # a 1,000-byte key is not repeated
