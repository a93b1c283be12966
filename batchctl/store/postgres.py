"""The PostgreSQL store: one database shared by several hosts and several daemons.

Chosen by ``open_store`` for ``postgresql://`` and ``postgres://`` locations; psycopg 3 is an
optional extra (``pip install 'batchctl[postgres]'``) and is imported only by these
``postgres*`` modules. It implements the same ``Store`` protocol as ``SQLiteStore``, method for
method, with the same records back, over the same tables (``postgres_migrations.py``).

Transactions: the connection is in autocommit mode, so a read is one statement; every write is
an explicit ``conn.transaction()`` block. Where SQLite relies on ``BEGIN IMMEDIATE`` making
writers take turns, this store says what it locks: the row (``SELECT ... FOR UPDATE``), or for a
row that may not exist yet (a (job, scope) lock, the daemon lease) a transaction-scoped advisory
lock on its key. Ticks are inserted with ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` on
their unique (job, scope, scheduled time), so among any number of daemons exactly one inserts
each tick, and ``claim_ticks`` takes pending ticks ``FOR UPDATE SKIP LOCKED``, so two daemons
never fire the same one.

Clocks: hosts' clocks may disagree, so every LEASE is timed by the database's clock. A method
that takes a lease (a run's, a (job, scope) lock's, a submission's, the daemon's) gets
``lease_until`` and ``now`` from the caller's clock; the store keeps only their difference and
writes ``now() + that span``, and judges whether a lease has run out against ``now()`` — never
against the ``now`` argument. Methods without a ``now`` (the ``renew_*`` ones) measure the span
from this host's clock (``lease_span``). So the ``lease_until`` values read back (``Run``,
``LockHolder``, ``daemon_lock_holder``) are database times, and a test that fakes the clock can
shorten or lengthen a lease but cannot make time pass for a lease. Every other time (created,
started, finished, heartbeats, ticks' times) is the caller's ``now``, exactly as in SQLite.

Times are ``timestamptz`` (the session's time zone is UTC, so they come back as aware UTC
datetimes, equal to SQLite's); JSON values are ``json`` columns read back as text, so the same
``json.loads`` as SQLite's decodes them, key order kept.

Log ids come from a sequence: ids of one run's lines increase in the order they were written
(one process writes a run's logs), which is what ``logs(after_id=...)`` (``logs --follow``)
needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from batchctl.errors import StoreError, StoreWriteError
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
)
from batchctl.store import migrations, postgres_migrations
from batchctl.store.postgres_batches import BatchTables
from batchctl.store.postgres_common import lease_span, record_transition, serialize
from batchctl.store.postgres_maintenance import MaintenanceTables
from batchctl.store.postgres_schedule import ScheduleTables
from batchctl.store.rows import RUN_COLUMNS, as_stored, log_pages, run_from_row

if TYPE_CHECKING:
    import psycopg

    from batchctl.store.postgres_common import Conn

CONNECT_TIMEOUT_S = 10
CHUNK = 1000  # rows per query when a history is streamed (status --json, logs)
INSTALL_HINT = "pip install 'batchctl[postgres]'"


def redact(location: str) -> str:
    """The URL without its password (in the user part or a ``password=`` parameter)."""
    parts = urlsplit(location)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "PostgreSQL stores need psycopg 3, which is not installed",
            hint=f"install the extra: {INSTALL_HINT}",
        ) from exc
    return psycopg


class PostgresStore(BatchTables, ScheduleTables, MaintenanceTables):
    """A batchctl database in PostgreSQL, shared by every host that points ``--db`` at it."""

    # Several daemons (on several hosts) may work on this database at once: no single-daemon
    # lock applies (ticks are inserted and claimed once, runs and submissions carry leases).
    shared = True

    def __init__(self, conn: Conn, location: str) -> None:
        self.conn = conn
        self.location = location  # with its password: threads and workers open it again
        self.shown = redact(location)

    @classmethod
    def open(cls, location: str) -> PostgresStore:
        psycopg = _import_psycopg()
        shown = redact(location)
        options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in location:
            options["connect_timeout"] = CONNECT_TIMEOUT_S
        try:
            conn = psycopg.connect(location, **options)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to database {shown}: {str(exc).strip()}",
                hint="is the server running, and the URL's user, password and database right?",
            ) from exc
        try:
            _configure(conn)
            version = postgres_migrations.current_version(conn)
            if version > migrations.LATEST_VERSION:
                raise StoreError(
                    f"database {shown} has schema version {version}, newer than this batchctl "
                    f"understands ({migrations.LATEST_VERSION})",
                    hint="upgrade batchctl, or point --db at another database",
                )
            if version < migrations.LATEST_VERSION:
                postgres_migrations.migrate(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot use database {shown}: {str(exc).strip()}",
                hint="is it a batchctl database, and may this user create tables in it?",
            ) from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, location)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[Conn]:
        errors = _import_psycopg().errors
        try:
            with self.conn.transaction():
                yield self.conn
        except (errors.DiskFull, errors.IoError) as exc:
            raise StoreWriteError(
                f"cannot write to the database {self.shown}: {str(exc).strip()}",
                hint="free disk space on the database server",
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
            if lock is not None:
                serialize(conn, f"lock:{lock}")
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
            previous = _status_of(conn, run_id, lock=True)
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
                "UPDATE attempts SET pgid = %s, pgid_started = %s"
                " WHERE run_id = %s AND number = %s",
                (pgid, started, run_id, number),
            )

    def attempt_process(self, run_id: int) -> tuple[int, int, str] | None:
        row = self.conn.execute(
            "SELECT number, pgid, pgid_started FROM attempts"
            " WHERE run_id = %s AND finished_at IS NULL AND pgid IS NOT NULL"
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
        with self._write() as conn:
            previous = _status_of(conn, run_id, lock=True)
            if previous is None or (only_if and previous not in only_if):
                return False
            conn.execute(
                "UPDATE runs SET status = %s, reason = coalesce(%s, reason), finished_at = %s"
                " WHERE id = %s",
                (status.value, reason, now if status.terminal else None, run_id),
            )
            record_transition(conn, run_id, previous, status, now, reason)
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
        with self._write() as conn:
            previous = _status_of(conn, run_id, lock=True)
            if attempt is not None:
                _finish_attempt(conn, run_id, attempt, outcome, now)
            if lock is not None:
                _delete_lock(conn, lock, run_id)
            if previous is None or previous.terminal:
                return False
            conn.execute(
                "UPDATE runs SET status = %s, finished_at = %s, items_processed = %s,"
                " items_failed = %s, total_tokens = %s, total_cost = %s, error = %s,"
                " lease_until = NULL WHERE id = %s",
                (
                    outcome.status.value,
                    now,
                    outcome.items_processed,
                    outcome.items_failed,
                    outcome.total_tokens,
                    outcome.total_cost,
                    outcome.error,
                    run_id,
                ),
            )
            record_transition(conn, run_id, previous, outcome.status, now, outcome.error)
        return True

    def record_progress(self, run_id: int, done: int, total: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET progress_done = %s, progress_total = %s WHERE id = %s",
                (done, total, run_id),
            )

    def renew_run(self, run_id: int, owner: Owner, lease_until: datetime) -> Run | None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET lease_until = now() + %s WHERE id = %s AND host = %s AND pid = %s",
                (lease_span(lease_until), run_id, owner.host, owner.pid),
            )
            return _get_run(conn, run_id)

    def request_cancel(self, run_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET cancel_requested = true WHERE id = %s", (run_id,))

    def get_run(self, run_id: int) -> Run | None:
        return _get_run(self.conn, run_id)

    def list_runs(self, query: RunFilter) -> list[Run]:
        where, params = _run_where(query)
        sql = f"SELECT {RUN_COLUMNS} FROM runs{where} ORDER BY id DESC"
        if query.limit is not None:
            sql += " LIMIT %s"
            params.append(query.limit)
        return [run_from_row(row, as_stored) for row in self.conn.execute(sql, params)]

    def iter_runs(self, query: RunFilter, *, chunk: int = CHUNK) -> Iterator[Run]:
        # One query per chunk (below the last id seen): psycopg's client-side cursor would load
        # the whole result, and a server-side one would hold a transaction open meanwhile. With
        # its statistics the planner walks the primary key down for a common job or status and
        # takes their index (a small sort) for a rare one, so no chunk re-sorts the history.
        where, params = _run_where(query)
        left = query.limit
        below: int | None = None
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            bound = "" if below is None else (" AND id < %s" if where else " WHERE id < %s")
            rows = self.conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs{where}{bound} ORDER BY id DESC LIMIT %s",
                [*params, *([] if below is None else [below]), size],
            ).fetchall()
            for row in rows:
                yield run_from_row(row, as_stored)
            if len(rows) < size:
                return
            below = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def count_runs(self, query: RunFilter) -> int:
        where, params = _run_where(query)
        row = self.conn.execute(f"SELECT count(*) FROM runs{where}", params).fetchone()
        return int(row[0]) if row else 0

    def _runs(self, where: str, params: Sequence[Any]) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY id", params
        )
        return [run_from_row(row, as_stored) for row in rows]

    def last_run_per_job(self) -> dict[str, Run]:
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id IN (SELECT max(id) FROM runs GROUP BY job)"
        )
        return {row[1]: run_from_row(row, as_stored) for row in rows}

    def attempts(self, run_id: int) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT run_id, number, status, started_at, finished_at, error, exit_code"
            " FROM attempts WHERE run_id = %s ORDER BY number",
            (run_id,),
        )
        return [
            Attempt(
                run_id=row[0],
                number=row[1],
                status=RunStatus(row[2]),
                started_at=row[3],
                finished_at=row[4],
                error=row[5],
                exit_code=row[6],
            )
            for row in rows
        ]

    def transitions(self, run_id: int) -> list[Transition]:
        rows = self.conn.execute(
            "SELECT run_id, from_status, to_status, at, reason FROM transitions"
            " WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        return [
            Transition(
                run_id=row[0],
                from_status=None if row[1] is None else RunStatus(row[1]),
                to_status=RunStatus(row[2]),
                at=row[3],
                reason=row[4],
            )
            for row in rows
        ]

    # --- logs ---------------------------------------------------------------------------------
    def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        with self._write() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO run_logs (run_id, attempt, at, level, stream, message, fields)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                [
                    (
                        e.run_id,
                        e.attempt,
                        e.at,
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
        rows = self.conn.execute(
            "SELECT id, run_id, attempt, at, level, stream, message, fields FROM run_logs"
            " WHERE run_id = %s AND id > %s AND level = ANY(%s) ORDER BY id LIMIT %s",
            (run_id, after_id, levels, limit),
        )
        return [
            LogEntry(
                id=row[0],
                run_id=row[1],
                attempt=row[2],
                at=row[3],
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
            serialize(conn, f"lock:{key}")
            holder = _get_lock(conn, key)
            if holder is not None and _lease_alive(conn, holder.lease_until):
                return False, holder
            _put_lock(conn, key, run_id, owner, lease_until, now)
        return True, holder

    def run_signal(self, run_id: int) -> tuple[RunStatus, bool] | None:
        row = self.conn.execute(
            "SELECT status, cancel_requested FROM runs WHERE id = %s", (run_id,)
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
            serialize(conn, f"lock:{key}")
            current = _get_lock(conn, key)
            if current is not None and current != holder:
                return False
            _put_lock(conn, key, run_id, owner, lease_until, now)
        return True

    def renew_lock(self, key: str, run_id: int, lease_until: datetime) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE locks SET lease_until = now() + %s WHERE key = %s AND run_id = %s",
                (lease_span(lease_until), key, run_id),
            )
            return cursor.rowcount == 1

    def release_lock(self, key: str, run_id: int) -> None:
        with self._write() as conn:
            _delete_lock(conn, key, run_id)

    def get_lock(self, key: str) -> LockHolder | None:
        return _get_lock(self.conn, key)


def _configure(conn: psycopg.Connection[Any]) -> None:
    from psycopg.types.string import TextLoader

    conn.execute("SET TIME ZONE 'UTC'")
    # JSON columns come back as their text, decoded by the same json.loads as SQLite's.
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


def _lease_alive(conn: Conn, lease_until: datetime) -> bool:
    row = conn.execute("SELECT %s > now()", (lease_until,)).fetchone()
    return bool(row and row[0])


def _insert_run(
    conn: Conn,
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
    row = conn.execute(
        "INSERT INTO runs (job, scope, status, trigger, max_attempts, created_at,"
        " finished_at, reason, retry_of, scheduled_for, host, pid, lease_until)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, now() + %s) RETURNING id",
        (
            job,
            scope or "",
            status.value,
            trigger,
            max_attempts,
            now,
            now if status.terminal else None,
            reason,
            retry_of,
            scheduled_for,
            owner.host if owner else None,
            owner.pid if owner else None,
            lease_span(lease_until, now) if lease_until is not None else None,
        ),
    ).fetchone()
    assert row is not None
    run_id = int(row[0])
    record_transition(conn, run_id, None, status, now, reason)
    return run_id


def _start_attempt(
    conn: Conn,
    run_id: int,
    number: int,
    previous: RunStatus,
    owner: Owner,
    lease_until: datetime,
    now: datetime,
) -> None:
    conn.execute(
        "UPDATE runs SET status = 'running', attempts = %s,"
        " started_at = coalesce(started_at, %s), host = %s, pid = %s,"
        " lease_until = now() + %s WHERE id = %s",
        (number, now, owner.host, owner.pid, lease_span(lease_until, now), run_id),
    )
    conn.execute(
        "INSERT INTO attempts (run_id, number, status, started_at) VALUES (%s, %s, 'running', %s)",
        (run_id, number, now),
    )
    if previous is not RunStatus.RUNNING:
        record_transition(conn, run_id, previous, RunStatus.RUNNING, now, f"attempt {number}")


def _finish_attempt(
    conn: Conn, run_id: int, number: int, outcome: RunOutcome, now: datetime
) -> None:
    conn.execute(
        "UPDATE attempts SET status = %s, finished_at = %s, error = %s, exit_code = %s"
        " WHERE run_id = %s AND number = %s",
        (outcome.status.value, now, outcome.error, outcome.exit_code, run_id, number),
    )


def _delete_lock(conn: Conn, key: str, run_id: int) -> None:
    conn.execute("DELETE FROM locks WHERE key = %s AND run_id = %s", (key, run_id))


def _status_of(conn: Conn, run_id: int, *, lock: bool = False) -> RunStatus | None:
    sql = "SELECT status FROM runs WHERE id = %s" + (" FOR UPDATE" if lock else "")
    row = conn.execute(sql, (run_id,)).fetchone()
    return None if row is None else RunStatus(row[0])


def _get_run(conn: Conn, run_id: int) -> Run | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,)).fetchone()
    return None if row is None else run_from_row(row, as_stored)


def _run_where(query: RunFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.job is not None:
        clauses.append("job = %s")
        params.append(query.job)
    if query.status:
        clauses.append("status = ANY(%s)")
        params.append(list(query.status))
    if query.since is not None:
        clauses.append("created_at >= %s")
        params.append(query.since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _get_lock(conn: Conn, key: str) -> LockHolder | None:
    row = conn.execute(
        "SELECT key, run_id, host, pid, lease_until FROM locks WHERE key = %s", (key,)
    ).fetchone()
    if row is None:
        return None
    return LockHolder(key=row[0], run_id=row[1], owner=Owner(row[2], row[3]), lease_until=row[4])


def _put_lock(
    conn: Conn, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
) -> None:
    conn.execute(
        "INSERT INTO locks (key, run_id, host, pid, acquired_at, lease_until)"
        " VALUES (%s, %s, %s, %s, %s, now() + %s)"
        " ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, host = excluded.host,"
        " pid = excluded.pid, acquired_at = excluded.acquired_at,"
        " lease_until = excluded.lease_until",
        (key, run_id, owner.host, owner.pid, now, lease_span(lease_until, now)),
    )
