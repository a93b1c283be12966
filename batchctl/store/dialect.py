"""How the queries talk to a database: the few verbs, and the dialect words a back end overrides.

The store is cut between *what to ask* and *how to talk*. The query modules (``runs``,
``batches``, ``schedule``, ``maintenance``) write every statement once, with ``?`` placeholders,
against the members of ``Tables`` below, which runs them on the driver's connection (DB-API:
sqlite3's and psycopg's alike); ``SQLiteStore`` and ``PostgresStore`` give the connection and
what they spell otherwise. A difference between the databases is one attribute or one method
here, never a second copy of a query. Every verb turns the driver's errors into batchctl's own
(``StoreError``, ``StoreWriteError``), so no code outside the store knows which driver is below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing
from datetime import datetime
from typing import Any

from batchctl.errors import StoreError
from batchctl.records import RunStatus, from_iso, to_iso
from batchctl.store.rows import Columns, R, TimeReader

Row = Sequence[Any]


class Tables:
    """The members every query module uses: SQLite's spelling unless a back end overrides it."""

    location: str
    shown: str

    # --- dialect words ----------------------------------------------------------------------------
    # Most defaults are SQLite's spelling; each back end overrides what it spells otherwise.
    # The SQL of a lease time, with one ``?`` whose parameter is ``lease(until, now)``: the
    # caller's time in SQLite, ``now() + span`` on the database's clock in PostgreSQL. A lease
    # is judged against ``clock`` with ``lease(now, now)``: the current time on that clock.
    clock = "?"
    for_update = ""  # locks the row a write transaction reads and then changes
    skip_locked = ""  # claims rows another writer has not locked, without waiting for it
    greatest = "max"  # the larger of two values
    text_order = ""  # orders text byte by byte, whatever the database's locale
    no_limit: int | None = -1  # a LIMIT that limits nothing
    runs_newest_first = "runs"  # the runs table as walked newest first, chunk by chunk
    in_chunk = 500  # values of one IN list (SQLite caps the parameters of a statement)
    # Seconds from started_at to finished_at.
    seconds = "(julianday(finished_at) - julianday(started_at)) * 86400.0"

    # A time as a query parameter, and a time column as read back (static: called per row).
    # SQLite's: ISO 8601 text, UTC, microseconds: fixed width, so text order is time order.
    at: Callable[[datetime | None], Any] = staticmethod(to_iso)
    when: TimeReader = staticmethod(from_iso)

    def lease(self, until: datetime | None, now: datetime | None = None) -> Any:
        """The parameter of ``clock`` for a lease to ``until`` (asked for at ``now``, by the
        caller's clock; this host's when the method has none): in SQLite, ``until`` itself."""
        return to_iso(until)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column`` is one of ``values``: the SQL condition and its parameters."""
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    # --- verbs ---------------------------------------------------------------------------------
    # The driver's connection (``execute`` returns a cursor), the base class of its errors, which
    # ``_translated`` turns into batchctl's, and a query as the driver takes it (``_sql``: the
    # queries are written with ``?``, which psycopg spells ``%s``).
    conn: Any
    driver_error: type[Exception]

    def _sql(self, sql: str) -> str:
        return sql

    def _translated(self, exc: Exception) -> StoreError:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[None]:
        """One write transaction: writers take turns, and it is rolled back on any error."""
        raise NotImplementedError

    def _serialize(self, name: str) -> None:
        """Writers of the key ``name`` (a lock, the daemon lease) take turns until the end of
        this write transaction, even when its row does not exist yet."""

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        # fetchall: in SQLite a statement with RETURNING is complete only once stepped to its end.
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows: list[Row] = self.conn.execute(self._sql(sql), params).fetchall()
        except self.driver_error as exc:
            raise self._translated(exc) from exc
        return rows

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
        """The rows one by one, without loading them all first where the driver can (psycopg's
        client-side cursor has the whole result already)."""
        try:
            yield from self.conn.execute(self._sql(sql), params)
        except self.driver_error as exc:
            raise self._translated(exc) from exc

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        try:
            changed: int = self.conn.execute(self._sql(sql), params).rowcount
        except self.driver_error as exc:
            raise self._translated(exc) from exc
        return changed

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""
        try:
            with closing(self.conn.cursor()) as cursor:
                cursor.executemany(self._sql(sql), rows)
        except self.driver_error as exc:
            raise self._translated(exc) from exc

    def _copy(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        """Insert many rows into ``table`` (``columns``: their names, comma-separated)."""
        marks = ",".join("?" * len(columns.split(",")))
        self._many(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    # --- shared by the query modules -------------------------------------------------------------
    def _write_one(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement as a write transaction of its own; the number of rows it changed."""
        with self._write():
            return self._exec(sql, params)

    def _records(self, columns: Columns[R], sql: str, params: Sequence[Any] = ()) -> list[R]:
        """The rows of ``SELECT`` (the names of ``columns``) ``sql`` as records."""
        rows = self._all(f"SELECT {columns.names} {sql}", params)
        return [columns.read(row, self.when) for row in rows]

    def _id(self, sql: str, params: Sequence[Any]) -> int:
        """The id an ``INSERT ... RETURNING id`` inserted."""
        row = self._one(sql, params)
        assert row is not None, "an INSERT ... RETURNING id returned no row"
        return int(row[0])

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self._one(sql, params)
        return int(row[0]) if row else 0

    def _chunks(self, values: Sequence[Any]) -> Iterator[Sequence[Any]]:
        for start in range(0, len(values), self.in_chunk):
            yield values[start : start + self.in_chunk]

    def _any_of_chunks(self, column: str, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
        """``any_of`` a chunk of ``values`` at a time: a query per chunk of an IN list."""
        for chunk in self._chunks(values):
            yield self.any_of(column, chunk)

    def _status_of(self, run_id: int) -> RunStatus | None:
        """The run's status, its row locked for the rest of the write transaction."""
        row = self._one(f"SELECT status FROM runs WHERE id = ?{self.for_update}", (run_id,))
        return None if row is None else RunStatus(row[0])

    def _transition(
        self,
        run_id: int,
        previous: RunStatus | str | None,
        status: RunStatus | str,
        at: datetime,
        reason: str | None,
    ) -> None:
        """The one way a run's status change is written: a row in ``transitions``."""
        left = None if previous is None else RunStatus(previous).value
        self._exec(
            "INSERT INTO transitions (run_id, from_status, to_status, at, reason)"
            " VALUES (?,?,?,?,?)",
            (run_id, left, RunStatus(status).value, self.at(at), reason),
        )
