"""Concurrency: one database shared by the daemon and busy CLI processes.

The installed ``batchctl`` executable in real processes, against one database — each test runs
on a SQLite file and on a PostgreSQL database (the ``database`` fixture; skipped, saying why,
without a test server, required on CI):

- the daemon firing a job every second while four threads loop ``status --json``, ``run`` of a
  quick command job, ``submit --json`` of a tiny unique JSONL (against the API emulator) and
  ``logs RUN_ID``, for ``$BATCHCTL_LOAD_SECONDS`` seconds (default 60, as the issue asks; it is
  60 on CI too — set the variable to shorten a local run): no "database is locked", every
  process exits 0, and nothing written is lost (every run the loop started is there and
  finished, every submission has its parts and requests, every tick the daemon fired has its
  run);
- four ``daemon --once`` started together, again and again, never fire a tick twice;
- the daemon's own worker submitting an ``openai`` job and its refresh pass never drive the
  same submission at once (xfail: they do, and parts are uploaded twice).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator, EmulatorSettings, Fault
from tests import waiting
from tests.conftest import Workspace
from tests.databases import DATABASE_ERRORS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("database")]

LOAD_SECONDS = float(os.environ.get("BATCHCTL_LOAD_SECONDS", "60"))
LOCKED = ("database is locked", "locked")


@dataclass
class Calls:
    """What the loops saw: exit codes, stderr lines that mention a lock, the slowest call."""

    lock = threading.Lock()
    codes: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, done: subprocess.CompletedProcess[str], took: float) -> None:
        with self.lock:
            self.codes[(name, done.returncode)] += 1
            self.slowest[name] = max(self.slowest.get(name, 0.0), took)
            if done.returncode != 0 or "Traceback" in done.stderr:
                self.unexpected.append(f"{name} exited {done.returncode}: {done.stderr[-500:]}")
            self.locked += [
                f"{name}: {line}"
                for line in done.stderr.splitlines()
                if any(word in line.lower() for word in LOCKED)
            ]


def start_daemon(ws: Workspace, exe: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as err:
        return subprocess.Popen(
            [exe, "daemon"],
            env=env,
            cwd=ws.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """``tests.waiting.wait_for``, reading a database that may not be there yet as not yet."""

    def tolerant() -> Any:
        try:
            return predicate()
        except (OSError, *DATABASE_ERRORS):  # the database or its tables are not there (yet)
            return None

    return waiting.wait_for(tolerant, what, timeout)


def tiny_input(path: Path) -> None:
    """Two requests whose content is new each time (so no submit is refused as a duplicate)."""
    salt = uuid.uuid4().hex
    with path.open("w") as out:
        for i in range(2):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"{salt} {i}"}],
            }
            line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")


@pytest.fixture
def emulator(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorSettings()) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield emu


LOAD_CONFIG = """\
[openai]
poll_interval = 0.2

[daemon]
poll_interval = "0.5s"

[jobs.beat]
kind = "command"
command = "echo beat"
schedule = "* * * * * */1"
timezone = "UTC"

