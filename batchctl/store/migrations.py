"""Ordered schema migrations, written once for both databases; the SQLite store's runner.

Each migration is applied once, inside one transaction, and recorded in ``schema_version``. Add a
new one at the end of ``MIGRATIONS``; never edit one that has shipped. A migration is SQL with
the column types that differ between the databases left as ``{time}``, ``{big}`` and the like,
which each database fills in (``SQLITE_TYPES`` here, ``POSTGRES_TYPES`` in
``postgres_migrations``, which also has PostgreSQL's runner).
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from batchctl.errors import StoreError
from batchctl.records import to_iso, utcnow

# The column types of the migrations, written once for both databases below:
# ``serial`` a run's id (never reused), ``id`` another row's id, ``big`` a count, size or run id,
# ``time`` a time, ``real`` a cost, ``json`` a JSON value, ``false`` a flag (PostgreSQL's are in
# ``postgres_migrations``).
SQLITE_TYPES = {
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "id": "INTEGER PRIMARY KEY",
    "big": "INTEGER",
    "time": "TEXT",
    "real": "REAL",
    "json": "TEXT",
    "false": "INTEGER NOT NULL DEFAULT 0",
}

TABLES_001 = """
CREATE TABLE runs (
    id {serial},
    job TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    created_at {time} NOT NULL,
    started_at {time},
    finished_at {time},
    items_processed {big} NOT NULL DEFAULT 0,
    items_failed {big} NOT NULL DEFAULT 0,
    total_tokens {big} NOT NULL DEFAULT 0,
    total_cost {real} NOT NULL DEFAULT 0,
    progress_done {big},
    progress_total {big},
    error TEXT,
    reason TEXT,
    host TEXT,
    pid INTEGER,
    lease_until {time},
    cancel_requested {false},
    retry_of {big} REFERENCES runs(id) ON DELETE SET NULL,
    scheduled_for {time}
);
CREATE INDEX runs_by_job ON runs (job, scope, id);
CREATE INDEX runs_by_status ON runs (status, id);

