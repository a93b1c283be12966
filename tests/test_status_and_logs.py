"""`batchctl status`, `logs` and `jobs`: the history as tables and as stable JSON."""

from __future__ import annotations

import json

from tests.conftest import Workspace

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
