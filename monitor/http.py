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
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from monitor.errors import MetricsServerError

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9108

Check = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scrape must not keep the process alive at exit


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds would flood stderr; log at debug instead."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _always_live() -> tuple[bool, str]:
    return True, "ok"


class HealthServer:
    """Serves the registry and the health checks from a background thread.

    ``ready`` (and the optional ``live``) return ``(ok, reason)``; a check that raises
    counts as failing, with the exception as the reason. ``/healthz`` answers 200 "ok"
    while ``live`` says so (by default: as long as this server runs).
    """

    def __init__(
        self,
        registry: Collector,
        host: str,
        port: int,
        ready: Check,
        *,
        live: Check | None = None,
    ) -> None:
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
            server = make_server(
                self.host, self.port, self._app, server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
                " (is another worker using this port? give each worker its own --metrics-port,"
                " or 0 for a free one)"
            ) from exc
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
