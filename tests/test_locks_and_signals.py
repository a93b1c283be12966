"""Locks, concurrency policies, cancellation and signals, end to end with real processes.

Every test starts the installed ``batchctl`` console script in subprocesses against a real SQLite
file, runs real ``command`` jobs (shell snippets that sleep, trap signals or wait for a file the
test creates) and checks exit codes, output and what the database says afterwards. Nothing in
batchctl is mocked. Waiting is done by polling the database or the process table with a deadline,
never by fixed sleeps.

Commands write their shell's pid (``$$``) to a file. The command is started in its own session,
so that pid is also its process group id: "the command's process group is gone" is checked by
scanning /proc for live (non-zombie) members of that group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchctl.store import open_store
from tests.conftest import Workspace
from tests.waiting import scaled, wait_for

pytestmark = pytest.mark.slow


CANCELLED = 130
SKIPPED = 4
USAGE = 2
FAILED = 1

# A long command that records its process group (the shell's pid) and then sleeps.
SLEEPER = 'echo $$ > "pid-$BATCHCTL_RUN_ID"; sleep 30'


# --- helpers ------------------------------------------------------------------------------------


def run_row(ws: Workspace, run_id: int) -> dict[str, Any]:
    columns = ("id", "job", "status", "reason", "error", "host", "pid", "attempts")
    rows = ws.sql(f"SELECT {', '.join(columns)} FROM runs WHERE id = ?", run_id)
    assert rows, f"no run {run_id} in the database"
    return dict(zip(columns, rows[0], strict=True))


def lock_rows(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.sql("SELECT key, run_id, host, pid FROM locks ORDER BY key")


def active_runs(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.sql(
        "SELECT id, status FROM runs WHERE status IN ('queued', 'running', 'retrying') ORDER BY id"
    )


def wait_status(ws: Workspace, run_id: int, status: str, timeout: float = 5.0) -> dict[str, Any]:
    return wait_for(
        lambda: (row := run_row(ws, run_id))["status"] == status and row,
        f"run {run_id} to be {status}",
        timeout,
    )


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in the process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            state = proc_state(int(entry))
            if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def read_pid(path: Path, timeout: float = 5.0) -> int:
    def content() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    return wait_for(content, f"a pid in {path.name}", timeout)


def job_toml(name: str, command: str, **keys: str) -> str:
    lines = [f"[jobs.{name}]", 'kind = "command"', f"command = '''{command}'''"]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n\n"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class Procs:
    """Starts batchctl processes and, at teardown, kills whatever of them (and of the command
    process groups registered) is still alive, so a failing test leaves nothing behind."""

    def __init__(self, exe: str, ws: Workspace) -> None:
        self.exe = exe
        self.ws = ws
        self.started: list[subprocess.Popen[str]] = []
        self.groups: list[int] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [self.exe, *args],
            env=self.ws.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.exe, *args],
            env=self.ws.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
        )

    def group(self, pid_file: Path) -> int:
        """The process group of a command, read from the file its shell wrote ``$$`` to."""
        pgid = read_pid(pid_file)
        self.groups.append(pgid)
        return pgid

    def running_run(self, runner: subprocess.Popen[str], timeout: float = 5.0) -> int:
        """The id of the run that ``runner`` (a ``batchctl run``) is executing, once running."""

        def found() -> int | None:
            if runner.poll() is not None:
                out, err = runner.communicate()
                pytest.fail(f"batchctl run exited {runner.returncode} early:\n{out}\n{err}")
            rows = self.ws.query(
                "SELECT id FROM runs WHERE pid = ? AND status = 'running'", runner.pid
            )
            return rows[0][0] if rows else None

        return wait_for(found, f"the run of pid {runner.pid} to be running", timeout)

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def procs(batchctl_exe: str, ws: Workspace) -> Iterator[Procs]:
    registry = Procs(batchctl_exe, ws)
    try:
        yield registry
    finally:
        registry.cleanup()


def finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=scaled(timeout))
    return proc.returncode, out, err


def wait_group_gone(pgid: int, timeout: float = 3.0) -> None:
    wait_for(lambda: not group_members(pgid), f"process group {pgid} to be gone", timeout)


def wait_group_recorded(ws: Workspace, run_id: int, pgid: int) -> None:
    """Until the runner has recorded the command's process group (just after starting it)."""
    wait_for(
        lambda: ws.query("SELECT pgid FROM attempts WHERE run_id = ?", run_id) == [(pgid,)],
        f"run {run_id} to record process group {pgid}",
    )


