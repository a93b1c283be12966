"""A submission's times are the API's, and waiting for it looks often enough to see it end.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP.
Where a test needs batchctl to look late, the emulator holds the look (a ``slow`` fault on the
batch's GET), so nothing here sleeps a fixed time.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchctl.batches.polling import Backoff
from batchctl.batches.submission import work_ended
from batchctl.emulator import Emulator, Fault
from batchctl.records import Part
from tests.conftest import write_chat_requests

# A config without [openai] poll_interval: the default (30 s) applies.
NO_POLL_CONFIG = "# defaults only\n"


def api_duration(emu: Emulator) -> float:
    """The only batch's duration by the API's own times."""
    (batch,) = emu.batches.values()
    assert batch["status"] == "completed"
    return float(batch["completed_at"] - batch["created_at"])


def recorded_duration(cli: Any, run_id: int) -> float:
    shown = cli("status", str(run_id), "--json", "--no-refresh")
    assert shown.exit_code == 0, shown.stderr
    return float(shown.json()["duration"])


def assert_the_apis_duration(recorded: float, emu: Emulator, ws: Any, run_id: int) -> None:
    """``recorded`` is the batch's time at the API (whole seconds, hence the second's slack)
    plus the time batchctl took from recording the run to creating the batch (the upload)."""
    ((started, create_started),) = ws.sql(
        "SELECT r.started_at, min(p.create_started_at) FROM runs r JOIN parts p"
        " ON p.run_id = r.id WHERE r.id = ?",
        run_id,
    )
    sending = (
        datetime.fromisoformat(create_started) - datetime.fromisoformat(started)
    ).total_seconds()
    api = api_duration(emu)
    assert api - 1.0 <= recorded <= api + sending + 1.0, (recorded, api, sending)


def test_submit_wait_sees_a_quick_batch_done_within_seconds_without_a_configured_interval(
    api: Emulator, ws: Any, cli: Any
) -> None:
    ws.write_config(NO_POLL_CONFIG)
    api.update_settings(validation_delay=1.0, finalizing_delay=1.0)  # about 2 s in all
    write_chat_requests(ws.root / "in.jsonl", 3)

    started = time.monotonic()
    done = cli("submit", "in.jsonl", "--wait", "--json")
    took = time.monotonic() - started

    assert done.exit_code == 0, done.stderr
    assert done.json()["status"] == "completed"
    assert took < 20, f"took {took:.1f}s; the default poll interval is 30 s"
    run_id = done.json()["id"]
    assert_the_apis_duration(recorded_duration(cli, run_id), api, ws, run_id)


def test_status_watch_shows_a_quick_batch_done_within_seconds_without_a_configured_interval(
    api: Emulator, ws: Any, cli: Any
) -> None:
    ws.write_config(NO_POLL_CONFIG)
    api.update_settings(validation_delay=1.0, finalizing_delay=1.0)
    write_chat_requests(ws.root / "in.jsonl", 3)
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]

    started = time.monotonic()
    watched = cli("status", str(run_id), "--watch", "--json")
    took = time.monotonic() - started

    assert watched.exit_code == 0, watched.stderr
    last = json.loads(watched.stdout[watched.stdout.rindex("\n{") :])
    assert [p["status"] for p in last["parts"]] == ["completed"]
    assert took < 20, f"took {took:.1f}s; the default poll interval is 30 s"


def test_a_submissions_duration_is_the_apis_not_when_batchctl_looked(
    api: Emulator, ws: Any, cli: Any
) -> None:
    # The first look at the batch is held 5 s by the API; the batch ends well before.
    api.set_faults([Fault(kind="slow", method="GET", path="/v1/batches/*", delay=5.0, count=1)])
    write_chat_requests(ws.root / "in.jsonl", 3)

    done = cli("submit", "in.jsonl", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    assert [r.fault for r in api.requests if r.fault] == ["slow"]
    assert api_duration(api) <= 2
    run_id = done.json()["id"]
    assert_the_apis_duration(recorded_duration(cli, run_id), api, ws, run_id)


def test_the_duration_metric_is_the_apis_duration(api: Emulator, ws: Any, cli: Any) -> None:
    api.set_faults([Fault(kind="slow", method="GET", path="/v1/batches/*", delay=5.0, count=1)])
    write_chat_requests(ws.root / "in.jsonl", 3)
    done = cli("submit", "in.jsonl", "--wait", "--json")
    assert done.exit_code == 0, done.stderr

    exposed = cli("metrics")

    assert exposed.exit_code == 0, exposed.stderr
    (line,) = [x for x in exposed.stdout.splitlines() if "run_duration_seconds_sum" in x]
    assert_the_apis_duration(float(line.split()[-1]), api, ws, done.json()["id"])


def test_the_duration_holds_when_the_apis_clock_is_an_hour_ahead(
    api: Emulator, ws: Any, cli: Any
) -> None:
    api.advance(3600)
    write_chat_requests(ws.root / "in.jsonl", 3)

    done = cli("submit", "in.jsonl", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    run_id = done.json()["id"]
    assert_the_apis_duration(recorded_duration(cli, run_id), api, ws, run_id)
    shown = cli("status", str(run_id), "--json", "--no-refresh").json()
    finished = datetime.fromisoformat(shown["finished_at"])
    assert datetime.fromisoformat(shown["started_at"]) <= finished
    assert finished <= datetime.fromisoformat(shown["transitions"][-1]["at"])


def test_backoff_doubles_up_to_the_poll_interval_and_starts_again_on_a_change() -> None:
    backoff = Backoff(10.0)

    pauses = [backoff.pause("validating") for _ in range(5)]
    after_change = backoff.pause("in_progress")

    assert pauses == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert after_change == 1.0
    assert Backoff(0.05).pause("validating") == 0.05


def sent_part(create_started: datetime, created: int, ended: int | None) -> Part:
    """A part whose batch batchctl asked for at ``create_started`` (its clock) and the API
    stamped ``created`` and ``ended`` (the API's clock, Unix seconds)."""
    return Part(
        id=1,
        run_id=1,
        number=1,
        round=1,
        model="gpt-4o-mini",
        requests=3,
        bytes=100,
        path="part001.jsonl",
        filename="part001.jsonl",
        status="completed",
        upload_started_at=None,
        input_file_id="file-1",
        create_started_at=create_started,
        batch_id="batch_1",
        output_file_id="file-2",
        error_file_id=None,
        request_counts={},
        usage=None,
        errors=[],
        remote_created_at=created,
        expires_at=None,
        downloaded_at=None,
        remote_ended_at=ended,
    )


@pytest.mark.parametrize("host_ahead_s", [0.0, 120.0, -120.0, 86_400.0])
def test_the_end_is_the_apis_whatever_the_offset_between_the_clocks(host_ahead_s: float) -> None:
    api_created = 1_800_000_000
    started = datetime.fromtimestamp(api_created - 1.5 + host_ahead_s, UTC)  # 1.5 s to upload
    part = sent_part(started + timedelta(seconds=1.5), api_created, api_created + 20)
    looked = started + timedelta(minutes=7, seconds=49)

    ended = work_ended(started, [part], looked)

    assert (ended - started).total_seconds() == pytest.approx(21.5)


def test_the_end_is_never_before_the_start_nor_after_it_was_seen() -> None:
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    seen = started + timedelta(seconds=30)
    # No measured offset (an adopted batch): the API's times are taken as they are.
    adopted = sent_part(started, 0, 0)._replace(create_started_at=None)
    late = adopted._replace(remote_ended_at=int(seen.timestamp()) + 3600)

    assert work_ended(started, [adopted], seen) == started
    assert work_ended(started, [late], seen) == seen
    assert work_ended(started, [late], started - timedelta(seconds=5)) == started
    assert work_ended(started, [adopted._replace(remote_ended_at=None)], seen) == seen
