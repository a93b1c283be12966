"""Ordered schema migrations for the SQLite store.

Each migration is applied once, inside one transaction, and recorded in ``schema_version``. Add a
new one at the end; never edit one that has shipped. sqlite-utils is imported only here, when a
migration actually runs, so opening an up-to-date database stays cheap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from batchctl.errors import StoreError
from batchctl.records import to_iso, utcnow

if TYPE_CHECKING:
    from sqlite_utils import Database

Migration = Callable[["Database"], None]


def _m001_initial(db: Database) -> None:
    _run_statements(
        db,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            trigger TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            items_processed INTEGER NOT NULL DEFAULT 0,
            items_failed INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            total_cost REAL NOT NULL DEFAULT 0,
            progress_done INTEGER,
            progress_total INTEGER,
            error TEXT,
            reason TEXT,
            host TEXT,
            pid INTEGER,
            lease_until TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            retry_of INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            scheduled_for TEXT
        );
        CREATE INDEX runs_by_job ON runs (job, scope, id);
        CREATE INDEX runs_by_status ON runs (status, id);

        CREATE TABLE attempts (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            error TEXT,
            exit_code INTEGER,
            PRIMARY KEY (run_id, number)
        );

        CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            from_status TEXT,
            to_status TEXT NOT NULL,
            at TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX transitions_by_run ON transitions (run_id, id);

        CREATE TABLE run_logs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            attempt INTEGER NOT NULL,
            at TEXT NOT NULL,
            level TEXT NOT NULL,
            stream TEXT NOT NULL,
            message TEXT NOT NULL,
            fields TEXT
        );
        CREATE INDEX run_logs_by_run ON run_logs (run_id, id);

        CREATE TABLE locks (
            key TEXT PRIMARY KEY,
            run_id INTEGER NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at TEXT NOT NULL,
            lease_until TEXT NOT NULL
        );
        """,
    )