def start_db(ws: Workspace) -> None:
    """Create and migrate the database, as the first command that writes does."""
    open_store(ws.location).close()


# --- forbid (the default) -----------------------------------------------------------------------


def test_forbid_second_run_is_skipped_naming_the_holder(ws: Workspace, procs: Procs) -> None:
    ws.write_config(
        job_toml(
            "hold",
            'echo $$ > "pid-$BATCHCTL_RUN_ID"; while [ ! -e go ]; do sleep 0.05; done; echo done',
            timeout='"20s"',
        )
    )
    first = procs.start("run", "hold")
    first_id = procs.running_run(first)

    second = procs.run("run", "hold")

    assert second.returncode == SKIPPED, second.stderr
    second_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    row = run_row(ws, second_id)
    assert row["status"] == "skipped"
    holder = run_row(ws, first_id)
    assert f"run {first_id}" in row["reason"]
    assert f"host {holder['host']}" in row["reason"]
    assert f"pid {first.pid}" in row["reason"]
    assert f"run {second_id}: locked out: run {first_id}" in second.stdout
    assert row["attempts"] == 0  # it never started an attempt
    # The first run still holds its lock and is still running, untouched.
    assert lock_rows(ws) == [("hold", first_id, holder["host"], first.pid)]
    assert run_row(ws, first_id)["status"] == "running"

    (ws.root / "go").touch()
    code, _, err = finish(first)
    assert code == 0, err
    assert run_row(ws, first_id)["status"] == "completed"
    assert lock_rows(ws) == []


def test_lock_of_killed_runner_is_recovered_and_its_run_abandoned(
    ws: Workspace, procs: Procs
) -> None:
    # The first run sleeps; any later run finds the marker and finishes at once.
    ws.write_config(
        job_toml(
            "job",
            "if [ -e first ]; then echo second; else touch first; echo $$ > pid-first; sleep 30; fi",
        )
    )
    runner = procs.start("run", "job")
    old_id = procs.running_run(runner)
    procs.group(ws.root / "pid-first")  # the orphaned command is killed at teardown
    runner.kill()
    runner.wait(timeout=scaled(5))  # reaped: its pid is gone
    assert lock_rows(ws)[0][1] == old_id  # the lock is left behind

    result = procs.run("run", "job")

    assert result.returncode == 0, result.stdout + result.stderr
    new_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    assert run_row(ws, new_id)["status"] == "completed"
    old = run_row(ws, old_id)
    assert old["status"] == "abandoned"
    assert f"pid {runner.pid}" in old["reason"]
    assert "died" in old["reason"]
    assert active_runs(ws) == []
    assert lock_rows(ws) == []


def test_the_command_of_a_killed_runner_is_stopped_when_its_run_is_abandoned(
    ws: Workspace, procs: Procs
) -> None:
    # The first run's command leads a group with a child; any later run finishes at once.
    ws.write_config(
        job_toml(
            "job",
            "if [ -e first ]; then echo second; else touch first; echo $$ > pid-first;"
            " sleep 30 & wait; fi",
        )
    )
    runner = procs.start("run", "job")
    old_id = procs.running_run(runner)
    pgid = procs.group(ws.root / "pid-first")
    wait_for(lambda: len(group_members(pgid)) == 2, "the command's shell and its child")
    wait_group_recorded(ws, old_id, pgid)
    runner.kill()
    runner.wait(timeout=scaled(5))
    assert len(group_members(pgid)) == 2  # nothing else stops the orphaned command

    result = procs.run("run", "job")

    assert result.returncode == 0, result.stdout + result.stderr
    assert run_row(ws, old_id)["status"] == "abandoned"
    wait_group_gone(pgid, timeout=1.0)  # stopped before the new run began, not by teardown
    logged = procs.run("logs", str(old_id))
    assert f"stopped its leftover process group {pgid} with SIGTERM" in logged.stdout


