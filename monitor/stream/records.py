"""Inference records (Kafka messages) to numpy batches, and back to their identity.

Pure: no Kafka client, no TensorFlow. ``RecordDecoder.decode`` turns a batch of messages
into one float32 array; every message ends up as rows, a dead letter or an ignored
response, and nothing a message holds can raise out of ``decode``. Finiteness is checked
once per batch, vectorised, and a bad row dead-letters its whole message.
``message_identity`` is the slow, thorough side, called once per message with a flagged row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
import orjson
import simdjson

from monitor.errors import DecodeError
from monitor.stream import json_batch
from monitor.stream.formats import (
    NUMBER_AND_SPACE,
    InputSpec,
    JsonPlan,
    Reason,
    RecordFormat,
    Rows,
    array_start,
    count_of,
    flat_value,
    json_rows,
    keys_of,
    kind_of,
    parse_failure,
    reject,
    seldon_rows,
    skeleton,
    skeleton_at,
    sniff,
    v1_rows,
    v2_rows,
)
from monitor.stream.headers import (
    MAX_VALUE_CHARS,
    Headers,
    ModelLabels,
    is_unreadable,
    labels_of,
    merge_labels,
    message_facts,
    read_headers,
    text,
)
from monitor.stream.json_batch import BatchRows, JsonBatch
from monitor.stream.protobuf_format import PlainBatch, ProtobufReader

Array = simdjson.Array
_NO_LABELS = frozenset({"model_name", "model_version", "namespace"}).isdisjoint

__all__ = [
    "DeadLetter",
    "DecodedBatch",
    "InputSpec",
    "MessageIdentity",
    "MessageLike",
    "ModelLabels",
    "Reason",
    "RecordDecoder",
    "RecordFormat",
    "RecordIdentity",
    "message_identity",
    "record_identity",
    "record_times",
]

#: Longest dead-letter detail (it travels in a Kafka header).
MAX_DETAIL_CHARS = 300
#: The detail of a record whose headers the Kafka client cannot read.
UNREADABLE_HEADERS = "its headers cannot be read (a header name that is not UTF-8)"
#: Context fields kept per alert, in bytes of JSON.
MAX_CONTEXT_BYTES = 2048

#: One message decoded: its rows, its body's id and its context fields.
Found = tuple[Rows, "str | None", "dict[str, Any] | None"]

_FIELDS_OF = {
    RecordFormat.JSON: frozenset(["id", "instance", "output"]),
    RecordFormat.V2: frozenset(["id", "inputs", "outputs"]),
    RecordFormat.V1: frozenset(["id", "instances", "predictions"]),
    RecordFormat.SELDON: frozenset(["id", "data"]),
}

_JSON_FIELDS = _FIELDS_OF[RecordFormat.JSON]


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the decoder reads."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | str | None: ...
    def headers(self) -> Headers | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def record_times(messages: Sequence[MessageLike]) -> np.ndarray:
    """Each message's timestamp in seconds since the epoch, 0 where it has none."""
    stamps = np.fromiter(
        (m.timestamp()[1] for m in messages), dtype=np.float64, count=len(messages)
    )
    return np.where(stamps > 0, stamps / 1000.0, 0.0)


@dataclass
class DeadLetter:
    """A message that could not become rows, and why."""

    index: int
    reason: Reason
    detail: str


@dataclass
class DecodedBatch:
    """Rows of a batch of messages, plus what happened to the messages that gave none.

    ``outputs`` is set only when every row carries the classifier's output (and there is
    at least one row); ``has_output`` says which rows do either way.
    """

    X: np.ndarray
    outputs: np.ndarray | None
    has_output: np.ndarray
    row_message: np.ndarray
    row_in_message: np.ndarray
    dead: list[DeadLetter] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)
    model_labels: list[ModelLabels | None] = field(default_factory=list)
    #: Per message: its id (the body's ``id``, else the event or request id of its
    #: headers; None: none, so ``topic/partition/offset``), read while decoding so the
    #: alerts need not parse the message again.
    ids: list[str | None] = field(default_factory=list)
    #: The other fields of messages that have any, capped (``cap_context``), by index.
    contexts: dict[int, dict[str, Any]] = field(default_factory=dict)


