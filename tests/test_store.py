"""The SQLite store: created and migrated on first use, safe with bad or foreign files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Workspace

VERSION_1_TABLES = {"runs", "attempts", "transitions", "run_logs", "locks", "schema_version"}
TABLES = VERSION_1_TABLES | {
    "meta",
    "submissions",
    "parts",
    "requests",
    "ticks",
    "schedule_cursors",
    "pauses",
    "daemons",
    "daemon_lock",
}


def _first_write(ws: Workspace, cli, *options: str) -> None:
    """Run a command that writes (a run of a job), as a first use does."""
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    result = cli(*options, "run", "j")
    assert result.exit_code == 0, result.stderr


def test_database_is_created_with_schema_version_on_first_use(ws: Workspace, cli) -> None:
    _first_write(ws, cli)
    names = {row[0] for row in ws.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names >= TABLES
    from batchctl.store.migrations import LATEST_VERSION

    assert ws.sql("SELECT max(version) FROM schema_version") == [(LATEST_VERSION,)]


def test_database_uses_wal_journal(ws: Workspace, cli) -> None:
    _first_write(ws, cli)
    assert ws.sql("PRAGMA journal_mode") == [("wal",)]


def test_database_dir_defaults_to_xdg_data_home(ws: Workspace, cli, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("BATCHCTL_DB")
    _first_write(ws, cli)
    assert (tmp_path / "home/.local/share/batchctl/batchctl.db").exists()


def test_db_option_wins_over_environment(ws: Workspace, cli, tmp_path) -> None:
    other = tmp_path / "other.db"
    _first_write(ws, cli, "--db", str(other))
    assert other.exists()
    assert not ws.db.exists()


def test_database_from_a_newer_batchctl_is_refused_untouched(ws: Workspace, cli) -> None:
    _first_write(ws, cli)
    with sqlite3.connect(ws.db) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future')")
    before = ws.db.read_bytes()
    result = cli("status")
    assert result.exit_code == 2
    assert f"error: database {ws.db} has schema version 99" in result.stderr
    assert "upgrade batchctl" in result.stderr
    assert ws.db.read_bytes() == before


def test_a_file_that_is_not_a_database_is_a_clear_error(ws: Workspace, cli) -> None:
    ws.db.write_bytes(b"this is not sqlite at all " * 100)
    before = ws.db.read_bytes()
    result = cli("status")
    assert result.exit_code == 2
    assert f"error: cannot use database {ws.db}" in result.stderr
    assert "Traceback" not in result.stderr
    assert ws.db.read_bytes() == before


@pytest.mark.parametrize("where", ["/dev/null", "a directory"])
def test_a_database_path_that_is_not_a_regular_file_is_a_clear_error(
    ws: Workspace, cli, where: str
) -> None:
    db = ws.root if where == "a directory" else Path(where)
    result = cli("--db", str(db), "status")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot open database {db}: not a regular file\n")
    assert "Traceback" not in result.stderr


def test_a_sqlite_url_is_refused_rather_than_read_as_a_path(ws: Workspace, cli) -> None:
    result = cli("--db", f"sqlite:///{ws.root}/x.db", "status")
    assert result.exit_code == 2
    assert "sqlite:// URLs are not taken" in result.stderr
    assert "postgresql://" in result.stderr
    assert not (Path.cwd() / "sqlite:").exists() and not (ws.root / "x.db").exists()


def test_run_history_is_readable_with_plain_sqlite(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "echo readable"\n')
    cli("run", "j")
    rows = ws.sql(
        "SELECT r.job, r.status, l.stream, l.message FROM runs r JOIN run_logs l ON l.run_id = r.id"
    )
    assert rows == [("j", "completed", "stdout", "readable")]


def test_an_older_database_is_migrated_in_place(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    cli("run", "j")
    with sqlite3.connect(ws.db) as conn:  # turn it back into a version-1 database
        for table in TABLES - VERSION_1_TABLES:
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX runs_by_retry_of")
        conn.execute("ALTER TABLE attempts DROP COLUMN pgid")
        conn.execute("ALTER TABLE attempts DROP COLUMN pgid_started")
        conn.execute("ALTER TABLE runs DROP COLUMN unpriced_models")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    assert cli("status", "--json").json()[0]["job"] == "j"
    names = {row[0] for row in ws.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names >= TABLES


def test_a_database_locked_by_another_process_is_a_clear_error(ws: Workspace, batchctl_exe) -> None:
    from tests.conftest import run_exe

    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    run_exe(batchctl_exe, "run", "j", env=ws.env())  # create it
    holder = sqlite3.connect(ws.db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, and not letting go
    try:
        before = holder.execute("SELECT count(*) FROM runs").fetchone()
        result = run_exe(batchctl_exe, "run", "j", env={**ws.env(), "BATCHCTL_BUSY_TIMEOUT": "1"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 2
    assert "error: the database is locked by another process" in result.stderr
    assert "Traceback" not in result.stderr
    assert ws.sql("SELECT count(*) FROM runs") == [before]
    assert ws.sql("PRAGMA integrity_check") == [("ok",)]
