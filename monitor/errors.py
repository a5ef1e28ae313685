"""One root error for everything the package raises on purpose.

The CLI prints a ``MonitorError`` as one line and exits 1. Anything else is a bug: the
CLI names it in one line too and exits 70, with the traceback logged at DEBUG (a user
sees no traceback; the tests fail on that line).
"""

from __future__ import annotations


class MonitorError(Exception):
    """Root of every deliberate error in distillation-monitor."""


class ConfigError(MonitorError, ValueError):
    """Invalid configuration, found before touching Kafka or TensorFlow."""


class DetectorError(MonitorError):
    """A detector cannot be built, used, saved or loaded."""


class InputValidationError(DetectorError, ValueError):
    """Data passed to a detector has the wrong shape, dtype or non-finite values."""


class DetectorFormatError(DetectorError):
    """A detector directory is missing, corrupt, of an unknown version or inconsistent."""


class UnsafePickleError(DetectorFormatError):
    """A legacy pickle asked for something the restricted reader does not allow."""


class DataFileError(MonitorError, ValueError):
    """A data file is missing, unreadable or not a numeric array."""


class DecodeError(MonitorError):
    """A record could not be turned into an instance; keeps the raw bytes for the dead letter."""

    def __init__(self, reason: str, detail: str, raw: bytes | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw


class DeliveryError(MonitorError):
    """The broker did not acknowledge an alert or dead letter; the batch must not be committed."""


class FencedError(MonitorError):
    """Another worker with our transactional id took over; this one must stop."""


class LocalKafkaError(MonitorError):
    """The project's local broker could not be fetched, started or reached."""


class MetricsServerError(MonitorError):
    """The /metrics and health HTTP server could not bind its host and port."""


class EvaluationError(MonitorError, ValueError):
    """Inputs or options of ``evaluate`` that cannot be used (missing arrays, mismatched rows)."""


class DemoError(MonitorError):
    """The demo or its traffic generator cannot run (bad options, broker or topic trouble)."""


class TopicError(MonitorError):
    """The worker's topics cannot be created or described (broker unreachable, refused)."""
