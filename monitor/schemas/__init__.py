"""JSON Schemas (draft 2020-12) of the payloads the worker publishes, shipped in the package.

``alert.v2.schema.json`` and ``drift.v2.schema.json`` are the contract; ``docs/schemas/``
holds the same files for readers (a test keeps them equal). Each file stands alone, so
a subscriber can validate with either one and any draft 2020-12 validator.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from monitor.stream.events import ALERT_TYPE, DRIFT_TYPE

#: ce_type -> the schema file of its payload.
FILES = {ALERT_TYPE: "alert.v2.schema.json", DRIFT_TYPE: "drift.v2.schema.json"}


@cache
def schema(event_type: str) -> dict[str, Any]:
    """The schema of ``event_type``'s payload (KeyError for a type we do not write)."""
    text = files(__name__).joinpath(FILES[event_type]).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator(event_type: str) -> Any:
    """A ``jsonschema`` validator for ``event_type``'s payload, formats checked too."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(
        schema(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def problems(event_type: str, payload: Any) -> list[str]:
    """What is wrong with ``payload`` for ``event_type``, one line each (empty: valid)."""
    found = validator(event_type).iter_errors(payload)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]
