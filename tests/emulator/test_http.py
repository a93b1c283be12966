"""HTTP details the SDK relies on: keep-alive, Expect: 100-continue, chunked uploads."""

from __future__ import annotations

import http.client
import json
import socket

from emulator_helpers import chat_line, jsonl

from batchctl.emulator import Emulator

AUTH = {"Authorization": "Bearer test-key"}


def _multipart(data: bytes, boundary: str = "XyZzy42") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response with a Content-Length body from a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, rest[:length]


def test_keep_alive_serves_several_requests_on_one_connection(emulator: Emulator) -> None:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/v1/files", headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["object"] == "list"
    conn.close()
    assert len(emulator.requests) == 3


def test_expect_100_continue_upload(emulator: Emulator) -> None:
    body, content_type = _multipart(jsonl([chat_line("a")]))
    with socket.create_connection((emulator.host, emulator.port), timeout=5) as sock:
        sock.sendall(
            (
                "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        status, _, reply = _read_response(sock)
    assert status == 200
    assert json.loads(reply)["filename"] == "in.jsonl"


def test_chunked_upload_is_accepted(emulator: Emulator) -> None:
    data = jsonl([chat_line(f"r{i}") for i in range(100)])
    body, content_type = _multipart(data)
    chunks = b"".join(
        f"{len(body[i : i + 1000]):x}\r\n".encode() + body[i : i + 1000] + b"\r\n"
        for i in range(0, len(body), 1000)
    )
    with socket.create_connection((emulator.host, emulator.port), timeout=5) as sock:
        sock.sendall(
            (
                "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + chunks
            + b"0\r\n\r\n"
        )
        status, _, reply = _read_response(sock)
    assert status == 200
    file_id = json.loads(reply)["id"]
    assert emulator.file_content(file_id) == data


def test_content_is_served_with_content_length(emulator: Emulator) -> None:
    data = jsonl([chat_line(f"r{i}") for i in range(500)])
    body, content_type = _multipart(data)
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    conn.request("POST", "/v1/files", body=body, headers={**AUTH, "Content-Type": content_type})
    file_id = json.loads(conn.getresponse().read())["id"]
    conn.request("GET", f"/v1/files/{file_id}/content", headers=AUTH)
    response = conn.getresponse()
    assert response.getheader("Content-Length") == str(len(data))
    assert response.read() == data
    conn.close()


def test_invalid_json_body_is_400(emulator: Emulator) -> None:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    conn.request("POST", "/v1/batches", body=b"{oops", headers=AUTH)
    response = conn.getresponse()
    assert response.status == 400
    assert "could not parse the JSON body" in json.loads(response.read())["error"]["message"]
    conn.close()


def test_every_response_has_a_request_id(emulator: Emulator) -> None:
    conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    conn.request("GET", "/v1/batches", headers=AUTH)
    response = conn.getresponse()
    response.read()
    assert (response.getheader("x-request-id") or "").startswith("req_")
    conn.close()
