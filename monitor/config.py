"""The worker's configuration: one typed, frozen object and where its values come from.

Precedence, highest first: command-line flags, ``DMON_*`` environment variables, a TOML
file (``--config FILE``), defaults. Every option is declared once in ``OPTIONS``; the
argparse flags, the environment names, the TOML keys and the README's reference table are
all generated from that list, so they cannot drift apart.

librdkafka settings pass through untouched: ``--kafka-option KEY=VALUE`` (repeatable), a
``[kafka]`` table in the file, or ``DMON_KAFKA_<KEY>`` with dots written as underscores
(``DMON_KAFKA_SASL_PASSWORD`` -> ``sasl.password``), each only to the clients it applies
to (``kafka_properties``). Every client logs through Python logging
(``monitor.kafka.<client>``), never straight to stderr. Secrets never reach the logs:
``WorkerConfig.redacted()`` is what gets printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError
from monitor.kafka_properties import Client, for_client

ENV_PREFIX = "DMON_"
KAFKA_ENV_PREFIX = "DMON_KAFKA_"
RECORD_FORMATS = ("json", "v2", "v1", "seldon", "v2-protobuf", "auto")
START_POSITIONS = ("earliest", "latest")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# -- what may be logged: librdkafka keys are judged by their kind ------------------------
#: Key families that carry credentials (SASL logins, OAuth and Kerberos settings, TLS
#: keys and keystores). Every key under them is secret unless listed in ``PUBLIC_KEYS``
#: or a ``.location`` path, so a setting a newer librdkafka adds stays hidden.
SECRET_PREFIXES = ("sasl.", "ssl.")
#: Keys under those prefixes that name or choose something rather than prove it. The
#: user name is shown: it is an identity, not a credential, and it is what one needs to
#: see when a login fails. ``ssl.certificate.pem`` and ``ssl.ca.pem`` are public in
#: principle but stay hidden: a PEM value is often a bundle that carries the private key
#: too, and a certificate blob says nothing useful in a log line.
PUBLIC_KEYS = frozenset(
    {
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.kerberos.service.name",
        "sasl.kerberos.principal",
        "sasl.kerberos.min.time.before.relogin",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.scope",
        "sasl.oauthbearer.token.endpoint.url",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "ssl.sigalgs.list",
        "ssl.endpoint.identification.algorithm",
        "ssl.providers",
        "ssl.engine.id",
        "ssl.ca.certificate.stores",
    }
)
#: Any other key naming one of these is secret too (e.g. a schema registry's
#: ``basic.auth.user.info``, which is ``user:password``).
SECRET_MARKERS = (
    "password",
    "secret",
    "jaas",
    "token",
    "credential",
    "private",
    "key.pem",
    "oauth",
    "basic.auth",
    "user.info",
)

# librdkafka settings the worker owns: letting a user override them would break the
# delivery guarantees, so they are refused with a clear message.
RESERVED_KAFKA_KEYS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "transactional.id",
        "isolation.level",
        "enable.idempotence",
        "auto.offset.reset",
        "on_delivery",
        "error_cb",
        "stats_cb",
    }
)
#: The worker's option that replaces a reserved key, named in the refusal.
RESERVED_INSTEAD = {
    "auto.offset.reset": "--start-from",
    "group.id": "--group-id",
    "transactional.id": "--transactional-id",
    "isolation.level": "--exactly-once",
}


@dataclass(frozen=True)
class Option:
    """One setting: its type, default and help, from which flag and env name derive."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    required: bool = False
    #: Matched against ``choices`` in upper case (``--log-level debug`` works).
    upper: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("bootstrap_servers", str, "127.0.0.1:19092", "Kafka bootstrap servers (host:port,...)."),
    Option("input_topic", str, "inference-records", "Topic the inference records are read from."),
    Option("alert_topic", str, "distillation-alerts", "Topic flagged instances are published to."),
    Option(
        "dead_letter_topic",
        str,
        "distillation-dead-letters",
        "Topic undecodable or invalid records go to, unchanged, with the reason in headers.",
    ),
    Option(
        "drift_topic",
        str,
        "distillation-drift",
        "Topic harmful-drift events are published to (created when --drift-window is on).",
    ),
    Option(
        "group_id",
        str,
        "distillation-monitor",
        "Consumer group; workers sharing it split the partitions.",
    ),
    Option(
        "start_from",
        str,
        "earliest",
        "Where a partition with no committed offset starts (a new --group-id, or offsets "
        "expired): earliest scores every record the topic still holds, so records logged "
        "before the first start are not skipped; latest scores only records produced from "
        "then on. A group that committed resumes where it stopped either way.",
        choices=START_POSITIONS,
    ),
    Option(
        "detector", str, "", "Detector directory (written by fit or demo-detector).", required=True
    ),
    Option("max_batch_size", int, 2048, "A micro-batch closes at this many records...", minimum=1),
    Option(
        "max_batch_bytes",
        int,
        16 * 1024 * 1024,
        "...or once its records hold this many bytes (values, keys and headers; a larger "
        "record is a batch of its own): large records make smaller batches, which bounds "
        "memory...",
        minimum=1,
    ),
    Option(
        "max_batch_wait_ms",
        int,
        100,
        "...or this many milliseconds after its first record, whichever comes first.",
        minimum=0,
    ),
    Option(
        "decode_processes",
        int,
        2,
        "Decode records in this many child processes, batches taking turns "
        "(0: on the intake thread, which consumes the next batches while one is scored). Decoding is Python work: in their own interpreters the "
        "children run beside scoring instead of taking turns on the GIL, and with two, one "
        "decodes while the other hands its batch back.",
        minimum=0,
    ),
    Option(
        "tf_threads",
        int,
        0,
        "TensorFlow threads per op, intra- and inter-op. 0 = every CPU the worker may use "
        "(its affinity, capped by its container's CPU limit). On 2 cores with fit's default "
        "detector, 2 threads scored the digits backlog 12% faster than 1 (a CNN: the same); "
        "1 leaves a core to decoding and Kafka, which may suit a much lighter detector.",
        minimum=0,
    ),
    Option(
        "transaction_ms",
        int,
        100,
        "Exactly-once: while more batches are already waiting, they join the "
        "open transaction for up to this many milliseconds (fewer, larger transactions; with "
        "nothing waiting it commits at once; 0 = one transaction per batch).",
        minimum=0,
    ),
    Option(
        "metrics_host",
        str,
        "127.0.0.1",
        "Address for /metrics, /healthz and /readyz (0.0.0.0 inside containers).",
    ),
    Option(
        "metrics_port",
        int,
        9108,
        "Port for /metrics, /healthz and /readyz; one per worker on a host (0 = any free port).",
        minimum=0,
    ),
    Option(
        "record_format",
        str,
        "json",
        "How records are encoded: json ({id, instance, output?}), v2 (Open Inference Protocol), "
        "v1 ({instances}), seldon ({data: {ndarray}}), v2-protobuf (Open Inference Protocol "
        "ModelInferRequest, as Seldon Core v2 writes it) or auto (sniff each message).",
        choices=RECORD_FORMATS,
    ),
    Option(
        "use_record_output",
        bool,
        False,
        "Trust the classifier output logged in the record instead of re-running the classifier "
        "(records without one are scored with the classifier).",
    ),
    Option(
        "exactly_once",
        bool,
        False,
        "Consume-score-produce in Kafka transactions: read_committed subscribers see each alert once.",
    ),
    Option(
        "transactional_id",
        str,
        "",
        "Stable transactional id of this worker instance in exactly-once mode "
        "(default: GROUP_ID-HOSTNAME; give each replica its own).",
    ),
    Option(
        "rate_window",
        int,
        1000,
        "Number of recent records behind the adversarial-rate gauge.",
        minimum=1,
    ),
    Option(
        "score_buckets",
        str,
        "",
        "Comma-separated score histogram bucket bounds (default: log-spaced around the threshold).",
    ),
    Option(
        "max_label_values",
        int,
        50,
        "Cap on distinct model_name/model_version/namespace label values (the rest become 'other').",
        minimum=1,
    ),
    Option(
        "drift_window",
        int,
        0,
        "Records per harmful-drift KS test against the detector's reference scores (0 = off).",
        minimum=0,
    ),
    Option(
        "drift_p_value",
        float,
        0.01,
        "Drift is reported when the KS test's p-value falls below this.",
        minimum=0.0,
    ),
    Option(
        "max_context_bytes",
        int,
        2048,
        "Cap on the record's context fields copied into an alert (JSON bytes).",
        minimum=0,
    ),
    Option(
        "max_message_bytes",
        int,
        1_048_576,
        "Records larger than this (value and headers) are dead-lettered without being parsed.",
        minimum=1,
    ),
    Option(
        "max_rows_per_message",
        int,
        1024,
        "Messages holding more rows (v1 instances, v2 or Seldon tensors) are dead-lettered "
        "as too_many_rows: each flagged row is an alert, so one message cannot make more.",
        minimum=1,
    ),
    Option(
        "shutdown_timeout_s",
        float,
        10.0,
        "On SIGTERM/SIGINT: the bound for flushing and committing before the worker exits.",
        minimum=0.0,
    ),
    Option(
        "summary_interval_s",
        float,
        30.0,
        "Seconds between one-line progress summaries in the log (0 = none).",
        minimum=0.0,
    ),
    Option(
        "stats_interval_ms",
        int,
        5000,
        "librdkafka statistics interval feeding the lag metrics (0 = off).",
        minimum=0,
    ),
    Option(
        "reload_on_change",
        bool,
        False,
        "Also reload the detector when its manifest changes on disk (SIGHUP always reloads).",
    ),
    Option(
        "log_level",
        str,
        "INFO",
        "Least severe log lines shown: DEBUG, INFO, WARNING or ERROR (any case).",
        choices=LOG_LEVELS,
        upper=True,
    ),
    Option(
        "log_format",
        str,
        "text",
        "Log lines as text, or json: one object per line with the fields of each event "
        "(topic, partition, offsets, counts, durations).",
        choices=LOG_FORMATS,
    ),
)

