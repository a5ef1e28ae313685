"""Record decoding in a child process, so it runs on another core beside scoring.

Decoding is Python work (about 3.6 µs a record) and so is what the worker's thread does
around TensorFlow (alerts, metrics, commits): on one interpreter they take turns on the
GIL, however many cores there are. A child process has its own interpreter. The
intake thread sends it each batch's values and headers and waits, which releases the
GIL for the worker's thread, and gets back the ``DecodedBatch``.

The socket pair carries pickles (``multiprocessing.connection.Connection``), but only between this process
and the child it started: records' bytes travel as ``bytes`` values inside them and are
never unpickled as objects, so a hostile record cannot reach the unpickler.

Nothing is lost if the child fails: the batch's messages never leave this process. A
child that died, broke the pipe or took longer than ``timeout_s`` is killed, the batch is
decoded in this process instead, and a new child is started for the next one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, cast

from monitor.stream.headers import Headers
from monitor.stream.records import DecodedBatch, InputSpec, MessageLike, RecordDecoder, RecordFormat

log = logging.getLogger(__name__)

#: Longest a batch may take in the child before it counts as hung.
DECODE_TIMEOUT_S = 30.0
#: Wait between restarts of a child that keeps failing (decoding goes on in-process).
RESTART_BACKOFF_S = 5.0

#: The only environment variables the child inherits. It parses bytes and needs no
#: credentials, so Kafka settings (``DMON_KAFKA_*``, which hold SASL and SSL secrets) and
#: anything else the worker was given stay in the worker. Kept: what starts the
#: interpreter and finds its packages (``PATH``, ``HOME`` for the user site-packages,
#: ``LD_LIBRARY_PATH`` for a shared libpython, the interpreter's own settings such as
#: ``PYTHONHASHSEED``), locale and time zone, the temporary directory, and the thread
#: counts of numpy's BLAS, which the child imports. ``PYTHONPATH`` is set by the parent.
CHILD_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LD_LIBRARY_PATH",
        "TMPDIR",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONHOME",
        "PYTHONPLATLIBDIR",
        "PYTHONUSERBASE",
        "PYTHONNOUSERSITE",
        "PYTHONSAFEPATH",
        "PYTHONHASHSEED",
        "PYTHONUTF8",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
        "PYTHONWARNINGS",
        "PYTHONFAULTHANDLER",
        "PYTHONDEVMODE",
        "PYTHONMALLOC",
        "VECLIB_MAXIMUM_THREADS",
    }
)
CHILD_ENV_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "BLIS_")


#: A batch on its way to the child: every value joined into one ``bytes`` (one copy,
#: where pickling 512 small ``bytes`` objects cost three times as much), their lengths
#: (-1 for no value), and the headers, or None when no message has any.
_Payload = tuple[bytes, list[int], list[Headers | None] | None]


def _pack(messages: Sequence[MessageLike]) -> _Payload:
    """The payload of a batch. Consumed messages always have a value: their lengths and
    join are then C-level maps (0.09 us a message in all, against 0.12 with a Python
    loop over the values)."""
    values = [m.value() for m in messages]
    headers = [m.headers() for m in messages]
    if None in values:
        lengths = [-1 if v is None else len(v) for v in values]
        blob = b"".join(v for v in values if v is not None)
    else:
        lengths = list(map(len, cast(list[bytes], values)))
        blob = b"".join(cast(list[bytes], values))
    return blob, lengths, None if headers.count(None) == len(headers) else headers


def _unpack(payload: _Payload) -> tuple[list[bytes | None], list[Headers | None] | None]:
    """The values (slices of the joined ``bytes``) and headers ``_pack`` sent."""
    blob, lengths, headers = payload
    values: list[bytes | None] = []
    start = 0
    for n in lengths:
        if n < 0:
            values.append(None)
        else:
            values.append(blob[start : start + n])
            start += n
    return values, headers


def child_environment(environ: Mapping[str, str], python_path: str) -> dict[str, str]:
    """The allowed part of ``environ``, with ``PYTHONPATH`` set to ``python_path``."""
    env = {
        name: value
        for name, value in environ.items()
        if name in CHILD_ENV_NAMES or name.startswith(CHILD_ENV_PREFIXES)
    }
    env["PYTHONPATH"] = python_path
    return env


def _serve(conn: Connection, spec: InputSpec, fmt: RecordFormat) -> None:
    """The child: decode batches until the parent closes its end of the pipe."""
    decoder = RecordDecoder(spec, fmt)
    while True:
        try:
            payload: _Payload = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(decoder.decode_values(*_unpack(payload)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monitor.stream.decode_process FD SPEC_JSON``: the child's entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    fd, settings = int(args[0]), json.loads(args[1])
    spec = InputSpec(
        shape=tuple(settings["shape"]),
        n_classes=settings["n_classes"],
        max_message_bytes=settings["max_message_bytes"],
        max_rows=settings["max_rows"],
        max_context_bytes=settings["max_context_bytes"],
    )
    _serve(Connection(fd), spec, RecordFormat(settings["format"]))
    return 0


class PendingDecode(Protocol):
    """A batch being decoded: ``result()`` waits for it (``ready()`` says it won't)."""

    def ready(self) -> bool: ...
    def result(self) -> DecodedBatch: ...


class Ready:
    """A batch already decoded (in this process)."""

    def __init__(self, decoded: DecodedBatch) -> None:
        self.decoded = decoded

    def ready(self) -> bool:
        return True

    def result(self) -> DecodedBatch:
        return self.decoded


class _InChild:
    """A batch the child is decoding."""

    def __init__(
        self, owner: DecodeProcess, conn: Connection, messages: Sequence[MessageLike]
    ) -> None:
        self._owner = owner
        self._conn = conn
        self._messages = messages

    def ready(self) -> bool:
        try:
            return self._conn.poll(0)
        except Exception:  # broken: result() says how, and decodes here
            return True

    def result(self) -> DecodedBatch:
        return self._owner._receive(self._conn, self._messages)


class DecodeProcess:
    """``RecordDecoder.decode`` done by a child process; one caller thread at a time."""

    def __init__(
        self,
        spec: InputSpec,
        fmt: RecordFormat = RecordFormat.JSON,
        *,
        timeout_s: float = DECODE_TIMEOUT_S,
        restart_backoff_s: float = RESTART_BACKOFF_S,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.spec = spec
        self.fmt = RecordFormat(fmt)
        self.timeout_s = timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.fallbacks = 0  # batches decoded in this process because the child failed
        self.on_failure = on_failure
        self._local = RecordDecoder(spec, self.fmt)
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0

    def start(self) -> None:
        """Start the child (``decode`` starts one itself when there is none).

        A plain interpreter running this module, not ``multiprocessing``'s spawn: that
        re-imports the parent's main script in the child, which breaks embedding the
        worker in a script without a ``__main__`` guard.
        """
        ours, theirs = socket.socketpair()
        settings = {
            "shape": list(self.spec.shape),
            "n_classes": self.spec.n_classes,
            "max_message_bytes": self.spec.max_message_bytes,
            "max_rows": self.spec.max_rows,
            "max_context_bytes": self.spec.max_context_bytes,
            "format": self.fmt.value,
        }
        # The child imports this very package, wherever it came from (a checkout, a
        # worktree, site-packages), not whichever ``monitor`` its path would find first.
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), json.dumps(settings)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=child_environment(os.environ, python_path),
            )
        self._conn, self._process = Connection(ours.detach()), process
        log.info("decoding in a child process (pid %d)", process.pid)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def submit(self, messages: Sequence[MessageLike]) -> PendingDecode:
        """Send a batch to the child and return at once; ``result()`` collects it.

        One batch at a time: collect it before submitting the next.
        """
        try:
            payload = _pack(messages)
        except Exception:  # the in-process decoder dead-letters each failing message
            return Ready(self._local.decode(messages))
        conn = self._connection()
        if conn is None:
            return Ready(self._local.decode(messages))
        try:
            conn.send(payload)
        except Exception as exc:  # died, or the pipe broke
            self._failed(exc)
            return Ready(self._local.decode(messages))
        return _InChild(self, conn, messages)

    def decode(self, messages: Sequence[MessageLike]) -> DecodedBatch:
        """Rows, dead letters and ignores of ``messages``, as ``RecordDecoder.decode``."""
        return self.submit(messages).result()

    def _receive(self, conn: Connection, messages: Sequence[MessageLike]) -> DecodedBatch:
        try:
            if not conn.poll(self.timeout_s):
                raise TimeoutError(f"no answer within {self.timeout_s:g}s")
            decoded: Any = conn.recv()
            if not isinstance(decoded, DecodedBatch):
                raise TypeError(f"the child answered {type(decoded).__name__}")
        except Exception as exc:  # died, pipe broken, hung, or an unpicklable reply
            if conn is self._conn:
                self._failed(exc)
            return self._local.decode(messages)
        return decoded

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: closing the pipe ends its loop."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def _connection(self) -> Connection | None:
        if self._conn is None and time.monotonic() >= self._next_start:
            try:
                self.start()
            except Exception as exc:
                log.warning("could not start the decoding process (%s); decoding here", exc)
                self._next_start = time.monotonic() + self.restart_backoff_s
        return self._conn

    def _failed(self, exc: BaseException) -> None:
        self.fallbacks += 1
        self.on_failure()
        exitcode = self._process.poll() if self._process is not None else None
        log.warning(
            "decoding process failed (%s%s); this batch is decoded here and a new process "
            "starts in %gs",
            exc or type(exc).__name__,
            f", exit code {exitcode}" if exitcode is not None else "",
            self.restart_backoff_s,
        )
        if self._process is not None:
            self._process.kill()
        self.close()
        self._next_start = time.monotonic() + self.restart_backoff_s


if __name__ == "__main__":
    raise SystemExit(main())


def decoding(
    spec: InputSpec,
    fmt: RecordFormat,
    children: int,
    stack: ExitStack,
    on_failure: Callable[[], None],
) -> Callable[[Sequence[MessageLike]], PendingDecode]:
    """How the intake decodes a batch: in ``children`` child processes taking turns
    (each closed by ``stack``), or, with none, on the calling thread.

    With the intake's ``in_flight`` equal to ``children`` and answers taken oldest
    first, each child has at most one batch at a time.
    """
    if not children:
        decoder = RecordDecoder(spec, fmt)  # the intake thread's own

        def here(messages: Sequence[MessageLike]) -> PendingDecode:
            return Ready(decoder.decode(messages))

        return here
    processes = []
    for _ in range(children):
        process = DecodeProcess(spec, fmt, on_failure=on_failure)
        process.start()
        stack.callback(process.close)  # after the intake thread stopped
        processes.append(process)
    turns = itertools.cycle(processes)

    def in_turn(messages: Sequence[MessageLike]) -> PendingDecode:
        return next(turns).submit(messages)

    return in_turn