[jobs.quick]
kind = "command"
command = "echo quick $BATCHCTL_RUN_ID"
"""


@pytest.mark.timeout(waiting.scaled(LOAD_SECONDS + 120))
def test_the_daemon_and_four_cli_loops_share_the_database_without_lock_errors_or_lost_writes(
    ws: Workspace,
    batchctl_exe: str,
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws.write_config(LOAD_CONFIG)
    env = ws.env()
    calls = Calls()
    started_runs: list[int] = []
    submitted: list[int] = []
    logs_seen: list[int] = []

    def call(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        done = subprocess.run(
            [batchctl_exe, *args],
            env=env,
            cwd=ws.root,
            capture_output=True,
            text=True,
            timeout=waiting.scaled(90),
        )
        calls.record(name, done, time.monotonic() - began)
        return done

    first = call("run", "run", "quick", "--json")  # a run for the logs loop from the start
    assert first.returncode == 0, first.stderr
    started_runs.append(json.loads(first.stdout)[0]["id"])

    daemon_log = ws.root / "daemon.log"
    daemon = start_daemon(ws, batchctl_exe, env, daemon_log)
    try:
        wait_for(lambda: "started (" in daemon_log.read_text(), "the daemon to start")
        stop = threading.Event()
        deadline = time.monotonic() + LOAD_SECONDS

        def loop(body: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        body()
                    except Exception as exc:  # an assertion in a thread: report it
                        with calls.lock:
                            calls.unexpected.append(f"{body.__name__}: {exc!r}")

            return run

        def status() -> None:
            done = call("status", "status", "--json")
            if done.returncode == 0:
                json.loads(done.stdout)

        def run_quick() -> None:
            done = call("run", "run", "quick", "--json")
            if done.returncode == 0:
                started_runs.extend(r["id"] for r in json.loads(done.stdout))

        def submit() -> None:
            path = ws.root / f"in-{uuid.uuid4().hex}.jsonl"
            tiny_input(path)
            done = call("submit", "submit", str(path), "--max-requests", "1", "--json")
            if done.returncode == 0:
                submitted.append(json.loads(done.stdout)["id"])

        def logs() -> None:
            run_id = started_runs[-1]
            done = call("logs", "logs", str(run_id))
            if done.returncode == 0:
                assert f"quick {run_id}" in done.stdout, done.stdout
                logs_seen.append(run_id)

        threads = [
            threading.Thread(target=loop(body), name=body.__name__)
            for body in (status, run_quick, submit, logs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + waiting.scaled(60))
        stop.set()
        assert not any(t.is_alive() for t in threads)
        assert daemon.poll() is None, daemon_log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=waiting.scaled(60))
    text = daemon_log.read_text()

    # Zero "database is locked", every process exited 0.
    assert calls.locked == [], calls.locked[:5]
    assert [line for line in text.splitlines() if "locked" in line.lower()] == []
    assert calls.unexpected == [], calls.unexpected[:5]
    assert code == 0, text
    assert "Traceback" not in text
    assert "ERROR" not in text, text

    # Zero lost writes: every run the loop started is there and finished.
    listed = json.loads(
        subprocess.run(
            [batchctl_exe, "status", "--json", "--no-refresh"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    by_id = {r["id"]: r for r in listed}
    assert len(started_runs) == len(set(started_runs))
    missing = [i for i in started_runs if i not in by_id]
    assert missing == []
    assert {by_id[i]["status"] for i in started_runs} == {"completed"}
    # Every submission has its parts (one request each) and its requests; each part was sent.
    for run_id in submitted:
        parts = ws.sql("SELECT batch_id, requests FROM parts WHERE run_id = ?", run_id)
        assert len(parts) == 2 and all(b and n == 1 for b, n in parts), (run_id, parts)
        requests = ws.sql("SELECT count(*) FROM requests WHERE run_id = ?", run_id)
        assert requests == [(2,)]
    assert len(emulator.batches) == 2 * len(submitted)
    # Every tick the daemon fired has its run, for that scheduled time.
    ticks = ws.sql("SELECT id, status, run_id, scheduled_for FROM ticks WHERE job = 'beat'")
    fired = [t for t in ticks if t[1] in ("fired", "skipped")]
    orphans = [t for t in fired if t[2] is None]
    assert orphans == []
    matched = ws.sql(
        "SELECT count(*) FROM ticks t JOIN runs r ON r.id = t.run_id"
        " WHERE t.job = 'beat' AND r.job = 'beat' AND r.scheduled_for = t.scheduled_for",
    )
    assert matched == [(len(fired),)]
    beats = ws.sql("SELECT count(*) FROM runs WHERE job = 'beat'")
    assert beats == [(len(fired),)]
    assert len(fired) >= LOAD_SECONDS * 0.7, len(fired)  # about one a second
    active = ws.sql("SELECT id, job, status FROM runs WHERE status IN ('queued', 'running')")
    assert [r for r in active if r[1] != "submit"] == []
    assert ws.integrity_problems() == []

    counts = {name: n for (name, _), n in sorted(calls.codes.items())}
    slowest = {name: round(s, 2) for name, s in sorted(calls.slowest.items())}
    with capsys.disabled():
        print(
            f"\nconcurrency: {LOAD_SECONDS:g}s, calls {counts}, slowest {slowest}, "
            f"{len(fired)} ticks fired, {len(started_runs)} runs, {len(submitted)} submissions, "
            f"{len(logs_seen)} logs read, 0 locked errors"
        )
    assert min(counts.values()) >= max(2, LOAD_SECONDS // 20), counts  # every loop got going


# --- claimers -------------------------------------------------------------------------------

CLAIM_CONFIG = """\
[jobs.alpha]
kind = "command"
command = "echo alpha"
schedule = "* * * * * */1"
timezone = "UTC"
scopes = ["a", "b", "c"]
catchup = "all"
concurrency = "allow"

