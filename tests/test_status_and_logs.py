"""`batchctl status`, `logs` and `jobs`: the history as tables and as stable JSON."""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchctl.store import open_store
from tests.conftest import Workspace
from tests.waiting import scaled

RUN_KEYS = {
    "id",
    "job",
    "scope",
    "status",
    "trigger",
    "attempts",
    "max_attempts",
    "created_at",
    "started_at",
    "finished_at",
    "duration",
    "items_processed",
    "items_failed",
    "total_tokens",
    "total_cost",
    "unpriced_models",
    "progress",
    "error",
    "reason",
    "retry_of",
    "scheduled_for",
}


def _jobs(ws: Workspace) -> None:
    ws.write_config(
        """
        [jobs.good]
        kind = "command"
        command = "echo fine"
        [jobs.bad]
        kind = "command"
        command = "echo oops >&2; exit 2"
        """
    )


def test_status_json_lists_runs_newest_first_with_the_documented_keys(ws: Workspace, cli) -> None:
    _jobs(ws)
    cli("run", "good")
    cli("run", "bad")
    runs = cli("status", "--json").json()
    assert [r["job"] for r in runs] == ["bad", "good"]
    for run in runs:
        assert set(run) == RUN_KEYS
    assert runs[1]["started_at"].endswith("+00:00")


def test_status_json_on_an_empty_database_is_an_empty_list(ws: Workspace, cli) -> None:
    result = cli("status", "--json")
    assert (result.exit_code, result.json()) == (0, [])


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [
        (["status"], 0),
        (["status", "--json"], 0),
        (["logs", "1"], 2),  # no run 1
        (["health"], 0),
        (["metrics"], 0),
        (["prune", "--older-than", "1d"], 0),
        (["results", "1"], 2),  # the commands about a run that exists: no run 1
        (["wait", "1"], 2),
        (["retry", "1"], 2),
        (["cancel", "1"], 2),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) else str(value),
)
def test_a_command_that_reads_or_names_a_run_creates_no_database_where_there_is_none(
    ws: Workspace, cli, tmp_path: Path, command: list[str], exit_code: int
) -> None:
    ws.write_config("")
    mistyped = tmp_path / "no-such-dir" / "batchctl.db"

    result = cli("--db", str(mistyped), *command)

    assert result.exit_code == exit_code, result.stderr
    assert not mistyped.parent.exists()


def test_status_where_there_is_no_database_says_nothing_has_run(
    ws: Workspace, cli, tmp_path: Path
) -> None:
    result = cli("--db", str(tmp_path / "none.db"), "status")

    assert (result.exit_code, result.stdout.strip()) == (0, "no runs yet")
    assert not (tmp_path / "none.db").exists()


def test_status_json_streams_what_one_indented_list_would_print(ws: Workspace, cli) -> None:
    from tests.test_observability import _submission

    _jobs(ws)
    cli("run", "good")
    submission, _ = _submission(ws, merged=False)
    cli("run", "bad")
    result = cli("status", "--json")
    assert result.exit_code == 0
    listed = result.json()
    assert result.stdout == json.dumps(listed, indent=2) + "\n"
    assert [r["job"] for r in listed] == ["bad", "submit", "good"]
    batch = listed[1]
    assert batch["id"] == submission
    assert [p["number"] for p in batch["parts"]] == [1]
    assert batch["requests"] == {"pending": 1}
    assert "parts" not in listed[0] and "parts" not in listed[2]


def test_json_layout_is_the_standard_librarys_indent_2() -> None:
    from datetime import datetime

    from batchctl.cli.render import indented_json

    values: list[Any] = [
        {"id": 1, "cost": 0.1 + 0.2, "big": 10**30, "none": None, "yes": True, "no": False},
        {"text": 'é "quoted" \\ \n\t \u2028 \U0001f600', "": "", "empty": {}, "list": []},
        {"nested": {"a": [1, [2, []], {"b": (3, 4)}], "c": {}}, "progress": {"done": None}},
        {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "zero": -0.0},
        {1: "a key that is not a string", "when": datetime(2026, 1, 2, 3, 4, 5)},
        [],
        "plain",
        ("a", ("b",)),
    ]
    for value in values:
        for depth in (0, 1, 3):
            expected = json.dumps(value, indent=2, default=str)
            assert indented_json(value, depth) == expected.replace("\n", "\n" + "  " * depth)


def _runs(ws: Workspace, count: int) -> None:
    open_store(str(ws.db)).close()
    stamp = "2026-01-01T00:00:00.000000+00:00"
    rows = ((f"job{i % 5}", stamp, stamp, stamp) for i in range(count))
    with sqlite3.connect(ws.db) as conn:
        conn.executemany(
            "INSERT INTO runs (job, status, trigger, created_at, started_at, finished_at)"
            " VALUES (?, 'completed', 'manual', ?, ?, ?)",
            rows,
        )


