"""Money safety of submissions: what is checked before anything is recorded, what an error
leaves, what may send (never a look), a lost reply under a wrong clock, a database that cannot
be written after batches were paid for, and retries run at the same time.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP;
processes that matter are the installed ``batchctl`` executable.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator, EmulatorSettings, Fault
from batchctl.store import open_store
from tests.batches.test_crash_safety import (
    assert_all_succeeded,
    assert_each_part_sent_once,
    effective,
    write_requests,
)
from tests.conftest import run_exe
from tests.waiting import scaled, timeout_arg, wait_for

CONFIG = """\
[openai]
poll_interval = 0.05
"""


def files_root(ws: Any) -> Path:
    return ws.root / "batchctl-files"


def runs(ws: Any) -> list[tuple[Any, ...]]:
    return ws.sql("SELECT id, status FROM runs") if ws.has_tables() else []


def sends(emu: Emulator) -> list[tuple[str, str]]:
    """The calls that upload or create (every POST of the API)."""
    return [(r.method, r.path) for r in emu.requests if r.method == "POST"]


# --- checked before anything is recorded ------------------------------------------------------


def test_a_submit_without_an_api_key_records_and_writes_nothing(
    ws: Any, cli: Any, api: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    write_requests(ws.root / "in.jsonl", 4)

    done = cli("submit", "in.jsonl")

    assert done.exit_code == 2
    assert done.stderr.startswith(
        "error: no API key for openai: the environment variable OPENAI_API_KEY"
    )
    assert runs(ws) == []
    assert ws.url is not None or not ws.db.exists()  # not even an empty database
    assert not files_root(ws).exists()
    assert api.requests == []


def test_a_dry_run_creates_no_database(ws: Any, cli: Any, api: Emulator) -> None:
    write_requests(ws.root / "in.jsonl", 4)

    done = cli("submit", "in.jsonl", "--dry-run")

    assert done.exit_code == 0, done.stderr
    assert ws.url is not None or not ws.db.exists()
    assert not files_root(ws).exists()
    assert api.requests == []


def test_a_malformed_base_url_is_refused_before_anything_is_recorded(
    ws: Any, cli: Any, api: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8089/v1")
    write_requests(ws.root / "in.jsonl", 4)

    done = cli("submit", "in.jsonl")

    assert done.exit_code == 2
    assert done.stderr.startswith(
        "error: $OPENAI_BASE_URL: 'localhost:8089/v1' is not an http(s) URL with a host"
    )
    assert runs(ws) == []
    assert ws.url is not None or not ws.db.exists()
    assert not files_root(ws).exists()


def test_a_refused_submit_leaves_no_files_directory(ws: Any, cli: Any, api: Emulator) -> None:
    (ws.root / "in.jsonl").write_text('{"custom_id": "a", "method": "POST"}\n')

    done = cli("submit", "in.jsonl")

    assert done.exit_code == 2
    assert not files_root(ws).exists()
    assert runs(ws) == []


def test_a_submit_stopped_after_sending_some_parts_says_what_was_sent_and_how_to_go_on(
    ws: Any, cli: Any, api: Emulator
) -> None:
    ws.write_config(CONFIG + "max_retries = 0\n")
    let_one_through = Fault(kind="slow", method="POST", path="/v1/files", delay=0, count=1)
    api.set_faults([let_one_through, Fault(kind="500", method="POST", path="/v1/files")])
    write_requests(ws.root / "in.jsonl", 4)

    done = cli("submit", "in.jsonl", "--max-requests", "2")

    assert done.exit_code == 1
    [error, hint] = done.stderr.splitlines()
    assert error.startswith("error: OpenAI API: HTTP 500")
    assert error.endswith("(run 1: 1 of 2 part(s) sent; the rest are not)")
    assert hint == "hint: batchctl wait 1 sends the rest, batchctl cancel 1 stops it"
    assert runs(ws) == [(1, "running")]  # a batch was paid for: it stays tracked


# --- looking never sends ----------------------------------------------------------------------


def test_status_and_results_never_send_an_unsent_submission(
    ws: Any, cli: Any, api: Emulator, batchctl_exe: str
) -> None:
    # A submit killed (kill -9) after recording its parts and before sending them.
    api.set_faults([Fault(kind="drop", method="POST", path="/v1/files")])
    write_requests(ws.root / "in.jsonl", 4)
    proc = subprocess.Popen(
        [batchctl_exe, "submit", "in.jsonl", "--max-requests", "2"],
        env=ws.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        dropped = lambda: [r for r in api.requests if r.fault == "drop"]  # noqa: E731
        wait_for(dropped, "the dropped upload", timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=scaled(10))
    api.clear_faults()
    # As time would: the dead process's lease and upload intent have lapsed.
    ws.sql("UPDATE submissions SET lease_until = '2000-01-01T00:00:00+00:00'")
    ws.sql("UPDATE parts SET upload_started_at = '2000-01-01T00:00:00+00:00'")
    before = sends(api)

    assert cli("status").exit_code == 0
    assert cli("status", "1").exit_code == 0
    assert cli("status", "--json").exit_code == 0
    results = cli("results", "1")

    assert results.exit_code == 2 and "still in progress" in results.stderr
    assert sends(api) == before
    assert runs(ws) == [(1, "running")]
    # wait is what sends it
    assert cli("wait", "1", "--json", "--timeout", timeout_arg(30)).exit_code == 0
    assert len(effective(api, "POST", "/v1/batches")) == 2


# --- a lost create reply, with the host's clock ahead of the server's -------------------------


def test_a_lost_create_reply_with_the_host_clock_ahead_makes_one_batch(
    ws: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator(EmulatorSettings(clock_offset=-180)) as emu:  # the server 3 minutes behind
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/batches", count=1)])
        ids = write_requests(ws.root / "in.jsonl", 4)

        done = cli("submit", "in.jsonl", "--wait", "--json")

        assert done.exit_code == 0, done.stderr
        assert next(r.fault for r in emu.requests if r.path == "/v1/batches") == "lost_reply"
        [(batch_id,)] = ws.sql("SELECT batch_id FROM parts")
        assert list(emu.batches) == [batch_id]
        assert_all_succeeded(Path(done.json()["output"]), ids)


def test_a_lost_upload_reply_with_the_host_clock_ahead_uploads_once(
    ws: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator(EmulatorSettings(clock_offset=-180)) as emu:  # the server 3 minutes behind
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/files", count=1)])
        write_requests(ws.root / "in.jsonl", 4)

        done = cli("submit", "in.jsonl", "--wait", "--json")

        assert done.exit_code == 0, done.stderr
        assert next(r.fault for r in emu.requests if r.path == "/v1/files") == "lost_reply"
        [(file_id,)] = ws.sql("SELECT input_file_id FROM parts")
        assert [i for i, f in emu.files.items() if f["purpose"] == "batch"] == [file_id]


# --- a database that cannot be written after batches were created -----------------------------

# Fills the database when the first batch id is recorded: the write then meets the file size
# limit the test gives the process (RLIMIT_FSIZE), a real "database or disk is full".
FILL_ON_FIRST_BATCH = """\
CREATE TABLE filler (data BLOB);
CREATE TRIGGER fill_up AFTER UPDATE OF batch_id ON parts WHEN NEW.batch_id IS NOT NULL
BEGIN INSERT INTO filler VALUES (zeroblob(64 * 1024 * 1024)); END;
"""


# Runs a command with files limited to 16 MiB (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write
# past it fails with EFBIG instead of killing the process).
SMALL_DISK = """\
import os, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_a_full_disk_after_batches_were_created_says_what_was_sent_and_wait_recovers(
    ws: Any, cli: Any, api: Emulator, batchctl_exe: str
) -> None:
    ids = write_requests(ws.root / "in.jsonl", 6)
    open_store(str(ws.db)).close()  # creates the database
    with sqlite3.connect(ws.db) as conn:
        conn.executescript(FILL_ON_FIRST_BATCH)

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SMALL_DISK,
            batchctl_exe,
            "submit",
            "in.jsonl",
            "--max-requests",
            "2",
        ],
        env=ws.env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )

    assert done.returncode == 1, done.stderr
    [error, hint] = done.stderr.splitlines()
    assert error.startswith(
        "error: run 1: 1 batch(es) were created on the API and will be paid for, but could not"
        " be recorded: cannot write to the database"
    )
    assert "nothing was run" not in done.stderr and "Traceback" not in done.stderr
    assert hint.startswith("hint: free space, then: batchctl wait 1")
    assert len(api.batches) == 1

    with sqlite3.connect(ws.db) as conn:  # space freed
        conn.executescript("DROP TRIGGER fill_up; DROP TABLE filler;")
    waited = run_exe(
        batchctl_exe, "wait", "1", "--json", "--timeout", timeout_arg(60), env=ws.env()
    )

    assert waited.returncode == 0, waited.stderr
    assert_each_part_sent_once(ws, api, 1)
    assert_all_succeeded(Path(json.loads(waited.stdout)["output"]), ids)


