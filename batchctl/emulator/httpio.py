"""Request bodies and responses, as the handlers see them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, BinaryIO, Protocol

from batchctl.emulator.errors import ApiError, bad_request

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


class _Stream(Protocol):
    def read(self, n: int, /) -> bytes: ...

    def readline(self, limit: int, /) -> bytes: ...


class BodyReader:
    """The request body: Content-Length or chunked transfer encoding, read incrementally."""

    def __init__(self, rfile: _Stream, headers: Message) -> None:
        self._rfile = rfile
        encoding = (headers.get("Transfer-Encoding") or "").lower()
        self._chunked = "chunked" in encoding
        self._chunk_left = 0
        self._remaining = 0
        if not self._chunked:
            raw = headers.get("Content-Length")
            try:
                self._remaining = int(raw) if raw else 0
            except ValueError:
                self._remaining = 0
                self.malformed = True
            else:
                self.malformed = self._remaining < 0
                self._remaining = max(self._remaining, 0)
        else:
            self.malformed = False
        self.finished = not self._chunked and self._remaining == 0

    def read(self, n: int, /) -> bytes:
        """Up to ``n`` bytes of the body; b"" at its end."""
        if self.finished or n <= 0:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(n, self._remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self._remaining -= len(data)
            self.finished = self._remaining == 0
            return data
        if self._chunk_left == 0:
            size_line = self._rfile.readline(1024)
            if not size_line:
                raise ConnectionError("client closed the connection mid-body")
            try:
                self._chunk_left = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise ConnectionError("malformed chunked body") from exc
            if self._chunk_left == 0:
                # Trailers end at an empty line.
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self.finished = True
                return b""
        data = self._rfile.read(min(n, self._chunk_left))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # the CRLF after each chunk
        return data

    def read_all(self, limit: int) -> bytes:
        """The whole body; a 413 ApiError past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while chunk := self.read(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "Request body too large.")
            parts.append(chunk)
        return b"".join(parts)

    def drain(self, max_bytes: int) -> bool:
        """Read and drop the rest of the body, at most ``max_bytes``; True if all was read."""
        read = 0
        while not self.finished:
            if read >= max_bytes:
                return False
            chunk = self.read(64 * 1024)
            if not chunk and not self.finished:
                return False
            read += len(chunk)
        return True


@dataclass
class Request:
    """One HTTP request, as the route handlers see it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Message
    body: BodyReader

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self, limit: int = 4 * 1024 * 1024) -> Any:
        """The body parsed as JSON (None if empty); a 400 ApiError if it is not JSON."""
        raw = self.body.read_all(limit)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request(_JSON_HINT) from None


@dataclass
class Response:
    """What to send back: JSON bytes, or a file streamed from disk."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: BinaryIO | None = None
    length: int = 0

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        """A JSON response."""
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, body, headers=dict(headers or {}))

    @classmethod
    def error(cls, error: ApiError) -> Response:
        """The JSON response of an API error."""
        return cls.json(error.status, error.body(), error.headers)

    def close(self) -> None:
        """Release the streamed file, if any."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