def test_a_run_whose_runner_died_while_queued_is_abandoned_by_the_daemon(
    ws: Workspace, procs: Procs
) -> None:
    # The start ping goes to a socket that accepts and never answers: the runner is held with
    # its run `queued` (concurrency "allow": no lock that the next run would find).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ping"
        ws.write_config(
            job_toml("job", "echo ran", concurrency='"allow"', ping_url=json.dumps(url))
        )
        runner = procs.start("run", "job")
        [(run_id, status)] = wait_for(
            lambda: ws.query("SELECT id, status FROM runs"), "the run to be recorded"
        )
        assert status == "queued"
        runner.kill()
        runner.wait(timeout=scaled(5))
    # (the ping socket is closed now: the retry's pings are refused at once)

    result = procs.run("daemon", "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    row = run_row(ws, run_id)
    assert row["status"] == "abandoned", row
    assert f"pid {runner.pid}) died" in row["reason"]
    # It never made its attempt, so the job's retry policy (one attempt) still grants it one.
    retried = ws.sql("SELECT status, trigger FROM runs WHERE retry_of = ?", run_id)
    assert retried == [("completed", "retry")]
    assert active_runs(ws) == []


# --- locks held by another host -----------------------------------------------------------------


def insert_foreign_holder(ws: Workspace, job: str, lease_until: datetime) -> int:
    """A run of ``job`` running on another host, holding the job's lock until ``lease_until``."""
    started = iso(lease_until - timedelta(seconds=30))
    with sqlite3.connect(ws.db) as conn:
        cursor = conn.execute(
            "INSERT INTO runs (job, status, trigger, attempts, created_at, started_at, host, pid,"
            " lease_until) VALUES (?, 'running', 'manual', 1, ?, ?, 'far-away-host', 4242, ?)",
            (job, started, started, iso(lease_until)),
        )
        run_id = int(cursor.lastrowid or 0)
        conn.execute(
            "INSERT INTO locks (key, run_id, host, pid, acquired_at, lease_until)"
            " VALUES (?, ?, 'far-away-host', 4242, ?, ?)",
            (job, run_id, started, iso(lease_until)),
        )
    return run_id


def test_expired_lock_of_another_host_is_taken_over(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", "echo ran"))
    start_db(ws)
    insert_foreign_holder(ws, "job", datetime.now(UTC) - timedelta(minutes=5))

    result = procs.run("run", "job")

    assert result.returncode == 0, result.stdout + result.stderr
    new_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    assert run_row(ws, new_id)["status"] == "completed"
    assert lock_rows(ws) == []  # taken over, then released when the run ended


def test_run_behind_expired_lock_of_another_host_is_recorded_abandoned(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_config(job_toml("job", "echo ran"))
    start_db(ws)
    foreign_id = insert_foreign_holder(ws, "job", datetime.now(UTC) - timedelta(minutes=5))

    result = procs.run("run", "job")

    assert result.returncode == 0, result.stdout + result.stderr
    assert run_row(ws, foreign_id)["status"] == "abandoned"
    assert active_runs(ws) == []


def test_valid_lock_of_another_host_locks_the_run_out(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", "echo ran"))
    start_db(ws)
    foreign_id = insert_foreign_holder(ws, "job", datetime.now(UTC) + timedelta(hours=1))

    result = procs.run("run", "job")

    assert result.returncode == SKIPPED, result.stdout + result.stderr
    new_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    row = run_row(ws, new_id)
    assert row["status"] == "skipped"
    assert f"run {foreign_id}" in row["reason"]
    assert "host far-away-host, pid 4242" in row["reason"]
    assert run_row(ws, foreign_id)["status"] == "running"  # never judged dead from here
    assert lock_rows(ws) == [("job", foreign_id, "far-away-host", 4242)]


# --- allow and replace --------------------------------------------------------------------------


def test_allow_lets_two_runs_of_a_job_complete_concurrently(ws: Workspace, procs: Procs) -> None:
    ws.write_config(
        job_toml(
            "job",
            "while [ ! -e go ]; do sleep 0.05; done; echo run $BATCHCTL_RUN_ID",
            concurrency='"allow"',
            timeout='"20s"',
        )
    )
    first = procs.start("run", "job")
    second = procs.start("run", "job")
    ids = {procs.running_run(first), procs.running_run(second)}
    assert len(ids) == 2
    assert lock_rows(ws) == []  # allow takes no lock
    assert len(active_runs(ws)) == 2  # both at once

    (ws.root / "go").touch()

    assert finish(first)[0] == 0
    assert finish(second)[0] == 0
    assert {run_row(ws, i)["status"] for i in ids} == {"completed"}


def test_replace_cancels_the_running_run_and_then_completes(ws: Workspace, procs: Procs) -> None:
    # Slow by nature: the running run notices the cancel request at its next heartbeat, up to
    # lease/3 = 10 s after it started (see test_cancel_request_reaches_the_runner_promptly).
    ws.write_config(
        job_toml(
            "job",
            'echo $$ > "pid-$BATCHCTL_RUN_ID";'
            " if [ -e first ]; then echo replacement; else touch first; sleep 30; fi",
            concurrency='"replace"',
            grace='"1s"',
            timeout='"25s"',
        )
    )
    old = procs.start("run", "job")
    old_id = procs.running_run(old)
    pgid = procs.group(ws.root / f"pid-{old_id}")

    new = procs.run("run", "job", timeout=20)

    assert new.returncode == 0, new.stdout + new.stderr
    new_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    assert run_row(ws, new_id)["status"] == "completed"
    old_code, _, old_err = finish(old)
    assert old_code == CANCELLED, old_err
    assert run_row(ws, old_id)["status"] == "cancelled"
    wait_group_gone(pgid, timeout=1.0)  # the shell and its sleep are gone
    assert active_runs(ws) == []
    assert lock_rows(ws) == []


# --- signals to the foreground runner -----------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_runner_cancels_the_run_and_releases_its_lock(
    ws: Workspace, procs: Procs, signum: signal.Signals
) -> None:
    ws.write_config(job_toml("job", SLEEPER, grace='"1s"', timeout='"20s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    pgid = procs.group(ws.root / f"pid-{run_id}")
    assert group_members(pgid)
    assert lock_rows(ws)[0][1] == run_id

    runner.send_signal(signum)
    code, out, err = finish(runner, timeout=5)

    assert code == CANCELLED, out + err
    assert "cancelled" in out
    detail = run_row(ws, run_id)
    assert detail["status"] == "cancelled"
    assert detail["error"] == "cancelled"
    wait_group_gone(pgid, timeout=1.0)  # the shell and its sleep are gone
    assert lock_rows(ws) == []
    logs = procs.run("logs", str(run_id))
    assert "cancel requested (interrupt)" in logs.stdout


def test_an_interrupted_attempt_is_logged_cancelled_once_with_its_cause(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_config(job_toml("job", SLEEPER, grace='"1s"', timeout='"20s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    procs.group(ws.root / f"pid-{run_id}")

    runner.send_signal(signal.SIGINT)
    finish(runner, timeout=5)

    logs = procs.run("logs", str(run_id)).stdout
    assert "attempt 1 cancelled (by Ctrl-C or SIGTERM)" in logs
    assert "cancelled: cancelled" not in logs


def test_command_ignoring_sigterm_is_killed_after_grace(ws: Workspace, procs: Procs) -> None:
    ws.write_config(
        job_toml(
            "job",
            "trap '' TERM; echo $$ > \"pid-$BATCHCTL_RUN_ID\"; sleep 30",
            grace='"1s"',
            timeout='"20s"',
        )
    )
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    pgid = procs.group(ws.root / f"pid-{run_id}")

    asked = time.monotonic()
    runner.send_signal(signal.SIGINT)
    code, out, err = finish(runner, timeout=8)
    took = time.monotonic() - asked

    assert code == CANCELLED, out + err
    assert 0.9 <= took < scaled(5), f"stopped {took:.2f}s after the interrupt; grace is 1s"
    wait_group_gone(pgid, timeout=1.0)
    detail = procs.run("status", str(run_id), "--json").stdout
    assert '"status": "cancelled"' in detail
    attempt = ws.sql("SELECT status, exit_code FROM attempts WHERE run_id = ?", run_id)
    assert attempt == [("cancelled", -signal.SIGKILL)]


def test_cancel_kills_group_members_that_outlive_the_group_leader(
    ws: Workspace, procs: Procs
) -> None:
    # The shell dies of SIGTERM at once; its background child ignores SIGTERM.
    ws.write_config(
        job_toml(
            "job",
            "(trap '' TERM; exec sleep 30) >/dev/null 2>&1 & echo $! > straggler;"
            ' echo $$ > "pid-$BATCHCTL_RUN_ID"; wait',
            grace='"1s"',
            timeout='"20s"',
        )
    )
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    pgid = procs.group(ws.root / f"pid-{run_id}")
    straggler = read_pid(ws.root / "straggler")
    assert (proc_state(straggler) or ("", 0))[1] == pgid  # in the command's group

    runner.send_signal(signal.SIGINT)
    code, out, err = finish(runner, timeout=8)

    assert code == CANCELLED, out + err
    assert run_row(ws, run_id)["status"] == "cancelled"
    wait_group_gone(pgid, timeout=2.5)  # SIGKILL after the 1 s grace reaches every member


# --- batchctl cancel ----------------------------------------------------------------------------


def test_cancel_command_stops_a_running_command_job(ws: Workspace, procs: Procs) -> None:
    # Slow by nature: the runner sees the request at its next heartbeat (lease/3 = 10 s).
    ws.write_config(job_toml("job", SLEEPER, grace='"1s"', timeout='"25s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    pgid = procs.group(ws.root / f"pid-{run_id}")

    result = procs.run("cancel", str(run_id), "--timeout", f"{scaled(15):g}", timeout=20)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run {run_id} cancelled" in result.stdout + result.stderr
    code, out, err = finish(runner, timeout=5)
    assert code == CANCELLED, out + err
    assert run_row(ws, run_id)["status"] == "cancelled"
    wait_group_gone(pgid, timeout=1.0)
    assert lock_rows(ws) == []


def test_cancel_request_reaches_the_runner_promptly(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", SLEEPER, grace='"1s"', timeout='"25s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    procs.group(ws.root / f"pid-{run_id}")

    result = procs.run("cancel", str(run_id), "--timeout", f"{scaled(3):g}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert run_row(ws, run_id)["status"] == "cancelled"


def test_an_attempt_stopped_by_batchctl_cancel_is_logged_so(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", SLEEPER, grace='"1s"', timeout='"25s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    procs.group(ws.root / f"pid-{run_id}")

    procs.run("cancel", str(run_id), "--timeout", f"{scaled(15):g}", timeout=20)
    finish(runner, timeout=5)

    assert "attempt 1 cancelled (by batchctl cancel)" in procs.run("logs", str(run_id)).stdout


def test_cancel_of_run_whose_runner_died_marks_it_cancelled_at_once(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_config(job_toml("job", SLEEPER, timeout='"20s"'))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    procs.group(ws.root / f"pid-{run_id}")
    runner.kill()
    runner.wait(timeout=scaled(5))

    asked = time.monotonic()
    result = procs.run("cancel", str(run_id))
    took = time.monotonic() - asked

    assert result.returncode == 0, result.stdout + result.stderr
    assert took < scaled(3), f"cancel took {took:.1f}s"
    row = run_row(ws, run_id)
    assert row["status"] == "cancelled"
    assert "its process had stopped" in row["reason"]
    assert lock_rows(ws) == []


def test_cancel_of_run_whose_runner_died_stops_its_command(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", SLEEPER))
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    pgid = procs.group(ws.root / f"pid-{run_id}")
    wait_group_recorded(ws, run_id, pgid)
    runner.kill()
    runner.wait(timeout=scaled(5))
    assert group_members(pgid)  # the command outlives its runner

    result = procs.run("cancel", str(run_id))

    assert result.returncode == 0, result.stdout + result.stderr
    wait_group_gone(pgid, timeout=1.0)
    assert "stopped its leftover process group" in procs.run("logs", str(run_id)).stdout


def test_cancel_of_finished_run_exits_2(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", "echo ok"))
    assert procs.run("run", "job").returncode == 0
    run_id = ws.sql("SELECT max(id) FROM runs")[0][0]

    result = procs.run("cancel", str(run_id))

    assert result.returncode == USAGE
    assert f"error: run {run_id} already finished (completed)" in result.stderr
    assert run_row(ws, run_id)["status"] == "completed"


def test_cancel_of_unknown_run_exits_2(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", "echo ok"))
    start_db(ws)

    result = procs.run("cancel", "9999")

    assert result.returncode == USAGE
    assert "error: no run with id 9999" in result.stderr


# --- timeouts -----------------------------------------------------------------------------------


def test_timeout_kills_the_command_and_fails_the_run(ws: Workspace, procs: Procs) -> None:
    ws.write_config(job_toml("job", SLEEPER, timeout='"1s"', grace='"1s"'))

    started = time.monotonic()
    result = procs.run("run", "job")
    took = time.monotonic() - started

    assert result.returncode == FAILED, result.stdout + result.stderr
    assert took < scaled(5)
    run_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    row = run_row(ws, run_id)
    assert row["status"] == "failed"
    assert "timed out" in row["error"]
    assert "timed out" in result.stdout
    wait_group_gone(read_pid(ws.root / f"pid-{run_id}"), timeout=1.0)
    assert "timed out after 1.0s" in procs.run("logs", str(run_id)).stdout
    assert lock_rows(ws) == []


def test_timeout_is_retried_when_retries_cover_timeouts(ws: Workspace, procs: Procs) -> None:
    ws.write_config(
        job_toml(
            "job",
            SLEEPER,
            timeout='"1s"',
            grace='"1s"',
            retries='{ max_attempts = 2, backoff = "0.1s", on = ["timeout"] }',
        )
    )

    result = procs.run("run", "job")

    assert result.returncode == FAILED, result.stdout + result.stderr
    run_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    detail = json.loads(procs.run("status", str(run_id), "--json").stdout)
    assert detail["status"] == "failed"
    assert detail["attempts"] == 2
    history = detail["attempt_history"]
    assert [(a["number"], a["status"], a["error"]) for a in history] == [
        (1, "failed", "timed out"),
        (2, "failed", "timed out"),
    ]
    assert [t["to"] for t in detail["transitions"]] == [
        "queued",
        "running",
        "retrying",
        "running",
        "failed",
    ]


def test_python_processor_ignoring_cancel_is_abandoned_after_grace(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_module(
        "stubborn_processor",
        """
        import time

        def process(ctx):
            # Ignores ctx.cancelled on purpose.
            end = time.monotonic() + 30
            while time.monotonic() < end:
                time.sleep(0.05)
        """,
    )
    ws.write_config(
        """
        [jobs.job]
        kind = "python"
        processor = "stubborn_processor:process"
        timeout = "0.5s"
        grace = "0.5s"
        """
    )

    started = time.monotonic()
    result = procs.run("run", "job", timeout=15)
    took = time.monotonic() - started

    assert result.returncode == FAILED, result.stdout + result.stderr
    assert took < scaled(6), f"batchctl run took {took:.1f}s"
    run_id = ws.sql("SELECT max(id) FROM runs")[0][0]
    row = run_row(ws, run_id)
    assert row["status"] == "failed"
    assert "timed out" in row["error"]
    assert "abandoned" in row["error"]
    assert active_runs(ws) == []
    assert lock_rows(ws) == []


# --- logs of a running command ------------------------------------------------------------------


def parse_log_lines(text: str) -> list[tuple[str, str]]:
    """(stream, message) of each ``batchctl logs`` line: "HH:MM:SS.mmm LEVEL STREAM MESSAGE"."""
    parsed = []
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            parsed.append((parts[2], parts[3]))
    return parsed


def test_command_output_is_in_logs_while_the_run_is_still_running(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_config(
        job_toml(
            "job",
            "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; echo out-3;"
            " while [ ! -e go ]; do sleep 0.05; done",
            timeout='"20s"',
        )
    )
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)

    def all_lines() -> list[tuple[str, str]] | None:
        lines = parse_log_lines(procs.run("logs", str(run_id)).stdout)
        return lines if len(lines) >= 5 else None

    lines = wait_for(all_lines, "five output lines in batchctl logs")

    assert runner.poll() is None
    assert run_row(ws, run_id)["status"] == "running"
    assert [m for s, m in lines if s == "stdout"] == ["out-1", "out-2", "out-3"]
    assert [m for s, m in lines if s == "stderr"] == ["err-1", "err-2"]

    (ws.root / "go").touch()
    assert finish(runner)[0] == 0


def test_logs_follow_prints_lines_as_they_come_and_exits_when_run_ends(
    ws: Workspace, procs: Procs
) -> None:
    ws.write_config(
        job_toml(
            "job",
            "echo line-1; while [ ! -e go1 ]; do sleep 0.05; done;"
            " echo line-2; while [ ! -e go2 ]; do sleep 0.05; done; echo line-3",
            timeout='"20s"',
        )
    )
    runner = procs.start("run", "job")
    run_id = procs.running_run(runner)
    follower = procs.start("logs", str(run_id), "--follow")
    seen: list[str] = []  # lines as the follower prints them, appended by the reader thread

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def saw(text: str) -> bool:
        return any(text in line for line in list(seen))

    wait_for(lambda: saw("line-1"), "line-1 from logs --follow")
    assert not saw("line-2")
    assert follower.poll() is None  # still following a running run
    (ws.root / "go1").touch()
    wait_for(lambda: saw("line-2"), "line-2 from logs --follow")
    assert follower.poll() is None
    (ws.root / "go2").touch()

    assert finish(runner)[0] == 0
    assert follower.wait(timeout=scaled(5)) == 0  # the run ended, so the follower stops by itself
    reader.join(timeout=scaled(5))
    messages = [m for s, m in parse_log_lines("".join(seen)) if s == "stdout"]
    assert messages == ["line-1", "line-2", "line-3"]