[jobs.beta]
kind = "command"
command = "echo beta"
schedule = "* * * * * */1"
timezone = "UTC"
scopes = ["a", "b", "c"]
catchup = "all"
"""


@pytest.mark.timeout(waiting.scaled(180))
def test_four_daemon_once_started_together_never_fire_a_tick_twice(
    ws: Workspace, batchctl_exe: str
) -> None:
    ws.write_config(CLAIM_CONFIG)
    env = ws.env()
    first = subprocess.run(
        [batchctl_exe, "daemon", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=waiting.scaled(60),
    )
    assert first.returncode == 0, first.stderr  # first sight: the cursors start now
    rounds = 8
    for _ in range(rounds):
        waiting.next_second()  # a tick of each (job, scope) falls due
        procs = [
            subprocess.Popen(
                [batchctl_exe, "daemon", "--once"],
                env=env,
                cwd=ws.root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [
            (p.wait(timeout=waiting.scaled(60)), p.stderr.read() if p.stderr else "") for p in procs
        ]
        for proc in procs:
            if proc.stderr:
                proc.stderr.close()
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        assert not [err for _, err in results if "locked" in err.lower()], results
    twice = ws.sql(
        "SELECT job, scope, scheduled_for, count(*) FROM runs"
        " GROUP BY job, scope, scheduled_for HAVING count(*) > 1",
    )
    assert twice == []
    ticks = ws.sql("SELECT id, job, scope, scheduled_for, status, run_id FROM ticks")
    fired = [t for t in ticks if t[4] in ("fired", "skipped")]
    assert len(fired) >= rounds * 6, len(fired)  # each round had ticks to fight over
    # A --once pass claims what its workers can take; ticks it left pending wait for the next
    # pass, and nobody ran them yet.
    pending = {(t[1], t[2], t[3]) for t in ticks if t[4] == "pending"}
    assert [t for t in fired if t[5] is None] == []
    runs = ws.sql("SELECT id, job, scope, scheduled_for, status FROM runs")
    assert len(runs) == len(fired)
    assert not [r for r in runs if (r[1], r[2], r[3]) in pending]
    by_id = {r[0]: r for r in runs}
    assert all(by_id[t[5]][1:4] == t[1:4] for t in fired)
    assert {r[4] for r in runs} <= {"completed", "skipped"}
    assert ws.integrity_problems() == []


# --- the daemon's worker and its refresh pass ----------------------------------------------


@pytest.mark.timeout(waiting.scaled(90))
def test_the_daemons_refresh_never_drives_a_submission_its_worker_is_sending(
    ws: Workspace, batchctl_exe: str, emulator: Emulator
) -> None:
    with (ws.root / "in.jsonl").open("w") as out:
        for i in range(12):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"r {i}"}]}
            line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    # One tick, after the daemon has first seen the job however slowly it starts.
    due = datetime.now(UTC) + timedelta(seconds=waiting.scaled(8))
    ws.write_config(
        "[openai]\npoll_interval = 0.2\n\n[batches]\nmax_requests = 4\n\n"
        '[daemon]\npoll_interval = "0.2s"\n\n'
        '[jobs.feed]\nkind = "openai"\ninput = "in.jsonl"\n'
        f'schedule = "{due.minute} {due.hour} * * * {due.second}"\ntimezone = "UTC"\n'
    )
    # Each upload takes 0.5 s: the submission (three parts) is still being sent when the
    # daemon's next refresh pass (every 0.2 s) looks at the submissions in flight.
    emulator.set_faults([Fault(kind="slow", method="POST", path="/v1/files", delay=0.5)])
    log = ws.root / "daemon.log"
    daemon = start_daemon(ws, batchctl_exe, ws.env(), log)
    try:
        wait_for(
            lambda: ws.sql("SELECT merged_at FROM submissions WHERE merged_at IS NOT NULL"),
            "the daemon to submit and merge the job's batch",
            timeout=60,
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=waiting.scaled(30))
        if daemon.poll() is None:
            daemon.kill()
    names = Counter(f["filename"] for f in emulator.files.values() if f["purpose"] == "batch")
    keys = Counter(b["metadata"]["batchctl_part"] for b in emulator.batches.values())
    uploaded_twice = {name: n for name, n in names.items() if n > 1}
    created_twice = {key: n for key, n in keys.items() if n > 1}
    assert (len(names), uploaded_twice, created_twice) == (3, {}, {})
