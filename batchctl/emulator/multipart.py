"""A small streaming multipart/form-data parser.

File parts are written to disk chunk by chunk, so an upload of hundreds of megabytes never
sits in memory. Plain fields are kept in memory, with a size cap. ``cgi`` is deprecated
(PEP 594), hence this parser.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

_CHUNK = 64 * 1024
_MAX_HEADER_BYTES = 16 * 1024


class Readable(Protocol):
    """Anything with ``read(n)`` returning at most n bytes, b"" at the end."""

    def read(self, n: int, /) -> bytes: ...


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass
class UploadedFile:
    """One file part. ``path`` is None when the part exceeded the size cap (then discarded)."""

    field_name: str
    filename: str
    content_type: str | None
    size: int
    path: Path | None

    @property
    def too_large(self) -> bool:
        """Whether the part was larger than the cap and so was not kept."""
        return self.path is None

    def discard(self) -> None:
        """Delete the part's file from disk, if any."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


@dataclass
class MultipartForm:
    """The parsed form: plain fields (first value of each name wins) and file parts."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def discard_files(self) -> None:
        """Delete every uploaded part still on disk."""
        for upload in self.files.values():
            upload.discard()


def boundary_from_content_type(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header value."""
    main, _, params = content_type.partition(";")
    if main.strip().lower() != "multipart/form-data":
        raise MultipartError("Content-Type must be multipart/form-data")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if not value or len(value) > 200:
                break
            return value.encode("latin-1")
    raise MultipartError("multipart/form-data without a boundary")


def parse_multipart(
    stream: Readable,
    boundary: bytes,
    upload_dir: Path,
    *,
    max_file_bytes: int | None = None,
    max_field_bytes: int = 64 * 1024,
) -> MultipartForm:
    """Read a whole multipart body from ``stream``.

    File parts go to new files in ``upload_dir``; a part larger than ``max_file_bytes`` is
    read to the end but not kept (its ``path`` is None, its ``size`` is the full size).
    On a MultipartError the files written so far are deleted.
    """
    parser = _Parser(stream, boundary, upload_dir, max_file_bytes, max_field_bytes)
    try:
        return parser.parse()
    except BaseException:
        parser.form.discard_files()
        raise


class _Parser:
    def __init__(
        self,
        stream: Readable,
        boundary: bytes,
        upload_dir: Path,
        max_file_bytes: int | None,
        max_field_bytes: int,
    ) -> None:
        self.stream = stream
        # Every delimiter but the first is preceded by CRLF; starting the buffer with one lets
        # a single search pattern find them all.
        self.sep = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")
        self.eof = False
        self.upload_dir = upload_dir
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self.form = MultipartForm()

    def _fill(self) -> None:
        if self.eof:
            raise MultipartError("unexpected end of multipart body")
        chunk = self.stream.read(_CHUNK)
        if not chunk:
            self.eof = True
            return
        self.buf += chunk

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self._fill()

    def parse(self) -> MultipartForm:
        # Skip any preamble up to the first delimiter.
        while (idx := self.buf.find(self.sep)) < 0:
            keep = len(self.sep) - 1
            if len(self.buf) > keep:
                del self.buf[: len(self.buf) - keep]
            self._fill()
        del self.buf[:idx]
        while True:
            # The buffer starts with a delimiter; "--" after it ends the body.
            self._need(len(self.sep) + 2)
            del self.buf[: len(self.sep)]
            if self.buf[:2] == b"--":
                self._drain()
                return self.form
            self._skip_line_end()
            headers = self._read_headers()
            self._read_part(headers)

    def _drain(self) -> None:
        # The epilogue is ignored, but read so that the connection can be reused.
        self.buf.clear()
        while not self.eof:
            chunk = self.stream.read(_CHUNK)
            if not chunk:
                self.eof = True

    def _skip_line_end(self) -> None:
        while (idx := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 256:
                raise MultipartError("malformed multipart delimiter line")
            self._fill()
        if self.buf[:idx].strip(b" \t"):
            raise MultipartError("malformed multipart delimiter line")
        del self.buf[: idx + 2]

    def _read_headers(self) -> dict[str, str]:
        self._need(2)
        if self.buf.startswith(b"\r\n"):
            raise MultipartError("multipart part without headers")
        while (idx := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEADER_BYTES:
                raise MultipartError("multipart part headers too large")
            self._fill()
        raw = bytes(self.buf[:idx])
        del self.buf[: idx + 4]
        headers: dict[str, str] = {}
        for line in raw.decode("utf-8", "replace").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MultipartError("malformed multipart part header")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _read_part(self, headers: dict[str, str]) -> None:
        disposition, params = _parse_disposition(headers.get("content-disposition", ""))
        name = params.get("name")
        if disposition != "form-data" or name is None:
            raise MultipartError("multipart part without Content-Disposition: form-data; name")
        filename = params.get("filename")
        if filename is None:
            data = bytearray()
            self._stream_part(data.extend, self.max_field_bytes)
            self.form.fields.setdefault(name, data.decode("utf-8", "replace"))
            return
        fd, tmp = tempfile.mkstemp(dir=self.upload_dir, prefix="upload-", suffix=".part")
        upload = UploadedFile(
            field_name=name,
            filename=os.path.basename(filename.replace("\\", "/")),
            content_type=headers.get("content-type"),
            size=0,
            path=Path(tmp),
        )
        # Registered before writing so that an error mid-part still deletes the file.
        previous = self.form.files.get(name)
        self.form.files[name] = upload
        with os.fdopen(fd, "wb") as sink:
            upload.size = self._stream_part(
                lambda chunk: _write_capped(sink, upload, chunk, self.max_file_bytes),
                None,
            )
        if previous is not None:
            # Only the first file of a name counts, like the plain fields.
            self.form.files[name] = previous
            upload.discard()

    def _stream_part(self, write: _Writer, cap: int | None) -> int:
        """Pass the part's bytes to ``write`` until the next delimiter; returns the size."""
        total = 0
        keep = len(self.sep) - 1
        while True:
            idx = self.buf.find(self.sep)
            if idx >= 0:
                if idx:
                    total += idx
                    if cap is not None and total > cap:
                        raise MultipartError("form field is too large")
                    write(bytes(self.buf[:idx]))
                del self.buf[:idx]
                return total
            safe = len(self.buf) - keep
            if safe > 0:
                total += safe
                if cap is not None and total > cap:
                    raise MultipartError("form field is too large")
                write(bytes(self.buf[:safe]))
                del self.buf[:safe]
            self._fill()


class _Writer(Protocol):
    def __call__(self, chunk: bytes, /) -> object: ...


def _write_capped(sink: BinaryIO, upload: UploadedFile, chunk: bytes, cap: int | None) -> None:
    # Past the cap the part is still read (to keep the connection usable) but no longer kept.
    if upload.path is None:
        return
    if cap is not None and sink.tell() + len(chunk) > cap:
        sink.truncate(0)
        upload.discard()
        return
    sink.write(chunk)


def _parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    """Split ``form-data; name="x"; filename="y"`` into its type and parameters."""
    parts = _split_params(value)
    if not parts:
        return "", {}
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        val = val.strip()
        if key.endswith("*"):
            # RFC 5987: charset'language'percent-encoded
            charset, _, rest = val.partition("'")
            _, _, encoded = rest.partition("'")
            params[key[:-1]] = urllib.parse.unquote(encoded, encoding=charset or "utf-8")
            continue
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params.setdefault(key, val)
    return parts[0].strip().lower(), params


def _split_params(value: str) -> list[str]:
    """Split on semicolons that are not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]
