"""Ping URLs (healthchecks.io style): /start, success, /fail with one rid; never fail a job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Workspace


class Pings:
    def __init__(self, status: int) -> None:
        self.status = status
        self.seen: list[tuple[str, str]] = []  # (path, rid)


@pytest.fixture
def monitor() -> Iterator[tuple[str, Pings]]:
    pings = Pings(200)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            pings.seen.append((url.path, parse_qs(url.query).get("rid", [""])[0]))
            self.send_response(pings.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping/abc", pings
    finally:
        server.shutdown()


def _job(ws: Workspace, url: str, command: str) -> None:
    ws.write_config(f'[jobs.j]\nkind = "command"\ncommand = "{command}"\nping_url = "{url}"\n')


def test_a_successful_run_pings_start_then_success_with_one_rid(
    ws: Workspace, cli, monitor
) -> None:
    url, pings = monitor
    _job(ws, url, "true")
    assert cli("run", "j").exit_code == 0
    assert [path for path, _ in pings.seen] == ["/ping/abc/start", "/ping/abc"]
    rids = {rid for _, rid in pings.seen}
    assert len(rids) == 1 and rids != {""}


def test_a_failed_run_pings_fail(ws: Workspace, cli, monitor) -> None:
    url, pings = monitor
    _job(ws, url, "exit 3")
    assert cli("run", "j").exit_code == 1
    assert [path for path, _ in pings.seen] == ["/ping/abc/start", "/ping/abc/fail"]


def test_a_monitor_answering_500_does_not_fail_the_job(ws: Workspace, cli, monitor) -> None:
    url, pings = monitor
    pings.status = 500
    _job(ws, url, "true")
    assert cli("run", "j", "--json").json()[0]["status"] == "completed"
    assert len(pings.seen) == 4  # each ping tried twice, then given up


def test_an_unreachable_monitor_does_not_fail_the_job(ws: Workspace, cli) -> None:
    _job(ws, "http://127.0.0.1:9/ping", "true")
    assert cli("run", "j", "--json").json()[0]["status"] == "completed"


def test_a_ping_url_must_be_http(ws: Workspace, cli) -> None:
    _job(ws, "ftp://example.com/x", "true")
    result = cli("config", "check")
    assert result.exit_code == 2
    assert "jobs.j.ping_url: expected an http:// or https:// URL" in result.stderr