def _log_lines(ws: Workspace, count: int) -> int:
    open_store(str(ws.db)).close()
    stamp = "2026-01-01T00:00:00.000000+00:00"
    rows = ((stamp, f"line {i} of a long log") for i in range(count))
    with sqlite3.connect(ws.db) as conn:
        run_id = conn.execute(
            "INSERT INTO runs (job, status, trigger, created_at) VALUES ('big', 'completed',"
            " 'manual', ?)",
            (stamp,),
        ).lastrowid
        conn.executemany(
            "INSERT INTO run_logs (run_id, attempt, at, level, stream, message)"
            f" VALUES ({run_id}, 1, ?, 'info', 'stdout', ?)",
            rows,
        )
    assert run_id is not None
    return run_id


@pytest.fixture
def first_byte(ws: Workspace, batchctl_exe: str) -> Iterator[Any]:
    """Start batchctl with ARGS; its first bytes of output and its peak memory (MB) by then."""
    children: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[bytes, float]:
        child = subprocess.Popen(
            [batchctl_exe, *args], env=ws.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        children.append(child)
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 120)
        assert ready, "no output within 120 s"
        head = os.read(child.stdout.fileno(), 100)
        with open(f"/proc/{child.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        return head, peak / 1024

    yield start
    for child in children:
        child.kill()
        child.communicate()


def test_status_json_starts_at_once_in_bounded_memory(ws: Workspace, first_byte: Any) -> None:
    # The whole list of 100,000 runs took ~600 MB before its first byte was written.
    _runs(ws, 100_000)
    head, peak = first_byte("status", "--json")
    assert head.startswith(b'[\n  {\n    "id": 100000,')
    assert peak < 100


def test_logs_start_at_once_in_bounded_memory(ws: Workspace, first_byte: Any) -> None:
    # 300,000 lines loaded whole took ~160 MB before the first was printed.
    run_id = _log_lines(ws, 300_000)
    head, peak = first_byte("logs", str(run_id))
    assert b"line 0 of a long log" in head
    assert peak < 80


def test_logs_follow_prints_each_line_through_a_pipe_while_the_run_goes_on(
    ws: Workspace, batchctl_exe: str
) -> None:
    from datetime import timedelta

    from batchctl.records import LogEntry, LogLevel, Owner, RunOutcome, RunStatus, utcnow
    from tests.waiting import wait_for

    ws.write_config('[jobs.long]\nkind = "command"\ncommand = "true"\n')
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        run_id = store.create_run(
            job="long",
            scope=None,
            trigger="manual",
            status=RunStatus.QUEUED,
            max_attempts=1,
            now=now,
        )
        store.start_attempt(run_id, 1, Owner("elsewhere", 1), now + timedelta(hours=1), now)
        store.append_logs([LogEntry(run_id, 1, now, LogLevel.INFO, "first line", "stdout")])
        # As a user's shell starts it: stdout to a pipe is block-buffered.
        env = {k: v for k, v in ws.env().items() if k != "PYTHONUNBUFFERED"}
        follower = subprocess.Popen(
            [batchctl_exe, "logs", str(run_id), "--follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert follower.stdout is not None
        seen = bytearray()

        def printed(text: bytes) -> bool:
            while select.select([follower.stdout], [], [], 0)[0]:
                chunk = os.read(follower.stdout.fileno(), 4096)  # type: ignore[union-attr]
                if not chunk:
                    break
                seen.extend(chunk)
            return text in seen

        try:
            wait_for(lambda: printed(b"first line"), "the first line through the pipe", 60)
            later = utcnow()
            store.append_logs([LogEntry(run_id, 1, later, LogLevel.INFO, "second line", "stdout")])
            wait_for(lambda: printed(b"second line"), "the line logged while following", 60)
            store.finish_attempt(run_id, 1, RunOutcome(RunStatus.COMPLETED), later)
            store.finish_run(run_id, RunOutcome(RunStatus.COMPLETED), later)
            assert follower.wait(timeout=scaled(60)) == 0
        finally:
            follower.kill()
            follower.communicate()
    finally:
        store.close()


def test_status_filters_by_job_status_and_limit(ws: Workspace, cli) -> None:
    _jobs(ws)
    for _ in range(3):
        cli("run", "good")
    cli("run", "bad")
    assert {r["job"] for r in cli("status", "--job", "good", "--json").json()} == {"good"}
    assert len(cli("status", "--limit", "2", "--json").json()) == 2
    assert [r["job"] for r in cli("status", "--status", "failed", "--json").json()] == ["bad"]
    assert len(cli("status", "--status", "failed", "--status", "completed", "--json").json()) == 4


def test_status_since_keeps_recent_runs(ws: Workspace, cli) -> None:
    _jobs(ws)
    cli("run", "good")
    ws.sql("SELECT 1")
    import sqlite3

    with sqlite3.connect(ws.db) as conn:
        conn.execute("UPDATE runs SET created_at = '2020-01-01T00:00:00.000000+00:00'")
    cli("run", "good")
    assert len(cli("status", "--since", "1h", "--json").json()) == 1
    assert len(cli("status", "--since", "100000d", "--json").json()) == 2


def test_status_rejects_bad_filters(ws: Workspace, cli) -> None:
    result = cli("status", "--status", "exploded")
    assert result.exit_code == 2
    assert "error: unknown status 'exploded'" in result.stderr
    assert cli("status", "--since", "yesterday").exit_code == 2
    assert cli("status", "--limit", "0").exit_code == 2


def test_status_table_shows_the_runs(ws: Workspace, cli) -> None:
    _jobs(ws)
    cli("run", "good")
    cli("run", "bad")
    out = cli("status").stdout
    assert "good" in out and "completed" in out
    assert "bad" in out and "failed" in out


def test_a_run_that_counted_no_tokens_shows_no_cost(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "good", "--json").json()[0]["id"]
    row = next(line for line in cli("status").stdout.splitlines() if "good" in line)
    assert row.split()[-1] == "-" and "$" not in row
    assert "$" not in cli("status", str(run_id)).stdout


def test_a_run_of_jobs_that_counted_no_tokens_sums_up_without_a_cost(ws: Workspace, cli) -> None:
    _jobs(ws)
    summary = cli("run", "good").stdout.strip().splitlines()[-1]
    assert summary == "1 run(s): 1 completed"


def test_status_table_says_when_it_shows_only_the_newest(ws: Workspace, cli) -> None:
    _jobs(ws)
    for _ in range(3):
        cli("run", "good")
    assert "showing 2 of 3 runs" in cli("status", "--limit", "2").stdout


def test_status_of_one_run_adds_errors_transitions_and_attempts(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "bad", "--json").json()[0]["id"]
    detail = cli("status", str(run_id), "--json").json()
    assert set(detail) >= RUN_KEYS
    assert detail["errors"] == [{"attempt": 1, "message": "exit code 2", "source": "attempt"}]
    assert [(t["from"], t["to"]) for t in detail["transitions"]] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "failed"),
    ]
    assert detail["attempt_history"][0]["exit_code"] == 2


def test_status_detail_view_for_humans(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "bad", "--json").json()[0]["id"]
    out = cli("status", str(run_id)).stdout
    assert f"run {run_id} bad" in out
    assert "exit code 2" in out
    assert "transitions" in out


def test_status_of_unknown_run_is_exit_two(ws: Workspace, cli) -> None:
    result = cli("status", "999")
    assert result.exit_code == 2
    assert "error: no run with id 999" in result.stderr


def test_logs_filter_by_level(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "bad", "--json").json()[0]["id"]
    everything = cli("logs", str(run_id)).stdout
    assert "oops" in everything
    errors = cli("logs", str(run_id), "--level", "error").stdout
    assert "oops" not in errors
    assert "attempt 1 failed: exit code 2" in errors
    assert cli("logs", str(run_id), "--level", "loud").exit_code == 2


def test_logs_json_is_one_object_per_line(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "good", "--json").json()[0]["id"]
    lines = cli("logs", str(run_id), "--json").stdout.splitlines()
    entry = json.loads(lines[0])
    assert set(entry) == {"id", "run_id", "attempt", "time", "level", "stream", "message", "fields"}
    assert (entry["stream"], entry["message"], entry["level"]) == ("stdout", "fine", "info")


def test_logs_follow_of_a_finished_run_prints_and_exits(ws: Workspace, cli) -> None:
    _jobs(ws)
    run_id = cli("run", "good", "--json").json()[0]["id"]
    result = cli("logs", str(run_id), "--follow")
    assert result.exit_code == 0
    assert "fine" in result.stdout


def test_logs_of_unknown_run_is_exit_two(ws: Workspace, cli) -> None:
    assert cli("logs", "4242").exit_code == 2


def test_jobs_lists_configured_jobs_with_next_fire_and_last_run(ws: Workspace, cli) -> None:
    ws.write_config(
        """
        [jobs.nightly]
        kind = "command"
        command = "true"
        schedule = "30 2 * * *"
        timezone = "America/New_York"
        [jobs.adhoc]
        kind = "command"
        command = "true"
        enabled = false
        """
    )
    run_id = cli("run", "nightly", "--json").json()[0]["id"]
    jobs = {j["name"]: j for j in cli("jobs", "--json").json()}
    assert jobs["nightly"]["schedule"] == "30 2 * * *"
    assert "T02:30:00-0" in jobs["nightly"]["next_fire"]
    assert jobs["nightly"]["last_run"]["id"] == run_id
    assert jobs["nightly"]["last_run"]["status"] == "completed"
    assert jobs["adhoc"]["enabled"] is False
    assert jobs["adhoc"]["next_fire"] is None
    assert jobs["adhoc"]["last_run"] is None
    table = cli("jobs").stdout
    assert "nightly" in table and "adhoc" in table