OPTION_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker needs, validated; built by ``load_config``."""

    bootstrap_servers: str = "127.0.0.1:19092"
    input_topic: str = "inference-records"
    alert_topic: str = "distillation-alerts"
    dead_letter_topic: str = "distillation-dead-letters"
    drift_topic: str = "distillation-drift"
    group_id: str = "distillation-monitor"
    start_from: str = "earliest"
    detector: str = ""
    max_batch_size: int = 2048
    max_batch_bytes: int = 16 * 1024 * 1024
    max_batch_wait_ms: int = 100
    decode_processes: int = 2
    tf_threads: int = 0
    transaction_ms: int = 100
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    record_format: str = "json"
    use_record_output: bool = False
    exactly_once: bool = False
    transactional_id: str = ""
    rate_window: int = 1000
    score_buckets: str = ""
    max_label_values: int = 50
    drift_window: int = 0
    drift_p_value: float = 0.01
    max_context_bytes: int = 2048
    max_message_bytes: int = 1_048_576
    max_rows_per_message: int = 1024
    shutdown_timeout_s: float = 10.0
    summary_interval_s: float = 30.0
    stats_interval_ms: int = 5000
    reload_on_change: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    kafka: Mapping[str, str] = field(default_factory=dict)

    # -- derived values ----------------------------------------------------------------
    @property
    def output_topics(self) -> list[str]:
        """The topics the worker writes; the drift topic only while drift is tested."""
        topics = [self.alert_topic, self.dead_letter_topic]
        if self.drift_window > 0 and self.drift_topic not in topics:
            topics.append(self.drift_topic)
        return topics

    @property
    def effective_transactional_id(self) -> str:
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}"

    @property
    def score_bucket_bounds(self) -> list[float] | None:
        if not self.score_buckets:
            return None
        return [float(b) for b in self.score_buckets.split(",") if b.strip()]

    # -- librdkafka dictionaries -------------------------------------------------------
    def _common_kafka(self, client: Client) -> dict[str, Any]:
        """Bootstrap servers, the user's settings that apply to ``client``, and the logger
        librdkafka's lines go to."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": logging.getLogger(f"monitor.kafka.{client}"),
        }
        conf.update(for_client(client, self.kafka))
        return conf

    def consumer_conf(self) -> dict[str, Any]:
        """At-least-once consumer: offsets are stored and committed by the worker only."""
        conf = {
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.start_from,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.queue.backoff.ms": 10,
            # 32 MB of prefetched records: over a second of traffic at the worker's pace
            # for small records, and no more than a few batches of big ones (images).
            "queued.max.messages.kbytes": 32768,
            "statistics.interval.ms": self.stats_interval_ms,
        }
        conf.update(self._common_kafka("consumer"))
        return conf

    def producer_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "statistics.interval.ms": 0,
        }
        if self.exactly_once:
            conf["transactional.id"] = self.effective_transactional_id
        conf.update(self._common_kafka("producer"))
        return conf

    def admin_conf(self) -> dict[str, Any]:
        return self._common_kafka("admin")

    def reader_conf(self) -> dict[str, Any]:
        """A reader of the output topics (``distillation-monitor alerts``): read-committed,
        assigned its partitions rather than joining a group, committing nothing, so it
        never disturbs the workers or another reader."""
        conf: dict[str, Any] = {
            "group.id": f"{self.group_id}-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
        conf.update(self._common_kafka("consumer"))
        return conf

    def redacted(self) -> dict[str, Any]:
        """The configuration as it may be logged: secrets replaced by ``***``."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in self.kafka.items()}
        return out


def is_secret(key: str) -> bool:
    """Whether a librdkafka key (or its ``DMON_KAFKA_*`` name) holds a secret.

    A rule by kind of key rather than a list of words: under ``SECRET_PREFIXES`` only
    known public keys and file locations are shown; elsewhere ``SECRET_MARKERS`` decide.
    """
    low = key.lower()
    if low.startswith(KAFKA_ENV_PREFIX.lower()):
        low = low[len(KAFKA_ENV_PREFIX) :].replace("_", ".")
    if low.startswith(SECRET_PREFIXES):
        return low not in PUBLIC_KEYS and not low.endswith(".location")
    return any(marker in low for marker in SECRET_MARKERS)


# -- building ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """Add one flag per option (``only``: these options). Defaults are None so that unset
    flags don't shadow env/TOML."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML file with any of these options (dashed or underscored keys) and a [kafka] table. "
        "Env: DMON_CONFIG.",
    )
    for opt in OPTIONS if only is None else [OPTION_BY_NAME[name] for name in only]:
        default_text = "" if opt.default in ("", None) else f" Default: {opt.default}."
        # argparse %-formats help text (for %(default)s): a literal % must be doubled.
        text = f"{opt.help}{default_text} Env: {opt.env}.".replace("%", "%%")
        if opt.kind is bool:
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=text,
            )
        else:
            parser.add_argument(
                opt.flag,
                dest=opt.name,
                # --log-level is also accepted before the command: left unset here, a
                # missing one does not hide that value
                default=argparse.SUPPRESS if opt.name == "log_level" else None,
                metavar=opt.name.split("_")[-1].upper(),
                choices=opt.choices,
                type=str.upper if opt.upper else str,
                help=text,
            )
    parser.add_argument(
        "--kafka-option",
        dest="kafka_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Any librdkafka setting, repeatable (e.g. security.protocol=SASL_SSL). "
        "Env: DMON_KAFKA_<KEY> with dots as underscores (DMON_KAFKA_SASL_PASSWORD).",
    )


