"""Ctrl-C or SIGTERM while waiting for a submission stops the waiting, not the batches.

The real ``batchctl`` executable runs in a subprocess against the project's OpenAI API emulator
(in this process, over HTTP) whose batches stay in progress; the test signals it once the run is
recorded with its batches created, then checks the exit code, the message, and that the batches
still run on the API.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from batchctl.emulator import Emulator, Fault
from tests.conftest import write_chat_requests
from tests.waiting import scaled, wait_for

pytestmark = pytest.mark.slow

CANCELLED = 130
JOB_CONFIG = """\
[openai]
poll_interval = "30s"

[jobs.summarise]
kind = "openai"
input = "in.jsonl"
"""


@pytest.fixture
def slow_api(api: Emulator, ws: Any) -> Emulator:
    """The emulator with batches that stay in progress (a request every 1000 s), and a config
    with an openai job over ``in.jsonl`` (4 requests, 2 parts with ``--max-requests 2``)."""
    api.update_settings(processing_rate=0.001)
    ws.write_config(JOB_CONFIG)
    write_chat_requests(ws.root / "in.jsonl", 4)
    return api


def sent_parts(ws: Any, proc: subprocess.Popen[str]) -> list[tuple[Any, ...]] | None:
    """The run's parts once every one has its batch, else None (failing if ``proc`` ended)."""
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"batchctl exited {proc.returncode} early:\n{out}\n{err}")
    try:
        rows = ws.sql("SELECT run_id, batch_id FROM parts ORDER BY number")
    except sqlite3.Error:  # not created yet, or being migrated
        return None
    return rows if rows and all(batch for _, batch in rows) else None


def looked_at(emu: Emulator, count: int) -> bool:
    return sum(r.method == "GET" and r.path.startswith("/v1/batches/") for r in emu.requests) >= (
        count
    )


def assert_left_running(code: int, err: str, emu: Emulator, ws: Any, run_id: int) -> None:
    assert code == CANCELLED, err
    assert f"run {run_id}" in err
    assert "batches keep running" in err
    assert f"batchctl wait {run_id}" in err
    assert f"batchctl cancel {run_id}" in err
    assert "Traceback" not in err
    statuses = {b["status"] for b in emu.batches.values()}
    assert statuses <= {"validating", "in_progress"}, statuses
    assert not any(r.path.endswith("/cancel") for r in emu.requests)
    assert ws.sql("SELECT status FROM runs WHERE id = ?", run_id) == [("running",)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_during_submit_wait_leaves_the_batches_running_and_says_how_to_follow_them(
    slow_api: Emulator,
    ws: Any,
    spawn: Callable[..., subprocess.Popen[str]],
    signum: signal.Signals,
) -> None:
    proc = spawn("submit", "in.jsonl", "--max-requests", "2", "--wait")
    parts = wait_for(lambda: sent_parts(ws, proc), "the parts to be sent", timeout=60)

    proc.send_signal(signum)
    _, err = proc.communicate(timeout=scaled(30))

    assert len(parts) == 2
    assert_left_running(proc.returncode, err, slow_api, ws, parts[0][0])


def test_a_signal_during_wait_leaves_the_batches_running_and_says_how_to_follow_them(
    slow_api: Emulator,
    ws: Any,
    cli: Any,
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]
    proc = spawn("wait", str(run_id))
    wait_for(lambda: looked_at(slow_api, 1), "wait to look at the batch", timeout=60)

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=scaled(30))

    assert_left_running(proc.returncode, err, slow_api, ws, run_id)


def test_a_signal_during_run_wait_leaves_the_batches_running_and_says_how_to_follow_them(
    slow_api: Emulator, ws: Any, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    proc = spawn("run", "summarise", "--wait")
    parts = wait_for(lambda: sent_parts(ws, proc), "the parts to be sent", timeout=60)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=scaled(30))

    assert_left_running(proc.returncode, err, slow_api, ws, parts[0][0])


