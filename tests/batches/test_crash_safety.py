"""Crash safety of batch submissions: lost replies, kill -9, flaky APIs, permanent errors.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP;
faults are injected by the emulator, crashes are real SIGKILLs of the installed executable. The
invariant checked everywhere: each part is uploaded once and created once (the emulator's
request log and its files and batches prove it), and the results have one line per request.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchctl.batches.submission import INTENT_SETTLE_S
from batchctl.emulator import Emulator, Fault
from tests.batches.jsonl import read_jsonl
from tests.conftest import run_exe
from tests.waiting import scaled, timeout_arg, wait_for

KILL_WAIT_S = 60.0  # bounds a wait for a kill moment (scaled by wait_for)
SLOW_S = 1.0  # how long a slowed call stays in flight: time enough to kill batchctl during it


# --- fixtures and helpers --------------------------------------------------------------------


def write_requests(path: Path, count: int, *, model: str = "gpt-4o-mini") -> list[str]:
    """A JSONL input of ``count`` chat requests; returns their custom_ids in input order."""
    ids = [f"req-{i:03d}" for i in range(count)]
    with path.open("w") as out:
        for custom_id in ids:
            body = {"model": model, "messages": [{"role": "user", "content": f"about {custom_id}"}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    return ids


def effective(emu: Emulator, method: str, path: str) -> list[Any]:
    """The requests to METHOD PATH that took effect (whether or not the reply arrived)."""
    return [r for r in emu.requests if r.method == method and r.path == path and r.succeeded]


def parts_of(ws: Any, run_id: int) -> list[dict[str, Any]]:
    rows = ws.sql(
        "SELECT number, filename, upload_started_at, input_file_id, create_started_at, batch_id,"
        " status, downloaded_at FROM parts WHERE run_id = ? ORDER BY number",
        run_id,
    )
    names = ("number", "filename", "upload_started_at", "input_file_id", "create_started_at")
    names += ("batch_id", "status", "downloaded_at")
    return [dict(zip(names, row, strict=True)) for row in rows]


def only_run_id(ws: Any) -> int:
    (row,) = ws.sql("SELECT run_id FROM submissions")
    return int(row[0])


def assert_each_part_sent_once(ws: Any, emu: Emulator, run_id: int) -> None:
    """One effective upload and one effective create per part, and the part holds both."""
    parts = parts_of(ws, run_id)
    uploads = effective(emu, "POST", "/v1/files")
    creates = effective(emu, "POST", "/v1/batches")
    assert len(uploads) == len(parts), [(r.status, r.fault) for r in uploads]
    assert len(creates) == len(parts), [(r.status, r.fault) for r in creates]
    inputs = {i: f for i, f in emu.files.items() if f["purpose"] == "batch"}
    assert sorted(f["filename"] for f in inputs.values()) == sorted(p["filename"] for p in parts)
    assert sorted(inputs) == sorted(p["input_file_id"] for p in parts)
    remote = emu.batches
    assert sorted(remote) == sorted(p["batch_id"] for p in parts)
    for part in parts:
        assert remote[part["batch_id"]]["input_file_id"] == part["input_file_id"]
    keys = [b["metadata"]["batchctl_part"] for b in remote.values()]
    assert len(set(keys)) == len(parts)


def assert_all_succeeded(results: Path, ids: list[str]) -> None:
    lines = read_jsonl(results)
    assert [line["custom_id"] for line in lines] == ids
    failed = [line for line in lines if line.get("error") or line["response"]["status_code"] != 200]
    assert failed == []


def holding(emu: Emulator) -> bool:
    """Whether the emulator holds the call its last fault rule slows: that rule's one hit is
    used (the control API counts a hit when the request's headers arrive, before the delay)."""
    with urllib.request.urlopen(f"{emu.url}/_emulator/faults", timeout=scaled(5)) as response:
        rules = json.load(response)["faults"]
    return bool(rules) and rules[-1]["remaining"] == 0


def wait_until_held(emu: Emulator, what: str) -> None:
    """Until the emulator holds the call (its headers have arrived), then a moment for its
    body to follow: the emulator reads the body only after the delay, so nothing shows it."""
    wait_for(lambda: holding(emu), f"the emulator to hold {what}")
    time.sleep(0.3)  # well inside SLOW_S; the body is a few hundred bytes behind its headers


def db_parts(ws: Any) -> list[dict[str, Any]]:
    """The parts of the only submission, read while another process may be writing."""
    try:
        return parts_of(ws, only_run_id(ws))
    except (ValueError, sqlite3.Error):  # no submission yet, or the database is being created
        return []


def settle_in_flight(ws: Any, emu: Emulator, run_id: int) -> None:
    """After a kill, wait until each call batchctl had started has reached the emulator's log.

    A call cut off in flight is still handled by the server (the real API does the same), so
    the next batchctl must find what it created rather than create it again. A call killed
    before its request left may never arrive: then give up after the slowed call's time.
    """
    parts = parts_of(ws, run_id)
    want_uploads = sum(1 for p in parts if p["upload_started_at"])
    want_creates = sum(1 for p in parts if p["create_started_at"])
    deadline = time.monotonic() + scaled(SLOW_S + 1.5)
    while time.monotonic() < deadline:
        log = emu.requests
        uploads = sum(1 for r in log if (r.method, r.path) == ("POST", "/v1/files"))
        creates = sum(1 for r in log if (r.method, r.path) == ("POST", "/v1/batches"))
        if uploads >= want_uploads and creates >= want_creates:
            return
        time.sleep(0.02)


def let_dead_lease_lapse(ws: Any, run_id: int) -> None:
    """Stand in for the 120 s submission lease of a SIGKILLed process running out.

    batchctl does not take over the lease of a dead holder (see
    test_wait_takes_over_at_once_from_a_killed_submit, xfail); the tests of what happens after
    a crash look past that by letting the lease lapse, as time would.
    """
    ws.sql(
        "UPDATE submissions SET lease_until = '2000-01-01T00:00:00+00:00' WHERE run_id = ?", run_id
    )


def sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=scaled(10))
    assert proc.returncode == -signal.SIGKILL


