"""The life of a batch submission: cancel, expiry (kept or resubmitted), retry, openai jobs, and
``status`` refreshing in-flight parts.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP;
the emulator runs on the wall clock with settings (processing rate, completion window, failure
rate) chosen per test, changed at run time with ``update_settings``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator
from tests.batches.conftest import API_CONFIG
from tests.batches.jsonl import read_jsonl
from tests.waiting import timeout_arg, wait_for

CONFIG = API_CONFIG
DAY = 86_400.0


# --- fixtures and helpers --------------------------------------------------------------------


def write_requests(path: Path, count: int, *, prefix: str = "req") -> list[str]:
    """A JSONL input of ``count`` chat requests; returns their custom_ids in input order."""
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for custom_id in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    return ids


def outcome(line: dict[str, Any]) -> str:
    """A merged result line's outcome: succeeded, or its error code (failed, expired, ...)."""
    error = line.get("error")
    if not error and line.get("response", {}).get("status_code") == 200:
        return "succeeded"
    return str(error["code"]) if error else "failed"


def outcomes(path: Path) -> dict[str, str]:
    return {line["custom_id"]: outcome(line) for line in read_jsonl(path)}


def parts_of(ws: Any, run_id: int) -> list[tuple[Any, ...]]:
    """(number, round, status, requests, input_file_id) of each part."""
    return ws.sql(
        "SELECT number, round, status, requests, input_file_id FROM parts WHERE run_id = ?"
        " ORDER BY number",
        run_id,
    )


def custom_ids_of(emu: Emulator, file_id: str) -> list[str]:
    """The custom_ids in an input file as the emulator received it."""
    lines = emu.file_content(file_id).decode().splitlines()
    return [json.loads(line)["custom_id"] for line in lines if line.strip()]


