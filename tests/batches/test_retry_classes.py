"""Retrying what is worth retrying, from the command line: ``retry`` re-sends the failures that
can succeed on a second try and leaves invalid requests alone unless ``--include-invalid``;
``status`` and ``results`` (text, --json, CSV and JSONL) say which failures are which.

The emulator fails every valid request with the status chosen by ``request_failure_status``
(``request_failure_rate`` 1.0); a request for a model named ``nonexistent-...`` gets a 404
``model_not_found``, an invalid failure.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchctl.emulator import Emulator
from tests.batches.jsonl import read_jsonl, request, write_jsonl
from tests.batches.test_submission_lifecycle import CONFIG, custom_ids_of, parts_of

SERVER_ERRORS = {"request_failure_rate": 1.0, "request_failure_status": 500}
VALID = ["a", "b", "c"]
INVALID = "bad"


def failed_submission(ws: Any, cli: Any, *, valid: list[str] = VALID) -> int:
    """A settled submission whose valid requests failed with a 500 and whose ``bad`` request
    asked for a model that does not exist."""
    rows = [request(i) for i in valid] + [request(INVALID, model="nonexistent-model")]
    write_jsonl(ws.root / "in.jsonl", rows)
    done = cli("submit", "in.jsonl", "--wait", "--json")
    assert done.exit_code == 1, done.stderr  # every request failed: the run failed
    run_id: int = done.json()["id"]
    return run_id


def test_status_counts_failures_as_retryable_or_invalid(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)

    shown = cli("status", str(run_id))

    assert shown.exit_code == 0, shown.stderr
    (line,) = [line for line in shown.stdout.splitlines() if line.strip().startswith("requests")]
    assert line.split(None, 1)[1] == "4 failed (3 retryable, 1 invalid)"


def test_status_json_carries_the_failures_split(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)

    detail = cli("status", str(run_id), "--json").json()
    (listed,) = cli("status", "--json").json()

    assert detail["requests"] == {"failed": 4}
    assert detail["failures"] == {"retryable": 3, "invalid": 1}
    assert listed["failures"] == {"retryable": 3, "invalid": 1}


def test_results_summary_counts_failures_as_retryable_or_invalid(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)

    shown = cli("results", str(run_id))
    as_json = cli("results", str(run_id), "--json")

    assert shown.exit_code == 1, shown.stderr
    assert f"run {run_id} failed: 4 failed (3 retryable, 1 invalid)" in shown.stdout
    assert as_json.json()["failures"] == {"retryable": 3, "invalid": 1}


def test_results_lines_say_whether_each_failure_is_retryable(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)

    cli("results", str(run_id), "-o", "out.jsonl")
    cli("results", str(run_id), "-o", "out.csv")

    expected = {"a": True, "b": True, "c": True, INVALID: False}
    lines = read_jsonl(ws.root / "out.jsonl")
    assert {line["custom_id"]: line["error"]["retryable"] for line in lines} == expected
    with (ws.root / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["custom_id"]: row["retryable"] for row in rows} == {
        i: str(flag).lower() for i, flag in expected.items()
    }


def test_retry_resends_server_errors_and_leaves_invalid_requests_alone(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)
    emu.update_settings(request_failure_rate=0.0)

    retried = cli("retry", str(run_id), "--failed", "--wait", "--json")

    assert retried.exit_code == 3, retried.stderr  # partial: the invalid request still failed
    assert retried.json()["requests"] == {"succeeded": 3, "failed": 1}
    assert retried.json()["failures"] == {"retryable": 0, "invalid": 1}
    (resent,) = [p for p in parts_of(ws, run_id) if p[1] == 2]
    assert custom_ids_of(emu, resent[4]) == VALID


def test_retry_says_how_many_invalid_failures_it_left_alone(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)
    emu.update_settings(request_failure_rate=0.0)

    retried = cli("retry", str(run_id))

    assert retried.exit_code == 0, retried.stderr
    assert f"run {run_id}: 1 invalid failure(s) left alone" in retried.stderr
    assert "--include-invalid" in retried.stderr
    assert f"run {run_id}: re-sending 3 request(s)" in retried.stdout


def test_retry_include_invalid_resends_invalid_requests_too(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli)
    emu.update_settings(request_failure_rate=0.0)

    retried = cli("retry", str(run_id), "--failed", "--include-invalid", "--json")

    assert retried.exit_code == 0, retried.stderr
    resent = [i for p in parts_of(ws, run_id) if p[1] == 2 for i in custom_ids_of(emu, p[4])]
    assert sorted(resent) == sorted([*VALID, INVALID])


def test_a_retry_with_nothing_retryable_exits_2_naming_the_flag(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(**SERVER_ERRORS)
    run_id = failed_submission(ws, cli, valid=[])
    uploads = len([r for r in emu.requests if (r.method, r.path) == ("POST", "/v1/files")])

    refused = cli("retry", str(run_id), "--failed")

    assert refused.exit_code == 2
    first = refused.stderr.splitlines()[0]
    assert first == (
        f"error: run {run_id}: nothing to re-send: its 1 failed request(s) left are invalid"
        " and would fail again unchanged; re-send them anyway with --include-invalid"
    )
    assert len([r for r in emu.requests if (r.method, r.path) == ("POST", "/v1/files")]) == uploads
    assert ws.sql("SELECT count(*) FROM parts WHERE run_id = ?", run_id) == [(1,)]


def test_include_invalid_is_refused_for_a_local_run(ws: Any, cli: Any) -> None:
    ws.write_config(CONFIG + '\n[jobs.fails]\nkind = "command"\ncommand = "exit 1"\n')
    assert cli("run", "fails").exit_code == 1

    refused = cli("retry", "1", "--include-invalid")

    assert refused.exit_code == 2
    assert "--include-invalid: run 1 is a local run" in refused.stderr


def test_expired_requests_are_retryable_in_the_results(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(expire_after_fraction=0.5, completion_window=1.0)
    write_jsonl(ws.root / "in.jsonl", [request(i) for i in ("a", "b", "c", "d")])
    done = cli("submit", "in.jsonl", "--wait", "--json")
    assert done.exit_code == 3, done.stderr

    lines = read_jsonl(Path(done.json()["output"]))

    expired = [line["error"] for line in lines if line.get("error")]
    assert [e["code"] for e in expired] == ["expired", "expired"]
    assert all(e["retryable"] for e in expired)
