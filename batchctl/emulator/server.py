"""The HTTP server: HTTP/1.1 with keep-alive, one thread per connection.

Routing is by path prefix: ``/v1/...`` is the emulated API (faults apply there),
``/_emulator/...`` the control API (see ``control``). Every request is logged.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from batchctl.emulator import anthropic, api, control
from batchctl.emulator.backend import Backend
from batchctl.emulator.errors import ApiError
from batchctl.emulator.faults import Fault
from batchctl.emulator.httpio import BodyReader, Request, Response
from batchctl.emulator.requestlog import RequestRecord

# A body left unread up to this size is drained so that the connection can be reused; a
# larger one (e.g. an upload refused before it was read) costs a new connection instead.
_DRAIN_LIMIT = 1 << 20
_COPY_CHUNK = 256 * 1024


_Recorder = Callable[[int | Literal["dropped"]], None]


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its backend and can close its open connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection."""
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a closed connection."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut every open (e.g. idle keep-alive) connection, so that its thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK pools connections
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server_version = "batchctl-emulator"
    sys_version = ""
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log replaces stderr logging

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, by the emulated clock (as a real server's is by its own)."""
        now = self.server.backend.clock.now() if timestamp is None else timestamp
        return super().date_time_string(now)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        backend = self.server.backend
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            body=BodyReader(self.rfile, self.headers),
        )
        started, wall = backend.clock.now(), time.time()
        fault: Fault | None = None
        handled: int | None = None
        index: int | None = None

        def record(status: int | Literal["dropped"]) -> None:
            # Logged before the reply goes out, so a client that has its reply always finds
            # the request in the log; a failed send then rewrites the status.
            nonlocal index
            entry = RequestRecord(
                time=started,
                wall_time=wall,
                method=request.method,
                path=url.path,
                query=url.query,
                status=status,
                handled_status=handled,
                fault=None if fault is None else fault.kind,
                retry_count=_retry_count(self.headers.get("x-stainless-retry-count")),
            )
            if index is None:
                index = backend.log.add(entry)
            else:
                backend.log.replace(index, entry)

        try:
            if request.body.malformed:
                self.close_connection = True
                error = ApiError(400, "Invalid Content-Length.")
                self._send(Response.error(error), request, record)
                return
            if url.path == "/v1" or url.path.startswith("/v1/"):
                fault = backend.faults.pick(request.method, url.path)
                response = _fault_response(fault, url.path) if fault is not None else None
                if fault is not None and fault.kind == "drop":
                    self._drop(request, record)
                    return
                if fault is not None and fault.kind == "slow":
                    time.sleep(fault.delay)
                if response is None:
                    response = api.handle(backend, request)
                    handled = response.status
                    if fault is not None and fault.kind == "lost_reply":
                        response.close()
                        self._drop(request, record)
                        return
            elif url.path == "/_emulator" or url.path.startswith("/_emulator/"):
                response = control.handle(backend, request)
                handled = response.status
            else:
                response = Response.error(api.invalid_url(request))
            self._send(response, request, record)
        except OSError:
            # The client went away mid-request (ConnectionError is an OSError).
            self.close_connection = True
            record("dropped")
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            error = ApiError(500, "The emulator had an internal error.", type="server_error")
            try:
                self._send(Response.error(error), request, record)
            except OSError:
                record("dropped")

    def _drop(self, request: Request, record: _Recorder) -> None:
        """End the connection without a reply."""
        request.body.drain(_DRAIN_LIMIT)
        self.close_connection = True
        record("dropped")

    def _send(self, response: Response, request: Request, record: _Recorder) -> None:
        try:
            if not request.body.drain(_DRAIN_LIMIT):
                self.close_connection = True
            record(response.status)
            body = response.body
            length = response.length if response.stream is not None else len(body)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(length))
            self.send_header("x-request-id", f"req_{secrets.token_hex(16)}")
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if response.stream is None:
                self.wfile.write(body)
            else:
                left = length
                while left > 0:
                    chunk = response.stream.read(min(_COPY_CHUNK, left))
                    if not chunk:
                        # The file shrank under us: the Content-Length is now a lie.
                        self.close_connection = True
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            self.wfile.flush()
        finally:
            response.close()


def _fault_response(fault: Fault, path: str) -> Response | None:
    """The error reply of a 429/500/503/529 fault, in the shape of the API at ``path``; None
    for the other kinds."""
    if anthropic.serves(path):
        return anthropic.fault_response(fault)
    if fault.kind == "429":
        retry_after = fault.retry_after
        text = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return Response.error(
            ApiError(
                429,
                f"Rate limit reached for requests. Please try again in {text}s.",
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": text},
            )
        )
    if fault.kind == "500":
        return Response.error(
            ApiError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type="server_error",
            )
        )
    if fault.kind in ("503", "529"):
        return Response.error(
            ApiError(
                int(fault.kind),
                "The engine is currently overloaded, please try again later.",
                type="server_error",
            )
        )
    return None


def _retry_count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
