"""Configuration precedence, validation and secret redaction."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from monitor.config import (
    OPTIONS,
    WorkerConfig,
    add_arguments,
    is_secret,
    load_config,
    reference_markdown,
)
from monitor.errors import ConfigError


@pytest.fixture
def detector_dir(tmp_path: Path) -> Path:
    d = tmp_path / "det"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format_version": 1}))
    return d


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_the_documented_ones(detector_dir: Path) -> None:
    cfg = load_config(parse("--detector", str(detector_dir)), environ={})
    assert cfg.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.max_batch_size == 2048
    assert cfg.max_batch_bytes == 16 * 1024 * 1024
    assert cfg.max_batch_wait_ms == 100
    assert cfg.record_format == "json"
    assert cfg.exactly_once is False


def test_flags_beat_environment_which_beats_the_file(detector_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'detector = "{detector_dir}"\nmax-batch-size = 7\ninput_topic = "from-file"\n'
        'group_id = "file-group"\n[kafka]\n"socket.timeout.ms" = 1234\n'
    )
    env = {"DMON_MAX_BATCH_SIZE": "9", "DMON_INPUT_TOPIC": "from-env"}
    cfg = load_config(parse("--config", str(toml), "--input-topic", "from-cli"), environ=env)
    assert cfg.input_topic == "from-cli"
    assert cfg.max_batch_size == 9
    assert cfg.group_id == "file-group"
    assert cfg.kafka == {"socket.timeout.ms": "1234"}


def test_kafka_options_pass_through_from_env_and_flags(detector_dir: Path) -> None:
    env = {"DMON_KAFKA_SASL_PASSWORD": "hunter2", "DMON_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    cfg = load_config(
        parse("--detector", str(detector_dir), "--kafka-option", "sasl.mechanism=PLAIN"),
        environ=env,
    )
    conf = cfg.consumer_conf()
    assert conf["sasl.password"] == "hunter2"
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["sasl.mechanism"] == "PLAIN"
    assert "hunter2" not in repr(cfg.redacted())


SECRET_SETTINGS = {
    "sasl.password": "pw-1",
    "sasl.jaas.config": "jaas-2",
    "sasl.oauthbearer.config": "principal=svc scope=x",
    "sasl.oauthbearer.extensions": "logicalCluster=lkc-3,identityPoolId=pool-4",
    "sasl.oauthbearer.client.secret": "client-secret-5",
    "sasl.oauthbearer.assertion.private.key.passphrase": "passphrase-6",
    "sasl.kerberos.keytab": "/etc/keytab-7",
    "sasl.kerberos.kinit.cmd": "kinit -t /etc/keytab-8",
    "sasl.some.future.setting": "future-9",
    "ssl.key.password": "key-pw-10",
    "ssl.key.pem": "-----BEGIN PRIVATE KEY----- 11",
    "ssl.keystore.password": "keystore-pw-12",
    "ssl.certificate.pem": "-----BEGIN CERTIFICATE----- 13",
    "ssl.ca.pem": "-----BEGIN CERTIFICATE----- 14",
    "ssl.some.future.setting": "future-15",
    "basic.auth.user.info": "user:password-16",
}
PUBLIC_SETTINGS = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.username": "svc-monitor",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.client.id": "monitor-client",
    "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
    "ssl.ca.location": "/etc/ca.pem",
    "ssl.key.location": "/etc/client.key",
    "ssl.endpoint.identification.algorithm": "https",
}


def test_every_credential_kind_of_kafka_setting_is_redacted_and_the_rest_shown() -> None:
    config = WorkerConfig(kafka={**SECRET_SETTINGS, **PUBLIC_SETTINGS})
    logged = config.redacted()["kafka"]
    assert {k: v for k, v in logged.items() if v != "***"} == PUBLIC_SETTINGS
    assert all(value not in repr(config.redacted()) for value in SECRET_SETTINGS.values())


def test_kafka_environment_names_are_judged_like_their_librdkafka_keys() -> None:
    assert is_secret("DMON_KAFKA_SASL_OAUTHBEARER_CONFIG")
    assert is_secret("DMON_KAFKA_SSL_KEYSTORE_PASSWORD")
    assert not is_secret("DMON_KAFKA_SASL_USERNAME")
    assert not is_secret("DMON_KAFKA_SECURITY_PROTOCOL")


def test_consumer_never_auto_commits(detector_dir: Path) -> None:
    conf = load_config(parse("--detector", str(detector_dir)), environ={}).consumer_conf()
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {}, "--detector is required"),
        (("--detector", "/nonexistent/x"), {}, "does not exist"),
        (("--max-batch-size", "0"), {}, "below the minimum"),
        (("--max-batch-size", "lots"), {}, "max_batch_size"),
        ((), {"DMON_EXACTLY_ONCE": "maybe"}, "expected true or false"),
        (("--kafka-option", "enable.auto.commit=true"), {}, "managed by the worker"),
        (("--kafka-option", "novalue"), {}, "KEY=VALUE"),
        (("--alert-topic", "inference-records"), {}, "must differ"),
        (("--score-buckets", "3,2,1"), {}, "strictly increasing"),
    ],
)
def test_invalid_configuration_is_one_clear_error(
    detector_dir: Path, argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    args = list(argv)
    if "--detector" not in args and message != "--detector is required":
        args += ["--detector", str(detector_dir)]
    with pytest.raises(ConfigError, match=message):
        load_config(parse(*args), environ=env)


def test_unquoted_dotted_kafka_keys_in_the_file_become_librdkafka_keys(
    tmp_path: Path, detector_dir: Path
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[kafka]\nsecurity.protocol = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n')
    cfg = load_config(parse("--config", str(toml), "--detector", str(detector_dir)), environ={})
    assert cfg.kafka == {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}


def test_unknown_key_in_file_is_refused(tmp_path: Path, detector_dir: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('detectr = "x"\n')
    with pytest.raises(ConfigError, match="unknown option 'detectr'"):
        load_config(parse("--config", str(toml), "--detector", str(detector_dir)), environ={})


def test_reference_table_lists_every_option() -> None:
    table = reference_markdown()
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in table and f"`{opt.env}`" in table
