"""The streaming multipart parser on its own."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from batchctl.emulator.multipart import (
    MultipartError,
    boundary_from_content_type,
    parse_multipart,
)


class _Trickle(io.BytesIO):
    """Hands out at most ``n`` bytes a read, to split delimiters across reads."""

    def __init__(self, data: bytes, n: int) -> None:
        super().__init__(data)
        self.n = n

    def read(self, size: int | None = -1, /) -> bytes:
        return super().read(min(self.n, size if size and size > 0 else self.n))


def _body(file_data: bytes, boundary: str = "b0undary") -> bytes:
    return (
        (
            f"preamble\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="dir/x \\"q\\".jsonl"\r\n\r\n'
        ).encode()
        + file_data
        + f"\r\n--{boundary}--\r\nepilogue".encode()
    )


@pytest.mark.parametrize("read_size", [1, 7, 64 * 1024])
def test_parses_fields_and_file_whatever_the_read_size(tmp_path: Path, read_size: int) -> None:
    data = b"line one\r\n--b0undar not a delimiter\r\n" * 50
    form = parse_multipart(_Trickle(_body(data), read_size), b"b0undary", tmp_path)

    assert form.fields == {"purpose": "batch"}
    upload = form.files["file"]
    assert upload.filename == 'x "q".jsonl'
    assert upload.size == len(data)
    assert upload.path is not None and upload.path.read_bytes() == data


def test_file_over_cap_is_read_but_not_kept(tmp_path: Path) -> None:
    form = parse_multipart(io.BytesIO(_body(b"x" * 1000)), b"b0undary", tmp_path, max_file_bytes=10)
    assert form.files["file"].too_large
    assert form.files["file"].size == 1000
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    body = _body(b"data")[:-30]
    with pytest.raises(MultipartError):
        parse_multipart(io.BytesIO(body), b"b0undary", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_boundary_is_read_from_content_type() -> None:
    assert boundary_from_content_type('multipart/form-data; boundary="abc"') == b"abc"
    with pytest.raises(MultipartError):
        boundary_from_content_type("application/json")
