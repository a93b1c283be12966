"""``batchctl daemon`` end to end: the installed console script in real processes, real time.

Each test writes a config with jobs on a per-second schedule (6 fields, seconds LAST), starts
``batchctl daemon`` (its log on stderr goes to a file in the workspace), and then checks what the
database says. Waiting polls with a deadline; every process a test starts — and every job process
that wrote its pid to ``pid-*`` — is killed at teardown whatever happened.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace, run_exe
from tests.daemons import Daemon, daemon_launcher
from tests.waiting import next_second, scaled, wait_for

pytestmark = pytest.mark.slow


EVERY_SECOND = "* * * * * */1"
# A long job that records its shell's pid (its process group: jobs run in their own session).
SLEEPER = 'echo $$ > "pid-$BATCHCTL_RUN_ID"; sleep 30'


def runs(ws: Workspace, job: str | None = None) -> list[dict[str, Any]]:
    columns = ("id", "job", "status", "trigger", "scheduled_for", "reason", "error")
    where, params = (" WHERE job = ?", (job,)) if job else ("", ())
    rows = ws.query(f"SELECT {', '.join(columns)} FROM runs{where} ORDER BY id", *params)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def job_toml(name: str, command: str, schedule: str | None = EVERY_SECOND, **keys: Any) -> str:
    lines = [f"[jobs.{name}]", 'kind = "command"', f"command = {command!r}"]
    if schedule:
        lines += [f'schedule = "{schedule}"', 'timezone = "UTC"']
    for key, value in keys.items():
        lines.append(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def daemon_toml(**keys: str) -> str:
    return "[daemon]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


@pytest.fixture
def start(ws: Workspace, batchctl_exe: str) -> Iterator[Callable[..., Daemon]]:
    """Start ``batchctl daemon [args]`` in the workspace; all of them are killed at teardown."""
    with daemon_launcher(ws, batchctl_exe) as launch:
        yield launch


def test_a_job_every_second_fires_about_once_a_second_and_sigterm_stops_cleanly(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    ws.write_config(job_toml("tick", "echo tick"))
    daemon = start()
    daemon.wait_started()
    wait_for(
        lambda: sum(r["status"] == "completed" for r in runs(ws)) >= 4,
        lambda: f"four ticks to run: {runs(ws)}\n{daemon.text()}",
    )
    code, took = daemon.stop()
    assert code == 0, daemon.text()
    assert took < scaled(5)
    assert "stopped" in daemon.text()
    fired = runs(ws)
    assert 4 <= len(fired) <= 6, fired
    assert {r["status"] for r in fired} == {"completed"}
    assert {r["trigger"] for r in fired} == {"schedule"}
    moments = [datetime.fromisoformat(r["scheduled_for"]) for r in fired]
    assert all(m.microsecond == 0 and m.tzinfo is not None for m in moments)
    assert [b - a for a, b in itertools.pairwise(moments)] == [timedelta(seconds=1)] * (
        len(moments) - 1
    )
    assert ws.query("SELECT count(*) FROM daemon_lock") == [(0,)]  # released at the stop
    [(stopped_at,)] = ws.query("SELECT stopped_at FROM daemons")
    assert stopped_at is not None


def test_a_second_daemon_on_the_same_database_exits_4_naming_the_holder(
    ws: Workspace, start: Callable[..., Daemon], batchctl_exe: str
) -> None:
    ws.write_config(job_toml("tick", "true"))
    first = start()
    first.wait_started()
    began = time.monotonic()
    second = run_exe(batchctl_exe, "daemon", env=ws.env(), timeout=15)
    assert time.monotonic() - began < scaled(5)
    assert second.returncode == 4, second.stderr
    error = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert error, second.stderr
    assert f"host {socket.gethostname()}" in error[0]
    assert f"pid {first.pid}" in error[0]
    assert first.process.poll() is None  # the holder is undisturbed
    assert first.stop()[0] == 0


def test_sigterm_during_a_long_run_cancels_it_after_the_grace(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    ws.write_config(daemon_toml(grace="1s") + job_toml("long", SLEEPER))
    daemon = start()
    daemon.wait_started()
    wait_for(lambda: list(ws.root.glob("pid-*")), "the long run's process to start")
    assert runs(ws)[0]["status"] == "running"
    code, took = daemon.stop()
    assert code == 0, daemon.text()
    assert took < scaled(5), daemon.text()
    fired = runs(ws)
    assert fired[0]["status"] == "cancelled"
    assert all(r["status"] in ("cancelled", "skipped") for r in fired), fired
    assert "running" not in {r["status"] for r in fired}
    assert ws.query("SELECT count(*) FROM locks") == [(0,)]


def test_sigkill_of_the_daemon_then_a_new_one_starts_at_once_and_abandons_the_run(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    # The first run sleeps; later ticks find the marker file and end at once.
    command = f"if [ -e started ]; then exit 0; fi; touch started; {SLEEPER}"
    # A long lease: the new daemon must not wait for it (the dead one's process is gone).
    ws.write_config(daemon_toml(lease="30s", grace="1s") + job_toml("long", command))
    killed = start()
    killed.wait_started()
    wait_for(lambda: list(ws.root.glob("pid-*")), "the long run's process to start")
    first_id = runs(ws)[0]["id"]
    assert runs(ws)[0]["status"] == "running"
    killed.process.kill()
    killed.process.wait(timeout=scaled(5))
    began = time.monotonic()
    second = start()
    second.wait_started()
    assert time.monotonic() - began < scaled(15), "the new daemon waited for the dead one's lease"
    wait_for(
        lambda: runs(ws)[0]["status"] == "abandoned",
        "the killed daemon's run to be abandoned",
        timeout=10,
    )
    [abandoned] = [r for r in runs(ws) if r["id"] == first_id]
    assert str(killed.pid) in (abandoned["reason"] or "")
    # The dead run's job lock does not block later ticks.
    wait_for(
        lambda: [r for r in runs(ws) if r["id"] > first_id and r["status"] == "completed"],
        lambda: f"a later tick to run: {runs(ws)}\n{second.text()}",
    )
    code, _ = second.stop()
    assert code == 0, second.text()
    assert "running" not in {r["status"] for r in runs(ws)}, runs(ws)


def test_the_job_a_killed_daemon_was_running_is_stopped_when_its_run_is_abandoned(
    ws: Workspace, start: Callable[..., Daemon], batchctl_exe: str
) -> None:
    command = f"if [ -e started ]; then exit 0; fi; touch started; {SLEEPER}"
    ws.write_config(daemon_toml(lease="3s", grace="1s") + job_toml("long", command))
    killed = start()
    killed.wait_started()
    [pid_file] = wait_for(lambda: list(ws.root.glob("pid-*")), "the long run's process to start")
    pgid = int(wait_for(lambda: pid_file.read_text().strip(), "the command's pid"))
    first_id = runs(ws)[0]["id"]
    wait_for(  # the daemon records the group just after starting the command
        lambda: ws.query("SELECT pgid FROM attempts WHERE run_id = ?", first_id) == [(pgid,)],
        "the command's process group to be recorded",
    )
    killed.process.kill()
    killed.process.wait(timeout=scaled(5))
    assert is_running(pgid)  # the job outlives the daemon that ran it
    try:
        second = start()
        second.wait_started()
        wait_for(lambda: not is_running(pgid), "the orphaned job to be stopped", timeout=10)
        code, _ = second.stop()
        assert code == 0, second.text()
        assert runs(ws)[0]["status"] == "abandoned"
        logged = run_exe(batchctl_exe, "logs", str(first_id), env=ws.env())
        assert f"stopped its leftover process group {pgid}" in logged.stdout, logged.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def once_pair(batchctl_exe: str, ws: Workspace) -> list[int]:
    """Two ``daemon --once`` started at the same moment; their exit codes."""
    processes = [
        subprocess.Popen(
            [batchctl_exe, "daemon", "--once"],
            env=ws.env(),
            cwd=ws.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    return [p.wait(timeout=scaled(20)) for p in processes]


def duplicates(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.query(
        "SELECT job, scheduled_for, count(*) FROM runs GROUP BY job, scope, scheduled_for"
        " HAVING count(*) > 1",
    )


def test_daemon_once_from_two_processes_fires_each_tick_once(
    ws: Workspace, start: Callable[..., Daemon], batchctl_exe: str
) -> None:
    ws.write_config(job_toml("tick", "echo tick"))
    assert run_exe(batchctl_exe, "daemon", "--once", env=ws.env()).returncode == 0  # first sight
    for _ in range(3):
        next_second()  # a new tick is due
        assert once_pair(batchctl_exe, ws) == [0, 0]
    alone = runs(ws)
    assert alone, "no tick fired"
    assert duplicates(ws) == []
    # And beside a full daemon.
    daemon = start()
    daemon.wait_started()
    for _ in range(3):
        next_second()  # a new tick is due
        assert once_pair(batchctl_exe, ws) == [0, 0]
    assert daemon.stop()[0] == 0
    assert len(runs(ws)) > len(alone)
    assert duplicates(ws) == []
    assert ws.query(
        "SELECT count(*) FROM ticks t JOIN runs r ON r.id = t.run_id"
        " WHERE r.scheduled_for != t.scheduled_for",
    ) == [(0,)]
    assert "running" not in {r["status"] for r in runs(ws)}


def test_ticks_claimed_ahead_and_not_started_are_pending_again_after_a_stop(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    """One worker, a backlog of due ticks of a job whose runs may overlap: after its first run
    the worker claims several ticks at once; those it has not started when the daemon stops go
    back to pending, and a new daemon fires each of them once."""
    from batchctl.store import open_store

    hold = 'if [ "$BATCHCTL_RUN_ID" = 2 ]; then touch held; sleep 2; fi'
    config = '[daemon]\nmax_workers = 1\ngrace = "30s"\n' + job_toml(
        "backlog", hold, catchup="all", max_catchup=20, concurrency="allow"
    )
    ws.write_config(config)
    store = open_store(str(ws.db))
    try:
        store.set_cursor("backlog", None, datetime.now(UTC) - timedelta(seconds=20))
    finally:
        store.close()
    daemon = start()
    daemon.wait_started()
    wait_for(lambda: (ws.root / "held").exists(), lambda: f"run 2 to start\n{daemon.text()}")
    code, _ = daemon.stop(timeout=30)
    assert code == 0, daemon.text()
    assert [r["status"] for r in runs(ws)] == ["completed", "completed"]
    claimed_unstarted = ws.query(
        "SELECT count(*) FROM ticks WHERE status = 'fired' AND run_id IS NULL"
    )
    assert claimed_unstarted == [(0,)]
    [(pending,)] = ws.query("SELECT count(*) FROM ticks WHERE status = 'pending'")
    assert pending >= 18
    (ws.root / "held").unlink()
    again = start()
    again.wait_started()
    wait_for(
        lambda: ws.query("SELECT count(*) FROM ticks WHERE status = 'pending'") == [(0,)],
        lambda: f"the pending ticks to fire: {runs(ws)}\n{again.text()}",
    )
    assert again.stop()[0] == 0
    assert duplicates(ws) == []
    assert {r["status"] for r in runs(ws)} == {"completed"}
    assert ws.query("SELECT count(*) FROM ticks WHERE status = 'fired' AND run_id IS NULL") == [
        (0,)
    ]


def count(ws: Workspace, job: str) -> int:
    return len(runs(ws, job))


def replace_config(ws: Workspace, text: str) -> None:
    """Write the config as careful tools do, by renaming a complete file over it. An in-place
    rewrite can be read half-written: the truncated, empty file is a valid config without jobs,
    and when the complete (here invalid) text is refused a moment later the daemon keeps that
    empty config — the jobs stop firing."""
    staged = ws.config.with_name(ws.config.name + ".new")
    staged.write_text(text)
    os.replace(staged, ws.config)


def test_config_changes_and_sighup_reload_and_an_invalid_config_is_refused(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    first = job_toml("a", "echo a")
    ws.write_config(first)
    daemon = start()
    daemon.wait_started()
    wait_for(lambda: count(ws, "a") >= 1, "job a to fire")
    # A job added to the file starts firing.
    replace_config(ws, first + job_toml("b", "echo b"))
    wait_for(lambda: count(ws, "b") >= 1, "the added job b to fire")
    assert "config reloaded" in daemon.text()
    # An invalid config is refused; the old jobs keep firing.
    replace_config(ws, first + job_toml("b", "echo b", schedule="61 * * * *"))
    wait_for(lambda: "config reload refused" in daemon.text(), "the reload to be refused")
    assert "jobs.b.schedule" in daemon.text()
    a_before, b_before = count(ws, "a"), count(ws, "b")
    wait_for(
        lambda: count(ws, "a") >= a_before + 2 and count(ws, "b") >= b_before + 2,
        lambda: f"the old jobs to keep firing: {runs(ws)[-4:]}\n{daemon.text()[-3000:]}",
    )
    assert daemon.process.poll() is None
    # SIGHUP reloads even when the file's mtime did not change.
    stat = ws.config.stat()
    replace_config(ws, first + job_toml("c", "echo c"))
    os.utime(ws.config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    a_before = count(ws, "a")
    wait_for(lambda: count(ws, "a") >= a_before + 2, "two more ticks (passes of the daemon)")
    assert count(ws, "c") == 0, "reloaded without SIGHUP"
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: count(ws, "c") >= 1, "job c to fire after SIGHUP")
    b_now, a_before = count(ws, "b"), count(ws, "a")
    wait_for(lambda: count(ws, "a") >= a_before + 2, "two more ticks (passes of the daemon)")
    assert count(ws, "b") <= b_now + 1  # b is gone from the config (one run may be in flight)
    code, _ = daemon.stop()
    assert code == 0, daemon.text()


def test_a_scheduled_openai_job_is_submitted_and_completed_by_the_daemon(
    ws: Workspace, start: Callable[..., Daemon]
) -> None:
    import json

    from batchctl.emulator import Emulator

    ids = [f"req-{i}" for i in range(3)]
    with (ws.root / "in.jsonl").open("w") as out:
        for custom_id in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    # One tick, a few seconds from now: after the daemon has first seen the job (else it is
    # not backfilled), however slowly the machine starts it.
    due = datetime.now(UTC) + timedelta(seconds=scaled(8))
    ws.write_config(
        "[openai]\npoll_interval = 0.2\n\n"
        + daemon_toml(poll_interval="0.2s")
        + "\n[jobs.nightly]\n"
        'kind = "openai"\n'
        'input = "in.jsonl"\n'
        f'schedule = "{due.minute} {due.hour} * * * {due.second}"\n'
        'timezone = "UTC"\n'
    )
    with Emulator() as emu:
        env = {**ws.env(), "OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "test-key"}
        daemon = start(env=env)
        daemon.wait_started()
        wait_for(lambda: runs(ws), "the tick to submit the batch", timeout=20)
        wait_for(
            lambda: runs(ws)[0]["status"] in ("completed", "failed", "partial"),
            "the daemon to close the run",
            timeout=12,
        )
        code, _ = daemon.stop()
    assert code == 0, daemon.text()
    [run] = runs(ws)
    assert (run["status"], run["trigger"]) == ("completed", "schedule"), daemon.text()
    assert run["scheduled_for"] == due.replace(microsecond=0).isoformat(timespec="microseconds")
    [(processed, merged)] = ws.query(
        "SELECT r.items_processed, s.merged_at FROM runs r JOIN submissions s ON s.run_id = r.id",
    )
    assert processed == len(ids)
    assert merged is not None
