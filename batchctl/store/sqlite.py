"""The SQLite store: WAL, a busy timeout, foreign keys, every write in ``BEGIN IMMEDIATE``.

Reads and writes on the hot paths use the standard library's ``sqlite3`` directly so that a
command such as ``batchctl status`` opens the file in milliseconds; migrations go through
sqlite-utils (see ``migrations.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from batchctl.errors import StoreError, StoreWriteError
from batchctl.locations import create_private_file, make_private_dirs
from batchctl.records import (
    Attempt,
    LockHolder,
    LogEntry,
    LogLevel,
    Owner,
    Run,
    RunFilter,
    RunOutcome,
    RunStatus,
    Transition,
    from_iso,
    to_iso,
)
from batchctl.store import migrations
from batchctl.store.rows import RUN_COLUMNS, log_pages, run_from_row
from batchctl.store.sqlite_batches import BatchTables
from batchctl.store.sqlite_maintenance import MaintenanceTables
from batchctl.store.sqlite_schedule import ScheduleTables
from batchctl.store.transitions import record_transition

CHUNK = 1000  # rows per query when a history is streamed (status --json, logs)
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's; $BATCHCTL_BUSY_TIMEOUT

_ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.RETRYING.value)


class SQLiteStore(BatchTables, ScheduleTables, MaintenanceTables):
    """A batchctl database in one SQLite file, readable with the sqlite-utils CLI or Datasette."""

    shared = False  # one daemon per file: an flock beside it, plus the daemon_lock lease

    def __init__(self, conn: sqlite3.Connection, location: str) -> None:
        self.conn = conn
        self.location = self.shown = location  # a path holds no secret

    @classmethod
    def open(cls, location: str) -> SQLiteStore:
        path = Path(location).expanduser()
        try:
            if location != ":memory:":
                # Private to the user, as the data it holds: SQLite gives the -wal and -shm
                # files the database file's mode.
                make_private_dirs(path.parent)
                create_private_file(path)
            conn = sqlite3.connect(
                str(path), timeout=_busy_timeout(), isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            _configure(conn)
            version = migrations.current_version(conn)
            if version > migrations.LATEST_VERSION:
                raise StoreError(
                    f"database {path} has schema version {version}, newer than this batchctl "
                    f"understands ({migrations.LATEST_VERSION})",
                    hint="upgrade batchctl, or point --db at another file",
                )
            if version < migrations.LATEST_VERSION:
                migrations.migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"cannot use database {path}: {exc}",
                hint="is it a batchctl database? Another process may hold it locked",
            ) from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, str(path))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies; a deferred
        # transaction that reads and then writes would fail with SQLITE_BUSY instead of waiting.
        # Threads of one process queue on a lock first: SQLite's busy handler would make them
        # sleep 1-100 ms instead of handing over at once.
        with _process_lock(self.location):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    _roll_back(self.conn)
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _CANNOT_WRITE:
                    raise
                _roll_back(self.conn)  # a failed COMMIT may leave the transaction open
                raise StoreWriteError(
                    f"cannot write to the database {self.location}: {exc}",
                    hint="free disk space, or check the file and its directory",
                ) from exc

    # --- runs ---------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        status: RunStatus,
        max_attempts: int,
        now: datetime,
        reason: str | None = None,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        owner: Owner | None = None,
        lease_until: datetime | None = None,
    ) -> int:
        with self._write() as conn:
            return _insert_run(
                conn,
                job=job,
                scope=scope,
                trigger=trigger,
                status=status,
                max_attempts=max_attempts,
                now=now,
                reason=reason,
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                owner=owner,
                lease_until=lease_until,
            )

    def start_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        max_attempts: int,
        now: datetime,
        owner: Owner,
        lease_until: datetime,
        queued_until: datetime,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        lock: str | None = None,
    ) -> tuple[int, bool]:
        with self._write() as conn:
            free = lock is None or _get_lock(conn, lock) is None
            run_id = _insert_run(
                conn,
                job=job,
                scope=scope,
                trigger=trigger,
                status=RunStatus.QUEUED,
                max_attempts=max_attempts,
                now=now,
                reason=None,
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                owner=owner,
                lease_until=lease_until if free else queued_until,
            )
            if not free:
                return run_id, False
            if lock is not None:
                _put_lock(conn, lock, run_id, owner, lease_until, now)
            _start_attempt(conn, run_id, 1, RunStatus.QUEUED, owner, lease_until, now)
        return run_id, True

    def start_attempt(
        self, run_id: int, number: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> bool:
        with self._write() as conn:
            previous = _status_of(conn, run_id)
            if previous is None or previous.terminal:
                return False
            _start_attempt(conn, run_id, number, previous, owner, lease_until, now)
        return True

    def finish_attempt(self, run_id: int, number: int, outcome: RunOutcome, now: datetime) -> None:
        with self._write() as conn:
            _finish_attempt(conn, run_id, number, outcome, now)

    def record_attempt_process(self, run_id: int, number: int, pgid: int, started: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE attempts SET pgid = ?, pgid_started = ? WHERE run_id = ? AND number = ?",
                (pgid, started, run_id, number),
            )

    def attempt_process(self, run_id: int) -> tuple[int, int, str] | None:
        row = self.conn.execute(
            "SELECT number, pgid, pgid_started FROM attempts"
            " WHERE run_id = ? AND finished_at IS NULL AND pgid IS NOT NULL"
            " ORDER BY number DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        return (int(row[0]), int(row[1]), str(row[2])) if row else None

    def set_status(
        self,
        run_id: int,
        status: RunStatus,
        now: datetime,
        *,
        reason: str | None = None,
        only_if: Sequence[RunStatus] = (),
    ) -> bool:
        stamp = to_iso(now)
        with self._write() as conn:
            previous = _status_of(conn, run_id)
            if previous is None or (only_if and previous not in only_if):
                return False
            finished = stamp if status.terminal else None
            conn.execute(
                "UPDATE runs SET status = ?, reason = coalesce(?, reason), finished_at = ?"
                " WHERE id = ?",
                (status.value, reason, finished, run_id),
            )
            record_transition(conn, run_id, previous, status, stamp, reason)
        return True

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        now: datetime,
        *,
        attempt: int | None = None,
        lock: str | None = None,
    ) -> bool:
        stamp = to_iso(now)
        with self._write() as conn:
            previous = _status_of(conn, run_id)
            if attempt is not None:
                _finish_attempt(conn, run_id, attempt, outcome, now)
            if lock is not None:
                _delete_lock(conn, lock, run_id)
            if previous is None or previous.terminal:
                return False
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, items_processed = ?,"
                " items_failed = ?, total_tokens = ?, total_cost = ?, error = ?,"
                " lease_until = NULL WHERE id = ?",
                (
                    outcome.status.value,
                    stamp,
                    outcome.items_processed,
                    outcome.items_failed,
                    outcome.total_tokens,
                    outcome.total_cost,
                    outcome.error,
                    run_id,
                ),
            )
            record_transition(conn, run_id, previous, outcome.status, stamp, outcome.error)
        return True

    def record_progress(self, run_id: int, done: int, total: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET progress_done = ?, progress_total = ? WHERE id = ?",
                (done, total, run_id),
            )

    def renew_run(self, run_id: int, owner: Owner, lease_until: datetime) -> Run | None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET lease_until = ? WHERE id = ? AND host = ? AND pid = ?",
                (to_iso(lease_until), run_id, owner.host, owner.pid),
            )
            return _get_run(conn, run_id)

    def request_cancel(self, run_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

    def get_run(self, run_id: int) -> Run | None:
        return _get_run(self.conn, run_id)

    def list_runs(self, query: RunFilter) -> list[Run]:
        where, params = _run_where(query)
        sql = f"SELECT {RUN_COLUMNS} FROM runs{where} ORDER BY id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [run_from_row(row, from_iso) for row in self.conn.execute(sql, params)]

    def iter_runs(self, query: RunFilter, *, chunk: int = CHUNK) -> Iterator[Run]:
        # One short query per chunk (below the last id seen), not one cursor held open: no read
        # transaction lasts while the output is written (a pager may hold it for hours). NOT
        # INDEXED: walking the rowid down costs each run once over all the chunks, where the
        # job or status index would have every chunk sort all the matching runs again.
        where, params = _run_where(query)
        left = query.limit
        below: int | None = None
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            bound = "" if below is None else (" AND id < ?" if where else " WHERE id < ?")
            rows = self.conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs NOT INDEXED{where}{bound}"
                " ORDER BY id DESC LIMIT ?",
                [*params, *([] if below is None else [below]), size],
            ).fetchall()
            for row in rows:
                yield run_from_row(row, from_iso)
            if len(rows) < size:
                return
            below = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def count_runs(self, query: RunFilter) -> int:
        where, params = _run_where(query)
        return int(self.conn.execute(f"SELECT count(*) FROM runs{where}", params).fetchone()[0])

    def _runs(self, where: str, params: Sequence[Any]) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY id", params
        )
        return [run_from_row(row, from_iso) for row in rows]

    def last_run_per_job(self) -> dict[str, Run]:
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id IN (SELECT max(id) FROM runs GROUP BY job)"
        )
        return {row[1]: run_from_row(row, from_iso) for row in rows}

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT run_id, number, status, started_at, finished_at, error, exit_code "
            "FROM attempts WHERE run_id = ? ORDER BY number",
            (run_id,),
        )
        return [
            Attempt(
                run_id=row[0],
                number=row[1],
                status=RunStatus(row[2]),
                started_at=_time(row[3]),
                finished_at=from_iso(row[4]),
                error=row[5],
                exit_code=row[6],
            )
            for row in rows
        ]

    def transitions(self, run_id: int) -> list[Transition]:
        rows = self.conn.execute(
            "SELECT run_id, from_status, to_status, at, reason FROM transitions "
            "WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [
            Transition(
                run_id=row[0],
                from_status=None if row[1] is None else RunStatus(row[1]),
                to_status=RunStatus(row[2]),
                at=_time(row[3]),
                reason=row[4],
            )
            for row in rows
        ]

    # --- logs ---------------------------------------------------------------------------------
    def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO run_logs (run_id, attempt, at, level, stream, message, fields) "
                "VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        e.run_id,
                        e.attempt,
                        to_iso(e.at),
                        e.level.value,
                        e.stream,
                        e.message,
                        json.dumps(e.fields, default=str) if e.fields else None,
                    )
                    for e in entries
                ],
            )

    def logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        levels = [lvl.value for lvl in LogLevel if min_level is None or lvl.rank >= min_level.rank]
        marks = ",".join("?" * len(levels))
        rows = self.conn.execute(
            "SELECT id, run_id, attempt, at, level, stream, message, fields FROM run_logs "
            f"WHERE run_id = ? AND id > ? AND level IN ({marks}) ORDER BY id LIMIT ?",
            (run_id, after_id, *levels, -1 if limit is None else limit),
        )
        return [
            LogEntry(
                id=row[0],
                run_id=row[1],
                attempt=row[2],
                at=_time(row[3]),
                level=LogLevel(row[4]),
                stream=row[5],
                message=row[6],
                fields=json.loads(row[7]) if row[7] else {},
            )
            for row in rows
        ]

    def iter_logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        chunk: int = CHUNK,
    ) -> Iterator[LogEntry]:
        def page(run: int, after: int, level: LogLevel | None, limit: int) -> list[LogEntry]:
            return self.logs(run, after_id=after, min_level=level, limit=limit)

        return log_pages(page, run_id, after_id, min_level, chunk)

    # --- locks --------------------------------------------------------------------------------
    def try_lock(
        self, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[bool, LockHolder | None]:
        with self._write() as conn:
            holder = _get_lock(conn, key)
            if holder is not None and holder.lease_until > now:
                return False, holder
            _put_lock(conn, key, run_id, owner, lease_until, now)
        return True, holder

    def run_signal(self, run_id: int) -> tuple[RunStatus, bool] | None:
        row = self.conn.execute(
            "SELECT status, cancel_requested FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return None if row is None else (RunStatus(row[0]), bool(row[1]))

    def steal_lock(
        self,
        key: str,
        holder: LockHolder,
        run_id: int,
        owner: Owner,
        lease_until: datetime,
        now: datetime,
    ) -> bool:
        with self._write() as conn:
            current = _get_lock(conn, key)
            if current is not None and current != holder:
                return False
            _put_lock(conn, key, run_id, owner, lease_until, now)
        return True

    def renew_lock(self, key: str, run_id: int, lease_until: datetime) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE locks SET lease_until = ? WHERE key = ? AND run_id = ?",
                (to_iso(lease_until), key, run_id),
            )
        return cursor.rowcount == 1

    def release_lock(self, key: str, run_id: int) -> None:
        with self._write() as conn:
            _delete_lock(conn, key, run_id)

    def get_lock(self, key: str) -> LockHolder | None:
        return _get_lock(self.conn, key)


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(location: str) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(location, threading.Lock())


# SQLite's primary result codes for "the write did not happen": read-only, I/O error, disk full.
_CANNOT_WRITE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL})


def _roll_back(conn: sqlite3.Connection) -> None:
    # After an I/O error or a full disk SQLite may have rolled back already; the original
    # error is the one to report.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _busy_timeout() -> float:
    try:
        return float(os.environ.get("BATCHCTL_BUSY_TIMEOUT", BUSY_TIMEOUT_S))
    except ValueError:
        return BUSY_TIMEOUT_S


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(_busy_timeout() * 1000)}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def _time(text: str) -> datetime:
    moment = from_iso(text)
    assert moment is not None
    return moment


def _insert_run(
    conn: sqlite3.Connection,
    *,
    job: str,
    scope: str | None,
    trigger: str,
    status: RunStatus,
    max_attempts: int,
    now: datetime,
    reason: str | None,
    retry_of: int | None,
    scheduled_for: datetime | None,
    owner: Owner | None,
    lease_until: datetime | None,
) -> int:
    """Insert a run and its first transition; its id."""
    stamp = to_iso(now)
    cursor = conn.execute(
        "INSERT INTO runs (job, scope, status, trigger, max_attempts, created_at, "
        "finished_at, reason, retry_of, scheduled_for, host, pid, lease_until)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job,
            scope or "",
            status.value,
            trigger,
            max_attempts,
            stamp,
            stamp if status.terminal else None,
            reason,
            retry_of,
            to_iso(scheduled_for),
            owner.host if owner else None,
            owner.pid if owner else None,
            to_iso(lease_until),
        ),
    )
    run_id = int(cursor.lastrowid or 0)
    record_transition(conn, run_id, None, status, stamp, reason)
    return run_id


def _start_attempt(
    conn: sqlite3.Connection,
    run_id: int,
    number: int,
    previous: RunStatus,
    owner: Owner,
    lease_until: datetime,
    now: datetime,
) -> None:
    stamp = to_iso(now)
    conn.execute(
        "UPDATE runs SET status = 'running', attempts = ?,"
        " started_at = coalesce(started_at, ?), host = ?, pid = ?, lease_until = ?"
        " WHERE id = ?",
        (number, stamp, owner.host, owner.pid, to_iso(lease_until), run_id),
    )
    conn.execute(
        "INSERT INTO attempts (run_id, number, status, started_at) VALUES (?, ?, 'running', ?)",
        (run_id, number, stamp),
    )
    if previous is not RunStatus.RUNNING:
        record_transition(conn, run_id, previous, RunStatus.RUNNING, stamp, f"attempt {number}")


def _finish_attempt(
    conn: sqlite3.Connection, run_id: int, number: int, outcome: RunOutcome, now: datetime
) -> None:
    conn.execute(
        "UPDATE attempts SET status = ?, finished_at = ?, error = ?, exit_code = ? "
        "WHERE run_id = ? AND number = ?",
        (outcome.status.value, to_iso(now), outcome.error, outcome.exit_code, run_id, number),
    )


def _delete_lock(conn: sqlite3.Connection, key: str, run_id: int) -> None:
    conn.execute("DELETE FROM locks WHERE key = ? AND run_id = ?", (key, run_id))


def _status_of(conn: sqlite3.Connection, run_id: int) -> RunStatus | None:
    row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else RunStatus(row[0])


def _get_run(conn: sqlite3.Connection, run_id: int) -> Run | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else run_from_row(row, from_iso)


def _run_where(query: RunFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.job is not None:
        clauses.append("job = ?")
        params.append(query.job)
    if query.status:
        clauses.append(f"status IN ({','.join('?' * len(query.status))})")
        params.extend(query.status)
    if query.since is not None:
        clauses.append("created_at >= ?")
        params.append(to_iso(query.since))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _get_lock(conn: sqlite3.Connection, key: str) -> LockHolder | None:
    row = conn.execute(
        "SELECT key, run_id, host, pid, lease_until FROM locks WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    return LockHolder(
        key=row[0], run_id=row[1], owner=Owner(row[2], row[3]), lease_until=_time(row[4])
    )


def _put_lock(
    conn: sqlite3.Connection,
    key: str,
    run_id: int,
    owner: Owner,
    lease_until: datetime,
    now: datetime,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO locks (key, run_id, host, pid, acquired_at, lease_until) "
        "VALUES (?,?,?,?,?,?)",
        (key, run_id, owner.host, owner.pid, to_iso(now), to_iso(lease_until)),
    )