FILL_ON_RECORD = """\
CREATE TABLE filler (data BLOB);
CREATE TRIGGER fill_up AFTER INSERT ON submissions
BEGIN INSERT INTO filler VALUES (zeroblob(64 * 1024 * 1024)); END;
"""


def test_a_full_disk_while_recording_a_submission_leaves_no_part_files(
    ws: Any, cli: Any, api: Emulator, batchctl_exe: str
) -> None:
    write_requests(ws.root / "in.jsonl", 6)
    open_store(str(ws.db)).close()  # creates the database
    with sqlite3.connect(ws.db) as conn:
        conn.executescript(FILL_ON_RECORD)

    done = subprocess.run(
        [sys.executable, "-c", SMALL_DISK, batchctl_exe, "submit", "in.jsonl"],
        env=ws.env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot write to the database"), done.stderr
    assert runs(ws) == []
    assert not files_root(ws).exists()
    assert api.requests == []


def test_prune_removes_a_files_directory_no_run_refers_to(ws: Any, cli: Any, api: Emulator) -> None:
    write_requests(ws.root / "in.jsonl", 2)
    assert cli("submit", "in.jsonl", "--wait").exit_code == 0
    [(kept,)] = ws.sql("SELECT directory FROM submissions")
    orphan = files_root(ws) / "0123456789abcdef"  # as a submit killed before recording leaves
    orphan.mkdir()
    (orphan / "part-001.jsonl").write_text("{}\n")
    recent = files_root(ws) / "fedcba9876543210"  # maybe a submit being recorded right now
    recent.mkdir()
    staging = files_root(ws) / "inputs"  # where an openai job's input command writes
    staging.mkdir()
    old = time.time() - 40 * 86_400
    for path in (orphan, Path(kept), staging):
        os.utime(path, (old, old))

    pruned = cli("prune", "--older-than", "30d", "--json")

    assert pruned.exit_code == 0, pruned.stderr
    assert pruned.json()["orphaned_directories"] == 1
    assert not orphan.exists()
    assert Path(kept).exists() and recent.exists() and staging.exists()


# --- retries at the same time -----------------------------------------------------------------


def busy_waiting(pid: int) -> bool:
    """Whether the process sleeps in SQLite's busy handler (waiting for the write lock)."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_concurrent_retries_of_one_submission_send_once_and_count_exactly(
    ws: Any, cli: Any, monkeypatch: pytest.MonkeyPatch, batchctl_exe: str
) -> None:
    with Emulator(EmulatorSettings(request_failure_rate=0.5, request_failure_status=500)) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        write_requests(ws.root / "in.jsonl", 20)
        first = cli("submit", "in.jsonl", "--max-requests", "10", "--wait", "--json")
        assert first.exit_code == 3, first.stderr
        [(failed,)] = ws.sql("SELECT count(*) FROM requests WHERE outcome = 'failed'")
        assert 0 < failed < 20
        emu.update_settings(request_failure_rate=0.0)

        # The database is held while they start, so that all four meet at their first write.
        holder = sqlite3.connect(ws.db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        procs = [
            subprocess.Popen(
                [batchctl_exe, "retry", "1", "--failed"],
                env=ws.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            wait_for(lambda: all(busy_waiting(p.pid) for p in procs), "the retries to meet", 60)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        finished = [(p.wait(timeout=scaled(120)), *p.communicate()) for p in procs]

        codes = sorted(code for code, _, _ in finished)
        assert codes == [0, 2, 2, 2], finished
        for code, _out, err in finished:
            assert "Traceback" not in err and "internal error" not in err
            if code == 2:
                assert err.startswith("error: run 1 still has batches in flight"), err
        # one re-send: its requests counted once, one new round of parts, sent once each
        attempts = ws.sql("SELECT attempts, count(*) FROM requests GROUP BY attempts ORDER BY 1")
        assert attempts == [(1, 20 - failed), (2, failed)]
        assert ws.sql("SELECT round, count(*) FROM parts GROUP BY round ORDER BY 1")[1][0] == 2
        [(run_attempts,)] = ws.sql("SELECT attempts FROM runs WHERE id = 1")
        assert run_attempts == 2
        new_parts = ws.sql("SELECT count(*) FROM parts WHERE round = 2")[0][0]
        assert len(emu.batches) == 2 + new_parts