def _upper(opt: Option, raw: Any) -> Any:
    """``raw`` in upper case for options matched that way (``Option.upper``)."""
    return raw.upper() if opt.upper and isinstance(raw, str) else raw


def _coerce(opt: Option, raw: Any, source: str) -> Any:
    where = f"{opt.name} (from {source})"
    raw = _upper(opt, raw)
    try:
        if opt.kind is bool:
            if isinstance(raw, bool):
                value: Any = raw
            elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).strip().lower() in ("0", "false", "no", "off", ""):
                value = False
            else:
                raise ValueError(f"expected true or false, got {raw!r}")
        elif opt.kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(f"expected a whole number, got {raw!r}")
            value = int(raw)
        elif opt.kind is float:
            if isinstance(raw, bool):
                raise ValueError(f"expected a number, got {raw!r}")
            value = float(raw)
        elif opt.name == "score_buckets" and isinstance(raw, list):
            value = ",".join(str(float(b)) for b in raw)
        else:
            if not isinstance(raw, str | int | float):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            value = str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where}: {exc}") from None
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"invalid {where}: {value!r} is not one of {', '.join(opt.choices)}")
    if opt.minimum is not None and value < opt.minimum:
        raise ConfigError(f"invalid {where}: {value} is below the minimum {opt.minimum:g}")
    return value