def test_run_of_a_batch_job_without_wait_says_how_to_follow_it(
    slow_api: Emulator, ws: Any, cli: Any
) -> None:
    done = cli("run", "summarise")

    assert done.exit_code == 0, done.stderr
    (run_id,) = {row[0] for row in ws.sql("SELECT run_id FROM parts")}
    assert f"run {run_id}: its batches go on remotely" in done.stdout
    assert f"batchctl wait {run_id}" in done.stdout
    assert f"batchctl cancel {run_id}" in done.stdout


def upload_in_flight(ws: Any, proc: subprocess.Popen[str]) -> bool:
    """Whether the run's first upload has been recorded as begun (failing if ``proc`` ended)."""
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"batchctl exited {proc.returncode} early:\n{out}\n{err}")
    try:
        return bool(ws.sql("SELECT 1 FROM parts WHERE upload_started_at IS NOT NULL"))
    except sqlite3.Error:  # not created yet, or being migrated
        return False


def test_ctrl_c_during_submit_before_any_batch_records_it_cancelled_and_spends_nothing(
    slow_api: Emulator,
    ws: Any,
    cli: Any,
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    slow_api.set_faults([Fault(kind="slow", method="POST", path="/v1/files", delay=300)])
    proc = spawn("submit", "in.jsonl")
    wait_for(lambda: upload_in_flight(ws, proc), "the first upload to begin", timeout=60)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=scaled(30))

    assert proc.returncode == CANCELLED, err
    assert err.startswith("error: interrupted before anything was sent (run 1 recorded cancelled)")
    assert "Traceback" not in err
    assert ws.sql("SELECT status FROM runs WHERE id = 1") == [("cancelled",)]
    assert slow_api.batches == {}
    slow_api.clear_faults()
    again = cli("submit", "in.jsonl", "--json")  # nothing was spent: the input is no duplicate
    assert again.exit_code == 0, again.stderr
    assert again.json()["id"] == 2


def test_ctrl_c_during_submit_after_a_batch_was_created_says_what_was_sent_and_how_to_go_on(
    slow_api: Emulator, ws: Any, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    slow_api.set_faults(
        [
            Fault(kind="slow", method="POST", path="/v1/files", delay=0, count=1),  # part 1 goes
            Fault(kind="slow", method="POST", path="/v1/files", delay=300),  # part 2 hangs
        ]
    )
    proc = spawn("submit", "in.jsonl", "--max-requests", "2")

    def second_upload_begun() -> bool:
        if not upload_in_flight(ws, proc):
            return False
        rows = ws.sql("SELECT batch_id, upload_started_at FROM parts ORDER BY number")
        return len(rows) == 2 and rows[0][0] is not None and rows[1][1] is not None

    wait_for(second_upload_begun, "part 1 created and part 2's upload begun", timeout=60)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=scaled(30))

    assert proc.returncode == CANCELLED, err
    assert err.startswith("error: interrupted (run 1: 1 of 2 part(s) sent; the rest are not)")
    assert "batchctl wait 1 sends the rest" in err
    assert ws.sql("SELECT status FROM runs WHERE id = 1") == [("running",)]  # paid: not ended
    assert len(slow_api.batches) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_during_submit_before_any_batch_records_it_cancelled_as_ctrl_c_does(
    slow_api: Emulator,
    ws: Any,
    cli: Any,
    spawn: Callable[..., subprocess.Popen[str]],
    signum: signal.Signals,
) -> None:
    slow_api.set_faults([Fault(kind="slow", method="POST", path="/v1/files", delay=300)])
    proc = spawn("submit", "in.jsonl")
    wait_for(lambda: upload_in_flight(ws, proc), "the first upload to begin", timeout=60)

    proc.send_signal(signum)
    _, err = proc.communicate(timeout=scaled(30))

    assert proc.returncode == CANCELLED, err
    assert err.startswith("error: interrupted before anything was sent (run 1 recorded cancelled)")
    assert ws.sql("SELECT status FROM runs WHERE id = 1") == [("cancelled",)]
    slow_api.clear_faults()
    again = cli("submit", "in.jsonl", "--json")  # nothing was spent: the input is no duplicate
    assert again.exit_code == 0, again.stderr
