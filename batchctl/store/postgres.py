"""The PostgreSQL store: one database shared by several hosts and several daemons.

How batchctl talks to PostgreSQL; the queries themselves are written once, for both databases,
in ``runs``, ``batches``, ``schedule`` and ``maintenance``, with ``?`` placeholders that this
module turns into psycopg's ``%s``. Chosen by ``open_store`` for ``postgresql://`` and
``postgres://`` locations; psycopg 3 is an optional extra (``pip install 'batchctl[postgres]'``)
and is imported only by this module and ``postgres_migrations.py``. Same tables
(``postgres_migrations.py``), same records back as ``SQLiteStore``.

Transactions: the connection is in autocommit mode, so a read is one statement; every write is
an explicit ``conn.transaction()`` block. Where SQLite relies on ``BEGIN IMMEDIATE`` making
writers take turns, this store says what it locks: the row (``for_update``), or for a
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
from this host's clock (``lease``). So the ``lease_until`` values read back (``Run``,
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

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from batchctl.errors import StoreError, StoreWriteError
from batchctl.records import utcnow
from batchctl.store import migrations, postgres_migrations
from batchctl.store.base import Store
from batchctl.store.rows import as_stored

CONNECT_TIMEOUT_S = 10
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


class PostgresStore(Store):
    """A batchctl database in PostgreSQL, shared by every host that points ``--db`` at it."""

    # Several daemons (on several hosts) may work on this database at once: no single-daemon
    # lock applies (ticks are inserted and claimed once, runs and submissions carry leases).
    shared = True
    clock = "now() + ?"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    greatest = "greatest"
    text_order = ' COLLATE "C"'
    no_limit = None
    in_chunk = 50_000
    seconds = "extract(epoch FROM finished_at - started_at)::float8"

    def __init__(self, conn: Any, location: str) -> None:
        self.conn = conn
        self.location = location  # with its password: threads and workers open it again
        self.shown = redact(location)
        self.psycopg = _import_psycopg()
        self.driver_error = self.psycopg.Error

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
                # libpq's text runs over lines (a tab-indented second one): an error is one line
                f"cannot connect to database {shown}: {' '.join(str(exc).split())}",
                hint="is the server running, and the URL's user, password and database right?",
            ) from exc
        with migrations.closed_on_error(
            conn,
            psycopg.Error,
            f"cannot use database {shown}",
            hint="is it a batchctl database, and may this user create tables in it?",
        ):
            _configure(conn)
            version = postgres_migrations.current_version(conn)
            if migrations.needs_migrating(version, shown, "database"):
                postgres_migrations.migrate(conn)
        return cls(conn, location)

    # --- the dialect ------------------------------------------------------------------------------
    # timestamptz: psycopg writes and reads aware datetimes itself.
    at = when = staticmethod(as_stored)

    def lease(self, until: datetime | None, now: datetime | None = None) -> timedelta | None:
        # How long a lease the caller asked for: ``until`` less the caller's ``now`` (or, when
        # the method has no ``now``, this host's clock). Both ends come from the same host's
        # clock, so the span is right whatever that clock's offset; ``clock`` then writes
        # ``now() + span``, a time on the database's clock, which every host compares against
        # the same ``now()``.
        return None if until is None else until - (utcnow() if now is None else now)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    # --- the verbs --------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        try:
            with self.conn.transaction():
                yield
        except self.psycopg.Error as exc:  # BEGIN or COMMIT: the statements translate their own
            raise self._translated(exc) from exc

    def _serialize(self, name: str) -> None:
        # A transaction-scoped advisory lock: unlike a session lock it is dropped at commit, so
        # it works behind PgBouncer's transaction mode.
        self._exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"batchctl:{name}",))

    def _sql(self, sql: str) -> str:
        return _pg(sql)

    def _copy(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        # COPY: one round trip for any number of rows (a submission may hold 50,000 a part).
        try:
            with (
                self.conn.cursor() as cursor,
                cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except self.psycopg.Error as exc:
            raise self._translated(exc) from exc

    def _translated(self, exc: Exception) -> StoreError:
        errors = self.psycopg.errors
        if isinstance(exc, errors.DiskFull | errors.IoError):
            return StoreWriteError(
                f"cannot write to the database {self.shown}: {str(exc).strip()}",
                hint="free disk space on the database server",
            )
        return StoreError(
            f"database error: {str(exc).strip()}", hint="check the --db URL and the server"
        )

    def compact(self, *, vacuum: bool = False) -> None:
        """Nothing to fold (PostgreSQL has no write-ahead log file of its own to truncate, and
        autovacuum reclaims space); with ``vacuum``, ``VACUUM (ANALYZE)`` batchctl's tables."""
        if vacuum:
            self._exec(f"VACUUM (ANALYZE) {_TABLES}")


_TABLES = (
    "runs, attempts, transitions, run_logs, locks, meta, submissions, parts, requests, ticks,"
    " schedule_cursors, pauses, daemons, daemon_lock"
)


@lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """A query with psycopg's placeholders (``%s``) for the ``?`` it is written with."""
    return sql.replace("%", "%%").replace("?", "%s")


def _configure(conn: Any) -> None:
    from psycopg.types.string import TextLoader

    conn.execute("SET TIME ZONE 'UTC'")
    # JSON columns come back as their text, decoded by the same json.loads as SQLite's.
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)