def _clip(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 1] + "…"


class RecordDecoder:
    """Decodes batches of messages for one input spec and format. Not thread-safe
    (it reuses one parser); give each thread its own."""

    def __init__(self, spec: InputSpec, fmt: RecordFormat = RecordFormat.JSON) -> None:
        self.spec = spec
        self.fmt = RecordFormat(fmt)
        self._plan = JsonPlan(spec)
        self._max_bytes = spec.max_message_bytes
        self._parser = simdjson.Parser()
        self._fast = _fast_json(self)
        whole = self.fmt in (RecordFormat.JSON, RecordFormat.AUTO) and json_batch.applies(spec)
        self._batch = JsonBatch(spec) if whole else None
        self._protobuf = (
            ProtobufReader(spec, cap_context, only=self.fmt is RecordFormat.V2_PROTOBUF)
            if self.fmt in (RecordFormat.V2_PROTOBUF, RecordFormat.AUTO)
            else None
        )

    # -- one message -----------------------------------------------------------------
    def _rows(self, raw: bytes | None, head: Headers | None = None) -> Found | None:
        """Rows, id and context of one message body (the general path); None when it is
        a response."""
        if not raw:
            reject(Reason.EMPTY, "no value" if raw is None else "empty value")
        if len(raw) > self._max_bytes:
            reject(Reason.TOO_LARGE, f"{len(raw)} bytes, the limit is {self._max_bytes}")
        proto = self._protobuf
        if proto is not None and (got := proto.first(raw, head)) is not None:
            return got
        try:
            doc = self._parser.parse(raw)
        except (ValueError, RuntimeError) as exc:
            if proto is not None and (got := proto.fallback(raw, head)) is not None:
                return got
            doc = self._reparse(raw, exc)
        if type(doc) is not simdjson.Object:
            reject(Reason.SCHEMA, f"top level must be a JSON object, got {kind_of(doc)}")
        keys = list(doc.keys())
        if len(set(keys)) != len(keys):
            keys_of(doc, "the top level")  # raises, naming the duplicate
        fmt = self.fmt
        if fmt is RecordFormat.AUTO:
            sniffed = sniff(keys)
            if sniffed is None:
                return None
            fmt = sniffed
        rows: Rows | None
        if fmt is RecordFormat.JSON:
            rows = json_rows(doc, keys, raw, self._plan)
        elif fmt is RecordFormat.V2:
            rows = v2_rows(doc, keys, raw, self.spec)
        elif fmt is RecordFormat.V1:
            rows = v1_rows(doc, keys, raw, self.spec)
        else:
            rows = seldon_rows(doc, keys, raw, self.spec)
        if rows is None:
            return None
        body_id, context = _identity_of(doc, keys, _FIELDS_OF[fmt], self.spec.max_context_bytes)
        return rows, body_id, context

    def _reparse(self, raw: bytes, exc: Exception) -> Any:
        if isinstance(exc, RuntimeError) and "re-use a parser" in str(exc):
            # A proxy from an earlier message is still alive somewhere: start afresh.
            self._parser = simdjson.Parser()
            try:
                return self._parser.parse(raw)
            except (ValueError, RuntimeError) as again:
                exc = again
        raise parse_failure(raw, exc) from None

    # -- a batch ---------------------------------------------------------------------
    def decode(self, messages: Sequence[MessageLike]) -> DecodedBatch:
        """Rows of every decodable message; a dead letter or an ignore for the others."""
        try:
            values = [m.value() for m in messages]
            headers = [m.headers() for m in messages]
        except Exception:  # an odd message: find it, and dead-letter it alone
            return self._decode_readable(messages)
        return self.decode_values(values, headers if any(headers) else None)

    def _decode_readable(self, messages: Sequence[MessageLike]) -> DecodedBatch:
        values: list[bytes | None] = []
        headers: list[Headers | None] = []
        unreadable: list[DeadLetter] = []
        for index, message in enumerate(messages):
            value: bytes | None = None
            head: Headers | None = None
            try:
                value = message.value()
                try:
                    head = message.headers()
                except Exception:  # the client cannot build a header name that isn't UTF-8
                    value = None
                    unreadable.append(DeadLetter(index, Reason.NOT_UTF8, UNREADABLE_HEADERS))
            except Exception as exc:
                unreadable.append(DeadLetter(index, *_failure(exc)))
            values.append(value)
            headers.append(head)
        return self.decode_values(values, headers, unreadable)

    def decode_values(
        self,
        values: Sequence[bytes | None],
        headers: Sequence[Headers | None] | None = None,
        unreadable: Sequence[DeadLetter] = (),
    ) -> DecodedBatch:
        """``decode`` of messages given as their values and headers (None: no message
        has any); ``unreadable`` are dead letters already, and their values are skipped.

        The decoding process's way in: making a message object per value cost as much as
        a fifth of its decoding.
        """
        if not unreadable and values and (whole := self._whole_batch(values, headers)):
            return whole
        return self._one_by_one(values, headers, unreadable)

    def _whole_batch(
        self, values: Sequence[bytes | None], headers: Sequence[Headers | None] | None
    ) -> DecodedBatch | None:
        """The batch read as a whole (``JsonBatch``, ``ProtobufReader.batch``), or None.
        JSON with headers only in the ``json`` format: in ``auto`` a content-type header
        may make a message protobuf."""
        if self._batch is not None and (headers is None or self.fmt is RecordFormat.JSON):
            rows = self._batch.rows(values)  # first: it refuses most batches it refuses cheaply
            if rows is None:
                return None
            facts = None
            if headers is not None and (facts := self._batch_header_facts(values, headers)) is None:
                return None
            return self._from_batch(rows, facts)
        if headers is None and self.fmt is RecordFormat.V2_PROTOBUF:
            plain = self._plain(values)
            return None if plain is None else self._from_plain(plain)
        return None

    def _batch_header_facts(
        self, values: Sequence[bytes | None], headers: Sequence[Headers | None]
    ) -> tuple[list[ModelLabels | None], list[str | None]] | None:
        """Model labels and ids of every message's headers, or None when some message's
        headers make it a dead letter or a response (the per-record path handles those)."""
        labels: list[ModelLabels | None] = [None] * len(values)
        ids: list[str | None] = [None] * len(values)
        for index, head in enumerate(headers):
            if head:
                try:
                    labels[index], response, ids[index] = self._header_facts(values[index], head)
                except Exception:
                    return None
                if response:
                    return None
        return labels, ids

    def _plain(self, values: Sequence[bytes | None]) -> PlainBatch | None:
        """``ProtobufReader.batch`` of values that are all there and within the limit."""
        assert self._protobuf is not None
        if None in values:
            return None
        texts = cast(Sequence[bytes], values)
        if min(map(len, texts)) == 0 or max(map(len, texts)) > self._max_bytes:
            return None
        return self._protobuf.batch(texts)

    def _from_plain(self, plain: PlainBatch) -> DecodedBatch:
        n, rows = len(plain.ids), plain.rows
        decoded = self._finish(
            plain.x,
            np.zeros((n * rows, self.spec.n_classes), np.float32),
            np.zeros(n * rows, dtype=bool),
            np.repeat(np.arange(n, dtype=np.int64), rows),
            np.tile(np.arange(rows, dtype=np.int32), n),
            [],
            [],
            [plain.labels] * n,
        )
        decoded.ids = plain.ids
        return decoded

    def _one_by_one(
        self,
        values: Sequence[bytes | None],
        headers: Sequence[Headers | None] | None,
        unreadable: Sequence[DeadLetter],
    ) -> DecodedBatch:
        """The per-record path: each message alone, so each gets its own outcome."""
        found: list[Rows] = []
        sources: list[int] = []
        dead: list[DeadLetter] = list(unreadable)
        skip = {d.index for d in unreadable}
        ignored: list[tuple[int, str]] = []
        labels: list[ModelLabels | None] = [None] * len(values)
        ids: list[str | None] = [None] * len(values)
        contexts: dict[int, dict[str, Any]] = {}
        fast = self._fast if self.fmt in (RecordFormat.JSON, RecordFormat.AUTO) else None
        for index, raw in enumerate(values):
            head = headers[index] if headers is not None else None
            if head:
                try:
                    labels[index], response, ids[index] = self._header_facts(raw, head)
                except Exception as exc:
                    dead.append(DeadLetter(index, *_failure(exc)))
                    continue
                if response:
                    ignored.append((index, "response"))
                    continue
            if skip and index in skip:
                continue
            got = fast(raw) if fast is not None else None
            if got is None:
                try:
                    got = self._rows(raw, head)
                except Exception as exc:  # every failure of one message is its own
                    dead.append(DeadLetter(index, *_failure(exc)))
                    continue
                if got is None:
                    ignored.append((index, "response"))
                    continue
            rows, body_id, context = got
            found.append(rows)
            sources.append(index)
            if body_id is not None:
                ids[index] = body_id
            if context:
                contexts[index] = context
            if rows[3] is not None:
                labels[index] = merge_labels(labels[index], rows[3])
        if unreadable:
            dead.sort(key=lambda d: d.index)
        decoded = self._assemble(found, sources, dead, ignored, labels)
        decoded.ids, decoded.contexts = ids, contexts
        return decoded

    def _header_facts(
        self, raw: bytes | None, head: Headers
    ) -> tuple[ModelLabels | None, bool, str | None]:
        """(model labels, is a response, event or request id) from a message's headers,
        which count against the size limit too, before anything reads them."""
        if is_unreadable(head):
            reject(Reason.NOT_UTF8, UNREADABLE_HEADERS)
        head_size, labels, response, found_id = message_facts(head)
        size = len(raw or b"") + head_size
        if size > self._max_bytes:
            reject(
                Reason.TOO_LARGE, f"{size} bytes with its headers, the limit is {self._max_bytes}"
            )
        return labels, response, found_id

    def _assemble(
        self,
        found: list[Rows],
        sources: list[int],
        dead: list[DeadLetter],
        ignored: list[tuple[int, str]],
        labels: list[ModelLabels | None],
    ) -> DecodedBatch:
        """The per-record path's rows joined into one float64 array, then ``_finish``."""
        spec = self.spec
        counts = [rows[0] for rows in found]
        xs = [rows[1] for rows in found]
        ys = [rows[2] for rows in found]
        n_rows = sum(counts)
        joined = b"".join(xs)
        outputs = self._outputs(ys, counts, n_rows)
        if len(joined) != n_rows * spec.size * 8 or outputs is None:
            # The format checks make this impossible; should a bug slip through, its
            # messages are dead-lettered rather than the batch failing.
            found, sources = self._drop_misfits(found, sources, dead)
            return self._assemble(found, sources, dead, ignored, labels)
        has_output, Y = outputs
        if len(counts) == n_rows:
            row_message = np.asarray(sources, dtype=np.int64)
            row_in = np.zeros(n_rows, dtype=np.int32)
        else:
            row_message = np.repeat(np.asarray(sources, dtype=np.int64), counts)
            starts = np.cumsum(counts) - np.asarray(counts)
            row_in = (np.arange(n_rows) - np.repeat(starts, counts)).astype(np.int32)
        flat = np.frombuffer(joined, dtype=np.float64)
        return self._finish(flat, Y, has_output, row_message, row_in, dead, ignored, labels)

    def _finish(
        self,
        flat: np.ndarray,
        Y: np.ndarray,
        has_output: np.ndarray,
        row_message: np.ndarray,
        row_in: np.ndarray,
        dead: list[DeadLetter],
        ignored: list[tuple[int, str]],
        labels: list[ModelLabels | None],
    ) -> DecodedBatch:
        """float32 rows from float64 numbers, then the vectorised finiteness check: a
        row with NaN, Infinity or a number beyond float32 dead-letters its message."""
        spec = self.spec
        with np.errstate(over="ignore", invalid="ignore"):
            X = flat.astype(np.float32).reshape(len(row_message), spec.size)
        ok = np.isfinite(X).all(axis=1)
        out_ok = np.isfinite(Y).all(axis=1) | ~has_output
        if not (ok.all() and out_ok.all()):
            bad = np.unique(row_message[~(ok & out_ok)])
            bad_x = set(row_message[~ok].tolist())
            for index in bad.tolist():
                where = "instance" if index in bad_x else "output"
                dead.append(
                    DeadLetter(
                        index,
                        Reason.NON_FINITE,
                        f"{where} holds NaN, Infinity or a value beyond the float32 range",
                    )
                )
            keep = ~np.isin(row_message, bad)
            X, Y, has_output = X[keep], Y[keep], has_output[keep]
            row_message, row_in = row_message[keep], row_in[keep]
            dead.sort(key=lambda d: d.index)
        return DecodedBatch(
            X=np.ascontiguousarray(X.reshape(len(X), *spec.shape)),
            outputs=Y if len(Y) and has_output.all() else None,
            has_output=has_output,
            row_message=row_message,
            row_in_message=row_in,
            dead=dead,
            ignored=ignored,
            model_labels=labels,
        )

    def _from_batch(
        self,
        rows: BatchRows,
        from_headers: tuple[list[ModelLabels | None], list[str | None]] | None = None,
    ) -> DecodedBatch:
        """The batch path's rows: one per message, in order; no context, labels only
        from headers, and a body's id before its headers' one."""
        n = len(rows.ids)
        if rows.y is None:
            has_output = np.zeros(n, dtype=bool)
            Y = np.zeros((n, self.spec.n_classes), np.float32)
        else:
            has_output = np.ones(n, dtype=bool)
            with np.errstate(over="ignore", invalid="ignore"):
                Y = rows.y.astype(np.float32)
        decoded = self._finish(
            rows.x,
            Y,
            has_output,
            np.arange(n, dtype=np.int64),
            np.zeros(n, dtype=np.int32),
            [],
            [],
            [None] * n if from_headers is None else from_headers[0],
        )
        ids = rows.ids
        if from_headers is not None:
            ids = [
                own if own is not None else head
                for own, head in zip(ids, from_headers[1], strict=True)
            ]
        decoded.ids = ids
        return decoded

    def _drop_misfits(
        self, found: list[Rows], sources: list[int], dead: list[DeadLetter]
    ) -> tuple[list[Rows], list[int]]:
        size, n_classes = self.spec.size, self.spec.n_classes
        kept: list[Rows] = []
        kept_sources: list[int] = []
        for rows, index in zip(found, sources, strict=True):
            n, x, y, _ = rows
            if count_of(x) != n * size or (y is not None and count_of(y) != n * n_classes):
                dead.append(DeadLetter(index, Reason.DECODER_ERROR, "decoded the wrong count"))
            else:
                kept.append(rows)
                kept_sources.append(index)
        dead.sort(key=lambda d: d.index)
        return kept, kept_sources

    def _outputs(
        self, ys: list[Any], counts: list[int], n_rows: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(which rows carry an output, float32 outputs with zeros where absent); None if
        an output has the wrong size (a bug: see ``_assemble``)."""
        n_classes = self.spec.n_classes
        if ys.count(None) == len(ys):
            return np.zeros(n_rows, dtype=bool), np.zeros((n_rows, n_classes), np.float32)
        if None not in ys:
            joined = b"".join(ys)
            if len(joined) != n_rows * n_classes * 8:
                return None
            flat = np.frombuffer(joined, dtype=np.float64)
            has_output = np.ones(n_rows, dtype=bool)
        else:
            flat = np.zeros(n_rows * n_classes, dtype=np.float64)
            has_output = np.zeros(n_rows, dtype=bool)
            start = 0
            for y, n in zip(ys, counts, strict=True):
                if y is not None:
                    if count_of(y) != n * n_classes:
                        return None
                    flat[start * n_classes : (start + n) * n_classes] = np.frombuffer(y)
                    has_output[start : start + n] = True
                start += n
        with np.errstate(over="ignore", invalid="ignore"):
            return has_output, flat.astype(np.float32).reshape(n_rows, n_classes)


def _identity_of(
    doc: Any, keys: list[str], fields: frozenset[str], max_context: int
) -> tuple[str | None, dict[str, Any] | None]:
    """(the body's text id, its other fields capped to ``max_context`` bytes of JSON).

    Fields are walked with ``items()``: simdjson's lookup by key cannot find every key
    JSON allows (one holding a NUL, say).
    """
    body_id = _text_id(doc["id"]) if "id" in keys else None
    if max_context <= 0 or fields.issuperset(keys):
        return body_id, None
    others = {k: _plain(v) for k, v in doc.items() if k not in fields}
    return body_id, cap_context(others, max_context)


def _plain(value: Any) -> Any:
    """A parsed value as plain Python (simdjson's arrays and objects are proxies)."""
    if type(value) is Array:
        return value.as_list()
    if type(value) is simdjson.Object:
        return value.as_dict()
    return value


def _fast_json(decoder: RecordDecoder) -> Callable[[bytes | None], Found | None]:
    """The common case, ``raw -> rows`` or None: a json record whose nesting the raw
    text proves without looking at the numbers (the proofs are explained in
    ``formats.json_rows``). Anything else, or odd, returns None and takes the general
    path, which also says what is wrong. A closure over the plan's facts: attribute
    look-ups per message cost more than the call. The parser's proxies must be dropped
    before the next parse, hence the ``= None``.
    """
    plan = decoder._plan
    flat, shape0, n_classes, size = plan.flat, plan.shape0, plan.n_classes, plan.size
    expected, max_bytes = skeleton(plan.shape), decoder._max_bytes
    brackets, unit_rows = expected.count(b"["), plan.shape[-1] == 1
    max_context = decoder.spec.max_context_bytes

    def flat_rest(raw: bytes, second: int, has_out: bool) -> bool:
        """The flat proof past a second ``[`` (the output's, or a context array's)."""
        return (has_out and raw.find(b"[", second + 1) < 0) or (
            flat_value(raw, b'"instance"') and (not has_out or flat_value(raw, b'"output"'))
        )

    def nested_buffer(raw: bytes, inst: Any, has_out: bool) -> Any:
        """A nested instance's numbers, once its raw text proves the shape; else None."""
        if type(inst[0]) is not Array:
            return None
        bare = raw.translate(None, NUMBER_AND_SPACE)
        if not (
            bare.count(b"[") == brackets + has_out and bare.startswith(expected, bare.find(b"[["))
        ):
            start = array_start(raw, b'"instance"')
            if not (
                start >= 0
                and skeleton_at(raw, start, expected)
                and (not has_out or flat_value(raw, b'"output"'))
            ):
                return None
        x = inst.as_buffer(of_type="d")
        # [] and [5] share a skeleton, [,] and [1,2] don't
        return None if unit_rows and count_of(x) != size else x

    def output_of(doc: Any) -> Any:
        out = doc["output"]
        return out.as_buffer(of_type="d") if type(out) is Array and len(out) == n_classes else None

    # One call per message in the common case: each further Python call in here (the
    # flat proof, the id) cost several percent of the decoding children's time, and
    # they are the worker's bottleneck.
    def rows(raw: bytes | None) -> Found | None:
        if not raw or len(raw) > max_bytes:
            return None
        doc: Any = None
        inst: Any = None
        try:
            doc = decoder._parser.parse(raw)
            if type(doc) is not simdjson.Object:
                return None
            keys = list(doc.keys())
            if "instance" not in keys or len(set(keys)) != len(keys) or not _NO_LABELS(keys):
                return None
            inst = doc["instance"]
            if type(inst) is not Array or len(inst) != shape0:
                return None
            has_out = "output" in keys
            y = None
            if has_out and (y := output_of(doc)) is None:
                return None
            if not flat:
                if (x := nested_buffer(raw, inst, has_out)) is None:
                    return None
            elif (second := raw.find(b"[", raw.find(b"[") + 1)) >= 0 and not flat_rest(
                raw, second, has_out
            ):
                return None
            else:
                x = inst.as_buffer(of_type="d")
            extra = len(keys) - 1 - has_out
            if not extra:  # no id, no context: the cheapest record
                return (1, x, y, None), None, None
            if extra == 1 and type(body_id := doc.get("id")) is str:
                return (1, x, y, None), body_id[:MAX_VALUE_CHARS], None  # as _text_id
            found_id, context = _identity_of(doc, keys, _JSON_FIELDS, max_context)
            return (1, x, y, None), found_id, context
        except Exception:  # the general path says what is wrong (with a fresh parser)
            return None
        finally:
            doc = inst = None

    return rows


def _failure(exc: Exception) -> tuple[Reason, str]:
    if isinstance(exc, DecodeError):
        return Reason(exc.reason), _clip(exc.detail)
    if isinstance(exc, RecursionError):
        return Reason.INVALID_JSON, "nested too deeply"
    if isinstance(exc, MemoryError):
        return Reason.TOO_LARGE, "ran out of memory while decoding"
    return Reason.DECODER_ERROR, _clip(f"{type(exc).__name__}: {exc}")


# -- identity of a flagged row -------------------------------------------------------


class RecordIdentity(NamedTuple):
    """Who a row is, for its alert: id, key, model, event type and context fields (a
    named tuple: one is made per alert, and a frozen dataclass cost twice as much)."""

    id: str
    key: bytes | None
    model: ModelLabels | None
    event_type: str | None
    context: dict[str, Any]
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp_ms: int | None


class MessageIdentity(NamedTuple):
    """Who a message's rows are: read once per message, however many rows are flagged."""

    base: str
    several_rows: bool
    first: RecordIdentity

    def row(self, row_in_message: int) -> RecordIdentity:
        """The identity of one row: ``<id>#<row>`` when the message holds several."""
        if row_in_message > 0 or self.several_rows:
            return self.first._replace(id=f"{self.base}#{row_in_message}")
        return self.first


def record_identity(
    message: MessageLike,
    fmt: RecordFormat | str,
    row_in_message: int,
    max_context_bytes: int = MAX_CONTEXT_BYTES,
) -> RecordIdentity:
    """Identity of one decoded row (``message_identity(...).row(row_in_message)``)."""
    return message_identity(message, fmt, max_context_bytes).row(row_in_message)


def message_identity(
    message: MessageLike,
    fmt: RecordFormat | str,
    max_context_bytes: int = MAX_CONTEXT_BYTES,
) -> MessageIdentity:
    """Identity of a message's rows (re-parses the message; meant for flagged ones only).

    The id is the body's ``id``, else the CloudEvents ``ce_id``, else Seldon's
    ``requestid``, else ``topic/partition/offset``; rows of a message holding several get
    ``#<row>`` appended. Never raises for anything the message holds.
    """
    resolved = fmt if isinstance(fmt, RecordFormat) else RecordFormat(fmt)
    try:
        headers = message.headers()
    except Exception:  # e.g. a header name that isn't UTF-8
        headers = None
    if resolved is RecordFormat.JSON and not headers:
        plain_id = _plain_json_id(message.value())
        if plain_id is not None:
            return MessageIdentity(plain_id, False, _plain_identity(message, plain_id))
    try:
        head = read_headers(headers)
    except Exception:
        head = None
    body = _body_of(message.value())
    keys = list(body)
    if resolved is RecordFormat.AUTO:
        try:
            resolved = sniff(keys) or RecordFormat.V2
        except DecodeError:
            resolved = RecordFormat.JSON
    base = _text_id(body.get("id"))
    if base is None and head is not None:
        base = head.event_id or head.request_id
    if base is None:
        base = f"{message.topic()}/{message.partition()}/{message.offset()}"
    body_model = labels_of(
        text(body.get("model_name")), text(body.get("model_version")), text(body.get("namespace"))
    )
    key = message.key()
    ts_type, ts = message.timestamp()
    first = RecordIdentity(
        id=base,
        key=key.encode() if isinstance(key, str) else key,
        model=merge_labels(head.labels if head is not None else None, body_model),
        event_type=head.event_type if head is not None else None,
        context=cap_context(
            {k: v for k, v in body.items() if k not in _FIELDS_OF.get(resolved, ())},
            max_context_bytes,
        ),
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp_ms=ts if ts_type else None,
    )
    return MessageIdentity(base, _row_count(body, resolved) > 1, first)


_PLAIN_JSON_FIELDS = _JSON_FIELDS
_local = threading.local()  # a simdjson parser per thread (a parser is not thread-safe)


def _plain_json_id(raw: bytes | None) -> str | None:
    """The text id of a json body holding nothing but ``id``, ``instance`` and maybe
    ``output``: the common record, whose identity needs no other field. None for any
    other body (the general path decides). simdjson reads it without making the
    numbers into Python floats, which was most of an alert's cost.
    """
    if not raw:
        return None
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        doc = parser.parse(raw)
    except (ValueError, RuntimeError):
        _local.parser = None  # a failed or stuck parser: a fresh one next time
        return None
    try:
        if type(doc) is not simdjson.Object:
            return None
        keys = list(doc.keys())
        if (
            "id" not in keys
            or len(set(keys)) != len(keys)
            or not _PLAIN_JSON_FIELDS.issuperset(keys)
        ):
            return None
        value = doc["id"]
        return text(value) if type(value) is str else None
    finally:
        doc = None  # the parser's proxies must be gone before its next parse


def _plain_identity(message: MessageLike, record_id: str) -> RecordIdentity:
    key = message.key()
    ts_type, ts = message.timestamp()
    return RecordIdentity(
        id=record_id,
        key=key.encode() if isinstance(key, str) else key,
        model=None,
        event_type=None,
        context={},
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp_ms=ts if ts_type else None,
    )


def _body_of(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError, MemoryError):
        return {}
    return body if isinstance(body, dict) else {}


def _text_id(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return text(value)


def _row_count(body: dict[str, Any], fmt: RecordFormat) -> int:
    try:
        if fmt is RecordFormat.V2:
            shape = body["inputs"][0]["shape"]
            return int(shape[0]) if len(shape) > 1 else 1
        if fmt is RecordFormat.V1:
            return len(body["instances"])
        if fmt is RecordFormat.SELDON:
            data = body["data"]
            if "ndarray" in data:
                return len(data["ndarray"])
            return int(data["tensor"]["shape"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return 1
    return 1


def cap_context(context: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Keep fields whole, in order, while they fit ``max_bytes`` of JSON.

    A subscriber never sees a silently cut value: ``_dropped_fields`` says how many
    fields did not fit.
    """
    if max_bytes <= 0 or not context:
        return {}
    kept: dict[str, Any] = {}
    used = 2
    dropped = 0
    for key, value in context.items():
        try:
            size = len(orjson.dumps({key: value}))
        except (TypeError, orjson.JSONEncodeError):
            size = max_bytes + 1
        if used + size <= max_bytes:
            kept[key] = value
            used += size
        else:
            dropped += 1
    if dropped:
        kept["_dropped_fields"] = dropped
    return kept
