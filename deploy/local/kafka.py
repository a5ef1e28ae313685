#!/usr/bin/env python3
"""The project's own local Apache Kafka broker: fetched from Maven Central, run in KRaft mode.

No Docker here, so the broker is the pinned ``kafka_2.13`` jars (see ``pom.xml``) run by the
machine's Java as one combined broker+controller on loopback. Usable as a script::

    python deploy/local/kafka.py up [--timeout S] | down [--wipe] | status | logs [-n N] | restart

and as a module (the test fixtures import it): ``ensure_up()``, ``stop()``, ``restart()``,
``is_running()`` and the constants below. Everything it writes lives under
``<repo>/.local/kafka`` (or ``$DMON_LOCAL_DIR/kafka``): ``libs/`` (jars), ``data/``, ``logs/``.
Every public operation holds a file lock, so parallel callers never start two brokers.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from monitor.errors import LocalKafkaError

HOST = "127.0.0.1"
# DMON_LOCAL_KAFKA_PORT moves all three ports (client, client+1 SASL, client+2
# controller), e.g. to run a second checkout's broker beside this one.
PORT = int(os.environ.get("DMON_LOCAL_KAFKA_PORT", "19092"))
SASL_PORT = PORT + 1
CONTROLLER_PORT = PORT + 2
BOOTSTRAP = f"{HOST}:{PORT}"
SASL_BOOTSTRAP = f"{HOST}:{SASL_PORT}"
SASL_MECHANISM = "PLAIN"
SASL_USER = "monitor"
SASL_PASSWORD = "monitor-secret"
KAFKA_VERSION = "4.1.2"  # keep equal to <kafka.version> in pom.xml (a test checks)

DEFAULT_TIMEOUT = float(os.environ.get("DMON_LOCAL_KAFKA_TIMEOUT", "90"))
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL; a clean shutdown takes a few
HEAP = os.environ.get("DMON_LOCAL_KAFKA_HEAP", "512m")

DEPLOY_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_DIR.parent.parent
POM = DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.properties"

LOCAL_DIR = Path(os.environ.get("DMON_LOCAL_DIR") or REPO_ROOT / ".local").resolve()
HOME = LOCAL_DIR / "kafka"
LIBS_DIR = HOME / "libs"
DATA_DIR = HOME / "data"
LOG_DIR = HOME / "logs"
LOG_FILE = LOG_DIR / "server.log"
STDOUT_FILE = LOG_DIR / "kafkaServer.out"
PROPS_FILE = HOME / "server.properties"
PID_FILE = HOME / "kafka.pid"
LOCK_FILE = HOME / ".lock"
_LIBS_STAMP = LIBS_DIR / ".pom-sha256"

_UNREACHABLE_HINTS = (
    "Could not transfer",
    "UnknownHost",
    "Unknown host",
    "Connection refused",
    "Connect timed out",
    "Network is unreachable",
)

_lock_depth = 0


def sasl_config(user: str = SASL_USER, password: str = SASL_PASSWORD) -> dict[str, str]:
    """librdkafka settings for the SASL_PLAINTEXT listener (wrong credentials on purpose too)."""
    return {
        "bootstrap.servers": f"{HOST}:{SASL_PORT}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": SASL_MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
    }


def server_properties() -> str:
    """The broker's configuration: loopback only, single node, transactions usable."""
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{SASL_USER}" password="{SASL_PASSWORD}" user_{SASL_USER}="{SASL_PASSWORD}";'
    )
    lines = [
        "# Written by deploy/local/kafka.py on every start; edit the script, not this file.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={HOST}:{CONTROLLER_PORT}",
        f"listeners=PLAINTEXT://{HOST}:{PORT},SASL_PLAINTEXT://{HOST}:{SASL_PORT},"
        f"CONTROLLER://{HOST}:{CONTROLLER_PORT}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{PORT},SASL_PLAINTEXT://{HOST}:{SASL_PORT}",
        "listener.security.protocol.map="
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"sasl.enabled.mechanisms={SASL_MECHANISM}",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
        f"log.dirs={DATA_DIR}",
        # One node: every internal topic must live with a single replica, or transactions
        # and consumer groups never become available.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "num.partitions=1",
        "group.initial.rebalance.delay.ms=0",
        # Let fault tests use short consumer session timeouts.
        "group.min.session.timeout.ms=1000",
        # Topics are created on purpose (fixtures, demo); a deleted topic stays deleted.
        "auto.create.topics.enable=false",
        "delete.topic.enable=true",
        "num.network.threads=2",
        "num.io.threads=4",
        "num.recovery.threads.per.data.dir=1",
        "",
    ]
    return "\n".join(lines)


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding: the form KRaft expects."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def _say(message: str) -> None:
    print(f"kafka: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the broker's file lock (re-entrant within this process)."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    HOME.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- processes --------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _is_our_broker(pid: int) -> bool:
    """Guards against pid reuse: the process must be kafka.Kafka with our properties file."""
    cmd = _cmdline(pid)
    return _alive(pid) and "kafka.Kafka" in cmd and str(PROPS_FILE) in cmd


def running_pid() -> int | None:
    """Pid of our broker if it runs, from the pid file; None otherwise."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_broker(pid) else None


def is_running() -> bool:
    """Whether our broker process is alive (not whether it answers yet)."""
    return running_pid() is not None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_owner(port: int) -> int | None:
    """Pid listening on ``port`` according to ``ss``, if it can tell."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run(
        [ss, "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


def _check_ports() -> int | None:
    """Fail if someone else holds our ports; return the pid if it is our own unrecorded broker."""
    for port in (PORT, SASL_PORT, CONTROLLER_PORT):
        if _port_free(port):
            continue
        owner = _port_owner(port)
        if owner is not None and _is_our_broker(owner):
            return owner
        who = f"pid {owner}: {' '.join(_cmdline(owner))[:200]}" if owner else "unknown process"
        raise LocalKafkaError(
            f"port {HOST}:{port} is taken by another process ({who}); stop it, "
            "or stop the broker of another checkout with its own `kafka.py down`"
        )
    return None


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


# --- fetching and starting -----------------------------------------------------------------


def _java() -> str:
    """Path of a Java 17+ runtime (Kafka 4 needs 17), or a clear error."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise LocalKafkaError(
            "java not found: Kafka 4 needs Java 17 or newer "
            "(Debian: apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise LocalKafkaError(f"cannot tell the version of {java}: {out.stderr.strip()[:200]}")
    major = int(match.group(2)) if match.group(1) == "1" else int(match.group(1))
    if major < 17:
        raise LocalKafkaError(f"{java} is Java {major}; Kafka 4 needs Java 17 or newer")
    return java


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_present() -> bool:
    """Whether the jars for the current pom.xml are already fetched."""
    try:
        return _LIBS_STAMP.read_text().strip() == _pom_digest()
    except OSError:
        return False


def _mvn_fetch(mvn: str, dest: Path, force_update: bool) -> subprocess.CompletedProcess[str]:
    cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM)]
    if force_update:
        cmd.append("-U")
    cmd += [
        # Full coordinates (version from pom.xml): an unreachable repository then says so,
        # instead of "No plugin found for prefix".
        "org.apache.maven.plugins:maven-dependency-plugin:copy-dependencies",
        f"-DoutputDirectory={dest}",
        "-DincludeScope=runtime",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)


def fetch_jars() -> Path:
    """Copy the pinned broker jars into LIBS_DIR once; later calls reuse them."""
    if jars_present():
        return LIBS_DIR
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "mvn not found: the broker jars come from Maven Central (Debian: apt-get install maven)"
        )
    _say(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central (first use)...")
    tmp = HOME / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    result = _mvn_fetch(mvn, tmp, force_update=False)
    if result.returncode != 0:
        # A failed download leaves *.lastUpdated markers that make Maven refuse to retry.
        _say("Maven failed; retrying with -U")
        shutil.rmtree(tmp, ignore_errors=True)
        result = _mvn_fetch(mvn, tmp, force_update=True)
    if result.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        output = [ln for ln in text.strip().splitlines() if ln.strip() not in ("", "[ERROR]")]
        reachable = not any(hint in text for hint in _UNREACHABLE_HINTS)
        cause = "Maven failed" if reachable else "Maven could not reach Maven Central"
        raise LocalKafkaError(
            f"{cause} fetching org.apache.kafka:kafka_2.13:{KAFKA_VERSION}:\n"
            + "\n".join(output[-15:])
        )
    shutil.rmtree(LIBS_DIR, ignore_errors=True)
    tmp.rename(LIBS_DIR)
    _LIBS_STAMP.write_text(_pom_digest() + "\n")
    return LIBS_DIR


def _jvm_args(java: str) -> list[str]:
    return [
        java,
        f"-Xmx{HEAP}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={LOG_DIR}",
        "-cp",
        str(LIBS_DIR / "*"),
    ]


def _format_storage(java: str) -> None:
    """Give a fresh data directory a new cluster id (KRaft refuses unformatted storage)."""
    if (DATA_DIR / "meta.properties").exists():
        return
    cluster_id = new_cluster_id()
    _say(f"formatting storage in {DATA_DIR} (cluster id {cluster_id})")
    cmd = [
        *_jvm_args(java),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(PROPS_FILE),
        "--standalone",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        raise LocalKafkaError(
            "formatting KRaft storage failed:\n" + (result.stdout + result.stderr).strip()[-2000:]
        )


def _spawn(java: str) -> int:
    """Start the broker detached (its own session, re-parented away from us); return its pid."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [*_jvm_args(java), "kafka.Kafka", str(PROPS_FILE)]
    # The shell backgrounds java and exits at once, so the broker outlives the caller (a
    # pytest session, `make`) and never lingers as our zombie child.
    script = 'exec "$@" </dev/null >"$DMON_LOCAL_KAFKA_OUT" 2>&1 &\necho $!'
    env = {**os.environ, "DMON_LOCAL_KAFKA_OUT": str(STDOUT_FILE)}
    result = subprocess.run(
        ["sh", "-c", script, "sh", *cmd],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        start_new_session=True,
    )
    return int(result.stdout.strip())


def _tail(path: Path, lines: int) -> list[str]:
    """Last ``lines`` lines of a file (the broker log rolls over at 20 MB)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return list(collections.deque(handle, maxlen=lines))
    except OSError:
        return []


def log_tail(lines: int = 40) -> str:
    """Last lines of the broker log, plus the JVM's own output when it has any.

    The first ERROR lines come first: a failed start often ends with a config dump that
    would push the cause (e.g. "Address already in use") out of view.
    """
    tail = _tail(LOG_FILE, max(lines, 400))
    errors = [ln for ln in tail if " ERROR " in ln or " FATAL " in ln][:5]
    parts = [f"--- first errors in {LOG_FILE} ---", *errors] if errors else []
    parts += [f"--- {LOG_FILE} ---", *tail[-lines:]]
    out = _tail(STDOUT_FILE, 15)
    if out:
        parts += [f"--- {STDOUT_FILE} ---", *out]
    return "\n".join(parts)


def _connects(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def answers(config: dict[str, Any], timeout: float = 5.0) -> str | None:
    """Ask the broker for metadata; return None if it answered, else why it did not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**config, "log_level": 0, "socket.connection.setup.timeout.ms": 2000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc.args[0] if exc.args else exc)
    return None


def _wait_ready(pid: int, timeout: float) -> None:
    """Return once both listeners answer a metadata request; raise with the log otherwise."""
    deadline = time.monotonic() + timeout
    why = "the client port never accepted a connection"
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise LocalKafkaError(
                f"the broker (pid {pid}) exited during start-up; last log lines:\n{log_tail()}"
            )
        # The client port opens only once the broker is ready: probe it cheaply first so
        # that librdkafka does not report refused connections while the JVM warms up.
        if _connects(PORT):
            remaining = max(1.0, deadline - time.monotonic())
            plain = answers({"bootstrap.servers": f"{HOST}:{PORT}"}, timeout=min(5.0, remaining))
            sasl = plain or answers(sasl_config(), timeout=min(5.0, remaining))
            if plain is None and sasl is None:
                return
            why = plain or f"SASL listener: {sasl}"
        time.sleep(0.25)
    raise LocalKafkaError(
        f"the broker (pid {pid}) was not ready within {timeout:.0f}s ({why}); "
        f"last log lines:\n{log_tail()}"
    )


def ensure_up(timeout: float = DEFAULT_TIMEOUT) -> str:
    """Start the broker unless it already runs, wait until it answers; return the bootstrap."""
    with _locked():
        pid = running_pid()
        if pid is not None:
            _wait_ready(pid, timeout)
            return BOOTSTRAP
        java = _java()
        fetch_jars()
        adopted = _check_ports()
        if adopted is not None:
            _say(f"found our broker running without a pid file (pid {adopted})")
            PID_FILE.write_text(f"{adopted}\n")
            _wait_ready(adopted, timeout)
            return BOOTSTRAP
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        PROPS_FILE.write_text(server_properties())
        _format_storage(java)
        started = time.monotonic()
        pid = _spawn(java)
        PID_FILE.write_text(f"{pid}\n")
        _say(f"starting broker (pid {pid}, heap {HEAP}), waiting up to {timeout:.0f}s")
        _wait_ready(pid, timeout)
        _say(f"ready in {time.monotonic() - started:.1f}s: {BOOTSTRAP} (SASL {SASL_BOOTSTRAP})")
        return BOOTSTRAP


def stop(wipe: bool = False, grace: float = STOP_GRACE) -> bool:
    """Stop our broker (SIGTERM, SIGKILL after ``grace`` s); True if one was running."""
    with _locked():
        pid = running_pid()
        if pid is not None:
            _say(f"stopping broker (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, grace):
                _say(f"still running after {grace:.0f}s; sending SIGKILL")
                os.kill(pid, signal.SIGKILL)
                if not _wait_gone(pid, 10.0):
                    raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")
        PID_FILE.unlink(missing_ok=True)
        if wipe:
            shutil.rmtree(DATA_DIR, ignore_errors=True)
            _say(f"wiped {DATA_DIR}")
        return pid is not None


def restart(timeout: float = DEFAULT_TIMEOUT) -> str:
    """Stop and start the same broker, keeping its data; return the bootstrap."""
    with _locked():
        stop()
        return ensure_up(timeout)


# --- command line ----------------------------------------------------------------------


def _status() -> int:
    pid = running_pid()
    if pid is None:
        print(f"not running (data in {DATA_DIR})")
        return 3
    why = answers({"bootstrap.servers": BOOTSTRAP}, timeout=3.0)
    state = "answering" if why is None else f"NOT answering ({why})"
    print(
        f"running, pid {pid}, {state}\n"
        f"  bootstrap  {BOOTSTRAP} (PLAINTEXT)\n"
        f"  sasl       {SASL_BOOTSTRAP} (SASL_PLAINTEXT, {SASL_MECHANISM}, user {SASL_USER})\n"
        f"  data       {DATA_DIR}\n"
        f"  log        {LOG_FILE}"
    )
    return 0 if why is None else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka.py", description="The project's local Kafka broker (KRaft, loopback)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="fetch, format and start the broker; print the bootstrap")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="readiness bound (s)")
    down = sub.add_parser("down", help="stop the broker started here")
    down.add_argument("--wipe", action="store_true", help="also delete its data")
    sub.add_parser("status", help="is it running and answering (exit 3 when not running)")
    logs = sub.add_parser("logs", help="print the end of the broker log")
    logs.add_argument("-n", "--lines", type=int, default=100)
    again = sub.add_parser("restart", help="stop and start, keeping the data")
    again.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors are one clear message and exit code 1."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            print(ensure_up(args.timeout))
        elif args.command == "down":
            if not stop(wipe=args.wipe):
                _say("not running")
        elif args.command == "status":
            return _status()
        elif args.command == "logs":
            if not LOG_FILE.exists():
                raise LocalKafkaError(f"no broker log yet at {LOG_FILE}")
            print("".join(_tail(LOG_FILE, args.lines)), end="")
        elif args.command == "restart":
            print(restart(args.timeout))
    except LocalKafkaError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
