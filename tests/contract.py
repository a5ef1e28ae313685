"""The alert contract, checked on every alert and drift event a test sees.

``fixtures_kafka`` runs ``check_if_ours`` on every message it reads back, so any test
that reads an alert or drift topic validates what it read: the CloudEvents headers (all
of them, the id made from the payload's source coordinates, the time and subject
agreeing with the payload) and the payload against its JSON Schema with ``jsonschema``.
Unit tests of the builders call ``check_outgoing``. A message is ours when it says so
in ``ce_type`` or in its payload's ``schema``: a message claiming either must pass both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from monitor.schemas import problems
from monitor.stream import events
from monitor.stream.alerts import Outgoing

SCHEMA_IDS = {schema: kind for kind, schema in events.SCHEMA_OF_TYPE.items()}
_MARK = b'"schema":"urn:distillation-monitor:schema:'
#: Counts of what was checked, by ce_type (a test can show validation really ran).
CHECKED: dict[str, int] = {}


class ContractError(AssertionError):
    """An alert or drift event that breaks the published contract."""


def header_dict(headers: Iterable[tuple[str, Any]] | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in headers or ():
        raw = value.encode() if isinstance(value, str) else (value or b"")
        if name in out and name.startswith("ce_"):
            raise ContractError(f"header {name} appears twice")
        out[name] = raw
    return out


def is_ours(headers: dict[str, bytes], value: bytes | None) -> bool:
    if "dmon.reason" in headers:  # a dead letter: the original record, headers and all
        return False
    if headers.get("ce_type", b"").decode(errors="replace") in events.SCHEMA_OF_TYPE:
        return True
    return bool(value) and _MARK in (value or b"")[:120]


def check_if_ours(headers: Iterable[tuple[str, Any]] | None, value: bytes | None) -> None:
    """Validate the message if it is an alert or a drift event (see the module doc)."""
    found = header_dict(headers)
    if is_ours(found, value):
        check_event(found, value)


def check_outgoing(out: Outgoing) -> dict[str, Any]:
    """Validate a message the worker is about to produce; returns its payload."""
    return check_event(header_dict(out.headers), out.value)


def check_event(headers: dict[str, bytes], value: bytes | None) -> dict[str, Any]:
    """Headers and payload of one alert or drift event; returns the payload."""
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"payload is not JSON: {exc}") from None
    kind = headers.get("ce_type", b"").decode()
    if kind not in events.SCHEMA_OF_TYPE:
        raise ContractError(f"ce_type {kind!r} is not one we write (payload {value!r:.200})")
    wrong = problems(kind, body)
    if wrong:
        raise ContractError(f"{kind} payload breaks its schema: {wrong[:5]} in {value!r:.300}")
    _check_headers(kind, headers, body)
    CHECKED[kind] = CHECKED.get(kind, 0) + 1
    result: dict[str, Any] = body
    return result


def _check_headers(kind: str, headers: dict[str, bytes], body: dict[str, Any]) -> None:
    src = body["source"]
    if kind == events.ALERT_TYPE:
        want_id = events.alert_id(src["topic"], src["partition"], src["offset"], src["row"])
        want_time, want_subject = body["scored_at"], body["id"]
    else:
        want_id = events.drift_id(src["topic"], src["partition"], src["offset"], src["row"])
        want_time, want_subject = body["detected_at"], src["topic"]
    want = {
        "ce_specversion": b"1.0",
        "ce_id": want_id.encode(),
        "ce_type": kind.encode(),
        "ce_time": want_time.encode(),
        "ce_subject": want_subject.encode("utf-8", "replace"),
        "ce_dataschema": events.SCHEMA_OF_TYPE[kind].encode(),
        "content-type": b"application/json",
    }
    for name, expected in want.items():
        if headers.get(name) != expected:
            raise ContractError(f"{kind}: header {name} is {headers.get(name)!r}, not {expected!r}")
    if not headers.get("ce_source", b"").startswith(b"/distillation-monitor/"):
        raise ContractError(f"{kind}: ce_source {headers.get('ce_source')!r}")
    if body["schema"] != events.SCHEMA_OF_TYPE[kind]:
        raise ContractError(f"{kind}: payload schema {body['schema']!r}")
