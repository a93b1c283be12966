"""A small read-only HTTP server for monitoring: ``GET /metrics`` and ``GET /healthz``.

``/metrics`` is the Prometheus text (``batchctl metrics``), or OpenMetrics for a scraper whose
``Accept`` header asks for it (``prometheus_client`` negotiates); ``/healthz`` answers 200 when
``batchctl health`` passes and 503 when it does not, with the health report as JSON. Anything
else is 404. ``HEAD`` answers as ``GET`` without the body; other methods 501. The daemon
starts it when ``[daemon] http = "HOST:PORT"`` is set. It serves from its own threads, each
request with its own store connection (SQLite connections belong to one thread), so a slow
scrape never holds up the daemon.

There is no authentication: bind it to loopback (``127.0.0.1:9187``) or a private network.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchctl.config import Config

log = logging.getLogger("batchctl.http")


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9187"`` for IPv6) as (host, port); port 0 picks a free one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9187", got {address!r}')
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        location: str,
        load_config: Callable[[], Config],
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.location = location
        self.load_config = load_config
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "batchctl"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(self._metrics)
        elif path == "/healthz":
            self._answer(self._health)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def do_HEAD(self) -> None:
        """The headers a GET would get (its status, type and length), without the body."""
        self.do_GET()

    def _answer(self, produce: Callable[[], tuple[int, str, bytes]]) -> None:
        try:
            status, content_type, body = produce()
        except Exception as exc:  # the database locked or gone: say so, keep serving
            log.exception("%s failed", self.path)
            status = 503 if self.path.startswith("/healthz") else 500
            content_type = "text/plain; charset=utf-8"
            body = f"error: {type(exc).__name__}: {exc}\n".encode()
        self._send(status, content_type, body)

    def _metrics(self) -> tuple[int, str, bytes]:
        """The text format 0.0.4, or OpenMetrics when the ``Accept`` header asks for it."""
        from batchctl.metrics import encode
        from batchctl.records import utcnow

        content_type: list[str] = []

        def produce(store: Any, config: Config) -> bytes:
            body, kind = encode(store, config, self.headers.get("Accept"), utcnow())
            content_type.append(kind)
            return body

        body = self._with_store(produce)
        return 200, content_type[0], body

    def _health(self) -> tuple[int, str, bytes]:
        from batchctl.health import check
        from batchctl.records import utcnow

        healthy: list[bool] = []

        def produce(store: Any, config: Config) -> bytes:
            report = check(store, config, utcnow())
            healthy.append(report.healthy)
            return (json.dumps(report.to_json(), indent=2) + "\n").encode()

        body = self._with_store(produce)
        return (200 if healthy[0] else 503), "application/json", body

    def _with_store(self, produce: Callable[[Any, Config], bytes]) -> bytes:
        from batchctl.store import open_store

        config = self.server.load_config()
        store = open_store(self.server.location)
        try:
            return produce(store, config)
        finally:
            store.close()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MonitorServer:
    """The monitoring endpoints on ``address``, served from a background thread.

    ``load_config`` is called for every request: the daemon passes ``lambda: daemon.config``
    (its current config, reloads included) rather than re-reading the file each time.
    """

    def __init__(self, address: str, location: str, load_config: Callable[[], Config]) -> None:
        self.requested = parse_address(address)
        self.location = location
        self.load_config = load_config
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (the port is known once started, also for port 0)."""
        if self._server is None:
            return self.requested
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> MonitorServer:
        """Bind (OSError if the address is taken) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server(self.requested, self.location, self.load_config)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="batchctl-http",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics and /healthz on %s", self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MonitorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_http_server(
    address: str, location: str, load_config: Callable[[], Config]
) -> Callable[[], None]:
    """Start serving ``/metrics`` and ``/healthz`` on ``address``; returns the function that
    stops the server. Raises OSError when the address cannot be bound, ValueError when it is
    not ``HOST:PORT``."""
    server = MonitorServer(address, location, load_config).start()
    return server.stop
