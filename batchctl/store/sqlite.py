"""The SQLite store: WAL, a busy timeout, foreign keys, every write in ``BEGIN IMMEDIATE``.

How batchctl talks to SQLite; the queries themselves are written once, for both databases, in
``runs``, ``batches``, ``schedule`` and ``maintenance``. Times are stored as ISO 8601 text (UTC,
microseconds: they compare as text in time order) and leases are judged against the caller's
clock, since every process of one SQLite file shares a host. Reads and writes use the standard
library's ``sqlite3`` directly so that a command such as ``batchctl status`` opens the file in
milliseconds; the migrations are ``migrations.py``'s, written once for both databases.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from batchctl.errors import StoreError, StoreWriteError
from batchctl.locations import create_private_file, make_private_dirs
from batchctl.store import migrations
from batchctl.store.base import Store

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's; $BATCHCTL_BUSY_TIMEOUT


class SQLiteStore(Store):
    """A batchctl database in one SQLite file, readable with the sqlite-utils CLI or Datasette."""

    shared = False  # one daemon per file: an flock beside it, plus the daemon_lock lease
    runs_newest_first = "runs NOT INDEXED"  # the rowid walked down: each run read once overall

    driver_error = sqlite3.Error

    def __init__(self, conn: sqlite3.Connection, location: str) -> None:
        self.conn = conn
        self.location = self.shown = location  # a path holds no secret

    @classmethod
    def open(cls, location: str) -> SQLiteStore:
        path = Path(location).expanduser()
        if location != ":memory:" and path.exists() and not path.is_file():
            raise StoreError(
                f"cannot open database {path}: not a regular file",
                hint="give the path of a database file, or of one to create",
            )
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
        with migrations.closed_on_error(
            conn,
            sqlite3.DatabaseError,
            f"cannot use database {path}",
            hint="is it a batchctl database? Another process may hold it locked",
        ):
            _configure(conn)
            if migrations.needs_migrating(migrations.current_version(conn), str(path), "file"):
                migrations.migrate(conn)
        return cls(conn, str(path))

    # --- the verbs --------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies; a deferred
        # transaction that reads and then writes would fail with SQLITE_BUSY instead of waiting.
        # Threads of one process queue on a lock first: SQLite's busy handler would make them
        # sleep 1-100 ms instead of handing over at once.
        with _process_lock(self.location):
            self._exec("BEGIN IMMEDIATE")
            try:
                yield
                self._exec("COMMIT")
            except BaseException:
                # After an I/O error or a full disk SQLite may have rolled back already (and a
                # failed COMMIT may leave the transaction open); the first error is the one
                # to report.
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise

    def _translated(self, exc: Exception) -> StoreError:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CANNOT_WRITE:
            return StoreWriteError(
                f"cannot write to the database {self.location}: {exc}",
                hint="free disk space, or check the file and its directory",
            )
        if "locked" in str(exc):
            return StoreError(
                "the database is locked by another process for longer than the busy timeout",
                hint="retry; $BATCHCTL_BUSY_TIMEOUT sets how long to wait (seconds, 30)",
            )
        return StoreError(
            f"database error: {exc}", hint="check the --db file (is it a batchctl database?)"
        )

    def compact(self, *, vacuum: bool = False) -> None:
        """Fold the write-ahead log into the database file and truncate it; with ``vacuum``,
        also rewrite the file to give freed pages back to the file system (slow on a large
        file, and it needs as much free disk again)."""
        self._all("PRAGMA wal_checkpoint(TRUNCATE)")
        if vacuum:
            self._exec("VACUUM")
            self._all("PRAGMA wal_checkpoint(TRUNCATE)")


_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(location: str) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(location, threading.Lock())


# SQLite's primary result codes for "the write did not happen": read-only, I/O error, disk full.
_CANNOT_WRITE = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL})


CACHE_KIB = 32 * 1024


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
    # Recording a part's results updates its requests in the order the API wrote them, which is
    # not theirs: with SQLite's default 2 MiB of cache the same pages are written out again and
    # again. A cache that holds a large part's rows (used only as pages are read) halves that.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
