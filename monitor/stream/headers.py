"""What Kafka headers say about a record: event id and type, and the model it came from.

Model servers log to Kafka in two header dialects: CloudEvents binary mode (``ce_id``,
``ce_type``, ``ce_inferenceservicename``, ``ce_namespace``, ... as KServe writes them)
and Seldon's payload logger (``type``, ``requestid``, ``modelid``, ``inferenceservicename``,
``namespace``). Both are read through one normalisation (lower case, ``-`` to ``_``, the
``ce_`` prefix dropped) so ``Ce-Type``, ``ce_type`` and ``type`` mean the same thing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The one header a record keeps when the Kafka client cannot read its own (a header
#: name that is not UTF-8): see ``guard_headers``.
UNREADABLE = "dmon.original.headers_unreadable"
_UNREADABLE_HEADERS = [(UNREADABLE, b"a header name of the record is not UTF-8")]

#: Longest header or label value kept; longer ones are cut (labels become metric labels).
MAX_VALUE_CHARS = 256

HeaderValue = str | bytes | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]


@dataclass(frozen=True, slots=True)
class ModelLabels:
    """The model a record belongs to, as far as headers or body tell."""

    model_name: str | None = None
    model_version: str | None = None
    namespace: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The fields that are known, for alert payloads."""
        return {
            k: v
            for k, v in (
                ("model_name", self.model_name),
                ("model_version", self.model_version),
                ("namespace", self.namespace),
            )
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    """The few header fields the decoder and the alerts use."""

    event_id: str | None
    event_type: str | None
    request_id: str | None
    labels: ModelLabels | None

    @property
    def is_response(self) -> bool:
        """A response event logged apart from its request: counted, never scored."""
        return _is_response(self.event_type)


def _is_response(event_type: str | None) -> bool:
    return event_type is not None and event_type.lower().endswith("response")


# Normalised header name -> field. Several names can feed one field; the first seen wins.
_FIELDS = {
    "id": "event_id",
    "type": "event_type",
    "requestid": "request_id",
    "inferenceservicename": "model_name",
    "modelid": "model_id",
    "model_name": "model_name",
    "modelname": "model_name",
    "modelversion": "model_version",
    "model_version": "model_version",
    "namespace": "namespace",
}

# Interned labels: a batch of 512 records from one model shares one object. The caches
# here are emptied when full, so hostile headers can't grow them without limit.
_LABEL_CACHE: dict[tuple[str | None, str | None, str | None], ModelLabels] = {}
_CACHE_MAX = 4096


def text(value: object) -> str | None:
    """A header or body value as bounded text (bytes decoded leniently), else None."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[: MAX_VALUE_CHARS * 4]).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value[:MAX_VALUE_CHARS]


def labels_of(name: str | None, version: str | None, namespace: str | None) -> ModelLabels | None:
    """Interned ``ModelLabels``, or None when nothing is known."""
    if name is None and version is None and namespace is None:
        return None
    key = (name, version, namespace)
    found = _LABEL_CACHE.get(key)
    if found is None:
        found = ModelLabels(name, version, namespace)
        if len(_LABEL_CACHE) >= _CACHE_MAX:
            _LABEL_CACHE.clear()
        _LABEL_CACHE[key] = found
    return found


def merge_labels(header: ModelLabels | None, body: ModelLabels | None) -> ModelLabels | None:
    """Body fields win over header fields (the body is what the server itself wrote)."""
    if body is None:
        return header
    if header is None:
        return body
    return labels_of(
        body.model_name or header.model_name,
        body.model_version or header.model_version,
        body.namespace or header.namespace,
    )


def _normalise(name: str) -> str:
    name = name.lower().replace("-", "_")
    return name[3:] if name.startswith("ce_") else name


_FIELD_CACHE: dict[str, str | None] = {}


#: Longest header name a cache keeps; no known name comes near it.
_MAX_NAME_CHARS = 64


def _field(name: str) -> str | None:
    """The field a header name feeds (memoised: a topic's header names repeat)."""
    try:
        return _FIELD_CACHE[name]
    except KeyError:
        if len(name) > _MAX_NAME_CHARS:
            return None  # not a name we read, and too long to keep
        field = _FIELDS.get(_normalise(name))
        if len(_FIELD_CACHE) >= _CACHE_MAX:
            _FIELD_CACHE.clear()
        _FIELD_CACHE[name] = field
        return field


def header_bytes(headers: Headers) -> int:
    """Bytes in a message's header names and values (what ``--max-message-bytes``
    counts beside the value); malformed entries count what they can."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    total = 0
    for pair in items:
        if type(pair) is tuple and len(pair) == 2:
            name, value = pair
            total += len(name) if isinstance(name, str | bytes) else 0
            total += len(value) if isinstance(value, str | bytes | bytearray) else 0
    return total


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    """(field, text) of the known headers, in order, skipping malformed entries."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[0], str):
            continue
        field = _field(pair[0])
        if field is not None:
            value = text(pair[1])
            if value is not None:
                out.append((field, value))
    return out


def read_headers(headers: Headers | None) -> HeaderInfo | None:
    """Pick the known fields out of a message's headers (list of pairs or mapping)."""
    if not headers:
        return None
    found: dict[str, str] = {}
    for field, value in _pairs(headers):
        found.setdefault(field, value)  # the first one wins
    if not found:
        return None
    return HeaderInfo(
        event_id=found.get("event_id"),
        event_type=found.get("event_type"),
        request_id=found.get("request_id"),
        labels=labels_of(
            found.get("model_name") or found.get("model_id"),
            found.get("model_version"),
            found.get("namespace"),
        ),
    )


def header_id(headers: Headers) -> str | None:
    """The event id (``ce_id``), else the request id, of a message's headers."""
    info = read_headers(headers)
    if info is None:
        return None
    return info.event_id or info.request_id


# What the decoder needs per message, keyed by the bounded text of the label and type
# headers: a topic's messages mostly repeat them, so the labels are made once.
_FACTS_CACHE: dict[tuple[tuple[str, str], ...], tuple[ModelLabels | None, bool]] = {}
_IDS = frozenset({"event_id", "request_id"})


def decoder_facts(headers: Headers) -> tuple[ModelLabels | None, bool]:
    """(model labels, is a response event) from a message's headers, cheaply."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    first: dict[str, str] = {}
    for pair in items:
        if type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str:
            field = _field(pair[0])
            if field is not None and field not in _IDS and field not in first:
                # The first readable value of each field, as bounded text: what
                # ``read_headers`` decides on, and nothing attacker-sized to cache.
                value = text(pair[1])
                if value is not None:
                    first[field] = value
    return _facts_of(tuple(first.items()))


def message_facts(headers: Headers) -> tuple[int, ModelLabels | None, bool, str | None]:
    """``header_bytes``, ``decoder_facts`` and ``header_id`` of a message's headers in
    one walk over them (three walks cost the decoder more than a record's JSON)."""
    if type(headers) is not list:
        return _facts_apart(headers)
    total = 0
    first: dict[str, str] = {}
    for pair in headers:
        if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str:
            return _facts_apart(headers)  # odd entries: each question on its own
        name, value = pair
        total += len(name)
        if value is not None:
            if not isinstance(value, bytes | bytearray | str):
                return _facts_apart(headers)
            total += len(value)
        field = _field(name)
        if field is not None and field not in first:
            found = text(value)
            if found is not None:
                first[field] = found
    labels, response = _facts_of(tuple((k, v) for k, v in first.items() if k not in _IDS))
    return total, labels, response, first.get("event_id") or first.get("request_id")


def _facts_apart(headers: Headers) -> tuple[int, ModelLabels | None, bool, str | None]:
    labels, response = decoder_facts(headers)
    return header_bytes(headers), labels, response, header_id(headers)


def _facts_of(frozen: tuple[tuple[str, str], ...]) -> tuple[ModelLabels | None, bool]:
    """``decoder_facts`` of the first readable value of each known field, memoised."""
    try:
        return _FACTS_CACHE[frozen]
    except KeyError:
        pass
    first = dict(frozen)
    facts = (
        labels_of(
            first.get("model_name") or first.get("model_id"),
            first.get("model_version"),
            first.get("namespace"),
        ),
        _is_response(first.get("event_type")),
    )
    if len(_FACTS_CACHE) >= _CACHE_MAX:
        _FACTS_CACHE.clear()
    _FACTS_CACHE[frozen] = facts
    return facts


#: Calls ``headers()`` through C, where CPython always checks a C function's result: the
#: interpreter's specialised call of a warm ``message.headers()`` call site does not, and
#: the failure then goes unnoticed (and the NULL name is read later).
_read_headers = operator.methodcaller("headers")


def guard_headers(messages: Iterable[Any]) -> None:
    """Replace the headers of messages whose headers the Kafka client cannot read.

    confluent-kafka cannot build a header name that is not UTF-8: the first
    ``headers()`` raises, and every later call returns a pair holding a NULL name that
    crashes the interpreter (a segmentation fault) when touched. So each message's
    headers are read once, here, before anything else does, and those that fail are
    replaced by ``UNREADABLE`` alone: the decoder dead-letters such a record as
    ``not_utf8``, and its dead letter says why its headers are gone.
    """
    for message in messages:
        try:
            _read_headers(message)
        except Exception:
            message.set_headers(list(_UNREADABLE_HEADERS))


def is_unreadable(headers: Headers) -> bool:
    """Whether ``guard_headers`` replaced these headers."""
    return type(headers) is list and len(headers) == 1 and headers[0][0] == UNREADABLE