def wait_json(batchctl_exe: str, ws: Any, run_id: int, timeout: float = 20) -> dict[str, Any]:
    done = run_exe(
        batchctl_exe, "wait", str(run_id), "--json", "--timeout", timeout_arg(timeout), env=ws.env()
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


# --- lost replies ----------------------------------------------------------------------------


def test_lost_upload_reply_is_adopted_not_uploaded_again(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api()
    emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/files", count=1)])
    ids = write_requests(ws.root / "in.jsonl", 6)

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    lost = [r for r in emu.requests if r.fault == "lost_reply"]
    assert [(r.path, r.status, r.handled_status) for r in lost] == [("/v1/files", "dropped", 200)]
    run_id = done.json()["id"]
    assert_each_part_sent_once(ws, emu, run_id)
    assert_all_succeeded(Path(done.json()["output"]), ids)


def test_lost_create_reply_is_adopted_not_created_again(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api()
    emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/batches", count=1)])
    ids = write_requests(ws.root / "in.jsonl", 6)

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    lost = [r for r in emu.requests if r.fault == "lost_reply"]
    assert [(r.path, r.status, r.handled_status) for r in lost] == [("/v1/batches", "dropped", 200)]
    assert len(emu.batches) == 3
    assert_each_part_sent_once(ws, emu, done.json()["id"])
    assert_all_succeeded(Path(done.json()["output"]), ids)
    assert done.json()["status"] == "completed"


# --- kill -9 ---------------------------------------------------------------------------------

# Each kill point: the faults that hold a call in flight, and the moment to kill (read from the
# database). A zero-delay "slow" fault with count=1 lets the first matching call through, so that
# the held call is part 2's, made by an SDK client that is already up.
LET_ONE_UPLOAD_THROUGH = Fault(kind="slow", method="POST", path="/v1/files", delay=0, count=1)
KILL_POINTS: dict[str, tuple[list[Fault], Callable[[list[dict[str, Any]]], Any]]] = {
    "during_upload": (
        [
            LET_ONE_UPLOAD_THROUGH,
            Fault(kind="slow", method="POST", path="/v1/files", delay=SLOW_S, count=1),
        ],
        lambda parts: (
            len(parts) > 1 and parts[1]["upload_started_at"] and not parts[1]["input_file_id"]
        ),
    ),
    "during_create": (
        [Fault(kind="slow", method="POST", path="/v1/batches", delay=SLOW_S, count=1)],
        lambda parts: parts and parts[0]["create_started_at"] and not parts[0]["batch_id"],
    ),
    "after_create_reply": (
        [LET_ONE_UPLOAD_THROUGH, Fault(kind="slow", method="POST", path="/v1/files", delay=SLOW_S)],
        lambda parts: parts and parts[0]["batch_id"],
    ),
}


@pytest.mark.parametrize("kill_point", sorted(KILL_POINTS))
def test_kill_9_during_submit_then_wait_sends_each_part_once(
    ws: Any,
    start_api: Callable[..., Emulator],
    spawn: Callable[..., subprocess.Popen[str]],
    batchctl_exe: str,
    kill_point: str,
) -> None:
    emu = start_api()
    faults, moment = KILL_POINTS[kill_point]
    emu.set_faults(faults)
    ids = write_requests(ws.root / "in.jsonl", 6)

    proc = spawn("submit", "in.jsonl", "--max-requests", "2")
    wait_for(lambda: moment(db_parts(ws)), f"the {kill_point} moment", KILL_WAIT_S)
    if kill_point != "after_create_reply":
        wait_until_held(emu, "the call")
    sigkill(proc)

    run_id = only_run_id(ws)
    settle_in_flight(ws, emu, run_id)
    if kill_point != "after_create_reply":  # the call cut off by the kill did take effect
        cut = [r for r in emu.requests if r.fault == "slow"][-1]
        assert cut.succeeded and cut.path == faults[-1].path
    emu.clear_faults()
    listed = json.loads(
        run_exe(batchctl_exe, "status", "--json", "--no-refresh", env=ws.env()).stdout
    )
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "running")]
    let_dead_lease_lapse(ws, run_id)

    waited = wait_json(batchctl_exe, ws, run_id)

    assert waited["status"] == "completed"
    assert waited["requests"] == {"succeeded": 6}
    assert_each_part_sent_once(ws, emu, run_id)
    assert_all_succeeded(Path(waited["output"]), ids)


def test_wait_takes_over_from_a_killed_submit_once_its_last_call_has_settled(
    ws: Any,
    start_api: Callable[..., Emulator],
    spawn: Callable[..., subprocess.Popen[str]],
    batchctl_exe: str,
) -> None:
    emu = start_api()
    emu.set_faults([Fault(kind="slow", method="POST", path="/v1/batches", delay=SLOW_S, count=1)])
    write_requests(ws.root / "in.jsonl", 4)
    proc = spawn("submit", "in.jsonl", "--max-requests", "2")
    wait_for(lambda: any(p["create_started_at"] for p in db_parts(ws)), "the first create")
    wait_until_held(emu, "the create")
    sigkill(proc)
    run_id = only_run_id(ws)
    settle_in_flight(ws, emu, run_id)
    emu.clear_faults()

    # The dead process's lease is taken over at once; its last create gets INTENT_SETTLE_S to
    # land before it is looked for, never 120 s (the lease).
    started = time.monotonic()
    done = run_exe(batchctl_exe, "wait", str(run_id), "--timeout", timeout_arg(30), env=ws.env())

    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < INTENT_SETTLE_S + scaled(10)
    assert_each_part_sent_once(ws, emu, run_id)


def test_kill_9_during_download_then_wait_again_completes_cleanly(
    ws: Any,
    start_api: Callable[..., Emulator],
    spawn: Callable[..., subprocess.Popen[str]],
    batchctl_exe: str,
    cli: Any,
) -> None:
    emu = start_api()
    ids = write_requests(ws.root / "in.jsonl", 6)
    submitted = cli("submit", "in.jsonl", "--max-requests", "2", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = submitted.json()["id"]
    emu.set_faults(
        [Fault(kind="slow", method="GET", path="/v1/files/*/content", delay=SLOW_S, count=1)]
    )

    proc = spawn("wait", str(run_id))
    wait_for(
        lambda: any(p["status"] == "completed" and not p["downloaded_at"] for p in db_parts(ws)),
        "a download",
        KILL_WAIT_S,
    )
    wait_until_held(emu, "the download")
    sigkill(proc)
    wait_for(lambda: [r for r in emu.requests if r.fault == "slow"], "the cut download")

    assert ws.sql("SELECT status FROM runs WHERE id = ?", run_id) == [("running",)]
    emu.clear_faults()
    let_dead_lease_lapse(ws, run_id)
    waited = wait_json(batchctl_exe, ws, run_id)

    assert waited["status"] == "completed"
    assert_all_succeeded(Path(waited["output"]), ids)
    assert_each_part_sent_once(ws, emu, run_id)
    assert ws.sql("PRAGMA integrity_check") == [("ok",)]
    assert ws.sql("SELECT id, status FROM runs WHERE status = 'running'") == []
    assert all(p["downloaded_at"] for p in parts_of(ws, run_id))
    leftovers = list(Path(waited["output"]).parent.glob("*.part"))
    assert leftovers == []


# --- flaky and failing APIs ------------------------------------------------------------------


def test_a_ten_part_submission_completes_through_20_percent_faults(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    emu = start_api(fault_seed=1)  # this seed's draws give every kind, in about 5 s
    emu.set_faults(
        [
            Fault(kind="429", path="/v1/*", rate=0.05, retry_after=0.1),
            Fault(kind="500", path="/v1/*", rate=0.05),
            Fault(kind="503", path="/v1/*", rate=0.05),
            Fault(kind="drop", path="/v1/*", rate=0.05),
        ]
    )
    ids = write_requests(ws.root / "in.jsonl", 20)

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    faults = {r.fault for r in emu.requests if r.fault}
    assert faults == {"429", "500", "503", "drop"}
    assert done.json()["status"] == "completed"
    assert_each_part_sent_once(ws, emu, done.json()["id"])
    assert len(emu.batches) == 10
    assert_all_succeeded(Path(done.json()["output"]), ids)


def test_a_wrong_api_key_fails_at_once_and_records_the_run_failed(
    ws: Any, cli: Any, start_api: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = start_api(key="wrong", api_key="right")
    write_requests(ws.root / "in.jsonl", 4)

    done = cli("submit", "in.jsonl", "--max-requests", "2")

    assert done.exit_code == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "401" in errors[0] and "Incorrect API key provided" in errors[0]
    assert "run 1 recorded failed; nothing was sent" in errors[0]
    assert "Traceback" not in done.stderr + done.stdout
    # failed at once: one call, not retried, and no lookup for a file it might have created
    assert [(r.method, r.path, r.status) for r in emu.requests] == [("POST", "/v1/files", 401)]
    run_id = only_run_id(ws)
    [(status, error)] = ws.sql("SELECT status, error FROM runs WHERE id = ?", run_id)
    assert status == "failed" and "Incorrect API key provided" in error
    assert ws.sql("SELECT DISTINCT status FROM parts WHERE run_id = ?", run_id) == [("not_sent",)]

    # never driven later, even with the right key: the run has ended
    monkeypatch.setenv("OPENAI_API_KEY", "right")
    waited = cli("wait", str(run_id), "--timeout", timeout_arg(20))
    assert waited.exit_code == 2
    assert "before anything was sent" in waited.stderr
    retried = cli("retry", str(run_id))
    assert retried.exit_code == 2
    assert retried.stderr.startswith(f"error: run {run_id} failed before anything was sent")
    assert [r.path for r in emu.requests] == ["/v1/files"]


def test_an_input_whose_submission_sent_nothing_is_not_a_duplicate(
    ws: Any, cli: Any, start_api: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = start_api(key="wrong", api_key="right")
    ids = write_requests(ws.root / "in.jsonl", 4)
    assert cli("submit", "in.jsonl", "--max-requests", "2").exit_code == 1

    monkeypatch.setenv("OPENAI_API_KEY", "right")
    again = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert again.exit_code == 0, again.stderr
    assert again.json()["id"] == 2
    assert_each_part_sent_once(ws, emu, 2)
    assert_all_succeeded(Path(again.json()["output"]), ids)