def _run_statements(db: Database, script: str) -> None:
    # Not executescript(): it COMMITs first, which would break the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m002_submissions(db: Database) -> None:
    import uuid

    _run_statements(
        db,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE submissions (
            run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
            provider TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            metadata TEXT NOT NULL,
            input_sha256 TEXT NOT NULL,
            inputs TEXT NOT NULL,
            directory TEXT NOT NULL,
            token TEXT NOT NULL UNIQUE,
            requests INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            on_expired TEXT NOT NULL,
            max_request_attempts INTEGER NOT NULL,
            merged_at TEXT,
            results_path TEXT,
            lease_host TEXT,
            lease_pid INTEGER,
            lease_until TEXT
        );
        CREATE INDEX submissions_by_input ON submissions (input_sha256);

        CREATE TABLE parts (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            number INTEGER NOT NULL,
            round INTEGER NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            path TEXT NOT NULL,
            filename TEXT NOT NULL,
            status TEXT NOT NULL,
            upload_started_at TEXT,
            input_file_id TEXT,
            create_started_at TEXT,
            batch_id TEXT UNIQUE,
            output_file_id TEXT,
            error_file_id TEXT,
            request_counts TEXT,
            usage TEXT,
            errors TEXT,
            remote_created_at INTEGER,
            expires_at INTEGER,
            refreshed_at TEXT,
            downloaded_at TEXT,
            UNIQUE (run_id, number)
        );

        CREATE TABLE requests (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            custom_id TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            part_id INTEGER NOT NULL,
            line_offset INTEGER NOT NULL,
            line_length INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            outcome TEXT,
            status_code INTEGER,
            error_code TEXT,
            error_message TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            result_part_id INTEGER,
            result_kind TEXT,
            result_offset INTEGER,
            result_length INTEGER,
            PRIMARY KEY (run_id, custom_id)
        );
        CREATE INDEX requests_in_order ON requests (run_id, ordinal);
        CREATE INDEX requests_by_part ON requests (part_id);
        """,
    )
    # This database's identity, written into the metadata of every remote batch, so that two
    # databases sharing an API account never adopt each other's batches.
    db.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", [uuid.uuid4().hex])


def _m003_schedules(db: Database) -> None:
    _run_statements(
        db,
        """
        CREATE TABLE ticks (
            id INTEGER PRIMARY KEY,
            job TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT '',
            scheduled_for TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            run_id INTEGER,
            priority INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            fired_at TEXT,
            UNIQUE (job, scope, scheduled_for)
        );
        CREATE INDEX ticks_pending ON ticks (status, priority, scheduled_for);
        CREATE INDEX ticks_by_job ON ticks (job, id);

        CREATE TABLE schedule_cursors (
            job TEXT NOT NULL,
            scope TEXT NOT NULL DEFAULT '',
            last_scheduled_for TEXT NOT NULL,
            PRIMARY KEY (job, scope)
        );

        CREATE TABLE pauses (
            job TEXT PRIMARY KEY,
            paused_at TEXT NOT NULL,
            reason TEXT
        );

        CREATE TABLE daemons (
            instance TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            mode TEXT NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL,
            last_pass_at TEXT,
            stopped_at TEXT
        );

        CREATE TABLE daemon_lock (
            name TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            lease_until TEXT NOT NULL
        );
        """,
    )


def _m004_retry_index(db: Database) -> None:
    # Deleting a run sets the retry_of of its retries to NULL: without an index that is a scan
    # of every run, per run deleted (prune).
    db.table("runs").create_index(["retry_of"], index_name="runs_by_retry_of")


def _m005_claim_index(db: Database) -> None:
    # claim_ticks orders by priority DESC: an index in that order spares a sort of every
    # pending tick inside the write lock (4 ms per claim with 10,000 pending).
    from sqlite_utils.db import DescIndex

    ticks = db.table("ticks")
    ticks.drop_index("ticks_pending")
    columns = ["status", DescIndex("priority"), "scheduled_for", "id"]
    ticks.create_index(columns, index_name="ticks_pending")


def _m006_tick_claimer(db: Database) -> None:
    # Which daemon claimed a tick: if it dies before the run exists, another fires it again.
    db.table("ticks").add_column("claimed_by", str)


def _m007_attempt_process(db: Database) -> None:
    # The process group a command attempt runs in, and its leader's start time: whoever records
    # the run abandoned stops a group that outlived its killed runner (process_groups.py).
    db.table("attempts").add_column("pgid", int).add_column("pgid_started", str)


def _m008_token_details(db: Database) -> None:
    # What a price depends on besides input and output tokens: the cached part of a request's
    # input and the reasoning part of its output; and the models a run's cost leaves out for
    # want of a price (NULL: none), so that "unpriced" is never shown as $0.
    requests = db.table("requests")
    requests.add_column("cached_tokens", int, not_null_default=0)
    requests.add_column("reasoning_tokens", int, not_null_default=0)
    db.table("runs").add_column("unpriced_models", str)


def _m009_part_end(db: Database) -> None:
    # When each batch ended on the API's clock: a submission's duration is the API's, not the
    # moment batchctl next looked.
    db.table("parts").add_column("remote_ended_at", int)


def _m011_cache_writes(db: Database) -> None:
    # The part of a request's input written to the prompt cache, and of that the part kept for
    # an hour: Anthropic bills cache writes above the input price (1.25x, and 2x for an hour).
    # Number 11: migration 10 is the token hold's (issue #12), merged before this one.
    requests = db.table("requests")
    requests.add_column("cache_write_tokens", int, not_null_default=0)
    requests.add_column("cache_write_1h_tokens", int, not_null_default=0)


MIGRATIONS: list[Migration] = [
    _m001_initial,
    _m002_submissions,
    _m003_schedules,
    _m004_retry_index,
    _m005_claim_index,
    _m006_tick_claimer,
    _m007_attempt_process,
    _m008_token_details,
    _m009_part_end,
    _m011_cache_writes,
]
LATEST_VERSION = len(MIGRATIONS)


@contextmanager
def closed_on_error(
    conn: Any, driver_error: type[Exception], message: str, *, hint: str
) -> Iterator[None]:
    """Close a new connection if checking or migrating its schema fails; the driver's error
    becomes a ``StoreError`` that starts with ``message``."""
    try:
        yield
    except driver_error as exc:
        conn.close()
        raise StoreError(f"{message}: {str(exc).strip()}", hint=hint) from exc
    except BaseException:
        conn.close()
        raise


def needs_migrating(version: int, shown: str, other: str) -> bool:
    """Whether a database at schema ``version`` is older than this batchctl; an error if it is
    newer (``other``: what else ``--db`` may point at, "file" or "database")."""
    if version > LATEST_VERSION:
        raise StoreError(
            f"database {shown} has schema version {version}, newer than this batchctl "
            f"understands ({LATEST_VERSION})",
            hint=f"upgrade batchctl, or point --db at another {other}",
        )
    return version < LATEST_VERSION


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database; 0 for a new, empty file."""
    try:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every migration newer than the database, each in its own transaction."""
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        version = current_version(
            conn
        )  # re-read under the write lock: another process may have won
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, to_iso(utcnow())),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
