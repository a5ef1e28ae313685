"""Logging set-up: human text by default, one JSON object per line with ``--log-format json``.

Log calls pass what an operator queries as ``extra=`` fields (``event``, ``topic``,
``partition``, offsets, counts, ``*_s`` durations): text lines show the message, JSON
lines carry the fields too. librdkafka's own lines arrive through the clients' ``logger``
setting on the ``monitor.kafka.<client>`` loggers, at the matching level; in JSON they
carry ``event: "kafka"``, the librdkafka ``facility`` (CONFWARN, GETPID, ...) and the
``client`` instance.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({})))
#: Where librdkafka's log lines go (``WorkerConfig.*_conf`` set these loggers).
KAFKA_LOGGER = "monitor.kafka"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(_kafka_fields(record))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in body:
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def _kafka_fields(record: logging.LogRecord) -> dict[str, Any]:
    """confluent-kafka logs ``"%s [%s] %s" % (facility, client, text)``: the first two as
    fields of their own."""
    if not record.name.startswith(KAFKA_LOGGER + ".") or not isinstance(record.args, tuple):
        return {}
    if len(record.args) != 3:
        return {"event": "kafka"}
    facility, client, _text = record.args
    return {"event": "kafka", "facility": str(facility), "client": str(client)}


def kafka_logger(client: str) -> logging.Logger:
    """The logger a Kafka client's librdkafka lines go to (its ``logger`` setting)."""
    return logging.getLogger(f"{KAFKA_LOGGER}.{client}")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged, not the stream of the
    moment it was set up: a command run in-process (tests, an embedding application) may
    swap stderr, and a handler holding a closed stream turns every later line into a
    logging error."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(level: str = "INFO", fmt: str = "text", *, replace: bool = True) -> None:
    """Send log lines to stderr at ``level`` (validated by ``config``).

    ``replace=False`` leaves a process that already has handlers (a test runner, an
    embedding application) as it is; long-running commands replace them.
    """
    root = logging.getLogger()
    if root.handlers and not replace:
        # Ours print at the level asked now, not one an earlier in-process command set.
        for ours in (h for h in root.handlers if isinstance(h, StderrHandler)):
            ours.setLevel(level.upper())
        return
    handler = StderrHandler()
    handler.setLevel(level.upper())  # a logger set lower elsewhere does not reach stderr
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
