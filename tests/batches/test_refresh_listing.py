"""Refreshing many parts in flight from the list pages (``GET /v1/batches?limit=100``, newest
first) rather than one ``GET /v1/batches/{id}`` per part.

The emulator runs on a manual clock, so that batches stay where a test puts them; what batchctl
asked the API is read from the emulator's request log, never from a mock.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from batchctl.emulator import Emulator, EmulatorSettings, Fault
from tests.conftest import write_chat_requests

CONFIG = """\
[openai]
poll_interval = 0.05
max_retries = 0
"""


@pytest.fixture
def emu(ws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on a manual clock (batches stay in progress), batchctl pointed at it."""
    with Emulator(EmulatorSettings(manual_clock=True, processing_rate=0.001)) as emulator:
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        yield emulator


@pytest.fixture
def others(emu: Emulator) -> Iterator[Callable[[int], None]]:
    """Create batches that are not batchctl's (another tool on the same account)."""
    client = openai.OpenAI(base_url=emu.base_url, api_key="test-key", max_retries=0)
    line = b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    uploaded = client.files.create(file=("other.jsonl", line), purpose="batch")

    def create(count: int) -> None:
        for _ in range(count):
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )

    yield create
    client.close()


def submit_parts(ws: Any, cli: Any, parts: int, name: str = "in") -> int:
    """A submission of ``parts`` one-request parts, all sent; its run id."""
    path = ws.root / f"{name}.jsonl"
    write_chat_requests(path, parts)
    done = cli("submit", path.name, "--max-requests", "1", "--force", "--json")
    assert done.exit_code == 0, done.stderr
    return int(done.json()["id"])


def refresh_all(cli: Any) -> None:
    done = cli("status", "--json")
    assert done.exit_code == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr


def requests_since(emu: Emulator, seen: int) -> tuple[list[str], list[str]]:
    """The list pages (their queries) and the single-batch GETs asked since ``seen``."""
    new = [r for r in emu.requests[seen:] if r.method == "GET"]
    pages = [r.query for r in new if r.path == "/v1/batches"]
    gets = [r.path for r in new if r.path.startswith("/v1/batches/")]
    return pages, gets


def part_statuses(ws: Any) -> dict[str, int]:
    return dict(ws.sql("SELECT status, COUNT(*) FROM parts GROUP BY status"))


def test_many_parts_in_flight_are_refreshed_from_one_list_page(
    ws: Any, cli: Any, emu: Emulator
) -> None:
    submit_parts(ws, cli, 12)
    emu.advance(1)  # validated: every batch is in progress now
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 1 and "limit=100" in pages[0]
    assert gets == []
    assert part_statuses(ws) == {"in_progress": 12}


def test_the_listing_stops_at_the_oldest_part_in_flight(
    ws: Any, cli: Any, emu: Emulator, others: Callable[[int], None]
) -> None:
    others(150)  # older than any part: no page need reach them
    emu.advance(10)
    submit_parts(ws, cli, 12)
    emu.advance(1)
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 1  # its last batch is older than every part: no second page
    assert gets == []
    assert part_statuses(ws) == {"in_progress": 12}


def test_parts_spread_over_several_pages_are_all_refreshed_from_them(
    ws: Any, cli: Any, emu: Emulator, others: Callable[[int], None]
) -> None:
    submit_parts(ws, cli, 10, "first")
    others(150)  # the two submissions' parts are 150 batches apart: on pages one and two
    submit_parts(ws, cli, 10, "second")
    emu.advance(1)
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 2 and "after=" in pages[1]
    assert gets == []
    assert part_statuses(ws) == {"in_progress": 20}


def test_a_part_the_pages_do_not_show_is_fetched_on_its_own(
    ws: Any, cli: Any, emu: Emulator, others: Callable[[int], None]
) -> None:
    submit_parts(ws, cli, 10)
    others(150)  # newer than the parts: the one page that 10 parts are worth shows none of them
    emu.advance(1)
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 1
    batch_ids = [row[0] for row in ws.sql("SELECT batch_id FROM parts")]
    assert sorted(gets) == sorted(f"/v1/batches/{b}" for b in batch_ids)
    assert part_statuses(ws) == {"in_progress": 10}


def test_a_failed_listing_falls_back_to_one_get_per_part(ws: Any, cli: Any, emu: Emulator) -> None:
    submit_parts(ws, cli, 12)
    emu.advance(1)
    emu.set_faults([Fault(kind="500", method="GET", path="/v1/batches", count=1)])
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 1 and len(gets) == 12
    assert part_statuses(ws) == {"in_progress": 12}


def test_a_listing_that_finds_every_part_unchanged_writes_nothing(
    ws: Any, cli: Any, emu: Emulator
) -> None:
    run_id = submit_parts(ws, cli, 12)
    emu.advance(1)
    refresh_all(cli)  # records them in progress
    tables = ("parts", "submissions", "run_logs", "runs")
    before = {table: ws.sql(f"SELECT * FROM {table}") for table in tables}
    seen = len(emu.requests)

    refresh_all(cli)

    pages, gets = requests_since(emu, seen)
    assert len(pages) == 1 and gets == []  # it did look
    assert {table: ws.sql(f"SELECT * FROM {table}") for table in tables} == before
    assert ws.sql("SELECT COUNT(*) FROM parts WHERE run_id = ?", run_id) == [(12,)]


def test_what_changed_is_recorded_with_its_log_lines(ws: Any, cli: Any, emu: Emulator) -> None:
    run_id = submit_parts(ws, cli, 12)
    emu.advance(1)

    refresh_all(cli)

    moved = ws.sql(
        "SELECT COUNT(*) FROM run_logs WHERE run_id = ? AND message LIKE '%validating -> in_progress%'",
        run_id,
    )
    assert moved == [(12,)]
    assert ws.sql("SELECT COUNT(*) FROM parts WHERE refreshed_at IS NULL") == [(0,)]


def test_wait_on_a_submission_of_many_parts_lists_them(ws: Any, cli: Any, emu: Emulator) -> None:
    run_id = submit_parts(ws, cli, 12)
    emu.advance(1)
    seen = len(emu.requests)

    waited = cli("wait", str(run_id), "--timeout", "1s")  # they stay in progress: it times out

    assert waited.exit_code == 1, waited.stderr
    pages, gets = requests_since(emu, seen)
    assert pages and gets == []
    assert part_statuses(ws) == {"in_progress": 12}


def test_wait_on_a_few_parts_gets_each_of_them(ws: Any, cli: Any, emu: Emulator) -> None:
    run_id = submit_parts(ws, cli, 3)
    emu.advance(1)
    seen = len(emu.requests)

    waited = cli("wait", str(run_id), "--timeout", "1s")

    assert waited.exit_code == 1, waited.stderr
    pages, gets = requests_since(emu, seen)
    assert pages == [] and len(gets) >= 3  # three GETs a poll: cheaper than a page of 100
    assert part_statuses(ws) == {"in_progress": 3}


def test_the_daemon_refreshes_many_parts_from_the_list_pages(
    ws: Any, cli: Any, emu: Emulator, batchctl_exe: str
) -> None:
    submit_parts(ws, cli, 12)
    emu.advance(1)
    seen = len(emu.requests)

    done = subprocess.run(
        [batchctl_exe, "daemon", "--once"], env=ws.env(), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    pages, gets = requests_since(emu, seen)
    assert pages and all("after=" not in query for query in pages)  # one page a refresh pass
    assert gets == []
    assert part_statuses(ws) == {"in_progress": 12}