def status_json(cli: Any, run_id: int, *extra: str) -> dict[str, Any]:
    done = cli("status", str(run_id), "--json", *extra)
    assert done.exit_code == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    data: dict[str, Any] = done.json()
    return data


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_in_flight_keeps_finished_results_and_cancels_the_rest(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(processing_rate=2.0, cancel_delay=0.5)
    ids = write_requests(ws.root / "in.jsonl", 20)
    submitted = cli("submit", "in.jsonl", "--max-requests", "10", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = submitted.json()["id"]
    wait_for(
        lambda: all(
            p["request_counts"]["completed"] >= 1 for p in status_json(cli, run_id)["parts"]
        ),
        "a finished request in each part",
    )

    cancelled = cli("cancel", str(run_id), "--json")

    assert cancelled.exit_code == 0, cancelled.stderr
    assert [p["status"] for p in cancelled.json()["parts"]] == ["cancelling", "cancelling"]
    assert cancelled.json()["status"] == "running"
    waited = cli("cancel", str(run_id), "--wait", "--json")
    assert waited.exit_code == 0, waited.stderr
    assert [p["status"] for p in waited.json()["parts"]] == ["cancelled", "cancelled"]
    assert waited.json()["status"] == "cancelled"
    assert {b["status"] for b in emu.batches.values()} == {"cancelled"}
    cancels = [r for r in emu.requests if r.method == "POST" and r.path.endswith("/cancel")]
    assert len(cancels) == 2  # the second cancel did not cancel again

    results = cli("results", str(run_id), "-o", "results.jsonl")

    assert results.exit_code == 3, results.stderr
    found = outcomes(ws.root / "results.jsonl")
    assert list(found) == ids
    finished = sum(b["request_counts"]["completed"] for b in emu.batches.values())
    assert 2 <= finished < 20
    assert sorted(found.values()) == sorted(
        ["succeeded"] * finished + ["cancelled"] * (20 - finished)
    )
    assert ws.sql("SELECT status FROM runs WHERE id = ?", run_id) == [("cancelled",)]


# --- expiry ----------------------------------------------------------------------------------


def test_an_expired_part_keeps_its_finished_results_and_the_rest_are_expired(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(completion_window=1.5, expire_after_fraction=0.5)
    ids = write_requests(ws.root / "in.jsonl", 8)

    done = cli("submit", "in.jsonl", "--wait", "--json")

    assert done.exit_code == 3, done.stderr
    assert done.json()["status"] == "partial"
    assert done.json()["requests"] == {"succeeded": 4, "expired": 4}
    found = outcomes(Path(done.json()["output"]))
    assert list(found) == ids
    assert sorted(found.values()) == ["expired"] * 4 + ["succeeded"] * 4
    assert [b["status"] for b in emu.batches.values()] == ["expired"]
    assert [p[2] for p in parts_of(ws, done.json()["id"])] == ["expired"]


EXPIRING = {"completion_window": 1.5, "expire_after_fraction": 0.5}
RESUBMIT_CONFIGS = {
    "batches_config": CONFIG + '\n[batches]\non_expired = "resubmit"\n',
    "openai_job": CONFIG
    + '\n[jobs.nightly]\nkind = "openai"\ninput = "in.jsonl"\non_expired = "resubmit"\n',
}


@pytest.mark.parametrize("where", sorted(RESUBMIT_CONFIGS))
def test_on_expired_resubmit_sends_expired_requests_again_under_the_same_run(
    ws: Any, cli: Any, start_api: Callable[..., Emulator], where: str
) -> None:
    emu = start_api(config=RESUBMIT_CONFIGS[where], **EXPIRING)
    ids = write_requests(ws.root / "in.jsonl", 8)
    if where == "openai_job":
        started = cli("run", "nightly", "--json")
        assert started.exit_code == 0, started.stderr
        (run,) = started.json()
        run_id = run["id"]
    else:
        submitted = cli("submit", "in.jsonl", "--json")
        assert submitted.exit_code == 0, submitted.stderr
        run_id = submitted.json()["id"]
    emu.update_settings(completion_window=DAY, expire_after_fraction=None)  # the next round ends

    waited = cli("wait", str(run_id), "--json", "--timeout", timeout_arg(20))

    assert waited.exit_code == 0, waited.stderr
    assert waited.json()["status"] == "completed"
    assert waited.json()["requests"] == {"succeeded": 8}
    found = outcomes(Path(waited.json()["output"]))
    assert list(found) == ids
    assert set(found.values()) == {"succeeded"}
    parts = parts_of(ws, run_id)
    assert [(number, round_, status, n) for number, round_, status, n, _ in parts] == [
        (1, 1, "expired", 8),
        (2, 2, "completed", 4),
    ]
    first_round = custom_ids_of(emu, parts[0][4])
    second_round = custom_ids_of(emu, parts[1][4])
    assert len(second_round) == 4 and set(second_round) < set(first_round)
    assert sorted(b["status"] for b in emu.batches.values()) == ["completed", "expired"]


# --- retry -----------------------------------------------------------------------------------


def failing_submission(ws: Any, cli: Any, count: int) -> tuple[int, list[str], dict[str, str]]:
    """Submit and wait; some requests fail (the emulator's request_failure_rate)."""
    ids = write_requests(ws.root / "in.jsonl", count)
    done = cli("submit", "in.jsonl", "--max-requests", "5", "--wait", "--json")
    assert done.exit_code == 3, done.stderr
    found = outcomes(Path(done.json()["output"]))
    assert "failed" in found.values() and "succeeded" in found.values()
    return done.json()["id"], ids, found


def test_retry_resends_what_did_not_succeed_as_new_parts_of_the_same_run(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(request_failure_rate=0.3, request_failure_status=500)
    run_id, ids, first = failing_submission(ws, cli, 10)
    failed = [i for i in ids if first[i] == "failed"]
    emu.update_settings(request_failure_rate=0.0)

    retried = cli("retry", str(run_id), "--json")

    assert retried.exit_code == 0, retried.stderr
    assert retried.json()["status"] == "running"
    new_parts = [p for p in parts_of(ws, run_id) if p[1] == 2]
    assert new_parts and sum(p[3] for p in new_parts) == len(failed)
    resent = [i for p in new_parts for i in custom_ids_of(emu, p[4])]
    assert sorted(resent) == failed
    waited = cli("wait", str(run_id), "--json", "--timeout", timeout_arg(20))
    assert waited.exit_code == 0, waited.stderr
    assert waited.json()["status"] == "completed"
    found = outcomes(Path(waited.json()["output"]))
    assert list(found) == ids
    assert set(found.values()) == {"succeeded"}


def test_retry_failed_resends_only_the_failed_requests(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(request_failure_rate=0.3, request_failure_status=500, **EXPIRING)
    ids = write_requests(ws.root / "in.jsonl", 12)
    done = cli("submit", "in.jsonl", "--wait", "--json")
    assert done.exit_code == 3, done.stderr
    first = outcomes(Path(done.json()["output"]))
    assert set(first.values()) == {"succeeded", "failed", "expired"}
    failed = [i for i in ids if first[i] == "failed"]
    emu.update_settings(request_failure_rate=0.0, completion_window=DAY, expire_after_fraction=None)

    retried = cli("retry", str(run_id := done.json()["id"]), "--failed", "--wait", "--json")

    assert retried.exit_code == 3, retried.stderr
    (new_part,) = [p for p in parts_of(ws, run_id) if p[1] == 2]
    assert custom_ids_of(emu, new_part[4]) == failed
    found = outcomes(Path(retried.json()["output"]))
    assert list(found) == ids
    expected = {i: "expired" if first[i] == "expired" else "succeeded" for i in ids}
    assert found == expected


def test_retry_stops_at_the_per_request_attempt_limit(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    config = CONFIG + "\n[batches]\nmax_request_attempts = 2\n"
    # The same requests fail each time, with a 500: worth retrying until the attempts run out.
    emu = start_api(config=config, request_failure_rate=0.3, request_failure_status=500)
    run_id, _, first = failing_submission(ws, cli, 10)

    again = cli("retry", str(run_id), "--wait", "--json")
    assert again.exit_code == 3, again.stderr
    assert outcomes(Path(again.json()["output"])) == first
    uploads = len([r for r in emu.requests if (r.method, r.path) == ("POST", "/v1/files")])

    refused = cli("retry", str(run_id))

    assert refused.exit_code == 2
    assert f"run {run_id} has no failed" in refused.stderr
    assert "at most 2 times" in refused.stderr
    assert len([r for r in emu.requests if (r.method, r.path) == ("POST", "/v1/files")]) == uploads
    assert ws.sql("SELECT status FROM runs WHERE id = ?", run_id) == [("partial",)]


# --- openai jobs -----------------------------------------------------------------------------

JOB_CONFIG = (
    CONFIG
    + """
[jobs.summarise]
kind = "openai"
input = "requests/*.jsonl"
on_complete = "cp \\"$BATCHCTL_RESULTS\\" done.jsonl && echo ran >> on_complete.log"
output_dir = "out"
"""
)


def job_inputs(ws: Any) -> list[str]:
    first = write_requests(ws.root / "requests" / "a.jsonl", 3, prefix="a")
    return first + write_requests(ws.root / "requests" / "b.jsonl", 2, prefix="b")


def assert_delivered(ws: Any, run_id: int, ids: list[str]) -> None:
    delivered = ws.root / "out" / f"summarise-run{run_id}.jsonl"
    found = outcomes(delivered)
    assert list(found) == ids and set(found.values()) == {"succeeded"}
    assert (ws.root / "done.jsonl").read_text() == delivered.read_text()
    assert (ws.root / "on_complete.log").read_text() == "ran\n"


def test_run_openai_job_with_wait_delivers_results_and_runs_on_complete_once(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(config=JOB_CONFIG)
    ids = job_inputs(ws)

    done = cli("run", "summarise", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    (run,) = done.json()
    assert (run["job"], run["status"]) == ("summarise", "completed")
    assert_delivered(ws, run["id"], ids)
    assert cli("wait", str(run["id"])).exit_code == 0  # settled: nothing runs again
    assert status_json(cli, run["id"])["status"] == "completed"
    assert (ws.root / "on_complete.log").read_text() == "ran\n"


def test_run_openai_job_without_wait_leaves_it_running_and_status_finishes_it(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    start_api(config=JOB_CONFIG)
    ids = job_inputs(ws)

    started = cli("run", "summarise", "--json")

    assert started.exit_code == 0, started.stderr
    (run,) = started.json()
    assert run["status"] == "running"
    assert not (ws.root / "out").exists()
    wait_for(
        lambda: status_json(cli, run["id"])["status"] == "completed", "status to finish the run"
    )
    assert_delivered(ws, run["id"], ids)


def test_run_openai_job_with_an_input_command(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    config = (
        CONFIG + '\n[jobs.generated]\nkind = "openai"\ninput = { command = "python3 make.py" }\n'
    )
    start_api(config=config)
    ids = [f"gen-{i}" for i in range(4)]
    (ws.root / "make.py").write_text(
        "import json\n"
        f"for custom_id in {ids!r}:\n"
        "    body = {'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': custom_id}]}\n"
        "    print(json.dumps({'custom_id': custom_id, 'method': 'POST',"
        " 'url': '/v1/chat/completions', 'body': body}))\n"
    )

    done = cli("run", "generated", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    (run,) = done.json()
    assert run["status"] == "completed"
    results = cli("results", str(run["id"]), "-o", "results.jsonl")
    assert results.exit_code == 0, results.stderr
    assert list(outcomes(ws.root / "results.jsonl")) == ids


# A job's concurrency policy holds for its batch runs whichever command starts them: under the
# default "forbid", a run started while one of the same job is in flight is a skipped run.


def test_run_of_an_openai_job_while_its_last_run_is_in_flight_is_skipped(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(config=JOB_CONFIG, manual_clock=True)  # the first batch stays in flight
    job_inputs(ws)
    first = cli("run", "summarise", "--json")
    assert first.exit_code == 0, first.stderr
    (running,) = first.json()
    write_requests(ws.root / "requests" / "c.jsonl", 2, prefix="c")  # new input: not a duplicate

    second = cli("run", "summarise", "--json")

    assert second.exit_code == 4, second.stderr
    (skipped,) = second.json()
    assert skipped["status"] == "skipped"
    assert skipped["reason"] == (
        f"run {running['id']} of this job is still in flight (concurrency=forbid)"
    )
    assert len(emu.batches) == 1
    assert status_json(cli, running["id"])["status"] == "running"


def test_submit_with_job_while_the_jobs_last_run_is_in_flight_is_skipped(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(config=JOB_CONFIG, manual_clock=True)
    job_inputs(ws)
    first = cli("run", "summarise", "--json")
    assert first.exit_code == 0, first.stderr
    (running,) = first.json()
    write_requests(ws.root / "more.jsonl", 2, prefix="m")

    second = cli("submit", "more.jsonl", "--job", "summarise")

    assert second.exit_code == 4, second.stderr
    assert f"run {running['id']} of this job is still in flight" in second.stderr
    assert len(emu.batches) == 1
    assert ws.sql("SELECT status FROM runs ORDER BY id") == [("running",), ("skipped",)]


def test_run_of_an_openai_job_with_concurrency_allow_submits_beside_the_last_run(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(config=JOB_CONFIG + 'concurrency = "allow"\n', manual_clock=True)
    job_inputs(ws)
    assert cli("run", "summarise").exit_code == 0
    write_requests(ws.root / "requests" / "c.jsonl", 2, prefix="c")

    second = cli("run", "summarise", "--json")

    assert second.exit_code == 0, second.stderr
    assert second.json()[0]["status"] == "running"
    assert len(emu.batches) == 2


# --- status ----------------------------------------------------------------------------------


def test_status_refreshes_in_flight_parts(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(processing_rate=4.0)
    write_requests(ws.root / "in.jsonl", 12)
    submitted = cli("submit", "in.jsonl", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = submitted.json()["id"]
    (first,) = submitted.json()["parts"]
    assert first["status"] == "validating"

    def moved_on() -> Any:
        (part,) = status_json(cli, run_id)["parts"]
        return (
            part
            if part["status"] == "in_progress" and part["request_counts"]["completed"]
            else None
        )

    part = wait_for(moved_on, "the part to make progress")

    (remote,) = emu.batches.values()
    assert part["request_counts"]["completed"] <= remote["request_counts"]["completed"]
    later = wait_for(
        lambda: (
            status_json(cli, run_id)["parts"][0]["request_counts"]["completed"]
            > part["request_counts"]["completed"]
        ),
        "more progress",
    )
    assert later
    refreshes = [r for r in emu.requests if r.path == f"/v1/batches/{first['batch_id']}"]
    assert len(refreshes) >= 2 and all(r.method == "GET" for r in refreshes)


def test_a_refresh_that_finds_a_batch_unchanged_writes_nothing(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(processing_rate=0.001)  # in progress, with no request done for a long time
    write_requests(ws.root / "in.jsonl", 3)
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]
    wait_for(
        lambda: status_json(cli, run_id)["parts"][0]["status"] == "in_progress",
        "the part to be seen in progress",
    )
    (before,) = ws.sql("SELECT refreshed_at FROM parts")
    gets = len([r for r in emu.requests if r.method == "GET"])

    status_json(cli, run_id)

    assert len([r for r in emu.requests if r.method == "GET"]) > gets  # it did look
    assert ws.sql("SELECT refreshed_at FROM parts") == [before]  # and found nothing to write


def test_status_no_refresh_does_not_call_the_api(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(processing_rate=4.0)
    write_requests(ws.root / "in.jsonl", 12)
    submitted = cli("submit", "in.jsonl", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = submitted.json()["id"]
    wait_for(
        lambda: next(iter(emu.batches.values()))["status"] == "in_progress", "the batch to run"
    )
    seen = len(emu.requests)

    shown = status_json(cli, run_id, "--no-refresh")
    listed = cli("status", "--no-refresh")

    assert listed.exit_code == 0, listed.stderr
    assert [(p["status"], p["request_counts"]["completed"]) for p in shown["parts"]] == [
        ("validating", 0)
    ]
    assert len(emu.requests) == seen
    assert not [r for r in emu.requests if r.method == "GET" and r.path.startswith("/v1/batches")]
