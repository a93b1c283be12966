"""The databases tests run against: a SQLite file, or a database on a PostgreSQL test server.

SQLite needs nothing. PostgreSQL tests use the server named by ``$BATCHCTL_TEST_PG`` (a URL such
as ``postgresql://postgres:postgres@127.0.0.1:5432/postgres``), on which they create and drop
their own databases. Without that variable, without psycopg or without a reachable server those
tests are SKIPPED, saying why — never passed; with ``$BATCHCTL_TEST_PG_REQUIRED=1`` (``.ci/run``
sets it) they fail instead.

Tests read and check a database directly with :func:`sql`, as a user with ``sqlite3`` or
``psql`` would, whichever back end it is.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ENV = "BATCHCTL_TEST_PG"
PG_REQUIRED_ENV = "BATCHCTL_TEST_PG_REQUIRED"
BACKENDS = ["sqlite", "postgres"]


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def sql(location: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run raw SQL (``?`` placeholders) against a SQLite file or a PostgreSQL URL.

    PostgreSQL hands back times as ``datetime`` values where SQLite has ISO text.
    """
    if not is_postgres(location):
        conn = sqlite3.connect(location, timeout=30)
        try:
            with conn:
                return conn.execute(query, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(location, autocommit=True, connect_timeout=10) as pg:
        cursor = pg.execute(query.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def _errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


# What reading a database raises, whichever back end: e.g. before batchctl created its tables.
DATABASE_ERRORS = _errors()


def has_tables(location: str) -> bool:
    """Whether batchctl has created its tables there yet (it does on first use)."""
    if not is_postgres(location):
        return os.path.exists(location)
    return sql(location, "SELECT to_regclass('runs') IS NOT NULL") == [(True,)]


def integrity_problems(location: str) -> list[str]:
    """What the database's own checker finds wrong with it; empty when it is sound.

    SQLite: ``PRAGMA integrity_check`` (pages, indexes, NOT NULL, UNIQUE). PostgreSQL:
    ``amcheck``'s ``bt_index_check`` on every B-tree index of the schema (each index against
    its table, ``heapallindexed``), which catches an index that disagrees with its rows.
    """
    if not is_postgres(location):
        found = [str(row[0]) for row in sql(location, "PRAGMA integrity_check")]
        return [] if found == ["ok"] else found
    sql(location, "CREATE EXTENSION IF NOT EXISTS amcheck")
    indexes = sql(
        location,
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.amname = 'btree' AND n.nspname = current_schema()",
    )
    assert indexes, "no B-tree index found to check"
    problems = []
    for (name,) in indexes:
        try:
            sql(location, "SELECT bt_index_check(?::regclass, true)", name)
        except Exception as exc:  # psycopg.Error: amcheck reports corruption as an error
            problems.append(f"{name}: {exc}")
    return problems


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL store tests skipped: {reason}"
    if os.environ.get(PG_REQUIRED_ENV) == "1":
        pytest.fail(f"{message} (but ${PG_REQUIRED_ENV}=1: they must run)", pytrace=False)
    pytest.skip(message)


@dataclass
class PgServer:
    """The test server: creates and drops databases for the tests."""

    admin_url: str
    created: list[str] = field(default_factory=list)

    def url_for(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def create(self) -> str:
        name = f"batchctl_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)


def find_pg_server() -> PgServer | str:
    """The test server, or why there is none (each PostgreSQL test then skips with that)."""
    url = os.environ.get(PG_ENV)
    if not url:
        return (
            f"${PG_ENV} is not set (a server URL, "
            "e.g. postgresql://postgres:postgres@127.0.0.1:5432/postgres)"
        )
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'batchctl[postgres]')"
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"cannot connect to ${PG_ENV}: {str(exc).strip()}"
    return PgServer(url)


def require_pg(pg_server: PgServer | str) -> PgServer:
    if isinstance(pg_server, str):
        _unavailable(pg_server)
    assert isinstance(pg_server, PgServer)
    return pg_server