def _read_toml(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    kafka_table = data.pop("kafka", {})
    if not isinstance(kafka_table, dict):
        raise ConfigError(f"config file {path}: [kafka] must be a table of librdkafka settings")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in OPTION_BY_NAME:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        values[name] = value
    return values, _flatten_kafka(kafka_table)


def _flatten_kafka(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``[kafka]`` entries as librdkafka keys; unquoted dotted keys are nested tables in TOML."""
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_kafka(value, name + "."))
        else:
            out[name] = _kafka_value(value)
    return out


def _kafka_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_kafka_pairs(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --kafka-option {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _kafka_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(KAFKA_ENV_PREFIX)
    }


def load_config(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    need_detector: bool = True,
) -> WorkerConfig:
    """Merge flags > environment > TOML > defaults into a validated ``WorkerConfig``.

    ``need_detector=False`` is for commands that only talk to Kafka (``topics``): they
    read the same file and variables as the worker, detector or not."""
    env = os.environ if environ is None else environ
    cli = vars(args) if args is not None else {}
    config_path = cli.get("config") or env.get(ENV_PREFIX + "CONFIG")
    toml_values, kafka = _read_toml(config_path) if config_path else ({}, {})
    kafka.update(_kafka_from_env(env))
    kafka.update(_parse_kafka_pairs(cli.get("kafka_option") or []))

    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if cli.get(opt.name) is not None:
            values[opt.name] = _coerce(opt, cli[opt.name], "command line")
        elif opt.env in env:
            values[opt.name] = _coerce(opt, env[opt.env], f"environment {opt.env}")
        elif opt.name in toml_values:
            values[opt.name] = _coerce(opt, toml_values[opt.name], f"config file {config_path}")
        else:
            values[opt.name] = opt.default

    reserved = sorted(RESERVED_KAFKA_KEYS.intersection(kafka))
    if reserved:
        named = ", ".join(RESERVED_INSTEAD[k] for k in reserved if k in RESERVED_INSTEAD)
        instead = named or "the worker's own options"
        raise ConfigError(
            f"librdkafka setting(s) {', '.join(reserved)} are managed by the worker; "
            f"use {instead} instead"
        )
    config = WorkerConfig(kafka=dict(kafka), **values)
    validate(config, need_detector=need_detector)
    return config


def validate(config: WorkerConfig, *, need_detector: bool = True) -> None:
    """Checks that span several options, or need the file system; all before Kafka."""
    for opt in OPTIONS:
        if opt.required and need_detector and not getattr(config, opt.name):
            raise ConfigError(
                f"{opt.flag} is required (or {opt.env}, or {opt.name} in the config file)"
            )
    if not config.bootstrap_servers.strip():
        raise ConfigError("--bootstrap-servers must not be empty")
    topics = {
        "input": config.input_topic,
        "alert": config.alert_topic,
        "dead-letter": config.dead_letter_topic,
        "drift": config.drift_topic,
    }
    for role, topic in topics.items():
        if not topic.strip():
            raise ConfigError(f"the {role} topic must not be empty")
    if config.input_topic in (config.alert_topic, config.dead_letter_topic, config.drift_topic):
        raise ConfigError(
            f"the input topic {config.input_topic!r} must differ from the alert, dead-letter and drift topics"
        )
    if need_detector:
        _check_detector_dir(config.detector)
    try:
        bounds = config.score_bucket_bounds
    except ValueError:
        raise ConfigError(
            f"invalid --score-buckets {config.score_buckets!r}: numbers expected"
        ) from None
    if bounds is not None and (
        not bounds or sorted(bounds) != bounds or len(set(bounds)) != len(bounds)
    ):
        raise ConfigError("--score-buckets must be strictly increasing numbers")
    if not 0.0 < config.drift_p_value < 1.0:
        raise ConfigError("--drift-p-value must be between 0 and 1")


def _check_detector_dir(path: str) -> None:
    detector = Path(path)
    if not detector.is_dir():
        raise ConfigError(f"detector directory {path} does not exist")
    if not (detector / "manifest.json").is_file():
        raise ConfigError(f"{path} has no manifest.json: not a detector directory")


def early_log_level(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The log level every command starts with: the flag, else ``DMON_LOG_LEVEL``, else
    INFO (``run`` and the commands with ``--config`` then apply the file's too)."""
    opt = OPTION_BY_NAME["log_level"]
    env = os.environ if environ is None else environ
    if cli_value is not None:
        return str(_coerce(opt, cli_value, "command line"))
    if opt.env in env:
        return str(_coerce(opt, env[opt.env], f"environment {opt.env}"))
    return str(opt.default)


def with_overrides(config: WorkerConfig, **changes: Any) -> WorkerConfig:
    """A copy with some fields changed (tests and the demo use it)."""
    return replace(config, **changes)


def reference_markdown() -> str:
    """The README's configuration table, generated from ``OPTIONS``."""
    lines = [
        "| flag | environment | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for opt in OPTIONS:
        default = "" if opt.default in ("", None) else f"`{opt.default}`"
        if opt.required:
            default = "required"
        help_text = opt.help.replace("|", "\\|")
        lines.append(f"| `{opt.flag}` | `{opt.env}` | {default} | {help_text} |")
    lines.append(
        "| `--kafka-option KEY=VALUE` | `DMON_KAFKA_<KEY>` | | any librdkafka setting; repeatable |"
    )
    lines.append(
        "| `--config FILE` | `DMON_CONFIG` | | TOML file with the options above and a `[kafka]` table |"
    )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m monitor.config  -> the README's reference table
    print(reference_markdown())
