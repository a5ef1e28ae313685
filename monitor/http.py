"""HTTP endpoints of a worker: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

One server per worker process. Several workers on one machine each need their own port:
give each a distinct ``--metrics-port`` (e.g. 9108, 9109, ...) or port 0, which lets the
operating system pick a free one; :meth:`HealthServer.start` returns the port actually
bound, for the worker to log. Bind to a private interface (or 127.0.0.1 behind a sidecar)
in production: the endpoints carry no authentication.

``/metrics`` is prometheus_client's own WSGI app, so content negotiation (Prometheus text
or OpenMetrics via the Accept header), gzip and ``?name[]=`` filtering behave exactly as in
the client library. Readiness is a callable so the worker decides what ready means (e.g.
partitions assigned and a detector loaded) and can say why not: ``/readyz`` answers 503
with that reason.

Slow or idle clients cannot exhaust the server: each connection must deliver its request
within ``request_timeout_s`` (one deadline for the whole request, so trickling a byte at a
time does not extend it) and no more than ``max_connections`` are served at once. A
connection over that bound is answered 503 at once and closed, without a thread, so a
scrape that meets a full server is retried while the held slots time out.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from monitor.errors import MetricsServerError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9108
#: Connections served at once: probes and a few scrapers need far fewer.
DEFAULT_MAX_CONNECTIONS = 16
#: Seconds a client has to send its whole request (and for each write of the answer).
DEFAULT_REQUEST_TIMEOUT_S = 5.0

Check = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]


def _busy_response() -> bytes:
    body = b"too many connections, retry shortly\n"
    head = (
        "HTTP/1.0 503 Service Unavailable\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_BUSY = _busy_response()


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, but at most ``max_connections`` of them."""

    daemon_threads = True  # a hung scrape must not keep the process alive at exit
    # A burst of connections waits in the kernel to be served or refused; socketserver's
    # 5 would drop the rest, and their clients would only retry a second later.
    request_queue_size = 128

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[WSGIRequestHandler],
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self.request_timeout_s = request_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(server_address, handler_class)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread while a slot is free; otherwise answer 503 from this thread."""
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: nobody else will free the slot
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 without blocking the accept loop, then close."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.recv(65536)  # unread request bytes would turn the close into a reset
        with contextlib.suppress(OSError):
            request.send(_BUSY)
        self.shutdown_request(request)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _DeadlineReader(io.RawIOBase):
    """The request side of a connection, readable until one deadline.

    A socket timeout alone restarts with every read: a client sending a byte just before
    each timeout would hold its thread for ever.
    """

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete request within {self._timeout_s:g}s")
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._timeout_s)


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds would flood stderr; log at debug instead.

    Timeouts and dropped connections are the client's doing, so they are logged at debug
    too rather than as server errors.
    """

    def setup(self) -> None:
        super().setup()
        if isinstance(self.server, _Server):
            timeout_s = self.server.request_timeout_s
            self.connection.settimeout(timeout_s)  # bounds each write of the answer
            self.rfile.close()  # the buffered socket file it replaces
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, timeout_s))

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("%s dropped: %s", self.address_string(), exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _always_live() -> tuple[bool, str]:
    return True, "ok"


class HealthServer:
    """Serves the registry and the health checks from a background thread.

    ``ready`` (and the optional ``live``) return ``(ok, reason)``; a check that raises
    counts as failing, with the exception as the reason. ``/healthz`` answers 200 "ok"
    while ``live`` says so (by default: as long as this server runs).
    ``max_connections`` and ``request_timeout_s`` bound what slow clients can hold.
    """

    def __init__(
        self,
        registry: Collector,
        host: str,
        port: int,
        ready: Check,
        *,
        live: Check | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if not 0 < request_timeout_s < float("inf"):
            raise ValueError(
                f"request_timeout_s must be a positive number of seconds, got {request_timeout_s}"
            )
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.host = host
        self.port = port
        self._ready = ready
        self._live = live or _always_live
        self._metrics_app = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (useful with port 0)."""
        if self._server is not None:
            return self.bound_port
        server_class: type[_Server] = _IPv6Server if ":" in self.host else _Server
        try:
            server = server_class(
                (self.host, self.port),
                _QuietHandler,
                max_connections=self.max_connections,
                request_timeout_s=self.request_timeout_s,
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
                " (is another worker using this port? give each worker its own --metrics-port,"
                " or 0 for a free one)"
            ) from exc
        server.set_app(self._app)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"metrics-http:{self.bound_port}",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics and health endpoints on http://%s:%d", self.host, self.bound_port)
        return self.bound_port

    @property
    def bound_port(self) -> int:
        if self._server is None:
            raise RuntimeError("HealthServer is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- WSGI ----------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path not in _ROUTES:
            return _text(
                start_response, "404 Not Found", "not found: try /metrics, /healthz, /readyz\n"
            )
        if method not in ("GET", "HEAD"):
            return _text(
                start_response, "405 Method Not Allowed", "use GET\n", [("Allow", "GET, HEAD")]
            )
        if path == "/":
            return _text(
                start_response, "200 OK", "distillation-monitor: /metrics /healthz /readyz\n"
            )
        ok, reason = _run_check(self._live if path == "/healthz" else self._ready)
        status = "200 OK" if ok else "503 Service Unavailable"
        body = reason or ("ok" if ok else "not ready")
        return _text(start_response, status, body + "\n", head=method == "HEAD")


_ROUTES = ("/", "/healthz", "/readyz")


def _run_check(check: Check) -> tuple[bool, str]:
    try:
        ok, reason = check()
    except Exception as exc:  # a broken check must answer 503, not kill the request thread
        log.warning("health check %r failed: %s", check, exc)
        return False, f"check failed: {type(exc).__name__}: {exc}"
    return bool(ok), str(reason)


def _text(
    start_response: StartResponse,
    status: str,
    body: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    head: bool = False,
) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *(headers or []),
        ],
    )
    return [] if head else [data]
