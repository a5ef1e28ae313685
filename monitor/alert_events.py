"""Reading what the worker publishes, as a subscriber would (pure, no Kafka client).

``read_event`` checks one message against the contract (CloudEvents headers, payload
valid against its JSON Schema) and returns an ``Event`` or says why not; ``Seen`` drops
duplicates by (``ce_source``, ``ce_id``); ``text_line`` and ``json_line`` print one.
JSON lines are CloudEvents in structured mode (the attributes and ``data`` in one
object), so any CloudEvents tool reads them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.schemas import problems
from monitor.stream import events

#: Distinct events remembered for dropping duplicates. At-least-once duplicates follow
#: their originals within a few batches (the batches not committed at a crash), on the
#: same partition (same key); this bounds memory on a topic read from its start.
SEEN_WINDOW = 100_000
MAX_CONTEXT_CHARS = 160
_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")


@dataclass(frozen=True)
class Event:
    """One alert or drift event, with where it was read."""

    attributes: dict[str, str]  # ce_* headers without the prefix, and datacontenttype
    data: dict[str, Any]
    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> tuple[str, str]:
        return self.attributes["source"], self.attributes["id"]

    @property
    def is_alert(self) -> bool:
        return self.attributes["type"] == events.ALERT_TYPE


class NotAnEvent(ValueError):
    """The message breaks the contract: what is wrong, in one line."""


def read_event(
    headers: Iterable[tuple[str, str | bytes | None]] | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
) -> Event:
    """The event in one message, or ``NotAnEvent``."""
    found = {
        name: raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
        for name, raw in headers or ()
    }
    missing = [name for name in _REQUIRED if not found.get(name)]
    if missing:
        raise NotAnEvent(f"no {', '.join(missing)} header (not a CloudEvent)")
    if found["ce_specversion"] != "1.0":
        raise NotAnEvent(f"CloudEvents spec version {found['ce_specversion']!r}, not 1.0")
    kind = found["ce_type"]
    if kind not in events.SCHEMA_OF_TYPE:
        raise NotAnEvent(f"event type {kind[:100]!r} is not one the worker writes")
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise NotAnEvent(f"payload is not JSON ({exc})") from None
    wrong = problems(kind, data)
    if wrong:
        raise NotAnEvent(f"payload breaks {events.SCHEMA_OF_TYPE[kind]}: {wrong[0]}")
    attributes = {name[3:]: text for name, text in found.items() if name.startswith("ce_")}
    attributes["datacontenttype"] = found.get("content-type", "application/json")
    return Event(attributes, data, topic, partition, offset)


class Seen:
    """The last ``window`` distinct event keys: ``first(event)`` is False for a repeat."""

    def __init__(self, window: int = SEEN_WINDOW) -> None:
        self.window = window
        self._keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, event: Event) -> bool:
        key = event.key
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.window:
            self._keys.popitem(last=False)
        return True


def json_line(event: Event) -> str:
    """The event as one structured-mode CloudEvents JSON object."""
    body = {"specversion": "1.0", **event.attributes, "data": event.data}
    return orjson.dumps(body).decode()


def text_line(event: Event) -> str:
    """One line an operator can read: when, what, how sure, which record, where."""
    data = event.data
    src = data["source"]
    where = f"{src['topic']}[{src['partition']}]@{src['offset']} row {src['row']}"
    det = data["detector"]
    detector = f"{det['name']} v{det['version']}"
    if event.is_alert:
        text = (
            f"{data['scored_at']}  ALERT  score {data['score']:.4g} > {det['threshold']:.4g}  "
            f"record {data['id']}  class {data['classifier_class']} "
            f"(distilled {data['distilled_class']})  {where}  {detector}"
        )
        model = data.get("model")
        if model:
            text += "  model " + "/".join(str(v) for v in model.values())
        if data["context"]:
            context = orjson.dumps(data["context"]).decode()
            if len(context) > MAX_CONTEXT_CHARS:
                context = context[: MAX_CONTEXT_CHARS - 1] + "…"
            text += f"  {context}"
        return text
    return (
        f"{data['detected_at']}  DRIFT  KS p-value {data['p_value']:.3g} < "
        f"{data['p_value_threshold']:.3g} over {data['window']} records "
        f"(statistic {data['statistic']:.3f})  up to {where}  {detector}"
    )
