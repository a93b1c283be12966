"""``logs RUN`` of a batch submission tells what happened to it, step by step (stream ``batch``).

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from batchctl.emulator import Emulator, Fault
from tests.conftest import write_chat_requests


def log_lines(cli: Any, run_id: int, *extra: str) -> list[dict[str, Any]]:
    shown = cli("logs", str(run_id), "--json", *extra)
    assert shown.exit_code == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines()]


def positions(messages: list[str], markers: list[str]) -> list[int]:
    """The index of the first message containing each marker, in turn, after the previous."""
    found, start = [], 0
    for marker in markers:
        index = next(
            (i for i in range(start, len(messages)) if marker in messages[i]),
            None,
        )
        assert index is not None, f"no {marker!r} after line {start} in {messages}"
        found.append(index)
        start = index + 1
    return found


def test_logs_of_a_submission_tell_its_story_in_order(api: Emulator, ws: Any, cli: Any) -> None:
    write_chat_requests(ws.root / "in.jsonl", 4)
    run_id = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json").json()["id"]

    lines = log_lines(cli, run_id)

    assert {line["stream"] for line in lines} == {"batch"}
    assert {line["level"] for line in lines} == {"info"}
    messages = [line["message"] for line in lines]
    positions(
        messages,
        [
            "validated 4 request(s)",
            "part 1: uploaded",
            "part 1: created batch",
            "part 2: uploaded",
            "part 2: created batch",
            "-> completed",
            "downloaded the output file",
            "merged 4 result(s)",
            "run completed: 4 of 4 request(s) succeeded",
        ],
    )
    for number in (1, 2):
        mine = [m for m in messages if m.startswith(f"part {number}: ")]
        positions(mine, ["uploaded", "created batch", "-> completed", "downloaded"])
    shown = cli("logs", str(run_id))
    assert shown.exit_code == 0, shown.stderr
    assert "batch" in shown.stdout and "validated 4 request(s)" in shown.stdout


def test_a_failed_part_is_logged_at_level_error_with_the_apis_reason(
    api: Emulator, ws: Any, cli: Any
) -> None:
    api.update_settings(max_requests_per_batch=2)
    write_chat_requests(ws.root / "in.jsonl", 3)
    run_id = cli("submit", "in.jsonl", "--wait", "--json").json()["id"]

    errors = log_lines(cli, run_id, "--level", "error")

    messages = [line["message"] for line in errors]
    assert any(
        m.startswith("part 1: ") and "-> failed" in m and "too_many_tasks" in m for m in messages
    ), messages
    assert any(m.startswith("run failed: 0 of 3") for m in messages), messages
    assert {line["level"] for line in errors} == {"error"}


def test_a_retried_api_call_is_logged_as_a_warning(api: Emulator, ws: Any, cli: Any) -> None:
    api.set_faults([Fault(kind="500", method="GET", path="/v1/batches/*", count=1)])
    write_chat_requests(ws.root / "in.jsonl", 2)
    run_id = cli("submit", "in.jsonl", "--wait", "--json").json()["id"]

    warnings = log_lines(cli, run_id, "--level", "warning")

    (warning,) = warnings
    assert warning["level"] == "warning"
    assert warning["message"].startswith("HTTP 500: ")
    assert "retrying in " in warning["message"]
    assert warning["message"].endswith("(attempt 2 of 6)")


def test_a_retry_of_failed_requests_is_in_the_log(api: Emulator, ws: Any, cli: Any) -> None:
    api.update_settings(request_failure_rate=0.5, request_failure_status=500)
    write_chat_requests(ws.root / "in.jsonl", 8)
    run_id = cli("submit", "in.jsonl", "--wait", "--json").json()["id"]
    api.update_settings(request_failure_rate=0.0)

    assert cli("retry", str(run_id), "--failed", "--wait", "--json").exit_code == 0

    lines = log_lines(cli, run_id)
    messages = [line["message"] for line in lines]
    positions(
        messages,
        ["run partial", "re-sending", "part 2: uploaded", "part 2: created", "run completed"],
    )
    assert lines[-1]["attempt"] == 2