CREATE TABLE attempts (
    run_id {big} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at {time} NOT NULL,
    finished_at {time},
    error TEXT,
    exit_code INTEGER,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE transitions (
    id {id},
    run_id {big} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    from_status TEXT,
    to_status TEXT NOT NULL,
    at {time} NOT NULL,
    reason TEXT
);
CREATE INDEX transitions_by_run ON transitions (run_id, id);

CREATE TABLE run_logs (
    id {id},
    run_id {big} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at {time} NOT NULL,
    level TEXT NOT NULL,
    stream TEXT NOT NULL,
    message TEXT NOT NULL,
    fields {json}
);
CREATE INDEX run_logs_by_run ON run_logs (run_id, id);

CREATE TABLE locks (
    key TEXT PRIMARY KEY,
    run_id {big} NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at {time} NOT NULL,
    lease_until {time} NOT NULL
);
"""

TABLES_002 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE submissions (
    run_id {big} PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    metadata {json} NOT NULL,
    input_sha256 TEXT NOT NULL,
    inputs {json} NOT NULL,
    directory TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    requests {big} NOT NULL,
    bytes {big} NOT NULL,
    on_expired TEXT NOT NULL,
    max_request_attempts INTEGER NOT NULL,
    merged_at {time},
    results_path TEXT,
    lease_host TEXT,
    lease_pid INTEGER,
    lease_until {time}
);
CREATE INDEX submissions_by_input ON submissions (input_sha256);

CREATE TABLE parts (
    id {id},
    run_id {big} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    round INTEGER NOT NULL,
    model TEXT NOT NULL,
    requests {big} NOT NULL,
    bytes {big} NOT NULL,
    path TEXT NOT NULL,
    filename TEXT NOT NULL,
    status TEXT NOT NULL,
    upload_started_at {time},
    input_file_id TEXT,
    create_started_at {time},
    batch_id TEXT UNIQUE,
    output_file_id TEXT,
    error_file_id TEXT,
    request_counts {json},
    usage {json},
    errors {json},
    remote_created_at {big},
    expires_at {big},
    refreshed_at {time},
    downloaded_at {time},
    UNIQUE (run_id, number)
);

CREATE TABLE requests (
    run_id {big} NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    custom_id TEXT NOT NULL,
    ordinal {big} NOT NULL,
    part_id {big} NOT NULL,
    line_offset {big} NOT NULL,
    line_length {big} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    outcome TEXT,
    status_code INTEGER,
    error_code TEXT,
    error_message TEXT,
    input_tokens {big} NOT NULL DEFAULT 0,
    output_tokens {big} NOT NULL DEFAULT 0,
    result_part_id {big},
    result_kind TEXT,
    result_offset {big},
    result_length {big},
    PRIMARY KEY (run_id, custom_id)
);
CREATE INDEX requests_in_order ON requests (run_id, ordinal);
CREATE INDEX requests_by_part ON requests (part_id);
"""

TABLES_003 = """
CREATE TABLE ticks (
    id {id},
    job TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    scheduled_for {time} NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    run_id {big},
    priority INTEGER NOT NULL DEFAULT 0,
    created_at {time} NOT NULL,
    fired_at {time},
    UNIQUE (job, scope, scheduled_for)
);
CREATE INDEX ticks_pending ON ticks (status, priority, scheduled_for);
CREATE INDEX ticks_by_job ON ticks (job, id);

CREATE TABLE schedule_cursors (
    job TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    last_scheduled_for {time} NOT NULL,
    PRIMARY KEY (job, scope)
);

CREATE TABLE pauses (
    job TEXT PRIMARY KEY,
    paused_at {time} NOT NULL,
    reason TEXT
);

CREATE TABLE daemons (
    instance TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    mode TEXT NOT NULL,
    started_at {time} NOT NULL,
    heartbeat_at {time} NOT NULL,
    last_pass_at {time},
    stopped_at {time}
);

CREATE TABLE daemon_lock (
    name TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    lease_until {time} NOT NULL
);
"""


def _indented(script: str) -> str:
    # Indented as when these scripts were written for SQLite alone, inside their functions: a
    # table's CREATE text in sqlite_master is the same whichever batchctl created it.
    return textwrap.indent(script, " " * 8)


# Every migration, written once for both databases, each filling in its column types (and
# ``{instance}``: a new uuid, in hex). From the 4th on, the statements are spelled as sqlite-utils
# wrote them when SQLite's went through it (quoted names): a table's or an index's CREATE text in
# sqlite_master is the same whichever batchctl created it.
MIGRATIONS: list[str] = [
    _indented(TABLES_001),
    # The instance: this database's identity, written into the metadata of every remote batch,
    # so that two databases sharing an API account never adopt each other's batches.
    _indented(TABLES_002) + "INSERT INTO meta (key, value) VALUES ('instance', '{instance}')",
    _indented(TABLES_003),
    # 4. Deleting a run sets the retry_of of its retries to NULL: without an index that is a
    # scan of every run, per run deleted (prune).
    'CREATE INDEX "runs_by_retry_of"\n    ON "runs" ("retry_of")',
    # 5. claim_ticks orders by priority DESC: an index in that order spares a sort of every
    # pending tick inside the write lock (4 ms per claim with 10,000 pending).
    'DROP INDEX "ticks_pending";'
    ' CREATE INDEX "ticks_pending"\n'
    '    ON "ticks" ("status", "priority" desc, "scheduled_for", "id")',
    # 6. Which daemon claimed a tick: if it dies before the run exists, another fires it again.
    'ALTER TABLE "ticks" ADD COLUMN "claimed_by" TEXT',
    # 7. The process group a command attempt runs in, and its leader's start time: whoever
    # records the run abandoned stops a group that outlived its killed runner (process_groups).
    'ALTER TABLE "attempts" ADD COLUMN "pgid" INTEGER;'
    ' ALTER TABLE "attempts" ADD COLUMN "pgid_started" TEXT',
    # 8. What a price depends on besides input and output tokens: the cached part of a
    # request's input and the reasoning part of its output; and the models a run's cost leaves
    # out for want of a price (NULL: none), so that "unpriced" is never shown as $0.
    'ALTER TABLE "requests" ADD COLUMN "cached_tokens" {big} NOT NULL DEFAULT 0;'
    ' ALTER TABLE "requests" ADD COLUMN "reasoning_tokens" {big} NOT NULL DEFAULT 0;'
    ' ALTER TABLE "runs" ADD COLUMN "unpriced_models" TEXT',
    # 9. When each batch ended on the API's clock: a submission's duration is the API's, not
    # the moment batchctl next looked.
    'ALTER TABLE "parts" ADD COLUMN "remote_ended_at" {big}',
    # 10. A part held back for the provider's enqueued-token limit (batches/quota.py): since its
    # first refusal, from when an ended batch makes room for it, its next try, why, and how
    # many refusals (which also names the batch each try creates, so a lost reply finds that
    # try's batch, not a refused one). The index serves the sum of a model's tokens in flight,
    # asked before each held send.
    'ALTER TABLE "parts" ADD COLUMN "held_since" {time};'
    ' ALTER TABLE "parts" ADD COLUMN "held_at" {time};'
    ' ALTER TABLE "parts" ADD COLUMN "held_until" {time};'
    ' ALTER TABLE "parts" ADD COLUMN "hold_reason" TEXT;'
    ' ALTER TABLE "parts" ADD COLUMN "hold_tries" INTEGER NOT NULL DEFAULT 0;'
    ' CREATE INDEX "parts_by_model"\n    ON "parts" ("model", "status")',
    # 11. The part of a request's input written to the prompt cache, and of that the part kept
    # for an hour: Anthropic bills cache writes above the input price (1.25x, and 2x for an
    # hour). Number 11: migration 10 is the token hold's (issue #12), merged before this one.
    'ALTER TABLE "requests" ADD COLUMN "cache_write_tokens" {big} NOT NULL DEFAULT 0;'
    ' ALTER TABLE "requests" ADD COLUMN "cache_write_1h_tokens" {big} NOT NULL DEFAULT 0',
    # 12. A settled submission's requests summed when it was merged (``RequestTotals`` as JSON;
    # NULL until then, and again when a retry reopens it): its summary without a pass over
    # every request at each ``results``.
    'ALTER TABLE "submissions" ADD COLUMN "totals" TEXT',
    # 13. Requests are found by their run (its custom_id, its order), never by their part
    # alone: an index of every request by part only slowed each insert (a sixth of recording
    # a submission's requests).
    'DROP INDEX "requests_by_part"',
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


def apply(
    execute: Callable[..., Any], version: int, types: Mapping[str, str], record: str, *at: Any
) -> None:
    """Apply the migrations after ``version`` with ``execute`` (the connection's), in a
    database's column types, inside the caller's transaction; ``record`` notes each in
    ``schema_version``, with the migration's number (then ``at``) as its parameters."""
    import uuid  # only when migrating: opening an up-to-date database stays cheap

    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # One statement at a time (not sqlite3's executescript(): it COMMITs first, which
        # would break the migration's transaction).
        for statement in script.format(**types, instance=uuid.uuid4().hex).split(";"):
            if statement.strip():
                execute(statement.strip())
        execute(record, (number, *at))


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
    """Apply every migration newer than the database, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        record = "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"
        # The version re-read under the write lock: another process may have won.
        apply(conn.execute, current_version(conn), SQLITE_TYPES, record, to_iso(utcnow()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
