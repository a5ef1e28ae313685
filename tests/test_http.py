"""The worker's HTTP endpoints: /metrics with content negotiation, /healthz, /readyz."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from metrics_samples import populated_metrics, sample_names
from prometheus_client import CollectorRegistry

from monitor.errors import MetricsServerError, MonitorError
from monitor.http import HealthServer

Ready = Callable[[], tuple[bool, str]]


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode()


def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., HealthServer]]:
    started: list[HealthServer] = []

    def start(
        registry: CollectorRegistry | None = None, ready: Ready | None = None, **kw: object
    ) -> HealthServer:
        server = HealthServer(
            registry if registry is not None else populated_metrics().registry,
            "127.0.0.1",
            0,
            ready or (lambda: (True, "ready")),
            **kw,  # type: ignore[arg-type]
        )
        server.start()
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def test_metrics_are_served_in_the_prometheus_text_format(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    r = get(server.bound_port, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "distillation_monitor_records_scored_total" in sample_names(r.text)


def test_openmetrics_is_negotiated_through_the_accept_header(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    r = get(
        server.bound_port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "# TYPE distillation_monitor_detector info" in r.text


def test_metrics_are_gzipped_when_the_scraper_accepts_it(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    r = get(server.bound_port, "/metrics", {"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"
    assert "distillation_monitor_up" in gzip.decompress(r.body).decode()


def test_healthz_answers_ok(serve: Callable[..., HealthServer]) -> None:
    r = get(serve().bound_port, "/healthz")
    assert (r.status, r.text) == (200, "ok\n")


def test_readyz_follows_the_workers_readiness_and_says_why_not(
    serve: Callable[..., HealthServer],
) -> None:
    state = {"ready": False, "reason": "no partitions assigned yet"}
    server = serve(ready=lambda: (state["ready"], state["reason"]))
    r = get(server.bound_port, "/readyz")
    assert (r.status, r.text) == (503, "no partitions assigned yet\n")
    state.update(ready=True, reason="ready: 2 partitions")
    r = get(server.bound_port, "/readyz")
    assert (r.status, r.text) == (200, "ready: 2 partitions\n")


def test_a_readiness_check_that_raises_answers_503_with_the_error(
    serve: Callable[..., HealthServer],
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("detector not loaded")

    r = get(serve(ready=broken).bound_port, "/readyz")
    assert r.status == 503
    assert "RuntimeError: detector not loaded" in r.text


def test_liveness_can_be_delegated_to_the_worker(serve: Callable[..., HealthServer]) -> None:
    server = serve(live=lambda: (False, "main loop stalled for 120 s"))
    r = get(server.bound_port, "/healthz")
    assert (r.status, r.text) == (503, "main loop stalled for 120 s\n")


def test_unknown_paths_are_404_and_writes_are_405(serve: Callable[..., HealthServer]) -> None:
    port = serve().bound_port
    assert get(port, "/nope").status == 404
    r = get(port, "/readyz", method="POST")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD"


def test_head_requests_get_headers_without_a_body(serve: Callable[..., HealthServer]) -> None:
    r = get(serve().bound_port, "/healthz", method="HEAD")
    assert r.status == 200 and r.body == b""


def test_several_workers_on_one_machine_each_get_their_own_port(
    serve: Callable[..., HealthServer],
) -> None:
    a, b = serve(), serve()
    assert a.bound_port != b.bound_port
    assert get(a.bound_port, "/healthz").status == get(b.bound_port, "/healthz").status == 200


def test_a_taken_port_is_a_clear_monitor_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = HealthServer(CollectorRegistry(), "127.0.0.1", port, lambda: (True, ""))
        with pytest.raises(
            MetricsServerError, match=f"127.0.0.1:{port}.*own --metrics-port"
        ) as info:
            server.start()
    assert isinstance(info.value, MonitorError)


def test_stop_releases_the_port_and_is_idempotent() -> None:
    server = HealthServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, ""))
    port = server.start()
    server.stop()
    server.stop()
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz")


def test_context_manager_starts_and_stops() -> None:
    with HealthServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "")) as server:
        port = server.bound_port
        assert get(port, "/healthz").status == 200
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz")


# -- slow and idle clients -------------------------------------------------------------
HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: monitor\r\n"  # no blank line: never complete


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def half_sent(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each sent part of a request and then go quiet."""
    conns = []
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(HALF_SENT)
        conns.append(conn)
    return conns


def closed_by_server(conn: socket.socket) -> bool:
    """Whether the server has answered and closed ``conn`` (without waiting for it)."""
    conn.setblocking(False)
    try:
        while conn.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        conn.setblocking(True)
    return True


def close_all(conns: list[socket.socket]) -> None:
    for conn in conns:
        conn.close()


def test_idle_connections_beyond_the_bound_get_503_and_no_thread(
    serve: Callable[..., HealthServer],
) -> None:
    bound = 3
    port = serve(max_connections=bound, request_timeout_s=60).bound_port
    baseline = threading.active_count()
    conns = half_sent(port, 4 * bound)
    try:
        wait_for(
            lambda: sum(closed_by_server(c) for c in conns) == len(conns) - bound,
            timeout=10,
            what="every connection over the bound is refused",
        )
        assert threading.active_count() - baseline <= bound
    finally:
        close_all(conns)


def test_a_scrape_gets_through_while_idle_connections_hold_every_slot(
    serve: Callable[..., HealthServer],
) -> None:
    timeout = 0.5
    port = serve(max_connections=2, request_timeout_s=timeout).bound_port
    conns = half_sent(port, 6)
    try:
        refused = get(port, "/healthz")
        assert (refused.status, refused.headers.get("retry-after")) == (503, "1")
        wait_for(
            lambda: get(port, "/healthz").status == 200,
            timeout=timeout + 10,
            what="a retried scrape is answered once the idle connections time out",
        )
    finally:
        close_all(conns)


def test_an_idle_connection_is_closed_after_the_request_timeout(
    serve: Callable[..., HealthServer],
) -> None:
    timeout = 0.3
    port = serve(request_timeout_s=timeout).bound_port
    started = time.monotonic()
    (conn,) = half_sent(port, 1)
    with conn:
        assert conn.recv(65536) == b""  # the client's own timeout is 10 s
    assert time.monotonic() - started >= timeout


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_deadline(
    serve: Callable[..., HealthServer],
) -> None:
    timeout = 0.5
    port = serve(request_timeout_s=timeout).bound_port
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for byte in HALF_SENT:  # each byte well within the timeout, 3.7 timeouts in all
            if closed_by_server(conn):
                break
            try:
                conn.sendall(bytes([byte]))
            except ConnectionError:
                break
            time.sleep(timeout / 10)
        else:
            pytest.fail("the server kept waiting for the trickled request")
    assert timeout <= time.monotonic() - started < timeout + 10


def test_connection_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        HealthServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, ""), max_connections=0)
    with pytest.raises(ValueError, match="request_timeout_s"):
        HealthServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, ""), request_timeout_s=0)
